package policy

// Helpers shared by the controller tests: the fake-tree reaction tests,
// the IO tests and the real-cgroup tests. The recorder, the fake host and
// the file helpers are in policy_test.go.

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// runController starts Run and stops it at the end of the test.
func runController(t *testing.T, c *Controller) {
	t.Helper()
	testutil.RunInBackground(t, c.Run)
}

func newController(t *testing.T, h *Host, p *config.Partition, r *recorder) *Controller {
	t.Helper()
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	c.kill = func(pid int, cg string) error { return fmt.Errorf("test: no kill seam set (pid %d)", pid) }
	return c
}

// fakeSignals is the host-level protector as a partition sees it.
type fakeSignals struct {
	mu   sync.Mutex
	subs []chan protect.Signal
}

func (f *fakeSignals) Subscribe() (<-chan protect.Signal, func()) {
	ch := make(chan protect.Signal, 16)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

// offer sends sig to the subscribers that have room (never blocks: for
// senders in their own goroutine, which must not use t).
func (f *fakeSignals) offer(sig protect.Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- sig:
		default:
		}
	}
}

func (f *fakeSignals) send(t *testing.T, sig protect.Signal) {
	t.Helper()
	testutil.Eventually(t, "a subscriber", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.subs) > 0 })
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		ch <- sig
	}
}

func (r *recorder) restartCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.restarts)
}

// observe routes the host's log into an observer (all levels).
func observe(h *Host) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	h.Log = zap.New(core)
	return logs
}

// recordKills makes this test process stand for the partition's init (an
// alive pid, never to be killed) and records the pids the controller
// kills instead of signalling them; a kill outside the partition's cgroup
// fails the test.
func recordKills(t *testing.T, c *Controller) *[]int {
	t.Helper()
	c.pid = os.Getpid()
	killed := &[]int{}
	c.kill = func(pid int, cg string) error {
		if cg != "/libpod-0123abcd" {
			t.Errorf("kill of %d scoped to %s", pid, cg)
		}
		*killed = append(*killed, pid)
		return nil
	}
	return killed
}

// steppedConfig is the test partition with memory.high steps and floor
// of size.
func steppedConfig(size string) *config.Partition {
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize(size)
	p.Pressure.Floor, _ = config.ParseSize(size)
	return p
}
