package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/incident"
)

func wantCode(t *testing.T, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("exit code = %d, want %d", got, want)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func TestList(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})

	code, out, _ := b.run(t, "list")
	wantCode(t, code, ExitOK)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		t.Fatalf("output: %q", out)
	}
	if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"NAME", "ACTIVE", "SUB", "CONTAINER", "PID", "RESTARTS"}) {
		t.Errorf("header = %q", lines[0])
	}
	if f := strings.Fields(lines[1]); !slices.Equal(f, []string{"broken", "failed", "dead", "-", "-", "0"}) {
		t.Errorf("broken row = %q", lines[1])
	}
	if f := strings.Fields(lines[2]); !slices.Equal(f, []string{"qm", "active", "running", "c0ffee012345", "4242", "3"}) {
		t.Errorf("qm row = %q", lines[2])
	}
	wantContains(t, "list", out, "2 partitions listed.")

	code, out, _ = b.run(t, "list", "--json")
	wantCode(t, code, ExitOK)
	var parts []map[string]any
	if err := json.Unmarshal([]byte(out), &parts); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(parts) != 2 || parts[1]["name"] != "qm" || parts[1]["main_pid"] != float64(4242) ||
		parts[1]["container_id"] != "c0ffee0123456789abcdef" || parts[1]["memory_high"] != nil ||
		parts[1]["memory_max"] != float64(2<<30) || parts[1]["n_restarts"] != float64(3) ||
		parts[0]["active_state"] != "failed" {
		t.Fatalf("json: %v", parts)
	}
}

func TestManagerStatus(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	fb.AddIncident(t, "qm", incident.Start, "started")
	fb.AddIncident(t, "qm", incident.OOMKill, "oom")
	b.serve(t, fb, dbusapi.Options{})

	code, out, _ := b.run(t, "status")
	wantCode(t, code, ExitOK)
	wantContains(t, "status", out, "Version:", "1.2.3-test", "Status:", "up", "LastIncidentId:", "2", "qm", "active", "running", "broken", "failed")

	code, out, _ = b.run(t, "status", "--json")
	wantCode(t, code, ExitOK)
	var m managerJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.2.3-test" || m.Status != "up" || m.LastIncidentID != 2 || len(m.Partitions) != 2 ||
		m.Partitions[1].Name != "qm" || m.Partitions[1].ObjectPath != string(dbusapi.PartitionPath("qm")) {
		t.Fatalf("json: %+v", m)
	}
}

func TestPartitionStatus(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	for i := range 8 {
		fb.AddIncident(t, "qm", incident.Restart, fmt.Sprintf("restart %d", i))
		fb.AddIncident(t, "broken", incident.StartLimit, "gave up")
	}
	b.serve(t, fb, dbusapi.Options{})

	code, out, _ := b.run(t, "status", "qm")
	wantCode(t, code, ExitOK)
	wantContains(t, "status qm", out,
		"● qm", "Active: active (running) since ", "5min ago", "Result: success", "Container: c0ffee012345\n",
		"Main PID: 4242", "CGroup: /machine.slice/libpod-c0ffee.scope",
		"Memory: 100M (high: infinity, max: 2G)", "OOMScoreAdjust: 500", "Restarts: 3", "OOM kills: 1",
		"Recent incidents:", "restart 7", "restart 3")
	if strings.Contains(out, "restart 2") || strings.Contains(out, "gave up") {
		t.Errorf("status shows more than the last %d incidents of qm:\n%s", statusIncidents, out)
	}

	code, out, _ = b.run(t, "status", "qm", "--json")
	wantCode(t, code, ExitOK)
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{
		"name": "qm", "active_state": "active", "sub_state": "running", "result": "success",
		"main_pid": float64(4242), "memory_current": float64(100 << 20), "memory_high": nil,
		"memory_max": float64(2 << 30), "oom_score_adjust": float64(500), "n_restarts": float64(3),
		"n_oom_kills": float64(1), "control_group": "/machine.slice/libpod-c0ffee.scope",
	} {
		if got, ok := st[k]; !ok || got != v {
			t.Errorf("json %s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	incs, _ := st["recent_incidents"].([]any)
	if len(incs) != statusIncidents || incs[len(incs)-1].(map[string]any)["summary"] != "restart 7" {
		t.Errorf("recent_incidents = %v", st["recent_incidents"])
	}

	// Not active: printed, exit 3 (also with --json).
	code, out, _ = b.run(t, "status", "broken")
	wantCode(t, code, ExitNotActive)
	wantContains(t, "status broken", out, "failed (dead)", "Result: start-limit-hit", "Memory: 0B (high: infinity, max: infinity)", "gave up")
	code, out, _ = b.run(t, "status", "--json", "broken")
	wantCode(t, code, ExitNotActive)
	if !json.Valid([]byte(out)) {
		t.Fatalf("invalid json %q", out)
	}
}

func TestExitCodes(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	b.serve(t, fb, dbusapi.Options{})

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "nope"}, ExitNoSuchPartition, "no such partition: nope"},
		{[]string{"start", "nope"}, ExitNoSuchPartition, "no such partition: nope"},
		{[]string{"set-memory-high", "nope", "1G"}, ExitNoSuchPartition, "no such partition: nope"},
		{[]string{"start", "broken"}, ExitStartLimitHit, "qmd reset-failed broken"},
		{[]string{"restart", "broken"}, ExitStartLimitHit, "qmd reset-failed broken"},
		{[]string{"freeze", "broken"}, ExitNotActive, "not running"},
		// Rejected by qmd (InvalidArgs): above memory.max, negative OOM score.
		{[]string{"set-memory-high", "qm", "3G"}, ExitUsage, "above memory.max"},
		{[]string{"set-oom-score-adjust", "qm", "-5"}, ExitUsage, "negative"},
		// Rejected locally.
		{[]string{"set-memory-high", "qm", "12X"}, ExitUsage, "unknown unit"},
		{[]string{"set-memory-high", "qm", "0"}, ExitUsage, "greater than 0"},
		{[]string{"set-memory-max", "qm", "-1G"}, ExitUsage, "-1G"},
		{[]string{"set-memory-max", "qm", "--", "-1G"}, ExitUsage, "not a number"},
		{[]string{"set-oom-score-adjust", "qm", "2000"}, ExitUsage, "-1000..1000"},
		{[]string{"start", "bad/name"}, ExitUsage, "not allowed"},
		{[]string{"start"}, ExitUsage, "usage: qmd start"},
		{[]string{"start", "a", "b"}, ExitUsage, "too many arguments"},
		{[]string{"list", "--bogus"}, ExitUsage, "unknown option --bogus"},
		{[]string{"incidents", "--limit", "x"}, ExitUsage, "--limit"},
		{[]string{"incidents", "--after"}, ExitUsage, "needs a value"},
		{[]string{"frobnicate"}, ExitUsage, "unknown command"},
		{nil, ExitUsage, "missing command"},
	} {
		code, _, errOut := b.run(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("qmd %v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	if calls := fb.Calls(); len(calls) != 0 {
		t.Errorf("backend was called: %v", calls)
	}

	// Success prints nothing.
	for _, cmd := range []string{"start", "stop", "restart", "freeze", "thaw", "reset-failed"} {
		code, out, errOut := b.run(t, cmd, "qm")
		if code != ExitOK || out != "" || errOut != "" {
			t.Errorf("qmd %s qm: exit %d, %q, %q", cmd, code, out, errOut)
		}
	}
	want := []string{"Start qm", "Stop qm", "Restart qm", "Freeze qm", "Thaw qm", "ResetFailed qm"}
	if got := fb.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
}

func TestSetMemoryAndOOMScore(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	b.serve(t, fb, dbusapi.Options{})
	for _, args := range [][]string{
		{"set-memory-high", "qm", "512M"},
		{"set-memory-high", "--runtime", "qm", "1.5G"},
		{"set-memory-high", "broken", "infinity"},
		{"set-memory-max", "qm", "4G", "--runtime"},
		{"set-memory-max", "qm", "123456"},
		{"set-oom-score-adjust", "qm", "750"},
		{"set-oom-score-adjust", "qm", "0", "--runtime"},
	} {
		code, out, errOut := b.run(t, args...)
		if code != ExitOK || out != "" || errOut != "" {
			t.Errorf("qmd %v: exit %d, %q, %q", args, code, out, errOut)
		}
	}
	want := []string{
		"SetMemoryHigh 536870912 false qm",
		"SetMemoryHigh 1610612736 true qm",
		fmt.Sprintf("SetMemoryHigh %d false broken", uint64(math.MaxUint64)),
		"SetMemoryMax 4294967296 true qm",
		"SetMemoryMax 123456 false qm",
		"SetOOMScoreAdjust 750 false qm",
		"SetOOMScoreAdjust 0 true qm",
	}
	if got := fb.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAccessDenied(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	b.serve(t, fb, dbusapi.Options{IsAdmin: func(uint32) (bool, error) { return false, nil }})
	for _, args := range [][]string{{"start", "qm"}, {"set-memory-high", "qm", "1G"}, {"reset-failed", "broken"}} {
		code, _, errOut := b.run(t, args...)
		wantCode(t, code, ExitAccessDenied)
		wantContains(t, "stderr", errOut, "access denied: run as root or as a member of group qmd-admin")
	}
	// Reads stay allowed.
	code, _, _ := b.run(t, "status", "qm")
	wantCode(t, code, ExitOK)
	if calls := fb.Calls(); len(calls) != 0 {
		t.Errorf("backend was called: %v", calls)
	}
}

func TestQmdNotRunning(t *testing.T) {
	b := startBus(t) // no server exported
	for _, args := range [][]string{{"status"}, {"status", "qm"}, {"list", "--json"}, {"start", "qm"}, {"incidents"}} {
		code, _, errOut := b.run(t, args...)
		wantCode(t, code, ExitNoQmd)
		wantContains(t, "stderr", errOut, "qmd is not running (no owner of org.containers.qmd1 on the system bus)")
	}
}

func TestBusUnreachable(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/qmd-test-bus")
	code, _, errOut := run(t, "list")
	wantCode(t, code, ExitNoQmd)
	wantContains(t, "stderr", errOut, "cannot connect to the system bus at unix:path=/nonexistent/qmd-test-bus", "DBUS_SYSTEM_BUS_ADDRESS", "/run/dbus/system_bus_socket")

	code, _, errOut = run(t, "status", "--address", "unix:path=/nonexistent/other")
	wantCode(t, code, ExitNoQmd)
	wantContains(t, "stderr", errOut, "unix:path=/nonexistent/other")
}

func TestAddressFlag(t *testing.T) {
	b := startBus(t)
	b.serve(t, newFake(), dbusapi.Options{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/qmd-test-bus")
	code, out, _ := run(t, "list", "--address="+b.addr)
	wantCode(t, code, ExitOK)
	wantContains(t, "list", out, "qm")
}

func TestIncidents(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	fb.Store = incident.NewMemory(5000)
	for i := 1; i <= 30; i++ {
		p := "qm"
		if i%3 == 0 {
			p = "broken"
		}
		fb.AddIncident(t, p, incident.Restart, fmt.Sprintf("event %d", i))
	}
	b.serve(t, fb, dbusapi.Options{})

	ids := func(out string) []string {
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			got = append(got, strings.Fields(l)[0])
		}
		return got
	}
	code, out, _ := b.run(t, "incidents")
	wantCode(t, code, ExitOK)
	if f := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(f, []string{"ID", "TIME", "PARTITION", "TYPE", "SUMMARY"}) {
		t.Errorf("header %v", f)
	}
	if got := ids(out); len(got) != 30 || got[0] != "1" || got[29] != "30" {
		t.Errorf("ids %v", got)
	}
	wantContains(t, "incidents", out, "event 30", "restart", "broken")

	code, out, _ = b.run(t, "incidents", "broken", "-n", "2")
	wantCode(t, code, ExitOK)
	if got := ids(out); !slices.Equal(got, []string{"27", "30"}) {
		t.Errorf("last 2 of broken: %v", got)
	}
	code, out, _ = b.run(t, "incidents", "--after", "25", "--limit", "3", "qm")
	wantCode(t, code, ExitOK)
	if got := ids(out); !slices.Equal(got, []string{"26", "28", "29"}) {
		t.Errorf("after 25 limit 3 of qm: %v", got)
	}

	code, out, _ = b.run(t, "incidents", "--json", "--after", "28")
	wantCode(t, code, ExitOK)
	var incs []incidentJSON
	if err := json.Unmarshal([]byte(out), &incs); err != nil {
		t.Fatal(err)
	}
	if len(incs) != 2 || incs[0].ID != 29 || incs[1].Partition != "broken" || incs[1].Type != "restart" ||
		incs[1].Summary != "event 30" || incs[1].Details["k"] != "v" || incs[1].Time == nil || incs[1].TimeUsec == 0 {
		t.Fatalf("json %+v", incs)
	}
	if _, err := time.Parse(time.RFC3339Nano, *incs[0].Time); err != nil {
		t.Error(err)
	}
	code, out, _ = b.run(t, "incidents", "--json", "nope")
	wantCode(t, code, ExitOK)
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("no incidents: %q", out)
	}

	// The last incidents of a partition far behind the newest ones (the
	// search window grows), and more than one ListIncidents page.
	for i := 31; i <= 1330; i++ {
		fb.AddIncident(t, "broken", incident.Restart, fmt.Sprintf("event %d", i))
	}
	code, out, _ = b.run(t, "incidents", "qm", "-n", "2")
	wantCode(t, code, ExitOK)
	if got := ids(out); !slices.Equal(got, []string{"28", "29"}) {
		t.Errorf("last 2 of qm: %v", got)
	}
	code, out, _ = b.run(t, "incidents", "-n", "3")
	wantCode(t, code, ExitOK)
	if got := ids(out); !slices.Equal(got, []string{"1328", "1329", "1330"}) {
		t.Errorf("last 3: %v", got)
	}
	code, out, _ = b.run(t, "incidents", "--json", "--after", "0", "broken")
	wantCode(t, code, ExitOK)
	if err := json.Unmarshal([]byte(out), &incs); err != nil || len(incs) != 10+1300 || incs[len(incs)-1].ID != 1330 {
		t.Errorf("all of broken: %d, %v", len(incs), err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, buf *syncBuffer, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("output has no %q:\n%s", sub, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIncidentsFollow(t *testing.T) {
	setFollowPoll(t, time.Hour) // only signals may deliver new incidents
	b := startBus(t)
	fb := newFake()
	for i := 1; i <= 12; i++ {
		fb.AddIncident(t, "qm", incident.Restart, fmt.Sprintf("old %d", i))
	}
	srv := b.serve(t, fb, dbusapi.Options{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.addr)

	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var out, errb syncBuffer
			args := []string{"incidents", "--follow", "qm"}
			if asJSON {
				args = append(args, "--json")
			}
			done := make(chan int, 1)
			go func() { done <- Run(ctx, args, &out, &errb) }()
			waitFor(t, &out, "old 12")

			// Recorded while following: one for another partition (filtered
			// out), two for qm.
			for i, p := range []string{"broken", "qm", "qm"} {
				inc := fb.AddIncident(t, p, incident.OOMKill, fmt.Sprintf("new %d json=%v", i, asJSON))
				srv.IncidentAdded(inc)
			}
			waitFor(t, &out, fmt.Sprintf("new 2 json=%v", asJSON))
			cancel()
			select {
			case code := <-done:
				wantCode(t, code, ExitOK)
			case <-time.After(10 * time.Second):
				t.Fatal("follow did not stop on cancel")
			}
			got := out.String()
			t.Logf("output:\n%s\nstderr:\n%s", got, errb.String())
			n0, n1, n2 := fmt.Sprintf("new 0 json=%v", asJSON), fmt.Sprintf("new 1 json=%v", asJSON), fmt.Sprintf("new 2 json=%v", asJSON)
			if strings.Contains(got, n0) || strings.Count(got, n1) != 1 || strings.Count(got, n2) != 1 {
				t.Errorf("follow output wrong:\n%s", got)
			}
			if asJSON {
				lines := strings.Split(strings.TrimSpace(got), "\n")
				if len(lines) != followIncidents+2 {
					t.Errorf("%d lines, want %d", len(lines), followIncidents+2)
				}
				for _, l := range lines {
					var inc incidentJSON
					if err := json.Unmarshal([]byte(l), &inc); err != nil || inc.Partition != "qm" {
						t.Errorf("line %q: %v", l, err)
					}
				}
			} else {
				if strings.Contains(got, "old 2\n") || !strings.Contains(got, "old 3") {
					t.Errorf("want the last %d existing incidents:\n%s", followIncidents, got)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range Commands() {
		code, out, _ := run(t, cmd, "--help")
		wantCode(t, code, ExitOK)
		wantContains(t, cmd+" --help", out, "usage: qmd "+cmd, "Exit codes:", "--address")
	}
	code, out, _ := run(t, "help")
	wantCode(t, code, ExitOK)
	wantContains(t, "help", out, "qmd status [PARTITION]", "qmd set-memory-high PARTITION SIZE", "6  qmd is not running")
	wantContains(t, "Usage", Usage(), "5  access denied")
}

// TestIncidentsFollowAcrossRestart: incidents recorded while qmd was down
// are printed when it comes back (its bus name reappears), without an
// IncidentNew signal.
func TestIncidentsFollowAcrossRestart(t *testing.T) {
	setFollowPoll(t, time.Hour)
	b := startBus(t)
	fb := newFake()
	fb.AddIncident(t, "qm", incident.Start, "first")
	srv := b.serve(t, fb, dbusapi.Options{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.addr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- Run(ctx, []string{"incidents", "-f"}, &out, &errb) }()
	waitFor(t, &out, "first")

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	fb.AddIncident(t, "qm", incident.Stop, "while qmd was down")
	srv2 := b.serve(t, fb, dbusapi.Options{})
	waitFor(t, &out, "while qmd was down")

	// The new instance's signals reach the follower too.
	srv2.IncidentAdded(fb.AddIncident(t, "qm", incident.Start, "after the restart"))
	waitFor(t, &out, "after the restart")
	cancel()
	select {
	case c := <-done:
		wantCode(t, c, ExitOK)
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not stop")
	}
	if strings.Count(out.String(), "first") != 1 {
		t.Errorf("printed twice:\n%s", out.String())
	}
}

func setFollowPoll(t *testing.T, d time.Duration) {
	old := followPoll
	followPoll = d
	t.Cleanup(func() { followPoll = old })
}

// TestIncidentsFollowPoll: without signals (e.g. dropped by a full queue)
// the follower still catches up by polling.
func TestIncidentsFollowPoll(t *testing.T) {
	setFollowPoll(t, 50*time.Millisecond)
	b := startBus(t)
	fb := newFake()
	b.serve(t, fb, dbusapi.Options{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- Run(ctx, []string{"incidents", "--follow", "--after", "0"}, &out, &errb) }()
	waitFor(t, &out, "SUMMARY")
	fb.AddIncident(t, "qm", incident.Freeze, "no signal for this one") // no IncidentAdded
	waitFor(t, &out, "no signal for this one")
	cancel()
	wantCode(t, <-done, ExitOK)
}
