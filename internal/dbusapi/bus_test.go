package dbusapi_test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

type bus struct {
	dir  string
	addr string
}

// startBus runs a private, system-bus-like dbus-daemon for the test with
// the project's policy. permissive drops the project policy and allows
// every call, to reach qmd's own authorization check.
func startBus(t testing.TB, permissive bool) *bus {
	t.Helper()
	policy := ""
	if !permissive {
		policy = testutil.RepoFile(t, "systemd/org.containers.qmd1.conf")
	}
	sb := testutil.StartSystemBus(t, policy)
	return &bus{dir: sb.Dir, addr: sb.Addr}
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
func (b *bus) serve(t testing.TB, fb dbusapi.Backend, opts dbusapi.Options) *dbusapi.Server {
	t.Helper()
	log := zap.NewNop()
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	}
	return b.serveLog(t, fb, opts, log)
}

func (b *bus) serveLog(t testing.TB, fb dbusapi.Backend, opts dbusapi.Options, log *zap.Logger) *dbusapi.Server {
	t.Helper()
	conn := b.connect(t)
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	s := dbusapi.New(conn, fb, log, opts)
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
