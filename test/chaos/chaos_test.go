// Package chaos is qmd's chaos suite (`make chaos`): faults of the Podman
// service (stopped, killed mid-operation, slow), a full incident store
// filesystem, a reload storm and a thousand qmd restarts, each against the
// real Podman service, the real qmd binary, busybox partitions and a
// private system bus with the project's policy file.
//
// After each scenario the suite checks what the issue asks for: every
// partition runs under policy (or is failed with a reason, where the
// scenario allows it), exactly one container per partition, qmd's
// goroutines did not grow, and no acknowledged incident was lost (read back
// from a restarted qmd, ids strictly increasing).
//
// The tests run only with QMD_CHAOS=1 (set by `make chaos`), so that
// `make test` does not run them.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/internal/testutil/faultproxy"
	"github.com/containers/qmd/test/harness"
)

const (
	// ChaosEnv enables the suite; `make chaos` sets it.
	chaosEnv = "QMD_CHAOS"

	// settle bounds how long qmd may take to bring a partition back once
	// a fault is removed.
	settle = 45 * time.Second
	// watchdogTimeout is qmd.service's WatchdogSec: systemd kills qmd when no
	// WATCHDOG=1 arrives for this long.
	watchdogTimeout = 20 * time.Second
	// policyScore is the partition's default oom_score_adj.
	policyScore = 500

	labelPartition = "io.containers.qmd.partition"

	busName   = "org.containers.qmd1"
	mgrPath   = dbus.ObjectPath("/org/containers/qmd1")
	mgrIface  = "org.containers.qmd1.Manager"
	partIface = "org.containers.qmd1.Partition"
	propsGet  = "org.freedesktop.DBus.Properties.Get"
	propsAll  = "org.freedesktop.DBus.Properties.GetAll"
)

func partPath(name string) dbus.ObjectPath {
	return dbus.ObjectPath("/org/containers/qmd1/partition/" + name)
}

// requireChaos skips unless the suite was asked for.
func requireChaos(t *testing.T) {
	t.Helper()
	if os.Getenv(chaosEnv) == "" {
		t.Skipf("chaos suite: run it with `make chaos` (%s=1)", chaosEnv)
	}
	if testing.Short() {
		t.Skip("chaos suite: not with -short")
	}
}

// opts shape a scenario.
type opts struct {
	parts     []string // partition names; default {"qm"}
	proxy     bool     // qmd talks to Podman through a faultproxy
	incidents string   // incidents.path; default <dir>/incidents.db
	extra     string   // TOML before the partitions (no [podman]/[incidents]/[log]/[dbus])
	partExtra string   // TOML inside every [[partition]]
	logLevel  string   // default debug
	maxInc    int      // incidents.max; default 1000
}

// scenario is one chaos test's world: a private Podman service, maybe a
// fault proxy in front of it, a private system bus, and the qmd runs.
type scenario struct {
	t      *testing.T
	o      opts
	pm     *harness.Podman
	proxy  *faultproxy.Proxy
	bus    *testutil.SystemBus
	conn   *dbus.Conn
	dir    string
	rootfs string
	cfg    string

	q    *harness.QMD // the current run
	wd   *notifier    // its sd_notify socket
	runs []*run       // every run, in order
	// acked are incidents qmd confirmed as durable: listed while nothing
	// was pending, or logged by a run that stopped cleanly.
	acked map[uint64]string // id -> type
	// seen are all incident ids qmd handed out (logged), with their type.
	seen map[uint64]string

	mu     sync.Mutex
	scores map[string]int // configured oom_score_adj per partition, when not the default

	// storeDegraded: the current run keeps incidents in memory only; what
	// it lists is not acknowledged as durable.
	storeDegraded bool
	// priorMax is the highest incident id handed out by qmd runs that are
	// not in runs (the upgrade test's own runner).
	priorMax uint64
}

// run is one qmd process of a scenario.
type run struct {
	q       *harness.QMD
	wd      *notifier
	started time.Time
	clean   bool // stopped with SIGTERM and exited 0
}

func newScenario(t *testing.T, o opts) *scenario {
	t.Helper()
	requireChaos(t)
	if len(o.parts) == 0 {
		o.parts = []string{"qm"}
	}
	if o.logLevel == "" {
		o.logLevel = "debug"
	}
	if o.maxInc == 0 {
		o.maxInc = 1000
	}
	s := &scenario{t: t, o: o, acked: map[uint64]string{}, seen: map[uint64]string{}, scores: map[string]int{}}
	s.pm = harness.StartPodman(t)
	s.bus = testutil.StartSystemBus(t, filepath.Join(harness.Repo(t), "systemd", "org.containers.qmd1.conf"))
	conn, err := dbus.Connect(s.bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s.conn = conn
	if o.proxy {
		s.proxy = faultproxy.New(t, s.pm.Socket)
	}
	dir, err := os.MkdirTemp("", "qmd-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s.dir = dir
	s.rootfs = harness.Rootfs(t, "loop")
	s.writeConfig(o.partExtra)
	return s
}

// socketURI is what qmd's podman.socket points at.
func (s *scenario) socketURI() string {
	if s.proxy != nil {
		return s.proxy.URI()
	}
	return s.pm.URI()
}

// writeConfig (re)writes qmd's configuration atomically, with partExtra in
// every partition (a func per partition name via writeConfigFunc).
func (s *scenario) writeConfig(partExtra string) {
	s.writeConfigFunc(func(string) string { return partExtra })
}

func (s *scenario) writeConfigFunc(partExtra func(name string) string) {
	s.t.Helper()
	inc := s.o.incidents
	if inc == "" {
		inc = filepath.Join(s.dir, "incidents.db")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[podman]\nsocket = %q\n\n", s.socketURI())
	fmt.Fprintf(&b, "[incidents]\npath = %q\nmax = %d\n\n", inc, s.o.maxInc)
	fmt.Fprintf(&b, "[log]\nformat = \"json\"\nlevel = %q\n\n", s.o.logLevel)
	b.WriteString("[dbus]\nenable = true\n\n")
	b.WriteString(s.o.extra + "\n")
	seccomp := filepath.Join(harness.Repo(s.t), "configs", "seccomp-no-rt.json")
	for _, name := range s.o.parts {
		fmt.Fprintf(&b, "[[partition]]\nname = %q\nrootfs = %q\nvolumes = []\nseccomp_profile = %q\nstop_timeout = \"2s\"\n%s\n",
			name, s.rootfs, seccomp, partExtra(name))
	}
	path := filepath.Join(s.dir, "qmd.toml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		s.t.Fatal(err)
	}
	s.cfg = path
}

// startQMD starts a qmd run with the scenario's bus and an sd_notify socket
// that asks for the watchdog as qmd.service does.
func (s *scenario) startQMD() *harness.QMD {
	s.t.Helper()
	if s.q != nil {
		if _, done := s.exited(); !done {
			s.t.Fatal("startQMD: the previous qmd still runs")
		}
	}
	wd := listenNotify(s.t, s.dir)
	r := &run{wd: wd, started: time.Now()}
	r.q = harness.StartQMD(s.t, s.cfg,
		"DBUS_SYSTEM_BUS_ADDRESS="+s.bus.Addr,
		"NOTIFY_SOCKET="+wd.path,
		"WATCHDOG_USEC="+strconv.FormatInt(watchdogTimeout.Microseconds(), 10),
		"GOTRACEBACK=all")
	s.q, s.wd = r.q, wd
	s.runs = append(s.runs, r)
	return r.q
}

// exited reports whether the current run has exited (harness's Exited(0)
// picks at random between a closed channel and an expired timer).
func (s *scenario) exited() (error, bool) { return s.q.Exited(50 * time.Millisecond) }

// waitReady waits for READY=1 and the D-Bus name.
func (s *scenario) waitReady(timeout time.Duration) {
	s.t.Helper()
	s.q.WaitLog(timeout, 1, "msg", "qmd ready")
	deadline := time.Now().Add(timeout)
	for !s.wd.ready() {
		if time.Now().After(deadline) {
			s.t.Fatal("qmd logged ready but sent no READY=1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if _, err := s.managerProp("Version"); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("qmd ready but not on the bus: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopQMD stops the current run with SIGTERM and expects a clean exit.
func (s *scenario) stopQMD() {
	s.t.Helper()
	s.collect()
	r := s.runs[len(s.runs)-1]
	s.q.Signal(syscall.SIGTERM)
	err, done := s.q.Exited(20 * time.Second)
	if !done {
		s.t.Fatal("qmd did not exit within 20 s of SIGTERM")
	}
	if err != nil {
		s.t.Errorf("qmd exited with %v after SIGTERM", err)
		return
	}
	r.clean = true
	s.collect()
}

// ---- D-Bus

func (s *scenario) call(path dbus.ObjectPath, method string, timeout time.Duration, args ...any) *dbus.Call {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.conn.Object(busName, path).CallWithContext(ctx, method, 0, args...)
}

func (s *scenario) managerProp(name string) (any, error) {
	var v dbus.Variant
	if err := s.call(mgrPath, propsGet, 2*time.Second, mgrIface, name).Store(&v); err != nil {
		return nil, err
	}
	return v.Value(), nil
}

// props returns a partition's D-Bus properties.
func (s *scenario) props(part string, timeout time.Duration) (map[string]any, error) {
	var m map[string]dbus.Variant
	if err := s.call(partPath(part), propsAll, timeout, partIface).Store(&m); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v.Value()
	}
	return out, nil
}

func (s *scenario) partCall(part, method string) error {
	return s.call(partPath(part), partIface+"."+method, 5*time.Second).Err
}

// incident is one entry of ListIncidents.
type incident struct {
	ID, Time                 uint64
	Partition, Type, Summary string
	Details                  map[string]dbus.Variant
}

// listIncidents returns every incident qmd lists, oldest first.
func (s *scenario) listIncidents() []incident {
	s.t.Helper()
	return listAll(s.t, s.conn)
}

func listAll(t *testing.T, conn *dbus.Conn) []incident {
	t.Helper()
	var all []incident
	after := uint64(0)
	for {
		var page []incident
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := conn.Object(busName, mgrPath).CallWithContext(ctx, mgrIface+".ListIncidents", 0, "", after, uint32(1000)).Store(&page)
		cancel()
		if err != nil {
			t.Fatalf("ListIncidents after %d: %v", after, err)
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all
		}
		after = page[len(page)-1].ID
	}
}

// ackIncidents waits until qmd has nothing pending for the disk and
// records what it lists as acknowledged.
func (s *scenario) ackIncidents() {
	s.t.Helper()
	waitNothingPending(s.t, s.conn)
	for _, inc := range s.listIncidents() {
		s.acked[inc.ID] = inc.Type
	}
}

func waitNothingPending(t *testing.T, conn *dbus.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v dbus.Variant
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := conn.Object(busName, mgrPath).CallWithContext(ctx, propsGet, 0, mgrIface, "IncidentsPending").Store(&v)
		cancel()
		if err == nil {
			if n, ok := v.Value().(uint32); ok && n == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("Manager.IncidentsPending: %v", err)
			}
			t.Fatalf("incidents still pending for the disk after 10 s (IncidentsPending %s)", v.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collect records the incident ids every run logged (journal lines carry
// incident_id and event); a cleanly stopped run flushed them all.
func (s *scenario) collect() {
	for _, r := range s.runs {
		for id, typ := range loggedIncidents(r.q.Log()) {
			s.seen[id] = typ
			if r.clean {
				s.acked[id] = typ
			}
		}
	}
}

// loggedIncidents parses qmd's JSON log for incident lines.
func loggedIncidents(log string) map[uint64]string {
	out := map[uint64]string{}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"incident_id"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		id, ok := m["incident_id"].(float64)
		if !ok {
			continue
		}
		typ, _ := m["event"].(string)
		out[uint64(id)] = typ
	}
	return out
}

// checkIncidents reads the history back from the current (restarted) run:
// ids strictly increasing, every acknowledged incident still there with
// its type, and the ids of this run above every id handed out before.
func (s *scenario) checkIncidents() {
	s.t.Helper()
	s.collect()
	list := s.listIncidents()
	byID := map[uint64]string{}
	for i, inc := range list {
		if i > 0 && inc.ID <= list[i-1].ID {
			s.t.Errorf("incident ids not strictly increasing: %d after %d", inc.ID, list[i-1].ID)
		}
		byID[inc.ID] = inc.Type
	}
	var lost, changed []string
	for _, id := range sortedIDs(s.acked) {
		typ, ok := byID[id]
		switch {
		case !ok:
			lost = append(lost, fmt.Sprintf("%d(%s)", id, s.acked[id]))
		case typ != s.acked[id]:
			changed = append(changed, fmt.Sprintf("%d: %s -> %s", id, s.acked[id], typ))
		}
	}
	if len(lost) > 0 {
		s.t.Errorf("acknowledged incidents lost after a qmd restart (%d of %d): %s", len(lost), len(s.acked), strings.Join(lost, " "))
	}
	if len(changed) > 0 {
		s.t.Errorf("incident ids reused for other incidents: %s", strings.Join(changed, "; "))
	}
	// The current run's own incidents continue after every id handed out
	// by earlier runs (ids are never reused).
	cur := loggedIncidents(s.q.Log())
	prevMax := s.priorMax
	for _, r := range s.runs[:len(s.runs)-1] {
		for id := range loggedIncidents(r.q.Log()) {
			prevMax = max(prevMax, id)
		}
	}
	for _, id := range sortedIDs(cur) {
		if id <= prevMax {
			s.t.Errorf("incident %d (%s) of the restarted qmd does not continue after id %d, handed out before the restart",
				id, cur[id], prevMax)
		}
	}
	s.t.Logf("incidents: %d listed, %d acknowledged before, all ids strictly increasing", len(list), len(s.acked))
}

func sortedIDs(m map[uint64]string) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// ---- the partition, as qmd and Podman see it

// partState is a settled partition.
type partState struct {
	ID, StartedAt string
	PID           int
	Failed        bool
	Result        string
	NRestarts     uint32
}

// waitRunning waits until qmd reports part active/running and Podman agrees
// (same container, same init, oom_score_adj at policy). allowFailed
// accepts "failed" with a reason instead. It fails the test after timeout,
// with what it saw.
func (s *scenario) waitRunning(part string, timeout time.Duration, allowFailed bool) partState {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		st, why := s.observe(part, allowFailed)
		if why == "" {
			return st
		}
		last = why
		if time.Now().After(deadline) {
			ps, _ := s.pm.CLI("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Labels}}")
			s.t.Fatalf("partition %s not running under policy after %s: %s\npodman ps -a:\n%s", part, timeout, last, ps)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitNewInit waits until part runs under policy with an init other than
// old (qmd restarted it).
func (s *scenario) waitNewInit(part string, old int, timeout time.Duration) partState {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, why := s.observe(part, false)
		if why == "" && st.PID != old {
			return st
		}
		if why == "" {
			why = fmt.Sprintf("still the old init %d", old)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("partition %s not restarted under policy within %s: %s", part, timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// observe returns why part is not (yet) settled, "" when it is.
func (s *scenario) observe(part string, allowFailed bool) (partState, string) {
	p, err := s.props(part, 2*time.Second)
	if err != nil {
		return partState{}, fmt.Sprintf("d-bus: %v", err)
	}
	active, _ := p["ActiveState"].(string)
	sub, _ := p["SubState"].(string)
	st := partState{ID: str(p["ContainerId"]), Result: str(p["Result"])}
	st.NRestarts, _ = p["NRestarts"].(uint32)
	if active == "failed" {
		if allowFailed && st.Result != "" && st.Result != "success" {
			st.Failed = true
			return st, ""
		}
		return st, fmt.Sprintf("failed, Result=%q", st.Result)
	}
	if active != "active" || sub != "running" {
		return st, fmt.Sprintf("qmd says %s/%s (conditions %v, result %q)", active, sub, p["Conditions"], st.Result)
	}
	mainPID, _ := p["MainPID"].(uint32)
	out := s.pm.Inspect(part, "{{.Id}} {{.State.Running}} {{.State.Pid}} {{.State.StartedAt}}")
	f := strings.SplitN(out, " ", 4)
	if len(f) != 4 {
		return st, fmt.Sprintf("podman inspect %s: %q", part, out)
	}
	if f[0] != st.ID || f[1] != "true" || f[2] != strconv.Itoa(int(mainPID)) {
		return st, fmt.Sprintf("qmd says running %s pid %d, podman says %s running=%s pid %s", short(st.ID), mainPID, short(f[0]), f[1], f[2])
	}
	st.PID, st.StartedAt = int(mainPID), f[3]
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", st.PID))
	if err != nil {
		return st, fmt.Sprintf("init %d: %v", st.PID, err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(policyScoreOf(s, part)) {
		return st, fmt.Sprintf("init %d oom_score_adj %s, policy %d", st.PID, got, policyScoreOf(s, part))
	}
	return st, ""
}

// policyScoreOf is the oom_score_adj qmd must keep on part's init.
func policyScoreOf(s *scenario, part string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.scores[part]; ok {
		return v
	}
	return policyScore
}

// setPolicyScore records a configured oom_score_adj (reload storm).
func setPolicyScore(s *scenario, part string, v int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scores[part] = v
}

// oneContainer checks that Podman has exactly one container of part (by
// qmd's label), and returns its ID.
func (s *scenario) oneContainer(part string) string {
	s.t.Helper()
	out, err := s.pm.CLI("ps", "-a", "-q", "--no-trunc", "--filter", "label="+labelPartition+"="+part)
	if err != nil {
		s.t.Fatalf("podman ps: %v %s", err, out)
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		all, _ := s.pm.CLI("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Created}}")
		s.t.Errorf("partition %s: %d containers with its label, want exactly 1:\n%s", part, len(ids), all)
		if len(ids) == 0 {
			return ""
		}
	}
	return ids[0]
}

func str(v any) string { s, _ := v.(string); return s }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ---- the common frame of a scenario

// baseline runs qmd once to measure a fresh qmd's goroutines with the
// partitions running (it is then killed with SIGQUIT, a crash), and starts
// the qmd the scenario works with, which adopts them.
func (s *scenario) baseline() (ids map[string]partState, ref goroutines) {
	s.t.Helper()
	s.startQMD()
	s.waitReady(settle)
	for _, p := range s.o.parts {
		s.waitRunning(p, settle, false)
	}
	// Nothing pending for the disk: the crash below loses no incident.
	s.ackIncidents()
	ref = s.quit()
	s.startQMD()
	s.waitReady(settle)
	ids = map[string]partState{}
	for _, p := range s.o.parts {
		ids[p] = s.waitRunning(p, settle, false)
	}
	return ids, ref
}

// finish checks the end state of a scenario: qmd alive, partitions
// settled, one container each, watchdog kept, no goroutine growth; then
// restarts qmd and reads the incident history back. want maps each
// partition to the container ID it must have ("" = any).
func (s *scenario) finish(ref goroutines, base procStats, want map[string]string, allowFailed bool) {
	s.t.Helper()
	if err, done := s.exited(); done {
		s.t.Fatalf("qmd exited during the scenario: %v", err)
	}
	// The fault is over: did systemd get its pings throughout?
	s.checkWatchdog()
	for _, p := range s.o.parts {
		st := s.waitRunning(p, settle, allowFailed)
		if st.Failed {
			s.t.Logf("partition %s ended failed (Result=%s); checking that ResetFailed brings it back", p, st.Result)
			if err := s.partCall(p, "ResetFailed"); err != nil {
				s.t.Errorf("ResetFailed %s: %v", p, err)
			}
			st = s.waitRunning(p, settle, false)
		}
		if w := want[p]; w != "" && st.ID != w {
			s.t.Errorf("partition %s: container %s, want the same container %s", p, short(st.ID), short(w))
		}
		if id := s.oneContainer(p); id != "" && id != st.ID {
			s.t.Errorf("partition %s: qmd supervises %s, podman has %s", p, short(st.ID), short(id))
		}
	}
	if out, err := s.pm.CLI("ps", "-a", "-q", "--filter", "label="+labelPartition); err != nil || len(strings.Fields(out)) != len(s.o.parts) {
		s.t.Errorf("%d containers with qmd's label for %d partitions (%v)", len(strings.Fields(out)), len(s.o.parts), err)
	}
	// Quiet for a moment, then measure: what the fault started must be over.
	time.Sleep(3 * time.Second)
	end := readProcStats(s.q.PID())
	s.t.Logf("qmd process: start %s, end %s", base, end)
	if end.FDs > base.FDs+8 {
		s.t.Errorf("qmd file descriptors grew from %d to %d (leaked connections?)", base.FDs, end.FDs)
	}
	if end.Threads > base.Threads+8 {
		s.t.Errorf("qmd threads grew from %d to %d", base.Threads, end.Threads)
	}
	if end.RSSKiB > base.RSSKiB+32*1024 {
		s.t.Errorf("qmd RSS grew from %d KiB to %d KiB", base.RSSKiB, end.RSSKiB)
	}
	if !s.storeDegraded {
		s.ackIncidents()
	}
	got := s.quit()
	s.t.Logf("goroutines: fresh qmd %d (%d in qmd's code), after the scenario %d (%d)", ref.total, ref.own(), got.total, got.own())
	if d := got.diff(ref); d != "" && got.total <= ref.total+6 {
		s.t.Logf("goroutines more than in the fresh qmd:\n%s", d)
	}
	// Idle HTTP connections to Podman (two goroutines each) come and go;
	// qmd's own goroutines must be back to what a fresh qmd has.
	if got.total > ref.total+6 || got.own() > ref.own()+2 {
		s.t.Errorf("qmd goroutines grew: %d (%d in qmd's code) in a fresh qmd, %d (%d) after the scenario; grown:\n%s",
			ref.total, ref.own(), got.total, got.own(), got.diff(ref))
	}
	// Read the history back from a restarted qmd, which adopts.
	s.startQMD()
	s.waitReady(settle)
	for _, p := range s.o.parts {
		st := s.waitRunning(p, settle, false)
		s.oneContainer(p)
		_ = st
	}
	waitNothingPending(s.t, s.conn)
	s.checkIncidents()
}

// checkWatchdog checks every run's WATCHDOG=1 pings: never a gap of
// WatchdogSec or more while qmd ran (systemd would have killed it).
func (s *scenario) checkWatchdog() {
	s.t.Helper()
	r := s.runs[len(s.runs)-1]
	from, pings := r.wd.readyAt(), r.wd.pings()
	if from.IsZero() {
		s.t.Error("no READY=1")
		return
	}
	prev, worst, at := from, time.Duration(0), from
	for _, p := range append(pings, time.Now()) {
		if g := p.Sub(prev); g > worst {
			worst, at = g, prev
		}
		prev = p
	}
	s.t.Logf("watchdog: %d pings, longest gap %s", len(pings), worst.Round(time.Millisecond))
	if worst >= watchdogTimeout {
		s.t.Errorf("no WATCHDOG=1 for %s from %s on (WatchdogSec=%s): systemd would have killed qmd\n%s",
			worst.Round(time.Millisecond), at.Format("15:04:05.000"), watchdogTimeout, grepLog(s.q.Log(), "health", "watchdog"))
	}
}

// grepLog returns qmd's log lines containing any of words.
func grepLog(log string, words ...string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > 40 {
		out = append(out[:20], append([]string{"..."}, out[len(out)-20:]...)...)
	}
	return strings.Join(out, "\n")
}

// ---- sd_notify

// notifier is the NOTIFY_SOCKET qmd reports to.
type notifier struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func listenNotify(t *testing.T, dir string) *notifier {
	t.Helper()
	n := &notifier{path: filepath.Join(dir, fmt.Sprintf("notify-%d.sock", time.Now().UnixNano()))}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{at: time.Now(), text: string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifier) find(line string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []time.Time
	for _, m := range n.msgs {
		for _, l := range strings.Split(m.text, "\n") {
			if l == line {
				out = append(out, m.at)
			}
		}
	}
	return out
}

func (n *notifier) ready() bool { return len(n.find("READY=1")) > 0 }

func (n *notifier) readyAt() time.Time {
	if r := n.find("READY=1"); len(r) > 0 {
		return r[0]
	}
	return time.Time{}
}

func (n *notifier) pings() []time.Time { return n.find("WATCHDOG=1") }

// statuses returns the STATUS= lines sent.
func (n *notifier) statuses() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.msgs {
		for _, l := range strings.Split(m.text, "\n") {
			if s, ok := strings.CutPrefix(l, "STATUS="); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// wantStatus checks that the current run sent a STATUS= line containing
// substr (systemctl status shows it).
func (s *scenario) wantStatus(substr string) {
	s.t.Helper()
	sts := s.wd.statuses()
	for _, st := range sts {
		if strings.Contains(st, substr) {
			return
		}
	}
	s.t.Errorf("no STATUS= line with %q; sent: %q", substr, sts)
}

// ---- qmd's process: goroutines (SIGQUIT dump), threads, RSS, fds

// goroutines is a SIGQUIT goroutine dump, summarised.
type goroutines struct {
	total int
	byTop map[string]int // goroutines by their innermost qmd frame (or entry function)
}

// "goroutine 7 [select]:" or, in a crash dump, "goroutine 7 gp=0x... m=nil [select]:";
// goroutine 0 is the runtime's g0, not counted.
var goroutineHeader = regexp.MustCompile(`^goroutine [1-9]\d* .*\[.*\]:$`)

// quit ends the current run with SIGQUIT (GOTRACEBACK=all) and parses the
// goroutine dump it prints. qmd dies like in a crash; the caller made sure
// nothing was pending for the disk if that matters.
func (s *scenario) quit() goroutines {
	s.t.Helper()
	s.collect()
	s.q.Signal(syscall.SIGQUIT)
	if _, done := s.q.Exited(20 * time.Second); !done {
		s.t.Fatal("qmd did not exit on SIGQUIT")
	}
	g := parseDump(s.q.Log())
	if g.total == 0 {
		s.t.Fatalf("no goroutine dump in qmd's output after SIGQUIT:\n%s", tail(s.q.Log(), 20))
	}
	return g
}

func parseDump(log string) goroutines {
	g := goroutines{byTop: map[string]int{}}
	lines := strings.Split(log, "\n")
	for i := 0; i < len(lines); i++ {
		if !goroutineHeader.MatchString(lines[i]) {
			continue
		}
		g.total++
		// Key: the innermost frame of qmd's code; else the goroutine's
		// entry function (its outermost frame), e.g. an HTTP connection's
		// readLoop.
		qmd, entry := "", ""
		for j := i + 1; j < len(lines) && strings.TrimSpace(lines[j]) != ""; j += 2 {
			fn := lines[j]
			if strings.HasPrefix(fn, "created by ") {
				break
			}
			if k := strings.LastIndex(fn, "("); k > 0 {
				fn = fn[:k]
			}
			if qmd == "" && strings.HasPrefix(fn, "github.com/containers/qmd/") {
				qmd = fn
			}
			if fn != "runtime.goexit" {
				entry = fn
			}
		}
		if qmd != "" {
			g.byTop[qmd]++
		} else {
			g.byTop[entry]++
		}
	}
	return g
}

// own counts the goroutines running qmd's code.
func (g goroutines) own() int {
	n := 0
	for k, v := range g.byTop {
		if strings.HasPrefix(k, "github.com/containers/qmd/") {
			n += v
		}
	}
	return n
}

// diff lists the frames with more goroutines than in ref.
func (g goroutines) diff(ref goroutines) string {
	var out []string
	for k, n := range g.byTop {
		if d := n - ref.byTop[k]; d > 0 {
			out = append(out, fmt.Sprintf("  +%d %s (%d)", d, k, n))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

type procStats struct {
	Threads, FDs int
	RSSKiB       int
}

func (p procStats) String() string {
	return fmt.Sprintf("%d threads, %d fds, RSS %d KiB", p.Threads, p.FDs, p.RSSKiB)
}

func readProcStats(pid int) procStats {
	var ps procStats
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			fs := strings.Fields(v)
			if len(fs) == 0 {
				continue
			}
			switch k {
			case "Threads":
				ps.Threads, _ = strconv.Atoi(fs[0])
			case "VmRSS":
				ps.RSSKiB, _ = strconv.Atoi(fs[0])
			}
		}
		_ = f.Close()
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		ps.FDs = len(ents)
	}
	return ps
}

// ---- the Podman service process

// podmanPID finds the private service's process (harness.Podman keeps its
// command private): the `podman ... system service ... unix://<socket>`.
func podmanPID(t *testing.T, pm *harness.Podman) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "podman" &&
			strings.Contains(string(b), "\x00service\x00") && strings.Contains(string(b), "unix://"+pm.Socket) {
			return pid
		}
	}
	t.Fatalf("podman service for %s not found", pm.Socket)
	return 0
}

// ---- small helpers

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// run executes a command and fails the test on error.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
