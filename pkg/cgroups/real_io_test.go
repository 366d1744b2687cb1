package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
)

// realV1Blkio is realV1 plus the cgroup in the blkio hierarchy.
func realV1Blkio(t *testing.T) *Cgroup {
	t.Helper()
	h, cg := realV1(t)
	if !fileExists(filepath.Join(h.Root, "blkio")) {
		if testutil.Integration() {
			t.Fatal("no v1 blkio hierarchy at /sys/fs/cgroup/blkio")
		}
		t.Skip("no v1 blkio hierarchy")
	}
	dir := cg.Dir("blkio")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testutil.RemoveCgroup(t, dir) })
	return cg
}

// ioDDDirect writes mb MiB with O_DIRECT to node from a shell that first
// moves itself into the cgroup's blkio directory, and returns the
// throughput in bytes per second.
func ioDDDirect(t *testing.T, cg *Cgroup, node string, mb int) float64 {
	t.Helper()
	procs := filepath.Join(cg.Dir("blkio"), "cgroup.procs") // v2: the cgroup directory
	script := fmt.Sprintf("echo $$ > %s && exec dd if=/dev/zero of=%s bs=256k count=%d oflag=direct 2>/dev/null", procs, node, mb*4)
	start := time.Now()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	el := time.Since(start)
	return float64(mb<<20) / el.Seconds()
}

// ioCheckLimited writes 6 MiB with O_DIRECT to node under limit l (set
// on cg): the writer gets at most 1.5 times l.WBps (about 3 s at 2 MiB/s;
// the throttle lets a short burst through at the start of a slice), and
// the cgroup's IO stat counts at least the 6 MiB on l.Dev.
func ioCheckLimited(t *testing.T, cg *Cgroup, node string, l IOLimit) {
	t.Helper()
	limited := ioDDDirect(t, cg, node, 6)
	t.Logf("wbps=%d: O_DIRECT writer got %.2f MiB/s", l.WBps, limited/(1<<20))
	if limited > 1.5*float64(l.WBps) {
		t.Errorf("wbps %d not enforced: %.0f B/s", l.WBps, limited)
	}
	st, err := cg.IOStat()
	if err != nil {
		t.Fatal(err)
	}
	var wrote uint64
	for _, s := range st {
		if s.Dev == l.Dev {
			wrote = s.WBytes
		}
	}
	if wrote < 6<<20 {
		t.Errorf("io stat counted %d bytes written to %s, want >= 6 MiB: %+v", wrote, l.Dev, st)
	}
}

// ioCheckFree writes 32 MiB after the limit l was lifted: the writer
// must get well over l.WBps, or the limited measurement proves nothing.
func ioCheckFree(t *testing.T, cg *Cgroup, node string, l IOLimit) {
	t.Helper()
	free := ioDDDirect(t, cg, node, 32)
	t.Logf("no limit: O_DIRECT writer got %.2f MiB/s", free/(1<<20))
	if free < 3*float64(l.WBps) {
		t.Errorf("without a limit the writer got only %.0f B/s: the measurement above proves nothing", free)
	}
}

// TestRealV1IOLimits runs on this host's cgroup v1 blkio hierarchy with a
// real loop device: the weight (blkio.bfq.weight) and every throttle are
// written and read back, and a write_bps limit measurably limits an
// O_DIRECT writer. On a kernel without CONFIG_BLK_DEV_THROTTLING the
// throttle files are missing: the test then asserts the clear
// "not supported" error instead.
func TestRealV1IOLimits(t *testing.T) {
	cg := realV1Blkio(t)
	testutil.RequireBinaries(t, "dd")
	node, ma, mi := testutil.LoopDevice(t, 64<<20, false)
	dev := Device{ma, mi}

	if err := cg.SetIOWeight(50); errors.Is(err, ErrUnsupported) {
		t.Logf("no blkio weight file on this kernel (no BFQ/CFQ): %v", err)
	} else if err != nil {
		t.Fatal(err)
	} else if w, err := cg.IOWeight(); err != nil || w != 50 {
		t.Errorf("weight read back: %d %v", w, err)
	}

	want := IOLimit{Dev: dev, RBps: 8 << 20, WBps: 2 << 20, RIOPS: 2000, WIOPS: 1000}
	err := cg.SetIOMax(want)
	if !fileExists(filepath.Join(cg.Dir("blkio"), "blkio.throttle.write_bps_device")) {
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "blkio.throttle") {
			t.Fatalf("kernel without throttling: want ErrUnsupported naming the file, got %v", err)
		}
		t.Skip("kernel without CONFIG_BLK_DEV_THROTTLING: reported as unsupported")
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := cg.IOMaxOf(dev)
	if err != nil || got != want {
		t.Fatalf("read back %+v (%v), want %+v", got, err, want)
	}

	ioCheckLimited(t, cg, node, want)

	// Lifted (Max -> 0 in the v1 files): the same writer is much faster.
	if err := cg.SetIOMax(NoIOLimit(dev)); err != nil {
		t.Fatal(err)
	}
	if got, err := cg.IOMaxOf(dev); err != nil || got != NoIOLimit(dev) {
		t.Fatalf("after lifting: %+v %v", got, err)
	}
	ioCheckFree(t, cg, node, want)
}

// ioTestDevice is the block device of the v2 test: QMD_IO_TEST_DEV (the
// e2e or a throwaway VM's spare disk) or a fresh loop device.
func ioTestDevice(t *testing.T) (string, Device) {
	t.Helper()
	node, ma, mi := testutil.IOTestDevice(t, 64<<20, false)
	return node, Device{ma, mi}
}

// TestRealV2IOLimits runs where the root hierarchy is cgroup v2 with the io
// controller (production hosts, the e2e VM; not the hybrid build host,
// whose cgroup2 mount has no controllers): io.weight and io.max are
// written and read back, a wbps limit measurably limits an O_DIRECT
// writer, and lifting it removes the io.max line.
func TestRealV2IOLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("real cgroups: skipped with -short")
	}
	testutil.RequireRoot(t)
	h, err := NewHierarchy("")
	if err != nil || h.Version != V2 {
		t.Skip("the root hierarchy is not cgroup v2 (cgroup v1 hosts: TestRealV1IOLimits)")
	}
	ctrls, err := os.ReadFile(filepath.Join(h.Root, "cgroup.controllers"))
	if err != nil || !strings.Contains(" "+string(ctrls)+" ", " io ") {
		t.Skipf("no io controller in %s/cgroup.controllers: %q", h.Root, ctrls)
	}
	if err := writeFile(filepath.Join(h.Root, "cgroup.subtree_control"), "+io"); err != nil {
		t.Fatalf("enable io for the children of the root: %v", err)
	}
	name := fmt.Sprintf("/qmdtest-io-%d", os.Getpid())
	dir := filepath.Join(h.Root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testutil.RemoveCgroup(t, dir) })
	cg, err := h.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	node, dev := ioTestDevice(t)

	if err := cg.SetIOWeight(50); errors.Is(err, ErrUnsupported) {
		t.Logf("no io.weight (kernel without iocost and BFQ): %v", err)
	} else if err != nil {
		t.Fatal(err)
	} else if w, err := cg.IOWeight(); err != nil || w != 50 {
		t.Errorf("io.weight read back: %d %v", w, err)
	}
	want := IOLimit{Dev: dev, RBps: 8 << 20, WBps: 2 << 20, RIOPS: 2000, WIOPS: 1000}
	if err := cg.SetIOMax(want); err != nil {
		t.Fatal(err)
	}
	if got, err := cg.IOMaxOf(dev); err != nil || got != want {
		t.Fatalf("io.max read back %+v (%v), want %+v", got, err, want)
	}
	ioCheckLimited(t, cg, node, want)
	if err := cg.SetIOMax(NoIOLimit(dev)); err != nil {
		t.Fatal(err)
	}
	if ls, err := cg.IOMax(); err != nil || len(ls) != 0 {
		t.Errorf("io.max after lifting: %+v %v (the kernel drops an all-max line)", ls, err)
	}
	ioCheckFree(t, cg, node, want)
}
