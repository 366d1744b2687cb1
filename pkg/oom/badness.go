package oom

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containers/qmd/pkg/cgroups"
)

// Badness is a process's OOM badness as the kernel reports it in
// /proc/<pid>/oom_score (its share of memory and swap in thousandths plus
// oom_score_adj, rescaled to 0..1333 by recent kernels: the order is the
// OOM killer's), with what identifies the process.
type Badness struct {
	PID      int
	Cgroup   string // cgroup path, as listed
	Comm     string
	Score    int // oom_score
	ScoreAdj int // oom_score_adj
	// Footprint is what killing the process gives back, in bytes: its
	// resident and swapped-out memory (VmRSS + VmSwap of
	// /proc/<pid>/status; 0 for a kernel thread or when unreadable).
	Footprint uint64
}

// Largest returns the process of procs the kernel's OOM killer would pick
// among them: the largest oom_score, ties going to the later one in the
// list as in the kernel's own scan. The process skip (the partition's
// init) is never picked, nor one whose oom_score_adj is -1000 (the kernel
// never kills those) or one that is gone or unreadable meanwhile. ok is
// false when no process qualifies.
func Largest(procRoot string, procs []cgroups.Process, skip int) (b Badness, ok bool) {
	for _, pc := range procs {
		if pc.PID == skip || pc.PID <= 0 {
			continue
		}
		c, err := ReadBadness(procRoot, pc.PID)
		if err != nil || c.ScoreAdj == MinScore {
			continue
		}
		if ok && c.Score < b.Score {
			continue
		}
		c.Cgroup = pc.Path
		b, ok = c, true
	}
	return b, ok
}

// ReadBadness reads one process's oom_score, oom_score_adj and comm, all
// through the same /proc/<pid> directory (so from the same process even if
// the pid is reused meanwhile).
func ReadBadness(procRoot string, pid int) (Badness, error) {
	p, err := openProc(procRoot, pid)
	if err != nil {
		return Badness{}, err
	}
	defer p.close()
	adj, err := p.scoreAdj()
	if err != nil {
		return Badness{}, err
	}
	raw, err := p.read("oom_score")
	if err != nil {
		return Badness{}, err
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || score < 0 {
		return Badness{}, fmt.Errorf("parse %s: %q is not an oom_score: %w", p.name("oom_score"), strings.TrimSpace(string(raw)), ErrMalformed)
	}
	return Badness{PID: pid, Comm: p.comm(), Score: score, ScoreAdj: adj, Footprint: p.footprint()}, nil
}

// footprint is VmRSS + VmSwap of the process's status file in bytes.
func (p *proc) footprint() uint64 {
	b, err := p.read("status")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "VmRSS" && k != "VmSwap") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil && kb < 1<<44 {
			sum += kb << 10
		}
	}
	return sum
}

// HighestElsewhere returns the process of the whole host (every numeric
// entry of procRoot) with the largest oom_score that is not in inside:
// what the kernel's OOM killer would weigh against a partition's pick.
// Kernel threads score 0 and never matter; a process that is gone or
// unreadable meanwhile is skipped.
func HighestElsewhere(procRoot string, inside map[int]bool) (b Badness, ok bool, err error) {
	d, err := os.Open(procRootOr(procRoot))
	if err != nil {
		return Badness{}, false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return Badness{}, false, err
	}
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 || inside[pid] {
			continue
		}
		p, err := openProc(procRoot, pid)
		if err != nil {
			continue
		}
		raw, err := p.read("oom_score")
		var score int
		if err == nil {
			score, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		}
		if err == nil && (!ok || score > b.Score) {
			b, ok = Badness{PID: pid, Score: score}, true
		}
		p.close()
	}
	if ok {
		if p, err := openProc(procRoot, b.PID); err == nil {
			b.Comm = p.comm() // only the winner's name is wanted
			p.close()
		}
	}
	return b, ok, nil
}
