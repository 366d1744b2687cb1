package daemon

import (
	"context"
	"os"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/protect"
)

// ProtectConfig maps the configuration to the host-level protector's: the
// [[protect]] entries, and triggers as sensitive as the most sensitive
// partition asks (the shortest window, the lowest thresholds): the
// protector watches once for all partitions, each partition's policy
// reacts to every confirmed signal. Host memory is watched when any
// partition asks for pressure.host_memory.
func ProtectConfig(cfg *config.Config, memTotal uint64) protect.Config {
	pc := protect.Config{Resync: cfg.Policy.Resync.Duration, DryRun: cfg.Policy.DryRun}
	parts := cfg.Partitions
	if len(parts) == 0 {
		parts = []config.Partition{config.DefaultPartition("qm")}
	}
	for i, p := range parts {
		pr := p.Pressure
		if i == 0 || pr.Window.Duration < pc.Window {
			pc.Window = pr.Window.Duration
		}
		if i == 0 || pr.Threshold.Duration < pc.MemoryThreshold {
			pc.MemoryThreshold = pr.Threshold.Duration
		}
		if i == 0 || pr.CPUThreshold.Duration < pc.CPUThreshold {
			pc.CPUThreshold = pr.CPUThreshold.Duration
		}
		if i == 0 || p.IO.Threshold.Duration < pc.IOThreshold {
			pc.IOThreshold = p.IO.Threshold.Duration
		}
		pc.HostMemory = pc.HostMemory || pr.HostMemory
	}
	// A threshold meant for a wider window is clamped to the shortest.
	pc.MemoryThreshold = min(pc.MemoryThreshold, pc.Window)
	pc.CPUThreshold = min(pc.CPUThreshold, pc.Window)
	pc.IOThreshold = min(pc.IOThreshold, pc.Window)
	for _, e := range cfg.Protect {
		pc.Entries = append(pc.Entries, protect.Entry{
			Unit: e.Unit, Cgroup: e.Cgroup, OOMScoreAdj: e.OOMScoreAdj, WatchPressure: e.WatchPressure,
			MemoryMin: e.MemoryMin.Resolve(memTotal), MemoryMinSet: e.MemoryMin.Set,
			MemoryLow: e.MemoryLow.Resolve(memTotal), MemoryLowSet: e.MemoryLow.Set,
		})
	}
	return pc
}

// connectSystemd opens the protector's own connection to systemd. The
// context given to go-systemd lives as long as the connection (godbus
// closes the connection when it is done): a dial timeout there would close
// it right after the dial and every later call would fail with "connection
// closed by user". Dialing the local system bus socket does not block.
func connectSystemd() (*sddbus.Conn, error) {
	return sddbus.NewSystemConnectionContext(context.Background())
}

// newProtector builds the host-level protector (nil when it cannot be
// made: logged). It talks to systemd when systemd is PID 1. With nothing
// to protect it still runs (idle: one resync tick), so that a reload can
// add entries.
func newProtector(cfg *config.Config, log *zap.Logger, rec incident.Sink) (*protect.Protector, func()) {
	pc := ProtectConfig(cfg, hostinfo.Read().MemTotal)
	o := protect.Options{Log: log.With(zap.String("subsystem", "protect")),
		Incident: func(inc protect.Incident) {
			rec.Record(incident.Incident{Type: incident.Type(inc.Type), Summary: inc.Summary, Details: inc.Details})
		}}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if cgs, err := cgroups.ParseProcCgroup("/proc/self/cgroup", b); err == nil {
			for _, c := range cgs {
				if c.ID == 0 {
					o.SelfCgroup = c.Path
				}
			}
		}
	}
	closeFn := func() {}
	if cgroups.SystemdBooted("/run") {
		conn, err := connectSystemd()
		if err != nil {
			log.Warn("systemd's D-Bus API not reachable: protected units cannot be resolved (cgroup entries still work)", zap.Error(err))
		} else {
			o.Systemd = protect.SystemdConn{Conn: conn}
			closeFn = conn.Close
		}
	}
	p, err := protect.New(o, pc)
	if err != nil {
		log.Error("host-level protection not started", zap.Error(err))
		closeFn()
		return nil, func() {}
	}
	log.Info("host-level protection", zap.Int("protected", len(pc.Entries)), zap.Bool("host_memory", pc.HostMemory),
		zap.Bool("systemd", o.Systemd != nil), zap.Duration("window", pc.Window))
	return p, closeFn
}

// Protected lists the host-level protector's entries for
// Manager.Protected.
func (b *backend) Protected() []dbusapi.ProtectedUnit {
	if b.prot == nil {
		return nil
	}
	st := b.prot.Status()
	out := make([]dbusapi.ProtectedUnit, 0, len(st))
	for _, s := range st {
		out = append(out, dbusapi.ProtectedUnit{Unit: s.Name, Cgroup: s.Cgroup, State: s.State})
	}
	return out
}

var _ dbusapi.ProtectedLister = (*backend)(nil)
