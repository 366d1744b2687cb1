package cgroups

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseFlatKeyed(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]uint64
		wantErr string
	}{
		{"memory.events", "low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n",
			map[string]uint64{"low": 0, "high": 3, "max": 1, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}, ""},
		{"no trailing newline", "max 7", map[string]uint64{"max": 7}, ""},
		{"empty", "", map[string]uint64{}, ""},
		{"tabs", "a\t1\n", map[string]uint64{"a": 1}, ""},
		{"missing value", "oom\n", nil, "line 1"},
		{"extra field", "oom 1 2\n", nil, "want \"key value\""},
		{"negative", "oom -1\n", nil, "not an unsigned integer"},
		{"overflow", "oom 18446744073709551616\n", nil, "not an unsigned integer"},
		{"duplicate", "oom 1\noom 2\n", nil, "duplicate key \"oom\""},
		{"blank line", "oom 1\n\nmax 2\n", nil, "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFlatKeyed("memory.events", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "memory.events") {
					t.Fatalf("err = %v, want containing %q and the file name", err, tt.wantErr)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v does not wrap ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"max\n", Max, false},
		{"infinity", Max, false},
		{"67108864\n", 64 << 20, false},
		{"0", 0, false},
		{"", 0, true},
		{"\n", 0, true},
		{"-1", 0, true},
		{"12 34", 0, true},
		{"1.5", 0, true},
		{"maxx", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseUint("memory.max", []byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseUint(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), "memory.max") {
			t.Errorf("error %q does not name the file", err)
		}
		if got != tt.want {
			t.Errorf("ParseUint(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseV1Limit(t *testing.T) {
	for in, want := range map[string]uint64{
		"9223372036854771712\n": Max, // unlimited on 4 KiB pages
		"9223372036854775807":   Max,
		"-1":                    Max,
		"67108864":              64 << 20,
	} {
		got, err := parseV1Limit("memory.limit_in_bytes", []byte(in))
		if err != nil || got != want {
			t.Errorf("parseV1Limit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseV1Limit("memory.limit_in_bytes", []byte("-2")); err == nil {
		t.Error("-2 accepted")
	}
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{"-1\n": -1, "100000": 100000, "-1000": -1000} {
		got, err := ParseInt("cpu.cfs_quota_us", []byte(in))
		if err != nil || got != want {
			t.Errorf("ParseInt(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "1 2", "9223372036854775808"} {
		if _, err := ParseInt("cpu.cfs_quota_us", []byte(in)); err == nil || !strings.Contains(err.Error(), "cpu.cfs_quota_us") {
			t.Errorf("ParseInt(%q) err = %v", in, err)
		}
	}
}

func TestParseCPUMax(t *testing.T) {
	tests := []struct {
		in      string
		want    CPUMax
		wantErr string
	}{
		{"max 100000\n", CPUMax{Max, 100000}, ""},
		{"50000 100000", CPUMax{50000, 100000}, ""},
		{"max", CPUMax{}, "quota period"},
		{"50000 0", CPUMax{}, "period"},
		{"x 100000", CPUMax{}, "quota"},
		{"1 2 3", CPUMax{}, "quota period"},
		{"", CPUMax{}, "quota period"},
	}
	for _, tt := range tests {
		got, err := ParseCPUMax("cpu.max", []byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "cpu.max") {
				t.Errorf("ParseCPUMax(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCPUMax(%q) = %v, %v", tt.in, got, err)
		}
		if tt.wantErr == "" {
			back, err := ParseCPUMax("cpu.max", []byte(got.String()))
			if err != nil || back != got {
				t.Errorf("round trip %v -> %q -> %v, %v", got, got.String(), back, err)
			}
		}
	}
}

func TestParsePSI(t *testing.T) {
	in := "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n"
	p, err := ParsePSI("memory.pressure", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := PSI{Some: PSILine{1.5, 0.2, 0, 123456}, Full: PSILine{0, 0, 0, 42}, HasFull: true}
	if p != want {
		t.Fatalf("got %+v want %+v", p, want)
	}
	p, err = ParsePSI("cpu.pressure", []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"))
	if err != nil || p.HasFull {
		t.Fatalf("some-only: %+v %v", p, err)
	}
	bad := map[string]string{
		"": "no \"some\" line",
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0":                               "no \"some\" line",
		"some avg10=0.00 avg60=0.00 avg300=0.00":                                       "want",
		"some avg60=0.00 avg10=0.00 avg300=0.00 total=0":                               "avg10",
		"some avg10=x avg60=0.00 avg300=0.00 total=0":                                  "not a percentage",
		"some avg10=101 avg60=0.00 avg300=0.00 total=0":                                "not a percentage",
		"some avg10=NaN avg60=0.00 avg300=0.00 total=0":                                "not a percentage",
		"some avg10=0 avg60=0 avg300=0 total=-1":                                       "total",
		"half avg10=0 avg60=0 avg300=0 total=1":                                        "unknown kind",
		"some avg10=0 avg60=0 avg300=0 total=1\nsome avg10=0 avg60=0 avg300=0 total=1": "duplicate",
	}
	for in, want := range bad {
		_, err := ParsePSI("memory.pressure", []byte(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "memory.pressure") {
			t.Errorf("ParsePSI(%q) err = %v, want %q", in, err, want)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	hybrid := "9:name=systemd:/\n4:memory:/qm\n2:cpu,cpuacct:/qm\n0::/\n"
	got, err := ParseProcCgroup("/proc/1/cgroup", []byte(hybrid))
	if err != nil {
		t.Fatal(err)
	}
	want := []ProcCgroup{
		{9, []string{"name=systemd"}, "/"},
		{4, []string{"memory"}, "/qm"},
		{2, []string{"cpu", "cpuacct"}, "/qm"},
		{0, nil, "/"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	got, err = ParseProcCgroup("f", []byte("0::/a:b/c\n"))
	if err != nil || got[0].Path != "/a:b/c" {
		t.Fatalf("colon in path: %+v %v", got, err)
	}
	for in, want := range map[string]string{
		"":               "empty",
		"0:/x\n":         "id:controllers:path",
		"x::/\n":         "hierarchy id",
		"-1::/\n":        "hierarchy id",
		"0::relative\n":  "not absolute",
		"0:memory:/x\n":  "hierarchy 0",
		"4:memory:/\n\n": "line 2",
	} {
		_, err := ParseProcCgroup("/proc/7/cgroup", []byte(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "/proc/7/cgroup") {
			t.Errorf("ParseProcCgroup(%q) err = %v, want %q", in, err, want)
		}
	}
}

func TestParsePIDs(t *testing.T) {
	got, err := ParsePIDs("cgroup.procs", []byte("1\n22\n333\n"))
	if err != nil || !reflect.DeepEqual(got, []int{1, 22, 333}) {
		t.Fatalf("got %v %v", got, err)
	}
	got, err = ParsePIDs("cgroup.procs", nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, in := range []string{"0\n", "-1\n", "a\n", "1\n\n2\n"} {
		if _, err := ParsePIDs("cgroup.procs", []byte(in)); err == nil || !strings.Contains(err.Error(), "cgroup.procs") {
			t.Errorf("ParsePIDs(%q) err = %v", in, err)
		}
	}
}

func TestParseSmall(t *testing.T) {
	if s, err := ParseFreezerState("freezer.state", []byte("FROZEN\n")); err != nil || s != "FROZEN" {
		t.Errorf("freezer: %q %v", s, err)
	}
	if _, err := ParseFreezerState("freezer.state", []byte("frozen")); err == nil || !strings.Contains(err.Error(), "freezer.state") {
		t.Errorf("freezer lower case accepted: %v", err)
	}
	if b, err := ParseBool01("cgroup.freeze", []byte("1\n")); err != nil || !b {
		t.Errorf("bool: %v %v", b, err)
	}
	if _, err := ParseBool01("cgroup.freeze", []byte("2")); err == nil {
		t.Error("2 accepted")
	}
	st, err := ParseCgroupEvents("cgroup.events", []byte("populated 1\nfrozen 0\n"))
	if err != nil || st != (State{Populated: true}) {
		t.Errorf("cgroup.events: %+v %v", st, err)
	}
	for _, in := range []string{"frozen 1\n", "populated 2\n", "populated x\n"} {
		if _, err := ParseCgroupEvents("cgroup.events", []byte(in)); err == nil || !strings.Contains(err.Error(), "cgroup.events") {
			t.Errorf("ParseCgroupEvents(%q) err = %v", in, err)
		}
	}
	oc, err := ParseOOMControl("memory.oom_control", []byte("oom_kill_disable 0\nunder_oom 1\noom_kill 4\n"))
	if err != nil || oc != (OOMControl{UnderOOM: true, OOMKill: 4, HasOOMKill: true}) {
		t.Errorf("oom_control: %+v %v", oc, err)
	}
	oc, err = ParseOOMControl("memory.oom_control", []byte("oom_kill_disable 1\nunder_oom 0\n"))
	if err != nil || oc != (OOMControl{OOMKillDisable: true}) {
		t.Errorf("old kernel oom_control: %+v %v", oc, err)
	}
	for _, in := range []string{"under_oom 0\n", "oom_kill_disable 0\nunder_oom 3\n"} {
		if _, err := ParseOOMControl("memory.oom_control", []byte(in)); err == nil || !strings.Contains(err.Error(), "memory.oom_control") {
			t.Errorf("ParseOOMControl(%q) err = %v", in, err)
		}
	}
}

func TestSharesWeight(t *testing.T) {
	for _, tt := range []struct{ shares, weight uint64 }{{2, 1}, {1024, 39}, {262144, 10000}, {0, 1}, {1 << 30, 10000}} {
		if got := SharesToWeight(tt.shares); got != tt.weight {
			t.Errorf("SharesToWeight(%d) = %d, want %d", tt.shares, got, tt.weight)
		}
	}
	for w := uint64(1); w <= 10000; w += 37 {
		if got := SharesToWeight(WeightToShares(w)); got != w && got+1 != w {
			t.Errorf("weight %d -> shares %d -> weight %d", w, WeightToShares(w), got)
		}
	}
}
