package diskbudget

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/config"
)

// The free-space watch is the fallback where loop images cannot be used.
// It cannot bound the partition to max (that would need a quota or an
// image); it keeps the host filesystem above the reserve. Below the
// reserve, while free space keeps shrinking, it kills the one process of
// the partition that wrote the most since the last poll: the smallest
// blast radius that stops the filling. The alternatives do more harm:
// freezing the partition stops every QM service (an instrument cluster
// goes dark) while the data stays; a read-only remount of the partition's
// /var from outside its mount namespace is not possible; deleting files is
// not qmd's call. The partition's init is never the victim (that would
// restart the whole partition). What was written stays: the incident
// names the path so the operator or the partition cleans up.

type watchState struct {
	mu                         sync.Mutex // check vs. a reload's new reserve
	partition, container, path string
	reserve                    uint64
	lastFree                   uint64
	sampled                    bool
	wchar                      map[int]uint64 // pid -> wchar at the last poll
}

// ensureWatch registers partition p with the free-space watch (reported
// once, at the first start, as an incident: the budget is weaker than
// configured on this host).
func (m *Manager) ensureWatch(p *config.Partition, path string, log *zap.Logger) error {
	reserve := p.Disk.ReserveBytes()
	m.watchMu.Lock()
	ws, known := m.watch[p.Name]
	if !known || ws.path != path || ws.container != p.ContainerNameOrDefault() {
		ws = &watchState{partition: p.Name, container: p.ContainerNameOrDefault(), path: path, wchar: map[int]uint64{}}
		m.watch[p.Name] = ws
	}
	m.watchMu.Unlock()
	ws.mu.Lock()
	ws.reserve = reserve
	ws.mu.Unlock()
	free, err := FreeBytes(existingParent(path))
	if err != nil {
		return fmt.Errorf("disk budget: statfs %s: %w", path, err)
	}
	if !known {
		log.Warn("disk budget: loop images unavailable; watching free space instead (max is not enforced)",
			zap.NamedError("why", m.probeErr), zap.Uint64("reserve_bytes", reserve), zap.Uint64("free_bytes", free))
		m.record(p.Name, fmt.Sprintf("disk budget unavailable (%v): watching the free space of %s instead, reserve %s; max is not enforced", m.probeErr, path, human(reserve)),
			map[string]string{"mechanism": string(MechWatch), "path": path, "reserve": strconv.FormatUint(reserve, 10),
				"free": strconv.FormatUint(free, 10), "action": "fallback", "why": fmt.Sprint(m.probeErr)})
	}
	if free < reserve {
		// Refusing the start would do more harm (the whole partition
		// down); the watch reacts to whoever keeps writing.
		log.Warn("disk budget: free space already below the reserve at start", zap.Uint64("free_bytes", free), zap.Uint64("reserve_bytes", reserve))
	}
	return nil
}

func (m *Manager) unwatch(p *config.Partition) {
	if p == nil {
		return
	}
	m.watchMu.Lock()
	delete(m.watch, p.Name)
	m.watchMu.Unlock()
}

// existingParent is path or its nearest existing parent: the filesystem
// that will hold it.
func existingParent(path string) string {
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == "/" {
			return p
		}
	}
}

// Run polls the free space of every watched partition until ctx ends: on
// the slow interval, and every Near while some filesystem is within twice
// its reserve. It returns nil on cancellation; with no watched partition
// it only sleeps.
func (m *Manager) Run(ctx context.Context) error {
	m.sync()
	t := time.NewTimer(m.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		near := m.Poll(ctx)
		d := m.opts.Interval
		if near {
			d = m.opts.Near
		}
		t.Reset(d)
	}
}

// Poll checks every watched partition once; it reports whether any is
// near its reserve (poll faster).
func (m *Manager) Poll(ctx context.Context) bool {
	m.watchMu.Lock()
	states := make([]*watchState, 0, len(m.watch))
	for _, ws := range m.watch {
		states = append(states, ws)
	}
	m.watchMu.Unlock()
	near := false
	for _, ws := range states {
		if m.check(ctx, ws) {
			near = true
		}
	}
	if m.Mechanism() == MechImage {
		m.checkImages()
	}
	return near
}

// Usage thresholds of an image: at NearlyFull of its filesystem qmd warns
// (log and incident, once), below Relieved it warns again next time.
const (
	NearlyFull = 0.90
	Relieved   = 0.80
)

// checkImages reports images that are nearly full: the partition's /var
// is about to answer ENOSPC (which is the budget working, but worth an
// operator's look before services inside fail).
func (m *Manager) checkImages() {
	cfg := m.cfg.Load()
	for i := range cfg.Partitions {
		p := &cfg.Partitions[i]
		if !p.Disk.Enabled() {
			continue
		}
		path := p.DiskPath()
		src, ok, err := mountSource(path)
		if err != nil || !ok || !sameFile(loopBacking(src), ImageFile(path)) {
			continue
		}
		used, size := usage(path)
		if size == 0 {
			continue
		}
		frac := float64(used) / float64(size)
		m.watchMu.Lock()
		warned := m.full[p.Name]
		switch {
		case !warned && frac >= NearlyFull:
			m.full[p.Name] = true
		case warned && frac < Relieved:
			delete(m.full, p.Name)
		}
		m.watchMu.Unlock()
		if warned || frac < NearlyFull {
			continue
		}
		m.log.Warn("disk budget nearly full", zap.String("partition", p.Name), zap.String("path", path),
			zap.Uint64("used_bytes", used), zap.Uint64("size_bytes", size), zap.Uint64("max_bytes", p.Disk.Max.Bytes))
		m.record(p.Name, fmt.Sprintf("disk budget nearly full: %s of %s used on %s; writes will end with ENOSPC", human(used), human(size), path),
			map[string]string{"mechanism": string(MechImage), "path": path, "action": "nearly-full",
				"used": strconv.FormatUint(used, 10), "size": strconv.FormatUint(size, 10)})
	}
}

func (m *Manager) check(ctx context.Context, ws *watchState) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	free, err := FreeBytes(existingParent(ws.path))
	if err != nil {
		m.log.Warn("disk budget: statfs failed", zap.String("path", ws.path), zap.Error(err))
		return false
	}
	var pids []int
	if box, ok := m.rt.Load().(runtimeBox); ok {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := box.Inspect(cctx, ws.container)
		cancel()
		if err == nil && c.Running && c.Pid > 0 {
			pids = descendants(c.Pid)
		}
	}
	wchar := make(map[int]uint64, len(pids))
	victim, most := 0, uint64(0)
	for _, pid := range pids {
		w, ok := readWchar(pid)
		if !ok {
			continue
		}
		wchar[pid] = w
		if d := w - min(ws.wchar[pid], w); d > most {
			victim, most = pid, d
		}
	}
	// Only a shrinking free space with a writer measured over a whole
	// poll is acted on: a first sample's totals say who wrote since boot,
	// not who is filling now.
	shrinking := ws.sampled && free < ws.lastFree
	ws.wchar, ws.lastFree, ws.sampled = wchar, free, true
	if free >= ws.reserve || !shrinking || victim == 0 {
		return free < 2*ws.reserve
	}
	comm := readComm(victim)
	log := m.log.With(zap.String("partition", ws.partition), zap.String("path", ws.path))
	if err := m.opts.Kill(victim); err != nil {
		log.Error("disk budget: killing the largest writer failed", zap.Int("pid", victim), zap.Error(err))
		return true
	}
	delete(ws.wchar, victim)
	log.Warn("disk budget: free space below the reserve; killed the largest writer",
		zap.Int("pid", victim), zap.String("comm", comm), zap.Uint64("written_bytes", most),
		zap.Uint64("free_bytes", free), zap.Uint64("reserve_bytes", ws.reserve))
	m.record(ws.partition, fmt.Sprintf("free space of %s below the reserve (%s < %s): killed the largest writer %s (pid %d, %s written since the last poll)",
		ws.path, human(free), human(ws.reserve), comm, victim, human(most)),
		map[string]string{"mechanism": string(MechWatch), "path": ws.path, "action": "kill-writer", "pid": strconv.Itoa(victim),
			"comm": comm, "written": strconv.FormatUint(most, 10), "free": strconv.FormatUint(free, 10),
			"reserve": strconv.FormatUint(ws.reserve, 10)})
	return true
}

// descendants lists the processes below init (init excluded): every
// process of a container's PID namespace descends from its init, nested
// containers included.
func descendants(init int) []int {
	es, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range es {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := readPPid(pid); ok {
			children[pp] = append(children[pp], pid)
		}
	}
	var out []int
	queue := []int{init}
	seen := map[int]bool{init: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

func readPPid(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// readWchar is the bytes the process passed to write calls (/proc/PID/io
// wchar): counted when written, before writeback, so a filler shows up at
// once.
func readWchar(pid int) (uint64, bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func readComm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func killProcess(pid int) error { return unix.Kill(pid, unix.SIGKILL) }
