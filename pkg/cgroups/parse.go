package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Max is the sentinel for "no limit": cgroup v2 "max", systemd "infinity",
// and the huge page-rounded values cgroup v1 reports for an unlimited
// memory.limit_in_bytes (see parseV1Limit).
const Max uint64 = math.MaxUint64

// ErrMalformed is wrapped by every parser error, so callers can tell a
// file with unexpected content from an I/O error.
var ErrMalformed = errors.New("malformed cgroup file")

// ParseError names the file and the problem. It wraps ErrMalformed.
type ParseError struct {
	File    string // file name as given to the parser, e.g. "memory.events"
	Line    int    // 1-based line number, 0 when not line-specific
	Problem string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("parse %s line %d: %s", e.File, e.Line, e.Problem)
	}
	return fmt.Sprintf("parse %s: %s", e.File, e.Problem)
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *ParseError) Unwrap() error { return ErrMalformed }

func perr(file string, line int, format string, args ...any) error {
	return &ParseError{File: file, Line: line, Problem: fmt.Sprintf(format, args...)}
}

// quote shortens and quotes untrusted input for error messages.
func quote(b []byte) string {
	const limit = 64
	if len(b) > limit {
		return strconv.Quote(string(b[:limit])) + "..."
	}
	return strconv.Quote(string(b))
}

// lines splits data into lines without the trailing newline; a final empty
// line is dropped.
func lines(data []byte) [][]byte {
	data = bytes.TrimSuffix(data, []byte("\n"))
	if len(data) == 0 {
		return nil
	}
	return bytes.Split(data, []byte("\n"))
}

// ParseFlatKeyed parses a "key value" per line file (memory.events,
// memory.stat, pids.events, cgroup.events, memory.oom_control) into a map.
// Values are unsigned decimal integers. Duplicate keys, missing values,
// extra fields and non-numeric values are errors naming the file and line.
func ParseFlatKeyed(file string, data []byte) (map[string]uint64, error) {
	ls := lines(data)
	m := make(map[string]uint64, len(ls))
	for i, l := range ls {
		f := bytes.Fields(l)
		if len(f) != 2 {
			return nil, perr(file, i+1, "want \"key value\", got %s", quote(l))
		}
		k := string(f[0])
		if _, dup := m[k]; dup {
			return nil, perr(file, i+1, "duplicate key %q", k)
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return nil, perr(file, i+1, "key %q: value %s is not an unsigned integer", k, quote(f[1]))
		}
		m[k] = v
	}
	return m, nil
}

// ParseUint parses a file holding one unsigned integer, or "max" (v2) /
// "infinity" which map to Max. v1 files that hold -1 for "unlimited"
// (pids.max is "max" on v1 too; cpu.cfs_quota_us is handled by ParseInt)
// are not accepted here.
func ParseUint(file string, data []byte) (uint64, error) {
	s := strings.TrimSpace(string(data))
	switch s {
	case "":
		return 0, perr(file, 0, "empty")
	case "max", "infinity":
		return Max, nil
	}
	if strings.ContainsAny(s, " \t\n") {
		return 0, perr(file, 0, "want one value, got %s", quote(data))
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, perr(file, 0, "value %s is not an unsigned integer or \"max\"", quote([]byte(s)))
	}
	return v, nil
}

// ParseInt parses a file holding one signed integer (cpu.cfs_quota_us,
// where -1 means unlimited; oom_score_adj).
func ParseInt(file string, data []byte) (int64, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return 0, perr(file, 0, "empty")
	}
	if strings.ContainsAny(s, " \t\n") {
		return 0, perr(file, 0, "want one value, got %s", quote(data))
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, perr(file, 0, "value %s is not an integer", quote([]byte(s)))
	}
	return v, nil
}

// v1PageCounterMax is what cgroup v1 reports for an unlimited
// memory.limit_in_bytes: PAGE_COUNTER_MAX pages in bytes, rounded down to
// the page size (9223372036854771712 on 4 KiB pages). Any value at or above
// this threshold is treated as unlimited.
const v1PageCounterMax = uint64(math.MaxInt64) &^ (1<<16 - 1)

func parseV1Limit(file string, data []byte) (uint64, error) {
	s := strings.TrimSpace(string(data))
	if s == "-1" {
		return Max, nil
	}
	v, err := ParseUint(file, data)
	if err != nil {
		return 0, err
	}
	if v >= v1PageCounterMax {
		return Max, nil
	}
	return v, nil
}

// CPUMax is the CPU bandwidth limit: Quota microseconds per Period
// microseconds. Quota == Max means unlimited.
type CPUMax struct {
	Quota  uint64
	Period uint64
}

// String formats c as cpu.max expects it.
func (c CPUMax) String() string {
	q := "max"
	if c.Quota != Max {
		q = strconv.FormatUint(c.Quota, 10)
	}
	return q + " " + strconv.FormatUint(c.Period, 10)
}

// ParseCPUMax parses cgroup v2 cpu.max: "max 100000" or "50000 100000".
// The period may be omitted on write but the kernel always shows it.
func ParseCPUMax(file string, data []byte) (CPUMax, error) {
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return CPUMax{}, perr(file, 0, "want \"quota period\", got %s", quote(data))
	}
	var c CPUMax
	if f[0] == "max" {
		c.Quota = Max
	} else {
		q, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return CPUMax{}, perr(file, 0, "quota %s is not an unsigned integer or \"max\"", quote([]byte(f[0])))
		}
		c.Quota = q
	}
	p, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil || p == 0 {
		return CPUMax{}, perr(file, 0, "period %s is not a positive integer", quote([]byte(f[1])))
	}
	c.Period = p
	return c, nil
}

// PSILine is one line of a pressure file.
type PSILine struct {
	Avg10, Avg60, Avg300 float64 // percent
	Total                uint64  // microseconds
}

// PSI is the content of a pressure file (memory.pressure, cpu.pressure,
// /proc/pressure/*). Full is absent (HasFull false) in /proc/pressure/cpu
// on older kernels.
type PSI struct {
	Some    PSILine
	Full    PSILine
	HasFull bool
}

// ParsePSI parses a pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
func ParsePSI(file string, data []byte) (PSI, error) {
	var p PSI
	var seenSome bool
	for i, l := range lines(data) {
		f := strings.Fields(string(l))
		if len(f) != 5 {
			return PSI{}, perr(file, i+1, "want \"some|full avg10= avg60= avg300= total=\", got %s", quote(l))
		}
		var dst *PSILine
		switch f[0] {
		case "some":
			if seenSome {
				return PSI{}, perr(file, i+1, "duplicate \"some\" line")
			}
			seenSome, dst = true, &p.Some
		case "full":
			if p.HasFull {
				return PSI{}, perr(file, i+1, "duplicate \"full\" line")
			}
			p.HasFull, dst = true, &p.Full
		default:
			return PSI{}, perr(file, i+1, "unknown kind %q", f[0])
		}
		want := [...]string{"avg10", "avg60", "avg300", "total"}
		for j, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k != want[j] {
				return PSI{}, perr(file, i+1, "field %d: want %s=, got %s", j+2, want[j], quote([]byte(kv)))
			}
			if k == "total" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return PSI{}, perr(file, i+1, "total %s is not an unsigned integer", quote([]byte(v)))
				}
				dst.Total = n
				continue
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil || x < 0 || x > 100 || math.IsNaN(x) {
				return PSI{}, perr(file, i+1, "%s %s is not a percentage", k, quote([]byte(v)))
			}
			switch k {
			case "avg10":
				dst.Avg10 = x
			case "avg60":
				dst.Avg60 = x
			default:
				dst.Avg300 = x
			}
		}
	}
	if !seenSome {
		return PSI{}, perr(file, 0, "no \"some\" line")
	}
	return p, nil
}

// ProcCgroup is one line of /proc/<pid>/cgroup.
type ProcCgroup struct {
	ID          int      // hierarchy ID; 0 for the v2 unified hierarchy
	Controllers []string // empty for v2; "name=systemd" for named v1 hierarchies
	Path        string   // absolute path inside the hierarchy
}

// ParseProcCgroup parses /proc/<pid>/cgroup ("ID:controllers:path" lines).
// A path may contain ':' (everything after the second ':' is the path).
func ParseProcCgroup(file string, data []byte) ([]ProcCgroup, error) {
	ls := lines(data)
	if len(ls) == 0 {
		return nil, perr(file, 0, "empty")
	}
	out := make([]ProcCgroup, 0, len(ls))
	for i, l := range ls {
		parts := strings.SplitN(string(l), ":", 3)
		if len(parts) != 3 {
			return nil, perr(file, i+1, "want \"id:controllers:path\", got %s", quote(l))
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil || id < 0 {
			return nil, perr(file, i+1, "hierarchy id %s is not a non-negative integer", quote([]byte(parts[0])))
		}
		if !strings.HasPrefix(parts[2], "/") {
			return nil, perr(file, i+1, "path %s is not absolute", quote([]byte(parts[2])))
		}
		var ctrls []string
		if parts[1] != "" {
			ctrls = strings.Split(parts[1], ",")
		}
		if id == 0 && len(ctrls) != 0 {
			return nil, perr(file, i+1, "hierarchy 0 (v2) with controllers %q", parts[1])
		}
		out = append(out, ProcCgroup{ID: id, Controllers: ctrls, Path: parts[2]})
	}
	return out, nil
}

// ParsePIDs parses cgroup.procs / tasks: one decimal PID per line.
func ParsePIDs(file string, data []byte) ([]int, error) {
	ls := lines(data)
	out := make([]int, 0, len(ls))
	for i, l := range ls {
		pid, err := strconv.Atoi(string(bytes.TrimSpace(l)))
		if err != nil || pid <= 0 {
			return nil, perr(file, i+1, "pid %s is not a positive integer", quote(l))
		}
		out = append(out, pid)
	}
	return out, nil
}

// ParseFreezerState parses cgroup v1 freezer.state: THAWED, FREEZING or FROZEN.
func ParseFreezerState(file string, data []byte) (string, error) {
	s := strings.TrimSpace(string(data))
	switch s {
	case "THAWED", "FREEZING", "FROZEN":
		return s, nil
	}
	return "", perr(file, 0, "unknown freezer state %s", quote(data))
}

// ParseBool01 parses a "0"/"1" file (cgroup.freeze).
func ParseBool01(file string, data []byte) (bool, error) {
	switch strings.TrimSpace(string(data)) {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, perr(file, 0, "want 0 or 1, got %s", quote(data))
}
