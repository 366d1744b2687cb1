// Package hostinfo reads the host facts that turn relative settings
// ("50%" of memory, "50%" of pid_max) into numbers, and the block devices
// behind device paths and device numbers (block.go).
package hostinfo

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Facts about the host; a zero field means unknown.
type Facts struct {
	MemTotal uint64 // bytes of physical memory
	PidMax   uint64 // kernel.pid_max
}

// Read reads /proc. What cannot be read stays zero.
func Read() Facts {
	var f Facts
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f.MemTotal = ParseMemTotal(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		f.PidMax, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	return f
}

// ParseMemTotal returns MemTotal of a /proc/meminfo in bytes (0 if absent
// or malformed).
func ParseMemTotal(b []byte) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil || n > (1<<54) {
				return 0
			}
			return n * 1024
		}
	}
	return 0
}
