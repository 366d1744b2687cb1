package supervisor

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/qmd/internal/incident"
)

// BenchmarkRestartUnderIncidentLoad: crash -> running again of a partition
// (fake Podman, so what is timed is qmd's own path: event, inspect,
// decision, restart incident, start), idle and while another goroutine
// records 1000 distinct incidents per second into the real, on-disk
// incident store. A restart must never wait for the disk: the loaded
// median stays within 10 % of the idle one.
func BenchmarkRestartUnderIncidentLoad(b *testing.B) {
	const reps = 600
	store := incident.Open(incident.Options{Path: filepath.Join(b.TempDir(), "incidents.db")})
	defer func() { _ = store.Close() }()
	if bad, why := store.Degraded(); bad {
		b.Fatalf("store degraded: %s", why)
	}
	rec := incident.NewRecorder(store, nil)
	defer rec.Close()

	cfg := testConfig("qm")
	cfg.Partitions[0].Restart.StartLimitBurst = 0
	cfg.Partitions[0].Restart.BackoffReset.Duration = time.Nanosecond // every crash is a first crash: no delay
	rt := newFakeRuntime()
	sup := New(cfg, Options{Runtime: rt, Sink: rec})
	changes := make(chan Status, 1024)
	sup.Subscribe(func(c Change) {
		select {
		case changes <- c.Status:
		default:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-sup.Ready()

	crash := func() time.Duration {
		st, _ := sup.Status("qm")
		for !st.Running() {
			time.Sleep(time.Millisecond)
			st, _ = sup.Status("qm")
		}
		for len(changes) > 0 {
			<-changes
		}
		pid := st.MainPID
		t0 := time.Now()
		rt.kill("qm", 137)
		for c := range changes {
			if c.Running() && c.MainPID != pid {
				return time.Since(t0)
			}
		}
		return 0
	}
	// Idle and loaded blocks alternate, so that drift of the machine
	// (other jobs, frequency) falls on both alike.
	var n atomic.Int64
	var loadOn atomic.Bool
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		// 10 every 10 ms: 1000/s without depending on a 1 ms ticker.
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if !loadOn.Load() {
					continue
				}
				for j := 0; j < 10; j++ {
					i := n.Add(1)
					rec.Record(incident.Incident{Partition: "other", Type: incident.OOMScoreRepair,
						Summary: fmt.Sprintf("load incident %d", i)})
				}
			}
		}
	}()
	const blocks = 6
	var idle, loaded []time.Duration
	var loadedFor time.Duration
	b.ResetTimer()
	for blk := 0; blk < 2*blocks; blk++ {
		on := blk%2 == 1
		loadOn.Store(on)
		t0 := time.Now()
		for i := 0; i < reps/blocks; i++ {
			d := crash()
			if on {
				loaded = append(loaded, d)
			} else {
				idle = append(idle, d)
			}
			time.Sleep(3 * time.Millisecond) // spread: the load runs at its rate meanwhile
		}
		if on {
			loadedFor += time.Since(t0)
		}
	}
	close(stop)
	<-loadDone
	rate := float64(n.Load()) / loadedFor.Seconds()
	b.StopTimer()

	im, ix := medianMax(idle)
	lm, lx := medianMax(loaded)
	b.ReportMetric(float64(im.Microseconds()), "idle-median-us")
	b.ReportMetric(float64(lm.Microseconds()), "loaded-median-us")
	b.ReportMetric(float64(lm)/float64(im), "loaded/idle")
	b.ReportMetric(rate, "incidents/s")
	b.Logf("crash -> running over %d reps: idle median %s max %s; with %.0f incidents/s median %s max %s (ratio %.2f)",
		reps, im, ix, rate, lm, lx, float64(lm)/float64(im))
}

func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)-1]
}
