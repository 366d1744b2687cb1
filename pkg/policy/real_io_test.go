package policy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

// TestRealV1IOReaction: the whole IO policy of a controller on this
// host's real cgroup v1 hierarchy (blkio with throttling) and a real loop
// device: the weight and the configured write_bps are applied at start,
// one IO pressure step halves the limit and an O_DIRECT writer in the
// partition gets the lowered rate, and the quiet period restores the
// configured limit exactly.
func TestRealV1IOReaction(t *testing.T) {
	requireReal(t)
	testutil.RequireBinaries(t, "losetup", "dd")
	if _, err := os.Stat("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device"); err != nil {
		if testutil.Integration() && !ioFileExists("/sys/fs/cgroup/cgroup.controllers") {
			t.Fatalf("no v1 blkio throttling on this host: %v", err)
		}
		t.Skip("no cgroup v1 blkio throttling (cgroup v2 hosts: the fake-tree tests and the e2e VM)")
	}
	hier, err := cgroups.NewHierarchy("")
	if err != nil || hier.Version != cgroups.V1 {
		t.Skipf("hierarchy %v %v", hier, err)
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	node := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", node).Run() })
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))

	id := randomID(t)
	name := "/libpod-" + id
	var dirs []string
	for _, ctrl := range []string{"memory", "pids", "cpu", "freezer", "blkio"} {
		d := filepath.Join(hier.Root, ctrl, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
		t.Cleanup(func() { testutil.RemoveCgroup(t, d) })
	}
	init := exec.Command("sleep", "60")
	startCmd(t, init)
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(init.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	blkio := filepath.Join(hier.Root, "blkio", name)

	h := &Host{Hier: hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour, Log: zap.NewNop()}
	r := newRecorder()
	// The node path, as an operator writes it (resolved through stat).
	p := ioPartition(t, fmt.Sprintf("[partition.io]\nweight = 50\nstep = \"50%%\"\nfloor = \"1M\"\nrestore_after = \"30s\"\n"+
		"[[partition.io.device]]\npath = %q\nwrite_bps = \"8M\"\n", node))
	res, err := h.New(p, supervisor.Init{ContainerID: id, PID: init.Process.Pid}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	if all := r.All(); len(all) != 0 {
		t.Logf("incidents at start: %+v", all)
	}
	if got := read(t, filepath.Join(blkio, "blkio.throttle.write_bps_device")); got != dev+" 8388608" {
		t.Fatalf("write_bps at start: %q, want %s 8388608", got, dev)
	}
	if got := read(t, filepath.Join(blkio, "blkio.bfq.weight")); got != "50" {
		t.Errorf("blkio.bfq.weight %q, want 50", got)
	}

	t0 := time.Now()
	c.onIOPressure(t0)
	if got := read(t, filepath.Join(blkio, "blkio.throttle.write_bps_device")); got != dev+" 4194304" {
		t.Fatalf("write_bps after one IO pressure step: %q, want %s 4194304", got, dev)
	}
	// 8 MiB at 4 MiB/s: about 2 s (the throttle lets a short burst through).
	script := fmt.Sprintf("echo $$ > %s && exec dd if=/dev/zero of=%s bs=256k count=32 oflag=direct status=none",
		filepath.Join(blkio, "cgroup.procs"), node)
	start := time.Now()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	rate := float64(8<<20) / time.Since(start).Seconds()
	t.Logf("write_bps lowered 8M -> 4M by IO pressure: O_DIRECT writer got %.2f MiB/s", rate/(1<<20))
	if rate > 1.5*(4<<20) {
		t.Errorf("the lowered limit is not enforced: %.0f B/s", rate)
	}
	if r.Count(incident.IOThrottle) != 1 {
		t.Errorf("io-throttle incidents: %v", r.All())
	}

	for now := t0.Add(31 * time.Second); c.onQuiet(now); now = now.Add(31 * time.Second) {
	}
	if got := read(t, filepath.Join(blkio, "blkio.throttle.write_bps_device")); got != dev+" 8388608" {
		t.Errorf("write_bps after the quiet period: %q, want the configured %s 8388608", got, dev)
	}
}

func ioFileExists(p string) bool { _, err := os.Stat(p); return err == nil }
