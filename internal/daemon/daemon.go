//go:build remote

// Package daemon wires qmd's subsystems together: configuration, logger,
// incident store, Podman client, supervisor, D-Bus server, systemd
// notification and watchdog, signals.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/diskbudget"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/logging"
	"github.com/containers/qmd/internal/podman"
	"github.com/containers/qmd/internal/procwatch"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Options are the daemon's command-line settings.
type Options struct {
	// ConfigFiles replaces the default search when non-empty (--config).
	ConfigFiles []string
	// LogLevel overrides log.level when set (--log-level).
	LogLevel string
	// Resources builds the resource policy; nil runs without one. prot
	// is the host-level protector (nil when it could not be made).
	Resources func(cfg *config.Config, log *zap.Logger, prot *protect.Protector) supervisor.ResourceFactory
}

// LoadConfig reads and checks the configuration as the daemon would.
func LoadConfig(files []string) (*config.Config, error) {
	if len(files) == 0 {
		var err error
		if files, err = config.Files(); err != nil {
			return nil, err
		}
	}
	cfg, err := config.Load(files)
	if err != nil {
		return nil, err
	}
	if err := config.Prepare(cfg, config.OSHost{}); err != nil {
		return nil, err
	}
	// The freedom-from-interference lint: warnings, or with [policy]
	// strict = true an error that refuses the start or the reload.
	cfg.Findings = config.Lint(cfg, config.OSLintHost())
	if err := config.StrictError(cfg, cfg.Findings); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Run is the daemon: it returns when ctx ends or on a fatal error. It
// installs its own SIGHUP handler; the caller cancels ctx on SIGTERM.
func Run(ctx context.Context, opts Options) error {
	// Early, so that a SIGHUP during start-up is queued, not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := LoadConfig(opts.ConfigFiles)
	if err != nil {
		return err
	}
	if opts.LogLevel != "" {
		cfg.Log.Level = opts.LogLevel
	}
	level := zap.NewAtomicLevel()
	log, err := logging.New(logging.Options{Mode: logging.Mode(cfg.Log.Format), Level: cfg.Log.Level, AtomicLevel: level})
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer func() { _ = log.Sync() }()
	log.Info("qmd starting", zap.String("version", Version), zap.Strings("config", cfg.Sources),
		zap.Int("partitions", len(cfg.Partitions)))
	for _, w := range cfg.Warnings {
		log.Warn("configuration adjusted to this host", zap.String("reason", w))
	}
	logFindings(log, cfg)

	store := incident.Open(incident.Options{Path: cfg.Incidents.Path, MaxCount: cfg.Incidents.Max})
	if bad, why := store.Degraded(); bad {
		log.Error("incident store unavailable; incidents are kept in memory only", zap.String("reason", why))
	}
	defer func() { _ = store.Close() }()
	// Incidents are written to disk by the store's own writer in batches:
	// recording one never waits for the disk (a restart is never delayed by
	// an fsync), repeats within 10 s are coalesced, and a subscriber that
	// cannot keep up loses incidents for itself only, which is counted
	// (Manager.IncidentsDropped) and logged at most once a minute.
	var srv atomic.Pointer[dbusapi.Server]
	managerChanged := func() {
		if s := srv.Load(); s != nil {
			s.ManagerChanged()
		}
	}
	rec := incident.NewRecorderWithOptions(store, incident.RecorderOptions{
		OnError: func(err error) {
			log.Error("incident store write failed; incidents are kept in memory only until it recovers", zap.Error(err))
			managerChanged() // Status: degraded
		},
		OnRecover: func() {
			log.Info("incident store writable again; incidents kept in memory were written")
			managerChanged()
		},
		OnSubscriberDrop: func(d incident.SubscriberDrop) {
			log.Warn("incident subscriber too slow; incidents dropped for it (the store keeps them)",
				zap.String("subscriber", d.Name), zap.Uint64("dropped", d.New), zap.Uint64("dropped_total", d.Dropped),
				zap.Int("buffer", d.Buffer))
		},
	})
	defer rec.Close()
	rec.SubscribeNamed("journal", 256, func(inc incident.Incident) {
		log.Info(inc.Summary, logging.IncidentFields(inc)...)
	})
	if prev, err := checkUpgrade(filepath.Dir(cfg.Incidents.Path), Version); err != nil {
		log.Warn("cannot tell whether qmd was upgraded", zap.Error(err))
	} else if prev != "" {
		rec.Record(incident.Incident{Type: incident.Upgrade, Summary: fmt.Sprintf("qmd upgraded from %s to %s", prev, Version),
			Details: map[string]string{"from": prev, "to": Version}})
	}

	// ASIL protection first, before Podman is contacted, and independent
	// of the partitions' states (pkg/protect).
	g, gctx := errgroup.WithContext(ctx)
	prot, closeProt := newProtector(cfg, log, rec)
	defer closeProt()
	if prot != nil {
		g.Go(func() error { return prot.Run(gctx) })
	}

	// The disk budget ([partition.disk]) is mounted before every create
	// and start of a partition's container.
	disk := diskbudget.New(cfg, diskbudget.Options{Sink: rec, Log: log})
	rt := disk.Wrap(podman.New(cfg.Podman.Socket, cfg.Podman.Timeout.Duration))
	sopts := supervisor.Options{Runtime: rt, Sink: rec, Log: log, ProcWatch: procwatch.Watch, PodmanTimeout: cfg.Podman.Timeout.Duration,
		Restore: func(name string) uint32 { return restoredRestarts(store, name) }}
	if opts.Resources != nil {
		// The probe of the partition's systemd rides on the policy's
		// life (liveness.go).
		sopts.Resources = withLiveness(opts.Resources(cfg, log, prot), log, nil)
	}
	sup := supervisor.New(cfg, sopts)

	var cfgMu sync.Mutex
	be := &backend{sup: sup, store: store, rec: rec, prot: prot}
	reload := func() error {
		next, err := LoadConfig(opts.ConfigFiles)
		if err != nil {
			log.Error("reload rejected; keeping the running configuration", zap.Error(err))
			return err
		}
		cfgMu.Lock()
		defer cfgMu.Unlock()
		for _, w := range next.Warnings {
			log.Warn("configuration adjusted to this host", zap.String("reason", w))
		}
		logFindings(log, next)
		if opts.LogLevel == "" && level.String() != next.Log.Level {
			if err := level.UnmarshalText([]byte(next.Log.Level)); err == nil {
				log.Info("log level changed", zap.String("level", next.Log.Level))
			}
		}
		if err := sup.Reload(next); err != nil {
			return err
		}
		if prot != nil {
			rctx, cancel := context.WithTimeout(gctx, 10*time.Second)
			err := prot.Reconfigure(rctx, ProtectConfig(next, hostinfo.Read().MemTotal))
			cancel()
			if err != nil {
				log.Warn("host-level protection not reconfigured", zap.Error(err))
			}
		}
		disk.SetConfig(next)
		if s := srv.Load(); s != nil {
			if err := s.Sync(); err != nil {
				log.Warn("d-bus objects not synced after reload", zap.Error(err))
			}
		}
		log.Info("configuration reloaded", zap.Strings("config", next.Sources))
		return nil
	}
	be.reload = reload

	notifier := newStatusNotifier(log)
	sup.Subscribe(func(c supervisor.Change) {
		notifier.update(sup.Statuses(), sup.PodmanUp())
		managerChanged() // Status follows Podman's reachability
		if s := srv.Load(); s != nil {
			s.PartitionChanged(infoOf(c.Status), c.Reason)
		}
	})

	g.Go(func() error { return sup.Run(gctx) })
	g.Go(func() error { return disk.Run(gctx) })

	// Wait for Podman and the first reconcile of every partition.
	select {
	case <-sup.Ready():
	case <-gctx.Done():
		return errors.Join(g.Wait(), ctx.Err())
	}

	if cfg.DBus.Enable {
		s, err := startDBus(be, cfg, log)
		if err != nil {
			log.Warn("d-bus interface not available; continuing without it", zap.Error(err))
			be.setDegraded("d-bus: " + err.Error())
		} else {
			srv.Store(s)
			rec.SubscribeNamed("d-bus", 256, s.IncidentAdded)
			defer func() { _ = s.Close() }()
		}
	}

	if _, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", zap.Error(err))
	}
	notifier.update(sup.Statuses(), sup.PodmanUp())
	log.Info("qmd ready")

	g.Go(func() error { return watchdog(gctx, sup, log) })
	g.Go(func() error { return handleHUP(gctx, hup, reload, log) })

	err = g.Wait()
	_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("qmd stopped")
	return err
}

// logFindings logs each freedom-from-interference finding of a
// configuration that was accepted (strict = false).
func logFindings(log *zap.Logger, cfg *config.Config) {
	for _, f := range cfg.Findings {
		log.Warn("configuration weakens the partition's isolation", zap.String("key", f.Key),
			zap.String("origin", f.Origin), zap.String("risk", f.Risk))
	}
}

func startDBus(be *backend, cfg *config.Config, log *zap.Logger) (*dbusapi.Server, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	srv := dbusapi.New(conn, be, log, dbusapi.Options{Version: Version, AdminGroup: cfg.DBus.AdminGroup})
	if err := srv.Export(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("export d-bus objects: %w", err)
	}
	return srv, nil
}

// watchdog pings systemd at half the WatchdogSec interval, and only while
// qmd's own loops answer (Supervisor.Health): a wedged qmd gets restarted.
// A slow or absent Podman is not a wedged qmd and never costs a ping: it
// shows up in STATUS=, the partitions' podman-degraded condition and an
// incident.
func watchdog(ctx context.Context, sup *supervisor.Supervisor, log *zap.Logger) error {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return nil
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, interval/4)
		err := sup.Health(hctx)
		cancel()
		if err != nil {
			if healthy {
				log.Warn("health check failed; withholding the watchdog ping", zap.Error(err))
			}
			healthy = false
			continue
		}
		if !healthy {
			log.Info("health check passes again")
		}
		healthy = true
		_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
	}
}

func handleHUP(ctx context.Context, ch <-chan os.Signal, reload func() error, log *zap.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
			log.Info("SIGHUP: reloading configuration")
			_ = reload()
		}
	}
}

// statusNotifier sends STATUS= lines to systemd when they change.
type statusNotifier struct {
	mu   sync.Mutex
	last string
	log  *zap.Logger
}

func newStatusNotifier(log *zap.Logger) *statusNotifier { return &statusNotifier{log: log} }

func (n *statusNotifier) update(sts []supervisor.Status, podmanUp bool) {
	line := StatusLine(sts, podmanUp)
	n.mu.Lock()
	defer n.mu.Unlock()
	if line == n.last {
		return
	}
	n.last = line
	_, _ = sddaemon.SdNotify(false, "STATUS="+line)
}

// describe says in a word or two what a partition does.
func describe(st supervisor.Status) string {
	switch st.State {
	case supervisor.Active, supervisor.Activating:
		return st.SubState
	case supervisor.Deactivating:
		return "stopping"
	case supervisor.Failed:
		if st.Result != "" && st.Result != "success" {
			return "failed (" + st.Result + ")"
		}
	}
	return string(st.State)
}

// StatusLine is the human-readable state systemctl status shows.
func StatusLine(sts []supervisor.Status, podmanUp bool) string {
	sort.Slice(sts, func(i, j int) bool { return sts[i].Name < sts[j].Name })
	parts := make([]string, 0, len(sts)+1)
	for _, st := range sts {
		s := st.Name + ": " + describe(st)
		if cs := st.Conditions.List(); len(cs) > 0 {
			s += " [" + strings.Join(cs, ",") + "]"
		}
		if st.ContainerID != "" && len(st.ContainerID) >= 12 {
			s += " (" + st.ContainerID[:12]
			if st.NRestarts > 0 {
				s += fmt.Sprintf(", %d restarts", st.NRestarts)
			}
			s += ")"
		}
		parts = append(parts, s)
	}
	if !podmanUp {
		parts = append(parts, "podman unreachable")
	}
	return strings.Join(parts, "; ")
}
