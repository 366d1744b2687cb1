package oom

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/incident/incidenttest"
	"github.com/containers/qmd/pkg/cgroups"
	"golang.org/x/sys/unix"
)

func TestParseScoreAdj(t *testing.T) {
	for in, want := range map[string]int{"0\n": 0, "-1000": -1000, "1000\n": 1000, " 500 ": 500} {
		got, err := ParseScoreAdj("/proc/1/oom_score_adj", []byte(in))
		if err != nil || got != want {
			t.Errorf("ParseScoreAdj(%q) = %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "1001", "-1001", "x", "1 2", "99999999999999999999"} {
		_, err := ParseScoreAdj("/proc/1/oom_score_adj", []byte(in))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "/proc/1/oom_score_adj") {
			t.Errorf("ParseScoreAdj(%q) err = %v", in, err)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	ok := DefaultPolicy()
	ok.Protected = []Protected{{Unit: "brakes.service", Score: -1000}, {Cgroup: "/asil/cluster", Score: -1}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(*Policy)
		want string
	}{
		{"partition high", func(p *Policy) { p.PartitionScore = 1001 }, "partition score"},
		{"nested low", func(p *Policy) { p.NestedScore = -1001 }, "nested score"},
		{"nested below partition", func(p *Policy) { p.NestedScore = 100 }, "below partition score"},
		{"asil zero", func(p *Policy) { p.Protected = []Protected{{Unit: "a.service", Score: 0}} }, "score 0 outside"},
		{"asil too low", func(p *Policy) { p.Protected = []Protected{{Unit: "a.service", Score: -1001}} }, "outside"},
		{"neither", func(p *Policy) { p.Protected = []Protected{{Score: -1}} }, "needs a cgroup or a unit"},
		{"both", func(p *Policy) { p.Protected = []Protected{{Unit: "a.service", Cgroup: "/x", Score: -1}} }, "not both"},
		{"bad unit", func(p *Policy) { p.Protected = []Protected{{Unit: "a/b", Score: -1}} }, "not a unit name"},
		{"root", func(p *Policy) { p.Protected = []Protected{{Cgroup: "/", Score: -1}} }, "root cgroup"},
		{"dup", func(p *Policy) {
			p.Protected = []Protected{{Unit: "a.service", Score: -1}, {Cgroup: "/system.slice/a.service", Score: -2}}
		}, "same cgroup"},
		{"marker", func(p *Policy) { p.NestedMarkers = []string{""} }, "nested marker 0"},
		{"ignore marker", func(p *Policy) { p.IgnoreMarkers = []string{"a/b"} }, "ignore marker 0"},
	}
	for _, tt := range tests {
		p := DefaultPolicy()
		tt.mod(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestUnitCgroupPath(t *testing.T) {
	for in, want := range map[string]string{
		"brakes.service":    "/system.slice/brakes.service",
		"libpod-abc.scope":  "/system.slice/libpod-abc.scope",
		"machine.slice":     "/machine.slice",
		"asil-brakes.slice": "/asil.slice/asil-brakes.slice",
		"a-b-c.slice":       "/a.slice/a-b.slice/a-b-c.slice",
		"-.slice":           "/",
	} {
		if got := UnitCgroupPath(in); got != want {
			t.Errorf("UnitCgroupPath(%q) = %q, want %q", in, got, want)
		}
	}
	if got := (Protected{Cgroup: "asil/x/"}).Path(); got != "/asil/x" {
		t.Errorf("Path = %q", got)
	}
}

func TestClassify(t *testing.T) {
	p := DefaultPolicy()
	const part = "/machine.slice/libpod-qm.scope"
	tests := []struct {
		pid       int
		cg        string
		role      Role
		container string
	}{
		{1, part, RoleInit, ""},
		{1, part + "/init.scope", RoleInit, ""},
		{2, part, RolePartition, ""},
		{3, part + "/system.slice/foo.service", RolePartition, ""},
		{4, part + "/machine.slice/libpod-abc.scope", RoleNested, "abc"},
		{5, part + "/machine.slice/libpod-abc.scope/container", RoleNested, "abc"},
		{6, part + "/machine.slice/libpod-conmon-abc.scope", RolePartition, ""},
		{7, part + "/libpod_parent/libpod-def", RoleNested, "def"},
		{8, "/machine.slice/libpod-other.scope", RoleOther, ""},
		{9, part + "-x", RoleOther, ""},
		{10, "/system.slice/brakes.service", RoleOther, ""},
	}
	for _, tt := range tests {
		role, c := p.Classify(part, tt.pid, 1, tt.cg)
		if role != tt.role || c != tt.container {
			t.Errorf("Classify(%d, %s) = %s %q, want %s %q", tt.pid, tt.cg, role, c, tt.role, tt.container)
		}
	}
	if role, _ := p.Classify("/", 5, 1, "/a/libpod-x"); role != RoleNested {
		t.Errorf("root partition: %s", role)
	}
	for _, tt := range []struct {
		role      Role
		cur, want int
		repair    bool
	}{
		{RoleInit, 500, 500, false}, {RoleInit, 0, 500, true}, {RoleInit, 900, 500, true},
		{RolePartition, 499, 500, true}, {RolePartition, 900, 500, false},
		{RoleNested, 500, 750, true}, {RoleNested, 1000, 750, false},
		{RoleProtected, 0, -900, true}, {RoleProtected, -900, -900, false}, {RoleProtected, -1000, -900, true},
		{RoleOther, -1000, -1000, false},
	} {
		want, repair := p.Target(tt.role, tt.cur, -900)
		if repair != tt.repair || (repair && want != tt.want) {
			t.Errorf("Target(%s, %d) = %d %v", tt.role, tt.cur, want, repair)
		}
	}
}

// fake is a cgroup v2 tree and a procfs in temp dirs.
type fake struct {
	t    *testing.T
	h    *cgroups.Hierarchy
	root string
	proc string
}

func newFake(t *testing.T) *fake {
	f := &fake{t: t, root: t.TempDir(), proc: t.TempDir()}
	write(t, filepath.Join(f.root, "cgroup.controllers"), "memory pids\n")
	h, err := cgroups.NewHierarchy(f.root)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// addProc puts pid into cgroup cg with oom_score_adj score.
func (f *fake) addProc(pid int, cg string, score int, comm string) {
	procs := filepath.Join(f.root, cg, "cgroup.procs")
	old, _ := os.ReadFile(procs)
	write(f.t, procs, string(old)+strconv.Itoa(pid)+"\n")
	dir := filepath.Join(f.proc, strconv.Itoa(pid))
	write(f.t, filepath.Join(dir, "oom_score_adj"), strconv.Itoa(score)+"\n")
	write(f.t, filepath.Join(dir, "comm"), comm+"\n")
	write(f.t, filepath.Join(dir, "cgroup"), "0::"+cg+"\n")
}

func (f *fake) score(pid int) int {
	v, err := ReadScoreAdj(f.proc, pid)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

const part = "/machine.slice/libpod-qm.scope"

func setup(t *testing.T) (*fake, *Auditor, *incidenttest.Recorder) {
	f := newFake(t)
	f.addProc(10, part, 600, "systemd")                                          // init: exactly 500
	f.addProc(11, part+"/system.slice/foo.service", 0, "foo")                    // raised to 500
	f.addProc(12, part+"/system.slice/bar.service", 900, "bar")                  // left alone
	f.addProc(13, part+"/machine.slice/libpod-abc.scope", 500, "app")            // raised to 750
	f.addProc(14, part+"/machine.slice/libpod-abc.scope", 750, "app2")           // fine
	f.addProc(15, part+"/machine.slice/libpod-conmon-abc.scope", -100, "conmon") // partition: 500
	f.addProc(20, "/system.slice/brakes.service", 0, "brakes")                   // ASIL: -900
	f.addProc(21, "/system.slice/other.service", -1000, "other")                 // never touched
	p := DefaultPolicy()
	p.Protected = []Protected{{Unit: "brakes.service", Score: -900}, {Unit: "stopped.service", Score: -1}}
	rec := &incidenttest.Recorder{}
	a := &Auditor{
		Policy: p, ProcRoot: f.proc, Lister: f.h, Sink: rec,
		Partition: func() (Target, bool) { return Target{Name: "qm", Cgroup: part, InitPID: 10}, true },
	}
	return f, a, rec
}

func TestAudit(t *testing.T) {
	f, a, rec := setup(t)
	repairs, err := a.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int{10: 500, 11: 500, 12: 900, 13: 750, 14: 750, 15: 500, 20: -900, 21: -1000}
	for pid, v := range want {
		if got := f.score(pid); got != v {
			t.Errorf("pid %d: oom_score_adj %d, want %d", pid, got, v)
		}
	}
	if len(repairs) != 5 || len(rec.All()) != 5 {
		t.Fatalf("repairs %+v, incidents %d", repairs, len(rec.All()))
	}
	var nested incident.Incident
	for _, inc := range rec.All() {
		if inc.Type != incident.OOMScoreRepair || inc.Partition != "qm" {
			t.Errorf("incident %+v", inc)
		}
		if inc.Details["pid"] == "13" {
			nested = inc
		}
	}
	wantDetails := map[string]string{"pid": "13", "comm": "app", "old": "500", "new": "750", "role": "nested",
		"nested_container": "abc", "cgroup": part + "/machine.slice/libpod-abc.scope"}
	for k, v := range wantDetails {
		if nested.Details[k] != v {
			t.Errorf("detail %s = %q, want %q (%+v)", k, nested.Details[k], v, nested)
		}
	}
	if !strings.Contains(nested.Summary, "pid 13 (app)") || !strings.Contains(nested.Summary, "500 to 750") {
		t.Errorf("summary %q", nested.Summary)
	}
	// A second audit finds nothing.
	repairs, err = a.Audit(context.Background())
	if err != nil || len(repairs) != 0 {
		t.Fatalf("second audit: %+v %v", repairs, err)
	}
}

func TestAuditDryRun(t *testing.T) {
	f, a, rec := setup(t)
	a.DryRun = true
	repairs, err := a.Audit(context.Background())
	if err != nil || len(repairs) != 5 {
		t.Fatalf("%+v %v", repairs, err)
	}
	if f.score(11) != 0 || f.score(20) != 0 {
		t.Error("dry run wrote")
	}
	if len(rec.All()) != 5 || rec.All()[0].Details["dry_run"] != "true" || !strings.Contains(rec.All()[0].Summary, "dry run") {
		t.Errorf("incidents %+v", rec.All())
	}
}

func TestAuditProcessesVanish(t *testing.T) {
	f, a, rec := setup(t)
	// 11 exited after the listing: /proc/11 gone.
	os.RemoveAll(filepath.Join(f.proc, "11"))
	// 13's PID was reused by a process elsewhere.
	write(t, filepath.Join(f.proc, "13", "cgroup"), "0::/user.slice\n")
	// 15 exits between reading and writing: oom_score_adj gone.
	os.Remove(filepath.Join(f.proc, "15", "comm"))
	repairs, err := a.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range repairs {
		if r.PID == 11 || r.PID == 13 {
			t.Errorf("repaired vanished pid %d", r.PID)
		}
	}
	if f.score(13) != 500 {
		t.Error("reused pid touched")
	}
	if len(rec.All()) != len(repairs) {
		t.Errorf("%d incidents for %d repairs", len(rec.All()), len(repairs))
	}
}

func TestAuditWriteFailure(t *testing.T) {
	f, a, rec := setup(t)
	// pid 11's oom_score_adj cannot be read (a directory): an error
	// naming the file, and the audit goes on.
	p := filepath.Join(f.proc, "11", "oom_score_adj")
	os.Remove(p)
	os.Mkdir(p, 0o755)
	repairs, err := a.Audit(context.Background())
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.Contains(err.Error(), "11/oom_score_adj") {
		t.Errorf("error does not name the file: %v", err)
	}
	// The others were still repaired.
	if f.score(13) != 750 || f.score(20) != -900 {
		t.Error("one failure stopped the audit")
	}
	failed := 0
	for _, r := range repairs {
		if r.Err != nil {
			failed++
		}
	}
	if failed != 1 || len(rec.All()) != len(repairs)-1 {
		t.Errorf("failed %d, incidents %d, repairs %d", failed, len(rec.All()), len(repairs))
	}
}

func TestWriteErrorMessage(t *testing.T) {
	err := &WriteError{PID: 7, Old: 900, New: 500, Err: errEACCES()}
	if !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") || !strings.Contains(err.Error(), "pid 7 from 900 to 500") {
		t.Errorf("%v", err)
	}
	err = &WriteError{PID: 7, Old: 100, New: 500, Err: errEACCES()}
	if strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Errorf("raise blamed on CAP_SYS_RESOURCE: %v", err)
	}
	if err := WriteScoreAdj(t.TempDir(), 1, 0, 2000); err == nil {
		t.Error("2000 accepted")
	}
	if _, err := ReadScoreAdj(t.TempDir(), 1); !errors.Is(err, ErrProcessGone) {
		t.Errorf("missing pid: %v", err)
	}
	if err := WriteScoreAdj(t.TempDir(), 1, 0, 5); !errors.Is(err, ErrProcessGone) {
		t.Errorf("missing pid write: %v", err)
	}
}

func TestAuditProtectedInsidePartition(t *testing.T) {
	f, a, _ := setup(t)
	a.Policy.Protected = append(a.Policy.Protected, Protected{Cgroup: part + "/system.slice/foo.service", Score: -1000})
	_, err := a.Audit(context.Background())
	if err == nil || !strings.Contains(err.Error(), "inside partition") {
		t.Fatalf("err = %v", err)
	}
	if f.score(11) != 500 {
		t.Errorf("QM process got %d", f.score(11))
	}
}

func TestAuditPartitionNotRunning(t *testing.T) {
	f, a, _ := setup(t)
	a.Partition = func() (Target, bool) { return Target{}, false }
	repairs, err := a.Audit(context.Background())
	if err != nil || len(repairs) != 1 || repairs[0].PID != 20 {
		t.Fatalf("%+v %v", repairs, err)
	}
	if f.score(11) != 0 {
		t.Error("partition touched while not running")
	}
	// Partition cgroup gone (container stopped between Partition() and listing).
	a.Partition = func() (Target, bool) { return Target{Name: "qm", Cgroup: "/gone"}, true }
	if _, err := a.Audit(context.Background()); err != nil {
		t.Errorf("gone partition: %v", err)
	}
	a.Policy.PartitionScore = 2000
	if _, err := a.Audit(context.Background()); err == nil {
		t.Error("invalid policy accepted")
	}
}

// fakeClock hands out a manual ticker and After channels.
type fakeClock struct {
	mu     sync.Mutex
	tick   chan time.Time
	after  chan time.Time
	afters int
	period time.Duration
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.period = d
	return fakeTicker{c.tick}
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.afters++
	return c.after
}

type fakeTicker struct{ c chan time.Time }

func (f fakeTicker) C() <-chan time.Time { return f.c }
func (f fakeTicker) Stop()               {}

func TestRunLoop(t *testing.T) {
	f, a, _ := setup(t)
	clk := &fakeClock{tick: make(chan time.Time), after: make(chan time.Time)}
	reports := make(chan []Repair)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- a.Run(ctx, RunOptions{Clock: clk, Report: func(r []Repair, err error) {
			if err != nil {
				t.Error(err)
			}
			reports <- r
		}})
	}()
	recv := func() []Repair {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no audit")
		}
		return nil
	}
	if r := recv(); len(r) != 5 {
		t.Fatalf("initial audit: %+v", r)
	}
	if clk.period != DefaultResync {
		t.Errorf("resync %v", clk.period)
	}
	// Drift, then the tick repairs it.
	write(t, filepath.Join(f.proc, "14", "oom_score_adj"), "0\n")
	clk.tick <- time.Now()
	if r := recv(); len(r) != 1 || r[0].PID != 14 || r[0].New != 750 {
		t.Fatalf("tick audit: %+v", r)
	}
	// A nested container appears: notifications coalesce into one audit
	// after the settle delay.
	f.addProc(30, part+"/machine.slice/libpod-new.scope", 0, "newapp")
	a.Notify()
	a.Notify()
	a.Notify()
	clk.after <- time.Now() // settle elapsed
	r := recv()
	if len(r) != 1 || r[0].PID != 30 || r[0].Container != "new" {
		t.Fatalf("notified audit: %+v", r)
	}
	clk.mu.Lock()
	afters := clk.afters
	clk.mu.Unlock()
	if afters != 1 {
		t.Errorf("%d settle timers for coalesced notifications", afters)
	}
	// Nothing else wakes it: the next report is the one from this tick.
	clk.tick <- time.Now()
	if r := recv(); len(r) != 0 {
		t.Fatalf("idle tick: %+v", r)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestTriggersAudit(t *testing.T) {
	for k, want := range map[cgroups.EventKind]bool{
		cgroups.EventChildCreated: true, cgroups.EventPopulated: true, cgroups.EventThawed: true,
		cgroups.EventOOMKill: false, cgroups.EventEmptied: false,
	} {
		if got := TriggersAudit(cgroups.Event{Kind: k}); got != want {
			t.Errorf("TriggersAudit(%v) = %v", k, got)
		}
	}
}

// TestWatcherDrivesAudit wires a real inotify watcher on a fake tree to
// the auditor: a nested container cgroup appears, the audit follows.
func TestWatcherDrivesAudit(t *testing.T) {
	f, a, _ := setup(t)
	cg, err := f.h.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	w, err := cg.Watch(cgroups.WatchOptions{Children: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	reports := make(chan []Repair, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx, RunOptions{Settle: time.Millisecond, Resync: time.Hour, Report: func(r []Repair, _ error) { reports <- r }})
	<-reports // initial
	go func() {
		for ev := range w.Events() {
			if TriggersAudit(ev) {
				a.Notify()
			}
		}
	}()
	// Build the new cgroup aside and move it in: one atomic appearance
	// (the real kernel creates the directory with its files at once).
	f.addProc(40, "/staging/libpod-late.scope", 0, "late")
	write(t, filepath.Join(f.proc, "40", "cgroup"), "0::"+part+"/machine.slice/libpod-late.scope\n")
	if err := os.Rename(filepath.Join(f.root, "staging", "libpod-late.scope"), filepath.Join(f.root, part, "machine.slice", "libpod-late.scope")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reports:
		if len(r) != 1 || r[0].PID != 40 || r[0].New != 750 {
			t.Fatalf("%+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no audit after the nested cgroup appeared")
	}
}

func errEACCES() error { return unix.EACCES }

func TestAuditWriteRefused(t *testing.T) {
	f, a, rec := setup(t)
	old := writeScore
	t.Cleanup(func() { writeScore = old })
	writeScore = func(fd int, b []byte) (int, error) { return 0, unix.EACCES }
	repairs, err := a.Audit(context.Background())
	var we *WriteError
	if !errors.As(err, &we) || !errors.Is(err, unix.EACCES) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "pid 10 from 600 to 500") || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Errorf("lowering refusal not explained: %v", err)
	}
	// (The fake file was truncated by O_TRUNC, which procfs ignores.)
	if len(repairs) != 5 || len(rec.All()) != 0 {
		t.Errorf("repairs %d incidents %d", len(repairs), len(rec.All()))
	}
	_ = f
}

// TestAuditRefusesUnsafeTarget: a partition cgroup that is the root, or
// holds qmd itself, would raise the whole host: refused, nothing written.
func TestAuditRefusesUnsafeTarget(t *testing.T) {
	f, a, rec := setup(t)
	a.Partition = func() (Target, bool) { return Target{Name: "qm", Cgroup: "/", InitPID: 10}, true }
	repairs, err := a.Audit(context.Background())
	if !errors.Is(err, ErrUnsafeTarget) || !strings.Contains(err.Error(), "root cgroup") {
		t.Fatalf("root: %v", err)
	}
	for _, r := range repairs {
		if r.Role != RoleProtected {
			t.Errorf("repaired %+v", r)
		}
	}
	if f.score(11) != 0 || f.score(21) != -1000 {
		t.Error("root partition audited")
	}
	// qmd's own process found in the partition's cgroup.
	a.Partition = func() (Target, bool) { return Target{Name: "qm", Cgroup: part, InitPID: 10}, true }
	a.Self = 12
	_, err = a.Audit(context.Background())
	if !errors.Is(err, ErrUnsafeTarget) || !strings.Contains(err.Error(), "holds qmd itself (pid 12") {
		t.Fatalf("self: %v", err)
	}
	if f.score(11) != 0 || f.score(10) != 600 {
		t.Error("partition holding qmd audited")
	}
	for _, inc := range rec.All() {
		if inc.Details["role"] != string(RoleProtected) {
			t.Errorf("incident %+v", inc)
		}
	}
}
