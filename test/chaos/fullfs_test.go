package chaos

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containers/qmd/internal/testutil"
)

// fsImage is a small ext4 filesystem on a loop device (the build host's
// kernel has no quota support: a plain ext4, filled with a file).
type fsImage struct {
	t   *testing.T
	mnt string
}

func mountImage(t *testing.T, size string) *fsImage {
	t.Helper()
	testutil.RequireBinaries(t, "mkfs.ext4", "mount", "umount", "truncate")
	dir, err := os.MkdirTemp("", "qmd-chaos-fs-")
	if err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "truncate", "-s", size, img)
	// -m 0: no blocks reserved for root (qmd runs as root).
	sh(t, "mkfs.ext4", "-q", "-F", "-m", "0", img)
	sh(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s; lazy unmount", mnt, err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
		_ = os.RemoveAll(dir)
	})
	return &fsImage{t: t, mnt: mnt}
}

// fill writes a file until the filesystem is full, and checks that a
// further write fails with ENOSPC.
func (f *fsImage) fill() {
	f.t.Helper()
	file, err := os.Create(filepath.Join(f.mnt, "fill"))
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			if _, err := file.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					f.t.Fatalf("fill: %v", err)
				}
				break
			}
		}
	}
	_ = file.Sync()
	probe := filepath.Join(f.mnt, "probe")
	err = os.WriteFile(probe, make([]byte, 64<<10), 0o600)
	if err == nil {
		if pf, oerr := os.OpenFile(probe, os.O_WRONLY, 0); oerr == nil {
			err = pf.Sync()
			_ = pf.Close()
		}
	}
	_ = os.Remove(probe)
	if !errors.Is(err, syscall.ENOSPC) {
		f.t.Fatalf("filesystem not full after filling it: writing 64 KiB gave %v", err)
	}
	var st syscall.Statfs_t
	_ = syscall.Statfs(f.mnt, &st)
	f.t.Logf("filesystem full: %d blocks free, %d available", st.Bfree, st.Bavail)
}

// free removes the fill file.
func (f *fsImage) free() {
	f.t.Helper()
	if err := os.Remove(filepath.Join(f.mnt, "fill")); err != nil {
		f.t.Fatal(err)
	}
}

// TestChaosIncidentStoreOnFullFilesystem: /var/lib/qmd (incidents.path) is
// on a filesystem that fills up while qmd runs. qmd must keep supervising
// (each kill -9 of the partition's init is followed by a restart), report
// the store degraded (Manager.Status), and not crash; the incidents it had
// on disk before survive, and ids handed out meanwhile are not reused.
func TestChaosIncidentStoreOnFullFilesystem(t *testing.T) {
	requireChaos(t)
	fs := mountImage(t, "32M")
	s := newScenario(t, opts{
		incidents: filepath.Join(fs.mnt, "lib", "qmd", "incidents.db"),
		// Kills in a row are not a crash loop to give up on here.
		partExtra: "[partition.restart]\nstart_limit_burst = 0\nbackoff_max = \"200ms\"\n",
	})
	ids, ref := s.baseline()
	s.ackIncidents() // the adoption is on disk
	base := readProcStats(s.q.PID())
	if st, _ := s.managerProp("Status"); st != "up" {
		t.Fatalf("Manager.Status %v before the filesystem filled", st)
	}

	fs.fill()
	s.storeDegraded = true
	const maxKills, afterDegraded = 40, 3
	degradedAt, pid := -1, ids["qm"].PID
	kills := 0
	for kills < maxKills && (degradedAt < 0 || kills < degradedAt+afterDegraded) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		kills++
		pid = s.waitNewInit("qm", pid, settle).PID
		if st, err := s.managerProp("Status"); err != nil {
			t.Fatalf("Manager.Status after %d kills: %v", kills, err)
		} else if st == "degraded" && degradedAt < 0 {
			degradedAt = kills
			t.Logf("Manager.Status degraded after %d kills", kills)
		}
	}
	t.Logf("%d kills of the partition's init on a full filesystem, each followed by a restart", kills)
	if degradedAt < 0 {
		t.Errorf("the incident store never showed as degraded (Manager.Status stayed up) after %d restarts with its filesystem full; store lines:\n%s",
			kills, grepLog(s.q.Log(), "incident store"))
	}
	if err, done := s.exited(); done {
		t.Fatalf("qmd exited on a full filesystem: %v", err)
	}
	// Room again: the next qmd can write; this one keeps its memory store.
	fs.free()
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, false)
	if st, _ := s.managerProp("Status"); st != "up" {
		t.Errorf("Manager.Status %v after a restart with room on the filesystem", st)
	}
}
