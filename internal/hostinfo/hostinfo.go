// Package hostinfo reads the host facts that turn relative settings
// ("50%" of memory, "50%" of pid_max) into numbers, and the block devices
// behind device paths and device numbers (block.go).
package hostinfo

import (
	"bufio"
	"bytes"
	"errors"
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
	n, _ := meminfoField(b, "MemTotal")
	return n
}

// MemAvailable reads MemAvailable of /proc/meminfo in bytes: the kernel's
// estimate of what can be allocated without swapping (free memory plus
// the reclaimable part of the page cache and slab).
func MemAvailable() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	n, ok := meminfoField(b, "MemAvailable")
	if !ok {
		return 0, errors.New("/proc/meminfo: no valid MemAvailable line (kernel older than 3.14?)")
	}
	return n, nil
}

// meminfoField returns the field key of a /proc/meminfo in bytes; ok is
// false when it is absent or malformed (not a "<n> kB" count below 16 EiB).
func meminfoField(b []byte, key string) (n uint64, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != key+":" {
			continue
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || kb > (1<<54) || (len(f) > 2 && f[2] != "kB") {
			return 0, false
		}
		return kb * 1024, true
	}
	return 0, false
}
