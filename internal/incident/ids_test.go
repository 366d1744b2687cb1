package incident

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// idEnv is a database and an ID file in a temporary directory.
type idEnv struct {
	t      *testing.T
	db     string
	idFile string
}

func newIDEnv(t *testing.T) *idEnv {
	dir := t.TempDir()
	return &idEnv{t: t, db: filepath.Join(dir, "lib", "incidents.db"), idFile: filepath.Join(dir, "run", "incident-id")}
}

func (e *idEnv) opts(o Options) Options {
	o.Path, o.IDFile = e.db, e.idFile
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 200 * time.Millisecond
	}
	return o
}

// open opens the store, which must not be degraded.
func (e *idEnv) open(o Options) *Store {
	e.t.Helper()
	return openOpts(e.t, e.opts(o))
}

// reboot empties the tmpfs the ID file is on.
func (e *idEnv) reboot() {
	e.t.Helper()
	if err := os.RemoveAll(filepath.Dir(e.idFile)); err != nil {
		e.t.Fatal(err)
	}
}

// idFileValue is what the ID file holds for this database (0: no file).
func (e *idEnv) idFileValue() uint64 {
	e.t.Helper()
	v, err := readIDFile(e.idFile, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// record records n incidents that are not coalesced and returns the
// highest ID handed out.
func record(r *Recorder, n int) uint64 {
	var last uint64
	for i := 0; i < n; i++ {
		last = r.Record(Incident{Partition: "qm", Type: Restart, Summary: fmt.Sprint("restart ", i)}).ID
	}
	return last
}

var noCoalesceIDs = RecorderOptions{CoalesceWindow: -1}

// nextIDAfterReopen opens the database again (not degraded) and checks
// that the first ID it hands out is above every ID handed out before.
func (e *idEnv) nextIDAfterReopen(handedOut uint64) uint64 {
	e.t.Helper()
	s := e.open(Options{})
	defer s.Close()
	if got := s.LastID(); got < handedOut {
		e.t.Errorf("LastID after reopen = %d, below %d handed out before", got, handedOut)
	}
	inc, err := s.Add(Incident{Partition: "qm", Type: Adopt, Summary: "adopted"})
	if err != nil {
		e.t.Fatal(err)
	}
	if inc.ID <= handedOut {
		e.t.Errorf("first ID after reopen = %d, does not continue after %d handed out before the restart", inc.ID, handedOut)
	}
	return inc.ID
}

// (i) A clean Close: the IDs continue densely (the unused reservation is
// given back), the ID file is not needed and is gone.
func TestIDsContinueAfterCleanClose(t *testing.T) {
	for _, reserve := range []uint64{0, 8} {
		t.Run(fmt.Sprint("reserve ", reserve), func(t *testing.T) {
			e := newIDEnv(t)
			s := e.open(Options{reserve: reserve, BatchMax: 4})
			r := NewRecorderWithOptions(s, noCoalesceIDs)
			last := record(r, 50)
			if last != 50 {
				t.Fatalf("last id %d", last)
			}
			r.Close()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := rawReserved(t, e.db); got != 50 {
				t.Errorf("reserved after a clean close = %d, want 50 (given back)", got)
			}
			if v := e.idFileValue(); v != 0 {
				t.Errorf("ID file left after a clean close: %d", v)
			}
			if next := e.nextIDAfterReopen(last); next != 51 {
				t.Errorf("first ID after a clean restart = %d, want 51", next)
			}
		})
	}
}

// Open reserves IDs on disk before any is handed out; a commit raises the
// reservation before it runs out.
func TestIDReservationOnDisk(t *testing.T) {
	e := newIDEnv(t)
	s := e.open(Options{reserve: 16, BatchDelay: time.Hour})
	if got := rawReservedOpen(t, s); got != 16 {
		t.Fatalf("reserved after open = %d, want 16", got)
	}
	r := NewRecorderWithOptions(s, noCoalesceIDs)
	record(r, 10)
	flushT(t, r.Flush)
	// 10 + 16/2 > 16: the commit raised it to 10 + 16.
	if got := rawReservedOpen(t, s); got != 26 {
		t.Fatalf("reserved after a commit of ids 1..10 = %d, want 26", got)
	}
	last := record(r, 10) // 11..20: covered by the disk, no ID file
	if v := e.idFileValue(); v != 0 {
		t.Fatalf("ID file written for ids the disk covers: %d", v)
	}
	s.crash()
	e.reboot()
	if next := e.nextIDAfterReopen(last); next != 27 {
		t.Errorf("first ID after the crash = %d, want 27 (above the reservation)", next)
	}
}

// (ii) A crash with pending records (qmd killed: no flush, no Close): the
// reopened store continues above every ID handed out, thanks to the
// reservation on disk (a reboot too) or, beyond it, to the ID file.
func TestIDsContinueAfterCrash(t *testing.T) {
	t.Run("within the reservation, no ID file", func(t *testing.T) {
		e := newIDEnv(t)
		s := e.open(Options{BatchDelay: time.Hour})
		r := NewRecorderWithOptions(s, noCoalesceIDs)
		record(r, 3)
		flushT(t, r.Flush)
		last := record(r, 100) // pending, lost by the crash
		if st := s.Stats(); st.Pending != 100 {
			t.Fatalf("stats %+v", st)
		}
		s.crash()
		e.reboot()
		e.nextIDAfterReopen(last)
		// The records lost by the crash are lost, only them.
		s = e.open(Options{})
		defer s.Close()
		if all, _ := s.List("", 0, 0); len(all) != 4 || all[2].ID != 3 {
			t.Fatalf("after the crash: %v", ids(all))
		}
	})
	t.Run("beyond the reservation, with the ID file", func(t *testing.T) {
		e := newIDEnv(t)
		s := e.open(Options{reserve: 8, BatchDelay: time.Hour})
		r := NewRecorderWithOptions(s, noCoalesceIDs)
		last := record(r, 50) // nothing committed: the disk reserved 8
		if v := e.idFileValue(); v < last {
			t.Fatalf("ID file holds %d, below %d handed out beyond the reservation", v, last)
		}
		s.crash()
		next := e.nextIDAfterReopen(last)
		// The restart wrote a reservation that covers the ID file: the
		// file is gone, a reboot now loses nothing.
		if v := e.idFileValue(); v != 0 {
			t.Errorf("ID file left after the reopen: %d", v)
		}
		e.reboot()
		e.nextIDAfterReopen(next)
	})
}

// (ii) The disk is stuck in a commit while IDs are handed out faster than
// the writer raises the reservation: the ID file covers them.
func TestIDsContinueAfterCrashWhileDiskStuck(t *testing.T) {
	e := newIDEnv(t)
	s := e.open(Options{reserve: 8, MaxCount: 10})
	g := newGate(t)
	setBeforeCommit(s, g.hook)
	r := NewRecorderWithOptions(s, noCoalesceIDs)
	record(r, 1)
	g.waitEntered(t)
	last := record(r, 100)
	if v := e.idFileValue(); v < last {
		t.Fatalf("ID file holds %d, below %d", v, last)
	}
	go g.open() // the commit of id 1 ends; then the crash
	s.crash()
	e.nextIDAfterReopen(last)
}

// failingDisk is a beforeCommit hook that fails while on.
type failingDisk struct{ on atomic.Bool }

func (f *failingDisk) hook() error {
	if f.on.Load() {
		return errors.New("no space left on device (injected)")
	}
	return nil
}

// degradeByWriteFailure opens a store (with the reservation reserve) whose
// commits fail from its third incident on, waits until that degraded it,
// and records n more incidents, in memory only; it returns the store and
// the highest ID handed out.
func (e *idEnv) degradeByWriteFailure(reserve uint64, n int) (*Store, uint64) {
	e.t.Helper()
	var disk failingDisk
	s := e.open(Options{reserve: reserve, BatchDelay: time.Millisecond, RetryDelay: time.Hour})
	setBeforeCommit(s, disk.hook)
	r := NewRecorderWithOptions(s, noCoalesceIDs)
	record(r, 2)
	flushT(e.t, r.Flush)
	disk.on.Store(true)
	record(r, 1)
	waitFor(e.t, func() bool { d, _ := s.Degraded(); return d })
	return s, record(r, n)
}

// (iii) A store degraded by a failing commit keeps handing out IDs in
// memory; a restart (clean or not) continues above them: within the
// reservation thanks to the disk (even after a reboot), beyond it thanks
// to the ID file.
func TestIDsContinueAfterWriteFailure(t *testing.T) {
	for _, c := range []struct {
		name    string
		reserve uint64
		n       int
		reboot  bool // the ID file is gone
		crash   bool
	}{
		{"within the reservation, no ID file", 0, 30, true, false},
		{"within the reservation, crash, no ID file", 0, 30, true, true},
		{"beyond the reservation, with the ID file", 8, 100, false, false},
		{"beyond the reservation, crash, with the ID file", 8, 100, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newIDEnv(t)
			s, last := e.degradeByWriteFailure(c.reserve, c.n) // the last c.n in memory only
			if c.reserve != 0 {
				if v := e.idFileValue(); v < last {
					t.Fatalf("ID file holds %d, below %d handed out in memory", v, last)
				}
			}
			if c.crash {
				s.crash()
			} else if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if c.reboot {
				e.reboot()
			}
			e.nextIDAfterReopen(last)
		})
	}
}

// (iii) A store degraded by a failing commit, restarted on a database that
// is unreadable by then: it starts over above the ID file, which covers
// every ID handed out in memory (not only those beyond the reservation).
func TestIDsContinueAfterWriteFailureAndDamage(t *testing.T) {
	e := newIDEnv(t)
	s, last := e.degradeByWriteFailure(0, 30) // the last 30 in memory, within the reservation on disk
	s.crash()
	if err := os.WriteFile(e.db, []byte(strings.Repeat("damaged\x00", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	s = Open(e.opts(Options{}))
	defer s.Close()
	if d, _ := s.Degraded(); !d {
		t.Fatal("want degraded: the database is damaged")
	}
	if inc := s.addNoErr(Incident{Type: Adopt}); inc.ID <= last {
		t.Fatalf("first ID after the restart = %d, does not continue after %d", inc.ID, last)
	}
}

// Degraded (and Recorder.Stats().Degraded) turn true on the first failed
// commit, without anybody calling Flush or Add; when the disk works
// again the store gets its database back, with the records it kept in
// memory meanwhile, new and updated.
func TestWriteFailureVisibleThenRecovers(t *testing.T) {
	e := newIDEnv(t)
	clock := newClock()
	var disk failingDisk
	var mu sync.Mutex
	var errs []error
	var recovered atomic.Int32
	s := e.open(Options{BatchDelay: time.Millisecond, RetryDelay: 20 * time.Millisecond, Now: clock.Now, reserve: 8,
		OnRecover: func() { recovered.Add(1) }})
	setBeforeCommit(s, disk.hook)
	r := NewRecorderWithOptions(s, RecorderOptions{CoalesceWindow: time.Minute, OnError: func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}})
	r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max"})
	r.Record(Incident{Partition: "qm", Type: Start, Summary: "started"})
	flushT(t, r.Flush)
	if d, _ := s.Degraded(); d || r.Stats().Degraded {
		t.Fatal("degraded before any failure")
	}

	disk.on.Store(true)
	r.Record(Incident{Partition: "qm", Type: Stop, Summary: "stopped"})
	waitFor(t, func() bool { return r.Stats().Degraded })
	if d, why := s.Degraded(); !d || !strings.Contains(why, "no space left on device") {
		t.Fatalf("Degraded() = %v, %q", d, why)
	}
	if st := s.Stats(); st.WriteErrors != 1 || st.Recoveries != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Retries keep failing: reported once.
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if len(errs) != 1 {
		t.Fatalf("OnError called %d times: %v", len(errs), errs)
	}
	mu.Unlock()
	// Recorded while degraded: an update of a stored record, new records
	// (beyond the reservation of 8: the ID file covers them).
	r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max"})
	last := record(r, 20)
	want, _ := s.List("", 0, 0)
	if len(want) != 23 || want[0].Details[DetailCount] != "2" || want[22].ID != last {
		t.Fatalf("while degraded: %v", ids(want))
	}

	// Space freed. While the recovery writes what it kept in memory, an
	// update and a new record arrive: they are queued, not lost.
	var during sync.Once
	setBeforeCommit(s, func() error {
		during.Do(func() {
			r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max"})
			last = r.Record(Incident{Partition: "qm", Type: Restart, Summary: "during the recovery"}).ID
		})
		return nil
	})
	waitFor(t, func() bool { d, _ := s.Degraded(); return !d })
	if recovered.Load() != 1 || r.Stats().Degraded || s.Stats().Recoveries != 1 {
		t.Fatalf("after recovery: OnRecover %d, stats %+v", recovered.Load(), s.Stats())
	}
	got, _ := s.List("", 0, 0)
	if len(got) != 24 || got[0].Details[DetailCount] != "3" || got[23].ID != last {
		t.Fatalf("after the recovery: %v, first %+v", ids(got), got[0])
	}
	want = got
	// Recorded after the recovery: on disk again, Flush works.
	clock.Add(time.Minute)
	// A new series; no jump of the IDs (the recovery does not take the
	// store's own reservation for IDs handed out).
	if inc := r.Record(Incident{Partition: "qm", Type: ForkBomb, Summary: "pids.max"}); inc.ID != last+1 {
		t.Fatalf("first ID after the recovery = %d, want %d", inc.ID, last+1)
	}
	flushT(t, r.Flush)
	want, _ = s.List("", 0, 0)
	if v := e.idFileValue(); v != 0 {
		t.Errorf("ID file left after the recovery: %d", v)
	}
	s.crash() // what was flushed is on disk
	s = e.open(Options{})
	defer s.Close()
	if got, _ := s.List("", 0, 0); jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("on disk after the recovery:\n%s\nwant\n%s", jsonOf(t, got), jsonOf(t, want))
	}
}

// Open on a database it can read but not write (a full filesystem at
// boot): degraded, with the stored records in memory, IDs above the
// reservation on disk; it gets its database back once writes work.
func TestOpenOnUnwritableDatabaseRecovers(t *testing.T) {
	e := newIDEnv(t)
	s := e.open(Options{BatchDelay: time.Hour})
	r := NewRecorderWithOptions(s, noCoalesceIDs)
	record(r, 3)
	flushT(t, r.Flush)
	last := record(r, 5) // lost by the crash
	s.crash()

	var disk failingDisk
	disk.on.Store(true)
	s = Open(e.opts(Options{beforeCommit: disk.hook, RetryDelay: 10 * time.Millisecond}))
	if d, why := s.Degraded(); !d || !strings.Contains(why, "no space left") {
		t.Fatalf("Degraded() = %v, %q", d, why)
	}
	if got, _ := s.List("", 0, 0); fmt.Sprint(ids(got)) != "[1 2 3]" {
		t.Fatalf("stored records not kept: %v", ids(got))
	}
	r = NewRecorderWithOptions(s, noCoalesceIDs)
	first := r.Record(Incident{Partition: "qm", Type: Adopt, Summary: "adopted"}).ID
	if first <= last {
		t.Fatalf("first ID = %d, does not continue after %d", first, last)
	}
	time.Sleep(50 * time.Millisecond) // retries fail meanwhile
	disk.on.Store(false)
	waitFor(t, func() bool { d, _ := s.Degraded(); return !d })
	flushT(t, r.Flush)
	want, _ := s.List("", 0, 0)
	if len(want) != 4 || want[3].ID != first {
		t.Fatalf("after the recovery: %v", ids(want))
	}
	s.crash()
	s = e.open(Options{})
	defer s.Close()
	if got, _ := s.List("", 0, 0); jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("on disk: %v, want %v", ids(got), ids(want))
	}
}

// The ID file of another database is ignored, and so is a damaged one;
// a store that cannot write its ID file still hands out IDs and says so.
func TestIDFileOfAnotherDatabaseOrBroken(t *testing.T) {
	e := newIDEnv(t)
	if err := writeIDFile(e.idFile, "/elsewhere/incidents.db", 1000); err != nil {
		t.Fatal(err)
	}
	s := e.open(Options{})
	if inc, _ := s.Add(Incident{Type: Start}); inc.ID != 1 {
		t.Fatalf("id %d: the ID file of another database was used", inc.ID)
	}
	s.Close()
	if b, _ := os.ReadFile(e.idFile); !strings.Contains(string(b), "/elsewhere/") {
		t.Fatalf("the ID file of another database was removed or changed: %q", b)
	}

	if err := os.WriteFile(e.idFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = e.open(Options{})
	if st := s.Stats(); st.IDFileErrors != 1 || st.IDFileErr == nil {
		t.Fatalf("stats %+v", st)
	}
	if inc, _ := s.Add(Incident{Type: Start}); inc.ID != 2 {
		t.Fatalf("id %d", inc.ID)
	}
	s.Close()

	// The ID file cannot be written (its directory is a file), and the
	// database cannot be opened either: IDs are handed out all the same,
	// the failure is counted.
	bad := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(bad, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s = Open(Options{Path: filepath.Join(bad, "i.db"), IDFile: filepath.Join(bad, "incident-id")})
	defer s.Close()
	if d, _ := s.Degraded(); !d {
		t.Fatal("want degraded")
	}
	atOpen := s.Stats().IDFileErrors // reading it failed too
	for i := uint64(1); i <= 2; i++ {
		if inc := s.addNoErr(Incident{Type: Start}); inc.ID != i {
			t.Fatalf("id %d, want %d", inc.ID, i)
		}
	}
	if st := s.Stats(); st.IDFileErrors != atOpen+2 || st.IDFileErr == nil {
		t.Fatalf("stats %+v (want a failure per ID: each is tried)", st)
	}
}

func (s *Store) addNoErr(inc Incident) Incident {
	inc, _ = s.addAsync(inc)
	return inc
}

// A store that could not open its database (degraded from the start)
// hands out IDs above the ID file; its IDs go to the ID file.
func TestIDsOfStoreDegradedAtOpen(t *testing.T) {
	e := newIDEnv(t)
	s := e.open(Options{})
	defer s.Close()
	record(NewRecorderWithOptions(s, noCoalesceIDs), 5)
	// Another process holds the lock: the second store is degraded.
	s2 := Open(e.opts(Options{OpenTimeout: 50 * time.Millisecond}))
	if d, _ := s2.Degraded(); !d {
		t.Fatal("want degraded")
	}
	inc := s2.addNoErr(Incident{Type: Start})
	if v := e.idFileValue(); v < inc.ID {
		t.Fatalf("ID file %d, below %d", v, inc.ID)
	}
	s2.Close()
	s3 := Open(e.opts(Options{OpenTimeout: 50 * time.Millisecond}))
	if inc3 := s3.addNoErr(Incident{Type: Start}); inc3.ID <= inc.ID {
		t.Fatalf("id %d after %d", inc3.ID, inc.ID)
	}
	s3.Close()
}

// rawReserved reads meta "reserved" of a closed database.
func rawReserved(t *testing.T, path string) uint64 {
	t.Helper()
	return rawMeta(t, path, keyReserved)
}

// rawReservedOpen reads meta "reserved" through an open store's database.
func rawReservedOpen(t *testing.T, s *Store) uint64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var st diskState
	if err := s.db.View(func(tx *bolt.Tx) error { return readState(tx, &st) }); err != nil {
		t.Fatal(err)
	}
	return st.reserved
}
