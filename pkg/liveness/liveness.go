// Package liveness tells whether a partition's systemd still answers: the
// last rung of qmd's reaction ladder restarts the whole partition when its
// init is gone (the supervisor sees that from Podman and the kernel) or when
// its systemd is alive but hung, which only a question to systemd shows.
//
// The question goes to systemd through the partition's own system bus,
// reached through the init's mount namespace
// (/proc/<pid>/root/run/dbus/system_bus_socket): the partition has a private
// network, but that is a filesystem socket. systemd's private socket
// (/run/systemd/private) cannot be used from the host: systemd refuses every
// peer whose pid it cannot see, and qmd lives outside the partition's PID
// namespace ("Incoming private connection from unprivileged client,
// refusing: No data available", systemd 252). The bus daemon forwards the
// ping to systemd, so the answer needs both, as every systemctl call inside
// the partition does.
//
// A Monitor asks on an interval, never counts failures before systemd first
// answered (it may take tens of seconds to boot under emulation) unless a
// long grace is over, requires several failures in a row, does not count
// while the partition is throttled or frozen (a stall qmd caused or an
// operator asked for is no reason to restart) nor a failure while the
// partition was starved of CPU by the host (its idle class or lowest weight
// against a busy host: slow, not hung), and reports once.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// DefaultSocketPattern is the partition's system bus as seen from the
// host; %d is the init's host pid.
const DefaultSocketPattern = "/proc/%d/root/run/dbus/system_bus_socket"

// Systemd is systemd's name and object on the bus.
const (
	SystemdName = "org.freedesktop.systemd1"
	SystemdPath = "/org/freedesktop/systemd1"
)

// ErrNoSocket means the partition offers no system bus: its init is not
// systemd (a shell, a sleep), or the bus has not started yet.
var ErrNoSocket = errors.New("no system bus socket in the partition")

// ErrNoSystemd means the partition's bus answered that systemd is not on
// it: the init is not systemd, or systemd has not connected yet. Before
// systemd first answered that is nothing to count; after, it is a failure.
var ErrNoSystemd = errors.New("systemd is not on the partition's bus")

// absent: nothing to ask (yet).
func absent(err error) bool { return errors.Is(err, ErrNoSocket) || errors.Is(err, ErrNoSystemd) }

// ErrRejected means the bus answered but refused the probe (authentication
// or policy): the partition is alive, and the probe cannot work on it.
// Never a reason to restart.
var ErrRejected = errors.New("probe rejected by the partition's bus")

// Prober asks the partition's init once.
type Prober interface {
	// Probe returns nil when systemd answered within ctx, ErrNoSocket or
	// ErrRejected (wrapped) when there is nothing to ask, any other error
	// when it did not answer.
	Probe(ctx context.Context) error
}

// DBusProber pings systemd through a message bus on a unix socket.
type DBusProber struct {
	Path string
	// Target is the bus name pinged (SystemdName when empty; tests stand
	// another peer in).
	Target string
}

// SocketPath is the system bus of the partition whose init has host pid
// pid, under pattern (DefaultSocketPattern when empty).
func SocketPath(pattern string, pid int) string {
	if pattern == "" {
		pattern = DefaultSocketPattern
	}
	return fmt.Sprintf(pattern, pid)
}

// Probe connects, authenticates (EXTERNAL: qmd runs as root, the
// partition's root as far as the bus is concerned), registers (Hello) and
// calls org.freedesktop.DBus.Peer.Ping on systemd, which answers from its
// main event loop: a hung manager does not answer. Every step is bounded
// by ctx's deadline, including the connect and the authentication (a
// stopped process accepts connections into its backlog and then never
// answers).
func (p DBusProber) Probe(ctx context.Context) error {
	err := p.probe(ctx)
	if err != nil && ctx.Err() != nil && !absent(err) && !errors.Is(err, ErrRejected) {
		// The connection was closed under a blocked read: say why.
		return fmt.Errorf("%s: no answer in time: %w (%v)", p.Path, ctx.Err(), err)
	}
	return err
}

func (p DBusProber) probe(ctx context.Context) error {
	fi, err := os.Stat(p.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w", p.Path, ErrNoSocket)
	case err != nil:
		return fmt.Errorf("stat %s: %w", p.Path, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s is not a socket: %w", p.Path, ErrNoSocket)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", p.Path)
	if err != nil {
		return fmt.Errorf("connect %s: %w", p.Path, err)
	}
	defer func() { _ = nc.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// A context that ends before the deadline (qmd stopping) closes the
	// connection, which ends any blocked read.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	conn, err := dbus.NewConn(nc, dbus.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("d-bus connection %s: %w", p.Path, err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(fmt.Sprint(os.Getuid()))}); err != nil {
		if ctx.Err() == nil && !isNetError(err) {
			// The bus read our request and said no.
			return fmt.Errorf("d-bus authentication on %s: %v: %w", p.Path, err, ErrRejected)
		}
		return fmt.Errorf("d-bus authentication on %s: %w", p.Path, err)
	}
	if err := conn.Hello(); err != nil {
		return fmt.Errorf("d-bus hello on %s: %w", p.Path, err)
	}
	target := p.Target
	if target == "" {
		target = SystemdName
	}
	call := conn.Object(target, SystemdPath).CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0)
	return classify(call.Err, fmt.Sprintf("ping %s on %s", target, p.Path))
}

// classify maps the outcome of the ping to what it means for the probe.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	var derr dbus.Error
	if !errors.As(err, &derr) {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch derr.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		return fmt.Errorf("%s: %v: %w", what, err, ErrNoSystemd)
	case "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout",
		"org.freedesktop.DBus.Error.TimedOut", "org.freedesktop.DBus.Error.Disconnected":
		// The bus answered for systemd: it is not on the bus, or did not
		// answer the bus in time.
		return fmt.Errorf("%s: %w", what, err)
	case "org.freedesktop.DBus.Error.AccessDenied":
		return fmt.Errorf("%s: %v: %w", what, err, ErrRejected)
	}
	// Any other error reply (unknown method, ...) came from systemd
	// itself: its main loop answered.
	return nil
}

// isNetError tells a transport failure (timeout, reset, closed) from a
// protocol answer.
func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Config is how a Monitor asks.
type Config struct {
	Interval time.Duration // between two questions
	Timeout  time.Duration // for one answer
	Failures int           // consecutive unanswered questions that make it unresponsive
	// Grace: failures before systemd first answered count only once this
	// long has passed since the Monitor started.
	Grace time.Duration
}

// Decision is what one probe result means.
type Decision int

// Decisions of Tracker.Observe.
const (
	Keep         Decision = iota // nothing to do
	Unresponsive                 // the init stopped answering: restart the partition (reported once)
)

// Tracker is the Monitor's pure state: what a sequence of probe results
// means. Not safe for concurrent use.
type Tracker struct {
	cfg      Config
	start    time.Time
	answered bool // systemd answered at least once
	fails    int  // consecutive counted failures
	paused   bool // throttled or frozen: failures are not counted
	fired    bool
}

// NewTracker starts tracking at start.
func NewTracker(cfg Config, start time.Time) *Tracker {
	if cfg.Failures < 1 {
		cfg.Failures = 1
	}
	return &Tracker{cfg: cfg, start: start}
}

// Pause stops (on) or resumes (off) counting failures. Resuming starts the
// count afresh: the stall that paused it is no evidence of a hang.
func (t *Tracker) Pause(on bool) {
	if t.paused && !on {
		t.fails = 0
	}
	t.paused = on
}

// Failures is the current count of consecutive failures.
func (t *Tracker) Failures() int { return t.fails }

// Answered reports whether systemd answered at least once.
func (t *Tracker) Answered() bool { return t.answered }

// Observe takes one probe result at now.
func (t *Tracker) Observe(now time.Time, err error) Decision {
	if t.fired {
		return Keep
	}
	switch {
	case err == nil:
		t.answered, t.fails = true, 0
		return Keep
	case absent(err) && !t.answered:
		// Not systemd (or not yet): nothing to ask, nothing to count.
		return Keep
	case errors.Is(err, ErrRejected):
		// Alive, but the probe cannot work here: never a restart.
		return Keep
	case t.paused:
		return Keep
	case !t.answered && now.Sub(t.start) < t.cfg.Grace:
		return Keep // still booting
	}
	t.fails++
	if t.fails >= t.cfg.Failures {
		t.fired = true
		return Unresponsive
	}
	return Keep
}

// Options are a Monitor's collaborators.
type Options struct {
	Config Config
	Prober Prober
	Log    *zap.Logger
	// OnUnresponsive is called once when the init stopped answering: the
	// caller records an incident and restarts the partition (killing it).
	OnUnresponsive func(reason string, details map[string]string)
	// Starved is the partition's cumulative time in which all its
	// runnable tasks waited for a CPU (cpu.pressure "full"); ok false:
	// unknown. A failed probe during which that grew by at least half
	// the probe's time is not counted: the host starved the partition
	// (its CPU class ranks it below every host task), which the plain
	// containers/qm setup would not restart for either. A hung systemd
	// is not runnable, and a CPU hog inside the partition keeps some of
	// its tasks running, so neither shows up there. nil: not asked.
	Starved func() (total time.Duration, ok bool)
	// Now and After default to the real clock (tests drive them).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// Monitor probes on an interval until ctx ends or it reported the init
// unresponsive.
type Monitor struct {
	o     Options
	pause chan bool
}

// NewMonitor builds a monitor; nothing runs until Run.
func NewMonitor(o Options) *Monitor {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
	return &Monitor{o: o, pause: make(chan bool, 8)}
}

// Pause stops (true) or resumes (false) counting failures: while the
// partition is throttled or frozen its systemd may well be slow to answer.
// It never blocks; Run takes it before the next probe.
func (m *Monitor) Pause(on bool) {
	select {
	case m.pause <- on:
	default:
		// Eight pending changes: drop the oldest, keep the newest.
		select {
		case <-m.pause:
		default:
		}
		select {
		case m.pause <- on:
		default:
		}
	}
}

// starved reads Options.Starved.
func (m *Monitor) starved() (time.Duration, bool) {
	if m.o.Starved == nil {
		return 0, false
	}
	return m.o.Starved()
}

// Run probes until ctx ends or the init was found unresponsive.
func (m *Monitor) Run(ctx context.Context) error {
	cfg := m.o.Config
	t := NewTracker(cfg, m.o.Now())
	loggedIdle, loggedRejected := false, false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case on := <-m.pause:
			t.Pause(on)
			continue
		case <-m.o.After(cfg.Interval):
		}
		// Take every pause change that arrived meanwhile.
		for drained := false; !drained; {
			select {
			case on := <-m.pause:
				t.Pause(on)
			default:
				drained = true
			}
		}
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		starved0, knownStarved := m.starved()
		began := m.o.Now()
		err := m.o.Prober.Probe(pctx)
		took := m.o.Now().Sub(began)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && !t.Answered() {
			m.o.Log.Info("liveness probe armed: the partition's systemd answers",
				zap.Duration("after", m.o.Now().Sub(t.start)))
		}
		// Each kind of "nothing to ask" is logged once per init.
		idle := absent(err) && !t.Answered()
		rejected := errors.Is(err, ErrRejected)
		switch {
		case idle && !loggedIdle:
			loggedIdle = true
			m.o.Log.Info("liveness probe idle: no systemd to ask in the partition (not systemd, or not up yet)", zap.Error(err))
		case rejected && !loggedRejected:
			loggedRejected = true
			m.o.Log.Warn("liveness probe off: the partition's bus refuses it", zap.Error(err))
		}
		if err != nil && !idle && !rejected {
			if starved1, ok := m.starved(); knownStarved && ok && starved1 > starved0 && 2*(starved1-starved0) >= took {
				m.o.Log.Info("liveness probe unanswered while the host starved the partition of CPU: not counted",
					zap.Error(err), zap.Duration("probe", took), zap.Duration("starved", starved1-starved0))
				continue
			}
			m.o.Log.Debug("liveness probe failed", zap.Error(err), zap.Int("failures", t.Failures()+1))
		}
		if t.Observe(m.o.Now(), err) == Unresponsive {
			reason := fmt.Sprintf("the partition's systemd did not answer %d times in a row (interval %s, timeout %s)",
				t.Failures(), cfg.Interval, cfg.Timeout)
			details := map[string]string{
				"failures": fmt.Sprint(t.Failures()), "interval": cfg.Interval.String(),
				"timeout": cfg.Timeout.String(), "last_error": err.Error(),
				"last_probe_ms": fmt.Sprint(m.o.Now().Sub(began).Milliseconds()),
			}
			if m.o.OnUnresponsive != nil {
				m.o.OnUnresponsive(reason, details)
			}
			return nil
		}
	}
}
