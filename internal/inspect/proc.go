package inspect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/pkg/cgroups"
)

// ---- the partition's init

// Pinned is the partition's init, checked to be in the partition's cgroup
// and (on the live /proc) held by a pidfd, so that a pid reused by another
// process after the init died is noticed (Check) instead of reported as
// the partition.
type Pinned struct {
	h   Host
	PID int
	fd  int // pidfd; -1 on fake trees
}

// Pin checks that pid belongs to the partition: one of the cgroups in
// /proc/PID/cgroup is cgroup or below it, or is the container's own
// (libpod-ID). On the live /proc the process is held by a pidfd.
func (h Host) Pin(pid int, containerID, cgroup string) (*Pinned, error) {
	if pid <= 0 {
		return nil, errors.New("the partition has no main process (it is not running)")
	}
	p := &Pinned{h: h, PID: pid, fd: -1}
	if h.real() {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case errors.Is(err, unix.ESRCH):
			return nil, fmt.Errorf("pid %d: no such process (the partition stopped?)", pid)
		case errors.Is(err, unix.ENOSYS):
			// Kernel without pidfd (< 5.3): the cgroup check stays.
		case err != nil:
			return nil, fmt.Errorf("pid %d: pidfd_open: %w", pid, err)
		default:
			p.fd = fd
		}
	}
	if err := h.inPartition(pid, containerID, cgroup); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Check reports whether the pinned process is still the one that was
// checked (nil), so that what was read meanwhile is the partition's.
func (p *Pinned) Check() error {
	if p.fd < 0 {
		if _, err := os.Stat(p.h.pidDir(p.PID)); err != nil {
			return fmt.Errorf("pid %d is gone", p.PID)
		}
		return nil
	}
	if err := unix.PidfdSendSignal(p.fd, 0, nil, 0); err != nil {
		return fmt.Errorf("pid %d exited while it was read (the partition stopped or restarted)", p.PID)
	}
	return nil
}

// Close releases the pidfd.
func (p *Pinned) Close() {
	if p != nil && p.fd >= 0 {
		_ = unix.Close(p.fd)
		p.fd = -1
	}
}

func (h Host) inPartition(pid int, containerID, cgroup string) error {
	file := filepath.Join(h.pidDir(pid), "cgroup")
	b, err := readSmall(file, 64<<10)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid %d: no such process (the partition stopped?)", pid)
		}
		return fmt.Errorf("%s: %s", file, reason(err))
	}
	entries, err := cgroups.ParseProcCgroup(file, b)
	if err != nil {
		return fmt.Errorf("%s: %s", file, reason(err))
	}
	if containerID == "" && cgroup == "" {
		return fmt.Errorf("pid %d: the partition has neither a container ID nor a cgroup to check it against", pid)
	}
	for _, e := range entries {
		if cgroup != "" && cgroup != "/" && (e.Path == cgroup || strings.HasPrefix(e.Path, strings.TrimSuffix(cgroup, "/")+"/")) {
			return nil
		}
		if containerID != "" {
			for _, el := range strings.Split(e.Path, "/") {
				if el == "libpod-"+containerID || el == "libpod-"+containerID+".scope" {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("pid %d is not in the partition's cgroup %s (its init exited and the pid was reused?)", pid, cgroup)
}

// ---- namespaces

// Namespaces are the namespaces of the partition's init next to the
// host's (those of PID 1).
type Namespaces struct {
	PID     int `json:"pid"`
	HostPID int `json:"host_pid"`
	// HostNote says why the host's namespaces are not PID 1's (PID 1 not
	// readable, e.g. in a container: qmd's own are taken instead).
	HostNote    string      `json:"host_note,omitempty"`
	Unavailable string      `json:"unavailable,omitempty"`
	Source      string      `json:"source"`
	Entries     []Namespace `json:"entries"`
}

// Namespace is one namespace type. Sharing is "private" (the partition
// has its own), "shared" (the host's), or "" when either side could not
// be read (Unavailable says why).
type Namespace struct {
	Type        string  `json:"type"` // cgroup, ipc, mnt, net, pid, pid_for_children, time, ..., user, uts
	ID          *uint64 `json:"id"`   // the namespace's inode number
	HostID      *uint64 `json:"host_id"`
	Sharing     string  `json:"sharing"`
	Unavailable string  `json:"unavailable,omitempty"`
}

// ReadNamespaces reads /proc/PID/ns/* and /proc/HOSTPID/ns/*.
func (h Host) ReadNamespaces(pid int) Namespaces {
	dir := filepath.Join(h.pidDir(pid), "ns")
	ns := Namespaces{PID: pid, HostPID: h.hostPID(), Source: dir, Entries: []Namespace{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		ns.Unavailable = reason(err)
		return ns
	}
	if h.HostPID <= 0 && h.real() {
		// PID 1 is the host's reference. Where it cannot be read (qmd
		// itself in a container, or without CAP_SYS_PTRACE over it), qmd's
		// own process stands in: it runs on the host.
		if _, err := os.Readlink(filepath.Join(h.pidDir(1), "ns", "mnt")); err != nil {
			ns.HostPID = os.Getpid()
			ns.HostNote = fmt.Sprintf("PID 1's namespaces cannot be read (%s); compared with qmd's own (PID %d)", reason(err), ns.HostPID)
		}
	}
	hostDir := filepath.Join(h.pidDir(ns.HostPID), "ns")
	for _, e := range ents {
		name := e.Name()
		n := Namespace{Type: name}
		id, err := readNS(filepath.Join(dir, name), name)
		if err != nil {
			n.Unavailable = err.Error()
			ns.Entries = append(ns.Entries, n)
			continue
		}
		n.ID = &id
		hid, err := readNS(filepath.Join(hostDir, name), name)
		if err != nil {
			n.Unavailable = "host: " + err.Error()
			ns.Entries = append(ns.Entries, n)
			continue
		}
		n.HostID = &hid
		if hid == id {
			n.Sharing = "shared"
		} else {
			n.Sharing = "private"
		}
		ns.Entries = append(ns.Entries, n)
	}
	sort.Slice(ns.Entries, func(i, j int) bool { return ns.Entries[i].Type < ns.Entries[j].Type })
	return ns
}

// readNS reads a /proc/PID/ns/NAME link: "TYPE:[INODE]", where TYPE is
// NAME without a "_for_children" suffix.
func readNS(path, name string) (uint64, error) {
	target, err := os.Readlink(path)
	if err != nil {
		return 0, errors.New(reason(err))
	}
	typ, rest, ok := strings.Cut(target, ":[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, fmt.Errorf("%s: link %q is not TYPE:[INODE]", path, target)
	}
	if want := strings.TrimSuffix(name, "_for_children"); typ != want {
		return 0, fmt.Errorf("%s: link %q names namespace type %q, want %q", path, target, typ, want)
	}
	id, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%s: link %q: inode is not a positive integer", path, target)
	}
	return id, nil
}

// Sharing returns the sharing of namespace type typ ("" when unknown).
func (ns Namespaces) Sharing(typ string) string {
	for _, n := range ns.Entries {
		if n.Type == typ {
			return n.Sharing
		}
	}
	return ""
}
