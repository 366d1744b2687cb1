// Package oom enforces the oom_score_adj policy of the QM partition: the
// partition's init gets its configured value (default 500), processes of
// nested containers inside the partition at least the nested value
// (default 750), every other partition process at least the partition
// value, and the ASIL processes named in the configuration exactly their
// configured value (-1000..-1). Nothing else on the host is touched.
//
// An Auditor walks the processes (through pkg/cgroups), repairs drift and
// records every repair as an incident; Run drives it from cgroup change
// notifications and a slow resync tick.
package oom

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Score limits of the kernel and qmd's defaults.
const (
	MinScore              = -1000
	MaxScore              = 1000
	DefaultPartitionScore = 500
	DefaultNestedScore    = 750
)

// DefaultProcRoot is where procfs is mounted.
const DefaultProcRoot = "/proc"

// ErrProcessGone is wrapped when the process exited (ENOENT/ESRCH).
var ErrProcessGone = errors.New("process is gone")

// ErrMalformed is wrapped by parse errors.
var ErrMalformed = errors.New("malformed oom_score_adj")

// ParseScoreAdj parses an oom_score_adj file: one integer in -1000..1000.
// Errors name the file.
func ParseScoreAdj(file string, data []byte) (int, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return 0, fmt.Errorf("parse %s: empty: %w", file, ErrMalformed)
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if len(s) > 32 {
			s = s[:32] + "..."
		}
		return 0, fmt.Errorf("parse %s: %q is not an integer: %w", file, s, ErrMalformed)
	}
	if v < MinScore || v > MaxScore {
		return 0, fmt.Errorf("parse %s: %d outside %d..%d: %w", file, v, MinScore, MaxScore, ErrMalformed)
	}
	return v, nil
}

// ValidateScore checks v against the kernel's range.
func ValidateScore(v int) error {
	if v < MinScore || v > MaxScore {
		return fmt.Errorf("oom_score_adj %d outside %d..%d", v, MinScore, MaxScore)
	}
	return nil
}

func procRootOr(procRoot string) string {
	if procRoot == "" {
		return DefaultProcRoot
	}
	return procRoot
}

func goneErr(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

func wrapGone(pid int, err error) error {
	if goneErr(err) {
		return fmt.Errorf("pid %d: %w: %w", pid, ErrProcessGone, err)
	}
	return err
}

// ReadScoreAdj reads procRoot/<pid>/oom_score_adj.
func ReadScoreAdj(procRoot string, pid int) (int, error) {
	file := filepath.Join(procRootOr(procRoot), strconv.Itoa(pid), "oom_score_adj")
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, wrapGone(pid, err)
	}
	return ParseScoreAdj(file, b)
}

// WriteError is a failed oom_score_adj write.
type WriteError struct {
	PID      int
	Old, New int
	Err      error
}

func (e *WriteError) Error() string {
	msg := fmt.Sprintf("set oom_score_adj of pid %d from %d to %d: %v", e.PID, e.Old, e.New, e.Err)
	if e.New < e.Old && (errors.Is(e.Err, unix.EACCES) || errors.Is(e.Err, unix.EPERM)) {
		msg += " (lowering oom_score_adj below the minimum the process inherited needs CAP_SYS_RESOURCE)"
	}
	return msg
}

func (e *WriteError) Unwrap() error { return e.Err }

// WriteScoreAdj writes v to procRoot/<pid>/oom_score_adj. old is only used
// in the error message (pass the value read before).
func WriteScoreAdj(procRoot string, pid, old, v int) error {
	if err := ValidateScore(v); err != nil {
		return err
	}
	file := filepath.Join(procRootOr(procRoot), strconv.Itoa(pid), "oom_score_adj")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return &WriteError{PID: pid, Old: old, New: v, Err: wrapGone(pid, err)}
	}
	_, werr := f.WriteString(strconv.Itoa(v))
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		return &WriteError{PID: pid, Old: old, New: v, Err: wrapGone(pid, werr)}
	}
	return nil
}

// proc is one process opened through its /proc directory, so that every
// file read or written refers to the same process even if the PID is
// reused meanwhile (a reused PID gets a new /proc/<pid> inode; reads
// through the old directory fail with ESRCH).
type proc struct {
	pid  int
	dir  *os.File
	root string
}

func openProc(procRoot string, pid int) (*proc, error) {
	d, err := os.Open(filepath.Join(procRootOr(procRoot), strconv.Itoa(pid)))
	if err != nil {
		return nil, wrapGone(pid, err)
	}
	return &proc{pid: pid, dir: d, root: procRootOr(procRoot)}, nil
}

func (p *proc) close() { p.dir.Close() }

func (p *proc) name(f string) string { return filepath.Join(p.root, strconv.Itoa(p.pid), f) }

func (p *proc) read(f string) ([]byte, error) {
	fd, err := unix.Openat(int(p.dir.Fd()), f, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, wrapGone(p.pid, &os.PathError{Op: "open", Path: p.name(f), Err: err})
	}
	file := os.NewFile(uintptr(fd), p.name(f))
	defer file.Close()
	b, err := io.ReadAll(file)
	if err != nil {
		return nil, wrapGone(p.pid, err)
	}
	return b, nil
}

func (p *proc) scoreAdj() (int, error) {
	b, err := p.read("oom_score_adj")
	if err != nil {
		return 0, err
	}
	return ParseScoreAdj(p.name("oom_score_adj"), b)
}

// writeScore is unix.Write; tests replace it to simulate a refusing kernel.
var writeScore = unix.Write

func (p *proc) setScoreAdj(old, v int) error {
	if err := ValidateScore(v); err != nil {
		return err
	}
	fd, err := unix.Openat(int(p.dir.Fd()), "oom_score_adj", unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return &WriteError{PID: p.pid, Old: old, New: v, Err: wrapGone(p.pid, err)}
	}
	_, werr := writeScore(fd, []byte(strconv.Itoa(v)))
	unix.Close(fd)
	if werr != nil {
		return &WriteError{PID: p.pid, Old: old, New: v, Err: wrapGone(p.pid, werr)}
	}
	return nil
}

func (p *proc) comm() string {
	b, err := p.read("comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// inCgroup reports whether the process is (still) in cgroup path, in any
// hierarchy listed in /proc/<pid>/cgroup.
func (p *proc) inCgroup(path string) (bool, error) {
	b, err := p.read("cgroup")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && parts[2] == path {
			return true, nil
		}
	}
	return false, nil
}
