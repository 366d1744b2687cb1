package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var s []float64
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s = append(s, float64(i))
	}
	p50, p99, maxv := summarize(s)
	if p50 != 50 || p99 != 99 || maxv != 100 {
		t.Fatalf("summarize 1..100 = %v/%v/%v, want 50/99/100", p50, p99, maxv)
	}
	if a, b, c := summarize(nil); a != 0 || b != 0 || c != 0 {
		t.Fatalf("summarize(nil) = %v/%v/%v, want zeros", a, b, c)
	}
	if a, b, c := summarize([]float64{7}); a != 7 || b != 7 || c != 7 {
		t.Fatalf("summarize([7]) = %v/%v/%v", a, b, c)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "1K": 1024, "256M": 256 << 20, "1g": 1 << 30, " 2T ": 2 << 40} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "0", "1.5G", "12X"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): want an error", in)
		}
	}
}

// TestWindowFlush: the summary file is replaced atomically per flush, with
// the window's samples and errors, and the next window starts empty.
func TestWindowFlush(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sub", "p.json")
	w, err := newWindow("x", out)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		w.add(time.Duration(i) * time.Millisecond)
	}
	w.fail(syscall.ENOSPC)
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	var s Summary
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Seq != 1 || s.Count != 10 || s.P50 != 5000 || s.Max != 10000 || s.Errors != 1 || !strings.Contains(s.LastErr, "no space") {
		t.Fatalf("first window: %+v", s)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(out)
	s = Summary{}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Seq != 2 || s.Count != 0 || s.Errors != 0 {
		t.Fatalf("second window not reset: %+v", s)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temp file left behind: %v", err)
	}
}

func TestNewWindowNeedsOut(t *testing.T) {
	if _, err := newWindow("x", ""); err == nil {
		t.Fatal("want an error without -out")
	}
}

func TestReport(t *testing.T) {
	in := `{"setup":"plain","workload":"idle","window_s":10,"asil_survived":true,"bystander_survived":true,"partition_restarted":false,"reaction_s":null,"psi_us":{"memory":0,"cpu":1000,"io":0},"probes":{"tick":{"probe":"tick","count":10,"p50_us":100,"p99_us":1000,"max_us":2000}}}
{"setup":"plain","workload":"memhog","window_s":10,"asil_survived":false,"asil_detail":"ffi-touch died","bystander_survived":false,"partition_restarted":true,"reaction_s":null,"psi_us":{"memory":500000,"cpu":2000,"io":0},"probes":{"tick":{"probe":"tick","count":10,"p50_us":200,"p99_us":4000,"max_us":9000}}}
{"setup":"qmd","workload":"idle","window_s":10,"asil_survived":true,"bystander_survived":true,"partition_restarted":false,"reaction_s":null,"psi_us":{"memory":0,"cpu":1000,"io":0},"probes":{"tick":{"probe":"tick","count":10,"p50_us":100,"p99_us":1000,"max_us":2000}}}
{"setup":"qmd","workload":"memhog","window_s":10,"asil_survived":true,"bystander_survived":true,"partition_restarted":false,"reaction_s":1.5,"reaction":"first throttle","psi_us":{"memory":100000,"cpu":2000,"io":0},"probes":{"tick":{"probe":"tick","count":10,"p50_us":100,"p99_us":2000,"max_us":3000}}}
`
	f := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(f, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := runReport([]string{f}, &buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		// tick p99: plain 4 ms (x4 idle), qmd 2 ms (x2 idle), qmd/plain 0.50
		"memhog tick p99 ms 4.00 4.00 2.00 2.00 0.50",
		"memhog ASIL survived NO yes",
		"memhog partition restarted RESTARTED no",
		"memhog qmd first reaction s 1.50",
		"memhog ASIL PSI mem ms 500 - 100 - 0.20",
		"plain/memhog: ASIL: ffi-touch died",
		"qmd/memhog: reaction: first throttle",
	} {
		if !strings.Contains(squeeze(out), want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// squeeze collapses runs of spaces to one, so the test does not depend on
// column widths.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestReportErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"setup\":\"qmd\"}\n"), 0o644)
	if err := runReport([]string{bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("missing workload: err %v, want one naming line 1", err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, nil, 0o644)
	if err := runReport([]string{empty}, &bytes.Buffer{}); err == nil {
		t.Fatal("empty file: want an error")
	}
	if err := runReport([]string{filepath.Join(dir, "nope")}, &bytes.Buffer{}); err == nil {
		t.Fatal("missing file: want an error")
	}
}

// TestReadProbe: the read probe creates its file, reads it with O_DIRECT
// (where the filesystem allows it) and writes a window with samples.
func TestReadProbe(t *testing.T) {
	dir := t.TempDir()
	probeFile := filepath.Join(dir, "r.dat")
	if f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_RDWR|syscall.O_DIRECT, 0o644); err != nil {
		t.Skipf("no O_DIRECT on %s: %v", dir, err)
	} else {
		f.Close()
	}
	for _, bad := range [][]string{{"-path", ""}, {"-path", probeFile, "-size", "1000"}, {"-path", probeFile, "-period", "0s"}, {"-path", probeFile, "-file-size", "4096"}} {
		if err := runRead(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if err := ensureFile(probeFile, 1<<20); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(probeFile); err != nil || st.Size() != 1<<20 {
		t.Fatalf("file: %v %v", st, err)
	}
}
