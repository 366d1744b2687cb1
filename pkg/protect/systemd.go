package protect

import (
	"context"
	"errors"
	"fmt"
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
type SystemdConn struct{ Conn *sddbus.Conn }

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

// WatchUnits subscribes to systemd's PropertiesChanged signals.
func (s SystemdConn) WatchUnits(ctx context.Context) (<-chan string, error) {
	if s.Conn == nil {
		return nil, errors.New("no systemd connection")
	}
	if err := s.Conn.Subscribe(); err != nil {
		return nil, fmt.Errorf("subscribe to systemd's signals: %w", err)
	}
	// go-systemd writes without blocking and drops when full: the buffer
	// holds a burst of a few restarting units.
	upd := make(chan *sddbus.PropertiesUpdate, 256)
	errs := make(chan error, 1)
	s.Conn.SetPropertiesSubscriber(upd, errs)
	out := make(chan string, 64)
	go func() {
		defer func() {
			s.Conn.SetPropertiesSubscriber(nil, nil)
			_ = s.Conn.Unsubscribe()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-errs: // a dropped update: the resync tick catches up
			case u := <-upd:
				if u == nil {
					continue
				}
				if _, ok := u.Changed["ActiveState"]; !ok {
					continue
				}
				select {
				case out <- u.UnitName:
				default:
				}
			}
		}
	}()
	return out, nil
}
