package dbusapi

import (
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Names on the bus.
const (
	BusName            = "org.containers.qmd1"
	ManagerPath        = dbus.ObjectPath("/org/containers/qmd1")
	PartitionPathBase  = "/org/containers/qmd1/partition"
	ManagerInterface   = "org.containers.qmd1.Manager"
	PartitionInterface = "org.containers.qmd1.Partition"

	ifaceIntrospectable = "org.freedesktop.DBus.Introspectable"
	ifaceProperties     = "org.freedesktop.DBus.Properties"
	ifacePeer           = "org.freedesktop.DBus.Peer"
)

// D-Bus error names qmd replies with.
const (
	ErrorNoSuchPartition   = "org.containers.qmd1.Error.NoSuchPartition"
	ErrorNotRunning        = "org.containers.qmd1.Error.NotRunning"
	ErrorStartLimitHit     = "org.containers.qmd1.Error.StartLimitHit"
	ErrorPodmanUnavailable = "org.containers.qmd1.Error.PodmanUnavailable"
	ErrorInvalidArgs       = "org.freedesktop.DBus.Error.InvalidArgs"
	ErrorAccessDenied      = "org.freedesktop.DBus.Error.AccessDenied"
	ErrorFailed            = "org.freedesktop.DBus.Error.Failed"
	ErrorPropertyReadOnly  = "org.freedesktop.DBus.Error.PropertyReadOnly"
	ErrorUnknownProperty   = "org.freedesktop.DBus.Error.UnknownProperty"
	ErrorUnknownInterface  = "org.freedesktop.DBus.Error.UnknownInterface"
)

// maxNameLen bounds partition names (they become container names and
// object path elements).
const maxNameLen = 128

// ValidatePartitionName checks a partition name the way container names
// are checked: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 bytes.
func ValidatePartitionName(name string) error {
	if name == "" {
		return fmt.Errorf("partition name is empty")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("partition name is longer than %d bytes", maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		return fmt.Errorf("partition name %q: character %q at %d not allowed (want [a-zA-Z0-9][a-zA-Z0-9_.-]*)", name, c, i)
	}
	return nil
}

// PartitionPath is the object path of a partition: PartitionPathBase plus
// the name escaped with EscapePathElement.
func PartitionPath(name string) dbus.ObjectPath {
	return dbus.ObjectPath(PartitionPathBase + "/" + EscapePathElement(name))
}

// EscapePathElement escapes s into a valid object path element the way
// systemd (sd_bus_path_encode) does: [A-Za-z0-9] stay (a digit only when
// not first), every other byte becomes _xx (lower-case hex), "" becomes
// "_".
func EscapePathElement(s string) string {
	if s == "" {
		return "_"
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// UnescapePathElement reverses EscapePathElement.
func UnescapePathElement(e string) (string, error) {
	if e == "_" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(e); i++ {
		if e[i] != '_' {
			b.WriteByte(e[i])
			continue
		}
		if i+2 >= len(e) {
			return "", fmt.Errorf("bad escape in %q", e)
		}
		hi, lo := unhex(e[i+1]), unhex(e[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("bad escape in %q", e)
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
