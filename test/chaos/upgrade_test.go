package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/test/harness"
)

// restartsEnv sets how many qmd restarts the upgrade test does.
const restartsEnv = "QMD_CHAOS_RESTARTS"

// lite is a qmd run of the upgrade test: lighter than harness.QMD (no
// cleanup, no kept log per run beyond a tail), for a thousand runs.
type lite struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error

	mu        sync.Mutex
	adoptAt   time.Time
	readyAt   time.Time
	incidents map[uint64]string
	tail      []string
	changed   chan struct{} // closed and replaced on every line
}

func startLite(t *testing.T, cfg string, env ...string) *lite {
	t.Helper()
	l := &lite{done: make(chan struct{}), incidents: map[uint64]string{}, changed: make(chan struct{})}
	l.cmd = exec.Command(harness.QMDBinary(t), "--config", cfg)
	l.cmd.Env = append(os.Environ(), env...)
	l.cmd.Stdout = io.Discard
	stderr, err := l.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	l.started = time.Now()
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go l.read(stderr)
	return l
}

func (l *lite) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		var m struct {
			Msg        string  `json:"msg"`
			Event      string  `json:"event"`
			Partition  string  `json:"partition"`
			IncidentID float64 `json:"incident_id"`
		}
		_ = json.Unmarshal([]byte(line), &m)
		l.mu.Lock()
		if m.IncidentID > 0 {
			l.incidents[uint64(m.IncidentID)] = m.Event
		}
		if m.Event == "adopt" && m.Partition == "qm" && l.adoptAt.IsZero() {
			l.adoptAt = now
		}
		if m.Msg == "qmd ready" && l.readyAt.IsZero() {
			l.readyAt = now
		}
		l.tail = append(l.tail, line)
		if len(l.tail) > 60 {
			l.tail = l.tail[len(l.tail)-60:]
		}
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.err = l.cmd.Wait()
	close(l.done)
}

// waitFor waits until cond (called with l.mu held) holds.
func (l *lite) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		ok, ch := cond(), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-l.done:
			l.mu.Lock()
			ok = cond()
			l.mu.Unlock()
			if !ok {
				t.Fatalf("qmd exited (%v) before %s:\n%s", l.err, what, l.log())
			}
			return
		case <-deadline:
			t.Fatalf("no %s within %s:\n%s", what, timeout, l.log())
		}
	}
}

func (l *lite) log() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "\n")
}

func (l *lite) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	_ = l.cmd.Process.Signal(sig)
	select {
	case <-l.done:
	case <-time.After(20 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.done
		t.Fatalf("qmd did not exit within 20 s of %v:\n%s", sig, l.log())
	}
	if sig == syscall.SIGTERM && l.err != nil {
		t.Fatalf("qmd exited with %v after SIGTERM:\n%s", l.err, l.log())
	}
}

// TestChaosUpgradeRestarts: qmd is restarted QMD_CHAOS_RESTARTS times in a
// row (default 1000), stopped alternately with SIGTERM and kill -9, as an
// upgrade or a crash would. The partition is never restarted (same
// container, same init, same start time), every run adopts it, the
// incident ids of the runs strictly increase and none is lost. Prints the
// time from qmd's start to its adoption of the running partition.
func TestChaosUpgradeRestarts(t *testing.T) {
	n := 1000
	if v := os.Getenv(restartsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("%s=%q: want a count >= 2", restartsEnv, v)
		}
	}
	s := newScenario(t, opts{logLevel: "info", maxInc: 100000})
	s.startQMD()
	s.waitReady(settle)
	first := s.waitRunning("qm", settle, false)
	s.stopQMD()

	var (
		readopt, ready []time.Duration
		lastAdopt      uint64
		t0             = time.Now()
	)
	for i := 0; i < n; i++ {
		l := startLite(t, s.cfg, "DBUS_SYSTEM_BUS_ADDRESS="+s.bus.Addr)
		l.waitFor(t, settle, fmt.Sprintf("adoption in run %d", i), func() bool { return !l.adoptAt.IsZero() })
		l.waitFor(t, settle, fmt.Sprintf("ready in run %d", i), func() bool { return !l.readyAt.IsZero() })
		readopt = append(readopt, l.adoptAt.Sub(l.started))
		ready = append(ready, l.readyAt.Sub(l.started))

		sig := syscall.SIGTERM
		if i%2 == 1 {
			// Everything qmd told is on disk before the crash.
			waitNothingPending(t, s.conn)
			sig = syscall.SIGKILL
		}
		l.stop(t, sig)

		l.mu.Lock()
		var adopts []uint64
		for id, typ := range l.incidents {
			s.acked[id] = typ
			s.seen[id] = typ
			s.priorMax = max(s.priorMax, id)
			switch typ {
			case "adopt":
				adopts = append(adopts, id)
			case "start", "restart", "stop", "start-limit":
				t.Errorf("run %d: %s incident %d: the partition was touched", i, typ, id)
			}
		}
		l.mu.Unlock()
		if len(adopts) != 1 {
			t.Fatalf("run %d: %d adopt incidents %v, want 1:\n%s", i, len(adopts), adopts, l.log())
		}
		if adopts[0] <= lastAdopt {
			t.Fatalf("run %d: adopt incident id %d after %d: ids not increasing", i, adopts[0], lastAdopt)
		}
		lastAdopt = adopts[0]

		if (i+1)%100 == 0 || i == n-1 {
			got := s.pm.Inspect("qm", "{{.Id}} {{.State.Pid}} {{.State.StartedAt}}")
			want := fmt.Sprintf("%s %d %s", first.ID, first.PID, first.StartedAt)
			if got != want {
				t.Fatalf("after %d qmd restarts the partition is %q, was %q", i+1, got, want)
			}
			t.Logf("%d qmd restarts in %s: re-adopt median %s, max %s",
				i+1, time.Since(t0).Round(time.Second), median(readopt).Round(time.Millisecond), maxDur(readopt).Round(time.Millisecond))
		}
	}
	elapsed := time.Since(t0)

	// A last qmd reads the history back.
	s.startQMD()
	s.waitReady(settle)
	st := s.waitRunning("qm", settle, false)
	if st.ID != first.ID || st.PID != first.PID || st.StartedAt != first.StartedAt || st.NRestarts != 0 {
		t.Errorf("partition changed over %d qmd restarts: %+v -> %+v", n, first, st)
	}
	s.oneContainer("qm")
	waitNothingPending(t, s.conn)
	s.checkIncidents()
	starts := 0
	for _, inc := range s.listIncidents() {
		if inc.Type == "start" || inc.Type == "restart" {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("%d start/restart incidents over the whole test, want 1 (the first start)", starts)
	}
	summary := fmt.Sprintf("re-adopt after a qmd start over %d restarts (SIGTERM and kill -9 alternating): median %s, p90 %s, max %s; "+
		"qmd start to ready: median %s, max %s; %s in all (%s per restart)",
		n, median(readopt).Round(100*time.Microsecond), percentile(readopt, 0.9).Round(100*time.Microsecond),
		maxDur(readopt).Round(100*time.Microsecond), median(ready).Round(100*time.Microsecond),
		maxDur(ready).Round(100*time.Microsecond), elapsed.Round(time.Second), (elapsed / time.Duration(n)).Round(time.Millisecond))
	t.Log(summary)
	fmt.Println("chaos: " + summary)
}
