package cgroups

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// EventKind says what a watcher saw.
type EventKind int

// Event kinds. Counter kinds carry the increase since the previous event
// in Event.Count (never an absolute value); state kinds have Count 0.
const (
	EventOOM          EventKind = iota + 1 // memory.events "oom" grew; v1: the oom_control eventfd fired
	EventOOMKill                           // memory.events "oom_kill" grew; v1: memory.oom_control oom_kill grew
	EventMemoryHigh                        // memory.events "high" grew (throttled at memory.high)
	EventMemoryMax                         // memory.events "max" grew (hit memory.max)
	EventPidsMax                           // pids.events "max" grew (fork refused: pids.max)
	EventPopulated                         // cgroup.events populated 0 -> 1
	EventEmptied                           // cgroup.events populated 1 -> 0
	EventFrozen                            // cgroup.events frozen 0 -> 1
	EventThawed                            // cgroup.events frozen 1 -> 0
	EventChildCreated                      // a child cgroup appeared (e.g. a nested container); Path names it
	EventError                             // a notification could not be read (malformed file); Err says why
)

var kindNames = map[EventKind]string{
	EventOOM: "oom", EventOOMKill: "oom-kill", EventMemoryHigh: "memory-high",
	EventMemoryMax: "memory-max", EventPidsMax: "pids-max", EventPopulated: "populated",
	EventEmptied: "emptied", EventFrozen: "frozen", EventThawed: "thawed",
	EventChildCreated: "child-created", EventError: "error",
}

func (k EventKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is one notification.
type Event struct {
	Kind  EventKind
	Count uint64    // increase of the counter (counter kinds)
	Path  string    // cgroup path (the watched one, or the new child)
	Time  time.Time // when the watcher read it
	Err   error     // EventError only
}

// WatchOptions tune a Watcher.
type WatchOptions struct {
	// Children also reports child cgroups created anywhere below the
	// cgroup (inotify IN_CREATE on the directories; works on v1 and v2).
	Children bool
	// Buffer is the event channel capacity (default 64). A full channel
	// blocks the watcher; no event is dropped.
	Buffer int
	// Now is the clock for Event.Time (default time.Now).
	Now func() time.Time
}

// Watcher turns kernel notifications on one cgroup into Events. Counters
// are read once at start as the baseline: only increases after Watch are
// reported. A counter that goes backwards (cgroup recreated) counts as a
// reset to zero. The watcher sleeps in poll(2) without a timeout while
// nothing happens.
//
// Sources: v2 inotify IN_MODIFY on memory.events, pids.events and
// cgroup.events; v1 the memory.oom_control eventfd registered through
// cgroup.event_control, plus inotify on pids.events where present; both:
// inotify on the cgroup directory (removal, and child creation with
// WatchOptions.Children).
//
// The v1 pids controller counts refused forks in pids.events but does not
// notify (measured on 6.18): on v1 call Resync from the slow resync tick
// to pick up EventPidsMax.
type Watcher struct {
	cg   *Cgroup
	opts WatchOptions
	n    *notifier
	ch   chan Event
	stop chan struct{}
	done chan struct{}
	once sync.Once

	err  error // set before done is closed
	poke atomic.Bool

	dirWd        int32
	parentWd     int32 // the parent directory, for IN_DELETE of ours; -1 for the root
	base         string
	files        map[int32]string // wd -> file base name
	dirs         map[int32]string // wd -> cgroup path (Children)
	oomFd        int              // v1 memory.oom_control, -1 if none
	efd          int              // v1 eventfd, -1 if none
	counts       map[string]uint64
	state        State
	hasOOMKillV1 bool
}

// Watch starts watching the cgroup. Close stops it; Events is closed when
// the watcher ends, and Err then says why (nil after Close; wrapping
// ErrGone when the cgroup was removed).
func (c *Cgroup) Watch(opts WatchOptions) (*Watcher, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = 64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	n, err := newNotifier()
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		cg: c, opts: opts, n: n,
		ch: make(chan Event, opts.Buffer), stop: make(chan struct{}), done: make(chan struct{}),
		files: map[int32]string{}, dirs: map[int32]string{}, counts: map[string]uint64{},
		oomFd: -1, efd: -1,
	}
	if err := w.setup(); err != nil {
		w.release()
		return nil, fmt.Errorf("watch cgroup %s: %w", c.path, err)
	}
	go w.loop()
	return w, nil
}

func (w *Watcher) primaryDir() string { return w.cg.Dir(w.cg.primary()) }

func (w *Watcher) setup() error {
	dir := w.primaryDir()
	mask := uint32(unix.IN_DELETE_SELF | unix.IN_MOVE_SELF)
	if w.opts.Children {
		mask |= unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_DELETE | unix.IN_ONLYDIR
	}
	wd, err := w.n.add(dir, mask)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ErrGone
		}
		return err
	}
	w.dirWd = wd
	// cgroupfs (kernfs) never sends IN_DELETE_SELF for a removed cgroup
	// directory (its link count does not drop while watched); rmdir does
	// send IN_DELETE to the parent directory's watchers.
	w.parentWd = -1
	if parent := filepath.Dir(dir); w.cg.ControllerPath(w.cg.primary()) != "/" && parent != dir {
		pwd, err := w.n.add(parent, unix.IN_DELETE|unix.IN_ONLYDIR)
		if err != nil {
			return err
		}
		w.parentWd, w.base = pwd, filepath.Base(dir)
	}
	if w.opts.Children {
		w.dirs[wd] = w.cg.ControllerPath(w.cg.primary())
		if err := w.addChildren(dir, w.dirs[wd], false); err != nil {
			return err
		}
	}
	watched := 0
	if w.cg.h.Version == V2 {
		for _, name := range []string{"memory.events", "pids.events", "cgroup.events"} {
			ok, err := w.addFile("", name)
			if err != nil {
				return err
			}
			if ok {
				watched++
			}
		}
		if watched == 0 && !w.opts.Children {
			return fmt.Errorf("none of memory.events, pids.events, cgroup.events in %s: %w", dir, ErrUnsupported)
		}
		st, err := w.cg.State()
		if err == nil {
			w.state = st
		}
		return nil
	}
	if ok, err := w.addFile("pids", "pids.events"); err != nil {
		return err
	} else if ok {
		watched++
	}
	if fileExists(w.cg.file("memory", "memory.oom_control")) {
		if err := w.registerOOMv1(); err != nil {
			return err
		}
		watched++
	}
	if watched == 0 && !w.opts.Children {
		return fmt.Errorf("neither memory.oom_control nor pids.events for %s: %w", w.cg.path, ErrUnsupported)
	}
	return nil
}

// addFile watches ctrl/name if it exists and reads its baseline.
func (w *Watcher) addFile(ctrl, name string) (bool, error) {
	f := w.cg.file(ctrl, name)
	if !fileExists(f) {
		return false, nil
	}
	wd, err := w.n.add(f, unix.IN_MODIFY)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	w.files[wd] = name
	if name != "cgroup.events" {
		if m, err := w.readCounters(name); err == nil {
			for k, v := range m {
				w.counts[name+"/"+k] = v
			}
		}
	}
	return true, nil
}

// registerOOMv1 registers an eventfd for memory.oom_control through
// cgroup.event_control: "<eventfd> <fd of memory.oom_control>".
func (w *Watcher) registerOOMv1() error {
	ocPath := w.cg.file("memory", "memory.oom_control")
	fd, err := unix.Open(ocPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", ocPath, err)
	}
	w.oomFd = fd
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	w.efd = efd
	if err := writeFile(w.cg.file("memory", "cgroup.event_control"), fmt.Sprintf("%d %d", efd, fd)); err != nil {
		return fmt.Errorf("register oom notification: %w", err)
	}
	if oc, err := w.cg.OOMControl(); err == nil {
		w.hasOOMKillV1 = oc.HasOOMKill
		w.counts["memory.oom_control/oom_kill"] = oc.OOMKill
	}
	return nil
}

// addChildren watches every directory below dir for IN_CREATE, and
// (report) emits EventChildCreated for each one found: used for
// directories created before their parent's watch was in place.
func (w *Watcher) addChildren(dir, rel string, report bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if err := w.addChild(filepath.Join(dir, e.Name()), path.Join(rel, e.Name()), report); err != nil {
			return err
		}
	}
	return nil
}

func (w *Watcher) addChild(dir, rel string, report bool) error {
	wd, err := w.n.add(dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE|unix.IN_ONLYDIR)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		return err
	}
	if _, known := w.dirs[wd]; known {
		return nil
	}
	w.dirs[wd] = rel
	if report && !w.emit(Event{Kind: EventChildCreated, Path: rel}) {
		return errStopped
	}
	return w.addChildren(dir, rel, report)
}

// dropChildren removes the watches of cgroup rel and its descendants.
func (w *Watcher) dropChildren(rel string) {
	for wd, p := range w.dirs {
		if wd == w.dirWd {
			continue
		}
		if p == rel || strings.HasPrefix(p, rel+"/") {
			delete(w.dirs, wd)
			w.n.forget(wd)
			_, _ = unix.InotifyRmWatch(w.n.ifd, uint32(wd))
		}
	}
}

type counterKey struct {
	key  string
	kind EventKind
}

var (
	memoryEventKeys = []counterKey{{"high", EventMemoryHigh}, {"max", EventMemoryMax}, {"oom", EventOOM}, {"oom_kill", EventOOMKill}}
	pidsEventKeys   = []counterKey{{"max", EventPidsMax}}
)

var errStopped = errors.New("watcher stopped")

func (w *Watcher) readCounters(name string) (map[string]uint64, error) {
	ctrl := ""
	if w.cg.h.Version == V1 {
		ctrl = "pids"
	}
	if name == "memory.events" {
		ctrl = "memory"
	}
	return w.cg.readKeyed(ctrl, name)
}

// Resync asks the watcher to re-read every counter now and emit what
// grew, for counters the kernel does not notify (v1 pids.events). It does
// not block.
func (w *Watcher) Resync() {
	w.poke.Store(true)
	w.n.Wake()
}

// Events delivers the notifications; it is closed when the watcher ends.
func (w *Watcher) Events() <-chan Event { return w.ch }

// Done is closed when the watcher has ended.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Err says why the watcher ended (valid after Done): nil after Close, an
// error wrapping ErrGone when the cgroup disappeared.
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}

// Close stops the watcher and waits for it to end. It is idempotent.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		close(w.stop)
		w.n.Wake()
	})
	<-w.done
	return nil
}

func (w *Watcher) release() {
	w.n.close()
	if w.efd >= 0 {
		unix.Close(w.efd)
	}
	if w.oomFd >= 0 {
		unix.Close(w.oomFd)
	}
}

func (w *Watcher) emit(ev Event) bool {
	if ev.Time.IsZero() {
		ev.Time = w.opts.Now()
	}
	if ev.Path == "" {
		ev.Path = w.cg.path
	}
	select {
	case <-w.stop:
		return false
	default:
	}
	select {
	case w.ch <- ev:
		return true
	case <-w.stop:
		return false
	}
}

// delta is the increase from old to cur; a counter that went backwards
// was reset (cgroup recreated) and counts from zero.
func delta(old, cur uint64) uint64 {
	if cur >= old {
		return cur - old
	}
	return cur
}

// oomKillRetry is how long the v1 watcher re-reads oom_kill after the
// eventfd fired: the kernel notifies before it picks and kills a victim.
var oomKillRetry = []time.Duration{
	100 * time.Microsecond, 100 * time.Microsecond, 200 * time.Microsecond, 200 * time.Microsecond,
	500 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, time.Millisecond,
	2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond,
}

func (w *Watcher) loop() {
	defer close(w.done)
	defer close(w.ch)
	defer w.release()
	err := w.run()
	if errors.Is(err, errStopped) {
		err = nil
	}
	w.err = err
}

func (w *Watcher) run() error {
	var extra []int
	var evmask []int16
	if w.efd >= 0 {
		extra, evmask = []int{w.efd}, []int16{unix.POLLIN}
	}
	retry := -1 // index into oomKillRetry while a v1 kill is pending
	for {
		timeout := time.Duration(-1)
		if retry >= 0 {
			timeout = oomKillRetry[retry]
		}
		res, err := w.n.wait(extra, evmask, timeout)
		if err != nil {
			return err
		}
		select {
		case <-w.stop:
			return nil
		default:
		}
		dirty := map[string]bool{}
		if w.poke.Swap(false) {
			for _, name := range w.files {
				dirty[name] = true
			}
			if w.hasOOMKillV1 && retry < 0 {
				if _, err := w.checkOOMKillV1(); err != nil {
					return err
				}
			}
		}
		for _, ev := range res.inotify {
			if ev.mask&unix.IN_Q_OVERFLOW != 0 {
				for _, name := range w.files {
					dirty[name] = true
				}
				continue
			}
			if ev.wd == w.dirWd && ev.mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
				return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
			}
			if ev.wd == w.parentWd {
				if (ev.mask&unix.IN_IGNORED != 0 || ev.name == w.base) && !w.cg.Exists() {
					return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
				}
				continue // a sibling was removed
			}
			if name, ok := w.files[ev.wd]; ok {
				if ev.mask&unix.IN_IGNORED != 0 {
					delete(w.files, ev.wd)
					w.n.forget(ev.wd)
					if !w.cg.Exists() {
						return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
					}
					continue
				}
				if ev.mask&unix.IN_MODIFY != 0 {
					dirty[name] = true
				}
				continue
			}
			if rel, ok := w.dirs[ev.wd]; ok {
				if ev.mask&unix.IN_IGNORED != 0 {
					delete(w.dirs, ev.wd)
					w.n.forget(ev.wd)
					// The cgroup's own IN_DELETE_SELF is deferred while
					// a file in it is open (v1 oom_control): check here.
					if !w.cg.Exists() {
						return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
					}
					continue
				}
				if ev.mask&unix.IN_DELETE != 0 && ev.mask&unix.IN_ISDIR != 0 && ev.name != "" {
					// A child cgroup was removed: drop its watches, which
					// kernfs would otherwise keep forever.
					w.dropChildren(path.Join(rel, ev.name))
					continue
				}
				if ev.mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 && ev.mask&unix.IN_ISDIR != 0 && ev.name != "" {
					parent := w.n.pathOf(ev.wd)
					if err := w.addChild(filepath.Join(parent, ev.name), path.Join(rel, ev.name), true); err != nil {
						return err
					}
				}
			}
		}
		for _, name := range []string{"cgroup.events", "memory.events", "pids.events"} {
			if dirty[name] {
				if err := w.readFile(name); err != nil {
					return err
				}
			}
		}
		if len(res.extra) == 1 && res.extra[0]&unix.POLLIN != 0 {
			var b [8]byte
			k, _ := unix.Read(w.efd, b[:])
			if !w.cg.Exists() {
				// The kernel signals the eventfd when the cgroup is removed.
				return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
			}
			if k == 8 {
				if !w.emit(Event{Kind: EventOOM, Count: binary.NativeEndian.Uint64(b[:])}) {
					return nil
				}
			}
			if w.hasOOMKillV1 {
				retry = 0
			}
		}
		if retry >= 0 {
			grew, err := w.checkOOMKillV1()
			if err != nil {
				return err
			}
			switch {
			case grew:
				retry = -1
			case len(res.extra) == 1 && res.extra[0]&unix.POLLIN != 0:
				retry = 0
			case res.woken || len(res.inotify) > 0:
				// Keep the current step.
			default:
				retry++
				if retry >= len(oomKillRetry) {
					retry = -1
				}
			}
		}
	}
}

func (w *Watcher) checkOOMKillV1() (bool, error) {
	f, b, err := w.cg.read("memory", "memory.oom_control")
	if err == nil && len(b) == 0 {
		return false, nil // mid-rewrite (fake trees)
	}
	var oc OOMControl
	if err == nil {
		oc, err = ParseOOMControl(f, b)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !w.cg.Exists() {
			return false, fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
		}
		if !w.emit(Event{Kind: EventError, Err: err}) {
			return false, errStopped
		}
		return true, nil
	}
	key := "memory.oom_control/oom_kill"
	d := delta(w.counts[key], oc.OOMKill)
	w.counts[key] = oc.OOMKill
	if d == 0 {
		return false, nil
	}
	if !w.emit(Event{Kind: EventOOMKill, Count: d}) {
		return false, errStopped
	}
	return true, nil
}

func (w *Watcher) readFile(name string) error {
	if name == "cgroup.events" {
		f, b, err := w.cg.read("", name)
		if err == nil && len(b) == 0 {
			return nil // mid-rewrite (fake trees): the next IN_MODIFY follows
		}
		var st State
		if err == nil {
			st, err = ParseCgroupEvents(f, b)
		}
		if err != nil {
			return w.readErr(err)
		}
		old := w.state
		w.state = st
		if st.Populated != old.Populated {
			k := EventEmptied
			if st.Populated {
				k = EventPopulated
			}
			if !w.emit(Event{Kind: k}) {
				return errStopped
			}
		}
		if st.Frozen != old.Frozen {
			k := EventThawed
			if st.Frozen {
				k = EventFrozen
			}
			if !w.emit(Event{Kind: k}) {
				return errStopped
			}
		}
		return nil
	}
	m, err := w.readCounters(name)
	if err != nil {
		return w.readErr(err)
	}
	keys := pidsEventKeys
	if name == "memory.events" {
		keys = memoryEventKeys
	}
	for _, k := range keys {
		full := name + "/" + k.key
		cur, ok := m[k.key]
		if !ok {
			continue
		}
		d := delta(w.counts[full], cur)
		w.counts[full] = cur
		if d > 0 && !w.emit(Event{Kind: k.kind, Count: d}) {
			return errStopped
		}
	}
	return nil
}

// readErr turns a read failure into the end of the watcher (cgroup gone)
// or an EventError (malformed content; the watcher goes on).
func (w *Watcher) readErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		if !w.cg.Exists() {
			return fmt.Errorf("watch %s: %w", w.cg.path, ErrGone)
		}
	}
	if !w.emit(Event{Kind: EventError, Err: err}) {
		return errStopped
	}
	return nil
}
