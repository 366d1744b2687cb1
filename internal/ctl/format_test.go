package ctl

import (
	"math"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"1": 1, "512": 512, "1K": 1024, "512M": 512 << 20, "2G": 2 << 30, "2g": 2 << 30, "1.5G": 3 << 29,
		"512MiB": 512 << 20, "4KB": 4096, "1T": 1 << 40, "infinity": math.MaxUint64, "max": math.MaxUint64,
		"0.5K": 512, " 3M ": 3 << 20, "10B": 10,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0K", "-1", "1X", "G", "1..5G", "1.G", "1e3", "16E", "99999999999999999999", "1.5.5M", "5%", "0x10"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[uint64]string{
		0: "0B", 1023: "1023B", 1024: "1K", 1536: "1.5K", 100 << 20: "100M", 2 << 30: "2G",
		(1 << 30) - 1: "1.0G", math.MaxUint64: "infinity", 3 << 40: "3T",
	} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatAgo(t *testing.T) {
	now := time.Now()
	for d, want := range map[time.Duration]string{
		0: "now", 3 * time.Second: "3s ago", 5*time.Minute + 12*time.Second: "5min 12s ago",
		2*time.Hour + 3*time.Minute: "2h 3min ago", 2 * time.Hour: "2h ago", 50 * time.Hour: "2d 2h ago",
		-90 * time.Second: "1min 30s left",
	} {
		if got := formatAgo(now.Add(-d), now); got != want {
			t.Errorf("formatAgo(-%s) = %q, want %q", d, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c := lookup("incidents")
	inv, err := parse(c, []string{"qm", "-f", "--limit=5", "--after", "7", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if inv.args[0] != "qm" || !inv.has("follow") || inv.flags["limit"] != "5" || inv.flags["after"] != "7" || !inv.has("json") {
		t.Fatalf("%+v", inv)
	}
	inv, err = parse(lookup("set-oom-score-adjust"), []string{"qm", "-100"})
	if err != nil || inv.args[1] != "-100" {
		t.Fatalf("negative number as argument: %+v %v", inv, err)
	}
	if _, err := parse(lookup("list"), []string{"--json=1"}); err == nil {
		t.Fatal("bool flag with a value accepted")
	}
	inv, err = parse(lookup("start"), []string{"--", "qm"})
	if err != nil || inv.args[0] != "qm" {
		t.Fatalf("-- : %+v %v", inv, err)
	}
}
