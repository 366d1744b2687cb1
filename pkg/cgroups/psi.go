package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PSI window limits of the kernel. Without CAP_SYS_RESOURCE the kernel
// refuses windows that are not a multiple of UnprivilegedPSIWindow (and so
// every window under 2 s) with EINVAL.
const (
	MinPSIWindow          = 500 * time.Millisecond
	MaxPSIWindow          = 10 * time.Second
	UnprivilegedPSIWindow = 2 * time.Second
)

// PSIKind selects the "some" or "full" line of a pressure file.
type PSIKind string

// PSI kinds.
const (
	PSISome PSIKind = "some"
	PSIFull PSIKind = "full"
)

// PSITriggerSpec describes a trigger: fire when tasks were stalled (Kind)
// for Threshold within any Window.
type PSITriggerSpec struct {
	Path      string // e.g. <cgroup>/memory.pressure or /proc/pressure/memory
	Kind      PSIKind
	Threshold time.Duration
	Window    time.Duration
}

func (s PSITriggerSpec) validate() error {
	if s.Kind != PSISome && s.Kind != PSIFull {
		return fmt.Errorf("psi trigger %s: kind %q is neither some nor full", s.Path, s.Kind)
	}
	if s.Window < MinPSIWindow || s.Window > MaxPSIWindow {
		return fmt.Errorf("psi trigger %s: window %v outside %v..%v", s.Path, s.Window, MinPSIWindow, MaxPSIWindow)
	}
	if s.Threshold <= 0 || s.Threshold > s.Window {
		return fmt.Errorf("psi trigger %s: threshold %v must be in (0, window %v]", s.Path, s.Threshold, s.Window)
	}
	return nil
}

func (s PSITriggerSpec) line() string {
	return fmt.Sprintf("%s %d %d\x00", s.Kind, s.Threshold.Microseconds(), s.Window.Microseconds())
}

// PSIRegistration says what the kernel accepted.
type PSIRegistration struct {
	Spec PSITriggerSpec // as registered (Window may be the fallback)
	// Fallback is set when the requested window was refused (EINVAL,
	// no CAP_SYS_RESOURCE) and a multiple of 2 s was registered instead.
	Fallback bool
	Warning  string // human-readable note when Fallback
}

// PSITrigger is a registered PSI trigger. Wait blocks in poll(2) for
// POLLPRI without a timeout.
type PSITrigger struct {
	reg  PSIRegistration
	fd   int
	n    *notifier // only its wake eventfd is used
	ch   chan time.Time
	stop chan struct{}
	done chan struct{}
	once sync.Once
	err  error
	now  func() time.Time
}

// NewPSITrigger opens spec.Path read-write and registers the trigger. If
// the kernel refuses the window with EINVAL and the window is not a
// multiple of 2 s (unprivileged limit), it registers the next multiple of
// 2 s (threshold scaled so the ratio stays the same) and reports that in
// the returned registration.
func NewPSITrigger(spec PSITriggerSpec) (*PSITrigger, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	fd, err := openPSI(spec)
	reg := PSIRegistration{Spec: spec}
	if errors.Is(err, unix.EINVAL) && spec.Window%UnprivilegedPSIWindow != 0 {
		fb := spec
		fb.Window = (spec.Window/UnprivilegedPSIWindow + 1) * UnprivilegedPSIWindow
		if fb.Window > MaxPSIWindow {
			fb.Window = MaxPSIWindow
		}
		fb.Threshold = time.Duration(float64(spec.Threshold) * float64(fb.Window) / float64(spec.Window))
		var fbErr error
		fd, fbErr = openPSI(fb)
		if fbErr != nil {
			return nil, fmt.Errorf("%w (fallback window %v: %w)", err, fb.Window, fbErr)
		}
		reg = PSIRegistration{
			Spec: fb, Fallback: true,
			Warning: fmt.Sprintf("psi trigger %s: window %v refused (needs CAP_SYS_RESOURCE), using %s %v/%v",
				spec.Path, spec.Window, fb.Kind, fb.Threshold, fb.Window),
		}
	} else if err != nil {
		return nil, err
	}
	return startPSITrigger(reg, fd)
}

// startPSITrigger runs the poll loop on a registered trigger fd (which it
// owns from then on).
func startPSITrigger(reg PSIRegistration, fd int) (*PSITrigger, error) {
	n, err := newNotifier()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A pressure file that is unlinked (a fake tree's file removed; on
	// cgroupfs the removal shows as POLLERR instead) changes its link
	// count: inotify says IN_ATTRIB. Without the watch a removed file
	// would only be noticed by a poll error, which regular files never
	// report. Failing to add it is harmless.
	_, _ = n.add(reg.Spec.Path, unix.IN_ATTRIB|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF)
	t := &PSITrigger{reg: reg, fd: fd, n: n, ch: make(chan time.Time, 1), stop: make(chan struct{}), done: make(chan struct{}), now: time.Now}
	go t.loop()
	return t, nil
}

func openPSI(spec PSITriggerSpec) (int, error) {
	fd, err := unix.Open(spec.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("open %s: %w (no PSI here)", spec.Path, ErrUnsupported)
		}
		return -1, fmt.Errorf("open %s: %w", spec.Path, err)
	}
	line := spec.line()
	if _, err := unix.Write(fd, []byte(line)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("register psi trigger %q on %s: %w", line[:len(line)-1], spec.Path, err)
	}
	return fd, nil
}

// Registration says what was registered (and whether it fell back).
func (t *PSITrigger) Registration() PSIRegistration { return t.reg }

// C delivers the time of each trigger firing. The kernel fires at most
// once per window; the channel holds one pending firing, further firings
// while it is full are coalesced. It is closed when the trigger ends.
func (t *PSITrigger) C() <-chan time.Time { return t.ch }

// Done is closed when the trigger has ended.
func (t *PSITrigger) Done() <-chan struct{} { return t.done }

// Err says why the trigger ended (after Done): nil after Close, an error
// wrapping ErrGone when the file went away: POLLERR or POLLHUP on the fd
// (the cgroup was removed; a restarted unit's cgroup is a new file even
// when it has the same path) or the file was unlinked. The kernel never
// fires an ended trigger again: C is closed, and a new trigger must be
// registered (NewPSITrigger) on the file that replaced it.
func (t *PSITrigger) Err() error {
	<-t.done
	return t.err
}

// Read returns the current content of the pressure file.
func (t *PSITrigger) Read() (PSI, error) { return ReadPSI(t.reg.Spec.Path) }

// Close unregisters the trigger (closing the fd) and waits for the loop.
func (t *PSITrigger) Close() error {
	t.once.Do(func() {
		close(t.stop)
		t.n.Wake()
	})
	<-t.done
	return nil
}

func (t *PSITrigger) loop() {
	defer close(t.done)
	defer close(t.ch)
	defer func() {
		t.n.close()
		unix.Close(t.fd)
	}()
	for {
		res, err := t.n.wait([]int{t.fd}, []int16{unix.POLLPRI}, -1)
		if err != nil {
			t.err = err
			return
		}
		select {
		case <-t.stop:
			return
		default:
		}
		re := res.extra[0]
		// POLLERR (kernfs: the cgroup was removed, or the trigger was
		// destroyed), POLLHUP and POLLNVAL are permanent: poll would
		// return at once forever. End the trigger instead of spinning.
		if re&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			t.err = fmt.Errorf("psi trigger %s: poll revents %#x: %w", t.reg.Spec.Path, uint16(re), ErrGone)
			return
		}
		if len(res.inotify) > 0 && t.unlinked() {
			t.err = fmt.Errorf("psi trigger %s: file removed: %w", t.reg.Spec.Path, ErrGone)
			return
		}
		if re&unix.POLLPRI != 0 {
			select {
			case t.ch <- t.now():
			default: // one pending firing is enough
			}
		}
	}
}

// unlinked reports whether the trigger's file has no name any more (or
// its path now names another file).
func (t *PSITrigger) unlinked() bool {
	var st unix.Stat_t
	if err := unix.Fstat(t.fd, &st); err != nil || st.Nlink == 0 {
		return true
	}
	var cur unix.Stat_t
	if err := unix.Stat(t.reg.Spec.Path, &cur); err != nil {
		return errors.Is(err, unix.ENOENT)
	}
	return cur.Ino != st.Ino || cur.Dev != st.Dev
}

// ReadPSI reads and parses a pressure file.
func ReadPSI(path string) (PSI, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PSI{}, err
	}
	return ParsePSI(filepath.Base(path), b)
}

// Total is the total stall time (microseconds) of the kind's line; false
// when the file has no such line (full in an old /proc/pressure/cpu).
func (p PSI) Total(kind PSIKind) (uint64, bool) {
	if kind == PSIFull {
		return p.Full.Total, p.HasFull
	}
	return p.Some.Total, true
}
