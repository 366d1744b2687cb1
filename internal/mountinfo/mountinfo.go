// Package mountinfo parses /proc/self/mountinfo (proc(5)), which the
// config lint (block devices of the host's filesystems) and the disk
// budget (what is mounted on the partition's state directory) both read.
package mountinfo

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// Path is the mount table of the reading process.
const Path = "/proc/self/mountinfo"

// Mount is one line of mountinfo:
//
//	id parent maj:min root mountpoint options [optional...] - fstype source superopts
//
// Path fields are unescaped.
type Mount struct {
	Devno      string // "MAJ:MIN" of the filesystem (major 0: tmpfs, proc, overlay, ...)
	Root       string // the directory of the filesystem mounted here (a bind mount's source)
	MountPoint string
	FSType     string
	Source     string
}

// ParseLine parses one mountinfo line; ok is false for a line that is
// not in that format (too few fields, no "-" separator).
func ParseLine(line string) (m Mount, ok bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return Mount{}, false
	}
	// The optional fields are a variable list ended by "-".
	for i := 6; i < len(f)-2; i++ {
		if f[i] == "-" {
			return Mount{
				Devno:      f[2],
				Root:       Unescape(f[3]),
				MountPoint: Unescape(f[4]),
				FSType:     f[i+1],
				Source:     Unescape(f[i+2]),
			}, true
		}
	}
	return Mount{}, false
}

// Parse returns the mounts of a mountinfo file in its order (a later
// mount on the same point is on top of an earlier one), skipping lines
// not in the format. On a read error it returns what it read so far.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	// Mount options of overlay mounts (lowerdir=...) can be long.
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := ParseLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// Unescape undoes the octal escapes (\040 for a space, \134 for a
// backslash) the kernel writes in mountinfo's path fields.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
