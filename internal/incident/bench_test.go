package incident

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// legacyAdd is how Store.Add persisted before the background writer: one
// bbolt transaction, so one fsync, per incident, under the store's mutex
// (Recorder.Record called it with its own mutex held). Kept here as the
// baseline of BenchmarkRecord.
func legacyAdd(s *Store, inc Incident) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inc.Time.IsZero() {
		inc.Time = s.now()
	}
	inc.Details = cloneDetails(inc.Details)
	id := s.lastID + 1
	inc.ID = id
	val, err := json.Marshal(inc)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		if err := b.Put(idKey(id), val); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyLastID, idKey(id)); err != nil {
			return err
		}
		n, err := trim(b, s.count+1, s.max)
		s.count = n
		return err
	})
	if err != nil {
		return err
	}
	s.lastID = id
	return nil
}

// BenchmarkRecord compares, on the same disk and with the production bound
// (DefaultMaxCount), parallel callers recording distinct incidents:
//
//   - async: Recorder.Record (queued, committed in batches by the writer);
//     the final Flush is inside the timing, so records/s includes the disk;
//   - sync-add: Store.Add (waits for its commit; concurrent Adds share one);
//   - legacy: the former path, one transaction and fsync per incident;
//   - async-storm: Recorder.Record of one repeated incident (coalesced).
//
// Quote the records/s metric: go test -run '^$' -bench BenchmarkRecord ./internal/incident/
func BenchmarkRecord(b *testing.B) {
	inc := Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max reached", Details: map[string]string{"pids_max": "4096"}}
	open := func(b *testing.B) *Store {
		s := Open(Options{Path: filepath.Join(b.TempDir(), "i.db")})
		if d, why := s.Degraded(); d {
			b.Fatal(why)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	}
	b.Run("async", func(b *testing.B) {
		s := open(b)
		r := NewRecorderWithOptions(s, RecorderOptions{CoalesceWindow: -1})
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record(inc)
			}
		})
		if err := r.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		report(b)
	})
	b.Run("sync-add", func(b *testing.B) {
		s := open(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Add(inc); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		report(b)
	})
	b.Run("legacy", func(b *testing.B) {
		s := open(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := legacyAdd(s, inc); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		report(b)
	})
	b.Run("async-storm", func(b *testing.B) {
		s := open(b)
		r := NewRecorder(s, nil)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record(inc)
			}
		})
		if err := r.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		report(b)
	})
}
