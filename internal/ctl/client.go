package ctl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/godbus/dbus/v5"
)

// callTimeout bounds one method call (busctl's default is 25s; qmd's
// methods return promptly).
const callTimeout = 25 * time.Second

// D-Bus error names of the bus daemon the client interprets.
const (
	errServiceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown"
	errNameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner"
	errNoReply        = "org.freedesktop.DBus.Error.NoReply"
	errTimeout        = "org.freedesktop.DBus.Error.Timeout"
	errUnknownObject  = "org.freedesktop.DBus.Error.UnknownObject"
	errNoSuchObject   = "org.freedesktop.DBus.Error.NoSuchObject" // godbus' name for UnknownObject
)

// client talks to qmd on one bus connection.
type client struct {
	conn *dbus.Conn
	mgr  dbus.BusObject
}

// busError is a failure to reach the bus itself (exit 6).
type busError struct {
	addr string
	err  error
}

func (e *busError) Error() string {
	where := "the system bus"
	if e.addr != "" {
		where += " at " + e.addr
	}
	return fmt.Sprintf("cannot connect to %s: %v (is dbus running? the address comes from --address, "+
		"DBUS_SYSTEM_BUS_ADDRESS, or defaults to unix:path=/run/dbus/system_bus_socket)", where, e.err)
}

func (e *busError) Unwrap() error { return e.err }

// dial connects to address, or to the system bus when address is empty
// (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket).
func dial(ctx context.Context, address string) (*client, error) {
	addr := address
	if addr == "" {
		addr = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	var conn *dbus.Conn
	var err error
	if address != "" {
		conn, err = dbus.Connect(address, dbus.WithContext(ctx))
	} else {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, &busError{addr: addr, err: err}
	}
	return &client{conn: conn, mgr: conn.Object(dbusapi.BusName, dbusapi.ManagerPath)}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// call calls method on obj with a timeout and stores the reply in ret.
func call(ctx context.Context, obj dbus.BusObject, method string, args []any, ret ...any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := obj.CallWithContext(ctx, method, 0, args...)
	if c.Err != nil {
		if errors.Is(c.Err, context.DeadlineExceeded) && ctx.Err() != nil {
			return dbus.Error{Name: errTimeout, Body: []any{fmt.Sprintf("no reply from qmd within %s", callTimeout)}}
		}
		return c.Err
	}
	if len(ret) == 0 {
		return nil
	}
	return c.Store(ret...)
}

// errName is the D-Bus error name of err ("" when err is not a D-Bus
// error reply).
func errName(err error) string {
	var e dbus.Error
	if errors.As(err, &e) {
		return e.Name
	}
	var pe *dbus.Error
	if errors.As(err, &pe) && pe != nil {
		return pe.Name
	}
	return ""
}

// managerInfo is the Manager's properties.
type managerInfo struct {
	Version        string
	Status         string
	LastIncidentID uint64
}

func (c *client) manager(ctx context.Context) (managerInfo, error) {
	var props map[string]dbus.Variant
	if err := call(ctx, c.mgr, "org.freedesktop.DBus.Properties.GetAll", []any{dbusapi.ManagerInterface}, &props); err != nil {
		return managerInfo{}, err
	}
	var m managerInfo
	getProp(props, "Version", &m.Version)
	getProp(props, "Status", &m.Status)
	getProp(props, "LastIncidentId", &m.LastIncidentID)
	return m, nil
}

func (c *client) lastIncidentID(ctx context.Context) (uint64, error) {
	var v dbus.Variant
	if err := call(ctx, c.mgr, "org.freedesktop.DBus.Properties.Get", []any{dbusapi.ManagerInterface, "LastIncidentId"}, &v); err != nil {
		return 0, err
	}
	id, _ := v.Value().(uint64)
	return id, nil
}

// partitionEntry is one element of ListPartitions.
type partitionEntry struct {
	Name, ActiveState, SubState string
	Path                        dbus.ObjectPath
}

func (c *client) listPartitions(ctx context.Context) ([]partitionEntry, error) {
	var out []partitionEntry
	if err := call(ctx, c.mgr, dbusapi.ManagerInterface+".ListPartitions", nil, &out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// partitionPath resolves a partition name with GetPartition, so that an
// unknown name gives NoSuchPartition (not an unknown object).
func (c *client) partitionPath(ctx context.Context, name string) (dbus.ObjectPath, error) {
	var p dbus.ObjectPath
	if err := call(ctx, c.mgr, dbusapi.ManagerInterface+".GetPartition", []any{name}, &p); err != nil {
		return "", err
	}
	return p, nil
}

// partitionAt reads every property of the partition object at path.
func (c *client) partitionAt(ctx context.Context, path dbus.ObjectPath) (dbusapi.PartitionInfo, error) {
	var props map[string]dbus.Variant
	obj := c.conn.Object(dbusapi.BusName, path)
	if err := call(ctx, obj, "org.freedesktop.DBus.Properties.GetAll", []any{dbusapi.PartitionInterface}, &props); err != nil {
		return dbusapi.PartitionInfo{}, err
	}
	var p dbusapi.PartitionInfo
	getProp(props, "Name", &p.Name)
	getProp(props, "ContainerId", &p.ContainerID)
	getProp(props, "ActiveState", &p.ActiveState)
	getProp(props, "SubState", &p.SubState)
	getProp(props, "Result", &p.Result)
	getProp(props, "MainPID", &p.MainPID)
	getProp(props, "ControlGroup", &p.ControlGroup)
	getProp(props, "MemoryCurrent", &p.MemoryCurrent)
	getProp(props, "MemoryHigh", &p.MemoryHigh)
	getProp(props, "MemoryMax", &p.MemoryMax)
	getProp(props, "OOMScoreAdjust", &p.OOMScoreAdjust)
	getProp(props, "NRestarts", &p.NRestarts)
	getProp(props, "NOOMKills", &p.NOOMKills)
	getProp(props, "StateChangeTimestamp", &p.StateChangeTimestamp)
	getProp(props, "Conditions", &p.Conditions)
	getProp(props, "PodmanLatencyUSec", &p.PodmanLatencyUSec)
	return p, nil
}

// getProp stores props[name] in dst when present and of dst's type.
func getProp[T any](props map[string]dbus.Variant, name string, dst *T) {
	if v, ok := props[name]; ok {
		if x, ok := v.Value().(T); ok {
			*dst = x
		}
	}
}

// partitionCall calls a method of the Partition interface on name.
func (c *client) partitionCall(ctx context.Context, name, method string, args ...any) error {
	path, err := c.partitionPath(ctx, name)
	if err != nil {
		return err
	}
	return call(ctx, c.conn.Object(dbusapi.BusName, path), dbusapi.PartitionInterface+"."+method, args)
}

// incidentEntry is one element of ListIncidents.
type incidentEntry struct {
	ID, Time                 uint64
	Partition, Type, Summary string
	Details                  map[string]dbus.Variant
}

// incidentsAfter lists the incidents of partition ("" = all) with ID >
// after, in ID order, at most max (0 = all), paging through the server's
// limit.
func (c *client) incidentsAfter(ctx context.Context, partition string, after uint64, max int) ([]incidentEntry, error) {
	var out []incidentEntry
	for {
		want := dbusapi.MaxIncidentLimit
		if max > 0 && max-len(out) < want {
			want = max - len(out)
		}
		var page []incidentEntry
		if err := call(ctx, c.mgr, dbusapi.ManagerInterface+".ListIncidents", []any{partition, after, uint32(want)}, &page); err != nil {
			return nil, err
		}
		for _, inc := range page {
			if inc.ID > after {
				after = inc.ID
			}
		}
		out = append(out, page...)
		if len(page) < want || (max > 0 && len(out) >= max) {
			return out, nil
		}
	}
}

// recentIncidents returns the last n incidents (n > 0) of partition ("" =
// all) in ID order, and the ID bound the listing started after: every
// incident of the partition with a greater ID is in the result or was
// recorded after the call.
func (c *client) recentIncidents(ctx context.Context, partition string, n int) ([]incidentEntry, uint64, error) {
	last, err := c.lastIncidentID(ctx)
	if err != nil {
		return nil, 0, err
	}
	window := uint64(n)
	if partition != "" {
		window = max(window*4, 64)
	}
	for {
		var after uint64
		if window < last {
			after = last - window
		}
		all, err := c.incidentsAfter(ctx, partition, after, 0)
		if err != nil {
			return nil, 0, err
		}
		if len(all) >= n || after == 0 {
			if len(all) > n {
				all = all[len(all)-n:]
			}
			return all, after, nil
		}
		if window > math.MaxUint64/8 {
			window = math.MaxUint64
		} else {
			window *= 8
		}
	}
}
