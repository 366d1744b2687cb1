package incident

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for a Store.
const (
	DefaultPath     = "/var/lib/qmd/incidents.db"
	DefaultMaxCount = 1000
	// DefaultOpenTimeout bounds how long Open waits for the file lock held
	// by another process (a second qmd, a stuck tool): qmd must not hang.
	DefaultOpenTimeout = 2 * time.Second
	// DefaultBatchMax is how many queued changes (new or updated records)
	// make the writer commit at once, without waiting for DefaultBatchDelay.
	DefaultBatchMax = 256
	// DefaultBatchDelay is the longest a queued change waits before the
	// writer commits it: a crash loses at most this much (plus the commit
	// in flight) of what was recorded, while an incident storm costs about
	// 1/DefaultBatchDelay fsyncs per second instead of one per incident.
	DefaultBatchDelay = 50 * time.Millisecond
)

var (
	bucketIncidents = []byte("incidents")
	bucketMeta      = []byte("meta")
	keyLastID       = []byte("last_id")
)

// Options configure a Store. The zero value means: DefaultPath,
// DefaultMaxCount, DefaultOpenTimeout, time.Now, DefaultBatchMax,
// DefaultBatchDelay.
type Options struct {
	Path        string
	MaxCount    int
	OpenTimeout time.Duration
	Now         func() time.Time

	// BatchMax and BatchDelay drive the background writer (see Store):
	// it commits when BatchMax changes are queued or when the oldest
	// queued change is BatchDelay old, whichever comes first.
	BatchMax   int
	BatchDelay time.Duration

	// OnWriteError, when not nil, is called once, from the writer
	// goroutine, when a commit fails and the store degrades to memory.
	OnWriteError func(error)
}

// StoreStats is a snapshot of a Store's writer.
type StoreStats struct {
	Pending     int       // records (new or updated) not yet on disk
	Commits     uint64    // successful batch commits
	WriteErrors uint64    // failed commits (the first one degrades the store)
	LastFlush   time.Time // end of the last successful commit; zero if none
}

// Store keeps incidents durably in an embedded bbolt database, bounded to
// MaxCount records (oldest dropped first). IDs are assigned in memory when
// an incident is added, are monotonic and persisted: they continue across
// restarts and are never reused, even after old incidents were dropped.
//
// Writes are asynchronous: an incident added through a Recorder is queued
// ("pending") and one writer goroutine commits the queue in batches, one
// bbolt transaction (one fsync) per batch; see Options.BatchMax and
// Options.BatchDelay. Pending records are visible at once to List and
// LastID, merged with the stored ones. Flush waits for the queue to be
// on disk; Close commits it before closing. Add is the synchronous
// variant: it returns once its record is committed.
//
// When the database cannot be used (damaged file, unwritable directory,
// lock held elsewhere, a write failing later) the Store keeps working in
// memory, with every record it had (stored and pending), and Degraded
// reports why, so that qmd keeps supervising.
//
// A Store is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	db       *bolt.DB // nil when degraded, memory-only or closed
	path     string
	max      int
	now      func() time.Time
	lastID   uint64     // highest ID assigned (pending ones included)
	count    int        // records in db (when db != nil); written by the writer only
	mem      []Incident // records when not on a database, in ID order
	degraded string
	writeErr error // the failure that degraded a working database
	closeErr error // from the writer closing the database

	// Writer state (db != nil). pending is in ID order; updates of stored
	// records come first (their IDs are below every uncommitted one).
	pending    []pendingRec
	pendingNew int    // entries of pending with isNew
	seq        uint64 // count of changes queued so far
	snapSeq    uint64 // seq when the writer took its last batch
	doneSeq    uint64 // seq covered by the last successful commit
	flushSeq   uint64 // seq a Flush or Add is waiting for
	since      time.Time
	batchMax   int
	batchDelay time.Duration
	wake       chan struct{}
	flushed    chan struct{} // closed and replaced after every commit attempt
	done       chan struct{} // closed when the writer exits; nil without writer
	stopping   bool
	commits    uint64
	writeErrs  uint64
	lastFlush  time.Time
	errHooks   []func(error)

	// beforeCommit, when set (tests), runs on the writer goroutine before
	// each commit, with no lock held: it can simulate a slow disk, or a
	// failing one by returning an error (the commit then fails with it).
	beforeCommit func() error
}

// pendingRec is a queued change: a new record or a new version of a
// record that may already be on disk.
type pendingRec struct {
	inc   Incident
	isNew bool   // not yet committed (as far as the writer knows)
	gen   uint64 // seq of the change that produced this version
}

// Open opens (creating it and its directory if needed) the store at
// opts.Path. It never fails: when the file cannot be used the returned
// store works in memory and Degraded says why.
func Open(opts Options) *Store {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if opts.MaxCount <= 0 {
		opts.MaxCount = DefaultMaxCount
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BatchMax <= 0 {
		opts.BatchMax = DefaultBatchMax
	}
	if opts.BatchDelay <= 0 {
		opts.BatchDelay = DefaultBatchDelay
	}
	s := &Store{path: opts.Path, max: opts.MaxCount, now: opts.Now,
		batchMax: opts.BatchMax, batchDelay: opts.BatchDelay,
		wake: make(chan struct{}, 1), flushed: make(chan struct{})}
	if opts.OnWriteError != nil {
		s.errHooks = append(s.errHooks, opts.OnWriteError)
	}
	if err := s.open(opts.OpenTimeout); err != nil {
		s.degrade(fmt.Errorf("open incident store %s: %w", opts.Path, err))
		return s
	}
	s.done = make(chan struct{})
	go s.run()
	return s
}

// NewMemory returns a store that lives in memory only (tests, or qmd run
// with persistence disabled). It is not reported as degraded.
func NewMemory(maxCount int) *Store {
	if maxCount <= 0 {
		maxCount = DefaultMaxCount
	}
	return &Store{max: maxCount, now: time.Now, wake: make(chan struct{}, 1), flushed: make(chan struct{})}
}

func (s *Store) open(timeout time.Duration) (err error) {
	defer func() {
		// bbolt can panic on some kinds of damage; a damaged file must
		// never take qmd down.
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return err
	}
	db, err := bolt.Open(s.path, 0o640, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("database is locked by another process: %w", err)
		}
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		inc, err := tx.CreateBucketIfNotExists(bucketIncidents)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyLastID); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("damaged database: bad %s", keyLastID)
			}
			s.lastID = binary.BigEndian.Uint64(v)
		}
		n := 0
		c := inc.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("damaged database: bad key %x", k)
			}
			// Never hand out an ID that is already stored, even if the
			// meta record was lost.
			if id := binary.BigEndian.Uint64(k); id > s.lastID {
				s.lastID = id
			}
			n++
		}
		s.count, err = trim(inc, n, s.max)
		return err
	})
	if err != nil {
		_ = db.Close()
		return err
	}
	s.db = db
	return nil
}

// degrade switches to memory, keeping every record it can still read plus
// the pending ones. Called with s.mu held (or before s is shared).
func (s *Store) degrade(err error) {
	if s.db != nil {
		// Keep what we can still read so that List does not go empty.
		if recs, lerr := s.listDB("", 0, 0); lerr == nil {
			s.mem = recs
		}
		_ = s.db.Close()
		s.db = nil
	}
	for _, p := range s.pending {
		i := sort.Search(len(s.mem), func(i int) bool { return s.mem[i].ID >= p.inc.ID })
		switch {
		case i < len(s.mem) && s.mem[i].ID == p.inc.ID:
			s.mem[i] = p.inc
		case p.isNew:
			s.mem = append(s.mem, Incident{})
			copy(s.mem[i+1:], s.mem[i:])
			s.mem[i] = p.inc
		}
		// An update of a record that is gone (trimmed) is dropped.
	}
	s.pending, s.pendingNew = nil, 0
	if over := len(s.mem) - s.max; over > 0 {
		s.mem = append(s.mem[:0:0], s.mem[over:]...)
	}
	s.degraded = err.Error()
}

// Degraded reports whether the store lost its database and works in memory
// only, and why.
func (s *Store) Degraded() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded != "", s.degraded
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Add assigns the next ID (and Time, when zero) and stores the incident,
// dropping the oldest records beyond the bound. It returns the stored
// incident once it is on disk (it is committed at once, together with
// whatever else is queued). An error means the incident could not be
// persisted: it was kept in memory and the store is now degraded.
//
// Add blocks for a disk commit; the Recorder uses the asynchronous path.
func (s *Store) Add(inc Incident) (Incident, error) {
	inc, seq := s.addAsync(inc)
	if seq == 0 {
		return inc, nil // memory store: nothing to wait for
	}
	if err := s.waitFlushed(context.Background(), seq); err != nil {
		return inc, err
	}
	return inc, nil
}

// addAsync assigns the next ID (and Time, when zero) and queues the
// incident for the writer (or keeps it in memory when there is no
// database). It never waits for the disk. seq is the change to wait for
// (0: nothing to wait for).
func (s *Store) addAsync(inc Incident) (_ Incident, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inc.Time.IsZero() {
		inc.Time = s.now()
	}
	inc.Details = cloneDetails(inc.Details)
	s.lastID++
	inc.ID = s.lastID
	if s.db == nil {
		s.mem = append(s.mem, inc)
		if over := len(s.mem) - s.max; over > 0 {
			s.mem = append(s.mem[:0:0], s.mem[over:]...)
		}
		return cloneIncident(inc), 0
	}
	seq = s.queueLocked()
	s.pending = append(s.pending, pendingRec{inc: inc, isNew: true, gen: seq})
	s.pendingNew++
	if s.pendingNew > 2*s.max {
		// Far more new records than the bound keeps (the disk is stuck or
		// slower than the storm): the oldest would be trimmed by the
		// commit anyway, so stop holding them. Dropped in one go, down to
		// the bound, to keep Record O(1) amortized; List hides the excess
		// in between (see floor).
		drop := s.pendingNew - s.max
		i := len(s.pending) - s.pendingNew
		n := len(s.pending)
		s.pending = append(s.pending[:i], s.pending[i+drop:]...)
		clear(s.pending[len(s.pending):n])
		s.pendingNew -= drop
	}
	return cloneIncident(inc), seq
}

// update replaces the record with inc.ID by inc (same ID, same partition)
// and queues the new version. A record that is no longer kept (trimmed)
// stays gone. It never waits for the disk.
func (s *Store) update(inc Incident) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inc.Details = cloneDetails(inc.Details)
	if s.db == nil {
		i := sort.Search(len(s.mem), func(i int) bool { return s.mem[i].ID >= inc.ID })
		if i < len(s.mem) && s.mem[i].ID == inc.ID {
			s.mem[i] = inc
		}
		return
	}
	seq := s.queueLocked()
	i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].inc.ID >= inc.ID })
	if i < len(s.pending) && s.pending[i].inc.ID == inc.ID {
		s.pending[i].inc = inc
		s.pending[i].gen = seq
		return
	}
	s.pending = append(s.pending, pendingRec{})
	copy(s.pending[i+1:], s.pending[i:])
	s.pending[i] = pendingRec{inc: inc, gen: seq}
}

// queueLocked counts one more queued change and wakes the writer when it
// has something new to do. Called with s.mu held.
func (s *Store) queueLocked() uint64 {
	s.seq++
	queued := s.seq - s.snapSeq
	if queued == 1 {
		s.since = time.Now()
	}
	if queued == 1 || queued == uint64(s.batchMax) {
		s.kick()
	}
	return s.seq
}

func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Flush waits until everything queued before the call is on disk. It
// returns nil when it is (or when the store is memory-only by design,
// NewMemory, or closed); an error when the store is degraded (the records
// are kept in memory only) or ctx ends first. Flush does not delay
// later records.
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	seq := s.seq
	if s.degraded != "" {
		err := s.degradedErrLocked()
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	return s.waitFlushed(ctx, seq)
}

// degradedErrLocked is the error Flush and Add return once the store
// works in memory. Called with s.mu held.
func (s *Store) degradedErrLocked() error {
	err := s.writeErr
	if err == nil {
		err = errors.New(s.degraded)
	}
	return fmt.Errorf("incident store degraded, incidents kept in memory only: %w", err)
}

// waitFlushed asks the writer to commit at once and waits until change seq
// is committed.
func (s *Store) waitFlushed(ctx context.Context, seq uint64) error {
	s.mu.Lock()
	if seq > s.flushSeq {
		s.flushSeq = seq
		s.kick()
	}
	for {
		if s.doneSeq >= seq {
			s.mu.Unlock()
			return nil
		}
		if s.degraded != "" {
			err := s.degradedErrLocked()
			s.mu.Unlock()
			return err
		}
		if s.db == nil { // closed
			s.mu.Unlock()
			return nil
		}
		ch := s.flushed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
}

// run is the writer goroutine: it commits the queue in batches until the
// store is closed (then it commits what is left and closes the database)
// or a commit fails (then the store is degraded).
func (s *Store) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.mu.Lock()
		if s.db == nil { // degraded
			s.mu.Unlock()
			return
		}
		queued := s.seq - s.snapSeq
		urgent := queued >= uint64(s.batchMax) || s.flushSeq > s.snapSeq || s.stopping
		wait := s.batchDelay - time.Since(s.since)
		if queued == 0 && s.stopping {
			if err := s.db.Close(); err != nil {
				s.closeErr = fmt.Errorf("close incident store: %w", err)
			}
			s.db = nil
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		switch {
		case queued == 0:
			<-s.wake
		case urgent || wait <= 0:
			s.commitPending()
		default:
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
				timer.Stop() // Go >= 1.23: no stale tick after Stop
			}
		}
	}
}

// commitPending writes the whole queue in one transaction.
func (s *Store) commitPending() {
	s.mu.Lock()
	batch := append([]pendingRec(nil), s.pending...)
	snap, lastID, count, db, hook := s.seq, s.lastID, s.count, s.db, s.beforeCommit
	s.snapSeq = snap
	s.mu.Unlock()

	var err error
	if hook != nil {
		err = hook()
	}
	if err == nil {
		count, err = s.commit(db, batch, lastID, count)
	}

	s.mu.Lock()
	if err != nil {
		s.writeErrs++
		err = fmt.Errorf("persist incident: %w", err)
		s.writeErr = err
		s.degrade(err)
		hooks := slices.Clone(s.errHooks)
		s.mu.Unlock()
		// Report before waking Flush and Add: their callers see the error
		// reported.
		for _, h := range hooks {
			h(err)
		}
		s.mu.Lock()
		close(s.flushed)
		s.flushed = make(chan struct{})
		s.mu.Unlock()
		return
	}
	s.count = count
	s.commits++
	s.lastFlush = time.Now()
	s.doneSeq = snap
	// Drop what was committed, unless a newer version was queued meanwhile
	// (that one is now an update of a stored record).
	kept := s.pending[:0]
	j := 0
	for _, p := range s.pending {
		for j < len(batch) && batch[j].inc.ID < p.inc.ID {
			j++
		}
		if j < len(batch) && batch[j].inc.ID == p.inc.ID {
			if batch[j].gen == p.gen {
				if p.isNew {
					s.pendingNew--
				}
				continue
			}
			if p.isNew {
				p.isNew = false
				s.pendingNew--
			}
		}
		kept = append(kept, p)
	}
	for i := len(kept); i < len(s.pending); i++ {
		s.pending[i] = pendingRec{}
	}
	s.pending = kept
	close(s.flushed)
	s.flushed = make(chan struct{})
	s.mu.Unlock()
}

// commit writes batch in one transaction and trims to the bound; it
// returns how many records the database then holds. Runs on the writer
// goroutine without s.mu: only the writer writes to db.
func (s *Store) commit(db *bolt.DB, batch []pendingRec, lastID uint64, count int) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	vals := make([][]byte, len(batch))
	for i, p := range batch {
		if vals[i], err = json.Marshal(p.inc); err != nil {
			return count, err
		}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		n = count
		for i, p := range batch {
			k := idKey(p.inc.ID)
			exists := b.Get(k) != nil
			if !exists && !p.isNew {
				continue // an update of a record trimmed meanwhile
			}
			if err := b.Put(k, vals[i]); err != nil {
				return err
			}
			if !exists {
				n++
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyLastID); len(v) != 8 || binary.BigEndian.Uint64(v) < lastID {
			if err := meta.Put(keyLastID, idKey(lastID)); err != nil {
				return err
			}
		}
		var err error
		n, err = trim(b, n, s.max)
		return err
	})
	if err != nil {
		return count, err
	}
	return n, nil
}

// trim drops the oldest records of b, which holds n, beyond max and
// returns how many are left. Runs inside an update.
func trim(b *bolt.Bucket, n, max int) (int, error) {
	c := b.Cursor()
	for n > max {
		k, _ := c.First()
		if k == nil {
			return 0, nil
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		n--
	}
	return n, nil
}

// List returns up to limit incidents with ID > afterID, in ID order, of one
// partition ("" = all). limit <= 0 means no limit. Pending incidents (not
// yet on disk) are included.
func (s *Store) List(partition string, afterID uint64, limit int) ([]Incident, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		recs, err := s.listMerged(partition, afterID, limit)
		if err != nil {
			return nil, fmt.Errorf("list incidents: %w", err)
		}
		return recs, nil
	}
	i := sort.Search(len(s.mem), func(i int) bool { return s.mem[i].ID > afterID })
	var out []Incident
	for ; i < len(s.mem); i++ {
		if limit > 0 && len(out) >= limit {
			break
		}
		if partition != "" && s.mem[i].Partition != partition {
			continue
		}
		out = append(out, cloneIncident(s.mem[i]))
	}
	return out, nil
}

// listMerged lists the stored records merged with the pending ones, as
// they will be once committed: a pending version replaces the stored one,
// and the records the next commit trims away are left out. Called with
// s.mu held.
func (s *Store) listMerged(partition string, afterID uint64, limit int) (out []Incident, err error) {
	if len(s.pending) == 0 {
		return s.listDB(partition, afterID, limit)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	if afterID == ^uint64(0) {
		return nil, nil
	}
	pend := s.pending
	pi := sort.Search(len(pend), func(i int) bool { return pend[i].inc.ID > afterID })
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		c := b.Cursor()
		floor := s.floor(c, pend)
		start := afterID + 1
		if start < floor {
			start = floor
		}
		k, v := c.Seek(idKey(start))
		for limit <= 0 || len(out) < limit {
			for pi < len(pend) {
				p := pend[pi].inc
				if (partition == "" || p.Partition == partition) && p.ID >= floor &&
					(pend[pi].isNew || b.Get(idKey(p.ID)) != nil) {
					break
				}
				pi++
			}
			var dbID uint64
			if k != nil {
				dbID = binary.BigEndian.Uint64(k)
			}
			switch {
			case k == nil && pi == len(pend):
				return nil
			case k != nil && (pi == len(pend) || dbID < pend[pi].inc.ID):
				var inc Incident
				if err := json.Unmarshal(v, &inc); err != nil {
					return fmt.Errorf("damaged record %d: %w", dbID, err)
				}
				if partition == "" || inc.Partition == partition {
					out = append(out, inc)
				}
				k, v = c.Next()
			default:
				if k != nil && dbID == pend[pi].inc.ID {
					k, v = c.Next()
				}
				out = append(out, cloneIncident(pend[pi].inc))
				pi++
			}
		}
		return nil
	})
	return out, err
}

// floor is the lowest ID List shows: when the stored and the new pending
// records together exceed the bound, the next commit trims the oldest, so
// List leaves them out already. Only the max highest IDs of the union stay.
// (The union, not a sum of counts: between the end of a commit and the
// writer taking s.mu back, the new records of the batch are both stored
// and pending.) Called with s.mu held, inside a read transaction.
func (s *Store) floor(c *bolt.Cursor, pend []pendingRec) uint64 {
	if s.count+s.pendingNew <= s.max {
		return 0
	}
	k, _ := c.Last()
	pi := len(pend) - 1
	for need := s.max; ; need-- {
		for pi >= 0 && !pend[pi].isNew {
			pi--
		}
		var dbID, pID uint64
		if k != nil {
			dbID = binary.BigEndian.Uint64(k)
		}
		if pi >= 0 {
			pID = pend[pi].inc.ID
		}
		next := max(dbID, pID)
		if next == 0 {
			return 0 // fewer than max records in all
		}
		if need == 1 {
			return next
		}
		if dbID == next {
			k, _ = c.Prev()
		}
		if pID == next {
			pi--
		}
	}
}

func (s *Store) listDB(partition string, afterID uint64, limit int) (out []Incident, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketIncidents).Cursor()
		for k, v := c.Seek(idKey(afterID + 1)); k != nil; k, v = c.Next() {
			if afterID == ^uint64(0) {
				break
			}
			if limit > 0 && len(out) >= limit {
				break
			}
			var inc Incident
			if err := json.Unmarshal(v, &inc); err != nil {
				return fmt.Errorf("damaged record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if partition != "" && inc.Partition != partition {
				continue
			}
			out = append(out, inc)
		}
		return nil
	})
	return out, err
}

// LastID is the highest ID assigned so far (0 when none), pending records
// included.
func (s *Store) LastID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Stats returns the writer's counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Pending: len(s.pending), Commits: s.commits, WriteErrors: s.writeErrs, LastFlush: s.lastFlush}
}

// onWriteError adds a hook called once when a commit fails.
func (s *Store) onWriteError(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errHooks = append(s.errHooks, f)
}

// Close commits everything pending and closes the database. It waits
// for the disk. An error means the database could not be closed cleanly
// or the last records could not be persisted (they are then kept in
// memory). The store must not be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	done := s.done
	errsBefore := s.writeErrs
	s.stopping = true
	s.mu.Unlock()
	if done != nil {
		s.kick()
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErrs > errsBefore {
		return fmt.Errorf("close incident store: %w", s.writeErr)
	}
	if s.db != nil { // never had a writer: nothing else holds it
		err := s.db.Close()
		s.db = nil
		if err != nil {
			return fmt.Errorf("close incident store: %w", err)
		}
		return nil
	}
	err := s.closeErr
	s.closeErr = nil
	return err
}

func idKey(id uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], id)
	return k[:]
}

func cloneDetails(d map[string]string) map[string]string {
	if d == nil {
		return nil
	}
	c := make(map[string]string, len(d))
	for k, v := range d {
		c[k] = v
	}
	return c
}
