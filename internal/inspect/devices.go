package inspect

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// DeviceSpec is a device the partition was created with (Podman's
// HostConfig.Devices).
type DeviceSpec struct {
	PathOnHost      string
	PathInContainer string
	Permissions     string // cgroup permissions: r, w, m
}

// Devices are the partition's device nodes: those it was configured with,
// checked inside the partition, and every device node under its /dev.
type Devices struct {
	PID int `json:"pid"`
	// Configured are the devices Podman passed in, checked in the
	// partition. ConfiguredUnavailable says why they are not known (Podman
	// not reachable).
	Configured            []ConfiguredDevice `json:"configured"`
	ConfiguredUnavailable string             `json:"configured_unavailable,omitempty"`
	// Nodes are the character and block devices under /dev inside the
	// partition (read through /proc/PID/root, symlinks not followed).
	Nodes            []DeviceNode `json:"nodes"`
	NodesSource      string       `json:"nodes_source"`
	NodesUnavailable string       `json:"nodes_unavailable,omitempty"`
	NodesTruncated   bool         `json:"nodes_truncated,omitempty"`
}

// ConfiguredDevice is one configured device and what the partition has
// at its path. Present means a device node of the same type and number
// as on the host.
type ConfiguredDevice struct {
	PathOnHost      string      `json:"path_on_host"`
	PathInPartition string      `json:"path_in_partition"`
	Permissions     string      `json:"permissions"`
	Present         bool        `json:"present"`
	Node            *DeviceNode `json:"node"`              // what the partition has there; null when nothing
	Problem         string      `json:"problem,omitempty"` // why it is not Present
}

// DeviceNode is a character or block device node.
type DeviceNode struct {
	Path  string `json:"path"`
	Type  string `json:"type"` // char, block
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	Mode  string `json:"mode"` // permission bits, e.g. 0666
}

// Limits of the /dev walk.
const (
	maxDevNodes = 4096
	maxDevDepth = 4
)

// ReadDevices checks the configured devices and lists the device nodes
// under /dev inside the partition of pid. specs nil with why set means the
// configured devices are unknown.
func (h Host) ReadDevices(pid int, specs []DeviceSpec, why string) Devices {
	root := filepath.Join(h.pidDir(pid), "root")
	d := Devices{PID: pid, Configured: []ConfiguredDevice{}, ConfiguredUnavailable: why, Nodes: []DeviceNode{}, NodesSource: filepath.Join(root, "dev")}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		r := reason(&os.PathError{Op: "open", Path: root, Err: err})
		d.NodesUnavailable = r
		for _, s := range specs {
			d.Configured = append(d.Configured, ConfiguredDevice{PathOnHost: s.PathOnHost, PathInPartition: s.PathInContainer,
				Permissions: s.Permissions, Problem: "cannot look inside the partition: " + r})
		}
		return d
	}
	defer unix.Close(rootFD)
	for _, s := range specs {
		d.Configured = append(d.Configured, checkDevice(rootFD, s))
	}
	d.Nodes, d.NodesTruncated, err = walkDev(rootFD)
	if err != nil {
		d.NodesUnavailable = err.Error()
	}
	return d
}

// openInRoot opens rel inside the directory rootFD as if it were "/":
// symlinks (absolute ones too) resolve inside it, never to the host.
func openInRoot(rootFD int, rel string, flags uint64) (int, error) {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOSYS) {
		return -1, err
	}
	// Kernels before 5.6: no openat2. Refuse symlinks on the way instead
	// of resolving them (they could point out of the partition).
	cur, err := unix.Openat(rootFD, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		fl := int(unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC)
		if i == len(parts)-1 {
			fl = int(flags) | unix.O_NOFOLLOW | unix.O_CLOEXEC
		}
		next, err := unix.Openat(cur, p, fl, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

func checkDevice(rootFD int, s DeviceSpec) ConfiguredDevice {
	c := ConfiguredDevice{PathOnHost: s.PathOnHost, PathInPartition: s.PathInContainer, Permissions: s.Permissions}
	if c.PathInPartition == "" {
		c.PathInPartition = c.PathOnHost
	}
	if !strings.HasPrefix(c.PathInPartition, "/") {
		c.Problem = fmt.Sprintf("path %q is not absolute", c.PathInPartition)
		return c
	}
	fd, err := openInRoot(rootFD, c.PathInPartition, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			c.Problem = "no such file in the partition"
		} else {
			c.Problem = "cannot look it up in the partition: " + err.Error()
		}
		return c
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err != nil {
		c.Problem = "stat in the partition: " + err.Error()
		return c
	}
	node, ok := nodeOf(c.PathInPartition, &st)
	if !ok {
		c.Problem = "not a device node in the partition (" + fileType(st.Mode) + ")"
		return c
	}
	c.Node = &node
	var hst unix.Stat_t
	if err := unix.Stat(c.PathOnHost, &hst); err != nil {
		c.Problem = "present in the partition, but the host's " + c.PathOnHost + " cannot be read: " + err.Error()
		return c
	}
	hn, ok := nodeOf(c.PathOnHost, &hst)
	switch {
	case !ok:
		c.Problem = "the host's " + c.PathOnHost + " is not a device node (" + fileType(hst.Mode) + ")"
	case hn.Type != node.Type || hn.Major != node.Major || hn.Minor != node.Minor:
		c.Problem = fmt.Sprintf("the partition's node is %s %d:%d, the host's %s %d:%d", node.Type, node.Major, node.Minor, hn.Type, hn.Major, hn.Minor)
	default:
		c.Present = true
	}
	return c
}

func nodeOf(p string, st *unix.Stat_t) (DeviceNode, bool) {
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "char"
	case unix.S_IFBLK:
		typ = "block"
	default:
		return DeviceNode{}, false
	}
	return DeviceNode{Path: p, Type: typ, Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev)),
		Mode: fmt.Sprintf("%04o", st.Mode&0o7777)}, true
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFIFO:
		return "a fifo"
	}
	return "not a device"
}

// walkDev lists the device nodes under /dev of the root, depth-first,
// not following symlinks.
func walkDev(rootFD int) ([]DeviceNode, bool, error) {
	fd, err := openInRoot(rootFD, "/dev", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return []DeviceNode{}, false, fmt.Errorf("open /dev in the partition: %w", err)
	}
	out := []DeviceNode{}
	truncated := false
	var walk func(fd int, dir string, depth int) error
	walk = func(fd int, dir string, depth int) error {
		f := os.NewFile(uintptr(fd), dir)
		defer f.Close()
		ents, err := f.ReadDir(-1)
		if err != nil {
			return fmt.Errorf("read %s in the partition: %w", dir, err)
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			name := e.Name()
			p := dir + "/" + name
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone meanwhile
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFCHR, unix.S_IFBLK:
				if len(out) >= maxDevNodes {
					truncated = true
					return nil
				}
				n, _ := nodeOf(p, &st)
				out = append(out, n)
			case unix.S_IFDIR:
				if depth >= maxDevDepth {
					continue
				}
				sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					continue
				}
				if err := walk(sub, p, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err = walk(fd, "/dev", 1)
	return out, truncated, err
}
