package incident

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a small tmpfs (root only) and returns its directory.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

// fillFS writes path until the filesystem is full.
func fillFS(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// The chaos scenario on a real filesystem: the database's filesystem
// fills up while incidents are recorded. The store turns degraded at the
// first failed commit, keeps handing out IDs, gets its database back when
// space is freed, and no ID is ever reused, also across a restart while
// the filesystem is full.
func TestFullFilesystem(t *testing.T) {
	mnt := mountTmpfs(t, "2m")
	e := newIDEnv(t)
	e.db = filepath.Join(mnt, "lib", "incidents.db")
	s := e.open(Options{MaxCount: 200, BatchDelay: time.Millisecond, RetryDelay: 10 * time.Millisecond, RetryDelayMax: 50 * time.Millisecond})
	r := NewRecorderWithOptions(s, noCoalesceIDs)
	record(r, 10)
	flushT(t, r.Flush)

	fill := filepath.Join(mnt, "fill")
	fillFS(t, fill)
	var last uint64
	for i := 0; i < 5000; i++ {
		last = record(r, 1)
		if i%10 == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := r.Flush(ctx)
			cancel()
			if err != nil {
				t.Logf("after %d records on the full filesystem: %v", i+1, err)
				break
			}
		}
	}
	if d, why := s.Degraded(); !d || !r.Stats().Degraded {
		t.Fatalf("not degraded after %d records on a full filesystem", last)
	} else {
		t.Logf("degraded: %s", why)
	}
	last = record(r, 50)

	// A restart while the filesystem is still full: the new store may or
	// may not manage its first transaction; either way its IDs continue.
	s.crash()
	s = Open(e.opts(Options{MaxCount: 200, BatchDelay: time.Millisecond, RetryDelay: 10 * time.Millisecond, RetryDelayMax: 50 * time.Millisecond}))
	d, why := s.Degraded()
	t.Logf("reopened on the full filesystem: degraded %v %s", d, why)
	r = NewRecorderWithOptions(s, noCoalesceIDs)
	if inc := r.Record(Incident{Partition: "qm", Type: Adopt, Summary: "adopted"}); inc.ID <= last {
		t.Fatalf("first ID after the restart = %d, does not continue after %d", inc.ID, last)
	}
	last = record(r, 20)

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { d, _ := s.Degraded(); return !d })
	flushT(t, r.Flush)
	want, _ := s.List("", 0, 0)
	if len(want) == 0 || want[len(want)-1].ID != last {
		t.Fatalf("after the recovery: %v", ids(want))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e.reboot()
	s = e.open(Options{MaxCount: 200})
	defer s.Close()
	if got, _ := s.List("", 0, 0); jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("on disk: %v, want %v", ids(got), ids(want))
	}
	if inc, _ := s.Add(Incident{Type: Start}); inc.ID != last+1 {
		t.Fatalf("id after a clean restart = %d, want %d", inc.ID, last+1)
	}
}
