package policy

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// victim is what the kernel log says about one OOM kill.
type victim struct {
	PID       int
	Comm      string
	TaskMemcg string // cgroup of the killed task
	OOMMemcg  string // cgroup whose limit was hit
}

// parseOOMLine reads the kernel's one-line OOM summary:
//
//	oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/x,task_memcg=/x/y,task=hog,pid=123,uid=0
//
// (a /dev/kmsg record has "prio,seq,usec,flags;" before the text).
func parseOOMLine(line string) (victim, bool) {
	if i := strings.IndexByte(line, ';'); i >= 0 && i < 64 && strings.Count(line[:i], ",") >= 2 {
		line = line[i+1:]
	}
	i := strings.Index(line, "oom-kill:")
	if i < 0 {
		return victim{}, false
	}
	var v victim
	for _, kv := range strings.Split(strings.TrimSpace(line[i+len("oom-kill:"):]), ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "task":
			v.Comm = val
		case "pid":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return victim{}, false
			}
			v.PID = n
		case "task_memcg":
			v.TaskMemcg = val
		case "oom_memcg":
			v.OOMMemcg = val
		}
	}
	return v, v.PID > 0
}

// kmsg reads new kernel log records without blocking.
type kmsg struct{ f *os.File }

func openKmsg() (*kmsg, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "/dev/kmsg")
	// Only records from now on.
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		_ = f.Close()
		return nil, err
	}
	return &kmsg{f: f}, nil
}

// victims returns the OOM kills logged since the last call whose task was
// in a cgroup under prefix.
func (k *kmsg) victims(prefix string) []victim {
	if k == nil {
		return nil
	}
	var out []victim
	buf := make([]byte, 8192)
	for i := 0; i < 4096; i++ {
		n, err := unix.Read(int(k.f.Fd()), buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records overwritten meanwhile: go on with the next
		}
		if err != nil || n <= 0 {
			break
		}
		if v, ok := parseOOMLine(string(buf[:n])); ok && underCgroup(v.TaskMemcg, prefix) {
			out = append(out, v)
		}
	}
	return out
}

func underCgroup(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, strings.TrimSuffix(prefix, "/")+"/")
}

func (k *kmsg) close() {
	if k != nil {
		_ = k.f.Close()
	}
}

// nestedContainer names the nested container of a cgroup path below the
// partition ("libpod-<id>" or "libpod-<id>.scope"), or "".
func nestedContainer(path, partition string) string {
	rest := strings.TrimPrefix(path, strings.TrimSuffix(partition, "/"))
	for _, el := range strings.Split(rest, "/") {
		if strings.HasPrefix(el, "libpod-conmon-") {
			return ""
		}
		if id, ok := strings.CutPrefix(el, "libpod-"); ok {
			id = strings.TrimSuffix(id, ".scope")
			if len(id) > 12 {
				id = id[:12]
			}
			return id
		}
	}
	return ""
}
