package incident

import (
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var _ Sink = (*Recorder)(nil)

func TestRecorderStoresAndFansOut(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "i.db"), 100)
	defer s.Close()
	r := NewRecorder(s, nil)
	got := make(chan Incident, 10)
	r.Subscribe(0, func(inc Incident) { got <- inc })
	inc := r.Record(Incident{Partition: "qm", Type: OOMKill, Summary: "killed"})
	if inc.ID != 1 || inc.Time.IsZero() {
		t.Fatalf("Record = %+v", inc)
	}
	select {
	case sub := <-got:
		if sub.ID != 1 || sub.Type != OOMKill {
			t.Fatalf("subscriber got %+v", sub)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber not called")
	}
	if l, _ := s.List("", 0, 0); len(l) != 1 {
		t.Fatalf("store has %d", len(l))
	}
	r.Close()
}

// noCoalesce: these tests record identical incidents and count them.
var noCoalesce = RecorderOptions{CoalesceWindow: -1}

func TestRecorderSlowSubscriberDoesNotBlock(t *testing.T) {
	r := NewRecorderWithOptions(NewMemory(1000), noCoalesce)
	block := make(chan struct{})
	slow := r.Subscribe(2, func(Incident) { <-block })
	var fastMu sync.Mutex
	var fast []uint64
	fastDone := make(chan struct{})
	r.Subscribe(1000, func(inc Incident) {
		fastMu.Lock()
		fast = append(fast, inc.ID)
		n := len(fast)
		fastMu.Unlock()
		if n == 100 {
			close(fastDone)
		}
	})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			r.Record(Incident{Partition: "qm", Type: Restart})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Record blocked on a slow subscriber")
	}
	<-fastDone
	fastMu.Lock()
	for i, id := range fast {
		if id != uint64(i+1) {
			t.Fatalf("out of order: %v", fast)
		}
	}
	fastMu.Unlock()
	if slow.Dropped() == 0 {
		t.Fatal("slow subscriber should have dropped incidents")
	}
	close(block)
	slow.Cancel()
	r.Close()
}

func TestRecorderConcurrent(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "i.db"), 50)
	defer s.Close()
	r := NewRecorderWithOptions(s, RecorderOptions{CoalesceWindow: -1, OnError: func(err error) { t.Error(err) }})
	var mu sync.Mutex
	var last uint64
	var n int
	r.Subscribe(10000, func(inc Incident) {
		mu.Lock()
		defer mu.Unlock()
		if inc.ID <= last {
			t.Errorf("subscriber got %d after %d", inc.ID, last)
		}
		last = inc.ID
		n++
	})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				r.Record(Incident{Partition: "qm", Type: Restart, Details: map[string]string{"i": "x"}})
			}
		}()
	}
	// Subscribing/cancelling concurrently with Record.
	for i := 0; i < 10; i++ {
		sub := r.Subscribe(1, func(Incident) {})
		sub.Cancel()
	}
	wg.Wait()
	r.Close()
	if n != 200 || s.LastID() != 200 {
		t.Fatalf("n=%d last=%d", n, s.LastID())
	}
	if l, _ := s.List("", 0, 0); len(l) != 50 || l[0].ID != 151 {
		t.Fatalf("bound: %d records, first %d", len(l), l[0].ID)
	}
}
