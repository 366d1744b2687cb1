package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/containers/qmd/test/harness"
)

const (
	busName   = "org.containers.qmd1"
	partIface = "org.containers.qmd1.Partition"
	partPath  = dbus.ObjectPath("/org/containers/qmd1/partition/qm")
	mgrPath   = dbus.ObjectPath("/org/containers/qmd1")
	mgrIface  = "org.containers.qmd1.Manager"
)

func connectBus(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestSignalsAcrossARestart: an operator's client sees the crash and the
// recovery as StateChanged and PropertiesChanged signals from the real
// daemon.
func TestSignalsAcrossARestart(t *testing.T) {
	e := startWithBus(t, "")
	conn := connectBus(t, e.bus.Addr)
	if err := conn.AddMatchSignal(dbus.WithMatchObjectPath(partPath)); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 64)
	conn.Signal(sigs)
	if err := syscall.Kill(e.pid(t), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var states []string
	sawRestartCount := false
	deadline := time.After(settle)
	for !(len(states) > 0 && states[len(states)-1] == "active/running" && sawRestartCount) {
		select {
		case s := <-sigs:
			switch s.Name {
			case partIface + ".StateChanged":
				if len(s.Body) != 3 {
					t.Fatalf("StateChanged body %v", s.Body)
				}
				states = append(states, s.Body[0].(string)+"/"+s.Body[1].(string))
				if reason, _ := s.Body[2].(string); reason == "" {
					t.Errorf("StateChanged without a reason: %v", s.Body)
				}
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				changed, _ := s.Body[1].(map[string]dbus.Variant)
				if v, ok := changed["NRestarts"]; ok && v.Value().(uint32) == 1 {
					sawRestartCount = true
				}
			}
		case <-deadline:
			t.Fatalf("signals seen: states %v, NRestarts change %v", states, sawRestartCount)
		}
	}
	if states[0] != "activating/restarting" {
		t.Errorf("first transition %s, want activating/restarting (all: %v)", states[0], states)
	}
}

// TestIncidentsSurviveQMDRestart: incidents listed before a qmd restart
// are still listed after it, and new ids continue after the old ones.
func TestIncidentsSurviveQMDRestart(t *testing.T) {
	e := startWithBus(t, "")
	conn := connectBus(t, e.bus.Addr)
	list := func() []uint64 {
		t.Helper()
		var out []struct {
			ID, Time                 uint64
			Partition, Type, Summary string
			Details                  map[string]dbus.Variant
		}
		if err := conn.Object(busName, mgrPath).Call(mgrIface+".ListIncidents", 0, "", uint64(0), uint32(0)).Store(&out); err != nil {
			t.Fatalf("ListIncidents: %v", err)
		}
		var ids []uint64
		for _, i := range out {
			ids = append(ids, i.ID)
		}
		return ids
	}
	before := list()
	if len(before) == 0 {
		t.Fatal("no incidents after the first start")
	}
	e.qmd.Stop()
	q2 := harness.StartQMD(t, e.cfg, "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Addr)
	q2.WaitLog(settle, 1, "msg", "qmd ready")
	after := list()
	if len(after) <= len(before) {
		t.Fatalf("incidents before %v, after %v: want the old ones plus the adoption", before, after)
	}
	for i, id := range before {
		if after[i] != id {
			t.Fatalf("incident %d changed across the restart: %v -> %v", i, before, after)
		}
	}
	if last := after[len(after)-1]; last <= before[len(before)-1] {
		t.Errorf("ids not monotonic across restarts: %v then %v", before, after)
	}
}

// TestBadReloadKeepsRunningConfig: SIGHUP with a broken file is rejected
// with the reason, and qmd goes on with the old configuration.
func TestBadReloadKeepsRunningConfig(t *testing.T) {
	e := start(t, "loop", "")
	e.qmd.WaitLog(settle, 1, "msg", "qmd ready")
	if err := appendFile(e.cfg, "\n[[partition]]\nname = \"qm\"\noom_score_adj = 5000\n"); err != nil {
		t.Fatal(err)
	}
	e.qmd.Signal(syscall.SIGHUP)
	rej := e.qmd.WaitLog(settle, 1, "msg", "reload rejected; keeping the running configuration")
	if !strings.Contains(rej["error"].(string), "oom_score_adj") {
		t.Errorf("rejection does not name the key: %v", rej)
	}
	time.Sleep(500 * time.Millisecond)
	if e.pm.Inspect("qm", "{{.State.Running}}") != "true" {
		t.Error("partition affected by a rejected reload")
	}
	if _, done := e.qmd.Exited(0); done {
		t.Error("qmd exited after a bad reload")
	}
}
