package dbusapi

import (
	"sort"

	"github.com/godbus/dbus/v5"
)

// ProtectedUnit is one [[protect]] entry as the host-level protector sees
// it: Manager.Protected's (unit, cgroup, state).
type ProtectedUnit struct {
	Unit   string // the unit, or the cgroup path of a cgroup entry
	Cgroup string // resolved cgroup path, "" when not running or unresolved
	State  string // "watching", "protected", "not-running", "unresolved: ..."
}

// ProtectedLister is implemented by a Backend that has the host-level
// protector. It is a separate interface so that a Backend without one
// (tests, a library user) need not change: Protected is then empty.
type ProtectedLister interface {
	Protected() []ProtectedUnit
}

// protectedProp is Manager.Protected: a(sss), sorted by unit.
func (s *Server) protectedProp() dbus.Variant {
	out := []ProtectedUnit{}
	if l, ok := s.b.(ProtectedLister); ok {
		out = append(out, l.Protected()...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit < out[j].Unit })
	return dbus.MakeVariant(out)
}
