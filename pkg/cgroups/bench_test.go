package cgroups

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// reportLatency adds p50/p99/max (microseconds) to the benchmark output.
func reportLatency(b *testing.B, prefix string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) float64 {
		i := int(p * float64(len(d)-1))
		return float64(d[i].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(0.50), prefix+"p50-µs")
	b.ReportMetric(q(0.99), prefix+"p99-µs")
	b.ReportMetric(float64(d[len(d)-1].Nanoseconds())/1e3, prefix+"max-µs")
}

var memoryStat = func() []byte {
	var sb strings.Builder
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&sb, "key_%02d %d\n", i, i*123456789)
	}
	return []byte(sb.String())
}()

func BenchmarkParseFlatKeyed(b *testing.B) {
	b.SetBytes(int64(len(memoryStat)))
	for b.Loop() {
		if _, err := ParseFlatKeyed("memory.stat", memoryStat); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMemoryEvents(b *testing.B) {
	in := []byte("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseFlatKeyed("memory.events", in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePSI(b *testing.B) {
	in := []byte("some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n")
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParsePSI("memory.pressure", in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseProcCgroup(b *testing.B) {
	in := []byte("12:pids:/qm\n11:freezer:/qm\n4:memory:/qm\n2:cpu,cpuacct:/qm\n1:name=systemd:/\n0::/\n")
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseProcCgroup("/proc/1/cgroup", in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInotifyOOMKillLatency: memory.events rewritten (as the kernel
// does on an OOM kill on v2) -> EventOOMKill received by the consumer.
func BenchmarkInotifyOOMKillLatency(b *testing.B) {
	_, cg := fakeV2(b)
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	file := filepath.Join(cg.Dir(""), "memory.events")
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var lat []time.Duration
	var n uint64
	for b.Loop() {
		n++
		// One pwrite, same length each time (no truncate): one IN_MODIFY.
		content := fmt.Sprintf("low 0\nhigh 0\nmax 0\noom %010d\noom_kill %010d\noom_group_kill 0\n", n, n)
		start := time.Now()
		if _, err := f.WriteAt([]byte(content), 0); err != nil {
			b.Fatal(err)
		}
		for {
			ev := <-w.Events()
			if ev.Kind == EventOOMKill {
				lat = append(lat, time.Since(start))
				break
			}
		}
	}
	reportLatency(b, "", lat)
}

// BenchmarkEventfdOOMLatency: the v1 eventfd signalled (as the kernel does
// on a memory cgroup OOM) -> EventOOM received, on a fake tree.
func BenchmarkEventfdOOMLatency(b *testing.B) {
	_, cg := fakeV1(b)
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		signalEventfdB(b, w.efd)
		for ev := range w.Events() {
			if ev.Kind == EventOOM {
				lat = append(lat, time.Since(start))
				break
			}
		}
	}
	reportLatency(b, "", lat)
}

// BenchmarkRealV1OOMKill: a real memory hog in a real 32 MiB v1 cgroup.
// kill-: from the kernel's kill (its "Killed process" log record, aligned
// to CLOCK_MONOTONIC) to EventOOMKill received by the consumer; oom-: the
// same for EventOOM (the eventfd; the kernel signals it before it dumps
// the OOM report and picks a victim, so this can be negative). start-:
// from the hog starting to cross the limit to EventOOMKill (includes its
// own allocation time and the kernel's reclaim attempts and OOM report).
// Run with -benchtime=20x.
func BenchmarkRealV1OOMKill(b *testing.B) {
	_, cg := realV1(b)
	if err := cg.SetMemoryMax(32 << 20); err != nil {
		b.Fatal(err)
	}
	_ = cg.SetMemorySwapMax(0)
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	k := openKmsg(b)
	var fromStart, fromKill []time.Duration
	var oomToKill []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h := startHog(b, cg, 8, 200)
		k.calibrate()
		b.StartTimer()
		start := time.Now()
		h.stdin.Write([]byte("go\n"))
		var oomAt, killAt time.Duration
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case ev, ok := <-w.Events():
				if !ok {
					b.Fatalf("watcher ended: %v", w.Err())
				}
				switch ev.Kind {
				case EventOOM:
					if oomAt == 0 {
						oomAt = monotonic()
					}
				case EventOOMKill:
					killAt = monotonic()
					fromStart = append(fromStart, time.Since(start))
					break wait
				}
			case <-timeout:
				b.Fatal("no OOM kill event")
			}
		}
		b.StopTimer()
		if kt, ok := k.killedAt(h.cmd.Process.Pid); ok {
			fromKill = append(fromKill, killAt-kt)
			if oomAt != 0 {
				oomToKill = append(oomToKill, float64((oomAt - kt).Microseconds()))
			}
		}
		h.cmd.Wait()
		b.StartTimer()
	}
	b.StopTimer()
	reportLatency(b, "start-", fromStart)
	reportLatency(b, "kill-", fromKill)
	if len(oomToKill) > 0 {
		sort.Float64s(oomToKill)
		b.ReportMetric(oomToKill[len(oomToKill)/2], "oom-minus-kill-p50-µs")
	}
}

// BenchmarkRealV1Freeze: freeze+thaw of a real v1 cgroup with one process.
func BenchmarkRealV1FreezeThaw(b *testing.B) {
	_, cg := realV1(b)
	cmd := startSleep(b)
	moveTo(b, cg, cmd.Process.Pid)
	ctx := context.Background()
	for b.Loop() {
		if err := cg.Freeze(ctx); err != nil {
			b.Fatal(err)
		}
		if err := cg.Thaw(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRealV2FreezeThaw: cgroup.freeze 1/0 with the wait for frozen
// 1/0 in cgroup.events (inotify), one process, real cgroup v2. The kernel
// notifies a cgroup file at most once per 10 ms, so back-to-back
// transitions wait for that; isolated- measures a freeze 25 ms after the
// previous transition.
func BenchmarkRealV2FreezeThaw(b *testing.B) {
	_, cg := realUnified(b)
	startSleepIn(b, cg)
	ctx := context.Background()
	var iso []time.Duration
	for i := 0; i < b.N; i++ {
		if err := cg.Freeze(ctx); err != nil {
			b.Fatal(err)
		}
		if err := cg.Thaw(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		time.Sleep(25 * time.Millisecond)
		start := time.Now()
		if err := cg.Freeze(ctx); err != nil {
			b.Fatal(err)
		}
		iso = append(iso, time.Since(start))
		time.Sleep(25 * time.Millisecond)
		if err := cg.Thaw(ctx); err != nil {
			b.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
		b.StartTimer()
	}
	reportLatency(b, "isolated-freeze-", iso)
}

// BenchmarkRealV2PopulatedLatency: a process moved into an empty real v2
// cgroup -> EventPopulated received (kernel cgroup.events notification),
// 25 ms after the previous notification (the kernel rate-limits them to
// one per 10 ms per file).
func BenchmarkRealV2PopulatedLatency(b *testing.B) {
	_, cg := realUnified(b)
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	procs := filepath.Join(cg.Dir(""), "cgroup.procs")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cmd := startSleep(b)
		b.StartTimer()
		start := time.Now()
		if err := writeFile(procs, fmt.Sprint(cmd.Process.Pid)); err != nil {
			b.Fatal(err)
		}
		for ev := range w.Events() {
			if ev.Kind == EventPopulated {
				lat = append(lat, time.Since(start))
				break
			}
		}
		b.StopTimer()
		cmd.Process.Kill()
		cmd.Wait()
		for ev := range w.Events() {
			if ev.Kind == EventEmptied {
				break
			}
		}
		time.Sleep(25 * time.Millisecond) // past the kernel's 10 ms notification rate limit
		b.StartTimer()
	}
	reportLatency(b, "", lat)
}
