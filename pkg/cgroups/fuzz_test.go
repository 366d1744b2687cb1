package cgroups

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
)

const fuzzFile = "fuzzed.file"

// checkErr asserts the parser contract: a malformed input gives an error
// that wraps ErrMalformed and names the file.
func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error does not wrap ErrMalformed: %v", err)
	}
	if !strings.Contains(err.Error(), fuzzFile) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func FuzzParseFlatKeyed(f *testing.F) {
	for _, s := range []string{"low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\n", "max 0", "", "a", "a 1 2", "a -1", "a 1\na 2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseFlatKeyed(fuzzFile, b)
		checkErr(t, err)
		if err != nil {
			return
		}
		// Round trip: formatting the map and parsing again gives it back.
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s %d\n", k, m[k])
		}
		m2, err := ParseFlatKeyed(fuzzFile, []byte(sb.String()))
		if err != nil || len(m2) != len(m) {
			t.Fatalf("round trip of %v: %v %v", m, m2, err)
		}
	})
}

func FuzzParseUint(f *testing.F) {
	for _, s := range []string{"max", "infinity\n", "123\n", "", "-1", "1 2", "18446744073709551615"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseUint(fuzzFile, b)
		checkErr(t, err)
		if err == nil && v != Max {
			if v2, err := ParseUint(fuzzFile, []byte(formatMax(v))); err != nil || v2 != v {
				t.Fatalf("round trip %d: %d %v", v, v2, err)
			}
		}
		_, err = parseV1Limit(fuzzFile, b)
		checkErr(t, err)
		_, err = ParseInt(fuzzFile, b)
		checkErr(t, err)
		_, err = ParseBool01(fuzzFile, b)
		checkErr(t, err)
		_, err = ParseFreezerState(fuzzFile, b)
		checkErr(t, err)
	})
}

func FuzzParseCPUMax(f *testing.F) {
	for _, s := range []string{"max 100000\n", "50000 100000", "max", "1 0", "x y", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCPUMax(fuzzFile, b)
		checkErr(t, err)
		if err == nil {
			c2, err := ParseCPUMax(fuzzFile, []byte(c.String()))
			if err != nil || c2 != c {
				t.Fatalf("round trip %v: %v %v", c, c2, err)
			}
		}
	})
}

func FuzzParsePSI(f *testing.F) {
	for _, s := range []string{
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n",
		"some avg10=NaN avg60=0 avg300=0 total=0", "full", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePSI(fuzzFile, b)
		checkErr(t, err)
		if err == nil {
			for _, l := range []PSILine{p.Some, p.Full} {
				for _, x := range []float64{l.Avg10, l.Avg60, l.Avg300} {
					if x < 0 || x > 100 || x != x {
						t.Fatalf("avg %v accepted", x)
					}
				}
			}
		}
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	for _, s := range []string{
		"0::/machine.slice/libpod-abc.scope\n",
		"12:pids:/qm\n4:memory:/qm\n2:cpu,cpuacct:/qm\n1:name=systemd:/\n0::/\n",
		"0::/a:b", "x::/", "0:memory:/", "", "0::rel",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseProcCgroup(fuzzFile, b)
		checkErr(t, err)
		if err != nil {
			return
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Path, "/") || e.ID < 0 {
				t.Fatalf("bad entry %+v", e)
			}
		}
		// Resolving against either hierarchy never panics.
		for _, v := range []Version{V1, V2} {
			h := &Hierarchy{Root: "/nonexistent", Version: v}
			_, err := h.fromEntries(fuzzFile, es)
			if err != nil && !errors.Is(err, ErrMalformed) && !strings.Contains(err.Error(), "not clean") {
				t.Fatalf("fromEntries: %v", err)
			}
		}
	})
}

func FuzzParsePIDs(f *testing.F) {
	for _, s := range []string{"1\n2\n3\n", "", "0", "-1", "a\n", "1\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pids, err := ParsePIDs(fuzzFile, b)
		checkErr(t, err)
		for _, p := range pids {
			if p <= 0 {
				t.Fatalf("pid %d accepted", p)
			}
		}
	})
}

func FuzzParseOOMControl(f *testing.F) {
	for _, s := range []string{"oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill_disable 1\nunder_oom 0\n", "under_oom 2", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := ParseOOMControl(fuzzFile, b)
		checkErr(t, err)
		_, err = ParseCgroupEvents(fuzzFile, b)
		checkErr(t, err)
	})
}
