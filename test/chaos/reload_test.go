package chaos

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestChaosReloadStorm: two partitions, a reload (SIGHUP) every 100 ms for
// 60 s, each flipping both partitions' oom_score_adj (applied live, never a
// restart); halfway through, one partition's init is killed. Afterwards
// both run in their containers, only the killed one was restarted, and the
// last configuration is the one in force.
func TestChaosReloadStorm(t *testing.T) {
	const (
		stormFor = 60 * time.Second
		every    = 100 * time.Millisecond
	)
	s := newScenario(t, opts{parts: []string{"qm", "qm2"}, extra: "[policy]\nresync = \"2s\"\n"})
	baseScore := map[string]int{"qm": 500, "qm2": 600}
	config := func(flip int) {
		s.writeConfigFunc(func(name string) string {
			return fmt.Sprintf("oom_score_adj = %d\n", baseScore[name]+flip)
		})
	}
	config(0)
	setPolicyScore(s, "qm2", 600)
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())

	reloadedBefore := s.q.Count("msg", "configuration reloaded")
	t0 := time.Now()
	sent, killed := 0, false
	for time.Since(t0) < stormFor {
		config(10 * (sent % 2))
		s.q.Signal(syscall.SIGHUP)
		sent++
		if !killed && time.Since(t0) > stormFor/2 {
			if err := syscall.Kill(ids["qm2"].PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			t.Logf("qm2's init killed after %d reloads", sent)
		}
		if sent%100 == 0 {
			if err, done := s.exited(); done {
				t.Fatalf("qmd exited during the reload storm after %d SIGHUPs: %v", sent, err)
			}
			if _, err := s.props("qm", 2*time.Second); err != nil {
				t.Errorf("D-Bus during the reload storm: %v", err)
			}
		}
		time.Sleep(every)
	}
	// The last word: values neither flip used.
	baseScore = map[string]int{"qm": 520, "qm2": 620}
	config(0)
	setPolicyScore(s, "qm", 520)
	setPolicyScore(s, "qm2", 620)
	n := s.q.Count("msg", "configuration reloaded")
	s.q.Signal(syscall.SIGHUP)
	s.q.WaitLog(settle, n+1, "msg", "configuration reloaded")
	reloaded := s.q.Count("msg", "configuration reloaded") - reloadedBefore
	t.Logf("%d SIGHUPs in %s, %d reloads done", sent+1, stormFor, reloaded)
	if r := s.q.Count("msg", "reload rejected; keeping the running configuration"); r > 0 {
		t.Errorf("%d valid reloads rejected", r)
	}
	if reloaded < sent/10 {
		t.Errorf("only %d reloads for %d SIGHUPs", reloaded, sent+1)
	}

	// The last configuration is in force: observe (via waitRunning)
	// checks each init's oom_score_adj against it.
	for _, p := range s.o.parts {
		st := s.waitRunning(p, settle, false)
		props, err := s.props(p, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := props["OOMScoreAdjust"].(int32); int(got) != policyScoreOf(s, p) {
			t.Errorf("%s: OOMScoreAdjust %d over D-Bus, configured %d", p, got, policyScoreOf(s, p))
		}
		if st.ID != ids[p].ID {
			t.Errorf("%s: container %s, want the same %s", p, short(st.ID), short(ids[p].ID))
		}
		switch p {
		case "qm":
			if st.PID != ids[p].PID || st.StartedAt != ids[p].StartedAt || st.NRestarts != 0 {
				t.Errorf("qm was restarted by the reload storm: init %d -> %d, started %s -> %s, NRestarts %d",
					ids[p].PID, st.PID, ids[p].StartedAt, st.StartedAt, st.NRestarts)
			}
		case "qm2":
			if st.PID == ids[p].PID || st.NRestarts < 1 {
				t.Errorf("qm2 not restarted after its init was killed: init %d -> %d, NRestarts %d", ids[p].PID, st.PID, st.NRestarts)
			}
		}
	}
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID, "qm2": ids["qm2"].ID}, false)
}
