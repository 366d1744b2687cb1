package incident

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Recorder defaults.
const (
	// DefaultSubscriberBuffer is how many incidents a subscriber may lag
	// behind before newer ones are dropped for it.
	DefaultSubscriberBuffer = 256
	// DefaultCoalesceWindow: repeats of an incident within this time of the
	// first occurrence update that record instead of adding new ones.
	DefaultCoalesceWindow = 10 * time.Second
	// DefaultDropReportInterval: a subscriber that keeps dropping is
	// reported to OnSubscriberDrop at most once per this interval.
	DefaultDropReportInterval = time.Minute
)

// Details keys set on a coalesced record (values: decimal count, times in
// RFC 3339 with nanoseconds, UTC).
const (
	DetailCount = "count" // occurrences merged into the record, the first included
	DetailFirst = "first" // Time of the first occurrence
	DetailLast  = "last"  // Time of the latest occurrence
)

// RecorderOptions configure a Recorder. The zero value means: no error
// hook, DefaultCoalesceWindow, no drop hook, DefaultDropReportInterval.
type RecorderOptions struct {
	// OnError is called when incidents could not be persisted (the store
	// is then degraded and keeps them in memory). It is called from the
	// store's writer goroutine, once per degradation (see
	// Options.OnWriteError); keep it short.
	OnError func(error)
	// OnRecover is called when the degraded store got its database back
	// (see Options.OnRecover), from the store's writer goroutine; keep it
	// short.
	OnRecover func()

	// CoalesceWindow: an incident with the same partition, type and
	// summary as a record whose first occurrence is less than
	// CoalesceWindow older does not create a record; it updates that one
	// (DetailCount, DetailFirst, DetailLast; the other details stay those
	// of the first occurrence) and is not fanned out to subscribers. The
	// first occurrence after the window starts a new record, which is
	// fanned out: a storm yields one record and one notification per
	// window. 0 means DefaultCoalesceWindow; negative disables coalescing.
	CoalesceWindow time.Duration

	// OnSubscriberDrop, when not nil, is called when a subscriber starts
	// dropping incidents (its buffer is full), then at most once per
	// DropReportInterval per subscriber while it keeps dropping. It runs
	// on the goroutine calling Record, after Record released its locks:
	// keep it short (log a line) and do not call Record from it.
	OnSubscriberDrop func(SubscriberDrop)
	// DropReportInterval: 0 means DefaultDropReportInterval.
	DropReportInterval time.Duration
}

// SubscriberDrop reports a subscriber that drops incidents.
type SubscriberDrop struct {
	Name    string // as given to SubscribeNamed ("" for Subscribe)
	Buffer  int    // the subscriber's buffer size
	Dropped uint64 // dropped for this subscriber so far
	New     uint64 // dropped since the previous report for it
}

// Stats is a snapshot of a Recorder's counters; see Recorder.Stats.
type Stats struct {
	Recorded        uint64    // Record calls
	Coalesced       uint64    // Record calls merged into an earlier record (no new record, no fan-out)
	Pending         int       // records (new or updated) not yet on disk
	Subscribers     int       // current subscriptions
	SubscriberDrops uint64    // incidents dropped for slow subscribers, summed over all subscribers ever
	WriteErrors     uint64    // failed store commits (the first one degrades the store)
	LastFlush       time.Time // end of the last successful store commit; zero if none
	Degraded        bool      // the store works in memory only, now (see Store.Degraded)
}

// Recorder is the Sink the supervisor records into: it assigns each
// incident its ID and Time, makes it visible in the store at once, hands
// it to every subscriber (the D-Bus server emits IncidentNew, the logger
// writes a journal line) and queues it for the store's writer. Record
// never waits for the disk: the store commits in batches on its own
// goroutine (see Store); Flush and Close wait for that.
//
// Repeats of an incident are coalesced (see RecorderOptions.CoalesceWindow)
// so that a storm (a fork bomb's pids.max events every 10 ms) neither
// floods the bounded history nor the subscribers.
//
// Subscribers run on their own goroutine each, behind a bounded buffer: a
// slow or stuck subscriber never blocks Record (and so never blocks the
// supervisor); when its buffer is full, incidents are dropped for that
// subscriber only, counted (see Dropped and Stats) and reported (see
// RecorderOptions.OnSubscriberDrop). Subscribers see incidents in ID
// order. A Recorder is safe for concurrent use.
type Recorder struct {
	store        *Store
	window       time.Duration // <= 0: no coalescing
	onDrop       func(SubscriberDrop)
	dropInterval time.Duration

	recorded  atomic.Uint64
	coalesced atomic.Uint64
	drops     atomic.Uint64

	mu        sync.Mutex // orders ID assignment + fan-out, guards the rest
	subs      map[*subscriber]struct{}
	series    map[seriesKey]*series
	lastSweep time.Time
	closed    bool
	wg        sync.WaitGroup
}

type subscriber struct {
	name    string
	ch      chan Incident
	fn      func(Incident)
	dropped atomic.Uint64
	once    sync.Once

	// guarded by Recorder.mu
	reportedAt   time.Time
	reportedDrop uint64
}

// seriesKey identifies repeats of an incident.
type seriesKey struct {
	partition string
	typ       Type
	summary   string
}

// series is the record repeats are merged into.
type series struct {
	rec   Incident // as stored, with coalescing details once count > 1
	first time.Time
	count uint64
}

// NewRecorder returns a Recorder storing into s with the default options.
// onError, when not nil, is called (keep it short) when incidents could
// not be persisted.
func NewRecorder(s *Store, onError func(error)) *Recorder {
	return NewRecorderWithOptions(s, RecorderOptions{OnError: onError})
}

// NewRecorderWithOptions returns a Recorder storing into s.
func NewRecorderWithOptions(s *Store, opts RecorderOptions) *Recorder {
	if opts.CoalesceWindow == 0 {
		opts.CoalesceWindow = DefaultCoalesceWindow
	}
	if opts.DropReportInterval <= 0 {
		opts.DropReportInterval = DefaultDropReportInterval
	}
	r := &Recorder{store: s, window: opts.CoalesceWindow,
		onDrop: opts.OnSubscriberDrop, dropInterval: opts.DropReportInterval,
		subs: map[*subscriber]struct{}{}, series: map[seriesKey]*series{}}
	if opts.OnError != nil {
		s.onWriteError(opts.OnError)
	}
	if opts.OnRecover != nil {
		s.onRecover(opts.OnRecover)
	}
	return r
}

// Store returns the underlying store.
func (r *Recorder) Store() *Store { return r.store }

// Record implements Sink: it stores inc (asynchronously: it never waits
// for the disk) and fans it out. It returns the stored incident (with ID
// and Time set); for a repeat within the coalescing window, the record it
// was merged into, with its updated count.
func (r *Recorder) Record(inc Incident) Incident {
	r.recorded.Add(1)
	var reports []SubscriberDrop
	defer func() {
		for _, d := range reports {
			r.onDrop(d)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	if inc.Time.IsZero() {
		inc.Time = r.store.now()
	}
	key := seriesKey{inc.Partition, inc.Type, inc.Summary}
	if r.window > 0 {
		r.sweepLocked(inc.Time)
		if ser := r.series[key]; ser != nil {
			if d := inc.Time.Sub(ser.first); d >= 0 && d < r.window {
				return r.coalesceLocked(ser, inc.Time)
			}
		}
	}
	stored, _ := r.store.addAsync(inc)
	if r.window > 0 {
		r.series[key] = &series{rec: cloneIncident(stored), first: stored.Time, count: 1}
	}
	if r.closed {
		return stored
	}
	now := time.Now()
	for s := range r.subs {
		select {
		case s.ch <- cloneIncident(stored):
		default:
			n := s.dropped.Add(1)
			r.drops.Add(1)
			if r.onDrop != nil && (s.reportedAt.IsZero() || now.Sub(s.reportedAt) >= r.dropInterval) {
				reports = append(reports, SubscriberDrop{Name: s.name, Buffer: cap(s.ch), Dropped: n, New: n - s.reportedDrop})
				s.reportedAt, s.reportedDrop = now, n
			}
		}
	}
	return stored
}

// coalesceLocked merges an occurrence at t into ser's record and queues
// the updated record. Called with r.mu held.
func (r *Recorder) coalesceLocked(ser *series, t time.Time) Incident {
	r.coalesced.Add(1)
	ser.count++
	rec := ser.rec
	rec.Details = cloneDetails(rec.Details)
	if rec.Details == nil {
		rec.Details = make(map[string]string, 3)
	}
	rec.Details[DetailCount] = strconv.FormatUint(ser.count, 10)
	rec.Details[DetailFirst] = ser.first.UTC().Format(time.RFC3339Nano)
	rec.Details[DetailLast] = t.UTC().Format(time.RFC3339Nano)
	ser.rec = rec
	r.store.update(rec)
	return cloneIncident(rec)
}

// sweepLocked forgets series whose window is over, at most once per
// window. Called with r.mu held.
func (r *Recorder) sweepLocked(now time.Time) {
	if d := now.Sub(r.lastSweep); d >= 0 && d < r.window {
		return
	}
	r.lastSweep = now
	for k, ser := range r.series {
		if d := now.Sub(ser.first); d < 0 || d >= r.window {
			delete(r.series, k)
		}
	}
}

// Stats returns the Recorder's counters, including its store's writer.
// Safe to call from any goroutine, also from OnSubscriberDrop.
func (r *Recorder) Stats() Stats {
	st := r.store.Stats()
	degraded, _ := r.store.Degraded()
	r.mu.Lock()
	subs := len(r.subs)
	r.mu.Unlock()
	return Stats{
		Recorded:        r.recorded.Load(),
		Coalesced:       r.coalesced.Load(),
		Pending:         st.Pending,
		Subscribers:     subs,
		SubscriberDrops: r.drops.Load(),
		WriteErrors:     st.WriteErrors,
		LastFlush:       st.LastFlush,
		Degraded:        degraded,
	}
}

// Flush waits until every incident recorded so far is on disk; see
// Store.Flush.
func (r *Recorder) Flush(ctx context.Context) error { return r.store.Flush(ctx) }

// Subscription is returned by Subscribe.
type Subscription struct {
	r *Recorder
	s *subscriber
}

// Subscribe calls fn for every incident recorded from now on, on a
// goroutine of its own, with up to buffer (<= 0: DefaultSubscriberBuffer)
// incidents queued.
func (r *Recorder) Subscribe(buffer int, fn func(Incident)) *Subscription {
	return r.SubscribeNamed("", buffer, fn)
}

// SubscribeNamed is Subscribe with a name that identifies the subscriber
// in SubscriberDrop reports ("journal", "dbus").
func (r *Recorder) SubscribeNamed(name string, buffer int, fn func(Incident)) *Subscription {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &subscriber{name: name, ch: make(chan Incident, buffer), fn: fn}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		close(s.ch)
		return &Subscription{r: r, s: s}
	}
	r.subs[s] = struct{}{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for inc := range s.ch {
			s.fn(inc)
		}
	}()
	return &Subscription{r: r, s: s}
}

// Dropped is how many incidents this subscriber missed because it was too
// slow.
func (sub *Subscription) Dropped() uint64 { return sub.s.dropped.Load() }

// Cancel stops the subscription; incidents already queued are still
// delivered.
func (sub *Subscription) Cancel() {
	sub.r.mu.Lock()
	defer sub.r.mu.Unlock()
	if _, ok := sub.r.subs[sub.s]; ok {
		delete(sub.r.subs, sub.s)
		sub.s.once.Do(func() { close(sub.s.ch) })
	}
}

// Close stops every subscription, waits until the queued incidents were
// delivered, then until every incident recorded so far is on disk (a
// failure to persist was reported to OnError when it happened). Record
// keeps storing after Close, without fan-out. Close does not close the
// store.
func (r *Recorder) Close() {
	r.mu.Lock()
	r.closed = true
	for s := range r.subs {
		delete(r.subs, s)
		s.once.Do(func() { close(s.ch) })
	}
	r.mu.Unlock()
	r.wg.Wait()
	_ = r.store.Flush(context.Background())
}

func cloneIncident(inc Incident) Incident {
	inc.Details = cloneDetails(inc.Details)
	return inc
}
