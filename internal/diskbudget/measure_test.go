package diskbudget

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/testutil"
)

// TestMeasureImage times the budget's steps on the real root filesystem
// (not a tmpfs): a 4 GiB image created with 200 MiB of data migrated, and
// a re-mount after an unmount (a reboot). Run with QMD_DISK_MEASURE=1; it
// needs ~5 GiB free.
func TestMeasureImage(t *testing.T) {
	if os.Getenv("QMD_DISK_MEASURE") == "" {
		t.Skip("set QMD_DISK_MEASURE=1 to measure")
	}
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("/var/tmp", "qmd-disk-measure-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "qm")
	t.Cleanup(func() {
		_ = unix.Unmount(path, 0)
		_ = os.RemoveAll(dir)
	})
	blob := bytes.Repeat([]byte{0xa5}, 1<<20) // not zeros: cp --sparse would make holes of them
	for i := 0; i < 200; i++ {
		sub := filepath.Join(path, "d"+strconv.Itoa(i%20))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "f"+strconv.Itoa(i)), blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im := Image{File: ImageFile(path), Path: path, Max: 4 << 30, Reserve: 1 << 30}
	t0 := time.Now()
	res, err := im.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create 4 GiB + migrate %d bytes: %s (%+v)", res.Moved, time.Since(t0), res)
	dio, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(res.Loop), "loop", "dio"))
	t.Logf("loop direct I/O: %s", bytes.TrimSpace(dio))
	t0 = time.Now()
	if _, err := im.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("already mounted check: %s", time.Since(t0))
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if res, err = im.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("fsck + re-mount: %s (%s)", time.Since(t0), res.Action)
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	im.Max = 6 << 30
	t0 = time.Now()
	if res, err = im.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("grow 4 -> 6 GiB offline + mount: %s (%s)", time.Since(t0), res.Action)
}
