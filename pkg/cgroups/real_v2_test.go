package cgroups

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
)

// realUnified creates a cgroup in a real cgroup v2 hierarchy: the hybrid
// host's /sys/fs/cgroup/unified (no controllers, but the core files
// cgroup.events, cgroup.freeze, cgroup.kill and per-cgroup PSI are there)
// or /sys/fs/cgroup on a v2 host.
func realUnified(t testing.TB) (*Hierarchy, *Cgroup) {
	t.Helper()
	if testing.Short() {
		t.Skip("real cgroups: skipped with -short")
	}
	testutil.RequireRoot(t)
	var h *Hierarchy
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if hh, err := NewHierarchy(root); err == nil && hh.Version == V2 {
			h = hh
			break
		}
	}
	if h == nil {
		t.Skip("no cgroup2 mount")
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "/qmdtest-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(h.Root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a v2 cgroup: %v", err)
	}
	cg, err := h.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cg.Thaw(context.Background())
		_ = cg.Kill()
		testutil.RemoveCgroup(t, dir)
	})
	return h, cg
}

func startSleepIn(t testing.TB, cg *Cgroup) *exec.Cmd {
	t.Helper()
	cmd := startSleep(t)
	if err := writeFile(filepath.Join(cg.Dir(""), "cgroup.procs"), strconv.Itoa(cmd.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestRealV2Lifecycle: populated, freeze, thaw, kill, emptied and removal,
// every step observed through the kernel's cgroup.events notifications.
func TestRealV2Lifecycle(t *testing.T) {
	h, cg := realUnified(t)
	w, err := cg.Watch(WatchOptions{Children: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := startSleepIn(t, cg)
	expect(t, w, EventPopulated, 0)
	if got, err := h.ForPID("", cmd.Process.Pid); err != nil || got.Path() != cg.Path() {
		t.Errorf("ForPID = %v %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := cg.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("v2 freeze (cgroup.freeze, waited via inotify) took %v", time.Since(start))
	expect(t, w, EventFrozen, 0)
	if st, err := cg.State(); err != nil || !st.Frozen || !st.Populated {
		t.Errorf("State = %+v %v", st, err)
	}
	start = time.Now()
	if err := cg.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("v2 thaw took %v", time.Since(start))
	expect(t, w, EventThawed, 0)
	// A child cgroup (a nested container).
	if err := os.Mkdir(filepath.Join(cg.Dir(""), "libpod-n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ev := expect(t, w, EventChildCreated, 0); ev.Path != cg.Path()+"/libpod-n" {
		t.Errorf("child %q", ev.Path)
	}
	withChild := inotifyWatches(t, w)
	if err := os.Remove(filepath.Join(cg.Dir(""), "libpod-n")); err != nil {
		t.Fatal(err)
	}
	// The next creation event proves the removal was processed (one queue):
	// the removed child's watch is gone, the new one added.
	if err := os.Mkdir(filepath.Join(cg.Dir(""), "libpod-m"), 0o755); err != nil {
		t.Fatal(err)
	}
	expect(t, w, EventChildCreated, 0)
	if got := inotifyWatches(t, w); got != withChild {
		t.Errorf("%d inotify watches after remove+create, want %d (removed child's watch leaked)", got, withChild)
	}
	if err := os.Remove(filepath.Join(cg.Dir(""), "libpod-m")); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := cg.Kill(); err != nil {
		t.Fatal(err)
	}
	expect(t, w, EventEmptied, 0)
	t.Logf("cgroup.kill -> emptied event %v", time.Since(start))
	cmd.Wait()
	if err := os.Remove(cg.Dir("")); err != nil {
		t.Fatal(err)
	}
	if err := expectEnd(t, w); !errors.Is(err, ErrGone) {
		t.Errorf("end = %v, want ErrGone", err)
	}
}

// TestRealV2PSITriggerGone: a trigger on a cgroup's memory.pressure; the
// cgroup is removed: POLLERR ends the trigger with ErrGone.
func TestRealV2PSITriggerGone(t *testing.T) {
	_, cg := realUnified(t)
	p := filepath.Join(cg.Dir(""), "memory.pressure")
	if !fileExists(p) {
		t.Skip("no per-cgroup PSI")
	}
	tr, err := NewPSITrigger(PSITriggerSpec{Path: p, Kind: PSIFull, Threshold: 100 * time.Millisecond, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	t.Logf("registration %+v", tr.Registration())
	if err := os.Remove(cg.Dir("")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.Done():
		if !errors.Is(tr.Err(), ErrGone) {
			t.Errorf("Err = %v, want ErrGone", tr.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("trigger did not end after the cgroup was removed")
	}
}

// TestRealV2PSITriggerFires: page-cache pressure of a process in a 16 MiB
// v1 memory cgroup, the same process in a v2 cgroup whose memory.pressure
// carries the trigger.
func TestRealV2PSITriggerFires(t *testing.T) {
	_, v2 := realUnified(t)
	_, v1 := realV1(t)
	p := filepath.Join(v2.Dir(""), "memory.pressure")
	if !fileExists(p) {
		t.Skip("no per-cgroup PSI")
	}
	if err := v1.SetMemoryMax(16 << 20); err != nil {
		t.Fatal(err)
	}
	tr, err := NewPSITrigger(PSITriggerSpec{Path: p, Kind: PSISome, Threshold: 20 * time.Millisecond, Window: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	file := filepath.Join(t.TempDir(), "pressure")
	pid, run := pageCacheHog(t, file, 1)
	moveTo(t, v1, pid)
	if err := writeFile(filepath.Join(v2.Dir(""), "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run()
	select {
	case <-tr.C():
		psi, _ := tr.Read()
		t.Logf("cgroup PSI trigger fired after %v (%+v)", time.Since(start), psi.Some)
	case <-time.After(30 * time.Second):
		psi, _ := tr.Read()
		t.Skipf("no memory stall produced within 30 s (%+v)", psi.Some)
	}
}

// inotifyWatches counts the watcher's inotify watches (/proc/self/fdinfo).
func inotifyWatches(t *testing.T, w *Watcher) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(w.n.ifd))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "inotify wd:")
}
