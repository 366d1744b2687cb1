package testutil

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemBusConfig mirrors the defaults of Debian's system bus (default
// deny for owning names and method calls) and includes extra policy.
const systemBusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>%s</auth>
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

// SystemBus is a private, system-bus-like dbus-daemon.
type SystemBus struct {
	Dir     string
	Addr    string      // unix:path=...
	Process *os.Process // the dbus-daemon (tests stop it with SIGSTOP)
}

// BusOptions are the less common settings of StartBus.
type BusOptions struct {
	// PolicyPath is included in the configuration; "" allows every
	// call (see StartSystemBus).
	PolicyPath string
	// Socket is where the bus listens; "" is a socket in Dir. Its
	// directory is created.
	Socket string
	// Auth is the only authentication mechanism the bus accepts;
	// "" is EXTERNAL, as on a system bus.
	Auth string
}

// StartSystemBus runs a dbus-daemon configured like a system bus that
// includes the policy file at policyPath (the project's
// systemd/org.containers.qmd1.conf). An empty policyPath allows every
// call, to reach qmd's own authorization check. It is stopped at the end
// of the test. The socket is reachable for other uids (setpriv tests).
func StartSystemBus(t testing.TB, policyPath string) *SystemBus {
	t.Helper()
	return StartBus(t, BusOptions{PolicyPath: policyPath})
}

// StartBus is StartSystemBus with a chosen socket path and
// authentication mechanism.
func StartBus(t testing.TB, o BusOptions) *SystemBus {
	t.Helper()
	RequireBinaries(t, "dbus-daemon")
	dir, err := os.MkdirTemp("", "qmd-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	extra := `<policy context="default"><allow own="*"/><allow send_type="method_call"/></policy>`
	if o.PolicyPath != "" {
		extra = fmt.Sprintf("<include>%s</include>", o.PolicyPath)
	}
	auth := o.Auth
	if auth == "" {
		auth = "EXTERNAL"
	}
	conf := filepath.Join(dir, "bus.conf")
	sock := o.Socket
	if sock == "" {
		sock = filepath.Join(dir, "bus")
	} else if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(systemBusConfig, auth, sock, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--print-address")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a test may have stopped it
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
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
			t.Fatalf("dbus-daemon printed no address: %s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start")
	}
	return &SystemBus{Dir: dir, Addr: "unix:path=" + sock, Process: cmd.Process}
}
