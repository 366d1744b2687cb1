package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap/zaptest"
)

type bus struct {
	dir  string
	addr string
}

// startBus runs a private, system-bus-like dbus-daemon with the project's
// policy. Owning org.containers.qmd1 needs root, as on a real system.
func startBus(t *testing.T) *bus {
	t.Helper()
	testutil.RequireRoot(t)
	sb := testutil.StartSystemBus(t, testutil.RepoFile(t, "systemd/org.containers.qmd1.conf"))
	return &bus{dir: sb.Dir, addr: sb.Addr}
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

// newFake is the shared fake backend with a qm partition that has been
// up for 5 minutes, restarted 3 times and OOM-killed once.
func newFake() *dbustest.FakeBackend {
	f := dbustest.NewFakeBackend(nil)
	qm, _ := f.Partition("qm")
	qm.ContainerID = "c0ffee0123456789abcdef"
	qm.NRestarts, qm.NOOMKills = 3, 1
	qm.StateChangeTimestamp = uint64(time.Now().Add(-5 * time.Minute).UnixMicro())
	f.Set(qm)
	return f
}
