package incident

import (
	"sync"
	"sync/atomic"
)

// DefaultSubscriberBuffer is how many incidents a subscriber may lag behind
// before newer ones are dropped for it.
const DefaultSubscriberBuffer = 256

// Recorder is the Sink the supervisor records into: it stores each incident
// (which assigns ID and Time) and then hands it to every subscriber (the
// D-Bus server emits IncidentNew, the logger writes a journal line).
//
// Subscribers run on their own goroutine each, behind a bounded buffer: a
// slow or stuck subscriber never blocks Record (and so never blocks the
// supervisor); when its buffer is full, incidents are dropped for that
// subscriber only and counted (see Dropped). Subscribers see incidents in
// ID order. A Recorder is safe for concurrent use.
type Recorder struct {
	store   *Store
	onError func(error) // persistence failures (store now degraded); may be nil

	mu     sync.Mutex // orders Add + fan-out, guards subs
	subs   map[*subscriber]struct{}
	closed bool
	wg     sync.WaitGroup
}

type subscriber struct {
	ch      chan Incident
	fn      func(Incident)
	dropped atomic.Uint64
	once    sync.Once
}

// NewRecorder returns a Recorder storing into s. onError, when not nil, is
// called (synchronously, keep it short) when an incident could not be
// persisted.
func NewRecorder(s *Store, onError func(error)) *Recorder {
	return &Recorder{store: s, onError: onError, subs: map[*subscriber]struct{}{}}
}

// Store returns the underlying store.
func (r *Recorder) Store() *Store { return r.store }

// Record implements Sink: it stores inc and fans it out. It returns the
// stored incident (with ID and Time set).
func (r *Recorder) Record(inc Incident) Incident {
	r.mu.Lock()
	defer r.mu.Unlock()
	stored, err := r.store.Add(inc)
	if err != nil && r.onError != nil {
		r.onError(err)
	}
	if r.closed {
		return stored
	}
	for s := range r.subs {
		select {
		case s.ch <- cloneIncident(stored):
		default:
			s.dropped.Add(1)
		}
	}
	return stored
}

// Subscription is returned by Subscribe.
type Subscription struct {
	r *Recorder
	s *subscriber
}

// Subscribe calls fn for every incident recorded from now on, on a
// goroutine of its own, with up to buffer (<= 0: DefaultSubscriberBuffer)
// incidents queued.
func (r *Recorder) Subscribe(buffer int, fn func(Incident)) *Subscription {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &subscriber{ch: make(chan Incident, buffer), fn: fn}
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

// Close stops every subscription and waits until the queued incidents were
// delivered. Record keeps storing after Close, without fan-out. Close does
// not close the store.
func (r *Recorder) Close() {
	r.mu.Lock()
	r.closed = true
	for s := range r.subs {
		delete(r.subs, s)
		s.once.Do(func() { close(s.ch) })
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func cloneIncident(inc Incident) Incident {
	inc.Details = cloneDetails(inc.Details)
	return inc
}
