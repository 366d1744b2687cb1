package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/testutil"
)

// TestProtectConfig: the protector watches as sensitively as the most
// sensitive partition, host memory when any partition asks, and gets the
// [[protect]] entries with their sizes resolved.
func TestProtectConfig(t *testing.T) {
	a, b := config.DefaultPartition("a"), config.DefaultPartition("b")
	a.Pressure.HostMemory, b.Pressure.HostMemory = false, true
	a.Pressure.Window = config.Duration{Duration: 2 * time.Second}
	a.Pressure.Threshold = config.Duration{Duration: 100 * time.Millisecond}
	b.Pressure.Window = config.Duration{Duration: time.Second}
	b.Pressure.CPUThreshold = config.Duration{Duration: 50 * time.Millisecond}
	b.Pressure.Threshold = config.Duration{Duration: 300 * time.Millisecond}
	a.IO.Threshold = config.Duration{Duration: 40 * time.Millisecond} // [partition.io] threshold
	cfg := config.Default()
	cfg.Partitions = []config.Partition{a, b}
	mn, _ := config.ParseSize("256M")
	low, _ := config.ParseSize("10%")
	cfg.Protect = []config.Protect{{Unit: "brakes.service", OOMScoreAdj: -900, WatchPressure: true, MemoryMin: mn, MemoryLow: low}}
	pc := ProtectConfig(cfg, 8<<30)
	if pc.Window != time.Second || pc.MemoryThreshold != 100*time.Millisecond || pc.CPUThreshold != 50*time.Millisecond ||
		pc.IOThreshold != 40*time.Millisecond || !pc.HostMemory {
		t.Errorf("triggers %+v", pc)
	}
	if err := pc.Validate(); err != nil {
		t.Errorf("mapped config invalid: %v", err)
	}
	if len(pc.Entries) != 1 {
		t.Fatalf("entries %+v", pc.Entries)
	}
	e := pc.Entries[0]
	if e.Unit != "brakes.service" || e.OOMScoreAdj != -900 || !e.WatchPressure || !e.MemoryMinSet || e.MemoryMin != 256<<20 ||
		!e.MemoryLowSet || e.MemoryLow != (8<<30)/10 {
		t.Errorf("entry %+v", e)
	}
	// No partition: the defaults' triggers; a threshold above the window
	// is clamped.
	cfg.Partitions = nil
	pc = ProtectConfig(cfg, 8<<30)
	if err := pc.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}

// TestConnectSystemdStaysOpen: the protector's systemd connection stays
// usable after connectSystemd returns (a dial timeout given to go-systemd
// closed it at once: every unit stayed unresolved, "connection closed by
// user", in the e2e VM). A private dbus-daemon stands in for the system
// bus; its own org.freedesktop.DBus answers the call.
func TestConnectSystemdStaysOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a dbus-daemon")
	}
	bus := testutil.StartBus(t, testutil.BusOptions{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Addr)
	conn, err := connectSystemd()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond)
	if !conn.Connected() {
		t.Fatal("the systemd connection was closed after connectSystemd returned")
	}
	// A unit lookup goes out on the connection: the bus answers it (no
	// systemd there: an error naming the missing service, not a closed
	// connection).
	_, err = conn.GetUnitTypePropertyContext(context.Background(), "x.service", "Service", "ControlGroup")
	if err == nil || strings.Contains(err.Error(), "closed") {
		t.Fatalf("lookup on the connection: %v", err)
	}
}
