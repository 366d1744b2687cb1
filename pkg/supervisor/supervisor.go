// Package supervisor owns the lifecycle of the partitions: one state
// machine per partition, driven by Podman events, Wait and operator
// commands; restart with backoff and a start limit; adoption of a running
// partition when qmd starts; recovery when the Podman service goes away.
package supervisor

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/backoff"
	"github.com/containers/qmd/internal/clock"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/runtime"
)

// Options are the Supervisor's collaborators. Clock and Rand default to
// the real ones.
type Options struct {
	Runtime runtime.Runtime
	Sink    incident.Sink
	Log     *zap.Logger
	Clock   clock.Clock
	Rand    func() float64
	// Resources builds the resource policy of a running partition; nil
	// means none (resource methods then fail with ErrNoResourcePolicy).
	Resources ResourceFactory
	// ProcWatch, when set, reports the exit of the partition's init at once
	// (procwatch.Watch: a pidfd). Podman's events and Wait remain the
	// portable sources.
	ProcWatch func(ctx context.Context, pid int) (<-chan struct{}, error)
	// PodmanTimeout is the deadline of one Podman call; default 10 s.
	PodmanTimeout time.Duration
	// Reconnect bounds the delays between reconnection attempts.
	ReconnectInitial, ReconnectMax time.Duration
	// Restore, when set, gives a partition's counters as a previous qmd
	// left them (NRestarts survives a qmd restart or upgrade, as systemd's
	// does across a daemon re-exec). Called once per partition, before its
	// loop starts.
	Restore func(partition string) (nRestarts uint32)
	// RetryInitial and RetryMax bound the delays before a partition
	// retries work that failed on Podman (timeout, unavailable); default
	// 200 ms and 10 s.
	RetryInitial, RetryMax time.Duration
}

// Supervisor runs every configured partition.
type Supervisor struct {
	rt    runtime.Runtime
	sink  incident.Sink
	log   *zap.Logger
	clock clock.Clock
	rand  func() float64
	recon *backoff.Backoff

	restore                func(partition string) uint32
	newResources           ResourceFactory
	procWatch              func(ctx context.Context, pid int) (<-chan struct{}, error)
	podmanTimeout          time.Duration
	retryInitial, retryMax time.Duration

	podmanUp atomic.Bool
	running  atomic.Bool // Run's event loop is up (Health pings it)
	// streamCancel ends the current events subscription (Run's loop only).
	streamCancel context.CancelFunc
	// pings reach the event loop (the watchdog's health check).
	pings chan chan struct{}

	mu         sync.RWMutex
	cfg        *config.Config
	partitions map[string]*partition
	runCtx     context.Context
	wg         sync.WaitGroup

	subMu sync.Mutex
	subs  []func(Change)

	readyOnce sync.Once
	ready     chan struct{}
}

// New builds a supervisor for cfg; nothing runs until Run.
func New(cfg *config.Config, o Options) *Supervisor {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Sink == nil {
		o.Sink = incident.SinkFunc(func(i incident.Incident) incident.Incident { return i })
	}
	if o.ReconnectInitial == 0 {
		o.ReconnectInitial = 100 * time.Millisecond
	}
	if o.ReconnectMax == 0 {
		o.ReconnectMax = 5 * time.Second
	}
	if o.RetryInitial == 0 {
		o.RetryInitial = 200 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 10 * time.Second
	}
	s := &Supervisor{
		rt: o.Runtime, sink: o.Sink, log: o.Log, clock: o.Clock, rand: o.Rand,
		cfg: cfg, partitions: map[string]*partition{}, ready: make(chan struct{}),
		newResources: o.Resources, procWatch: o.ProcWatch, podmanTimeout: o.PodmanTimeout,
		retryInitial: o.RetryInitial, retryMax: o.RetryMax, pings: make(chan chan struct{}), restore: o.Restore,
	}
	if s.podmanTimeout <= 0 {
		s.podmanTimeout = 10 * time.Second
	}
	s.recon = backoff.New(o.ReconnectInitial, o.ReconnectMax)
	if o.Rand != nil {
		s.recon.Rand = o.Rand
	}
	return s
}

// resyncEvery is the period of each partition's reconcile tick.
func (s *Supervisor) resyncEvery() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.cfg.Policy.Resync.Duration; d > 0 {
		return d
	}
	return 30 * time.Second
}

// Subscribe registers f for every partition change. f runs on the
// partition's goroutine: it must not block.
func (s *Supervisor) Subscribe(f func(Change)) {
	s.subMu.Lock()
	s.subs = append(s.subs, f)
	s.subMu.Unlock()
}

func (s *Supervisor) publish(c Change) {
	s.subMu.Lock()
	subs := s.subs
	s.subMu.Unlock()
	for _, f := range subs {
		f(c)
	}
}

// Ready is closed once Podman was reached and every partition had its
// first reconcile.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Run supervises until ctx ends. It returns nil on cancellation.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	events, since := s.subscribe(ctx, time.Time{})
	s.running.Store(true)
	defer s.running.Store(false)
	s.mu.Lock()
	s.runCtx = ctx
	for i := range s.cfg.Partitions {
		s.startPartition(ctx, &s.cfg.Partitions[i])
	}
	parts := s.sortedLocked()
	s.mu.Unlock()
	go func() {
		for _, p := range parts {
			select {
			case <-p.ready:
			case <-ctx.Done():
				return
			}
		}
		s.readyOnce.Do(func() { close(s.ready) })
	}()
	defer s.shutdown()
	for {
		if events == nil {
			if s.streamCancel != nil {
				s.streamCancel()
				s.streamCancel = nil
			}
			// The stream ended: Podman went away. Reconnect, resubscribe
			// (replaying from the last event seen), then resync everyone.
			s.setPodman(false, "events stream closed")
			if err := s.connect(ctx); err != nil {
				return nil // only on ctx done
			}
			events, since = s.subscribe(ctx, since)
			if events == nil {
				continue
			}
			// Every partition looks again: what happened while Podman
			// was away is only in its current state.
			s.broadcast(func(p *partition) {
				p.setCond(PodmanDegraded, false, "podman reachable again")
				p.retry.Reset()
				p.clearRetry()
				p.invalidate()
			})
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case reply := <-s.pings:
			close(reply)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Time.After(since) {
				since = ev.Time
			}
			s.dispatch(ev)
		}
	}
}

// subscribe opens the events stream. since zero means "now". It answers
// health pings meanwhile and gives up after the Podman timeout: a Podman
// that does not answer is retried through the reconnect path.
func (s *Supervisor) subscribe(ctx context.Context, since time.Time) (<-chan runtime.Event, time.Time) {
	if since.IsZero() {
		since = s.clock.Now().Add(-time.Second)
	}
	type result struct {
		ch  <-chan runtime.Event
		err error
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan result, 1)
	go func() {
		ch, err := s.rt.Events(sctx, since)
		done <- result{ch, err}
	}()
	t := s.clock.NewTimer(s.podmanTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				cancel()
				s.log.Warn("subscribe to podman events failed", zap.Error(r.err))
				return nil, since
			}
			s.setPodman(true, "events stream open")
			// The stream's context ends with ctx (or when the stream
			// ends and Run subscribes again: the old one is cancelled
			// by then through its closed channel).
			s.streamCancel = cancel
			return r.ch, since
		case reply := <-s.pings:
			close(reply)
		case <-t.C():
			cancel()
			s.log.Warn("subscribe to podman events timed out", zap.Duration("after", s.podmanTimeout))
			return nil, since
		case <-ctx.Done():
			cancel()
			return nil, since
		}
	}
}

// connect retries with backoff until Podman answers or ctx ends.
func (s *Supervisor) connect(ctx context.Context) error {
	s.recon.Reset()
	for {
		err := s.rt.Connect(ctx)
		if err == nil {
			return nil
		}
		d := max(s.recon.Next(), 50*time.Millisecond)
		if s.recon.Attempts() == 1 || s.recon.Attempts()%20 == 0 {
			s.log.Warn("podman not reachable, retrying", zap.Error(err), zap.Duration("delay", d))
		}
		t := s.clock.NewTimer(d)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case reply := <-s.pings:
				close(reply)
			case <-t.C():
				break wait
			}
		}
	}
}

func (s *Supervisor) setPodman(up bool, reason string) {
	if s.podmanUp.Swap(up) == up {
		return
	}
	if up {
		s.log.Info("podman reachable", zap.String("reason", reason))
	} else {
		s.log.Warn("podman lost", zap.String("reason", reason))
		s.sink.Record(incident.Incident{Type: incident.PodmanLost, Summary: "podman service lost: " + reason})
		s.broadcast(func(p *partition) { p.setCond(PodmanDegraded, true, "podman lost: "+reason) })
	}
}

func (s *Supervisor) dispatch(ev runtime.Event) {
	s.mu.RLock()
	p := s.partitions[ev.Partition]
	s.mu.RUnlock()
	if p == nil {
		return
	}
	// Never wait for a partition here: a full inbox becomes a resync.
	p.tryPost(func() { p.handleEvent(ev) })
}

// broadcast runs f on every partition's loop (without waiting for busy ones:
// a full inbox becomes a resync, which is what f mostly asks for anyway).
func (s *Supervisor) broadcast(f func(p *partition)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.partitions {
		p.tryPost(func() { f(p) })
	}
}

func (s *Supervisor) startPartition(ctx context.Context, cfg *config.Partition) {
	p := newPartition(s, cfg)
	s.partitions[cfg.Name] = p
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.run(ctx)
	}()
}

func (s *Supervisor) shutdown() {
	s.wg.Wait()
	// Partitions are left running unless configured otherwise.
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.sortedLocked() {
		st, cfg := p.Status(), p.Config()
		if !cfg.StopOnExit || st.ContainerID == "" || st.State == Inactive {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout.Duration+s.podmanTimeout+5*time.Second)
		if err := s.rt.Stop(ctx, st.ContainerID, cfg.StopTimeout.Duration); err != nil {
			s.log.Error("stop on exit failed", zap.String("partition", st.Name), zap.Error(err))
		} else {
			s.log.Info("partition stopped on exit", zap.String("partition", st.Name))
		}
		cancel()
	}
}

func (s *Supervisor) sortedLocked() []*partition {
	out := make([]*partition, 0, len(s.partitions))
	for _, p := range s.partitions {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Statuses returns every partition's snapshot, sorted by name.
func (s *Supervisor) Statuses() []Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Status
	for _, p := range s.sortedLocked() {
		out = append(out, p.liveStatus())
	}
	return out
}

// Status returns one partition's snapshot.
func (s *Supervisor) Status(name string) (Status, error) {
	p, err := s.get(name)
	if err != nil {
		return Status{}, err
	}
	return p.liveStatus(), nil
}

// Config returns the partition's current configuration (a copy).
func (s *Supervisor) Config(name string) (config.Partition, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.cfg.Partition(name)
	if !ok {
		return config.Partition{}, fmt.Errorf("partition %q: %w", name, apierr.ErrNoSuchPartition)
	}
	return *c, nil
}

func (s *Supervisor) get(name string) (*partition, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.partitions[name]
	if !ok {
		return nil, fmt.Errorf("partition %q: %w", name, apierr.ErrNoSuchPartition)
	}
	return p, nil
}

// commandTimeout bounds how long a caller waits for the loop to take a
// command (it never blocks, so this only trips when qmd is wedged).
const commandTimeout = 5 * time.Second

func (s *Supervisor) do(name string, needPodman bool, f func(p *partition) error) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	if needPodman && !s.podmanUp.Load() {
		return fmt.Errorf("partition %q: %w", name, apierr.ErrPodmanUnavailable)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return p.call(ctx, func(reply func(error)) { reply(f(p)) })
}

// Start asks for the partition to run. It returns at once; the work shows
// up in the partition's state. A failed partition needs ResetFailed first.
func (s *Supervisor) Start(name string) error {
	return s.do(name, true, (*partition).cmdStart)
}

// Stop asks for the partition to stop; it stays stopped until Start.
func (s *Supervisor) Stop(name string) error {
	return s.do(name, true, (*partition).cmdStop)
}

// Restart stops and starts the partition (recreating a drifted container).
func (s *Supervisor) Restart(name string) error {
	return s.do(name, true, func(p *partition) error { return p.requestRestart("restart requested", false) })
}

// ResetFailed clears the failed state and the start limit, and starts the
// partition again.
func (s *Supervisor) ResetFailed(name string) error {
	return s.do(name, false, func(p *partition) error { p.resetFailed("failed state reset"); return nil })
}

// Reload applies a new, already validated configuration. Failed partitions
// are reset (a reload is how an operator says "try again"); new partitions
// start; changed policy is applied to running partitions; removed ones are
// no longer supervised: their containers are left running, or stopped when
// the removed partition had stop_on_exit.
func (s *Supervisor) Reload(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	if s.runCtx == nil {
		return nil
	}
	for i := range cfg.Partitions {
		pc := &cfg.Partitions[i]
		p, ok := s.partitions[pc.Name]
		if !ok {
			s.log.Info("new partition in configuration", zap.String("partition", pc.Name))
			s.startPartition(s.runCtx, pc)
			continue
		}
		if err := p.post(s.runCtx, func() { p.applyConfig(pc) }); err != nil {
			return err
		}
	}
	for name, p := range s.partitions {
		if _, ok := cfg.Partition(name); ok {
			continue
		}
		delete(s.partitions, name)
		if err := p.post(s.runCtx, p.remove); err != nil {
			return err
		}
	}
	return nil
}

// Health is the watchdog's check: the supervisor's own loops answer (the
// event loop and every partition loop). Podman's latency is not part of
// it: a slow Podman shows up as the podman-degraded condition, STATUS= and
// an incident, never as a missed ping.
func (s *Supervisor) Health(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case s.pings <- reply:
		<-reply
	case <-ctx.Done():
		if s.running.Load() {
			return fmt.Errorf("event loop does not answer: %w", ctx.Err())
		}
	}
	s.mu.RLock()
	parts := s.sortedLocked()
	s.mu.RUnlock()
	for _, p := range parts {
		if err := p.call(ctx, func(reply func(error)) { reply(nil) }); err != nil {
			return fmt.Errorf("partition %s: loop does not answer: %w", p.name, err)
		}
	}
	return nil
}

// PodmanUp reports whether the Podman service is reachable.
func (s *Supervisor) PodmanUp() bool { return s.podmanUp.Load() }
