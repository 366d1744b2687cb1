package inspect

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containers/qmd/pkg/cgroups"
)

// Sockets are the unix sockets that accept connections or datagrams in
// the partition's network namespace: stream and seqpacket sockets in
// listening state, and bound datagram sockets.
type Sockets struct {
	PID         int    `json:"pid"`
	Source      string `json:"source"`
	Unavailable string `json:"unavailable,omitempty"`
	// HostNetwork is true when the partition shares the host's network
	// namespace: /proc/PID/net/unix then lists the host's sockets too,
	// and only those held by a process of the partition are kept.
	HostNetwork bool     `json:"host_network"`
	Entries     []Socket `json:"entries"`
	// MalformedLines counts lines of the file that were skipped.
	MalformedLines int `json:"malformed_lines,omitempty"`
	// OwnersUnavailable says why the owning processes are not known.
	OwnersUnavailable string `json:"owners_unavailable,omitempty"`
}

// Socket is one unix socket.
type Socket struct {
	Path  string `json:"path"`  // "@name" for an abstract name, "" when unnamed
	Type  string `json:"type"`  // stream, dgram, seqpacket
	State string `json:"state"` // listening, bound
	Inode uint64 `json:"inode"`
	// Processes are the partition's processes holding it.
	Processes []SocketOwner `json:"processes"`
}

// SocketOwner is a process holding a socket.
type SocketOwner struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`
}

// UnixSocket is one line of /proc/net/unix.
type UnixSocket struct {
	Flags uint32
	Type  uint16
	State uint8
	Inode uint64
	Path  string
}

const (
	soAcceptCon   = 1 << 16 // __SO_ACCEPTCON: listening
	sockStream    = 1
	sockDgram     = 2
	sockSeqpacket = 5
)

// Listening reports whether the socket accepts connections (stream,
// seqpacket) or is a bound datagram socket.
func (s UnixSocket) Listening() bool {
	if s.Flags&soAcceptCon != 0 {
		return true
	}
	return s.Type == sockDgram && s.Path != ""
}

// TypeName is stream, dgram, seqpacket or "type N".
func (s UnixSocket) TypeName() string {
	switch s.Type {
	case sockStream:
		return "stream"
	case sockDgram:
		return "dgram"
	case sockSeqpacket:
		return "seqpacket"
	}
	return "type " + strconv.Itoa(int(s.Type))
}

// ParseUnixSockets parses /proc/PID/net/unix. Lines that do not have
// the kernel's format are skipped and counted; a file without the header
// is an error.
func ParseUnixSockets(file string, data []byte) ([]UnixSocket, int, error) {
	ls := splitLines(data)
	if len(ls) == 0 || !strings.HasPrefix(ls[0], "Num ") {
		return nil, 0, perr(file, 1, "no \"Num RefCount Protocol Flags Type St Inode Path\" header")
	}
	var out []UnixSocket
	bad := 0
	for _, l := range ls[1:] {
		s, ok := parseUnixLine(l)
		if !ok {
			bad++
			continue
		}
		out = append(out, s)
	}
	return out, bad, nil
}

// parseUnixLine reads "Num: RefCount Protocol Flags Type St Inode[ Path]"
// (the kernel's "%pK: %08X %08X %08X %04X %02X %5lu" and the path after
// one space).
func parseUnixLine(l string) (UnixSocket, bool) {
	rest := l
	var f []string
	for len(f) < 7 {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			break
		}
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			f = append(f, rest)
			rest = ""
			break
		}
		f = append(f, rest[:i])
		rest = rest[i+1:]
	}
	if len(f) != 7 || !strings.HasSuffix(f[0], ":") {
		return UnixSocket{}, false
	}
	hex := func(s string, bits int) (uint64, bool) {
		v, err := strconv.ParseUint(s, 16, bits)
		return v, err == nil
	}
	if _, ok := hex(strings.TrimSuffix(f[0], ":"), 64); !ok {
		return UnixSocket{}, false
	}
	if _, ok := hex(f[1], 32); !ok {
		return UnixSocket{}, false
	}
	if _, ok := hex(f[2], 32); !ok {
		return UnixSocket{}, false
	}
	flags, ok1 := hex(f[3], 32)
	typ, ok2 := hex(f[4], 16)
	st, ok3 := hex(f[5], 8)
	inode, err := strconv.ParseUint(f[6], 10, 64)
	if !ok1 || !ok2 || !ok3 || err != nil {
		return UnixSocket{}, false
	}
	if strings.ContainsRune(rest, '\n') {
		return UnixSocket{}, false
	}
	return UnixSocket{Flags: uint32(flags), Type: uint16(typ), State: uint8(st), Inode: inode, Path: rest}, true
}

// maxOwnerProcs bounds how many of the partition's processes are scanned
// for the sockets they hold.
const maxOwnerProcs = 4096

// ReadSockets reads the listening unix sockets of pid's network
// namespace and the partition's processes (those of cgroup) holding them.
// hostNetwork says whether the partition shares the host's network
// namespace (see Namespaces.Sharing("net")).
func (h Host) ReadSockets(pid int, cgroup string, hostNetwork bool) Sockets {
	file := filepath.Join(h.pidDir(pid), "net", "unix")
	out := Sockets{PID: pid, Source: file, HostNetwork: hostNetwork, Entries: []Socket{}}
	b, err := readSmall(file, 64<<20)
	if err != nil {
		out.Unavailable = reason(err)
		return out
	}
	socks, bad, err := ParseUnixSockets(file, b)
	if err != nil {
		out.Unavailable = reason(err)
		return out
	}
	out.MalformedLines = bad
	owners, why := h.socketOwners(cgroup)
	out.OwnersUnavailable = why
	if hostNetwork && why != "" {
		out.Unavailable = "the partition shares the host's network namespace, and its processes' sockets could not be told apart: " + why
		return out
	}
	for _, s := range socks {
		if !s.Listening() {
			continue
		}
		procs := owners[s.Inode]
		if hostNetwork && len(procs) == 0 {
			continue // the host's
		}
		if procs == nil {
			procs = []SocketOwner{}
		}
		out.Entries = append(out.Entries, Socket{Path: s.Path, Type: s.TypeName(), State: state(s), Inode: s.Inode, Processes: procs})
	}
	sort.Slice(out.Entries, func(i, j int) bool {
		a, b := out.Entries[i], out.Entries[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Inode < b.Inode
	})
	return out
}

func state(s UnixSocket) string {
	if s.Flags&soAcceptCon != 0 {
		return "listening"
	}
	return "bound"
}

// socketOwners maps socket inodes to the processes of the cgroup holding
// them (/proc/PID/fd/N -> "socket:[INODE]"). why is set when the
// processes could not be listed.
func (h Host) socketOwners(cgroup string) (map[uint64][]SocketOwner, string) {
	owners := map[uint64][]SocketOwner{}
	if cgroup == "" {
		return owners, "the partition has no cgroup"
	}
	hier, err := cgroups.NewHierarchy(h.cgroupRoot())
	if err != nil {
		return owners, reason(err)
	}
	procs, err := hier.Processes(cgroup)
	if err != nil {
		return owners, "list the partition's processes: " + reason(err)
	}
	seen := map[int]bool{}
	why := ""
	for _, p := range procs {
		if seen[p.PID] {
			continue
		}
		seen[p.PID] = true
		if len(seen) > maxOwnerProcs {
			why = fmt.Sprintf("only the first %d processes were scanned", maxOwnerProcs)
			break
		}
		dir := filepath.Join(h.pidDir(p.PID), "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // exited meanwhile, or a kernel thread
		}
		comm := ""
		if b, err := readSmall(filepath.Join(h.pidDir(p.PID), "comm"), 4096); err == nil {
			comm = strings.TrimSpace(string(b))
		}
		for _, e := range ents {
			t, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			rest, ok := strings.CutPrefix(t, "socket:[")
			if !ok || !strings.HasSuffix(rest, "]") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
			if err != nil {
				continue
			}
			list := owners[ino]
			if len(list) > 0 && list[len(list)-1].PID == p.PID {
				continue
			}
			owners[ino] = append(list, SocketOwner{PID: p.PID, Command: comm})
		}
	}
	return owners, why
}
