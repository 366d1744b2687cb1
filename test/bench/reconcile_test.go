package bench

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/test/harness"
)

// BenchmarkReadopt: qmd restarted (SIGTERM, start again) while the
// partition runs; time from the new qmd's exec to its "adopted running
// partition" incident. The partition must keep its init throughout.
func BenchmarkReadopt(b *testing.B) {
	pm := harness.StartPodman(b)
	cfg := harness.Config(b, pm, b.TempDir(), "", harness.Partition{Name: "qm", Rootfs: harness.Rootfs(b, "loop")})
	q := harness.StartQMD(b, cfg)
	q.WaitLog(30*time.Second, 1, "msg", "partition running", "partition", "qm")
	a := newAPI(pm.Socket)
	_, pid := a.state("qm")
	var ds []time.Duration
	for i := 0; i < reps(); i++ {
		q.Stop()
		t0 := time.Now()
		q = harness.StartQMD(b, cfg)
		q.WaitLog(30*time.Second, 1, "msg", "adopted running partition", "partition", "qm")
		ds = append(ds, time.Since(t0))
		if running, p := a.state("qm"); !running || p != pid {
			b.Fatalf("partition restarted across a qmd restart: pid %d -> %d (running %v)", pid, p, running)
		}
	}
	med, mx := stats(ds)
	b.ReportMetric(ms(med), "readopt-median-ms")
	b.ReportMetric(ms(mx), "readopt-max-ms")
	b.Logf("qmd restart -> partition re-adopted over %d reps: median %s max %s (same init pid %d)", reps(), med, mx, pid)
}

// BenchmarkPodmanBack: the Podman service is killed, the partition's init
// dies while it is away (no event can reach qmd), the service comes back;
// time from the service answering again to the partition running with a
// new init. This is reconnect + resubscribe + reconcile + restart.
func BenchmarkPodmanBack(b *testing.B) {
	pm := harness.StartPodman(b)
	cfg := harness.Config(b, pm, b.TempDir(), "", harness.Partition{Name: "qm", Rootfs: harness.Rootfs(b, "loop"),
		Extra: "[partition.restart]\nbackoff_reset = \"1s\"\n"})
	q := harness.StartQMD(b, cfg)
	q.WaitLog(30*time.Second, 1, "msg", "partition running", "partition", "qm")
	a := newAPI(pm.Socket)
	var ds []time.Duration
	for i := 0; i < reps(); i++ {
		var pid int
		deadline := time.Now().Add(30 * time.Second)
		for {
			if running, p := a.state("qm"); running && p > 0 {
				pid = p
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("partition not running")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond) // clean running: backoff reset, inside the start limit
		pm.Kill()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		waitGone(b, pid)
		pm.Start() // returns once the service answers
		t0 := time.Now()
		for {
			if running, p := a.state("qm"); running && p > 0 && p != pid {
				break
			}
			if time.Since(t0) > 60*time.Second {
				b.Fatalf("partition not reconciled 60 s after podman came back\n%s", q.Log())
			}
			time.Sleep(2 * time.Millisecond)
		}
		ds = append(ds, time.Since(t0))
	}
	if n := countLabelled(b, pm); n != 1 {
		b.Errorf("%d partition containers after %d podman restarts, want 1", n, reps())
	}
	med, mx := stats(ds)
	b.ReportMetric(ms(med), "podman-back-median-ms")
	b.ReportMetric(ms(mx), "podman-back-max-ms")
	b.Logf("podman back -> partition running again over %d reps: median %s max %s", reps(), med, mx)
}

func waitGone(b *testing.B, pid int) {
	b.Helper()
	for i := 0; i < 500; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("pid %d still alive", pid)
}

func countLabelled(b *testing.B, pm *harness.Podman) int {
	b.Helper()
	out, err := pm.CLI("ps", "-a", "-q", "--filter", "label=io.containers.qmd.partition")
	if err != nil {
		b.Fatalf("podman ps: %v %s", err, out)
	}
	return len(strings.Fields(out))
}
