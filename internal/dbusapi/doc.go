// Package dbusapi is qmd's D-Bus server on the system bus (bus name
// org.containers.qmd1): the Manager object at /org/containers/qmd1, one
// Partition object per partition at /org/containers/qmd1/partition/<name>
// (name escaped with EscapePathElement), their read-only properties and
// their signals. It is thin: it validates arguments, authorizes callers
// (bus policy systemd/org.containers.qmd1.conf, and again in code: uid 0 or
// a member of the admin group), delegates to a Backend (the supervisor) and
// maps errors (apierr) to D-Bus error names.
//
// Wiring, in order:
//
//	conn, err := dbus.ConnectSystemBus()            // honours DBUS_SYSTEM_BUS_ADDRESS
//	srv := dbusapi.New(conn, backend, log, dbusapi.Options{Version: version})
//	sub := recorder.Subscribe(0, srv.IncidentAdded) // incident.Recorder -> IncidentNew
//	err = srv.Export()                              // objects first, then the bus name
//	// READY=1
//	// on every partition state change:  srv.PartitionChanged(info, reason)
//	// on a health (Status) change:      srv.ManagerChanged()
//	// after a Reload changed partitions: srv.Sync() (Reload via D-Bus does it itself)
//	// shutdown: sub.Cancel(); srv.Close(); conn.Close()
//
// The interface descriptions shipped in systemd/*.xml are generated from
// the same tables as the introspection data (InterfaceXML); a test keeps
// them identical (go test ./internal/dbusapi -run XML -update-xml rewrites
// them).
package dbusapi
