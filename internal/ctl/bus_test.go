package ctl

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap/zaptest"
)

// systemBusConfig mirrors Debian's system.conf (default deny for owning
// names and method calls) and includes the project's policy file.
const systemBusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=%s</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <include>%s</include>
</busconfig>
`

type bus struct {
	dir  string
	addr string
}

// startBus runs a private, system-bus-like dbus-daemon with the project's
// policy. Owning org.containers.qmd1 needs root, as on a real system.
func startBus(t *testing.T) *bus {
	t.Helper()
	testutil.RequireBinaries(t, "dbus-daemon")
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "qmd-ctl-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "bus.conf")
	sock := filepath.Join(dir, "bus")
	if err := os.WriteFile(conf, fmt.Appendf(nil, systemBusConfig, sock, policyFile(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--print-address")
	cmd.Stderr = &testWriter{t: t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case addr, ok := <-lines:
		if !ok || addr == "" {
			t.Fatal("dbus-daemon printed no address")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start")
	}
	return &bus{dir: dir, addr: "unix:path=" + sock}
}

// policyFile is systemd/org.containers.qmd1.conf of this repository.
func policyFile(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "systemd", "org.containers.qmd1.conf")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("dbus-daemon: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// serve runs the real D-Bus server with backend fb on the bus.
func (b *bus) serve(t *testing.T, fb dbusapi.Backend, opts dbusapi.Options) *dbusapi.Server {
	t.Helper()
	conn, err := dbus.Connect(b.addr)
	if err != nil {
		t.Fatalf("connect to %s: %v", b.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	s := dbusapi.New(conn, fb, zaptest.NewLogger(t), opts)
	if err := s.Export(); err != nil {
		t.Fatalf("Export: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// run runs a client command against the bus (through
// DBUS_SYSTEM_BUS_ADDRESS, like the real system bus).
func (b *bus) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.addr)
	return run(t, args...)
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := Run(ctx, args, &out, &errb)
	t.Logf("qmd %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// ---- fake backend

// fakeBackend stands in for the supervisor: partitions in a map, calls
// recorded, incidents in a real incident.Store.
type fakeBackend struct {
	mu    sync.Mutex
	parts map[string]dbusapi.PartitionInfo
	calls []string
	store *incident.Store
}

func newFake() *fakeBackend {
	f := &fakeBackend{parts: map[string]dbusapi.PartitionInfo{}, store: incident.NewMemory(1000)}
	f.parts["qm"] = dbusapi.PartitionInfo{
		Name: "qm", ContainerID: "c0ffee0123456789abcdef", ActiveState: "active", SubState: "running",
		Result: "success", ControlGroup: "/machine.slice/libpod-c0ffee.scope", MainPID: 4242,
		MemoryCurrent: 100 << 20, MemoryHigh: math.MaxUint64, MemoryMax: 2 << 30,
		OOMScoreAdjust: 500, NRestarts: 3, NOOMKills: 1,
		StateChangeTimestamp: uint64(time.Now().Add(-5 * time.Minute).UnixMicro()),
	}
	f.parts["broken"] = dbusapi.PartitionInfo{Name: "broken", ActiveState: "failed", SubState: "dead",
		Result: "start-limit-hit", MemoryHigh: math.MaxUint64, MemoryMax: math.MaxUint64, OOMScoreAdjust: 500}
	return f
}

func (f *fakeBackend) add(t *testing.T, partition string, typ incident.Type, summary string) incident.Incident {
	t.Helper()
	inc, err := f.store.Add(incident.Incident{Partition: partition, Type: typ, Summary: summary,
		Details: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Partitions() []dbusapi.PartitionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]dbusapi.PartitionInfo, 0, len(f.parts))
	for _, p := range f.parts {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeBackend) Partition(name string) (dbusapi.PartitionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.parts[name]
	if !ok {
		return dbusapi.PartitionInfo{}, apierr.ErrNoSuchPartition
	}
	return p, nil
}

func (f *fakeBackend) op(method, name string, check func(p dbusapi.PartitionInfo) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.parts[name]
	if !ok {
		return apierr.ErrNoSuchPartition
	}
	if check != nil {
		if err := check(p); err != nil {
			return err
		}
	}
	f.calls = append(f.calls, method+" "+name)
	return nil
}

func notFailed(p dbusapi.PartitionInfo) error {
	if p.ActiveState == "failed" {
		return apierr.ErrStartLimitHit
	}
	return nil
}

func running(p dbusapi.PartitionInfo) error {
	if p.ActiveState != "active" {
		return apierr.ErrNotRunning
	}
	return nil
}

func (f *fakeBackend) Start(n string) error       { return f.op("Start", n, notFailed) }
func (f *fakeBackend) Stop(n string) error        { return f.op("Stop", n, running) }
func (f *fakeBackend) Restart(n string) error     { return f.op("Restart", n, notFailed) }
func (f *fakeBackend) Freeze(n string) error      { return f.op("Freeze", n, running) }
func (f *fakeBackend) Thaw(n string) error        { return f.op("Thaw", n, running) }
func (f *fakeBackend) ResetFailed(n string) error { return f.op("ResetFailed", n, nil) }
func (f *fakeBackend) SetMemoryHigh(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryHigh %d %v", b, rt), n, nil)
}

func (f *fakeBackend) SetMemoryMax(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryMax %d %v", b, rt), n, nil)
}

func (f *fakeBackend) SetOOMScoreAdjust(n string, v int32, rt bool) error {
	return f.op(fmt.Sprintf("SetOOMScoreAdjust %d %v", v, rt), n, nil)
}

func (f *fakeBackend) Reload() error  { return nil }
func (f *fakeBackend) Status() string { return "up" }

func (f *fakeBackend) Incidents(p string, after uint64, limit int) ([]incident.Incident, error) {
	return f.store.List(p, after, limit)
}

func (f *fakeBackend) LastIncidentID() uint64 { return f.store.LastID() }
