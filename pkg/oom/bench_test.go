package oom

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/containers/qmd/pkg/cgroups"
)

// BenchmarkAuditNoDrift: one audit of a partition with 200 processes (40
// of them in nested containers) where nothing needs repair: the cost of a
// resync tick.
func BenchmarkAuditNoDrift(b *testing.B) {
	f := &fake{root: b.TempDir(), proc: b.TempDir()}
	benchTree(b, f)
	a := &Auditor{
		Policy: DefaultPolicy(), ProcRoot: f.proc, Lister: f.h,
		Partition: func() (Target, bool) { return Target{Name: "qm", Cgroup: part, InitPID: 1001}, true },
	}
	if p, err := f.h.Processes(part); err != nil || len(p) != 200 {
		b.Fatalf("fake tree: %d processes, %v", len(p), err)
	}
	ctx := context.Background()
	for b.Loop() {
		r, err := a.Audit(ctx)
		if err != nil || len(r) != 0 {
			b.Fatalf("%v %v", r, err)
		}
	}
	b.ReportMetric(200, "procs/audit")
}

func benchTree(b *testing.B, f *fake) {
	b.Helper()
	writeB(b, f.root+"/cgroup.controllers", "memory\n")
	for i := 0; i < 200; i++ {
		pid := 1000 + i
		cg, score := part+"/system.slice/svc"+strconv.Itoa(i%10)+".service", 500
		if i%5 == 0 {
			cg, score = part+"/machine.slice/libpod-c"+strconv.Itoa(i%3)+".scope", 750
		}
		procs := f.root + cg + "/cgroup.procs"
		old := readB(procs)
		writeB(b, procs, old+strconv.Itoa(pid)+"\n")
		dir := f.proc + "/" + strconv.Itoa(pid)
		writeB(b, dir+"/oom_score_adj", strconv.Itoa(score)+"\n")
		writeB(b, dir+"/comm", "x\n")
		writeB(b, dir+"/cgroup", "0::"+cg+"\n")
	}
	h, err := cgroupsHierarchy(f.root)
	if err != nil {
		b.Fatal(err)
	}
	f.h = h
}

func readB(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func writeB(b *testing.B, p, s string) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
}

func cgroupsHierarchy(root string) (*cgroups.Hierarchy, error) { return cgroups.NewHierarchy(root) }
