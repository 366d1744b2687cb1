package dbusapi

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// systemBusConfig mirrors Debian's /usr/share/dbus-1/system.conf (default
// deny for owning names and method calls) and includes the project's
// policy. permissive drops the project policy and allows every call, to
// reach qmd's own authorization check.
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
  %s
</busconfig>
`

type bus struct {
	dir  string
	addr string
}

// startBus runs a private, system-bus-like dbus-daemon for the test.
func startBus(t testing.TB, permissive bool) *bus {
	t.Helper()
	testutil.RequireBinaries(t, "dbus-daemon")
	// Not t.TempDir: the socket must be reachable for uid 65534 (setpriv).
	dir, err := os.MkdirTemp("", "qmd-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("<include>%s</include>", repoFile(t, "org.containers.qmd1.conf"))
	if permissive {
		extra = `<policy context="default"><allow own="*"/><allow send_type="method_call"/></policy>`
	}
	conf := filepath.Join(dir, "bus.conf")
	sock := filepath.Join(dir, "bus")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(systemBusConfig, sock, extra)), 0o644); err != nil {
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
		return &bus{dir: dir, addr: "unix:path=" + sock}
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start")
	}
	return nil
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("dbus-daemon: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

func (b *bus) connect(t testing.TB) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(b.addr)
	if err != nil {
		t.Fatalf("connect to %s: %v", b.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serve connects a server with backend fb to the bus and exports it.
func (b *bus) serve(t testing.TB, fb Backend, opts Options) *Server {
	t.Helper()
	log := zap.NewNop()
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	}
	return b.serveLog(t, fb, opts, log)
}

func (b *bus) serveLog(t testing.TB, fb Backend, opts Options, log *zap.Logger) *Server {
	t.Helper()
	conn := b.connect(t)
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	s := New(conn, fb, log, opts)
	if err := s.Export(); err != nil {
		t.Fatalf("Export: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// busctl runs busctl against the bus; asUID >= 0 runs it as that user
// (and group) without supplementary groups.
func (b *bus) busctl(t testing.TB, asUID int, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"busctl", "--address=" + b.addr, "--timeout=10"}, args...)
	if asUID >= 0 {
		id := fmt.Sprint(asUID)
		argv = append([]string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
