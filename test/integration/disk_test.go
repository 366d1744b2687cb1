package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/diskbudget"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/test/harness"
)

// The disk budget end to end with real Podman: qmd migrates the existing
// /var/qm into a preallocated loop image and mounts it before the
// partition starts; the partition sees its data, its writes end with
// ENOSPC at max while the "host filesystem" (a small tmpfs) keeps its free
// space; a qmd restart neither restarts the partition nor touches the
// mount.
func TestDiskBudgetWithPodman(t *testing.T) {
	testutil.RequireRoot(t)
	if err := diskbudget.ProbeImage(); err != nil {
		t.Fatalf("loop images unavailable: %v", err)
	}
	host := t.TempDir()
	if err := unix.Mount("tmpfs", host, "tmpfs", 0, "size=192m"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(host, "qm")
	t.Cleanup(func() {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = unix.Unmount(host, unix.MNT_DETACH)
	})
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "old"), []byte("kept across the migration"), 0o644); err != nil {
		t.Fatal(err)
	}

	pm := harness.StartPodman(t)
	cfgPath := diskConfig(t, pm, path, "64M", "16M")
	q := harness.StartQMD(t, cfgPath)
	inc := q.WaitLog(settle, 1, "event", "disk-budget", "partition", "qm")
	if inc["action"] != "migrated" && inc["detail_action"] != "migrated" {
		t.Errorf("disk-budget incident: %v, want action migrated", inc)
	}
	q.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	pid := pm.Inspect("qm", "{{.State.Pid}}")

	if out, err := pm.CLI("exec", "qm", "cat", "/var/old"); err != nil || out != "kept across the migration" {
		t.Fatalf("migrated data inside the partition: %q, %v", out, err)
	}
	before, err := diskbudget.FreeBytes(host)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pm.CLI("exec", "qm", "/bin/busybox", "dd", "if=/dev/zero", "of=/var/fill", "bs=1M", "count=128")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("filling /var inside the partition: %v %s; want ENOSPC", err, out)
	}
	after, err := diskbudget.FreeBytes(host)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("host free space moved %d -> %d while the partition filled its /var", before, after)
	}
	df, _ := pm.CLI("exec", "qm", "/bin/busybox", "df", "-k", "/var")
	t.Logf("inside the partition after the fill:\n%s\nhost free %d -> %d", df, before, after)
	if _, err := pm.CLI("exec", "qm", "rm", "/var/fill"); err != nil {
		t.Fatal(err)
	}

	// qmd restart: the partition keeps running on the mounted image.
	q.Stop()
	q2 := harness.StartQMD(t, cfgPath)
	q2.WaitLog(settle, 1, "msg", "disk budget mounted", "partition", "qm")
	q2.WaitLog(settle, 1, "event", "adopt", "partition", "qm")
	if got := pm.Inspect("qm", "{{.State.Pid}}"); got != pid {
		t.Errorf("partition pid %s -> %s across a qmd restart", pid, got)
	}
	if n := q2.Count("event", "disk-budget"); n != 0 {
		t.Errorf("%d disk-budget incidents after a qmd restart, want none (the mount is re-used)", n)
	}
	if out, err := pm.CLI("exec", "qm", "cat", "/var/old"); err != nil || out != "kept across the migration" {
		t.Errorf("data after the qmd restart: %q, %v", out, err)
	}
}

// diskConfig writes a configuration whose partition has path as its /var
// and the given budget.
func diskConfig(t *testing.T, pm *harness.Podman, path, max, reserve string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`[podman]
socket = %q
[incidents]
path = %q
[log]
format = "json"
level = "debug"
[dbus]
enable = false
[[partition]]
name = "qm"
rootfs = %q
volumes = [%q]
seccomp_profile = %q
stop_timeout = "2s"
[partition.disk]
max = %q
reserve = %q
`, pm.URI(), filepath.Join(dir, "incidents.db"), harness.Rootfs(t, "loop"), path+":/var",
		filepath.Join(harness.Repo(t), "configs", "seccomp-no-rt.json"), max, reserve)
	cfgPath := filepath.Join(dir, "qmd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

// Too little free space for max + reserve: qmd refuses the budget with an
// incident and does not start the partition without it; the data and the
// host filesystem are untouched.
func TestDiskBudgetRefusedWithPodman(t *testing.T) {
	testutil.RequireRoot(t)
	if err := diskbudget.ProbeImage(); err != nil {
		t.Fatalf("loop images unavailable: %v", err)
	}
	host := t.TempDir()
	if err := unix.Mount("tmpfs", host, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(host, "qm")
	t.Cleanup(func() { _ = unix.Unmount(host, unix.MNT_DETACH) })
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	pm := harness.StartPodman(t)
	q := harness.StartQMD(t, diskConfig(t, pm, path, "48M", "32M"))
	inc := q.WaitLog(settle, 1, "event", "disk-budget", "partition", "qm")
	t.Logf("incident: %v", inc["msg"])
	q.WaitLog(settle, 1, "event", "start-failed", "partition", "qm")
	if got := pm.Inspect("qm", "{{.State.Running}}"); got == "true" {
		t.Error("the partition runs without its budget")
	}
	if _, err := os.Stat(diskbudget.ImageFile(path)); !os.IsNotExist(err) {
		t.Errorf("image left behind: %v", err)
	}
	if free, _ := diskbudget.FreeBytes(host); free < 63<<20 {
		t.Errorf("host filesystem touched: %d free", free)
	}
}
