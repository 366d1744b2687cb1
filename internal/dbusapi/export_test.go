package dbusapi

import "github.com/godbus/dbus/v5"

// Hooks for the external tests (package dbusapi_test), which share
// dbustest.FakeBackend with internal/ctl and so cannot be in this package.

var (
	DBusError    = dbusError
	PartitionErr = partitionErr
)

const (
	IfaceIntrospectable = ifaceIntrospectable
	IfaceProperties     = ifaceProperties
)

// NumPartitionProps is the number of properties of the Partition interface.
var NumPartitionProps = len(partitionIface.props)

// PartitionMethods is the method table of partition name's object.
func (s *Server) PartitionMethods(name string) map[string]any { return s.partitionMethods(name) }

// CallReload calls the Manager's Reload handler from sender.
func (s *Server) CallReload(sender dbus.Sender) *dbus.Error { return s.reload(sender) }

// CallGetPartition calls the Manager's GetPartition handler.
func (s *Server) CallGetPartition(name string) (dbus.ObjectPath, *dbus.Error) {
	return s.getPartition(name)
}

// CallListIncidents calls the Manager's ListIncidents handler.
func (s *Server) CallListIncidents(partition string, afterID uint64, limit uint32) (int, *dbus.Error) {
	l, e := s.listIncidents(partition, afterID, limit)
	return len(l), e
}
