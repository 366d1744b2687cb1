package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
)

func TestJournalStream(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, tc := range []struct {
		env  string
		fd   int
		want bool
	}{
		{match, int(f.Fd()), true},
		{match, int(other.Fd()), false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), int(f.Fd()), false},
		{fmt.Sprintf("%d:%d", st.Dev+1, st.Ino), int(f.Fd()), false},
		{match, 1 << 20, false}, // not an open descriptor
		{"", int(f.Fd()), false},
		{"12", int(f.Fd()), false},
		{"a:b", int(f.Fd()), false},
		{match + ":1", int(f.Fd()), false},
		{" " + match, int(f.Fd()), false},
	} {
		if got := JournalStream(tc.env, tc.fd); got != tc.want {
			t.Errorf("JournalStream(%q, fd) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

var consoleLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4})\tINFO\t\S+/logging_test\.go:\d+\tpartition restarted\t\{"partition": "qm", "event": "restart"\}\n$`)

func TestNewConsole(t *testing.T) {
	for _, mode := range []Mode{ModeConsole, ModeAuto, ""} {
		var out bytes.Buffer
		log, err := New(Options{Mode: mode, Stderr: &out, journalStream: func() bool { return false }})
		if err != nil {
			t.Fatal(err)
		}
		log.Info("partition restarted", Partition("qm"), Event(incident.Restart))
		log.Debug("hidden at info")
		if !consoleLine.MatchString(out.String()) {
			t.Errorf("mode %q: console output %q", mode, out.String())
		}
		if strings.Contains(out.String(), "\x1b[") {
			t.Errorf("colour on a non-terminal: %q", out.String())
		}
	}
}

func TestNewJSON(t *testing.T) {
	var out bytes.Buffer
	log, err := New(Options{Mode: ModeJSON, Level: "warn", Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", Partition("qm"))
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if m["msg"] != "shown" || m["level"] != "warn" || m["partition"] != "qm" {
		t.Errorf("json line %v", m)
	}
}

func TestNewJournal(t *testing.T) {
	fj := newFakeJournal(t)
	for _, tc := range []struct {
		name   string
		opts   Options
		stream bool
	}{
		{"forced", Options{Mode: ModeJournal}, false},
		{"auto on journal stream", Options{Mode: ModeAuto}, true},
	} {
		var out bytes.Buffer
		tc.opts.JournalSocket = fj.path
		tc.opts.Stderr = &out
		tc.opts.journalStream = func() bool { return tc.stream }
		log, err := New(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello", Partition("qm"))
		e, _ := fj.recvEntry(t)
		if e.get("MESSAGE") != "hello" || e.get("QMD_PARTITION") != "qm" || e.get("CODE_FILE") == "" {
			t.Errorf("%s: entry %q", tc.name, e)
		}
		if out.Len() != 0 {
			t.Errorf("%s: stderr %q", tc.name, out.String())
		}
	}
}

// A journal stream without a journal socket (journald not reachable, e.g.
// a container) gives console output; a forced journal with a missing
// socket still never loses a line.
func TestNewJournalSocketMissing(t *testing.T) {
	missing := shortTempDir(t) + "/socket"
	for _, mode := range []Mode{ModeAuto, ModeJournal} {
		var out bytes.Buffer
		log, err := New(Options{Mode: mode, JournalSocket: missing, Stderr: &out, journalStream: func() bool { return true }})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		log.Error("must not be lost", Partition("qm"))
		if !strings.Contains(out.String(), "must not be lost") || !strings.Contains(out.String(), `"partition": "qm"`) {
			t.Errorf("%s: stderr %q", mode, out.String())
		}
	}
}

func TestNewLevels(t *testing.T) {
	for _, tc := range []struct {
		level string
		want  zapcore.Level
	}{
		{"", zapcore.InfoLevel},
		{"debug", zapcore.DebugLevel},
		{"info", zapcore.InfoLevel},
		{"warn", zapcore.WarnLevel},
		{"WARNING", zapcore.WarnLevel},
		{"error", zapcore.ErrorLevel},
	} {
		log, err := New(Options{Mode: ModeConsole, Level: tc.level, Stderr: &bytes.Buffer{}})
		if err != nil {
			t.Fatalf("%q: %v", tc.level, err)
		}
		if log.Level() != tc.want {
			t.Errorf("%q: level %v, want %v", tc.level, log.Level(), tc.want)
		}
	}
	if _, err := New(Options{Level: "loud"}); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("bad level: err %v", err)
	}
	if _, err := New(Options{Mode: "syslog"}); err == nil || !strings.Contains(err.Error(), `"syslog"`) {
		t.Errorf("bad mode: err %v", err)
	}
}

func TestNewAtomicLevel(t *testing.T) {
	for _, mode := range []Mode{ModeConsole, ModeJournal} {
		fj := newFakeJournal(t)
		var out bytes.Buffer
		lvl := zap.NewAtomicLevel()
		log, err := New(Options{Mode: mode, Level: "error", AtomicLevel: lvl, Stderr: &out, JournalSocket: fj.path})
		if err != nil {
			t.Fatal(err)
		}
		if lvl.Level() != zapcore.ErrorLevel {
			t.Fatalf("Level not applied to AtomicLevel: %v", lvl.Level())
		}
		log.Warn("hidden")
		lvl.SetLevel(zapcore.DebugLevel)
		log.Debug("shown")
		var got string
		if mode == ModeJournal {
			e, _ := fj.recvEntry(t)
			got = e.get("MESSAGE")
		} else {
			got = out.String()
		}
		if strings.Contains(got, "hidden") || !strings.Contains(got, "shown") {
			t.Errorf("%s: got %q", mode, got)
		}
	}
}
