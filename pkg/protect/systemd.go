package protect

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Systemd is the part of systemd's D-Bus API the protector uses; tests
// pass a fake.
type Systemd interface {
	// ControlGroup is the unit's cgroup path ("" when the unit is not
	// running: systemd reports an empty ControlGroup then).
	ControlGroup(ctx context.Context, unit string) (string, error)
	// SetUnitProperties sets properties on the unit (runtime: until the
	// next boot, not written to /etc).
	SetUnitProperties(ctx context.Context, unit string, runtime bool, props ...sddbus.Property) error
}

// SystemdConn is Systemd over go-systemd's connection to PID 1.
type SystemdConn struct {
	Conn *sddbus.Conn
	// DialSignals opens the bus connection that receives systemd's
	// signals for WatchUnits (default: a private system bus connection).
	// go-systemd's own signal dispatcher is not used: it reads its
	// subscriber fields without the lock that guards their writes.
	DialSignals func() (*godbus.Conn, error)
}

var _ Systemd = SystemdConn{}

// unitInterface is the D-Bus interface that carries ControlGroup for the
// unit's type.
func unitInterface(unit string) (string, error) {
	i := strings.LastIndexByte(unit, '.')
	if i <= 0 {
		return "", fmt.Errorf("unit %q has no type suffix", unit)
	}
	switch unit[i+1:] {
	case "service":
		return "Service", nil
	case "scope":
		return "Scope", nil
	case "slice":
		return "Slice", nil
	case "socket":
		return "Socket", nil
	case "mount":
		return "Mount", nil
	case "swap":
		return "Swap", nil
	}
	return "", fmt.Errorf("unit %q: a %s unit has no cgroup", unit, unit[i+1:])
}

// ControlGroup asks systemd for the unit's ControlGroup property: the
// real cgroup, in whatever slice the unit runs (Slice=, a drop-in, a
// transient unit), instead of a guess from the name.
func (s SystemdConn) ControlGroup(ctx context.Context, unit string) (string, error) {
	if s.Conn == nil {
		return "", errors.New("no systemd connection")
	}
	iface, err := unitInterface(unit)
	if err != nil {
		return "", err
	}
	prop, err := s.Conn.GetUnitTypePropertyContext(ctx, unit, iface, "ControlGroup")
	if err != nil {
		return "", fmt.Errorf("ControlGroup of %s: %w", unit, err)
	}
	v, ok := prop.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("ControlGroup of %s: unexpected type %s", unit, prop.Value.Signature())
	}
	return v, nil
}

// SetUnitProperties sets properties through SetUnitProperties.
func (s SystemdConn) SetUnitProperties(ctx context.Context, unit string, runtime bool, props ...sddbus.Property) error {
	if s.Conn == nil {
		return errors.New("no systemd connection")
	}
	return s.Conn.SetUnitPropertiesContext(ctx, unit, runtime, props...)
}

func godbusVariant(v uint64) godbus.Variant { return godbus.MakeVariant(v) }

// UnitWatcher is a Systemd that reports changes of units as they happen
// (optional: without it units are followed on their triggers' ends and on
// the resync tick only).
type UnitWatcher interface {
	// WatchUnits delivers the name of a unit whose ActiveState changed
	// (started, stopped, restarting) until ctx ends. Delivery may drop
	// names when the reader is behind: the resync tick catches up.
	WatchUnits(ctx context.Context) (<-chan string, error)
}

var _ UnitWatcher = SystemdConn{}

const (
	unitPathPrefix = "/org/freedesktop/systemd1/unit"
	unitIface      = "org.freedesktop.systemd1.Unit"
)

func dialSystemBus() (*godbus.Conn, error) { return authHello(godbus.SystemBusPrivate()) }

// authHello authenticates and says hello on a private connection just
// dialled (godbus's private connections do neither), closing it on error.
func authHello(c *godbus.Conn, err error) (*godbus.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := c.Auth(nil); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.Hello(); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// WatchUnits listens to systemd's PropertiesChanged signals of units'
// org.freedesktop.systemd1.Unit interface on its own connection, and asks
// systemd to send them (Manager.Subscribe: systemd emits unit changes only
// while a client is subscribed; closing the connection ends it).
func (s SystemdConn) WatchUnits(ctx context.Context) (<-chan string, error) {
	dial := s.DialSignals
	if dial == nil {
		dial = dialSystemBus
	}
	bus, err := dial()
	if err != nil {
		return nil, fmt.Errorf("connect for systemd's signals: %w", err)
	}
	if err := bus.AddMatchSignalContext(ctx, godbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		godbus.WithMatchMember("PropertiesChanged"), godbus.WithMatchPathNamespace(unitPathPrefix),
		godbus.WithMatchArg(0, unitIface)); err != nil {
		_ = bus.Close()
		return nil, fmt.Errorf("match systemd's unit signals: %w", err)
	}
	sigs := make(chan *godbus.Signal, 256)
	bus.Signal(sigs)
	if err := bus.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").CallWithContext(ctx,
		"org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		_ = bus.Close()
		return nil, fmt.Errorf("subscribe to systemd's signals: %w", err)
	}
	out := make(chan string, 64)
	go func() {
		defer func() { _ = bus.Close() }()
		for {
			select {
			case <-ctx.Done():
				return
			case sig, ok := <-sigs:
				if !ok {
					return // the bus connection ended: the resync tick remains
				}
				name, ok := activeStateChange(sig)
				if !ok {
					continue
				}
				select {
				case out <- name:
				default:
				}
			}
		}
	}()
	return out, nil
}

// activeStateChange returns the unit whose ActiveState a PropertiesChanged
// signal reports.
func activeStateChange(sig *godbus.Signal) (string, bool) {
	if sig == nil || sig.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" || len(sig.Body) < 2 {
		return "", false
	}
	if iface, _ := sig.Body[0].(string); iface != unitIface {
		return "", false
	}
	changed, _ := sig.Body[1].(map[string]godbus.Variant)
	if _, ok := changed["ActiveState"]; !ok {
		return "", false
	}
	p := string(sig.Path)
	if !strings.HasPrefix(p, unitPathPrefix+"/") {
		return "", false
	}
	return unescapeBusPath(p[len(unitPathPrefix)+1:]), true
}

// unescapeBusPath undoes systemd's object path escaping of a unit name
// ("_2e" is ".", "_2d" is "-").
func unescapeBusPath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
