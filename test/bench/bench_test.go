// Benchmarks of qmd against real components. `make bench` runs them with
// -benchtime 1x: each benchmark does its own repetitions and reports
// medians and maxima with b.ReportMetric.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/test/harness"
)

func reps() int {
	if n, err := strconv.Atoi(os.Getenv("QMD_BENCH_REPS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// api polls the Podman API directly (the CLI is too slow to time restarts).
type api struct{ c http.Client }

func newAPI(sock string) *api {
	return &api{c: http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (a *api) state(name string) (running bool, pid int) {
	resp, err := a.c.Get("http://d/v4.0.0/libpod/containers/" + name + "/json")
	if err != nil {
		return false, 0
	}
	defer resp.Body.Close()
	var d struct {
		State struct {
			Running bool
			Pid     int
		}
	}
	if json.NewDecoder(resp.Body).Decode(&d) != nil {
		return false, 0
	}
	return d.State.Running, d.State.Pid
}

// crashToRunning kills the container's init and times until it runs again
// with another pid.
func crashToRunning(b *testing.B, a *api, name string) time.Duration {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var pid int
	for {
		running, p := a.state(name)
		if running && p > 0 {
			pid = p
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not running", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the previous restart settle (and stay inside the start limit:
	// 5 starts per 10 s).
	time.Sleep(2500 * time.Millisecond)
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	for {
		if running, p := a.state(name); running && p > 0 && p != pid {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			b.Fatalf("%s did not come back", name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func stats(ds []time.Duration) (median, max time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkCrashToRunning: kill -9 of the partition init until it runs
// again, qmd versus Podman's own --restart=always on the same rootfs, in
// the same run, alternating.
func BenchmarkCrashToRunning(b *testing.B) {
	pm := harness.StartPodman(b)
	rootfs := harness.Rootfs(b, "loop")
	// Every crash is timed as a first crash after clean running (backoff
	// reset after 2 s, the pause between crashes): repeated crashes back off
	// on purpose, Podman's restart policy does not.
	cfg := harness.Config(b, pm, b.TempDir(), "", harness.Partition{Name: "qm", Rootfs: rootfs,
		Extra: "[partition.restart]\nbackoff_reset = \"2s\"\n"})
	q := harness.StartQMD(b, cfg)
	q.WaitLog(30*time.Second, 1, "msg", "qmd ready")
	if out, err := pm.CLI("run", "-d", "--name", "plain", "--restart=always", "--network=none",
		"--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:32768", "--rootfs", rootfs, "/sbin/init"); err != nil {
		b.Fatalf("podman run --restart=always: %v %s", err, out)
	}
	a := newAPI(pm.Socket)
	var qmd, plain []time.Duration
	for i := 0; i < reps(); i++ {
		qmd = append(qmd, crashToRunning(b, a, "qm"))
		plain = append(plain, crashToRunning(b, a, "plain"))
	}
	qm, qx := stats(qmd)
	pmed, px := stats(plain)
	b.ReportMetric(ms(qm), "qmd-median-ms")
	b.ReportMetric(ms(qx), "qmd-max-ms")
	b.ReportMetric(ms(pmed), "podman-median-ms")
	b.ReportMetric(ms(px), "podman-max-ms")
	b.ReportMetric(float64(qm)/float64(pmed), "qmd/podman-median")
	b.Logf("crash->running over %d reps: qmd median %s max %s; podman --restart=always median %s max %s",
		reps(), qm, qx, pmed, px)
}

func procStat(pid int) (cpuTicks uint64, rssKiB uint64, ctxSwitches uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		cpuTicks = ut + st
	}
	if s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(s)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				rssKiB, _ = strconv.ParseUint(strings.Fields(v)[0], 10, 64)
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		s, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(s), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				ctxSwitches += n
			}
		}
	}
	return
}

// BenchmarkIdle: qmd's RSS, CPU and wakeups (voluntary context switches
// of all its threads) while it supervises one running partition.
func BenchmarkIdle(b *testing.B) {
	window := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("QMD_BENCH_IDLE")); err == nil {
		window = d
	}
	pm := harness.StartPodman(b)
	cfg := harness.Config(b, pm, b.TempDir(), "[log]\nformat = \"json\"\nlevel = \"info\"\n", harness.Partition{Name: "qm", Rootfs: harness.Rootfs(b, "loop")})
	q := harness.StartQMD(b, cfg)
	q.WaitLog(30*time.Second, 1, "msg", "qmd ready")
	time.Sleep(2 * time.Second)
	pid := q.PID()
	c0, _, w0 := procStat(pid)
	time.Sleep(window)
	c1, rss, w1 := procStat(pid)
	hz := float64(100) // USER_HZ
	cpuPct := float64(c1-c0) / hz / window.Seconds() * 100
	wakeups := float64(w1-w0) / window.Seconds()
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(cpuPct, "cpu-%")
	b.ReportMetric(wakeups, "wakeups/s")
	b.Logf("idle over %s: RSS %.1f MiB, CPU %.3f %% of a core, %.2f wakeups/s", window, float64(rss)/1024, cpuPct, wakeups)
}

// BenchmarkOOMKillToIncident: a memory hog inside a 64M partition is
// killed by the kernel; time from the kernel's kill (its /dev/kmsg
// timestamp) to qmd's incident (its log timestamp).
func BenchmarkOOMKillToIncident(b *testing.B) {
	pm := harness.StartPodman(b)
	cfg := harness.Config(b, pm, b.TempDir(), "", harness.Partition{Name: "qm", Rootfs: harness.Rootfs(b, "loop"),
		Extra: "[partition.memory]\nmax = \"64M\"\n"})
	q := harness.StartQMD(b, cfg)
	q.WaitLog(30*time.Second, 1, "msg", "qmd ready")
	time.Sleep(time.Second)
	// Offset between the wall clock and CLOCK_MONOTONIC (kmsg's clock).
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	offset := time.Since(time.Unix(0, 0).Add(time.Duration(ts.Nano())))
	var lat []time.Duration
	for i := 0; i < reps(); i++ {
		_, _ = pm.CLI("exec", "qm", "sh", "-c", `x=$(head -c 300000000 /dev/zero | tr '\0' a)`)
		inc := q.WaitLogFunc(10*time.Second, i+1, "oom-kill incident naming its victim", func(m map[string]any) bool {
			return m["event"] == "oom-kill" && m["pid"] != nil
		})
		pid := fmt.Sprint(inc["pid"])
		killed, ok := kmsgKillTime(pid)
		if !ok {
			b.Fatalf("kill of pid %s not found in the kernel log", pid)
		}
		logged, err := time.Parse(time.RFC3339Nano, inc["time"].(string))
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, logged.Sub(time.Unix(0, 0).Add(killed+offset)))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[(len(lat)*99+99)/100-1]
	b.ReportMetric(ms(lat[len(lat)/2]), "median-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.Logf("oom kill -> incident over %d kills: median %s p99 %s max %s", len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
}

// kmsgKillTime finds the kernel's "oom-kill:...pid=N" record and returns
// its CLOCK_MONOTONIC timestamp.
func kmsgKillTime(pid string) (time.Duration, bool) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	var found time.Duration
	ok := false
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		rec := string(buf[:n])
		if !strings.Contains(rec, "oom-kill:") || !strings.Contains(rec, ",pid="+pid+",") {
			continue
		}
		f := strings.SplitN(rec, ",", 4)
		if len(f) < 3 {
			continue
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err == nil {
			found, ok = time.Duration(us)*time.Microsecond, true
		}
	}
	return found, ok
}
