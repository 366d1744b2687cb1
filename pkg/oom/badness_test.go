package oom

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/containers/qmd/pkg/cgroups"
)

// TestLargest: the OOM killer's pick among a partition's processes: the
// largest oom_score, never the skipped init, never an oom_score_adj -1000
// process, nothing that is gone or unreadable; ties to the later one.
func TestLargest(t *testing.T) {
	f := newFake(t)
	nested := part + "/libpod-nested.scope"
	for _, p := range []struct {
		pid, adj, score int
		cg, comm        string
	}{
		{1, 500, 1300, part, "init"},         // the partition's init: skipped
		{2, 500, 700, part, "journald"},      //
		{3, 750, 900, nested, "hog"},         // the pick
		{4, -1000, 0, nested, "unkillable"},  // never
		{5, 750, 900, part, "twin"},          // a tie with 3
		{6, 500, 2000, part, "no oom_score"}, // unreadable: its oom_score is removed below
	} {
		f.addProc(p.pid, p.cg, p.adj, p.comm)
		write(t, filepath.Join(f.proc, strconv.Itoa(p.pid), "oom_score"), strconv.Itoa(p.score)+"\n")
	}
	write(t, filepath.Join(f.proc, "6", "oom_score"), "garbage\n")
	procs, err := f.h.Processes(part)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := Largest(f.proc, procs, 1)
	if !ok {
		t.Fatal("no pick")
	}
	// 3 and 5 tie at 900: the later in the listing wins, as in the kernel.
	var last int
	for _, pc := range procs {
		if pc.PID == 3 || pc.PID == 5 {
			last = pc.PID
		}
	}
	if b.PID != last || b.Score != 900 || b.ScoreAdj != 750 {
		t.Errorf("picked %+v, want pid %d (score 900)", b, last)
	}
	if b.PID == 3 && (b.Comm != "hog" || b.Cgroup != nested) {
		t.Errorf("pick %+v: comm or cgroup wrong", b)
	}
	var onlyInit []cgroups.Process
	for _, pc := range procs {
		if pc.PID == 1 || pc.PID == 4 {
			onlyInit = append(onlyInit, pc)
		}
	}
	if _, ok := Largest(f.proc, onlyInit, 1); ok {
		t.Error("picked the init")
	}
	if _, err := ReadBadness(f.proc, 6); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage oom_score: %v", err)
	}
	if _, err := ReadBadness(f.proc, 99); !errors.Is(err, ErrProcessGone) {
		t.Errorf("missing process: %v", err)
	}
}
