package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/testutil"
)

// countFires drains tr.C for d and returns how many firings it delivered
// and whether the channel was closed.
func countFires(tr *PSITrigger, d time.Duration) (n int, closed bool) {
	deadline := time.After(d)
	ch := tr.C()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				ch = nil // count on until the deadline: a closed channel must stay quiet
				closed = true
				continue
			}
			n++
		case <-deadline:
			return n, closed
		}
	}
}

func testSpec(t *testing.T) PSITriggerSpec {
	p := filepath.Join(t.TempDir(), "memory.pressure")
	testutil.WriteTree(t, filepath.Dir(p), map[string]string{"memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"})
	return PSITriggerSpec{Path: p, Kind: PSISome, Threshold: 100 * time.Millisecond, Window: 2 * time.Second}
}

func waitDone(t *testing.T, tr *PSITrigger) {
	t.Helper()
	select {
	case <-tr.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("trigger did not end")
	}
	if !errors.Is(tr.Err(), ErrGone) {
		t.Errorf("Err = %v, want ErrGone", tr.Err())
	}
}

// TestPSITriggerEndsOnPollError: a pipe whose reader is gone reports
// POLLERR forever, like the PSI file of a removed cgroup. The trigger must
// end (not fire, not spin) with ErrGone.
func TestPSITriggerEndsOnPollError(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[0])
	tr, err := startPSITrigger(PSIRegistration{Spec: testSpec(t)}, p[1])
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	waitDone(t, tr)
	if n, closed := countFires(tr, 200*time.Millisecond); n != 0 || !closed {
		t.Errorf("after POLLERR: %d firings, closed %v; want 0, closed", n, closed)
	}
}

// TestPSITriggerEndsOnHangup: POLLHUP (a pipe without writer) is as
// permanent as POLLERR.
func TestPSITriggerEndsOnHangup(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	tr, err := startPSITrigger(PSIRegistration{Spec: testSpec(t)}, p[0])
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	waitDone(t, tr)
	if n, _ := countFires(tr, 200*time.Millisecond); n != 0 {
		t.Errorf("after POLLHUP: %d firings", n)
	}
}

// TestPSITriggerFakeFileRemoved: a trigger on a fake pressure file never
// fires while the file is there, and ends with ErrGone once it is removed
// (a watched ASIL cgroup going away in a fake tree).
func TestPSITriggerFakeFileRemoved(t *testing.T) {
	spec := testSpec(t)
	tr, err := NewPSITrigger(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if n, closed := countFires(tr, 200*time.Millisecond); n != 0 || closed {
		t.Fatalf("fake file present: %d firings, closed %v", n, closed)
	}
	if err := os.Remove(spec.Path); err != nil {
		t.Fatal(err)
	}
	waitDone(t, tr)
	if n, _ := countFires(tr, 200*time.Millisecond); n != 0 {
		t.Errorf("removed file: %d firings", n)
	}
	// Close after the end is fine and idempotent.
	if err := tr.Close(); err != nil {
		t.Error(err)
	}
}

// TestPSITriggerFakeFileReplaced: a file replaced under the same path (a
// restarted unit's cgroup re-created) ends the trigger on the old one.
func TestPSITriggerFakeFileReplaced(t *testing.T) {
	spec := testSpec(t)
	tr, err := NewPSITrigger(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tmp := spec.Path + ".new"
	testutil.WriteTree(t, filepath.Dir(spec.Path), map[string]string{filepath.Base(tmp): "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"})
	if err := os.Rename(tmp, spec.Path); err != nil {
		t.Fatal(err)
	}
	waitDone(t, tr)
}

func TestPSITotalAndWorkingSet(t *testing.T) {
	h, cg := fakeV2(t)
	testutil.WriteTree(t, h.Root, map[string]string{
		"qm/memory.pressure": "some avg10=1.00 avg60=0.00 avg300=0.00 total=5000\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=1200\n",
		"qm/memory.stat":     "anon 600\nfile 400\ninactive_file 300\nactive_file 100\n",
		"qm/memory.current":  "1000\n",
	})
	p, err := cg.Pressure("memory")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := p.Total(PSISome); !ok || v != 5000 {
		t.Errorf("some total %d %v", v, ok)
	}
	if v, ok := p.Total(PSIFull); !ok || v != 1200 {
		t.Errorf("full total %d %v", v, ok)
	}
	if _, err := cg.Pressure("io"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("missing io.pressure: %v", err)
	}
	ws, usage, err := cg.MemoryWorkingSet()
	if err != nil || ws != 700 || usage != 1000 {
		t.Errorf("working set %d of %d, %v; want 700 of 1000", ws, usage, err)
	}

	h1, cg1 := fakeV1(t)
	testutil.WriteTree(t, h1.Root, map[string]string{"memory/qm/memory.stat": "cache 0\nrss 4096\ntotal_inactive_file 1048576\n"})
	if ws, usage, err := cg1.MemoryWorkingSet(); err != nil || ws != 1048576 || usage != 2097152 {
		t.Errorf("v1 working set %d of %d, %v", ws, usage, err)
	}
	if _, err := cg1.Pressure("memory"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("v1 pressure: %v", err)
	}
	if _, ok := (PSI{Some: PSILine{Total: 3}}).Total(PSIFull); ok {
		t.Error("full total of a file without a full line")
	}
}
