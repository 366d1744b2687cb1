package dbusapi

import (
	"fmt"
	"sort"
	"strings"
)

// The interfaces, as data: the introspection XML, the shipped interface
// files (systemd/*.xml) and the property tables all come from here.

type argDef struct{ name, typ, dir string }

type memberDef struct {
	name string
	args []argDef
}

// Values of org.freedesktop.DBus.Property.EmitsChangedSignal.
const (
	emitsConst = "const"
	emitsTrue  = "true"
	emitsFalse = "false"
)

type propDef struct{ name, typ, emits string }

type ifaceDef struct {
	name    string
	methods []memberDef
	signals []memberDef
	props   []propDef
}

func in(name, typ string) argDef  { return argDef{name, typ, "in"} }
func out(name, typ string) argDef { return argDef{name, typ, "out"} }
func sig(name, typ string) argDef { return argDef{name, typ, ""} }

var managerIface = ifaceDef{
	name: ManagerInterface,
	methods: []memberDef{
		{"ListPartitions", []argDef{out("partitions", "a(ssso)")}},
		{"GetPartition", []argDef{in("name", "s"), out("partition", "o")}},
		{"ListIncidents", []argDef{in("partition", "s"), in("after_id", "t"), in("limit", "u"), out("incidents", "a(ttsssa{sv})")}},
		{"Reload", nil},
	},
	signals: []memberDef{
		{"IncidentNew", []argDef{sig("id", "t"), sig("partition", "s"), sig("type", "s"), sig("summary", "s")}},
	},
	props: []propDef{
		{"Version", "s", emitsConst},
		{"Status", "s", emitsTrue},
		{"LastIncidentId", "t", emitsTrue},
		{"IncidentsDropped", "t", emitsFalse},
		{"IncidentsCoalesced", "t", emitsFalse},
		{"IncidentsPending", "u", emitsFalse},
		{"Protected", "a(sss)", emitsFalse},
	},
}

var partitionIface = ifaceDef{
	name: PartitionInterface,
	methods: []memberDef{
		{"Start", nil},
		{"Stop", nil},
		{"Restart", nil},
		{"Freeze", nil},
		{"Thaw", nil},
		{"ResetFailed", nil},
		{"SetMemoryHigh", []argDef{in("bytes", "t"), in("runtime", "b")}},
		{"SetMemoryMax", []argDef{in("bytes", "t"), in("runtime", "b")}},
		{"SetOOMScoreAdjust", []argDef{in("value", "i"), in("runtime", "b")}},
	},
	signals: []memberDef{
		{"StateChanged", []argDef{sig("active", "s"), sig("sub", "s"), sig("reason", "s")}},
	},
	props: []propDef{
		{"Name", "s", emitsConst},
		{"ContainerId", "s", emitsTrue},
		{"ActiveState", "s", emitsTrue},
		{"SubState", "s", emitsTrue},
		{"Result", "s", emitsTrue},
		{"MainPID", "u", emitsTrue},
		{"ControlGroup", "s", emitsTrue},
		{"MemoryCurrent", "t", emitsFalse},
		{"MemoryHigh", "t", emitsTrue},
		{"MemoryMax", "t", emitsTrue},
		{"OOMScoreAdjust", "i", emitsTrue},
		{"NRestarts", "u", emitsTrue},
		{"NOOMKills", "u", emitsTrue},
		{"StateChangeTimestamp", "t", emitsTrue},
		{"Conditions", "as", emitsTrue},
		{"PodmanLatencyUSec", "t", emitsFalse},
	},
}

// The standard interfaces every exported object answers.
var standardIfaces = []ifaceDef{
	{name: ifacePeer, methods: []memberDef{
		{"Ping", nil},
		{"GetMachineId", []argDef{out("machine_uuid", "s")}},
	}},
	{name: ifaceIntrospectable, methods: []memberDef{
		{"Introspect", []argDef{out("xml_data", "s")}},
	}},
	{name: ifaceProperties,
		methods: []memberDef{
			{"Get", []argDef{in("interface_name", "s"), in("property_name", "s"), out("value", "v")}},
			{"GetAll", []argDef{in("interface_name", "s"), out("props", "a{sv}")}},
			{"Set", []argDef{in("interface_name", "s"), in("property_name", "s"), in("value", "v")}},
		},
		signals: []memberDef{
			{"PropertiesChanged", []argDef{sig("interface_name", "s"), sig("changed_properties", "a{sv}"), sig("invalidated_properties", "as")}},
		},
	},
}

const xmlHeader = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
`

func (d ifaceDef) writeXML(b *strings.Builder) {
	fmt.Fprintf(b, " <interface name=%q>\n", d.name)
	for _, m := range d.methods {
		writeMember(b, "method", m)
	}
	for _, s := range d.signals {
		writeMember(b, "signal", s)
	}
	for _, p := range d.props {
		fmt.Fprintf(b, "  <property name=%q type=%q access=\"read\">\n", p.name, p.typ)
		fmt.Fprintf(b, "   <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=%q/>\n", p.emits)
		b.WriteString("  </property>\n")
	}
	b.WriteString(" </interface>\n")
}

func writeMember(b *strings.Builder, kind string, m memberDef) {
	if len(m.args) == 0 {
		fmt.Fprintf(b, "  <%s name=%q/>\n", kind, m.name)
		return
	}
	fmt.Fprintf(b, "  <%s name=%q>\n", kind, m.name)
	for _, a := range m.args {
		if a.dir == "" {
			fmt.Fprintf(b, "   <arg name=%q type=%q/>\n", a.name, a.typ)
		} else {
			fmt.Fprintf(b, "   <arg name=%q type=%q direction=%q/>\n", a.name, a.typ, a.dir)
		}
	}
	fmt.Fprintf(b, "  </%s>\n", kind)
}

// InterfaceXML is the interface description shipped as
// systemd/<interface>.xml and installed under /usr/share/dbus-1/interfaces.
// iface is ManagerInterface or PartitionInterface.
func InterfaceXML(iface string) (string, error) {
	var d ifaceDef
	switch iface {
	case ManagerInterface:
		d = managerIface
	case PartitionInterface:
		d = partitionIface
	default:
		return "", fmt.Errorf("unknown interface %s", iface)
	}
	var b strings.Builder
	b.WriteString(xmlHeader)
	b.WriteString("<node>\n")
	d.writeXML(&b)
	b.WriteString("</node>\n")
	return b.String(), nil
}

// introspectXML is what Introspect returns for an object implementing d
// with the given child node names.
func introspectXML(d ifaceDef, children []string) string {
	var b strings.Builder
	b.WriteString(xmlHeader)
	b.WriteString("<node>\n")
	for _, s := range standardIfaces {
		s.writeXML(&b)
	}
	d.writeXML(&b)
	sort.Strings(children)
	for _, c := range children {
		fmt.Fprintf(&b, " <node name=%q/>\n", c)
	}
	b.WriteString("</node>\n")
	return b.String()
}
