package dbusapi_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
	"github.com/containers/qmd/internal/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	partQM = "/org/containers/qmd1/partition/qm"
	mgr    = "/org/containers/qmd1"
)

// busctl (systemd's client) as the operator uses it, against the real
// daemon with the project's policy.
func TestBusctlClient(t *testing.T) {
	testutil.RequireBinaries(t, "dbus-daemon", "busctl")
	testutil.RequireRoot(t)
	b := startBus(t, false)
	fb := dbustest.NewFakeBackend(nil)
	b.serve(t, fb, dbusapi.Options{})

	// introspect: methods, signatures, properties with values and flags.
	out, err := b.busctl(t, -1, "introspect", dbusapi.BusName, partQM)
	if err != nil {
		t.Fatalf("introspect: %v\n%s", err, out)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			rows[f[0]] = f[1:]
		}
	}
	want := map[string]string{
		".SetMemoryHigh":        "method tb - -",
		".SetOOMScoreAdjust":    "method ib - -",
		".Start":                "method - - -",
		".StateChanged":         "signal sss - -",
		".Name":                 `property s "qm" const`,
		".ActiveState":          `property s "active" emits-change`,
		".SubState":             `property s "running" emits-change`,
		".MemoryCurrent":        "property t 104857600 -",
		".MemoryHigh":           "property t 18446744073709551615 emits-change",
		".OOMScoreAdjust":       "property i 500 emits-change",
		".MainPID":              "property u 4242 emits-change",
		".StateChangeTimestamp": "property t 1700000000000000 emits-change",
	}
	for name, w := range want {
		if got := strings.Join(rows[name], " "); got != w {
			t.Errorf("introspect row %s = %q, want %q", name, got, w)
		}
	}
	if _, ok := rows[dbusapi.PartitionInterface]; !ok {
		t.Errorf("interface %s missing:\n%s", dbusapi.PartitionInterface, out)
	}

	// The XML busctl receives carries the named arguments and is exactly
	// the shipped interface file's interface element.
	xml, err := b.busctl(t, -1, "introspect", "--xml-interface", dbusapi.BusName, partQM)
	if err != nil {
		t.Fatalf("introspect --xml-interface: %v\n%s", err, xml)
	}
	for _, iface := range []struct{ path, name string }{{partQM, dbusapi.PartitionInterface}, {mgr, dbusapi.ManagerInterface}} {
		xml, _ := b.busctl(t, -1, "introspect", "--xml-interface", dbusapi.BusName, iface.path)
		file, _ := dbusapi.InterfaceXML(iface.name)
		if frag := interfaceElement(t, file); !strings.Contains(xml, frag) {
			t.Errorf("introspection of %s does not contain the shipped %s.xml interface:\n%s", iface.path, iface.name, xml)
		}
	}
	if !strings.Contains(xml, `<arg name="bytes" type="t" direction="in"/>`) {
		t.Errorf("named args missing:\n%s", xml)
	}
	tree, err := b.busctl(t, -1, "tree", dbusapi.BusName)
	if err != nil || !strings.Contains(tree, partQM) || !strings.Contains(tree, "/org/containers/qmd1/partition/broken") {
		t.Errorf("tree: %v\n%s", err, tree)
	}

	// get-property
	for prop, w := range map[string]string{
		"ActiveState": `s "active"`, "MemoryMax": "t 2147483648", "Name": `s "qm"`, "ContainerId": `s "c0ffee"`,
	} {
		out, err := b.busctl(t, -1, "get-property", dbusapi.BusName, partQM, dbusapi.PartitionInterface, prop)
		if err != nil || strings.TrimSpace(out) != w {
			t.Errorf("get-property %s = %q, %v; want %q", prop, out, err, w)
		}
	}
	out, _ = b.busctl(t, -1, "get-property", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "Version", "Status")
	if strings.TrimSpace(out) != "s \"1.2.3-test\"\ns \"up\"" {
		t.Errorf("manager properties: %q", out)
	}

	// call
	out, err = b.busctl(t, -1, "call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "ListPartitions")
	if err != nil {
		t.Fatalf("ListPartitions: %v\n%s", err, out)
	}
	wantList := `a(ssso) 2 "broken" "failed" "dead" "/org/containers/qmd1/partition/broken" "qm" "active" "running" "/org/containers/qmd1/partition/qm"`
	if strings.TrimSpace(out) != wantList {
		t.Errorf("ListPartitions = %q\nwant %q", out, wantList)
	}
	out, err = b.busctl(t, -1, "call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "GetPartition", "s", "qm")
	if err != nil || strings.TrimSpace(out) != `o "`+partQM+`"` {
		t.Errorf("GetPartition = %q, %v", out, err)
	}

	// Errors as busctl prints them (message) with the right names; the
	// names are checked with godbus in the other tests.
	errCases := []struct {
		args []string
		want string
	}{
		{[]string{"call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "GetPartition", "s", "nope"}, "no such partition"},
		{[]string{"call", dbusapi.BusName, "/org/containers/qmd1/partition/broken", dbusapi.PartitionInterface, "Start"}, "start limit hit"},
		{[]string{"call", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "SetMemoryHigh", "tb", "0", "true"}, "memory.high must be > 0"},
		{[]string{"call", "--", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "SetOOMScoreAdjust", "ib", "-500", "true"}, "negative"},
		{[]string{"set-property", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "MemoryHigh", "t", "1"}, "read-only"},
	}
	for _, c := range errCases {
		out, err := b.busctl(t, -1, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("busctl %v = %q, %v; want an error containing %q", c.args, out, err, c.want)
		}
	}

	// A mutating call as root goes through.
	out, err = b.busctl(t, -1, "call", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "SetMemoryHigh", "tb", "1073741824", "true")
	if err != nil {
		t.Fatalf("SetMemoryHigh as root: %v\n%s", err, out)
	}
	if c := fb.Calls(); len(c) != 1 || c[0] != "SetMemoryHigh 1073741824 true qm" {
		t.Fatalf("backend calls: %v", c)
	}
}

func interfaceElement(t *testing.T, file string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s) <interface .*</interface>\n`).FindString(file)
	if m == "" {
		t.Fatalf("no interface element in %q", file)
	}
	return m
}

// mutatingCalls are busctl argument lists for every mutating method.
var mutatingCalls = [][]string{
	{partQM, dbusapi.PartitionInterface, "Start"},
	{partQM, dbusapi.PartitionInterface, "Stop"},
	{partQM, dbusapi.PartitionInterface, "Restart"},
	{partQM, dbusapi.PartitionInterface, "Freeze"},
	{partQM, dbusapi.PartitionInterface, "Thaw"},
	{partQM, dbusapi.PartitionInterface, "ResetFailed"},
	{partQM, dbusapi.PartitionInterface, "SetMemoryHigh", "tb", "1073741824", "true"},
	{partQM, dbusapi.PartitionInterface, "SetMemoryMax", "tb", "2147483648", "false"},
	{partQM, dbusapi.PartitionInterface, "SetOOMScoreAdjust", "ib", "600", "true"},
	{mgr, dbusapi.ManagerInterface, "Reload"},
}

// A caller with another uid: the bus policy denies every mutating method
// and allows the reads.
func TestPolicyOtherUID(t *testing.T) {
	testutil.RequireBinaries(t, "dbus-daemon", "busctl", "setpriv")
	testutil.RequireRoot(t)
	b := startBus(t, false)
	fb := dbustest.NewFakeBackend(nil)
	b.serve(t, fb, dbusapi.Options{})
	const nobody = 65534

	for _, c := range mutatingCalls {
		out, err := b.busctl(t, nobody, append([]string{"call", dbusapi.BusName}, c...)...)
		if err == nil || !strings.Contains(out, "Access denied") && !strings.Contains(out, "AccessDenied") {
			t.Errorf("uid %d %v: %v\n%s", nobody, c, err, out)
		}
	}
	if c := fb.Calls(); len(c) != 0 {
		t.Fatalf("backend reached: %v", c)
	}
	out, err := b.busctl(t, nobody, "set-property", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "MemoryHigh", "t", "1")
	if err == nil {
		t.Errorf("set-property allowed: %s", out)
	}

	reads := [][]string{
		{"introspect", dbusapi.BusName, partQM},
		{"introspect", dbusapi.BusName, mgr},
		{"get-property", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "ActiveState"},
		{"get-property", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "LastIncidentId"},
		{"call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "ListPartitions"},
		{"call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "GetPartition", "s", "qm"},
		{"call", dbusapi.BusName, mgr, dbusapi.ManagerInterface, "ListIncidents", "stu", "", "0", "0"},
		{"call", dbusapi.BusName, partQM, "org.freedesktop.DBus.Peer", "Ping"},
	}
	for _, r := range reads {
		if out, err := b.busctl(t, nobody, r...); err != nil {
			t.Errorf("uid %d %v denied: %v\n%s", nobody, r, err, out)
		}
	}
	// A non-root connection may not own the name.
	if out, err := b.busctl(t, -1, "status"); err != nil {
		t.Logf("busctl status: %v %s", err, out)
	}
}

// Defense in depth: on a bus whose policy lets everything through, qmd's
// own check still denies a non-admin uid.
func TestInCodeCheckBehindPermissiveBus(t *testing.T) {
	testutil.RequireBinaries(t, "dbus-daemon", "busctl", "setpriv")
	testutil.RequireRoot(t)
	b := startBus(t, true)
	fb := dbustest.NewFakeBackend(nil)
	core, logs := observer.New(zap.WarnLevel)
	b.serveLog(t, fb, dbusapi.Options{AdminGroup: "qmd-test-no-such-group"}, zap.New(core))
	for _, c := range mutatingCalls {
		// busctl prints only strerror for AccessDenied; the daemon log
		// below shows the denial came from qmd, not from the bus.
		out, err := b.busctl(t, 65534, append([]string{"call", dbusapi.BusName}, c...)...)
		if err == nil || !strings.Contains(out, "Access denied") {
			t.Errorf("%v: %v\n%s", c, err, out)
		}
	}
	denied := logs.FilterMessage("dbus call denied").All()
	if len(denied) != len(mutatingCalls) {
		t.Fatalf("qmd denied %d calls, want %d: %v", len(denied), len(mutatingCalls), logs.All())
	}
	for _, e := range denied {
		msg := e.ContextMap()["error"]
		if s, _ := msg.(string); !strings.Contains(s, "needs root or membership in group qmd-test-no-such-group (caller uid 65534)") {
			t.Errorf("denial message: %v", msg)
		}
	}
	if c := fb.Calls(); len(c) != 0 {
		t.Fatalf("backend reached: %v", c)
	}
	// A member of the admin group (nobody's primary group is nogroup) is let in.
	b2 := startBus(t, true)
	fb2 := dbustest.NewFakeBackend(nil)
	b2.serve(t, fb2, dbusapi.Options{AdminGroup: "nogroup"})
	if ok, _ := dbusapi.GroupAdmin("nogroup")(65534); !ok {
		t.Skip("uid 65534 not in nogroup here")
	}
	out, err := b2.busctl(t, 65534, "call", dbusapi.BusName, partQM, dbusapi.PartitionInterface, "Freeze")
	if err != nil {
		t.Fatalf("admin-group member denied: %v\n%s", err, out)
	}
	if c := fb2.Calls(); len(c) != 1 || c[0] != "Freeze qm" {
		t.Fatalf("calls: %v", c)
	}
}
