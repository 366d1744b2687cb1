package bench

import (
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/test/harness"
)

// BenchmarkDBusUnderRestart: get-property round trips with a godbus client
// at >= 1000 calls/s against the real daemon while the partition is
// crashed and restarted; the restart is timed with and without that load.
func BenchmarkDBusUnderRestart(b *testing.B) {
	pm := harness.StartPodman(b)
	bus := testutil.StartSystemBus(b, filepath.Join(harness.Repo(b), "systemd", "org.containers.qmd1.conf"))
	cfg := harness.Config(b, pm, b.TempDir(), "[dbus]\nenable = true\n",
		harness.Partition{Name: "qm", Rootfs: harness.Rootfs(b, "loop"), Extra: "[partition.restart]\nbackoff_reset = \"2s\"\n"})
	q := harness.StartQMD(b, cfg, "DBUS_SYSTEM_BUS_ADDRESS="+bus.Addr)
	q.WaitLog(30*time.Second, 1, "msg", "qmd ready")
	a := newAPI(pm.Socket)

	n := max(reps()/2, 3)
	var idle []time.Duration
	for i := 0; i < n; i++ {
		idle = append(idle, crashToRunning(b, a, "qm"))
	}

	conn, err := dbus.Connect(bus.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object("org.containers.qmd1", "/org/containers/qmd1/partition/qm")
	var (
		stop  atomic.Bool
		mu    sync.Mutex
		lat   []time.Duration
		calls atomic.Int64
		errs  atomic.Int64
		wg    sync.WaitGroup
	)
	const clients = 4
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 4 clients x one call per 4 ms = 1000 calls/s offered.
			tick := time.NewTicker(4 * time.Millisecond)
			defer tick.Stop()
			var mine []time.Duration
			for !stop.Load() {
				<-tick.C
				t0 := time.Now()
				if _, err := obj.GetProperty("org.containers.qmd1.Partition.ActiveState"); err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				calls.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	start := time.Now()
	var loaded []time.Duration
	for i := 0; i < n; i++ {
		loaded = append(loaded, crashToRunning(b, a, "qm"))
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		b.Fatal("no successful calls")
	}
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	rate := float64(calls.Load()) / elapsed.Seconds()
	im, _ := stats(idle)
	lm, lx := stats(loaded)
	b.ReportMetric(ms(p50), "get-p50-ms")
	b.ReportMetric(ms(p99), "get-p99-ms")
	b.ReportMetric(rate, "calls/s")
	b.ReportMetric(ms(im), "restart-idle-median-ms")
	b.ReportMetric(ms(lm), "restart-loaded-median-ms")
	b.Logf("get-property under load: %d calls (%d errors) at %.0f/s, p50 %s p99 %s; restart median %s idle vs %s (max %s) under load",
		calls.Load(), errs.Load(), rate, p50, p99, im, lm, lx)
}
