package diskbudget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/runtime"
)

// Mechanism is how the budget is enforced on this host.
type Mechanism string

// Mechanisms.
const (
	// MechImage: a preallocated ext4 image loop-mounted on the directory.
	MechImage Mechanism = "image"
	// MechWatch: loop images are unavailable; the free space of the
	// filesystem holding the directory is watched instead (watch.go).
	MechWatch Mechanism = "watch"
)

// Options configure a Manager.
type Options struct {
	Sink incident.Sink
	Log  *zap.Logger
	// Probe says whether loop images can be used on this host (nil: the
	// real probe, ProbeImage). Tests force the free-space watch with it.
	Probe func() error
	// Interval is the free-space watch's slow poll (default: policy.resync)
	// and Near its poll when the free space is close to the reserve
	// (default 1 s).
	Interval, Near time.Duration
	// Kill signals a process (default unix.Kill with SIGKILL); tests
	// observe it.
	Kill func(pid int) error
}

// Manager applies [partition.disk] for every partition: before a
// partition's container is created or started (Wrap) it makes the
// partition's writable-state directory the mount of its image, or, where
// images are unavailable, watches the free space (Run).
type Manager struct {
	opts Options
	log  *zap.Logger
	cfg  atomic.Pointer[config.Config]

	probeOnce sync.Once
	probeErr  error

	// locks serializes the disk work of one partition (a create and the
	// start right after it both ensure).
	mu    sync.Mutex
	locks map[string]*sync.Mutex

	rt atomic.Value // runtime.Runtime, for the watch to find the partition's init

	watchMu sync.Mutex
	watch   map[string]*watchState // partition -> free-space watch state
	full    map[string]bool        // partition -> its image was reported nearly full
}

// New builds a Manager for cfg.
func New(cfg *config.Config, opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Probe == nil {
		opts.Probe = ProbeImage
	}
	if opts.Interval <= 0 {
		opts.Interval = cfg.Policy.Resync.Duration
	}
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Near <= 0 {
		opts.Near = time.Second
	}
	if opts.Kill == nil {
		opts.Kill = killProcess
	}
	m := &Manager{opts: opts, log: opts.Log.Named("disk"), locks: map[string]*sync.Mutex{}, watch: map[string]*watchState{}, full: map[string]bool{}}
	m.cfg.Store(cfg)
	return m
}

// SetConfig takes a reloaded configuration. A changed max takes effect at
// the partition's next start (the image is grown then, never shrunk).
func (m *Manager) SetConfig(cfg *config.Config) {
	m.cfg.Store(cfg)
	m.sync()
}

// sync reports each budget's mechanism and, where the free-space watch
// is the mechanism, watches every enabled partition at once: a partition
// adopted at qmd start was never started by this qmd but is watched all
// the same. Partitions whose budget was removed are no longer watched.
func (m *Manager) sync() {
	cfg := m.cfg.Load()
	enabled := map[string]bool{}
	for i := range cfg.Partitions {
		p := &cfg.Partitions[i]
		if !p.Disk.Enabled() {
			continue
		}
		enabled[p.Name] = true
		path := p.DiskPath()
		log := m.log.With(zap.String("partition", p.Name), zap.String("path", path))
		if m.Mechanism() == MechWatch {
			if err := m.ensureWatch(p, path, log); err != nil {
				log.Warn("disk budget: free-space watch not started", zap.Error(err))
			}
			continue
		}
		src, ok, err := mountSource(path)
		switch {
		case err != nil:
			log.Warn("disk budget: cannot read the mounts", zap.Error(err))
		case ok && sameFile(loopBacking(src), ImageFile(path)):
			used, size := usage(path)
			log.Info("disk budget mounted", zap.String("image", ImageFile(path)), zap.String("loop", src),
				zap.Uint64("used_bytes", used), zap.Uint64("size_bytes", size), zap.Uint64("max_bytes", p.Disk.Max.Bytes))
		default:
			// A running partition keeps its /var: a mount now would not
			// reach its mount namespace, and migrating under a writer
			// loses writes. The next start applies the budget.
			log.Info("disk budget not mounted yet; it is applied before the partition's next start", zap.String("image", ImageFile(path)))
		}
	}
	m.watchMu.Lock()
	for name := range m.watch {
		if !enabled[name] {
			delete(m.watch, name)
		}
	}
	m.watchMu.Unlock()
}

// ProbeImage reports why loop-mounted ext4 images cannot be used here, or
// nil: /dev/loop-control must open and the e2fsprogs, mount and cp tools
// must be installed.
func ProbeImage() error {
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("no loop devices: %w", err)
	}
	_ = f.Close()
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs", "losetup", "mount", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: %w", tool, err)
		}
	}
	return nil
}

// Mechanism probes the host once and says how budgets are enforced.
func (m *Manager) Mechanism() Mechanism {
	m.probeOnce.Do(func() { m.probeErr = m.opts.Probe() })
	if m.probeErr != nil {
		return MechWatch
	}
	return MechImage
}

func (m *Manager) lock(name string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.locks[name]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	return l
}

func (m *Manager) partition(name string) *config.Partition {
	cfg := m.cfg.Load()
	for i := range cfg.Partitions {
		if cfg.Partitions[i].Name == name {
			p := cfg.Partitions[i]
			return &p
		}
	}
	return nil
}

// Ensure prepares the budget of partition p before its container is
// created or started (the container is not running). An error stops the
// start: starting the partition without its budget would let it fill the
// host filesystem, and mounting later would not reach the container.
func (m *Manager) Ensure(ctx context.Context, p *config.Partition) error {
	if p == nil || !p.Disk.Enabled() {
		m.unwatch(p)
		return nil
	}
	l := m.lock(p.Name)
	l.Lock()
	defer l.Unlock()
	path := p.DiskPath()
	log := m.log.With(zap.String("partition", p.Name), zap.String("path", path))
	if m.Mechanism() == MechWatch {
		return m.ensureWatch(p, path, log)
	}
	im := Image{File: ImageFile(path), Path: path, Max: p.Disk.Max.Bytes, Reserve: p.Disk.ReserveBytes()}
	// Creating and migrating must not be cut off by the start operation's
	// Podman deadline: an interrupted copy is only retried from scratch.
	// It is bounded on its own.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
	defer cancel()
	t0 := time.Now()
	res, err := im.Ensure(dctx)
	if err != nil {
		log.Error("disk budget not applied; the partition is not started without it", zap.Error(err))
		m.record(p.Name, err.Error(), map[string]string{
			"mechanism": string(MechImage), "path": path, "image": im.File, "max": strconv.FormatUint(im.Max, 10),
			"reserve": strconv.FormatUint(im.Reserve, 10), "action": "refused",
		})
		return err
	}
	fields := []zap.Field{
		zap.String("image", im.File), zap.String("action", string(res.Action)), zap.String("loop", res.Loop),
		zap.Uint64("used_bytes", res.Used), zap.Uint64("size_bytes", res.Size), zap.Uint64("max_bytes", im.Max),
		zap.Duration("took", time.Since(t0)),
	}
	if res.Warning != "" {
		log.Warn("disk budget: max not reached yet", append(fields, zap.String("reason", res.Warning))...)
	}
	if res.Action == AlreadyMounted {
		log.Debug("disk budget in place", fields...)
		return nil
	}
	log.Info("disk budget applied", append(fields, zap.Uint64("migrated_bytes", res.Moved))...)
	summary := fmt.Sprintf("disk budget %s: %s on %s (%s of %s used)", res.Action, im.File, path, human(res.Used), human(res.Size))
	if res.Action == Mounted {
		return nil // a reboot's re-mount is routine: logged, not an incident
	}
	m.record(p.Name, summary, map[string]string{
		"mechanism": string(MechImage), "path": path, "image": im.File, "action": string(res.Action),
		"max": strconv.FormatUint(im.Max, 10), "used": strconv.FormatUint(res.Used, 10),
		"size": strconv.FormatUint(res.Size, 10), "migrated": strconv.FormatUint(res.Moved, 10),
	})
	return nil
}

func (m *Manager) record(partition, summary string, details map[string]string) {
	if m.opts.Sink == nil {
		return
	}
	m.opts.Sink.Record(incident.Incident{Partition: partition, Type: incident.DiskBudget, Summary: summary, Details: details})
}

// Wrap returns rt with the budget ensured before every Create and Start.
// This is the one place every start of a partition's container passes
// (a new container, a re-used one after a restart, a recreation after a
// configuration change).
func (m *Manager) Wrap(rt runtime.Runtime) runtime.Runtime {
	m.rt.Store(runtimeBox{rt})
	return wrapped{Runtime: rt, m: m}
}

type runtimeBox struct{ runtime.Runtime }

type wrapped struct {
	runtime.Runtime
	m *Manager
}

func (w wrapped) Create(ctx context.Context, p *config.Partition) (string, error) {
	if err := w.m.Ensure(ctx, p); err != nil {
		return "", err
	}
	return w.Runtime.Create(ctx, p)
}

func (w wrapped) Start(ctx context.Context, id string) error {
	c, err := w.Runtime.Inspect(ctx, id)
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	if c != nil && !c.Running {
		if p := w.m.partition(c.Labels[runtime.LabelPartition]); p != nil {
			if err := w.m.Ensure(ctx, p); err != nil {
				return err
			}
		}
	}
	return w.Runtime.Start(ctx, id)
}
