package liveness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/containers/qmd/internal/testutil"
)

// The test binary doubles as a stand-in for the partition's systemd: with
// fakeSystemdEnv set to a bus address it owns org.freedesktop.systemd1 on
// that bus and answers Peer.Ping (godbus does for every connection) until
// killed. As its own process it can be stopped with SIGSTOP.
const fakeSystemdEnv = "QMD_LIVENESS_FAKE_SYSTEMD"

func TestMain(m *testing.M) {
	if addr := os.Getenv(fakeSystemdEnv); addr != "" {
		os.Exit(fakeSystemd(addr))
	}
	os.Exit(m.Run())
}

func fakeSystemd(addr string) int {
	conn, err := dbus.Connect(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake systemd:", err)
		return 1
	}
	reply, err := conn.RequestName(SystemdName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		fmt.Fprintln(os.Stderr, "fake systemd: name:", reply, err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// partitionBus is a real dbus-daemon whose socket stands where the
// partition's system bus is seen from the host,
// <dir>/proc/<pid>/root/run/dbus/system_bus_socket.
type partitionBus struct {
	pattern string
	pid     int
	daemon  *os.Process
	sock    string
}

func (b *partitionBus) prober() DBusProber { return DBusProber{Path: SocketPath(b.pattern, b.pid)} }

func startBus(t *testing.T, auth string) *partitionBus {
	t.Helper()
	b := &partitionBus{pattern: filepath.Join(t.TempDir(), "proc/%d/root/run/dbus/system_bus_socket"), pid: 4242}
	b.sock = SocketPath(b.pattern, b.pid)
	b.daemon = testutil.StartBus(t, testutil.BusOptions{Socket: b.sock, Auth: auth}).Process
	return b
}

// startSystemd runs the fake systemd on the bus and waits until it owns
// its name.
func (b *partitionBus) startSystemd(t *testing.T) *os.Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeSystemdEnv+"=unix:path="+b.sock)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("fake systemd did not start: %q %v", buf, err)
	}
	return cmd.Process
}

func probeOnce(p Prober, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := p.Probe(ctx)
	return time.Since(start), err
}

// TestDBusProberRealBus: through a real bus daemon, a systemd on the bus
// answers the ping; stopped with SIGSTOP it does not, and the probe gives
// up within its timeout; after SIGCONT it answers again. Before systemd is
// on the bus the bus says so (ErrNoSystemd: nothing to count yet); a
// missing socket is ErrNoSocket.
func TestDBusProberRealBus(t *testing.T) {
	b := startBus(t, "EXTERNAL")
	p := b.prober()
	if _, err := probeOnce(p, 5*time.Second); !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("no systemd on the bus: %v, want ErrNoSystemd", err)
	}
	sd := b.startSystemd(t)
	if d, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("systemd on the bus: %v (after %s)", err, d)
	} else {
		t.Logf("answered in %s", d)
	}
	if err := sd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	d, err := probeOnce(p, timeout)
	if err == nil || absent(err) || errors.Is(err, ErrRejected) {
		t.Fatalf("stopped systemd: %v, want a failure", err)
	}
	if d > timeout+500*time.Millisecond {
		t.Errorf("probe of a stopped systemd took %s, timeout %s", d, timeout)
	}
	t.Logf("systemd stopped: failed after %s: %v", d, err)
	if err := sd.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if d, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("continued systemd: %v (after %s)", err, d)
	}
	// The bus daemon itself stopped: no answer either.
	if err := b.daemon.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if _, err := probeOnce(p, timeout); err == nil || absent(err) || errors.Is(err, ErrRejected) {
		t.Fatalf("stopped bus: %v, want a failure", err)
	}
	if err := b.daemon.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("continued bus: %v", err)
	}
	// Another pid: no socket there.
	if _, err := probeOnce(DBusProber{Path: SocketPath(b.pattern, b.pid+1)}, timeout); !errors.Is(err, ErrNoSocket) {
		t.Errorf("missing socket: %v, want ErrNoSocket", err)
	}
}

// TestDBusProberRejected: a bus that refuses EXTERNAL authentication is
// alive: the probe says ErrRejected (off, never a restart), not a failure.
func TestDBusProberRejected(t *testing.T) {
	b := startBus(t, "ANONYMOUS")
	_, err := probeOnce(b.prober(), 5*time.Second)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}

// TestMonitorRealBus: the monitor over a real bus is armed by the first
// answer, and reports once when systemd stays stopped for three probes.
func TestMonitorRealBus(t *testing.T) {
	b := startBus(t, "EXTERNAL")
	sd := b.startSystemd(t)
	fired := make(chan string, 2)
	m := NewMonitor(Options{
		Config: Config{Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond, Failures: 3, Grace: time.Minute},
		Prober: b.prober(),
		OnUnresponsive: func(reason string, _ map[string]string) {
			fired <- reason
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case r := <-fired:
		t.Fatalf("reported while systemd answers: %s", r)
	case <-time.After(time.Second):
	}
	stopped := time.Now()
	if err := sd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-fired:
		t.Logf("reported %s after SIGSTOP: %s", time.Since(stopped).Round(time.Millisecond), r)
	case <-time.After(5 * time.Second):
		t.Fatal("no report 5 s after SIGSTOP")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its report")
	}
}
