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
	// PodmanTimeout is the deadline of one Podman call (for the health
	// check's idea of how long work may take); default 10 s.
	PodmanTimeout time.Duration
	// Reconnect bounds the delays between reconnection attempts.
	ReconnectInitial, ReconnectMax time.Duration
}

// Supervisor runs every configured partition.
type Supervisor struct {
	rt    runtime.Runtime
	sink  incident.Sink
	log   *zap.Logger
	clock clock.Clock
	rand  func() float64
	recon *backoff.Backoff

	newResources  ResourceFactory
	procWatch     func(ctx context.Context, pid int) (<-chan struct{}, error)
	podmanTimeout time.Duration

	podmanUp atomic.Bool

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
	s := &Supervisor{
		rt: o.Runtime, sink: o.Sink, log: o.Log, clock: o.Clock, rand: o.Rand,
		cfg: cfg, partitions: map[string]*partition{}, ready: make(chan struct{}),
		newResources: o.Resources, procWatch: o.ProcWatch, podmanTimeout: o.PodmanTimeout,
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
			s.broadcast(cmdResync)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
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

// subscribe opens the events stream. since zero means "now".
func (s *Supervisor) subscribe(ctx context.Context, since time.Time) (<-chan runtime.Event, time.Time) {
	if since.IsZero() {
		since = s.clock.Now().Add(-time.Second)
	}
	ch, err := s.rt.Events(ctx, since)
	if err != nil {
		s.log.Warn("subscribe to podman events failed", zap.Error(err))
		return nil, since
	}
	s.setPodman(true, "events stream open")
	return ch, since
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
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
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
	}
}

func (s *Supervisor) dispatch(ev runtime.Event) {
	s.mu.RLock()
	p := s.partitions[ev.Partition]
	s.mu.RUnlock()
	if p == nil {
		return
	}
	select {
	case p.events <- ev:
	default:
		// The partition is busy; a resync catches up on what it missed.
		_ = p.send(cmdResync)
	}
}

func (s *Supervisor) broadcast(c command) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.partitions {
		_ = p.send(c)
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
		st := p.Status()
		if !p.cfg.StopOnExit || st.ContainerID == "" || st.State == Inactive {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.StopTimeout.Duration+5*time.Second)
		if err := s.rt.Stop(ctx, st.ContainerID, p.cfg.StopTimeout.Duration); err != nil {
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
	sort.Slice(out, func(i, j int) bool { return out[i].cfg.Name < out[j].cfg.Name })
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

func (s *Supervisor) do(name string, c command) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	if !s.podmanUp.Load() && c != cmdResetFailed {
		return fmt.Errorf("partition %q: %w", name, apierr.ErrPodmanUnavailable)
	}
	return p.request(c)
}

// Start asks for the partition to run. It returns at once; the work shows
// up in the partition's state. A failed partition needs ResetFailed first.
func (s *Supervisor) Start(name string) error { return s.do(name, cmdStart) }

// Stop asks for the partition to stop; it stays stopped until Start.
func (s *Supervisor) Stop(name string) error { return s.do(name, cmdStop) }

// Restart stops and starts the partition (recreating a drifted container).
func (s *Supervisor) Restart(name string) error { return s.do(name, cmdRestart) }

// ResetFailed clears the failed state and the start limit, and starts the
// partition again.
func (s *Supervisor) ResetFailed(name string) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	if p.Status().State != Failed {
		return nil
	}
	return p.send(cmdResetFailed)
}

// Reload applies a new, already validated configuration. Failed partitions
// are reset (a reload is how an operator says "try again"); new partitions
// start; removed ones are no longer supervised (their containers are left
// as they are).
func (s *Supervisor) Reload(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runCtx == nil {
		s.cfg = cfg
		return nil
	}
	s.cfg = cfg
	for i := range cfg.Partitions {
		pc := &cfg.Partitions[i]
		p, ok := s.partitions[pc.Name]
		if !ok {
			s.log.Info("new partition in configuration", zap.String("partition", pc.Name))
			s.startPartition(s.runCtx, pc)
			continue
		}
		select {
		case p.configs <- pc:
		default:
			// A previous reload is still queued: replace it.
			select {
			case <-p.configs:
			default:
			}
			p.configs <- pc
		}
		_ = p.send(cmdResetFailed)
	}
	for name := range s.partitions {
		if _, ok := cfg.Partition(name); !ok {
			s.log.Warn("partition removed from configuration; no longer supervised, container left as is",
				zap.String("partition", name))
		}
	}
	return nil
}

// Health is the watchdog's check: Podman answers and every partition's
// loop is alive (it answers a ping between two pieces of work).
func (s *Supervisor) Health(ctx context.Context) error {
	if err := s.rt.Ping(ctx); err != nil {
		return fmt.Errorf("podman: %w", err)
	}
	s.mu.RLock()
	parts := s.sortedLocked()
	s.mu.RUnlock()
	for _, p := range parts {
		if since := p.busy.Load(); since != 0 {
			// Busy with bounded Podman work: healthy unless stuck beyond
			// every timeout that work has.
			if d := time.Since(time.Unix(0, since)); d > p.maxBusy() {
				return fmt.Errorf("partition %s: loop stuck for %s", p.cfg.Name, d.Round(time.Second))
			}
			continue
		}
		reply := make(chan struct{})
		select {
		case p.pings <- reply:
		case <-ctx.Done():
			if since := p.busy.Load(); since != 0 && time.Since(time.Unix(0, since)) <= p.maxBusy() {
				continue // it took up work meanwhile
			}
			return fmt.Errorf("partition %s: loop does not answer: %w", p.cfg.Name, ctx.Err())
		}
		select {
		case <-reply:
		case <-ctx.Done():
			return fmt.Errorf("partition %s: loop did not answer: %w", p.cfg.Name, ctx.Err())
		}
	}
	return nil
}

// PodmanUp reports whether the Podman service is reachable.
func (s *Supervisor) PodmanUp() bool { return s.podmanUp.Load() }
