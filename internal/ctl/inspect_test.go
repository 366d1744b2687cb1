package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/inspect"
)

// fakePodman records what show and exec asked of the Podman API.
type fakePodman struct {
	mu      sync.Mutex
	devices []inspect.DeviceSpec
	devErr  error
	code    int
	execErr error
	stdout  string
	stderr  string
	calls   []string // "devices SOCKET CONTAINER", "exec SOCKET CONTAINER CMD..."
	stdin   string
	tty     bool
}

func (f *fakePodman) Devices(_ context.Context, socket, container string) ([]inspect.DeviceSpec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "devices "+socket+" "+container)
	return f.devices, f.devErr
}

func (f *fakePodman) Exec(_ context.Context, socket, container string, req inspect.ExecRequest) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "exec "+socket+" "+container+" "+strings.Join(req.Cmd, "|"))
	f.tty = req.TTY
	if req.Stdin != nil {
		b, _ := io.ReadAll(req.Stdin)
		f.stdin = string(b)
	}
	io.WriteString(req.Stdout, f.stdout)
	io.WriteString(req.Stderr, f.stderr)
	return f.code, f.execErr
}

// fakeHost builds the /proc and cgroupfs of newFake's qm partition (pid
// 4242 in /machine.slice/libpod-c0ffee.scope, cgroup v2).
func fakeHost(t *testing.T) inspect.Host {
	t.Helper()
	root := t.TempDir()
	cg := "/machine.slice/libpod-c0ffee.scope"
	files := map[string]string{
		"proc/4242/cgroup":            "0::" + cg + "\n",
		"proc/4242/comm":              "init\n",
		"proc/4242/net/unix":          "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 777 /run/qm.sock\n",
		"cg/cgroup.controllers":       "memory pids cpu io\n",
		"cg" + cg + "/cgroup.procs":   "4242\n",
		"cg" + cg + "/pids.current":   "5\n",
		"cg" + cg + "/pids.max":       "max\n",
		"cg" + cg + "/memory.current": "1048576\n",
		"cg" + cg + "/memory.max":     "garbage\n",
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range map[string]string{
		"proc/4242/ns/net": "net:[4026532100]", "proc/4242/ns/pid": "pid:[4026532101]", "proc/4242/ns/user": "user:[4026531837]",
		"proc/1/ns/net": "net:[4026531840]", "proc/1/ns/pid": "pid:[4026531836]", "proc/1/ns/user": "user:[4026531837]",
		"proc/4242/fd/3": "socket:[777]",
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "proc/4242/root/dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	return inspect.Host{ProcRoot: filepath.Join(root, "proc"), CgroupRoot: filepath.Join(root, "cg"), HostPID: 1}
}

// withInspect sets the fake host and Podman for one test.
func withInspect(t *testing.T, fp *fakePodman, stdin string) {
	t.Helper()
	oldHost, oldPodman, oldStdin := inspectHost, podmanAPI, execStdin
	inspectHost = fakeHost(t)
	if fp != nil {
		SetPodman(fp)
	} else {
		podmanAPI = nil
	}
	execStdin = strings.NewReader(stdin)
	t.Cleanup(func() { inspectHost, podmanAPI, execStdin = oldHost, oldPodman, oldStdin })
}

func TestShow(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})
	fp := &fakePodman{devices: []inspect.DeviceSpec{{PathOnHost: "/dev/kvm", PathInContainer: "/dev/kvm", Permissions: "rwm"}}}
	withInspect(t, fp, "")

	code, out, _ := b.run(t, "show", "qm", "--json", "--podman-socket", "/run/test/podman.sock")
	wantCode(t, code, ExitOK)
	var m struct {
		partitionJSON
		Resources  inspect.Resources
		Devices    inspect.Devices
		Namespaces inspect.Namespaces
		Sockets    inspect.Sockets
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if m.Name != "qm" || m.MainPID != 4242 || m.ContainerID != "c0ffee0123456789abcdef" {
		t.Errorf("partition part: %+v", m.partitionJSON)
	}
	if v := m.Resources.Pids.Current.Value; v == nil || *v != 5 || !m.Resources.Pids.Max.Unlimited {
		t.Errorf("pids: %+v", m.Resources.Pids)
	}
	if m.Resources.Memory.Max.Unavailable == "" || m.Resources.Memory.Max.Value != nil {
		t.Errorf("a malformed memory.max must be unavailable: %+v", m.Resources.Memory.Max)
	}
	if len(m.Namespaces.Entries) != 3 || m.Namespaces.Sharing("net") != "private" || m.Namespaces.Sharing("user") != "shared" {
		t.Errorf("namespaces: %+v", m.Namespaces)
	}
	if len(m.Sockets.Entries) != 1 || m.Sockets.Entries[0].Path != "/run/qm.sock" || len(m.Sockets.Entries[0].Processes) != 1 {
		t.Errorf("sockets: %+v", m.Sockets)
	}
	if len(m.Devices.Configured) != 1 || m.Devices.Configured[0].Present || !strings.Contains(m.Devices.Configured[0].Problem, "no such file") {
		t.Errorf("devices: %+v", m.Devices)
	}
	if !slices.Equal(fp.calls, []string{"devices unix:///run/test/podman.sock c0ffee0123456789abcdef"}) {
		t.Errorf("podman calls: %q", fp.calls)
	}

	// Text: every section; the unreadable value as n/a with its reason.
	code, out, _ = b.run(t, "show", "qm", "--podman-socket=unix:///run/test/podman.sock")
	wantCode(t, code, ExitOK)
	wantContains(t, "show qm", out, "● qm - QM partition", "Main PID: 4242", "Resources (cgroup v2):", "pids.current", " 5\n",
		"memory.current", "1M", "memory.max", "n/a (", "Devices:", "/dev/kvm", "missing in QM", "Namespaces (of PID 4242, compared with PID 1):",
		"net ", "private", "shared", "Unix sockets", "/run/qm.sock", "4242 (init)")

	// One topic; qmctl's names for them.
	code, out, _ = b.run(t, "show", "qm", "namespaces")
	wantCode(t, code, ExitOK)
	if !strings.Contains(out, "Namespaces") || strings.Contains(out, "Resources") || strings.Contains(out, "Unix sockets") {
		t.Errorf("show qm namespaces:\n%s", out)
	}
	code, out, _ = b.run(t, "show", "qm", "unix-domain-sockets", "--json")
	wantCode(t, code, ExitOK)
	var only map[string]any
	if err := json.Unmarshal([]byte(out), &only); err != nil {
		t.Fatal(err)
	}
	if only["sockets"] == nil || only["resources"] != nil || only["devices"] != nil || only["namespaces"] != nil {
		t.Errorf("show qm unix-domain-sockets --json has other topics: %v", only)
	}

	code, _, errOut := b.run(t, "show", "qm", "everything")
	wantCode(t, code, ExitUsage)
	wantContains(t, "stderr", errOut, `unknown topic "everything"`)
	code, _, _ = b.run(t, "show", "nosuch")
	wantCode(t, code, ExitNoSuchPartition)
	code, _, _ = b.run(t, "show", "qm", "resources", "extra")
	wantCode(t, code, ExitUsage)
}

// A partition that is not running: what qmd knows, every topic n/a, exit 3.
func TestShowNotRunning(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})
	fp := &fakePodman{}
	withInspect(t, fp, "")
	code, out, _ := b.run(t, "show", "broken", "--json", "--podman-socket", "/x.sock")
	wantCode(t, code, ExitNotActive)
	var m showJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != "broken" || m.Resources == nil || m.Resources.Unavailable == "" || m.Resources.Pids.Current.Value != nil ||
		!strings.Contains(m.Namespaces.Unavailable, "not running") || !strings.Contains(m.Sockets.Unavailable, "not running") ||
		!strings.Contains(m.Devices.NodesUnavailable, "not running") {
		t.Errorf("show broken: %s", out)
	}
	if len(fp.calls) != 0 {
		t.Errorf("podman asked about a stopped partition: %q", fp.calls)
	}
	code, out, _ = b.run(t, "show", "broken")
	wantCode(t, code, ExitNotActive)
	wantContains(t, "show broken", out, "× broken", "failed (dead)", "n/a (the partition is not running (failed/dead))")
}

// A pid that is not the partition's (reused after its init died) is
// never reported as the partition.
func TestShowForeignPID(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	qm, _ := fb.Partition("qm")
	qm.MainPID = 4243
	fb.Set(qm)
	b.serve(t, fb, dbusapi.Options{})
	withInspect(t, &fakePodman{}, "")
	if err := os.MkdirAll(filepath.Join(inspectHost.ProcRoot, "4243"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inspectHost.ProcRoot, "4243", "cgroup"), []byte("0::/user.slice/session-1.scope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := b.run(t, "show", "qm", "--json", "--podman-socket", "/x.sock")
	wantCode(t, code, ExitOK)
	var m showJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for what, why := range map[string]string{"namespaces": m.Namespaces.Unavailable, "sockets": m.Sockets.Unavailable, "devices": m.Devices.NodesUnavailable} {
		if !strings.Contains(why, "not in the partition's cgroup") {
			t.Errorf("%s of a foreign pid: unavailable = %q", what, why)
		}
	}
	if v := m.Resources.Pids.Current.Value; v == nil || *v != 5 {
		t.Errorf("the cgroup is still read: %+v", m.Resources.Pids.Current)
	}
}

func TestExec(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})
	fp := &fakePodman{stdout: "out\n", stderr: "err\n"}
	withInspect(t, fp, "input")
	sock := "--podman-socket=/run/p.sock"

	// Flags before CMD are qmd's; from CMD on everything is the command's.
	code, out, errOut := b.run(t, "exec", sock, "qm", "--json", "sh", "-c", "exit 3", "--json", "-t")
	wantCode(t, code, ExitOK)
	if last := fp.calls[len(fp.calls)-1]; last != "exec unix:///run/p.sock c0ffee0123456789abcdef sh|-c|exit 3|--json|-t" {
		t.Errorf("exec call: %q", last)
	}
	var ej execJSON
	if err := json.Unmarshal([]byte(out), &ej); err != nil {
		t.Fatalf("exec --json: %v\n%s", err, out)
	}
	if ej != (execJSON{ExitCode: 0, Stdout: "out\n", Stderr: "err\n"}) || errOut != "" || fp.stdin != "input" {
		t.Errorf("exec --json = %+v, stderr %q, stdin %q", ej, errOut, fp.stdin)
	}

	// The command's exit code is qmd's; its output goes straight through.
	fp.code = 3
	code, out, errOut = b.run(t, "exec", sock, "qm", "--", "sh", "-c", "exit 3")
	wantCode(t, code, 3)
	if out != "out\n" || errOut != "err\n" {
		t.Errorf("exec output: stdout %q stderr %q", out, errOut)
	}
	if last := fp.calls[len(fp.calls)-1]; !strings.HasSuffix(last, " sh|-c|exit 3") {
		t.Errorf("exec call: %q", last)
	}
	code, out, _ = b.run(t, "exec", "--json", sock, "qm", "false")
	wantCode(t, code, 3)
	if err := json.Unmarshal([]byte(out), &ej); err != nil || ej.ExitCode != 3 {
		t.Errorf("exec --json of a failing command: %v %+v", err, ej)
	}

	// A command that cannot be run: 127, with Podman's reason.
	fp.code, fp.execErr = 127, fmt.Errorf("%w: executable file not found", inspect.ErrCommand)
	code, _, errOut = b.run(t, "exec", sock, "qm", "nosuch")
	wantCode(t, code, 127)
	wantContains(t, "stderr", errOut, "executable file not found")

	// The container went away under qmd: not running.
	fp.code, fp.execErr = -1, fmt.Errorf("%w: container state improper", inspect.ErrNotRunning)
	code, _, errOut = b.run(t, "exec", sock, "qm", "true")
	wantCode(t, code, ExitNotActive)
	wantContains(t, "stderr", errOut, "partition qm is not running")
	fp.execErr = fmt.Errorf("%w at unix:///run/p.sock: connection refused", inspect.ErrPodmanUnavailable)
	code, _, errOut = b.run(t, "exec", sock, "qm", "true")
	wantCode(t, code, ExitFailure)
	wantContains(t, "stderr", errOut, "cannot be reached", "--podman-socket")

	// Not running according to qmd: Podman is not asked.
	n := len(fp.calls)
	code, _, errOut = b.run(t, "exec", sock, "broken", "true")
	wantCode(t, code, ExitNotActive)
	wantContains(t, "stderr", errOut, "partition broken is not running (failed/dead)")
	code, _, _ = b.run(t, "exec", sock, "nosuch", "true")
	wantCode(t, code, ExitNoSuchPartition)
	if len(fp.calls) != n {
		t.Errorf("podman asked for a partition that is not running: %q", fp.calls[n:])
	}

	// Usage errors.
	for _, args := range [][]string{{"exec", "qm"}, {"exec", "-t", "--json", "qm", "true"}, {"exec", "--bogus", "qm", "true"}} {
		code, _, _ = b.run(t, args...)
		wantCode(t, code, ExitUsage)
	}
}

// The Podman socket comes from qmd's configuration without --podman-socket.
func TestExecSocketFromConfig(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})
	fp := &fakePodman{}
	withInspect(t, fp, "")
	cfg := filepath.Join(t.TempDir(), "qmd.toml")
	if err := os.WriteFile(cfg, []byte("[podman]\nsocket = \"unix:///run/elsewhere/podman.sock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, _ := b.run(t, "exec", "--config", cfg, "qm", "true")
	wantCode(t, code, ExitOK)
	if last := fp.calls[len(fp.calls)-1]; last != "exec unix:///run/elsewhere/podman.sock c0ffee0123456789abcdef true" {
		t.Errorf("exec call: %q", last)
	}
	if err := os.WriteFile(cfg, []byte("[podman]\nsocket = 12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := b.run(t, "exec", "--config", cfg, "qm", "true")
	wantCode(t, code, ExitFailure)
	wantContains(t, "stderr", errOut, "podman.socket", "--podman-socket")

	// Without a Podman client (a build without the bindings) exec says so,
	// and show still reports what it can.
	withInspect(t, nil, "")
	code, _, errOut = b.run(t, "exec", "--podman-socket=/x", "qm", "true")
	wantCode(t, code, ExitFailure)
	wantContains(t, "stderr", errOut, "without the Podman API")
	code, out, _ := b.run(t, "show", "qm", "devices")
	wantCode(t, code, ExitOK)
	wantContains(t, "show qm devices", out, "configured: n/a (this qmd was built without the Podman API client)", "device nodes under /dev (0)")
}

func TestExecWithoutQmd(t *testing.T) {
	withInspect(t, &fakePodman{}, "")
	code, _, errOut := run(t, "exec", "--address", "unix:path=/nonexistent/bus", "qm", "true")
	wantCode(t, code, ExitNoQmd)
	wantContains(t, "stderr", errOut, "cannot connect")
}
