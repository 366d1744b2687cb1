package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// Record is one workload window of one setup, one line of results.jsonl
// (written by test/e2e/vm/ffi.sh in the VM).
type Record struct {
	Setup             string             `json:"setup"`    // "plain" or "qmd"
	Workload          string             `json:"workload"` // "idle" is the baseline
	Window            float64            `json:"window_s"`
	ASILSurvived      bool               `json:"asil_survived"`
	ASILDetail        string             `json:"asil_detail"`
	BystanderSurvived bool               `json:"bystander_survived"`
	Restarted         bool               `json:"partition_restarted"`
	ReactionS         *float64           `json:"reaction_s"` // qmd's first journal entry after the start
	Reaction          string             `json:"reaction"`
	PSI               map[string]float64 `json:"psi_us"` // ASIL slice "some" stall delta, µs
	Probes            map[string]Summary `json:"probes"`
	Note              string             `json:"note"`
}

func readRecords(r io.Reader) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if rec.Setup == "" || rec.Workload == "" {
			return nil, fmt.Errorf("line %d: setup and workload are required", n)
		}
		recs = append(recs, rec)
	}
	return recs, sc.Err()
}

func runReport(args []string, w io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: ffiprobe report results.jsonl")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := readRecords(f)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if len(recs) == 0 {
		return fmt.Errorf("%s: no records", args[0])
	}
	return writeTable(w, recs)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// ratio a/b as "1.23", "-" when either is missing or b is 0.
func ratio(a, b float64, okA, okB bool) string {
	if !okA || !okB || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func num(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// writeTable prints one table: per workload, one row per metric with the
// plain and the qmd value, each against its setup's idle baseline, and the
// ratio qmd/plain. Probe latencies are in ms.
func writeTable(out io.Writer, recs []Record) error {
	by := map[string]map[string]Record{} // setup -> workload -> record
	var order []string
	seen := map[string]bool{}
	for _, r := range recs {
		if by[r.Setup] == nil {
			by[r.Setup] = map[string]Record{}
		}
		by[r.Setup][r.Workload] = r
		if !seen[r.Workload] {
			seen[r.Workload] = true
			order = append(order, r.Workload)
		}
	}
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmetric\tplain\tplain/idle\tqmd\tqmd/idle\tqmd/plain\t")
	type getter func(Record) (float64, bool)
	probe := func(name, q string) getter {
		return func(r Record) (float64, bool) {
			s, ok := r.Probes[name]
			if !ok || s.Count == 0 {
				return 0, false
			}
			switch q {
			case "p50":
				return s.P50 / 1e3, true
			case "p99":
				return s.P99 / 1e3, true
			}
			return s.Max / 1e3, true
		}
	}
	psi := func(res string) getter {
		return func(r Record) (float64, bool) {
			v, ok := r.PSI[res]
			return v / 1e3, ok
		}
	}
	metrics := []struct {
		name string
		get  getter
	}{
		{"tick p50 ms", probe("tick", "p50")}, {"tick p99 ms", probe("tick", "p99")}, {"tick max ms", probe("tick", "max")},
		{"touch p50 ms", probe("touch", "p50")}, {"touch p99 ms", probe("touch", "p99")}, {"touch max ms", probe("touch", "max")},
		{"fsync p50 ms", probe("fsync", "p50")}, {"fsync p99 ms", probe("fsync", "p99")}, {"fsync max ms", probe("fsync", "max")},
		{"ASIL PSI mem ms", psi("memory")}, {"ASIL PSI cpu ms", psi("cpu")}, {"ASIL PSI io ms", psi("io")},
	}
	for _, wl := range order {
		p, okP := by["plain"][wl]
		q, okQ := by["qmd"][wl]
		pi, okPI := by["plain"]["idle"]
		qi, okQI := by["qmd"]["idle"]
		flag := func(get func(Record) string) (string, string) {
			a, b := "-", "-"
			if okP {
				a = get(p)
			}
			if okQ {
				b = get(q)
			}
			return a, b
		}
		a, b := flag(func(r Record) string { return yesNo(r.ASILSurvived) })
		fmt.Fprintf(tw, "%s\tASIL survived\t%s\t\t%s\t\t\t\n", wl, a, b)
		a, b = flag(func(r Record) string { return yesNo(r.BystanderSurvived) })
		fmt.Fprintf(tw, "%s\tQM bystander survived\t%s\t\t%s\t\t\t\n", wl, a, b)
		a, b = flag(func(r Record) string {
			if r.Restarted {
				return "RESTARTED"
			}
			return "no"
		})
		fmt.Fprintf(tw, "%s\tpartition restarted\t%s\t\t%s\t\t\t\n", wl, a, b)
		for _, m := range metrics {
			var pv, qv, piv, qiv float64
			var hp, hq, hpi, hqi bool
			if okP {
				pv, hp = m.get(p)
			}
			if okQ {
				qv, hq = m.get(q)
			}
			if okPI {
				piv, hpi = m.get(pi)
			}
			if okQI {
				qiv, hqi = m.get(qi)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", wl, m.name,
				num(pv, hp), ratio(pv, piv, hp, hpi), num(qv, hq), ratio(qv, qiv, hq, hqi), ratio(qv, pv, hq, hp))
		}
		b = "-"
		if okQ {
			if q.ReactionS != nil {
				b = fmt.Sprintf("%.2f", *q.ReactionS)
			} else {
				b = "none"
			}
		}
		fmt.Fprintf(tw, "%s\tqmd first reaction s\t\t\t%s\t\t\t\n", wl, b)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The reactions and notes in words, below the table (too long for it).
	for _, r := range recs {
		var parts []string
		if r.Reaction != "" {
			parts = append(parts, "reaction: "+r.Reaction)
		}
		if !r.ASILSurvived && r.ASILDetail != "" {
			parts = append(parts, "ASIL: "+r.ASILDetail)
		}
		if r.Note != "" {
			parts = append(parts, r.Note)
		}
		if len(parts) > 0 {
			fmt.Fprintf(out, "%s/%s: %s\n", r.Setup, r.Workload, strings.Join(parts, "; "))
		}
	}
	return nil
}
