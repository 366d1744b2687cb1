package diskbudget

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/testutil"
)

// hostFS mounts a small tmpfs that stands for the host filesystem holding
// /var/qm, so free space is deterministic. Everything mounted below it is
// unmounted at cleanup.
func hostFS(t *testing.T, size string) string {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinaries(t, "mkfs.ext4", "e2fsck", "resize2fs", "losetup", "mount", "cp", "fstrim")
	if err := ProbeImage(); err != nil {
		if testutil.Integration() {
			t.Fatalf("loop images unavailable: %v", err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		path := filepath.Join(dir, "qm")
		for unix.Unmount(path, 0) == nil {
		}
		// The loop device lets go of the image a moment after the
		// unmount (autoclear runs asynchronously): the tmpfs is busy
		// until then.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := unix.Unmount(dir, 0)
			if err == nil || errors.Is(err, unix.EINVAL) {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Errorf("unmount the test's host filesystem %s: %v", dir, err)
				_ = unix.Unmount(dir, unix.MNT_DETACH)
				return
			}
		}
	})
	return dir
}

func free(t *testing.T, dir string) uint64 {
	t.Helper()
	f, err := FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func isMount(t *testing.T, dir string) bool {
	t.Helper()
	_, ok, err := mountSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// fillUntilFull writes 1 MiB blocks to a new file in dir until a write
// fails, and returns that error and the bytes written.
func fillUntilFull(dir string) (int64, error) {
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 1<<20)
	var n int64
	for n < 1<<32 {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
		if err := f.Sync(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// An existing /var/qm is migrated into a new image (owners, modes,
// xattrs, hard links, symlinks, sparse files kept), the image is mounted
// on it, and the partition's writes stop at max with ENOSPC while the host
// filesystem's free space does not move.
func TestImageMigrateAndBound(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(filepath.Join(path, "lib", "app"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o750|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(path, "lib", "app", "state.db")
	if err := os.WriteFile(data, []byte("partition state"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(data, "user.qmd", []byte("kept"), 0); err != nil {
		t.Fatalf("setxattr on the host fs: %v", err)
	}
	if err := os.Link(data, filepath.Join(path, "hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib/app/state.db", filepath.Join(path, "symlink")); err != nil {
		t.Fatal(err)
	}
	sparse, err := os.Create(filepath.Join(path, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sparse.Truncate(1 << 30); err != nil { // 1 GiB apparent, 0 allocated: fits a 64M image only sparse
		t.Fatal(err)
	}
	_ = sparse.Close()

	const limit = 64 << 20
	before := free(t, host)
	im := Image{File: ImageFile(path), Path: path, Max: limit, Reserve: 16 << 20}
	res, err := im.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Migrated || res.Moved == 0 {
		t.Errorf("result = %+v, want migrated with bytes moved", res)
	}
	if !isMount(t, path) {
		t.Fatal("path is not a mount after Ensure")
	}
	st, err := os.Stat(im.File)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != limit {
		t.Errorf("image size = %d, want %d", st.Size(), limit)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks < limit {
		t.Errorf("image has %d bytes allocated, want all %d preallocated", blocks, limit)
	}
	after := free(t, host)
	// The migrated originals (a few KiB) were freed on the host.
	if before-after < limit-1<<20 {
		t.Errorf("host free space went %d -> %d: the image's %d bytes were not taken up front", before, after, limit)
	}
	t.Logf("host free %d -> %d after creating a %d image; used %d of %d", before, after, limit, res.Used, res.Size)

	// The host's fstrim (fstrim.timer trims every mounted filesystem)
	// must not punch holes into the image and give its space away.
	if out, err := exec.Command("fstrim", path).CombinedOutput(); err == nil {
		t.Logf("fstrim %s succeeded: %s", path, out)
	}
	if st, err := os.Stat(im.File); err != nil || st.Sys().(*syscall.Stat_t).Blocks*512 < limit {
		t.Errorf("fstrim gave the image's space back to the host: %v", err)
	}

	// The data is in the image, as it was.
	got, err := os.ReadFile(data)
	if err != nil || string(got) != "partition state" {
		t.Fatalf("migrated file: %q, %v", got, err)
	}
	fi, _ := os.Lstat(data)
	s := fi.Sys().(*syscall.Stat_t)
	if s.Uid != 1234 || s.Gid != 5678 || fi.Mode().Perm() != 0o640 {
		t.Errorf("owner/mode = %d:%d %v, want 1234:5678 0640", s.Uid, s.Gid, fi.Mode())
	}
	xa := make([]byte, 16)
	if n, err := unix.Getxattr(data, "user.qmd", xa); err != nil || string(xa[:n]) != "kept" {
		t.Errorf("xattr user.qmd = %q, %v", xa[:max(n, 0)], err)
	}
	if hl, err := os.Stat(filepath.Join(path, "hardlink")); err != nil || !os.SameFile(hl, fi) {
		t.Errorf("hard link not kept: %v", err)
	}
	if l, err := os.Readlink(filepath.Join(path, "symlink")); err != nil || l != "lib/app/state.db" {
		t.Errorf("symlink = %q, %v", l, err)
	}
	if sp, err := os.Stat(filepath.Join(path, "sparse")); err != nil || sp.Size() != 1<<30 || sp.Sys().(*syscall.Stat_t).Blocks > 64 {
		t.Errorf("sparse file not kept sparse: %v", err)
	}
	root, _ := os.Stat(path)
	rs := root.Sys().(*syscall.Stat_t)
	if rs.Gid != 4242 || root.Mode().Perm() != 0o750 || root.Mode()&os.ModeSetgid == 0 {
		t.Errorf("image root = gid %d %v, want gid 4242 and the directory's mode 2750", rs.Gid, root.Mode())
	}
	if _, err := os.Stat(filepath.Join(path, "lost+found")); err == nil {
		t.Error("mkfs's lost+found appeared in the partition's /var")
	}
	// The original is gone from under the mount (no hidden copy).
	if es, _ := os.ReadDir(host); len(es) != 2 {
		names := []string{}
		for _, e := range es {
			names = append(names, e.Name())
		}
		t.Errorf("host dir holds %v, want only qm and its image", names)
	}

	// A writer inside is stopped by ENOSPC at max; the host filesystem's
	// free space does not move.
	n, werr := fillUntilFull(path)
	if !errors.Is(werr, unix.ENOSPC) {
		t.Fatalf("filling the budget ended with %v after %d bytes, want ENOSPC", werr, n)
	}
	if n > limit {
		t.Errorf("wrote %d bytes into a %d budget", n, limit)
	}
	if f := free(t, host); f != after {
		t.Errorf("host free space moved from %d to %d while the partition filled its budget", after, f)
	}
	t.Logf("filled the budget: %d bytes written, then ENOSPC; host free unchanged at %d", n, after)
	if err := os.Remove(filepath.Join(path, "filler")); err != nil {
		t.Fatal(err)
	}

	// qmd restart: the mount is found and kept.
	res, err = im.Ensure(context.Background())
	if err != nil || res.Action != AlreadyMounted {
		t.Fatalf("second Ensure = %+v, %v; want already-mounted", res, err)
	}
	// Host reboot: the image is checked and mounted again, data intact.
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	res, err = im.Ensure(context.Background())
	if err != nil || res.Action != Mounted {
		t.Fatalf("Ensure after unmount = %+v, %v; want mounted", res, err)
	}
	if got, err := os.ReadFile(data); err != nil || string(got) != "partition state" {
		t.Fatalf("data after re-mount: %q, %v", got, err)
	}
}

// Growing max grows the image (online while mounted, offline at the next
// mount); shrinking is refused and changes nothing.
func TestImageGrowAndRefuseShrink(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	res, err := im.Ensure(context.Background())
	if err != nil || res.Action != Created {
		t.Fatalf("Ensure = %+v, %v; want created", res, err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	small := res.Size

	im.Max = 48 << 20 // online
	res, err = im.Ensure(context.Background())
	if err != nil || res.Action != Grown || res.Size <= small {
		t.Fatalf("online grow = %+v, %v (was %d)", res, err, small)
	}
	mid := res.Size

	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	im.Max = 64 << 20 // offline, at the next mount
	res, err = im.Ensure(context.Background())
	if err != nil || res.Action != Grown || res.Size <= mid {
		t.Fatalf("offline grow = %+v, %v (was %d)", res, err, mid)
	}
	if st, _ := os.Stat(im.File); st.Size() != 64<<20 {
		t.Errorf("image is %d bytes, want %d", st.Size(), 64<<20)
	}
	if _, err := os.Stat(filepath.Join(path, "keep")); err != nil {
		t.Errorf("data lost on grow: %v", err)
	}

	im.Max = 32 << 20
	_, err = im.Ensure(context.Background())
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("shrink: err = %v, want refused", err)
	}
	t.Logf("shrink refused: %v", err)
	if st, _ := os.Stat(im.File); st.Size() != 64<<20 {
		t.Errorf("a refused shrink changed the image to %d bytes", st.Size())
	}
}

// Without max + reserve free on the host filesystem the image is refused,
// and nothing is left behind.
func TestImageRefusedWithoutFreeSpace(t *testing.T) {
	host := hostFS(t, "64m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	im := Image{File: ImageFile(path), Path: path, Max: 48 << 20, Reserve: 32 << 20}
	_, err := im.Ensure(context.Background())
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want refused for lack of free space", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(im.File); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image left behind: %v", err)
	}
	if _, err := os.Stat(im.File + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary image left behind: %v", err)
	}
	if isMount(t, path) {
		t.Error("path mounted although refused")
	}
	if b, err := os.ReadFile(filepath.Join(path, "data")); err != nil || string(b) != "x" {
		t.Errorf("data touched: %q, %v", b, err)
	}
}

// Data that does not fit the budget is refused, not truncated.
func TestImageRefusesDataLargerThanMax(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "big"), bytes.Repeat([]byte{1}, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	if _, err := im.Ensure(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want refused", err)
	}
	if st, err := os.Stat(filepath.Join(path, "big")); err != nil || st.Size() != 40<<20 {
		t.Errorf("data touched: %v", err)
	}
}

// An image that exists while the unmounted directory holds data (an
// interrupted migration, a partition run without the budget) is refused:
// qmd hides neither.
func TestImageRefusesToHideData(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	if _, err := im.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "written-without-budget"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := im.Ensure(context.Background())
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want refused", err)
	}
	t.Logf("refused: %v", err)
	if isMount(t, path) {
		t.Error("data hidden under the image")
	}
}

// A directory that is some other mount (the operator's own partition) is
// left alone.
func TestImageRefusesForeignMount(t *testing.T) {
	host := hostFS(t, "64m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", path, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	if _, err := im.Ensure(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want refused", err)
	}
}

// qmd killed in the middle of a migration leaves an uncommitted image,
// still mounted on its temporary directory; the next start cleans both up
// and migrates again, the data intact.
func TestImageRecoversInterruptedMigration(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	// The state of a kill during cp: a half-made image mounted on a
	// temporary directory next to it.
	tmpImg := im.File + ".new"
	if err := im.allocate(tmpImg); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), "mkfs.ext4", "-q", "-F", tmpImg); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(host, migratePrefix+"123")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := mount(context.Background(), tmpImg, stale); err != nil {
		t.Fatal(err)
	}
	res, err := im.Ensure(context.Background())
	if err != nil || res.Action != Migrated {
		t.Fatalf("Ensure after an interrupted migration = %+v, %v", res, err)
	}
	if isMount(t, stale) {
		t.Error("the stale temporary mount is still there")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale directory left: %v", err)
	}
	if _, err := os.Stat(tmpImg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("uncommitted image left: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(path, "data")); err != nil || string(b) != "x" {
		t.Errorf("data: %q, %v", b, err)
	}
}

// After a reboot systemd-tmpfiles has recreated /var/qm/tmp (empty) in
// the host directory before qmd mounts the image: empty directories are
// not data; they are recreated in the image when it lacks them, with
// their modes.
func TestImageRebootWithTmpfilesSkeleton(t *testing.T) {
	host := hostFS(t, "256m")
	path := filepath.Join(host, "qm")
	im := Image{File: ImageFile(path), Path: path, Max: 32 << 20, Reserve: 8 << 20}
	if _, err := im.Ensure(context.Background()); err != nil { // a fresh image, no tmp in it
		t.Fatal(err)
	}
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	// What tmpfiles does at boot: d /var/qm/tmp 1777.
	if err := os.Mkdir(filepath.Join(path, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(path, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	res, err := im.Ensure(context.Background())
	if err != nil || res.Action != Mounted {
		t.Fatalf("Ensure after reboot = %+v, %v", res, err)
	}
	st, err := os.Stat(filepath.Join(path, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Fatalf("tmp in the image: %v, %v; want 1777", st, err)
	}
	// A file is data: refused.
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(path); len(entries) != 0 {
		t.Errorf("the set-aside skeleton is still under the mount point: %v", entries)
	}
	if err := os.MkdirAll(filepath.Join(path, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "tmp", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := im.Ensure(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("a file under the mount point: %v, want refused", err)
	}
}
