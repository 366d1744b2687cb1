package protect

import (
	"context"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/containers/qmd/internal/testutil"
)

// busSystemd is a minimal systemd on a private bus: the unit objects'
// ControlGroup property, Manager.SetUnitProperties, Subscribe and the
// PropertiesChanged signal, as PID 1 offers them. It tests SystemdConn
// (the real go-systemd client) without a systemd host.
type busSystemd struct {
	conn *godbus.Conn
	mu   sync.Mutex
	cgs  map[godbus.ObjectPath]string // unit path -> ControlGroup
	set  []string                     // "unit runtime name=value"
	subs int
}

type fakeManager struct{ s *busSystemd }

func (m fakeManager) Subscribe() *godbus.Error {
	m.s.mu.Lock()
	m.s.subs++
	m.s.mu.Unlock()
	return nil
}
func (m fakeManager) Unsubscribe() *godbus.Error { return nil }
func (m fakeManager) SetUnitProperties(name string, runtime bool, props []struct {
	Name  string
	Value godbus.Variant
}) *godbus.Error {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	for _, p := range props {
		rt := "persistent"
		if runtime {
			rt = "runtime"
		}
		m.s.set = append(m.s.set, name+" "+rt+" "+p.Name+"="+p.Value.String())
	}
	return nil
}

type fakeUnitProps struct {
	s    *busSystemd
	path godbus.ObjectPath
}

func (u fakeUnitProps) Get(iface, name string) (godbus.Variant, *godbus.Error) {
	u.s.mu.Lock()
	defer u.s.mu.Unlock()
	if name != "ControlGroup" || (iface != "org.freedesktop.systemd1.Service" && iface != "org.freedesktop.systemd1.Scope") {
		return godbus.Variant{}, godbus.MakeFailedError(godbusErr("no property " + iface + "." + name))
	}
	return godbus.MakeVariant(u.s.cgs[u.path]), nil
}

type godbusErr string

func (e godbusErr) Error() string { return string(e) }

func dialBus(t *testing.T, addr string) *godbus.Conn {
	t.Helper()
	c, err := authHello(godbus.Dial(addr))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startBusSystemd(t *testing.T, units map[string]string) (*busSystemd, string) {
	t.Helper()
	bus := testutil.StartSystemBus(t, "")
	s := &busSystemd{conn: dialBus(t, bus.Addr), cgs: map[godbus.ObjectPath]string{}}
	t.Cleanup(func() { _ = s.conn.Close() })
	if err := s.conn.Export(fakeManager{s}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	for u, cg := range units {
		p := godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(u))
		s.cgs[p] = cg
		if err := s.conn.Export(fakeUnitProps{s, p}, p, "org.freedesktop.DBus.Properties"); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := s.conn.RequestName("org.freedesktop.systemd1", godbus.NameFlagDoNotQueue); err != nil || r != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", r, err)
	}
	return s, bus.Addr
}

// TestSystemdConnOnABus: SystemdConn asks a unit's ControlGroup on the
// unit type's interface (a service in asil.slice, a scope), an inactive
// unit has "", SetUnitProperties passes MemoryMin/MemoryLow as runtime
// uint64 properties, and WatchUnits reports a unit whose ActiveState
// changed (and nothing for other property changes).
func TestSystemdConnOnABus(t *testing.T) {
	testutil.RequireRoot(t)
	fake, addr := startBusSystemd(t, map[string]string{
		"brakes.service": "/asil.slice/brakes.service", "abs.scope": "/asil.slice/abs.scope", "stopped.service": ""})
	dial := func() (*godbus.Conn, error) { return authHello(godbus.Dial(addr)) }
	conn, err := sddbus.NewConnection(dial)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sd := SystemdConn{Conn: conn, DialSignals: dial}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for unit, want := range map[string]string{"brakes.service": "/asil.slice/brakes.service", "abs.scope": "/asil.slice/abs.scope", "stopped.service": ""} {
		got, err := sd.ControlGroup(ctx, unit)
		if err != nil || got != want {
			t.Errorf("ControlGroup(%s) = %q, %v; want %q", unit, got, err, want)
		}
	}
	if _, err := sd.ControlGroup(ctx, "x.timer"); err == nil {
		t.Error("a timer unit has no cgroup: no error")
	}

	p := &Protector{o: Options{Systemd: sd, MemoryV2: ptr(true)}, log: nopLog()}
	p.applyMemory(ctx, &unit{e: Entry{Unit: "brakes.service", MemoryMin: 256 << 20, MemoryMinSet: true, MemoryLow: 512 << 20, MemoryLowSet: true}})
	fake.mu.Lock()
	set := append([]string(nil), fake.set...)
	fake.mu.Unlock()
	if len(set) != 2 || set[0] != "brakes.service runtime MemoryMin=@t 268435456" || set[1] != "brakes.service runtime MemoryLow=@t 536870912" {
		t.Errorf("SetUnitProperties got %q", set)
	}

	ch, err := sd.WatchUnits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	emit := func(unit, iface string, changed map[string]godbus.Variant) {
		t.Helper()
		path := godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(unit))
		if err := fake.conn.Emit(path, "org.freedesktop.DBus.Properties.PropertiesChanged", iface, changed, []string{}); err != nil {
			t.Fatal(err)
		}
	}
	emit("brakes.service", "org.freedesktop.systemd1.Unit", map[string]godbus.Variant{"Description": godbus.MakeVariant("x")})
	emit("brakes.service", "org.freedesktop.systemd1.Service", map[string]godbus.Variant{"ActiveState": godbus.MakeVariant("x")})
	emit("brakes.service", "org.freedesktop.systemd1.Unit", map[string]godbus.Variant{"ActiveState": godbus.MakeVariant("activating")})
	select {
	case u := <-ch:
		if u != "brakes.service" {
			t.Errorf("WatchUnits reported %q", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no unit change reported")
	}
	select {
	case u := <-ch:
		t.Errorf("a change without ActiveState reported: %q", u)
	case <-time.After(100 * time.Millisecond):
	}
	fake.mu.Lock()
	subs := fake.subs
	fake.mu.Unlock()
	if subs != 1 {
		t.Errorf("Manager.Subscribe called %d times", subs)
	}
}

func ptr[T any](v T) *T { return &v }
