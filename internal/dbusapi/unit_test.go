package dbusapi_test

import (
	"flag"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

var updateXML = flag.Bool("update-xml", false, "rewrite systemd/*.xml from the code")

// The shipped interface files must be exactly what the code exports.
func TestInterfaceXMLFilesMatchCode(t *testing.T) {
	for _, iface := range []string{dbusapi.ManagerInterface, dbusapi.PartitionInterface} {
		want, err := dbusapi.InterfaceXML(iface)
		if err != nil {
			t.Fatal(err)
		}
		path := testutil.RepoFile(t, "systemd/"+iface+".xml")
		if *updateXML {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./internal/dbusapi -run XML -update-xml)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from the exported interface; run go test ./internal/dbusapi -run XML -update-xml\n--- file\n%s\n--- code\n%s", path, got, want)
		}
	}
}

func TestEscapePathElement(t *testing.T) {
	cases := map[string]string{
		"qm":      "qm",
		"qm-1":    "qm_2d1",
		"a_b":     "a_5fb",
		"1qm":     "_31qm",
		"":        "_",
		"qm.test": "qm_2etest",
	}
	for in, want := range cases {
		if got := dbusapi.EscapePathElement(in); got != want {
			t.Errorf("EscapePathElement(%q) = %q, want %q", in, got, want)
		}
		back, err := dbusapi.UnescapePathElement(want)
		if err != nil || back != in {
			t.Errorf("UnescapePathElement(%q) = %q, %v", want, back, err)
		}
		if p := dbusapi.PartitionPath(in); !p.IsValid() {
			t.Errorf("PartitionPath(%q) = %q is not a valid object path", in, p)
		}
	}
	for _, bad := range []string{"_", "_x", "_4", "_zz"} {
		if bad == "_" {
			continue
		}
		if _, err := dbusapi.UnescapePathElement(bad); err == nil {
			t.Errorf("UnescapePathElement(%q) should fail", bad)
		}
	}
}

func FuzzEscapePathElement(f *testing.F) {
	for _, s := range []string{"qm", "qm-1", "", "_", "1", "\xff/."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := dbusapi.EscapePathElement(s)
		if !dbus.ObjectPath(dbusapi.PartitionPathBase + "/" + e).IsValid() {
			t.Fatalf("invalid path element %q for %q", e, s)
		}
		back, err := dbusapi.UnescapePathElement(e)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %q -> %q, %v", s, e, back, err)
		}
	})
}

func TestValidatePartitionName(t *testing.T) {
	for _, ok := range []string{"qm", "QM", "qm-1", "qm_2.x", "0"} {
		if err := dbusapi.ValidatePartitionName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-qm", ".qm", "qm/x", "q m", "qm\x00", strings.Repeat("a", 129), "ü"} {
		if err := dbusapi.ValidatePartitionName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// unitServer is a server without a bus: handlers are called directly with
// a fake caller lookup (sender name -> uid).
func unitServer(t testing.TB, b dbusapi.Backend, uids map[string]uint32) *dbusapi.Server {
	log := zap.NewNop()
	if _, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(t)
	}
	s := dbusapi.New(nil, b, log, dbusapi.Options{
		Version: "test",
		CallerUID: func(sender string) (uint32, error) {
			uid, ok := uids[sender]
			if !ok {
				return 0, dbus.NewError("org.freedesktop.DBus.Error.NameHasNoOwner", []any{"no such name " + sender})
			}
			return uid, nil
		},
		IsAdmin: func(uid uint32) (bool, error) { return uid == 0 || uid == 1001, nil },
	})
	t.Cleanup(func() { s.Close() })
	return s
}

// callPartition invokes a Partition method handler the way godbus does.
func callPartition(s *dbusapi.Server, sender, part, method string, args ...any) *dbus.Error {
	m := s.PartitionMethods(part)[method]
	switch fn := m.(type) {
	case func(dbus.Sender) *dbus.Error:
		return fn(dbus.Sender(sender))
	case func(dbus.Sender, uint64, bool) *dbus.Error:
		return fn(dbus.Sender(sender), args[0].(uint64), args[1].(bool))
	case func(dbus.Sender, int32, bool) *dbus.Error:
		return fn(dbus.Sender(sender), args[0].(int32), args[1].(bool))
	}
	panic("unknown method " + method)
}

// mutating lists every mutating Partition method with valid arguments.
var mutating = []struct {
	method string
	args   []any
}{
	{"Start", nil}, {"Stop", nil}, {"Restart", nil}, {"Freeze", nil}, {"Thaw", nil}, {"ResetFailed", nil},
	{"SetMemoryHigh", []any{uint64(1 << 30), true}},
	{"SetMemoryMax", []any{uint64(2 << 30), false}},
	{"SetOOMScoreAdjust", []any{int32(600), true}},
}

func errName(e *dbus.Error) string {
	if e == nil {
		return ""
	}
	return e.Name
}

func TestInCodeAuthorization(t *testing.T) {
	b := dbustest.NewFakeBackend(nil)
	s := unitServer(t, b, map[string]uint32{":1.root": 0, ":1.user": 1000, ":1.admin": 1001})
	for _, m := range mutating {
		e := callPartition(s, ":1.user", "qm", m.method, m.args...)
		if errName(e) != dbusapi.ErrorAccessDenied || !strings.Contains(e.Error(), "qmd-admin") || !strings.Contains(e.Error(), "uid 1000") {
			t.Errorf("%s as uid 1000: %v (%s)", m.method, e, errName(e))
		}
		if e := callPartition(s, ":1.gone", "qm", m.method, m.args...); errName(e) != dbusapi.ErrorAccessDenied {
			t.Errorf("%s from an unknown sender: %v", m.method, e)
		}
		if e := callPartition(s, "", "qm", m.method, m.args...); errName(e) != dbusapi.ErrorAccessDenied {
			t.Errorf("%s without sender: %v", m.method, e)
		}
	}
	if e := s.CallReload(":1.user"); errName(e) != dbusapi.ErrorAccessDenied {
		t.Errorf("Reload as uid 1000: %v", e)
	}
	if len(b.Calls()) != 0 {
		t.Fatalf("backend called despite denial: %v", b.Calls())
	}
	for _, sender := range []string{":1.root", ":1.admin"} {
		for _, m := range mutating {
			if e := callPartition(s, sender, "qm", m.method, m.args...); e != nil {
				t.Errorf("%s as %s: %v", m.method, sender, e)
			}
		}
		if e := s.CallReload(dbus.Sender(sender)); e != nil {
			t.Errorf("Reload as %s: %v", sender, e)
		}
	}
	if n := len(b.Calls()); n != 2*(len(mutating)+1) {
		t.Fatalf("backend calls: %v", b.Calls())
	}
}

// GroupAdmin against the real user and group databases: nobody's primary
// group is nogroup on Debian.
func TestGroupAdminRealDatabase(t *testing.T) {
	if ok, err := dbusapi.GroupAdmin("nogroup")(0); !ok || err != nil {
		t.Fatalf("root: %v %v", ok, err)
	}
	ok, err := dbusapi.GroupAdmin("nogroup")(65534)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("uid 65534 is not in group nogroup on this host")
	}
	if ok, err := dbusapi.GroupAdmin("qmd-test-no-such-group")(65534); ok || err != nil {
		t.Fatalf("missing group: %v %v", ok, err)
	}
	if ok, err := dbusapi.GroupAdmin("nogroup")(4000000000); ok || err != nil {
		t.Fatalf("unknown uid: %v %v", ok, err)
	}
}

func TestValidationAndErrorMapping(t *testing.T) {
	b := dbustest.NewFakeBackend(nil)
	s := unitServer(t, b, map[string]uint32{"r": 0})
	cases := []struct {
		part, method string
		args         []any
		wantName     string
		wantMsg      string
	}{
		{"qm", "SetMemoryHigh", []any{uint64(0), true}, dbusapi.ErrorInvalidArgs, "memory.high must be > 0"},
		{"qm", "SetMemoryHigh", []any{uint64(3 << 30), true}, dbusapi.ErrorInvalidArgs, "above memory.max"},
		// infinity (no throttling) is always allowed, also below a finite memory.max
		{"qm", "SetMemoryHigh", []any{uint64(math.MaxUint64), true}, "", ""},
		{"qm", "SetMemoryHigh", []any{uint64(2 << 30), true}, "", ""},
		{"broken", "SetMemoryHigh", []any{uint64(math.MaxUint64), true}, "", ""},
		{"qm", "SetMemoryMax", []any{uint64(0), true}, dbusapi.ErrorInvalidArgs, "memory.max must be > 0"},
		{"qm", "SetMemoryMax", []any{uint64(math.MaxUint64), true}, "", ""},
		{"qm", "SetOOMScoreAdjust", []any{int32(1001), true}, dbusapi.ErrorInvalidArgs, "outside -1000..1000"},
		{"qm", "SetOOMScoreAdjust", []any{int32(-1001), true}, dbusapi.ErrorInvalidArgs, "outside -1000..1000"},
		{"qm", "SetOOMScoreAdjust", []any{int32(-1), true}, dbusapi.ErrorInvalidArgs, "negative"},
		{"qm", "SetOOMScoreAdjust", []any{int32(1000), false}, "", ""},
		{"qm", "SetOOMScoreAdjust", []any{int32(0), false}, "", ""},
		{"broken", "Start", nil, dbusapi.ErrorStartLimitHit, "start limit hit"},
		{"broken", "Stop", nil, dbusapi.ErrorNotRunning, "broken"},
		{"gone", "Start", nil, dbusapi.ErrorNoSuchPartition, "gone"},
		{"gone", "SetMemoryHigh", []any{uint64(1), true}, dbusapi.ErrorNoSuchPartition, "gone"},
		{"bad/name", "Start", nil, dbusapi.ErrorInvalidArgs, "not allowed"},
	}
	for _, c := range cases {
		e := callPartition(s, "r", c.part, c.method, c.args...)
		if errName(e) != c.wantName || e != nil && !strings.Contains(e.Error(), c.wantMsg) {
			t.Errorf("%s.%s%v = %v (%s), want %s containing %q", c.part, c.method, c.args, e, errName(e), c.wantName, c.wantMsg)
		}
	}
	if _, e := s.CallGetPartition("gone"); errName(e) != dbusapi.ErrorNoSuchPartition || !strings.Contains(e.Error(), "gone") {
		t.Errorf("GetPartition(gone) = %v", e)
	}
	if _, e := s.CallGetPartition(""); errName(e) != dbusapi.ErrorInvalidArgs {
		t.Errorf("GetPartition(\"\") = %v", e)
	}
	if p, e := s.CallGetPartition("qm"); e != nil || p != "/org/containers/qmd1/partition/qm" {
		t.Errorf("GetPartition(qm) = %v %v", p, e)
	}
	if _, e := s.CallListIncidents("a b", 0, 0); errName(e) != dbusapi.ErrorInvalidArgs {
		t.Errorf("ListIncidents(bad name) = %v", e)
	}
}

func TestErrorMappingTable(t *testing.T) {
	cases := map[error]string{
		apierr.ErrNoSuchPartition:                        dbusapi.ErrorNoSuchPartition,
		apierr.ErrNotRunning:                             dbusapi.ErrorNotRunning,
		apierr.ErrStartLimitHit:                          dbusapi.ErrorStartLimitHit,
		apierr.ErrPodmanUnavailable:                      dbusapi.ErrorPodmanUnavailable,
		apierr.InvalidArgs("x %d", 1):                    dbusapi.ErrorInvalidArgs,
		apierr.ErrAccessDenied:                           dbusapi.ErrorAccessDenied,
		os.ErrPermission:                                 dbusapi.ErrorFailed,
		dbusapi.PartitionErr(apierr.ErrNotRunning, "qm"): dbusapi.ErrorNotRunning,
	}
	for err, want := range cases {
		if got := dbusapi.DBusError(err); got.Name != want || got.Error() != err.Error() {
			t.Errorf("dbusError(%v) = %s %q, want %s", err, got.Name, got.Error(), want)
		}
	}
	if dbusapi.DBusError(nil) != nil {
		t.Fatal("nil error mapped")
	}
}

var knownErrors = map[string]bool{
	"": true, dbusapi.ErrorInvalidArgs: true, dbusapi.ErrorNoSuchPartition: true, dbusapi.ErrorNotRunning: true,
	dbusapi.ErrorStartLimitHit: true, dbusapi.ErrorAccessDenied: true,
}

// Fuzzed method arguments give D-Bus errors (or success), never panics.
func FuzzMethodArgs(f *testing.F) {
	f.Add("qm", uint8(0), uint64(1<<30), int32(500), true, "r")
	f.Add("", uint8(6), uint64(0), int32(-1), false, "u")
	f.Add("broken", uint8(8), uint64(math.MaxUint64), int32(math.MinInt32), true, "")
	f.Add("x/../y", uint8(9), uint64(1), int32(1000), false, "r")
	b := dbustest.NewFakeBackend(nil)
	s := unitServer(f, b, map[string]uint32{"r": 0, "u": 1000})
	methods := []string{"Start", "Stop", "Restart", "Freeze", "Thaw", "ResetFailed", "SetMemoryHigh", "SetMemoryMax", "SetOOMScoreAdjust"}
	f.Fuzz(func(t *testing.T, part string, which uint8, bytes uint64, value int32, runtime bool, sender string) {
		var e *dbus.Error
		switch i := int(which) % (len(methods) + 3); {
		case i < 6:
			e = callPartition(s, sender, part, methods[i])
		case i < 8:
			e = callPartition(s, sender, part, methods[i], bytes, runtime)
		case i == 8:
			e = callPartition(s, sender, part, methods[i], value, runtime)
		case i == 9:
			_, e = s.CallGetPartition(part)
		case i == 10:
			_, e = s.CallListIncidents(part, bytes, uint32(value))
		default:
			e = s.CallReload(dbus.Sender(sender))
		}
		if !knownErrors[errName(e)] {
			t.Fatalf("unexpected error %s: %v", errName(e), e)
		}
		if e != nil && e.Error() == "" {
			t.Fatal("error without message")
		}
	})
}
