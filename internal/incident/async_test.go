package incident

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openOpts opens a store that must not be degraded.
func openOpts(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = 200 * time.Millisecond
	}
	s := Open(opts)
	if d, why := s.Degraded(); d {
		t.Fatalf("store degraded: %s", why)
	}
	return s
}

// setBeforeCommit installs the commit hook of the writer (a slow or
// failing disk).
func setBeforeCommit(s *Store, f func() error) {
	s.mu.Lock()
	s.beforeCommit = f
	s.mu.Unlock()
}

// gate blocks the first commit until released.
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	relOnce sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) hook() error {
	first := false
	g.once.Do(func() { first = true; close(g.entered) })
	if first {
		<-g.release
	}
	return nil
}

func (g *gate) open() { g.relOnce.Do(func() { close(g.release) }) }

func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer never started a commit")
	}
}

func flushT(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Record must return while the writer is stuck in a commit; everything
// recorded meanwhile is visible and reaches the disk once it is released.
func TestRecordDoesNotWaitForSlowDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.db")
	s := openOpts(t, Options{Path: path, MaxCount: 5000})
	g := newGate(t)
	setBeforeCommit(s, g.hook)
	r := NewRecorderWithOptions(s, RecorderOptions{OnError: func(err error) { t.Error(err) }})
	var fanned atomic.Int64
	r.Subscribe(1000, func(Incident) { fanned.Add(1) })

	const n = 500
	done := make(chan time.Duration, 1)
	go func() {
		r.Record(Incident{Partition: "qm", Type: Restart, Summary: "first"})
		<-g.entered // the commit of record 1 is now blocked
		start := time.Now()
		for i := 0; i < n; i++ {
			r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: fmt.Sprintf("event %d", i)})
		}
		done <- time.Since(start)
	}()
	select {
	case el := <-done:
		t.Logf("%d Record calls took %s while a commit was blocked", n, el)
	case <-time.After(5 * time.Second):
		t.Fatal("Record waits for the disk")
	}
	st := r.Stats()
	if st.Pending != n+1 || st.Recorded != n+1 || !st.LastFlush.IsZero() {
		t.Fatalf("stats while blocked: %+v", st)
	}
	all, err := s.List("", 0, 0)
	if err != nil || len(all) != n+1 || all[0].ID != 1 || all[n].ID != n+1 || s.LastID() != n+1 {
		t.Fatalf("List while blocked: %d records, err %v, last id %d", len(all), err, s.LastID())
	}
	for i, inc := range all {
		if inc.ID != uint64(i+1) {
			t.Fatalf("List not in ID order at %d: %d", i, inc.ID)
		}
	}

	g.open()
	flushT(t, r.Flush)
	if st := r.Stats(); st.Pending != 0 || st.LastFlush.IsZero() || st.WriteErrors != 0 {
		t.Fatalf("stats after flush: %+v", st)
	}
	if fanned.Load() != n+1 {
		// Eventually: subscribers run on their own goroutine.
		deadline := time.Now().Add(5 * time.Second)
		for fanned.Load() != n+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := fanned.Load(); got != n+1 {
			t.Fatalf("fanned out %d", got)
		}
	}
	r.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOpts(t, Options{Path: path, MaxCount: 5000})
	defer s.Close()
	again, _ := s.List("", 0, 0)
	if jsonOf(t, again) != jsonOf(t, all) {
		t.Fatal("records on disk differ from what List showed before the commit")
	}
}

// Records still pending at Close are committed by Store.Close; IDs stay
// in order and continue after re-Open, also when the bound dropped some.
func TestPendingSurviveCloseAndIDsContinue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.db")
	// The writer would wait an hour: only Close commits.
	s := openOpts(t, Options{Path: path, MaxCount: 8, BatchDelay: time.Hour})
	r := NewRecorder(s, func(err error) { t.Error(err) })
	var want []Incident
	for i := 0; i < 12; i++ {
		part := []string{"qm", "other"}[i%2]
		want = append(want, r.Record(Incident{Partition: part, Type: OOMKill, Summary: fmt.Sprint("kill ", i),
			Details: map[string]string{"i": fmt.Sprint(i)}}))
	}
	if st := s.Stats(); st.Commits != 0 || st.Pending != 12 {
		t.Fatalf("before close: %+v", st)
	}
	want = want[4:] // the bound keeps the last 8
	if got, _ := s.List("", 0, 0); jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("List before close = %v", ids(got))
	}
	if err := s.Close(); err != nil { // no Recorder.Close: the store alone must not lose them
		t.Fatal(err)
	}
	if got := rawLastID(t, path); got != 12 {
		t.Fatalf("persisted last id = %d, want 12", got)
	}

	s = openOpts(t, Options{Path: path, MaxCount: 8, BatchDelay: time.Hour})
	got, _ := s.List("", 0, 0)
	if jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("after reopen = %v, want %v", ids(got), ids(want))
	}
	if s.LastID() != 12 {
		t.Fatalf("LastID after reopen = %d", s.LastID())
	}
	r = NewRecorder(s, func(err error) { t.Error(err) })
	if inc := r.Record(Incident{Partition: "qm", Type: Stop, Summary: "stop"}); inc.ID != 13 {
		t.Fatalf("id after reopen = %d, want 13", inc.ID)
	}
	r.Close() // flushes
	if st := s.Stats(); st.Pending != 0 || st.Commits != 1 {
		t.Fatalf("after Recorder.Close: %+v", st)
	}
	s.Close()
	s = openOpts(t, Options{Path: path, MaxCount: 8})
	defer s.Close()
	if got, _ := s.List("", 12, 0); len(got) != 1 || got[0].ID != 13 || s.LastID() != 13 {
		t.Fatalf("after second reopen: %v, last %d", ids(got), s.LastID())
	}
}

// Every query answers the same before the pending records are committed
// as after: pending records are merged in ID order, a pending version
// replaces the stored one, the records the commit will trim are hidden.
func TestListSeesPendingLikeStored(t *testing.T) {
	clock := newClock()
	s := openOpts(t, Options{Path: filepath.Join(t.TempDir(), "i.db"), MaxCount: 20, BatchDelay: time.Hour, Now: clock.Now})
	defer s.Close()
	r := NewRecorderWithOptions(s, RecorderOptions{OnError: func(err error) { t.Error(err) }, CoalesceWindow: 3 * time.Second})
	defer r.Close()
	rng := rand.New(rand.NewSource(1))
	parts := []string{"qm", "other", "third"}
	query := func() string {
		var b strings.Builder
		last := s.LastID()
		for _, p := range append([]string{"", "nope"}, parts...) {
			for _, after := range []uint64{0, 1, last / 2, last - 1, last, last + 1, ^uint64(0)} {
				for _, limit := range []int{0, 1, 3, 7} {
					got, err := s.List(p, after, limit)
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprintf(&b, "%q %d %d: %s\n", p, after, limit, jsonOf(t, got))
				}
			}
		}
		return b.String()
	}
	coalesced := 0
	for round := 0; round < 40; round++ {
		for i := rng.Intn(12); i > 0; i-- {
			clock.Add(time.Duration(rng.Intn(800)) * time.Millisecond)
			inc := Incident{Partition: parts[rng.Intn(3)], Type: ForkBomb, Summary: fmt.Sprint("s", rng.Intn(3))}
			if rng.Intn(4) == 0 {
				if _, err := s.Add(inc); err != nil { // synchronous, commits the queue too
					t.Fatal(err)
				}
				continue
			}
			if got := r.Record(inc); got.Details[DetailCount] != "" {
				coalesced++
			}
		}
		before := query()
		pending := s.Stats().Pending
		flushT(t, s.Flush)
		if after := query(); after != before {
			t.Fatalf("round %d (%d pending): List differs before and after commit:\n--- before\n%s--- after\n%s", round, pending, before, after)
		}
	}
	if coalesced == 0 || s.LastID() < 40 {
		t.Fatalf("the test did not exercise updates (%d) or the bound (last id %d)", coalesced, s.LastID())
	}
}

// A fork bomb: 100 pids.max events/s for 10 s make one record and one
// notification per coalescing window.
func TestCoalescing(t *testing.T) {
	clock := newClock()
	path := filepath.Join(t.TempDir(), "i.db")
	s := openOpts(t, Options{Path: path, Now: clock.Now})
	r := NewRecorder(s, func(err error) { t.Error(err) })
	var mu sync.Mutex
	var fanned []Incident
	r.Subscribe(10000, func(inc Incident) {
		mu.Lock()
		fanned = append(fanned, inc)
		mu.Unlock()
	})
	bomb := Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max reached", Details: map[string]string{"pids_max": "100"}}
	t0 := clock.Now()
	var last Incident
	for i := 0; i < 1000; i++ {
		last = r.Record(bomb)
		if i == 10 {
			flushT(t, r.Flush) // the record is on disk: later repeats rewrite it
		}
		clock.Add(10 * time.Millisecond)
	}
	// Another partition, type or summary is another series.
	r.Record(Incident{Partition: "other", Type: ForkBomb, Summary: "pids.max reached"})
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "pids.max reached"})
	r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "something else"})
	// The window (10 s from the first occurrence) is over: a new record.
	next := r.Record(bomb)

	want := map[string]string{"pids_max": "100", "count": "1000",
		"first": t0.Format(time.RFC3339Nano), "last": t0.Add(9990 * time.Millisecond).Format(time.RFC3339Nano)}
	if last.ID != 1 || fmt.Sprint(last.Details) != fmt.Sprint(want) {
		t.Fatalf("Record returned %+v", last)
	}
	if next.ID != 5 || next.Details[DetailCount] != "" {
		t.Fatalf("after the window: %+v", next)
	}
	st := r.Stats()
	if st.Recorded != 1004 || st.Coalesced != 999 {
		t.Fatalf("stats %+v", st)
	}
	r.Close()
	mu.Lock()
	if len(fanned) != 5 || fanned[0].ID != 1 || fanned[0].Details[DetailCount] != "" || fanned[4].ID != 5 {
		t.Fatalf("subscriber got %d: %+v", len(fanned), fanned)
	}
	mu.Unlock()
	s.Close()

	s = openOpts(t, Options{Path: path})
	defer s.Close()
	all, _ := s.List("", 0, 0)
	if len(all) != 5 || fmt.Sprint(all[0].Details) != fmt.Sprint(want) || !all[0].Time.Equal(t0) {
		t.Fatalf("on disk: %d records, first %+v", len(all), all[0])
	}
}

func TestCoalescingMemoryStoreAndDisabled(t *testing.T) {
	r := NewRecorder(NewMemory(100), nil)
	for i := 0; i < 5; i++ {
		r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "x"})
	}
	if l, _ := r.Store().List("", 0, 0); len(l) != 1 || l[0].Details[DetailCount] != "5" {
		t.Fatalf("memory store: %+v", l)
	}
	r = NewRecorderWithOptions(NewMemory(100), RecorderOptions{CoalesceWindow: -1})
	for i := 0; i < 5; i++ {
		r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "x"})
	}
	if l, _ := r.Store().List("", 0, 0); len(l) != 5 || r.Stats().Coalesced != 0 {
		t.Fatalf("coalescing disabled: %d records", len(l))
	}
}

func TestSubscriberDropCounters(t *testing.T) {
	var mu sync.Mutex
	var reports []SubscriberDrop
	r := NewRecorderWithOptions(NewMemory(1000), RecorderOptions{
		OnSubscriberDrop: func(d SubscriberDrop) {
			mu.Lock()
			reports = append(reports, d)
			mu.Unlock()
		},
		DropReportInterval: time.Hour,
	})
	block := make(chan struct{})
	slow := r.SubscribeNamed("slow", 2, func(Incident) { <-block })
	fast := r.SubscribeNamed("fast", 1000, func(Incident) {})
	for i := 0; i < 50; i++ {
		r.Record(Incident{Partition: "qm", Type: Restart, Summary: fmt.Sprint(i)})
	}
	st := r.Stats()
	if slow.Dropped() < 45 || fast.Dropped() != 0 || st.SubscriberDrops != slow.Dropped() || st.Recorded != 50 || st.Subscribers != 2 {
		t.Fatalf("slow dropped %d, fast %d, stats %+v", slow.Dropped(), fast.Dropped(), st)
	}
	mu.Lock()
	if len(reports) != 1 || reports[0].Name != "slow" || reports[0].Buffer != 2 || reports[0].Dropped != 1 || reports[0].New != 1 {
		t.Fatalf("reports %+v (want one: rate-limited)", reports)
	}
	mu.Unlock()

	// Once the interval passed, the next drop is reported with what was
	// dropped since.
	r.mu.Lock()
	slow.s.reportedAt = slow.s.reportedAt.Add(-time.Hour)
	r.mu.Unlock()
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "one more"})
	mu.Lock()
	if len(reports) != 2 || reports[1].Dropped != slow.Dropped() || reports[1].New != slow.Dropped()-1 {
		t.Fatalf("second report %+v, dropped %d", reports, slow.Dropped())
	}
	mu.Unlock()
	dropped := slow.Dropped()
	slow.Cancel()
	close(block)
	if r.Stats().SubscriberDrops != dropped {
		t.Fatal("drops of cancelled subscribers must stay counted")
	}
	r.Close()
}

// A failing commit degrades the store to memory: nothing recorded is
// lost (stored, pending and updated records), the error is reported once,
// IDs go on.
func TestWriteFailureKeepsRecordsInMemory(t *testing.T) {
	clock := newClock()
	s := openOpts(t, Options{Path: filepath.Join(t.TempDir(), "i.db"), BatchDelay: time.Hour, Now: clock.Now})
	defer s.Close()
	var errs []error
	var mu sync.Mutex
	r := NewRecorder(s, func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	for i := 0; i < 3; i++ {
		r.Record(Incident{Partition: "qm", Type: Restart, Summary: fmt.Sprint(i)})
	}
	flushT(t, r.Flush)
	setBeforeCommit(s, func() error { return errors.New("disk on fire") })
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "0"}) // updates stored record 1
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "new 4"})
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "new 5"})
	err := r.Flush(context.Background())
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Flush = %v", err)
	}
	r.Record(Incident{Partition: "qm", Type: Restart, Summary: "new 6"})
	if d, why := s.Degraded(); !d || !strings.Contains(why, "persist incident: disk on fire") {
		t.Fatalf("Degraded() = %v, %q", d, why)
	}
	all, _ := s.List("", 0, 0)
	if fmt.Sprint(ids(all)) != "[1 2 3 4 5 6]" || all[0].Details[DetailCount] != "2" {
		t.Fatalf("after the failure: %+v", all)
	}
	st := r.Stats()
	if st.WriteErrors != 1 || st.Pending != 0 || !st.Degraded {
		t.Fatalf("stats %+v", st)
	}
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("Flush on a degraded store must say so")
	}
	r.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 1 {
		t.Fatalf("onError called %d times: %v", len(errs), errs)
	}
}

// The writer commits when BatchMax changes are queued, without waiting
// for BatchDelay; and after BatchDelay without a Flush.
func TestWriterBatchTriggers(t *testing.T) {
	t.Run("batch full", func(t *testing.T) {
		s := openOpts(t, Options{Path: filepath.Join(t.TempDir(), "i.db"), BatchDelay: time.Hour, BatchMax: 8})
		defer s.Close()
		r := NewRecorderWithOptions(s, noCoalesce)
		for i := 0; i < 7; i++ {
			r.Record(Incident{Partition: "qm", Type: Restart})
		}
		time.Sleep(100 * time.Millisecond)
		if st := s.Stats(); st.Commits != 0 {
			t.Fatalf("committed before the batch was full: %+v", st)
		}
		r.Record(Incident{Partition: "qm", Type: Restart})
		waitFor(t, func() bool { return s.Stats().Commits == 1 })
		if st := s.Stats(); st.Pending != 0 {
			t.Fatalf("%+v", st)
		}
	})
	t.Run("delay", func(t *testing.T) {
		s := openOpts(t, Options{Path: filepath.Join(t.TempDir(), "i.db"), BatchDelay: 20 * time.Millisecond})
		defer s.Close()
		r := NewRecorderWithOptions(s, noCoalesce)
		for i := 0; i < 3; i++ {
			r.Record(Incident{Partition: "qm", Type: Restart})
		}
		waitFor(t, func() bool { st := s.Stats(); return st.Pending == 0 && st.Commits >= 1 })
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// While the disk is stuck the queue is bounded by MaxCount (the commit
// would trim the rest anyway); IDs are never reused.
func TestStuckDiskBoundsQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.db")
	s := openOpts(t, Options{Path: path, MaxCount: 10})
	g := newGate(t)
	setBeforeCommit(s, g.hook)
	r := NewRecorderWithOptions(s, noCoalesce)
	r.Record(Incident{Partition: "qm", Type: Restart})
	g.waitEntered(t)
	for i := 0; i < 1000; i++ {
		r.Record(Incident{Partition: "qm", Type: Restart})
	}
	if p := s.Stats().Pending; p > 2*10 {
		t.Fatalf("pending = %d, want <= 2*MaxCount", p)
	}
	before, _ := s.List("", 0, 0)
	if fmt.Sprint(ids(before)) != "[992 993 994 995 996 997 998 999 1000 1001]" {
		t.Fatalf("List = %v", ids(before))
	}
	g.open()
	r.Close()
	s.Close()
	s = openOpts(t, Options{Path: path, MaxCount: 10})
	defer s.Close()
	after, _ := s.List("", 0, 0)
	if jsonOf(t, after) != jsonOf(t, before) || s.LastID() != 1001 {
		t.Fatalf("after reopen %v, last %d", ids(after), s.LastID())
	}
}

// rawLastID reads the persisted ID counter of a closed database.
func rawLastID(t *testing.T, path string) uint64 {
	t.Helper()
	return rawMeta(t, path, keyLastID)
}

// rawMeta reads a meta counter of a closed database.
func rawMeta(t *testing.T, path string, key []byte) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id uint64
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(key); len(v) == 8 {
			id = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}
