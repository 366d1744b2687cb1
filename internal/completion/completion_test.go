package completion

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/ctl"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap/zaptest"
)

// fakeQmdEnv makes the test binary act as `qmd` for a client command, so
// that the scripts' `qmd list` runs the real client code.
const fakeQmdEnv = "QMD_COMPLETION_TEST_AS_QMD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeQmdEnv) == "1" {
		os.Exit(ctl.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// topUsage mirrors internal/cli's usage text, plus a synopsis of the kind
// a new daemon-level command brings (internal/cli's own test checks the
// real text).
const topUsage = `Usage: qmd [--config FILE]... [--log-level LEVEL]     run the daemon (foreground)
       qmd check-config [--config FILE]... [--json]  validate and print the effective configuration
       qmd version
       qmd completion bash|zsh                       print the shell completion script
       qmd import-quadlet [--output FILE|-] [--check] [FILE.container] [DROPIN.conf...]  write a drop-in

Configuration: /usr/share/qmd/qmd.toml, /etc/qmd/qmd.toml, /etc/qmd/qmd.toml.d/*.toml
(in that order); --config replaces that search. See the README.
`

func buildSpec(t *testing.T) Spec {
	t.Helper()
	s, err := Build(topUsage)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSynopsis(t *testing.T) {
	for _, tc := range []struct {
		syn   string
		names []string
		want  Command
	}{
		{"[--config FILE]... [--log-level LEVEL]", nil, Command{Flags: []Flag{
			{Long: "config", Arg: "FILE", Repeat: true}, {Long: "log-level", Arg: "LEVEL"}}}},
		{"check-config [--config FILE]... [--json]", []string{"check-config"}, Command{Flags: []Flag{
			{Long: "config", Arg: "FILE", Repeat: true}, {Long: "json"}}}},
		{"completion bash|zsh", []string{"completion"}, Command{Args: []Arg{{Name: "bash|zsh"}}}},
		{"start|stop|restart PARTITION", []string{"start", "stop", "restart"}, Command{Args: []Arg{{Name: "PARTITION"}}}},
		{"import-quadlet [--output FILE|-] [--check] [FILE.container] [DROPIN.conf...]", []string{"import-quadlet"},
			Command{Flags: []Flag{{Long: "output", Arg: "FILE|-"}, {Long: "check"}},
				Args: []Arg{{Name: "FILE.container"}, {Name: "DROPIN.conf", Repeat: true}}}},
		{"exec PARTITION CMD...", []string{"exec"}, Command{Args: []Arg{{Name: "PARTITION"}, {Name: "CMD", Repeat: true}}}},
	} {
		names, c := parseSynopsis(tc.syn)
		if !reflect.DeepEqual(names, tc.names) || !reflect.DeepEqual(c, tc.want) {
			t.Errorf("parseSynopsis(%q) = %q, %+v; want %q, %+v", tc.syn, names, c, tc.names, tc.want)
		}
	}
}

func TestPlaceholderKinds(t *testing.T) {
	for in, want := range map[string]string{
		"PARTITION": KindPartition, "[PARTITION]": KindNone, "FILE": KindFile, "FILE.container": KindFile,
		"DROPIN.conf...": KindFile, "FILE|-": KindFileOrDash, "bash|zsh": "choice:bash,zsh",
		"LEVEL": "choice:debug,info,warn,error", "SIZE": KindNone, "ADDR": KindNone, "COMMAND": KindCommand,
	} {
		if in == "[PARTITION]" {
			continue // brackets are removed by parseSynopsis before
		}
		if got := placeholderKind(in); got != want {
			t.Errorf("placeholderKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every client command of internal/ctl is completed, with the flags of its
// own help (short names included).
func TestBuildHasEveryClientCommand(t *testing.T) {
	s := buildSpec(t)
	for _, name := range ctl.Commands() {
		c, ok := s.Command(name)
		if !ok {
			t.Errorf("client command %q is missing from the completion spec", name)
			continue
		}
		if c.Summary == "" {
			t.Errorf("%s: no summary", name)
		}
		if !slices.ContainsFunc(c.Flags, func(f Flag) bool { return f.Long == "help" && f.Short == "h" }) {
			t.Errorf("%s: no -h/--help in %+v", name, c.Flags)
		}
		if !slices.ContainsFunc(c.Flags, func(f Flag) bool { return f.Long == "address" && f.Arg == "ADDR" }) {
			t.Errorf("%s: no --address ADDR in %+v", name, c.Flags)
		}
	}
	inc, _ := s.Command("incidents")
	if !slices.Contains(inc.Flags, Flag{Long: "follow", Short: "f",
		Help: "keep running and print new incidents as they are recorded (until interrupted)"}) {
		t.Errorf("incidents: no -f/--follow: %+v", inc.Flags)
	}
	if got := inc.Args; !reflect.DeepEqual(got, []Arg{{Name: "PARTITION"}}) {
		t.Errorf("incidents args = %+v", got)
	}
	for _, name := range []string{"check-config", "version", "completion", "help", "import-quadlet"} {
		if _, ok := s.Command(name); !ok {
			t.Errorf("daemon-level command %q missing: %q", name, s.Names())
		}
	}
	if len(s.Global) < 4 {
		t.Errorf("global flags = %+v", s.Global)
	}
}

func TestMainArgs(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"fish"}, topUsage, &out, &errb); code != 2 || !strings.Contains(errb.String(), "bash or zsh") {
		t.Errorf("fish: code %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := Main([]string{"--help"}, topUsage, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: qmd completion") {
		t.Errorf("--help: code %d, stdout %q", code, out.String())
	}
	if code := Main([]string{"zsh"}, "no usage here", &out, &errb); code != 1 {
		t.Errorf("broken usage text: code %d, want 1", code)
	}
}

func writeScript(t *testing.T, name, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBashScriptSyntax(t *testing.T) {
	testutil.RequireBinaries(t, "bash")
	p := writeScript(t, "qmd.bash", Bash(buildSpec(t)))
	if out, err := exec.Command("bash", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command("shellcheck", "-s", "bash", p).CombinedOutput(); err != nil {
			t.Fatalf("shellcheck: %v\n%s", err, out)
		}
	}
}

func TestZshScriptSyntax(t *testing.T) {
	testutil.RequireBinaries(t, "zsh")
	p := writeScript(t, "_qmd", Zsh(buildSpec(t)))
	if out, err := exec.Command("zsh", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	// Sourced outside a completion context it registers itself.
	cmd := exec.Command("zsh", "-f", "-c", `autoload -Uz compinit && compinit -u -D && source "$1" && print -r -- ${_comps[qmd]}`, "zsh", p)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_qmd" {
		t.Fatalf("sourcing in zsh: %v\n%s", err, out)
	}
}

// zsh completes verbs (with their summaries), choices and flags in a real
// interactive zsh (zpty), the script loaded from $fpath with compinit.
func TestZshCompletesInteractively(t *testing.T) {
	testutil.RequireBinaries(t, "zsh")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "_qmd"), []byte(Zsh(buildSpec(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	const driver = `zmodload zsh/zpty || exit 2
zpty z 'TERM=dumb zsh -f -i'
zpty -w z "PS1='P> '; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; setopt nobeep"
# expect LINE PATTERN: type LINE and a TAB, wait (10 s at most) for PATTERN.
expect() {
	local all="" chunk i
	zpty -n -w z $'\x15'"$1"$'\t'
	for i in {1..100}; do
		while zpty -rt z chunk; do all+=$chunk; done
		if [[ ${all//$'\r'/} == *${~2}* ]]; then print -r -- "OK $1"; return 0; fi
		sleep 0.1
	done
	print -r -- "MISSING $2 after: $1"; print -r -- "${all//$'\r'/}"
}
expect 'qmd st' 'start*--*start a partition*status*stop'
expect 'qmd completion ' 'bash*zsh'
expect 'qmd incidents --fo' '--follow'
expect 'qmd --log-level ' 'debug*error*info*warn'
zpty -d z
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "zsh", "-f", "-c", driver, "zsh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("zsh: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "OK "); n != 4 || strings.Contains(string(out), "MISSING") {
		t.Errorf("zsh completion (%d of 4):\n%s", n, out)
	}
}

// complete drives the bash function like bash does: COMP_WORDS holds the
// words of the line (the last one being completed), then _qmd runs.
func complete(t *testing.T, script string, env []string, words ...string) []string {
	t.Helper()
	const driver = `source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_qmd
printf '%s\n' "${COMPREPLY[@]}"`
	cmd := exec.Command("bash", append([]string{"-c", driver, "bash", script}, words...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("completing %q: %v\nstderr: %s", words, err, stderr.String())
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	sort.Strings(got)
	return got
}

func TestBashCompletesVerbsAndFlags(t *testing.T) {
	testutil.RequireBinaries(t, "bash")
	spec := buildSpec(t)
	script := writeScript(t, "qmd.bash", Bash(spec))
	all := spec.Names()
	sort.Strings(all)
	dir := t.TempDir()
	for _, f := range []string{"a.toml", "b.toml"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"qmd", ""}, all},
		{[]string{"qmd", "st"}, []string{"start", "status", "stop"}},
		{[]string{"qmd", "set-"}, []string{"set-memory-high", "set-memory-max", "set-oom-score-adjust"}},
		{[]string{"qmd", "--"}, []string{"--config", "--help", "--log-level", "--version"}},
		{[]string{"qmd", "--log-level", ""}, []string{"debug", "error", "info", "warn"}},
		{[]string{"qmd", "--log-level", "=", "w"}, []string{"warn"}},
		{[]string{"qmd", "--log-level", "debug", "ch"}, []string{"check-config"}},
		{[]string{"qmd", "--config", dir + "/"}, []string{dir + "/a.toml", dir + "/b.toml"}},
		{[]string{"qmd", "check-config", "--"}, []string{"--config", "--json"}},
		{[]string{"qmd", "incidents", "-"}, []string{"--address", "--after", "--follow", "--help", "--json", "--limit", "-f", "-h", "-n"}},
		{[]string{"qmd", "incidents", "--limit", ""}, nil},
		{[]string{"qmd", "set-memory-high", "--"}, []string{"--address", "--help", "--runtime"}},
		{[]string{"qmd", "completion", ""}, []string{"bash", "zsh"}},
		{[]string{"qmd", "help", "re"}, []string{"reset-failed", "restart"}},
		{[]string{"qmd", "import-quadlet", "--output", ""}, nil}, // files of the working directory, then "-"
		{[]string{"qmd", "no-such-verb", ""}, nil},
		{[]string{"qmd", "version", ""}, nil},
	} {
		got := complete(t, script, nil, tc.words...)
		if tc.words[1] == "import-quadlet" {
			if !slices.Contains(got, "-") {
				t.Errorf("%q: got %q, want \"-\" among them", tc.words, got)
			}
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.words, got, tc.want)
		}
	}
}

// fakeList is what `qmd list` prints (see ctl's runList).
const fakeList = `NAME    ACTIVE  SUB      CONTAINER     PID   RESTARTS
qm      active  running  c0ffee012345  4242  3
web.1   failed  dead     -             -     0

2 partitions listed.
`

// Partition names come from `qmd list`, run as the word the user typed
// (COMP_WORDS[0]), with --address when the line has one.
func TestBashCompletesPartitionsFromQmdList(t *testing.T) {
	testutil.RequireBinaries(t, "bash")
	dir := t.TempDir()
	fake := filepath.Join(dir, "qmd")
	logf := filepath.Join(dir, "args")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" >>"+logf+"\ncat <<'EOF'\n"+fakeList+"EOF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, "qmd.bash", Bash(buildSpec(t)))
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{fake, "start", ""}, []string{"qm", "web.1"}},
		{[]string{fake, "status", "w"}, []string{"web.1"}},
		{[]string{fake, "set-memory-max", "--runtime", "q"}, []string{"qm"}},
		{[]string{fake, "set-memory-max", "qm", ""}, nil},
		{[]string{fake, "freeze", "--address", "unix:path=/x", ""}, []string{"qm", "web.1"}},
	} {
		if got := complete(t, script, nil, tc.words...); !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.words, got, tc.want)
		}
	}
	calls, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(calls), "list --address unix:path=/x\n") || !strings.HasPrefix(string(calls), "list\n") {
		t.Errorf("qmd was called with:\n%s", calls)
	}

	// A daemon that does not answer costs at most the timeout.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := complete(t, script, []string{"QMD_COMPLETION_TIMEOUT=0.5"}, fake, "start", ""); len(got) != 0 {
		t.Errorf("hanging qmd: got %q", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hanging qmd: completion took %s", d)
	}
}

// The real client against a real bus: partition names come from a running
// D-Bus server (the fake backend has "broken" and "qm").
func TestBashCompletesPartitionsFromDaemon(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinaries(t, "bash")
	sb := testutil.StartSystemBus(t, testutil.RepoFile(t, "systemd/org.containers.qmd1.conf"))
	conn, err := dbus.Connect(sb.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := dbusapi.New(conn, dbustest.NewFakeBackend(nil), zaptest.NewLogger(t), dbusapi.Options{Version: "test"})
	if err := srv.Export(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, "qmd.bash", Bash(buildSpec(t)))
	// Through the environment, like the system bus.
	env := []string{fakeQmdEnv + "=1", "DBUS_SYSTEM_BUS_ADDRESS=" + sb.Addr}
	if got := complete(t, script, env, self, "restart", ""); !slices.Equal(got, []string{"broken", "qm"}) {
		t.Errorf("restart: got %q", got)
	}
	// Through --address on the command line.
	env = []string{fakeQmdEnv + "=1", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent"}
	if got := complete(t, script, env, self, "--address="+sb.Addr, "thaw", "b"); !slices.Equal(got, []string{"broken"}) {
		t.Errorf("--address=ADDR thaw: got %q", got)
	}
	if got := complete(t, script, env, self, "thaw", "--address", sb.Addr, "b"); !slices.Equal(got, []string{"broken"}) {
		t.Errorf("thaw --address: got %q", got)
	}
	// No daemon: no names, no error output.
	if got := complete(t, script, env, self, "thaw", ""); len(got) != 0 {
		t.Errorf("no daemon: got %q", got)
	}
}
