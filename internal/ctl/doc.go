// Package ctl implements qmd's client commands, which talk to a running
// qmd over its D-Bus API (bus name org.containers.qmd1 on the system bus)
// in the style of systemctl and bluechictl:
//
//	qmd status [PARTITION]            qmd's state, or one partition's state and last incidents
//	qmd list                          one line per partition
//	qmd incidents [PARTITION] [--after ID] [--limit N] [--follow]
//	qmd start|stop|restart|freeze|thaw|reset-failed PARTITION
//	qmd set-memory-high|set-memory-max PARTITION SIZE [--runtime]
//	qmd set-oom-score-adjust PARTITION VALUE [--runtime]
//	qmd show PARTITION [TOPIC]        read from the host (inspect.go): resources, devices, namespaces, sockets
//	qmd exec PARTITION CMD [ARG...]   run CMD in the partition through the Podman API (SetPodman)
//
// Output is for humans by default; the read commands (status, list,
// incidents) take --json for scripts: stable lower_snake_case keys, memory
// limits as numbers with null for infinity, times as RFC 3339 strings plus
// microseconds. `incidents --follow --json` prints one JSON object per
// line. Mutating commands print nothing on success.
//
// The bus is the system bus (DBUS_SYSTEM_BUS_ADDRESS, else
// /run/dbus/system_bus_socket) unless --address ADDR names another.
//
// Exit codes (scripts may rely on them):
//
//	0  success
//	1  failure (anything not listed below)
//	2  usage error; or qmd rejected the arguments (InvalidArgs)
//	3  `status PARTITION` of a partition that is not active (like
//	   `systemctl status`); or a method that needs a running partition
//	   (org.containers.qmd1.Error.NotRunning)
//	4  no such partition (org.containers.qmd1.Error.NoSuchPartition)
//	5  access denied (org.freedesktop.DBus.Error.AccessDenied): mutating
//	   commands need root or membership in group qmd-admin
//	6  qmd is not running (no owner of org.containers.qmd1), or the
//	   system bus cannot be reached
//	7  start limit hit (org.containers.qmd1.Error.StartLimitHit): run
//	   `qmd reset-failed PARTITION`
//
// Wiring in main:
//
//	if slices.Contains(ctl.Commands(), os.Args[1]) {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		code := ctl.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
//		stop()
//		os.Exit(code)
//	}
//
// ctl.Usage() is the help text (commands and exit codes).
package ctl
