package oom

import (
	"fmt"
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
	return Badness{PID: pid, Comm: p.comm(), Score: score, ScoreAdj: adj}, nil
}
