package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/hostinfo"
)

// IOTestDevEnv names a spare block device for the real IO tests (the e2e
// or a throwaway VM's disk); without it they write to a loop device.
const IOTestDevEnv = "QMD_IO_TEST_DEV"

// LoopDevice attaches a loop device to a sparse file of size bytes and
// returns its node and device number; it is detached at cleanup. With
// directIO the loop driver writes the file with O_DIRECT, so a writer's
// IO stays synchronous down to the backing disk (IO pressure is real).
func LoopDevice(t testing.TB, size int64, directIO bool) (node string, major, minor uint32) {
	t.Helper()
	RequireBinaries(t, "losetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"--find", "--show"}
	if directIO {
		args = append(args, "--direct-io=on")
	}
	out, err := exec.Command("losetup", append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	node = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", node).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", node, err, out)
		}
	})
	major, minor = BlockDevice(t, node)
	return node, major, minor
}

// IOTestDevice is the block device of a real IO test: $QMD_IO_TEST_DEV,
// else a fresh LoopDevice of size bytes.
func IOTestDevice(t testing.TB, size int64, directIO bool) (node string, major, minor uint32) {
	t.Helper()
	node = os.Getenv(IOTestDevEnv)
	if node == "" {
		return LoopDevice(t, size, directIO)
	}
	major, minor = BlockDevice(t, node)
	return node, major, minor
}

// BlockDevice is the device number of the block device node, failing
// the test when node is not one.
func BlockDevice(t testing.TB, node string) (major, minor uint32) {
	t.Helper()
	major, minor, err := hostinfo.BlockDevice(node)
	if err != nil {
		t.Fatal(err)
	}
	return major, minor
}
