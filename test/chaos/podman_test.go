package chaos

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil/faultproxy"
)

// podmanStall is how long Podman stays SIGSTOPped.
const podmanStall = 30 * time.Second

// responsiveness samples qmd's D-Bus interface while Podman misbehaves:
// properties must come back promptly, and the partition should say that
// Podman is degraded.
type responsiveness struct {
	samples    int
	slowest    time.Duration
	errs       []string
	conditions map[string]bool
	states     map[string]bool
}

func (s *scenario) sample(part string, r *responsiveness) {
	if r.conditions == nil {
		r.conditions, r.states = map[string]bool{}, map[string]bool{}
	}
	t0 := time.Now()
	p, err := s.props(part, 5*time.Second)
	d := time.Since(t0)
	r.samples++
	r.slowest = max(r.slowest, d)
	if err != nil {
		r.errs = append(r.errs, fmt.Sprintf("%s after %s", err, d.Round(time.Millisecond)))
		return
	}
	if cs, ok := p["Conditions"].([]string); ok {
		for _, c := range cs {
			r.conditions[c] = true
		}
	}
	r.states[str(p["ActiveState"])+"/"+str(p["SubState"])] = true
}

// check asserts on what the samples saw.
func (r *responsiveness) check(t *testing.T, what string) {
	t.Helper()
	t.Logf("%s: %d D-Bus samples, slowest %s, states %v, conditions %v", what, r.samples, r.slowest.Round(time.Millisecond),
		keys(r.states), keys(r.conditions))
	if len(r.errs) > 0 {
		t.Errorf("%s: D-Bus property reads failed %d of %d times: %s", what, len(r.errs), r.samples, strings.Join(r.errs, "; "))
	}
	// "At once" with slack for a loaded 2-core machine: a read that waits
	// for Podman takes podman.timeout (10 s).
	if r.slowest > 2*time.Second {
		t.Errorf("%s: a D-Bus property read took %s (methods and properties must answer at once)", what, r.slowest.Round(time.Millisecond))
	}
	if !r.conditions["podman-degraded"] {
		t.Errorf("%s: the partition never showed the condition podman-degraded (seen: %v)", what, keys(r.conditions))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// wantIncidentTypes checks that the restarted qmd lists incidents of these
// types (any of each group).
func (s *scenario) wantIncidentTypes(groups ...[]string) {
	s.t.Helper()
	have := map[string]bool{}
	for _, inc := range s.listIncidents() {
		have[inc.Type] = true
	}
	for _, g := range groups {
		if !slices.ContainsFunc(g, func(typ string) bool { return have[typ] }) {
			s.t.Errorf("no incident of type %s recorded (types: %v)", strings.Join(g, " or "), keys(have))
		}
	}
}

// TestChaosPodmanStoppedDuringStart: Podman is SIGSTOPped for 30 s at the
// moment qmd asks it to start the partition again (its init was killed).
// qmd must stay responsive and keep its watchdog, say Podman is degraded,
// and bring the same container back once Podman runs again.
func TestChaosPodmanStoppedDuringStart(t *testing.T) {
	s := newScenario(t, opts{proxy: true})
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())
	pid := podmanPID(t, s.pm)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })

	stopped := make(chan time.Time, 1)
	s.proxy.OnRequest(faultproxy.Match("POST", "/start"), 1, func(_, path string) {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		stopped <- time.Now()
	})
	if err := syscall.Kill(ids["qm"].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	select {
	case at = <-stopped:
	case <-time.After(settle):
		t.Fatalf("qmd did not start the partition again within %s of its init's death:\n%s", settle, tail(s.q.Log(), 30))
	}
	t.Logf("podman SIGSTOPped at the start request; %s to go", podmanStall)
	var r responsiveness
	for time.Until(at.Add(podmanStall)) > 0 {
		s.sample("qm", &r)
		time.Sleep(time.Second)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Log("podman SIGCONTed")
	r.check(t, "podman stopped")
	s.wantStatus("podman-degraded")
	if err, done := s.exited(); done {
		t.Fatalf("qmd exited while Podman was stopped: %v", err)
	}
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, true)
	s.wantIncidentTypes([]string{"restart"}, []string{"podman-slow"})
}

// TestChaosPodmanKilledMidStart: the Podman service is killed 50 ms after
// qmd's start request reached it, and comes back 3 s later.
func TestChaosPodmanKilledMidStart(t *testing.T) {
	s := newScenario(t, opts{proxy: true})
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())
	killed := make(chan time.Time, 1)
	s.proxy.OnRequest(faultproxy.Match("POST", "/start"), 1, func(_, _ string) {
		time.AfterFunc(50*time.Millisecond, func() {
			s.pm.Kill()
			killed <- time.Now()
		})
	})
	if err := syscall.Kill(ids["qm"].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.killedAndBack(killed)
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, true)
	s.wantIncidentTypes([]string{"restart"}, []string{"podman-lost"})
}

// TestChaosPodmanKilledMidStop: an operator restarts the partition (D-Bus
// Restart); the Podman service is killed 50 ms after qmd's stop (or kill)
// request reached it, and comes back 3 s later. The restart completes: the
// partition runs, in the same container.
func TestChaosPodmanKilledMidStop(t *testing.T) {
	s := newScenario(t, opts{proxy: true})
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())
	killed := make(chan time.Time, 1)
	stopOrKill := func(method, path string) bool {
		return method == "POST" && (strings.HasSuffix(path, "/stop") || strings.HasSuffix(path, "/kill"))
	}
	s.proxy.OnRequest(stopOrKill, 1, func(_, _ string) {
		time.AfterFunc(50*time.Millisecond, func() {
			s.pm.Kill()
			killed <- time.Now()
		})
	})
	if err := s.partCall("qm", "Restart"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	s.killedAndBack(killed)
	st := s.waitRunning("qm", settle, true)
	if !st.Failed && st.PID == ids["qm"].PID {
		t.Errorf("the restart requested before Podman died never happened (same init %d)", st.PID)
	}
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, true)
	s.wantIncidentTypes([]string{"podman-lost"})
}

// killedAndBack waits for the hook to kill Podman, watches qmd for 3 s
// without it, and restarts the service.
func (s *scenario) killedAndBack(killed <-chan time.Time) {
	s.t.Helper()
	select {
	case <-killed:
	case <-time.After(settle):
		s.t.Fatalf("qmd sent no matching request to Podman within %s:\n%s", settle, tail(s.q.Log(), 30))
	}
	s.t.Log("podman killed mid-request")
	var r responsiveness
	for i := 0; i < 3; i++ {
		time.Sleep(time.Second)
		s.sample("qm", &r)
	}
	if err, done := s.exited(); done {
		s.t.Fatalf("qmd exited while Podman was gone: %v", err)
	}
	s.pm.Start()
	s.t.Log("podman service restarted")
	r.check(s.t, "podman killed")
	s.wantStatus("podman-degraded")
}

// TestChaosSlowPodman: a proxy delays every Podman response by 15 s (more
// than podman.timeout) for 45 s, and the partition's init is killed at the
// start of it. qmd must stay responsive, keep its watchdog, report Podman
// degraded, never create a second container, and have the partition
// running in the same container once Podman answers in time again.
func TestChaosSlowPodman(t *testing.T) {
	const slowFor = 45 * time.Second
	s := newScenario(t, opts{proxy: true})
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())
	creates := faultproxy.Match("POST", "/containers/create")
	createsBefore := s.proxy.Count(creates)
	s.proxy.SetDelay(15 * time.Second)
	t0 := time.Now()
	if err := syscall.Kill(ids["qm"].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var r responsiveness
	for i := 0; time.Since(t0) < slowFor; i++ {
		s.sample("qm", &r)
		if i%5 == 0 {
			// The CLI reads the storage directly, not through the proxy.
			out, _ := s.pm.CLI("ps", "-a", "-q", "--filter", "label="+labelPartition+"=qm")
			if n := len(strings.Fields(out)); n > 1 {
				t.Errorf("%s into the slow phase: %d partition containers", time.Since(t0).Round(time.Second), n)
			}
		}
		time.Sleep(2 * time.Second)
	}
	s.proxy.SetDelay(0)
	t.Logf("responses on time again after %s; requests seen: %v", time.Since(t0).Round(time.Second), s.proxy.Counts())
	r.check(t, "podman slow")
	s.wantStatus("podman-degraded")
	if n := s.proxy.Count(creates) - createsBefore; n > 0 {
		t.Errorf("qmd asked Podman to create %d new container(s) although the partition's container exists", n)
	}
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, true)
	s.wantIncidentTypes([]string{"restart"}, []string{"podman-slow"})
}
