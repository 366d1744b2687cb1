package oom

import (
	"errors"
	"os"
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

// TestFootprint: what a kill gives back is VmRSS + VmSwap; a status file
// without them (a kernel thread) or with garbage counts as nothing.
func TestFootprint(t *testing.T) {
	f := newFake(t)
	for pid, status := range map[int]string{
		2: "Name:\thog\nVmPeak:\t 9999 kB\nVmRSS:\t    2048 kB\nRssAnon:\t 2000 kB\nVmSwap:\t  1024 kB\n",
		3: "Name:\tkthreadd\nState:\tS (sleeping)\n",
		4: "Name:\tx\nVmRSS:\tlots kB\nVmSwap:\t1 MB\n",
	} {
		f.addProc(pid, part, 500, "p")
		write(t, filepath.Join(f.proc, strconv.Itoa(pid), "oom_score"), "1000\n")
		write(t, filepath.Join(f.proc, strconv.Itoa(pid), "status"), status)
	}
	for pid, want := range map[int]uint64{2: 3072 << 10, 3: 0, 4: 0} {
		b, err := ReadBadness(f.proc, pid)
		if err != nil || b.Footprint != want {
			t.Errorf("pid %d: footprint %d (%v), want %d", pid, b.Footprint, err, want)
		}
	}
	if b, err := ReadBadness("/proc", os.Getpid()); err != nil || b.Footprint < 1<<20 {
		t.Errorf("this test process: footprint %d (%v), want its RSS", b.Footprint, err)
	}
}

// TestHighestElsewhere: the host's largest oom_score outside a set of
// pids; unreadable entries and non-pid names are skipped.
func TestHighestElsewhere(t *testing.T) {
	f := newFake(t)
	for _, p := range []struct{ pid, score int }{{1, 1}, {2, 1300}, {3, 700}, {4, 650}} {
		f.addProc(p.pid, part, 0, "p"+strconv.Itoa(p.pid))
		write(t, filepath.Join(f.proc, strconv.Itoa(p.pid), "oom_score"), strconv.Itoa(p.score)+"\n")
	}
	f.addProc(5, part, 0, "bad")
	write(t, filepath.Join(f.proc, "5", "oom_score"), "x\n")
	write(t, filepath.Join(f.proc, "self", "oom_score"), "2000\n")
	b, ok, err := HighestElsewhere(f.proc, map[int]bool{2: true})
	if err != nil || !ok || b.PID != 3 || b.Score != 700 || b.Comm != "p3" {
		t.Errorf("got %+v %v %v, want pid 3 (700)", b, ok, err)
	}
	if _, ok, err := HighestElsewhere(f.proc, map[int]bool{1: true, 2: true, 3: true, 4: true, 5: true}); ok || err != nil {
		t.Errorf("everything excluded: ok %v err %v", ok, err)
	}
	if _, _, err := HighestElsewhere(filepath.Join(f.proc, "missing"), nil); err == nil {
		t.Error("no error for a missing /proc")
	}
	// The real /proc: this process is among them.
	if b, ok, err := HighestElsewhere("/proc", nil); err != nil || !ok || b.PID <= 0 {
		t.Errorf("real /proc: %+v %v %v", b, ok, err)
	}
}
