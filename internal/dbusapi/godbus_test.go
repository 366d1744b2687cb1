package dbusapi_test

import (
	"errors"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/godbus/dbus/v5"
)

func busTest(t *testing.T) *bus {
	t.Helper()
	testutil.RequireBinaries(t, "dbus-daemon")
	testutil.RequireRoot(t)
	return startBus(t, false)
}

func dbusErrName(err error) string {
	var e dbus.Error
	if errors.As(err, &e) {
		return e.Name
	}
	var pe *dbus.Error
	if errors.As(err, &pe) {
		return pe.Name
	}
	return ""
}

// signals subscribes a godbus client to qmd's signals.
func signals(t *testing.T, c *dbus.Conn) chan *dbus.Signal {
	t.Helper()
	if err := c.AddMatchSignal(dbus.WithMatchSender(dbusapi.BusName)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 100)
	c.Signal(ch)
	return ch
}

func nextSignal(t *testing.T, ch chan *dbus.Signal, name string) *dbus.Signal {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.Name == name {
				return s
			}
		case <-deadline:
			t.Fatalf("no %s signal", name)
		}
	}
}

func noSignal(t *testing.T, ch chan *dbus.Signal, d time.Duration) {
	t.Helper()
	select {
	case s := <-ch:
		if s.Name != "org.freedesktop.DBus.NameAcquired" {
			t.Fatalf("unexpected signal %s %v", s.Name, s.Body)
		}
	case <-time.After(d):
	}
}

func keys(m map[string]dbus.Variant) string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return strings.Join(k, ",")
}

func TestPropertiesChangedAndStateChanged(t *testing.T) {
	b := busTest(t)
	fb := dbustest.NewFakeBackend(nil)
	srv := b.serve(t, fb, dbusapi.Options{})
	client := b.connect(t)
	ch := signals(t, client)
	obj := client.Object(dbusapi.BusName, partQM)

	// running -> restarting: state, PID, restarts and memory change.
	p, _ := fb.Partition("qm")
	p.ActiveState, p.SubState, p.MainPID, p.NRestarts = "activating", "restarting", 0, 1
	p.MemoryCurrent = 1 // emits false: never announced
	p.StateChangeTimestamp++
	fb.Set(p)
	srv.PartitionChanged(p, "init died (exit 137)")

	pc := nextSignal(t, ch, dbusapi.IfaceProperties+".PropertiesChanged")
	if pc.Path != partQM || pc.Body[0] != dbusapi.PartitionInterface {
		t.Fatalf("PropertiesChanged %v %v", pc.Path, pc.Body)
	}
	changed := pc.Body[1].(map[string]dbus.Variant)
	if got := keys(changed); got != "ActiveState,MainPID,NRestarts,StateChangeTimestamp,SubState" {
		t.Fatalf("changed properties = %s", got)
	}
	if changed["SubState"].Value() != "restarting" || changed["NRestarts"].Value() != uint32(1) {
		t.Fatalf("values: %v", changed)
	}
	sc := nextSignal(t, ch, dbusapi.PartitionInterface+".StateChanged")
	if sc.Path != partQM || sc.Body[0] != "activating" || sc.Body[1] != "restarting" || sc.Body[2] != "init died (exit 137)" {
		t.Fatalf("StateChanged %v", sc.Body)
	}
	// Properties read back the new state.
	v, err := obj.GetProperty(dbusapi.PartitionInterface + ".SubState")
	if err != nil || v.Value() != "restarting" {
		t.Fatalf("SubState = %v, %v", v, err)
	}

	// Only MemoryCurrent changes: nothing is emitted.
	p.MemoryCurrent = 12345
	fb.Set(p)
	srv.PartitionChanged(p, "tick")
	noSignal(t, ch, 200*time.Millisecond)

	// MemoryHigh changes, state does not: PropertiesChanged, no StateChanged.
	p.MemoryHigh = 1 << 30
	fb.Set(p)
	srv.PartitionChanged(p, "throttle")
	pc = nextSignal(t, ch, dbusapi.IfaceProperties+".PropertiesChanged")
	if got := keys(pc.Body[1].(map[string]dbus.Variant)); got != "MemoryHigh" {
		t.Fatalf("changed = %s", got)
	}
	// restarting -> running
	p.ActiveState, p.SubState, p.MainPID = "active", "running", 777
	fb.Set(p)
	srv.PartitionChanged(p, "restarted")
	nextSignal(t, ch, dbusapi.IfaceProperties+".PropertiesChanged")
	sc = nextSignal(t, ch, dbusapi.PartitionInterface+".StateChanged")
	if sc.Body[1] != "running" || sc.Body[2] != "restarted" {
		t.Fatalf("StateChanged %v", sc.Body)
	}

	// Status of the manager.
	fb.SetStatus("degraded")
	srv.ManagerChanged()
	pc = nextSignal(t, ch, dbusapi.IfaceProperties+".PropertiesChanged")
	if pc.Path != mgr || pc.Body[1].(map[string]dbus.Variant)["Status"].Value() != "degraded" {
		t.Fatalf("manager PropertiesChanged %v %v", pc.Path, pc.Body)
	}
}

func TestPropertiesInterface(t *testing.T) {
	b := busTest(t)
	fb := dbustest.NewFakeBackend(nil)
	b.serve(t, fb, dbusapi.Options{Version: "9.9"})
	client := b.connect(t)
	obj := client.Object(dbusapi.BusName, partQM)

	var all map[string]dbus.Variant
	if err := obj.Call(dbusapi.IfaceProperties+".GetAll", 0, dbusapi.PartitionInterface).Store(&all); err != nil {
		t.Fatal(err)
	}
	if len(all) != dbusapi.NumPartitionProps || all["MemoryMax"].Value() != uint64(2<<30) ||
		all["OOMScoreAdjust"].Value() != int32(500) || all["ControlGroup"].Value() != "/machine.slice/libpod-c0ffee.scope" {
		t.Fatalf("GetAll = %v", all)
	}
	err := obj.Call(dbusapi.IfaceProperties+".Set", 0, dbusapi.PartitionInterface, "MemoryHigh", dbus.MakeVariant(uint64(1))).Err
	if dbusErrName(err) != dbusapi.ErrorPropertyReadOnly {
		t.Fatalf("Set = %v (%s)", err, dbusErrName(err))
	}
	err = obj.Call(dbusapi.IfaceProperties+".Get", 0, dbusapi.PartitionInterface, "Nope").Err
	if dbusErrName(err) != dbusapi.ErrorUnknownProperty {
		t.Fatalf("Get(Nope) = %v", err)
	}
	err = obj.Call(dbusapi.IfaceProperties+".Get", 0, "org.example.Nope", "Name").Err
	if dbusErrName(err) != dbusapi.ErrorUnknownInterface {
		t.Fatalf("Get(other iface) = %v", err)
	}
	v, err := client.Object(dbusapi.BusName, mgr).GetProperty(dbusapi.ManagerInterface + ".Version")
	if err != nil || v.Value() != "9.9" {
		t.Fatalf("Version = %v %v", v, err)
	}
	// Error names over the bus.
	m := client.Object(dbusapi.BusName, mgr)
	if err := m.Call(dbusapi.ManagerInterface+".GetPartition", 0, "nope").Err; dbusErrName(err) != dbusapi.ErrorNoSuchPartition {
		t.Fatalf("GetPartition(nope) = %v", err)
	}
	broken := client.Object(dbusapi.BusName, "/org/containers/qmd1/partition/broken")
	if err := broken.Call(dbusapi.PartitionInterface+".Start", 0).Err; dbusErrName(err) != dbusapi.ErrorStartLimitHit {
		t.Fatalf("Start(broken) = %v", err)
	}
	if err := broken.Call(dbusapi.PartitionInterface+".Freeze", 0).Err; dbusErrName(err) != dbusapi.ErrorNotRunning {
		t.Fatalf("Freeze(broken) = %v", err)
	}
	if err := obj.Call(dbusapi.PartitionInterface+".SetMemoryHigh", 0, uint64(0), true).Err; dbusErrName(err) != dbusapi.ErrorInvalidArgs {
		t.Fatalf("SetMemoryHigh(0) = %v", err)
	}
	// Wrong argument types are rejected by the server, not a panic.
	if err := obj.Call(dbusapi.PartitionInterface+".SetMemoryHigh", 0, "lots").Err; err == nil {
		t.Fatal("SetMemoryHigh(string) accepted")
	}
	if err := broken.Call(dbusapi.PartitionInterface+".ResetFailed", 0).Err; err != nil {
		t.Fatal(err)
	}
}

func TestIncidentsSignalAndSurviveRestart(t *testing.T) {
	b := busTest(t)
	dbPath := filepath.Join(t.TempDir(), "incidents.db")

	// First qmd: a real store, a Recorder wired to the server.
	store := incident.Open(incident.Options{Path: dbPath})
	if d, why := store.Degraded(); d {
		t.Fatal(why)
	}
	fb := dbustest.NewFakeBackend(store)
	srv := b.serve(t, fb, dbusapi.Options{})
	rec := incident.NewRecorder(store, nil)
	rec.Subscribe(0, srv.IncidentAdded)

	client := b.connect(t)
	ch := signals(t, client)
	rec.Record(incident.Incident{Partition: "qm", Type: incident.OOMKill, Summary: "oom kill of bash",
		Details: map[string]string{"victim_pid": "1234"}})
	sig := nextSignal(t, ch, dbusapi.ManagerInterface+".IncidentNew")
	if sig.Path != mgr || sig.Body[0] != uint64(1) || sig.Body[1] != "qm" || sig.Body[2] != "oom-kill" || sig.Body[3] != "oom kill of bash" {
		t.Fatalf("IncidentNew %v", sig.Body)
	}
	pc := nextSignal(t, ch, dbusapi.IfaceProperties+".PropertiesChanged")
	if pc.Body[1].(map[string]dbus.Variant)["LastIncidentId"].Value() != uint64(1) {
		t.Fatalf("LastIncidentId change: %v", pc.Body)
	}
	rec.Record(incident.Incident{Partition: "other", Type: incident.Restart, Summary: "restarted"})
	nextSignal(t, ch, dbusapi.ManagerInterface+".IncidentNew")
	rec.Close()
	srv.Close()
	store.Close()

	// Second qmd on a new connection, same database.
	store2 := incident.Open(incident.Options{Path: dbPath})
	defer store2.Close()
	fb2 := dbustest.NewFakeBackend(store2)
	b.serve(t, fb2, dbusapi.Options{})
	m := client.Object(dbusapi.BusName, mgr)
	v, err := m.GetProperty(dbusapi.ManagerInterface + ".LastIncidentId")
	if err != nil || v.Value() != uint64(2) {
		t.Fatalf("LastIncidentId after restart = %v, %v", v, err)
	}
	var got []struct {
		ID, Time                 uint64
		Partition, Type, Summary string
		Details                  map[string]dbus.Variant
	}
	if err := m.Call(dbusapi.ManagerInterface+".ListIncidents", 0, "", uint64(0), uint32(0)).Store(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 1 || got[0].Type != "oom-kill" || got[0].Details["victim_pid"].Value() != "1234" ||
		got[1].Partition != "other" {
		t.Fatalf("ListIncidents = %+v", got)
	}
	if age := time.Since(time.UnixMicro(int64(got[0].Time))); age < 0 || age > time.Minute {
		t.Fatalf("incident time %d is off by %s", got[0].Time, age)
	}
	// Paging and partition filter over the bus.
	if err := m.Call(dbusapi.ManagerInterface+".ListIncidents", 0, "qm", uint64(0), uint32(10)).Store(&got); err != nil || len(got) != 1 {
		t.Fatalf("filter: %+v %v", got, err)
	}
	if err := m.Call(dbusapi.ManagerInterface+".ListIncidents", 0, "", uint64(1), uint32(1)).Store(&got); err != nil || len(got) != 1 || got[0].ID != 2 {
		t.Fatalf("page: %+v %v", got, err)
	}
}

func TestNameTakenFailsClearly(t *testing.T) {
	b := busTest(t)
	b.serve(t, dbustest.NewFakeBackend(nil), dbusapi.Options{})
	s := dbusapi.New(b.connect(t), dbustest.NewFakeBackend(nil), nil, dbusapi.Options{})
	defer s.Close()
	err := s.Export()
	if err == nil || !strings.Contains(err.Error(), "already owned") {
		t.Fatalf("second Export = %v", err)
	}
}

func TestSyncAfterReload(t *testing.T) {
	b := busTest(t)
	fb := dbustest.NewFakeBackend(nil)
	fb.OnReload = func(f *dbustest.FakeBackend) {
		f.Delete("broken")
		f.Set(dbusapi.PartitionInfo{Name: "qm-2", ActiveState: "inactive", SubState: "dead", MemoryMax: math.MaxUint64})
	}
	b.serve(t, fb, dbusapi.Options{})
	client := b.connect(t)
	if err := client.Object(dbusapi.BusName, mgr).Call(dbusapi.ManagerInterface+".Reload", 0).Err; err != nil {
		t.Fatal(err)
	}
	newPath := dbusapi.PartitionPath("qm-2")
	if newPath != "/org/containers/qmd1/partition/qm_2d2" {
		t.Fatalf("path %s", newPath)
	}
	v, err := client.Object(dbusapi.BusName, newPath).GetProperty(dbusapi.PartitionInterface + ".Name")
	if err != nil || v.Value() != "qm-2" {
		t.Fatalf("new partition: %v %v", v, err)
	}
	err = client.Object(dbusapi.BusName, "/org/containers/qmd1/partition/broken").Call(dbusapi.IfaceProperties+".Get", 0, dbusapi.PartitionInterface, "Name").Err
	if err == nil {
		t.Fatal("removed partition still answers")
	}
	var xml string
	if err := client.Object(dbusapi.BusName, mgr).Call(dbusapi.IfaceIntrospectable+".Introspect", 0).Store(&xml); err != nil || !strings.Contains(xml, `<node name="partition"/>`) {
		t.Fatalf("manager introspection: %v\n%s", err, xml)
	}
	if err := client.Object(dbusapi.BusName, dbusapi.PartitionPathBase).Call(dbusapi.IfaceIntrospectable+".Introspect", 0).Store(&xml); err != nil ||
		!strings.Contains(xml, `"qm_2d2"`) || strings.Contains(xml, "broken") {
		t.Fatalf("partition dir introspection: %v\n%s", err, xml)
	}
}

// timeGetProperty times b.N Get round trips of the qm partition's
// property prop from a new client (the benchmark timer runs only for
// them).
func timeGetProperty(b *testing.B, bs *bus, prop string) []time.Duration {
	b.Helper()
	obj := bs.connect(b).Object(dbusapi.BusName, partQM)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := obj.GetProperty(dbusapi.PartitionInterface + "." + prop); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	return lat
}

// reportLatency reports the p50 and p99 of the round trips lat.
func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(math.Ceil(p*float64(len(lat))))-1].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkGetProperty measures a D-Bus Get round trip (godbus client ->
// dbus-daemon -> qmd -> back) and reports p50/p99.
func BenchmarkGetProperty(b *testing.B) {
	testutil.RequireBinaries(b, "dbus-daemon")
	testutil.RequireRoot(b)
	bs := startBus(b, false)
	bs.serve(b, dbustest.NewFakeBackend(nil), dbusapi.Options{})
	lat := timeGetProperty(b, bs, "ActiveState")
	reportLatency(b, lat)
}

// BenchmarkGetPropertyDuringStateChanges: get-property round trips while
// the partition restarts over and over (PropertiesChanged + StateChanged
// storm). Reports client p50/p99 and the worst time a PartitionChanged call
// took: notifications must never wait for the bus.
func BenchmarkGetPropertyDuringStateChanges(b *testing.B) {
	testutil.RequireBinaries(b, "dbus-daemon")
	testutil.RequireRoot(b)
	bs := startBus(b, false)
	fb := dbustest.NewFakeBackend(nil)
	srv := bs.serve(b, fb, dbusapi.Options{})
	listener := bs.connect(b)
	if err := listener.AddMatchSignal(dbus.WithMatchSender(dbusapi.BusName)); err != nil {
		b.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 4096)
	listener.Signal(sigs)
	go func() {
		for range sigs {
		}
	}()
	stop := make(chan struct{})
	notifyDone := make(chan time.Duration)
	go func() {
		var worst time.Duration
		p, _ := fb.Partition("qm")
		states := [][2]string{{"activating", "restarting"}, {"active", "running"}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				notifyDone <- worst
				return
			default:
			}
			st := states[i%2]
			p.ActiveState, p.SubState, p.NRestarts = st[0], st[1], uint32(i)
			fb.Set(p)
			start := time.Now()
			srv.PartitionChanged(p, "restart")
			if d := time.Since(start); d > worst {
				worst = d
			}
			time.Sleep(time.Millisecond)
		}
	}()
	lat := timeGetProperty(b, bs, "SubState")
	close(stop)
	worst := <-notifyDone
	reportLatency(b, lat)
	b.ReportMetric(float64(worst.Microseconds())/1000, "notify-max-ms")
	b.ReportMetric(float64(srv.DroppedSignals()), "dropped-signals")
}
