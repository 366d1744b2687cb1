package liveness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

var errHung = errors.New("context deadline exceeded")

func cfg3() Config {
	return Config{Interval: 10 * time.Second, Timeout: 5 * time.Second, Failures: 3, Grace: 2 * time.Minute}
}

// run feeds results to a tracker, one interval apart, and returns the
// index of each Unresponsive decision.
func run(tr *Tracker, start time.Time, results ...error) []int {
	var fired []int
	now := start
	for i, err := range results {
		now = now.Add(10 * time.Second)
		if tr.Observe(now, err) == Unresponsive {
			fired = append(fired, i)
		}
	}
	return fired
}

func TestTrackerThreeFailuresOneRestart(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := NewTracker(cfg3(), start)
	got := run(tr, start, nil, errHung, errHung, errHung, errHung, errHung, errHung)
	if len(got) != 1 || got[0] != 3 {
		t.Fatalf("unresponsive at %v, want once, at the third failure (index 3)", got)
	}
}

func TestTrackerBootGrace(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := NewTracker(cfg3(), start)
	// 11 failures in 110 s of boot: within the 2 min grace, none counts.
	var boot []error
	for range 11 {
		boot = append(boot, errHung)
	}
	if got := run(tr, start, boot...); len(got) != 0 || tr.Failures() != 0 {
		t.Fatalf("during boot grace: fired %v, failures %d; want none", got, tr.Failures())
	}
	// Past the grace without ever an answer: failures count.
	tr = NewTracker(cfg3(), start)
	var long []error
	for range 15 {
		long = append(long, errHung)
	}
	got := run(tr, start, long...)
	// Failures at 120 s, 130 s, 140 s count: the third is index 13.
	if len(got) != 1 || got[0] != 13 {
		t.Fatalf("after the grace: fired at %v, want [13]", got)
	}
	// An answer during boot ends the grace at once.
	tr = NewTracker(cfg3(), start)
	if got := run(tr, start, errHung, nil, errHung, errHung, errHung); len(got) != 1 || got[0] != 4 {
		t.Fatalf("answered at 20 s: fired at %v, want [4]", got)
	}
}

func TestTrackerRecoveryResets(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := NewTracker(cfg3(), start)
	got := run(tr, start, nil, errHung, errHung, nil, errHung, errHung, nil, errHung, errHung)
	if len(got) != 0 {
		t.Fatalf("two failures between answers fired at %v", got)
	}
	if tr.Failures() != 2 {
		t.Errorf("failures %d, want 2", tr.Failures())
	}
	if got := run(tr, start.Add(time.Hour), errHung); len(got) != 1 {
		t.Errorf("third in a row did not fire")
	}
}

func TestTrackerNoSocket(t *testing.T) {
	start := time.Unix(1000, 0)
	noSock := fmt.Errorf("/proc/1/root/run/dbus/system_bus_socket: %w", ErrNoSocket)
	tr := NewTracker(cfg3(), start)
	var r []error
	for range 30 { // 5 minutes, past the grace
		r = append(r, noSock)
	}
	if got := run(tr, start, r...); len(got) != 0 || tr.Failures() != 0 {
		t.Fatalf("an init without systemd socket fired %v (failures %d)", got, tr.Failures())
	}
	// Once systemd answered, its socket vanishing is a failure.
	tr = NewTracker(cfg3(), start)
	if got := run(tr, start, nil, noSock, noSock, noSock); len(got) != 1 {
		t.Fatalf("socket gone after answers: fired %v, want once", got)
	}
}

func TestTrackerRejectedNeverFires(t *testing.T) {
	start := time.Unix(1000, 0)
	rej := fmt.Errorf("auth: %w", ErrRejected)
	tr := NewTracker(cfg3(), start)
	if got := run(tr, start, nil, rej, rej, rej, rej, rej); len(got) != 0 || tr.Failures() != 0 {
		t.Fatalf("a peer refusing the probe fired %v (failures %d)", got, tr.Failures())
	}
}

func TestTrackerPause(t *testing.T) {
	start := time.Unix(1000, 0)
	tr := NewTracker(cfg3(), start)
	run(tr, start, nil, errHung, errHung)
	tr.Pause(true) // throttled: the stall is qmd's own
	if got := run(tr, start, errHung, errHung, errHung, errHung); len(got) != 0 {
		t.Fatalf("paused tracker fired %v", got)
	}
	tr.Pause(false)
	if tr.Failures() != 0 {
		t.Fatalf("resume keeps %d failures, want a fresh count", tr.Failures())
	}
	if got := run(tr, start, errHung, errHung, errHung); len(got) != 1 || got[0] != 2 {
		t.Fatalf("after resume fired at %v, want [2]", got)
	}
}

// scripted is a fake prober answering from a list, then always the last.
type scripted struct {
	mu     sync.Mutex
	errs   []error
	n      int
	probe  chan struct{}
	during func() // what happens while the probe waits (nil: nothing)
}

func (s *scripted) Probe(ctx context.Context) error {
	s.mu.Lock()
	i := min(s.n, len(s.errs)-1)
	s.n++
	err := s.errs[i]
	s.mu.Unlock()
	if s.during != nil {
		s.during()
	}
	s.probe <- struct{}{}
	return err
}

// TestMonitorRun drives the monitor's loop with a fake clock: one answer,
// then three failures -> exactly one report, and Run returns.
func TestMonitorRun(t *testing.T) {
	ticks := make(chan time.Time)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	p := &scripted{errs: []error{nil, errHung, errHung, errHung}, probe: make(chan struct{}, 16)}
	reports := make(chan map[string]string, 4)
	m := NewMonitor(Options{
		Config: cfg3(), Prober: p,
		Now:   func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		After: func(time.Duration) <-chan time.Time { return ticks },
		OnUnresponsive: func(reason string, d map[string]string) {
			reports <- d
		},
	})
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	for i := range 4 {
		mu.Lock()
		now = now.Add(10 * time.Second)
		mu.Unlock()
		ticks <- now
		<-p.probe
		if i < 3 {
			select {
			case d := <-reports:
				t.Fatalf("reported after probe %d: %v", i, d)
			default:
			}
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after reporting")
	}
	if len(reports) != 1 {
		t.Fatalf("%d reports, want 1", len(reports))
	}
	if d := <-reports; d["failures"] != "3" || d["last_error"] != errHung.Error() {
		t.Errorf("details %v", d)
	}
}

// TestMonitorPausedWhileThrottled: failures while paused never report.
func TestMonitorPausedWhileThrottled(t *testing.T) {
	ticks := make(chan time.Time)
	p := &scripted{errs: []error{nil, errHung}, probe: make(chan struct{}, 16)}
	fired := make(chan struct{}, 1)
	m := NewMonitor(Options{
		Config: cfg3(), Prober: p,
		After:          func(time.Duration) <-chan time.Time { return ticks },
		OnUnresponsive: func(string, map[string]string) { fired <- struct{}{} },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	ticks <- time.Now()
	<-p.probe
	m.Pause(true)
	for range 6 {
		ticks <- time.Now()
		<-p.probe
	}
	select {
	case <-fired:
		t.Fatal("reported while paused")
	default:
	}
	m.Pause(false)
	for range 3 {
		ticks <- time.Now()
		<-p.probe
	}
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("no report three failures after the pause ended")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestClassify: what each outcome of the ping means.
func TestClassify(t *testing.T) {
	derr := func(name string) error { return fmt.Errorf("call: %w", dbus.Error{Name: name}) }
	tests := []struct {
		err                      error
		ok, absent, rej, failure bool
	}{
		{err: nil, ok: true},
		{err: derr("org.freedesktop.DBus.Error.UnknownMethod"), ok: true}, // systemd itself answered
		{err: derr("org.freedesktop.DBus.Error.ServiceUnknown"), absent: true},
		{err: derr("org.freedesktop.DBus.Error.NameHasNoOwner"), absent: true},
		{err: derr("org.freedesktop.DBus.Error.NoReply"), failure: true},
		{err: derr("org.freedesktop.DBus.Error.Timeout"), failure: true},
		{err: derr("org.freedesktop.DBus.Error.AccessDenied"), rej: true},
		{err: context.DeadlineExceeded, failure: true},
	}
	for _, tt := range tests {
		got := classify(tt.err, "ping")
		switch {
		case tt.ok && got != nil, tt.absent && !absent(got), tt.rej && !errors.Is(got, ErrRejected),
			tt.failure && (got == nil || absent(got) || errors.Is(got, ErrRejected)):
			t.Errorf("classify(%v) = %v", tt.err, got)
		}
	}
}

func TestSocketPath(t *testing.T) {
	if got := SocketPath("", 42); got != "/proc/42/root/run/dbus/system_bus_socket" {
		t.Errorf("default: %s", got)
	}
	if got := SocketPath("/tmp/x/%d/private", 7); got != "/tmp/x/7/private" {
		t.Errorf("pattern: %s", got)
	}
}

// TestMonitorDoesNotCountFailuresWhileStarved: a probe that failed while
// the partition's "all runnable tasks wait for a CPU" time grew by at
// least half the probe's time is not counted (the host starved it: slow,
// not hung); once the starvation ends, three failures report.
func TestMonitorDoesNotCountFailuresWhileStarved(t *testing.T) {
	ticks := make(chan time.Time)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	errs := []error{nil}
	for range 9 {
		errs = append(errs, errHung)
	}
	// Each probe takes 5 s (its timeout) of the fake clock; while the
	// host starves the partition, 3 s of it with every runnable task of
	// the partition waiting for a CPU (more than half).
	var starved time.Duration
	starving := true
	p := &scripted{errs: errs, probe: make(chan struct{}, 16), during: func() {
		advance(5 * time.Second)
		mu.Lock()
		if starving {
			starved += 3 * time.Second
		}
		mu.Unlock()
	}}
	fired := make(chan map[string]string, 1)
	m := NewMonitor(Options{
		Config: cfg3(), Prober: p,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		// The clock moves on between probes in the monitor's own
		// goroutine, once it has judged the last probe (a test that
		// moved it meanwhile made a starved probe look 15 s long).
		After: func(time.Duration) <-chan time.Time { advance(10 * time.Second); return ticks },
		Starved: func() (time.Duration, bool) {
			mu.Lock()
			defer mu.Unlock()
			return starved, true
		},
		OnUnresponsive: func(_ string, d map[string]string) { fired <- d },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	probe := func() {
		t.Helper()
		select {
		case ticks <- time.Time{}:
		case err := <-done:
			t.Fatalf("Run returned early (%v): a starved failure was counted", err)
		}
		<-p.probe
	}
	for range 7 { // one answer, six starved failures
		probe()
	}
	select {
	case d := <-fired:
		t.Fatalf("reported failures while the host starved the partition: %v", d)
	default:
	}
	mu.Lock()
	starving = false
	mu.Unlock()
	for range 3 {
		probe()
	}
	select {
	case d := <-fired:
		if d["failures"] != "3" {
			t.Errorf("details %v, want 3 failures", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report after three unexcused failures")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
