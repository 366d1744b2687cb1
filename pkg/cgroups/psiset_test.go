package cgroups

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

type setSource struct {
	spec PSITriggerSpec
	ch   chan time.Time
}

func (f *setSource) C() <-chan time.Time { return f.ch }
func (f *setSource) Registration() PSIRegistration {
	return PSIRegistration{Spec: f.spec}
}
func (f *setSource) Err() error   { return ErrGone }
func (f *setSource) Close() error { return nil }

// TestPSISetEndAndBackoff: an ended trigger passes its end once (noted
// once), is retried with doubling backoff up to RearmMax while its file is
// missing, is re-armed when it is back, and events of the old arm are
// stale; a firing is confirmed against the totals.
func TestPSISetEndAndBackoff(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "memory.pressure")
	writePSI := func(total int) {
		t.Helper()
		if err := os.WriteFile(file, []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total="+strconv.Itoa(total)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePSI(0)
	var srcs []*setSource
	var notes []PSINoteKind
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &PSISet{Window: 2 * time.Second, RearmMin: time.Second, RearmMax: 4 * time.Second,
		Open: func(spec PSITriggerSpec) (PSISource, error) {
			if _, err := os.Stat(spec.Path); err != nil {
				return nil, err
			}
			src := &setSource{spec: spec, ch: make(chan time.Time)}
			srcs = append(srcs, src)
			return src, nil
		},
		Note: func(n PSINote) { notes = append(notes, n.Kind) }}
	s.Start(ctx)
	defer s.Close()
	w := &PSIWatch{Name: "w", Kind: PSISome, Threshold: 100 * time.Millisecond, Path: func() (string, error) { return file, nil }}
	t0 := time.Unix(1000, 0)
	if !s.Add(w, t0) || !w.Armed() {
		t.Fatal("not armed")
	}
	old := srcs[0]
	close(old.ch) // POLLERR
	ev := <-s.Events()
	if !ev.Gone {
		t.Fatal("no end")
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	s.Handle(ev, t0)
	if w.Armed() || !w.Due(t0.Add(time.Second)) || w.Due(t0.Add(999*time.Millisecond)) {
		t.Fatal("not down with a 1 s retry")
	}
	// Missing file: retries back off 1 s, 2 s, 4 s, 4 s.
	now := t0
	var gaps []time.Duration
	for i := 0; i < 4; i++ {
		next, ok := s.NextRetry()
		if !ok {
			t.Fatal("no retry scheduled")
		}
		gaps = append(gaps, next.Sub(now))
		now = next
		if armed := s.Rearm(now); len(armed) != 0 {
			t.Fatal("armed on a missing file")
		}
	}
	if gaps[0] != time.Second || gaps[1] != 2*time.Second || gaps[2] != 4*time.Second || gaps[3] != 4*time.Second {
		t.Errorf("retry gaps %v, want 1s 2s 4s 4s", gaps)
	}
	writePSI(5000)
	next, _ := s.NextRetry()
	if armed := s.Rearm(next); len(armed) != 1 || !w.Armed() {
		t.Fatal("not re-armed when the file is back")
	}
	// A late event of the old arm is stale.
	if !s.Stale(PSIEvent{Watch: w, gen: 1}) {
		t.Error("event of the first arm not stale")
	}
	// Firings of the new arm: 1 ms of stall is spurious, 200 ms real.
	nw := srcs[len(srcs)-1]
	writePSI(6000)
	go func() { nw.ch <- next.Add(time.Second) }()
	if ok, g := s.Handle(<-s.Events(), next); ok || g != 1000 {
		t.Errorf("1 ms of stall confirmed (growth %d)", g)
	}
	writePSI(206000)
	go func() { nw.ch <- next.Add(3 * time.Second) }()
	if ok, _ := s.Handle(<-s.Events(), next); !ok {
		t.Error("200 ms of stall not confirmed")
	}
	if fired, spurious := w.Counts(); fired != 2 || spurious != 1 {
		t.Errorf("fired %d spurious %d", fired, spurious)
	}
	// The end is the outage's one report: the failed retries are debug notes.
	want := []PSINoteKind{PSIEnded, PSIStillUnavailable, PSIStillUnavailable, PSIStillUnavailable, PSIStillUnavailable, PSIRearmed, PSISpurious}
	if len(notes) != len(want) {
		t.Fatalf("notes %v, want %v", notes, want)
	}
	for i := range want {
		if notes[i] != want[i] {
			t.Fatalf("notes %v, want %v", notes, want)
		}
	}
}
