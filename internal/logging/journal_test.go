package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
)

func newTestCore(t *testing.T, cfg JournalConfig) (*JournalCore, *bytes.Buffer) {
	t.Helper()
	var fallback bytes.Buffer
	cfg.Fallback = &fallback
	c, err := NewJournalCore(cfg, zapcore.DebugLevel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, &fallback
}

func TestJournalDatagramExactBytes(t *testing.T) {
	fj := newFakeJournal(t)
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path})
	err := c.Write(zapcore.Entry{Level: zapcore.InfoLevel, Message: "hello"},
		[]zapcore.Field{zap.String("partition", "qm"), zap.String("reason", "a=b\nc")})
	if err != nil {
		t.Fatal(err)
	}
	_, got := fj.recvEntry(t)
	want := []byte("MESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=qmd\nQMD_PARTITION=qm\nQMD_REASON\n")
	want = binary.LittleEndian.AppendUint64(want, 5)
	want = append(want, "a=b\nc\n"...)
	if !bytes.Equal(got, want) {
		t.Errorf("datagram\n got %q\nwant %q", got, want)
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback written: %q", fallback)
	}
}

func TestJournalFields(t *testing.T) {
	fj := newFakeJournal(t)
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path, Identifier: "qmd-test"})
	log := zap.New(c, zap.AddCaller()).Named("supervisor").With(Partition("qm"), ContainerID("c0ffee"))
	log.Warn("partition died\nrestarting",
		Event(incident.Restart),
		IncidentID(42),
		State("restarting"),
		Reason("exit=137"),
		zap.String("multi", "x\ny\n"),
		zap.String("empty", ""),
		zap.Error(errors.New("boom")),
		zap.Int("weird-key.x", -3),
		zap.Bool("ok", true),
		zap.Float64("ratio", 0.5),
		zap.Duration("backoff", 1500_000_000),
		zap.Strings("list", []string{"a", "b"}),
		zap.Namespace("cgroup"),
		zap.Uint64("pids", 7),
	)
	e, raw := fj.recvEntry(t)

	id, _ := MessageID(incident.Restart)
	want := map[string]string{
		"MESSAGE":           "partition died\nrestarting",
		"PRIORITY":          "4",
		"SYSLOG_IDENTIFIER": "qmd-test",
		"MESSAGE_ID":        id,
		"QMD_LOGGER":        "supervisor",
		"QMD_PARTITION":     "qm",
		"QMD_CONTAINER_ID":  "c0ffee",
		"QMD_EVENT":         "restart",
		"QMD_INCIDENT_ID":   "42",
		"QMD_STATE":         "restarting",
		"QMD_REASON":        "exit=137",
		"QMD_MULTI":         "x\ny\n",
		"QMD_EMPTY":         "",
		"QMD_ERROR":         "boom",
		"QMD_WEIRD_KEY_X":   "-3",
		"QMD_OK":            "true",
		"QMD_RATIO":         "0.5",
		"QMD_BACKOFF":       "1.5s",
		"QMD_LIST":          `["a","b"]`,
		"QMD_CGROUP_PIDS":   "7",
	}
	for k, v := range want {
		got, ok := e[k]
		if !ok || len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", k, got, v)
		}
	}
	if f := e.get("CODE_FILE"); !strings.HasSuffix(f, "/journal_test.go") {
		t.Errorf("CODE_FILE = %q", f)
	}
	if l, err := strconv.Atoi(e.get("CODE_LINE")); err != nil || l <= 0 {
		t.Errorf("CODE_LINE = %q", e.get("CODE_LINE"))
	}
	if f := e.get("CODE_FUNC"); !strings.HasSuffix(f, ".TestJournalFields") {
		t.Errorf("CODE_FUNC = %q", f)
	}
	if len(e) != len(want)+3 {
		t.Errorf("got %d fields, want %d: %q", len(e), len(want)+3, e)
	}
	// The multi-line message uses the binary form.
	msg := []byte("MESSAGE\n")
	msg = binary.LittleEndian.AppendUint64(msg, uint64(len("partition died\nrestarting")))
	if !bytes.HasPrefix(raw, msg) {
		t.Errorf("datagram starts %q, want %q", raw[:min(len(raw), 32)], msg)
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback written: %q", fallback)
	}
}

func TestJournalPriority(t *testing.T) {
	fj := newFakeJournal(t)
	c, _ := newTestCore(t, JournalConfig{Socket: fj.path})
	for _, tc := range []struct {
		level zapcore.Level
		want  string
	}{
		{zapcore.DebugLevel, "7"},
		{zapcore.InfoLevel, "6"},
		{zapcore.WarnLevel, "4"},
		{zapcore.ErrorLevel, "3"},
		{zapcore.DPanicLevel, "2"},
		{zapcore.PanicLevel, "2"},
		{zapcore.FatalLevel, "2"},
	} {
		// Core.Write directly: the logger would panic or exit.
		if err := c.Write(zapcore.Entry{Level: tc.level, Message: "m"}, nil); err != nil {
			t.Fatal(err)
		}
		e, _ := fj.recvEntry(t)
		if got := e.get("PRIORITY"); got != tc.want {
			t.Errorf("%v: PRIORITY=%s, want %s", tc.level, got, tc.want)
		}
	}
}

func TestJournalLevelFiltering(t *testing.T) {
	fj := newFakeJournal(t)
	lvl := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	c, err := NewJournalCore(JournalConfig{Socket: fj.path}, lvl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	log := zap.New(c)
	log.Debug("hidden")
	fj.expectNothing(t)
	if log.Level() != zapcore.InfoLevel {
		t.Errorf("Level() = %v", log.Level())
	}
	lvl.SetLevel(zapcore.DebugLevel)
	log.Debug("shown")
	if e, _ := fj.recvEntry(t); e.get("MESSAGE") != "shown" {
		t.Errorf("got %q", e)
	}
}

func TestJournalMessageID(t *testing.T) {
	fj := newFakeJournal(t)
	c, _ := newTestCore(t, JournalConfig{Socket: fj.path})
	log := zap.New(c)
	for _, typ := range Types() {
		log.Info("incident", Event(typ))
		e, _ := fj.recvEntry(t)
		id, ok := MessageID(typ)
		if !ok || e.get("MESSAGE_ID") != id || len(e["MESSAGE_ID"]) != 1 {
			t.Errorf("%s: MESSAGE_ID=%q, want %q", typ, e["MESSAGE_ID"], id)
		}
	}

	restart, _ := MessageID(incident.Restart)
	oom, _ := MessageID(incident.OOMKill)
	for _, tc := range []struct {
		name string
		log  func()
		want string
	}{
		{"no event", func() { log.Info("m", Partition("qm")) }, ""},
		{"unknown event", func() { log.Info("m", zap.String("event", "bogus")) }, ""},
		{"event under namespace", func() { log.Info("m", zap.Namespace("sub"), Event(incident.Restart)) }, ""},
		{"event from With", func() { log.With(Event(incident.Restart)).Info("m") }, restart},
		{"entry overrides With", func() { log.With(Event(incident.Restart)).Info("m", Event(incident.OOMKill)) }, oom},
		{"nested With keeps it", func() { log.With(Event(incident.Restart)).With(State("x")).Info("m") }, restart},
	} {
		tc.log()
		e, _ := fj.recvEntry(t)
		if got := e.get("MESSAGE_ID"); got != tc.want {
			t.Errorf("%s: MESSAGE_ID=%q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestJournalWithNamespaceAndObject(t *testing.T) {
	fj := newFakeJournal(t)
	c, _ := newTestCore(t, JournalConfig{Socket: fj.path})
	log := zap.New(c).With(zap.Namespace("memory"), zap.Int("high", 1))
	log.Info("m", zap.Int("max", 2), zap.Object("psi", zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
		enc.AddFloat64("avg10", 1.25)
		return nil
	})), zap.Any("map", map[string]int{"a": 1}), zap.Binary("bin", []byte{0, 1}))
	e, _ := fj.recvEntry(t)
	for k, v := range map[string]string{
		"QMD_MEMORY_HIGH":      "1",
		"QMD_MEMORY_MAX":       "2",
		"QMD_MEMORY_PSI_AVG10": "1.25",
		"QMD_MEMORY_MAP":       `{"a":1}`,
		"QMD_MEMORY_BIN":       "AAE=",
		"SYSLOG_IDENTIFIER":    "qmd",
		"MESSAGE":              "m",
		"PRIORITY":             "6",
	} {
		if got := e.get(k); got != v {
			t.Errorf("%s = %q, want %q (entry %q)", k, got, v, e)
		}
	}
}

// A 300 KiB entry does not fit a datagram with a small send buffer: it
// goes through a sealed memfd passed with SCM_RIGHTS.
func TestJournalLargeEntryMemfd(t *testing.T) {
	fj := newFakeJournal(t)
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path, sndbuf: 64 << 10})
	blob := strings.Repeat("0123456789abcdef", 300<<10/16)
	zap.New(c).Info("big", zap.String("blob", blob), Event(incident.Stall))

	data, fds := fj.recv(t)
	if len(data) != 0 || len(fds) != 1 {
		t.Fatalf("got %d bytes and fds %v, want an empty datagram with one fd", len(data), fds)
	}
	fd := fds[0]
	defer unix.Close(fd)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; seals&want != want {
		t.Errorf("seals %#x, want %#x", seals, want)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	content := make([]byte, st.Size)
	if n, err := unix.Pread(fd, content, 0); err != nil || int64(n) != st.Size {
		t.Fatalf("pread: %d, %v", n, err)
	}
	e, err := parseNative(content)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := MessageID(incident.Stall)
	if e.get("QMD_BLOB") != blob || e.get("MESSAGE") != "big" || e.get("MESSAGE_ID") != id {
		t.Errorf("memfd entry wrong: MESSAGE=%q MESSAGE_ID=%q len(QMD_BLOB)=%d", e.get("MESSAGE"), e.get("MESSAGE_ID"), len(e.get("QMD_BLOB")))
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback written: %q", fallback)
	}
}

// Without memfd the entry is truncated, marked, and still delivered.
func TestJournalLargeEntryTruncated(t *testing.T) {
	fj := newFakeJournal(t)
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path, sndbuf: 64 << 10, noMemfd: true})
	blob := strings.Repeat("é", 150<<10) // 300 KiB, multi-byte runes
	zap.New(c).With(zap.String("with", blob)).Error("big", zap.String("blob", blob))
	e, raw := fj.recvEntry(t)
	if e.get("QMD_TRUNCATED") != "1" {
		t.Errorf("QMD_TRUNCATED missing: %d bytes", len(raw))
	}
	for _, k := range []string{"QMD_BLOB", "QMD_WITH"} {
		v := e.get(k)
		if !strings.HasSuffix(v, truncatedMark) || len(v) > truncateValue+len(truncatedMark) || !strings.HasPrefix(blob, strings.TrimSuffix(v, truncatedMark)) {
			t.Errorf("%s: len %d, suffix %q", k, len(v), v[max(0, len(v)-20):])
		}
	}
	if e.get("MESSAGE") != "big" || e.get("PRIORITY") != "3" {
		t.Errorf("entry %q", e.get("MESSAGE"))
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback written: %q", fallback)
	}
}

// No journal at the socket path: entries go to the fallback writer, with
// one notice, and no error reaches zap; once journald is back, entries go
// to it again.
func TestJournalMissingSocketFallsBack(t *testing.T) {
	path := shortTempDir(t) + "/socket"
	var errOut bytes.Buffer
	c, fallback := newTestCore(t, JournalConfig{Socket: path})
	log := zap.New(c, zap.ErrorOutput(zapcore.AddSync(&errOut))).With(Partition("qm"))

	log.Info("first line", Event(incident.OOMKill))
	log.Warn("second line\nwith newline")
	out := fallback.String()
	for _, want := range []string{"journal unreachable, logging to stderr", path, "first line", `"partition": "qm"`, `"event": "oom-kill"`, "second line\nwith newline", "WARN"} {
		if !strings.Contains(out, want) {
			t.Errorf("fallback output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "journal unreachable"); n != 1 {
		t.Errorf("%d notices, want 1", n)
	}
	if errOut.Len() != 0 {
		t.Errorf("zap error output: %q", errOut.String())
	}

	fallback.Reset()
	fj := listenFakeJournal(t, path)
	log.Info("third line")
	if e, _ := fj.recvEntry(t); e.get("MESSAGE") != "third line" || e.get("QMD_PARTITION") != "qm" {
		t.Errorf("journal got %q", e)
	}
	if out := fallback.String(); !strings.Contains(out, "journal reachable again") || strings.Contains(out, "third line") {
		t.Errorf("fallback output after recovery: %q", out)
	}
}

func TestJournalClosed(t *testing.T) {
	fj := newFakeJournal(t)
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	zap.New(c).Info("after close")
	fj.expectNothing(t)
	if !strings.Contains(fallback.String(), "after close") {
		t.Errorf("fallback: %q", fallback)
	}
}

func TestFieldName(t *testing.T) {
	for key, want := range map[string]string{
		"partition":              "QMD_PARTITION",
		"event":                  "QMD_EVENT",
		"container_id":           "QMD_CONTAINER_ID",
		"incident_id":            "QMD_INCIDENT_ID",
		"state":                  "QMD_STATE",
		"reason":                 "QMD_REASON",
		"error":                  "QMD_ERROR",
		"memory.high":            "QMD_MEMORY_HIGH",
		"oom-score adj":          "QMD_OOM_SCORE_ADJ",
		"CamelCase9":             "QMD_CAMELCASE9",
		"_x":                     "QMD__X",
		"":                       "QMD_",
		"ü":                      "QMD___",
		strings.Repeat("a", 100): "QMD_" + strings.Repeat("A", 60),
	} {
		got := FieldName(key)
		if got != want {
			t.Errorf("FieldName(%q) = %q, want %q", key, got, want)
		}
		if !validFieldName([]byte(got)) {
			t.Errorf("FieldName(%q) = %q is not a valid journal field", key, got)
		}
	}
}

func TestFieldHelpers(t *testing.T) {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range []zap.Field{Partition("qm"), Event(incident.OOMKill), ContainerID("c1"), IncidentID(9), State("running"), Reason("r")} {
		f.AddTo(enc)
	}
	want := map[string]any{"partition": "qm", "event": "oom-kill", "container_id": "c1", "incident_id": uint64(9), "state": "running", "reason": "r"}
	for k, v := range want {
		if enc.Fields[k] != v {
			t.Errorf("%s = %#v, want %#v", k, enc.Fields[k], v)
		}
	}

	fs := IncidentFields(incident.Incident{ID: 5, Partition: "qm", Type: incident.Throttle, Details: map[string]string{"memory_high": "1G", "event": "x"}})
	enc = zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	for k, v := range map[string]any{"partition": "qm", "event": "throttle", "incident_id": uint64(5), "memory_high": "1G", "detail_event": "x"} {
		if enc.Fields[k] != v {
			t.Errorf("IncidentFields %s = %#v, want %#v", k, enc.Fields[k], v)
		}
	}
}

func TestJournalConcurrent(t *testing.T) {
	fj := newFakeJournal(t)
	// A send timeout far above any scheduling delay: this test is about
	// concurrent senders, not about a busy journald (with the default
	// 500 ms a loaded host starved this receiver and lines went to the
	// console fallback, which is the daemon's right answer to a wedged
	// journald, and the test timed out waiting for them).
	c, fallback := newTestCore(t, JournalConfig{Socket: fj.path, SendTimeout: time.Minute})
	log := zap.New(c).With(Partition("qm"))
	const workers, per = 8, 50
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			wl := log.With(zap.Int("worker", w))
			for i := range per {
				wl.Info("line", IncidentID(uint64(i)), Event(incident.Throttle))
			}
		}()
	}
	id, _ := MessageID(incident.Throttle)
	for range workers * per {
		e, _ := fj.recvEntry(t)
		if e.get("QMD_PARTITION") != "qm" || e.get("MESSAGE_ID") != id || len(e["QMD_WORKER"]) != 1 {
			t.Fatalf("entry %q", e)
		}
	}
	for range workers {
		<-done
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback written: %q", fallback)
	}
}
