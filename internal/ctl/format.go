package ctl

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// infinity is how D-Bus carries "no limit" for memory sizes.
const infinity = math.MaxUint64

// parseSize parses a memory size the way systemd does for MemoryHigh= and
// MemoryMax=: a byte count with an optional base-1024 suffix K, M, G, T, P
// or E (also accepted: KB/KiB and so on, lower case), a decimal fraction
// ("1.5G"), or "infinity" / "max" for no limit. Zero is rejected.
func parseSize(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	switch strings.ToLower(in) {
	case "":
		return 0, errors.New("size is empty")
	case "infinity", "max":
		return infinity, nil
	}
	num := strings.TrimRightFunc(in, func(r rune) bool { return r < '0' || r > '9' })
	suffix := strings.ToUpper(strings.TrimSpace(in[len(num):]))
	if strings.HasSuffix(num, ".") {
		return 0, fmt.Errorf("size %q: malformed number", s)
	}
	suffix = strings.TrimSuffix(suffix, "B")
	suffix = strings.TrimSuffix(suffix, "I")
	var mult uint64 = 1
	if suffix != "" {
		i := strings.Index("KMGTPE", suffix)
		if len(suffix) != 1 || i < 0 {
			return 0, fmt.Errorf("size %q: unknown unit (want K, M, G, T, P, E, or infinity)", s)
		}
		mult = 1 << (10 * (i + 1))
	}
	if num == "" {
		return 0, fmt.Errorf("size %q: not a number", s)
	}
	var bytes uint64
	if whole, frac, ok := strings.Cut(num, "."); ok {
		if whole == "" {
			whole = "0"
		}
		w, err := strconv.ParseUint(whole, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", s, numErr(err))
		}
		f, err := strconv.ParseFloat("0."+frac, 64)
		if err != nil || strings.ContainsAny(frac, ".eE+-") {
			return 0, fmt.Errorf("size %q: malformed number", s)
		}
		if w > math.MaxUint64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		bytes = w*mult + uint64(f*float64(mult))
		if bytes < w*mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
	} else {
		w, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", s, numErr(err))
		}
		if w > math.MaxUint64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		bytes = w * mult
	}
	if bytes == 0 {
		return 0, fmt.Errorf("size %q: must be greater than 0 (use \"infinity\" for no limit)", s)
	}
	if bytes == infinity {
		return 0, fmt.Errorf("size %q: too large (use \"infinity\" for no limit)", s)
	}
	return bytes, nil
}

func numErr(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		if errors.Is(ne.Err, strconv.ErrRange) {
			return errors.New("too large")
		}
		return errors.New("not a number")
	}
	return err
}

// formatBytes formats a byte count like systemctl: base 1024, one decimal
// when not a whole number of units ("100M", "1.5G", "512B"), "infinity"
// for no limit.
func formatBytes(b uint64) string {
	if b == infinity {
		return "infinity"
	}
	const units = "KMGTPE"
	if b < 1024 {
		return fmt.Sprintf("%dB", b)
	}
	i := 0
	div := uint64(1024)
	for i < len(units)-1 && b/div >= 1024 {
		div <<= 10
		i++
	}
	if b%div == 0 {
		return fmt.Sprintf("%d%c", b/div, units[i])
	}
	v := float64(b) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if s == "1024.0" && i < len(units)-1 { // rounding carried into the next unit
		return fmt.Sprintf("1.0%c", units[i+1])
	}
	return s + string(units[i])
}

// formatAgo formats the time between t and now like systemd ("3s ago",
// "5min 12s ago", "2h 3min ago", "4d 2h ago", "1y 3month ago").
func formatAgo(t, now time.Time) string {
	d := now.Sub(t)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, " left"
	}
	if d < time.Second {
		return "now"
	}
	type unit struct {
		name string
		d    time.Duration
	}
	const day = 24 * time.Hour
	units := []unit{
		{"y", 31557600 * time.Second}, {"month", 2629800 * time.Second}, {"w", 7 * day},
		{"d", day}, {"h", time.Hour}, {"min", time.Minute}, {"s", time.Second},
	}
	var parts []string
	for _, u := range units {
		if d >= u.d {
			n := d / u.d
			d -= n * u.d
			parts = append(parts, fmt.Sprintf("%d%s", n, u.name))
			if len(parts) == 2 {
				break
			}
		} else if len(parts) > 0 {
			break
		}
	}
	return strings.Join(parts, " ") + suffix
}

// usecTime converts microseconds since the epoch (0 = unknown).
func usecTime(us uint64) time.Time {
	if us == 0 || us > math.MaxInt64 {
		return time.Time{}
	}
	return time.UnixMicro(int64(us))
}

// formatTimestamp is systemctl's timestamp format, in local time.
func formatTimestamp(t time.Time) string {
	return t.Local().Format("Mon 2006-01-02 15:04:05 MST")
}

// shortID shortens a container id the way podman ps does.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine makes s safe for a table cell: control characters become
// spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
