package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Infinity is the byte count meaning "no limit" (systemd's and the D-Bus
// API's UINT64_MAX).
const Infinity = math.MaxUint64

// Size is a memory size as written in the configuration: "2G", "512M",
// "4096", "50%" (of physical memory), "infinity" or "max". The zero Size is
// "not set".
type Size struct {
	Bytes    uint64  // absolute bytes, or Infinity
	Percent  float64 // 0 < Percent <= 100 when relative to physical memory
	Set      bool
	Original string
}

// ParseSize parses the configuration's size syntax. Suffixes are binary
// (K=1024), as systemd's MemoryMax= reads them.
func ParseSize(s string) (Size, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Size{}, errors.New("empty size")
	}
	switch strings.ToLower(s) {
	case "infinity", "max":
		return Size{Bytes: Infinity, Set: true, Original: orig}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
			return Size{}, fmt.Errorf("%q: a percentage must be in (0, 100]", orig)
		}
		return Size{Percent: f, Set: true, Original: orig}, nil
	}
	mult := uint64(1)
	last := s[len(s)-1]
	if last == 'B' || last == 'b' {
		s = s[:len(s)-1]
		if s == "" {
			return Size{}, fmt.Errorf("%q: no number", orig)
		}
		last = s[len(s)-1]
	}
	switch last {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return Size{}, fmt.Errorf("%q: not a size (use e.g. 512M, 2G, 50%%, infinity)", orig)
	}
	if n > Infinity/mult {
		return Size{}, fmt.Errorf("%q: too large", orig)
	}
	return Size{Bytes: n * mult, Set: true, Original: orig}, nil
}

// Resolve turns the size into bytes, given the host's physical memory.
func (s Size) Resolve(memTotal uint64) uint64 {
	if s.Percent > 0 {
		return uint64(float64(memTotal) * s.Percent / 100)
	}
	return s.Bytes
}

// IsInfinity reports whether the size means "no limit".
func (s Size) IsInfinity() bool { return s.Set && s.Percent == 0 && s.Bytes == Infinity }

func (s Size) String() string {
	switch {
	case !s.Set:
		return ""
	case s.Original != "":
		return s.Original
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	case s.Bytes == Infinity:
		return "infinity"
	}
	return strconv.FormatUint(s.Bytes, 10)
}

// UnmarshalTOML accepts a string ("2G") or an integer (bytes).
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		p, err := ParseSize(x)
		if err != nil {
			return err
		}
		*s = p
	case int64:
		if x < 0 {
			return fmt.Errorf("%d: a size cannot be negative", x)
		}
		*s = Size{Bytes: uint64(x), Set: true, Original: strconv.FormatInt(x, 10)}
	default:
		return fmt.Errorf("%v: a size is a string like \"512M\" or a byte count", v)
	}
	return nil
}

// MarshalText prints the size as written.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Duration is a time.Duration written as "100ms", "10s", "10m".
type Duration struct{ time.Duration }

// UnmarshalTOML accepts a Go duration string.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("%v: a duration is a string like \"100ms\" or \"10s\"", v)
	}
	p, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q: not a duration (use e.g. 100ms, 10s, 10m)", s)
	}
	d.Duration = p
	return nil
}

// MarshalText prints the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Rlimit is "soft:hard" or a single value for both; "unlimited" allowed.
type Rlimit struct {
	Soft, Hard uint64
}

// RlimitInfinity is RLIM_INFINITY.
const RlimitInfinity = math.MaxUint64

// ParseRlimit parses "1024:20000", "4096" or "unlimited".
func ParseRlimit(s string) (Rlimit, error) {
	one := func(v string) (uint64, error) {
		v = strings.TrimSpace(v)
		if v == "unlimited" || v == "infinity" {
			return RlimitInfinity, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: not a number or \"unlimited\"", v)
		}
		return n, nil
	}
	soft, hard, two := strings.Cut(s, ":")
	sv, err := one(soft)
	if err != nil {
		return Rlimit{}, err
	}
	hv := sv
	if two {
		if hv, err = one(hard); err != nil {
			return Rlimit{}, err
		}
	}
	if sv > hv {
		return Rlimit{}, fmt.Errorf("%q: soft limit above hard limit", s)
	}
	return Rlimit{Soft: sv, Hard: hv}, nil
}

func (r Rlimit) String() string {
	f := func(v uint64) string {
		if v == RlimitInfinity {
			return "unlimited"
		}
		return strconv.FormatUint(v, 10)
	}
	return f(r.Soft) + ":" + f(r.Hard)
}
