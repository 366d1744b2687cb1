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
)

const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>%s</auth>
  <listen>unix:path=%s</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
`

// startBus runs a real dbus-daemon whose socket stands where a
// partition's systemd private socket would be seen from the host,
// <dir>/proc/<pid>/root/run/systemd/private. It returns the socket pattern,
// the pid used in it and the daemon's process.
func startBus(t *testing.T) (pattern string, pid int, proc *os.Process) {
	return startBusAuth(t, "EXTERNAL")
}

func startBusAuth(t *testing.T, auth string) (pattern string, pid int, proc *os.Process) {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not installed (apt-get install dbus)")
	}
	dir := t.TempDir()
	pattern = filepath.Join(dir, "proc/%d/root/run/systemd/private")
	pid = 4242
	sock := SocketPath(pattern, pid)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(busConfig, auth, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dbus-daemon did not create %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pattern, pid, cmd.Process
}

func probeOnce(p Prober, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := p.Probe(ctx)
	return time.Since(start), err
}

// TestDBusProberRealDaemon: a real D-Bus peer answers the ping; stopped
// with SIGSTOP it does not, and the probe gives up within its timeout
// (connect and authentication included); after SIGCONT it answers again.
func TestDBusProberRealDaemon(t *testing.T) {
	pattern, pid, proc := startBus(t)
	p := DBusProber{Path: SocketPath(pattern, pid), Bus: true}
	if d, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("live daemon: %v (after %s)", err, d)
	} else {
		t.Logf("answered in %s", d)
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	d, err := probeOnce(p, timeout)
	if err == nil {
		t.Fatal("stopped daemon answered")
	}
	if errors.Is(err, ErrNoSocket) {
		t.Fatalf("stopped daemon reported as no socket: %v", err)
	}
	if d > timeout+500*time.Millisecond {
		t.Errorf("probe of a stopped daemon took %s, timeout %s", d, timeout)
	}
	t.Logf("stopped: failed after %s: %v", d, err)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if d, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("continued daemon: %v (after %s)", err, d)
	}
	// Another pid: no socket there, the probe is off, not failed.
	if _, err := probeOnce(DBusProber{Path: SocketPath(pattern, pid+1), Bus: true}, timeout); !errors.Is(err, ErrNoSocket) {
		t.Errorf("missing socket: %v, want ErrNoSocket", err)
	}
}

// TestMonitorRealDaemon: the monitor over a real daemon reports once when
// the daemon stays stopped for three probes, and not while it answers.
func TestMonitorRealDaemon(t *testing.T) {
	pattern, pid, proc := startBus(t)
	fired := make(chan string, 2)
	m := NewMonitor(Options{
		Config: Config{Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond, Failures: 3, Grace: time.Minute},
		Prober: DBusProber{Path: SocketPath(pattern, pid), Bus: true},
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
		t.Fatalf("reported while the daemon answers: %s", r)
	case <-time.After(time.Second):
	}
	stopped := time.Now()
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
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

// TestDBusProberErrorReplyIsAnAnswer: an error reply (here the bus
// daemon's ServiceUnknown for a name nobody owns) proves the peer's main
// loop runs: the probe counts it as an answer. Stopped, the peer does not
// answer at all.
func TestDBusProberErrorReplyIsAnAnswer(t *testing.T) {
	pattern, pid, proc := startBus(t)
	p := DBusProber{Path: SocketPath(pattern, pid), Bus: true, BusTarget: "org.example.Nobody"}
	if d, err := probeOnce(p, 5*time.Second); err != nil {
		t.Fatalf("error reply not taken as an answer: %v (after %s)", err, d)
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if d, err := probeOnce(p, time.Second); err == nil || errors.Is(err, ErrRejected) || errors.Is(err, ErrNoSocket) {
		t.Fatalf("stopped peer: %v after %s, want a plain failure", err, d)
	}
}

// TestDBusProberRejected: a peer that refuses EXTERNAL authentication is
// alive: the probe says ErrRejected (off, never a restart), not a failure.
func TestDBusProberRejected(t *testing.T) {
	pattern, pid, _ := startBusAuth(t, "ANONYMOUS")
	_, err := probeOnce(DBusProber{Path: SocketPath(pattern, pid), Bus: true}, 5*time.Second)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}
