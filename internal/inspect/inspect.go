// Package inspect reads what `qmd show` reports about a running partition
// straight from the host: the limits and usage of its cgroup (cgroupfs, v1
// and v2), the namespaces of its init (/proc/PID/ns), the unix sockets
// listening inside it (/proc/PID/net/unix) and the device nodes it sees
// (/proc/PID/root/dev). It links no Podman code; the Podman side of `show`
// and `exec` is internal/inspect/podmanapi.
//
// Nothing read here is trusted: every file is parsed strictly, and a file
// that is missing, unreadable or malformed gives a value marked
// unavailable with the reason (the file and what was wrong), never a
// panic and never a made-up value. Paths are relative to a Host's roots,
// so tests run the readers on fake trees.
package inspect

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

	"github.com/containers/qmd/pkg/cgroups"
)

// Host says where the readers look.
type Host struct {
	// ProcRoot is the proc filesystem ("" = /proc).
	ProcRoot string
	// CgroupRoot is the cgroup hierarchy ("" = /sys/fs/cgroup).
	CgroupRoot string
	// HostPID is the process whose namespaces are the host's (0 = 1).
	HostPID int
}

func (h Host) proc() string {
	if h.ProcRoot == "" {
		return cgroups.DefaultProcRoot
	}
	return h.ProcRoot
}

func (h Host) cgroupRoot() string {
	if h.CgroupRoot == "" {
		return cgroups.DefaultRoot
	}
	return h.CgroupRoot
}

func (h Host) hostPID() int {
	if h.HostPID <= 0 {
		return 1
	}
	return h.HostPID
}

func (h Host) pidDir(pid int) string { return filepath.Join(h.proc(), strconv.Itoa(pid)) }

// real reports whether the readers look at the live /proc (then a pid can
// be pinned with a pidfd; a fake tree has no processes behind it).
func (h Host) real() bool { return h.proc() == cgroups.DefaultProcRoot }

// Reading is one value read from the host. Exactly one of these holds:
// Value is set; Unlimited is true (the file says "max"); Unavailable says
// why there is no value.
type Reading struct {
	Value       *uint64 `json:"value"` // null: unlimited or unavailable
	Unlimited   bool    `json:"unlimited,omitempty"`
	Unavailable string  `json:"unavailable,omitempty"`
	Source      string  `json:"source,omitempty"` // the file it came from (or would have)
}

// Known is a Reading holding v (cgroups.Max means unlimited).
func Known(v uint64, source string) Reading {
	if v == cgroups.Max {
		return Reading{Unlimited: true, Source: source}
	}
	return Reading{Value: &v, Source: source}
}

// NA is an unavailable Reading.
func NA(source, format string, a ...any) Reading {
	return Reading{Unavailable: fmt.Sprintf(format, a...), Source: source}
}

// OK reports whether the reading has a value or is unlimited.
func (r Reading) OK() bool { return r.Unavailable == "" && (r.Value != nil || r.Unlimited) }

// String formats the reading for people: the value (bytes are formatted by
// the caller through Format), "max", or "n/a (reason)".
func (r Reading) String() string {
	return r.Format(func(v uint64) string { return strconv.FormatUint(v, 10) })
}

// Format formats the reading with f for a value.
func (r Reading) Format(f func(uint64) string) string {
	switch {
	case r.Unavailable != "":
		return "n/a (" + r.Unavailable + ")"
	case r.Unlimited:
		return "max"
	case r.Value != nil:
		return f(*r.Value)
	}
	return "n/a"
}

// reason turns a read or parse error into a short reason for a person:
// the file is named by the caller's Source, so only what went wrong.
func reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0:
		return "permission denied (run as root)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.Is(err, unix.ENODEV):
		return "no such device (the cgroup is being removed)"
	case errors.Is(err, unix.ESRCH):
		return "no such process"
	case errors.Is(err, cgroups.ErrUnsupported):
		return trimPath(err.Error())
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return trimPath(err.Error())
}

// trimPath drops a leading "read /path: " style prefix that repeats the
// Source.
func trimPath(s string) string {
	if i := strings.Index(s, ": "); i > 0 && strings.Contains(s[:i], "/") {
		return s[i+2:]
	}
	return s
}

// readSmall reads a /proc or cgroupfs file, refusing anything larger than
// limit bytes (those files are small; a huge one is not what we expect).
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
