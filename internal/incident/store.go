package incident

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// DefaultIDFile keeps the ID high-water mark of a store that cannot
	// write its database (see Store, "IDs"). It belongs on a filesystem
	// other than the database's, in memory: /run is a tmpfs.
	DefaultIDFile = "/run/qmd/incident-id"
	// DefaultRetryDelay is how long a store whose writes failed waits
	// before it tries its database again; every failed try doubles the
	// wait, up to DefaultRetryDelayMax.
	DefaultRetryDelay    = 5 * time.Second
	DefaultRetryDelayMax = 5 * time.Minute

	// idReserve is how many IDs the database reserves ahead of use.
	idReserve = 4096
	// idFileStep is how many IDs one write of the ID file covers.
	idFileStep = 64
)

// defaultIDFile is DefaultIDFile, elsewhere in this package's tests.
var defaultIDFile = DefaultIDFile

var (
	bucketIncidents = []byte("incidents")
	bucketMeta      = []byte("meta")
	keyLastID       = []byte("last_id")  // highest ID committed
	keyReserved     = []byte("reserved") // every ID handed out is <= this (see Store, "IDs")
)

// Options configure a Store. The zero value means: DefaultPath,
// DefaultMaxCount, DefaultOpenTimeout, time.Now, DefaultBatchMax,
// DefaultBatchDelay, DefaultIDFile, DefaultRetryDelay,
// DefaultRetryDelayMax.
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

	// IDFile is where the store keeps the high-water mark of the IDs it
	// handed out beyond what its database reserved (see Store, "IDs"):
	// a small file, written atomically (rename), never fsynced. It must
	// not be on the database's filesystem (that one may be full); a tmpfs
	// is right. The file names the database it belongs to: the file of
	// another database is ignored (and overwritten when needed).
	IDFile string

	// RetryDelay and RetryDelayMax pace the retries of a store whose
	// writes failed (see Store, "Failures").
	RetryDelay    time.Duration
	RetryDelayMax time.Duration

	// OnWriteError, when not nil, is called from the writer goroutine
	// when a commit fails and the store degrades to memory: once per
	// degradation (failed retries are not reported again; a store that
	// recovered and fails again is).
	OnWriteError func(error)
	// OnRecover, when not nil, is called from the writer goroutine when a
	// degraded store got its database back (Degraded reports false again).
	OnRecover func()

	// reserve overrides idReserve (tests).
	reserve uint64
	// beforeCommit is Store.beforeCommit from the start: it also runs
	// before the first transaction of Open (tests).
	beforeCommit func() error
}

// StoreStats is a snapshot of a Store's writer.
type StoreStats struct {
	Pending      int       // records (new or updated) not yet on disk
	Commits      uint64    // successful batch commits
	WriteErrors  uint64    // failed commits (each one degrades the store; failed retries are not counted)
	Recoveries   uint64    // times a degraded store got its database back
	LastFlush    time.Time // end of the last successful commit; zero if none
	IDFileErrors uint64    // failed reads or writes of Options.IDFile
	IDFileErr    error     // the last of them; nil if none
}

// Store keeps incidents durably in an embedded bbolt database, bounded to
// MaxCount records (oldest dropped first).
//
// Writes are asynchronous: an incident added through a Recorder is queued
// ("pending") and one writer goroutine commits the queue in batches, one
// bbolt transaction (one fsync) per batch; see Options.BatchMax and
// Options.BatchDelay. Pending records are visible at once to List and
// LastID, merged with the stored ones. Flush waits for the queue to be
// on disk; Close commits it before closing. Add is the synchronous
// variant: it returns once its record is committed.
//
// # IDs
//
// IDs are assigned in memory when an incident is added (they are logged
// and signalled before they are on disk). They are unique and increasing,
// not dense: a restart may skip some. An ID is never handed out twice by
// the same store, nor by a store reopened after a qmd restart, whether qmd
// stopped cleanly or crashed, and whether or not its database could be
// written meanwhile. How:
//
//   - The database reserves IDs ahead of use: Open writes meta "reserved"
//     = (the highest ID known) + 4096 in its first transaction; a batch
//     commit raises it again when fewer than 2048 reserved IDs are left.
//     A reopened store continues above "reserved", not above the last
//     record, so the IDs of records that a crash lost (pending, at most
//     BatchDelay plus a commit old) are not reused: a crash leaves a gap
//     (up to 4096 IDs, or up to 64 beyond the ID file's mark). A clean
//     Close gives the unused reservation back (reserved = the last ID):
//     after a clean stop the IDs go on densely.
//   - An ID that the database does not cover (the store is degraded to
//     memory, or it hands out IDs faster than the writer raises the
//     reservation) is first recorded in Options.IDFile (by blocks of 64),
//     on another filesystem than the database's. Open continues above the
//     highest of: the last ID stored, "reserved", and the ID file. Once
//     the reservation on disk covers the ID file, the file is removed.
//     When the ID file cannot be written, the ID is handed out all the
//     same (qmd keeps supervising) and StoreStats.IDFileErrors counts it:
//     the guarantees below then hold only within the reservation.
//
// What survives what:
//
//   - qmd restarts (clean stop, crash, kill -9), also while the database
//     was read-only, full or failing: no ID is reused. The incidents that
//     were only in memory (recorded while degraded) are lost; their IDs
//     are not reused.
//   - A reboot (or whatever empties the ID file's tmpfs) while the disk
//     was fine: no ID is reused; the database's reservation covers every
//     ID handed out.
//   - A reboot after the store was degraded (a full disk, a failing
//     disk): the IDs handed out in memory beyond the database's
//     reservation (beyond the first 4096 or so after the last successful
//     open or commit) were never stored anywhere that survives a reboot;
//     they are handed out again, to other incidents. They were only in
//     the journal (QMD_INCIDENT_ID) and in D-Bus signals of the previous
//     boot, never in the store.
//   - A database that cannot be read at all (damaged, deleted): the store
//     starts over above the ID file, or at 1 without it (after a reboot).
//
// # Failures
//
// When the database cannot be used (damaged file, unwritable directory,
// lock held elsewhere, a full filesystem, a write failing later) the Store
// keeps working in memory, with every record it had (stored and pending),
// and Degraded reports why, so that qmd keeps supervising. Degraded turns
// true when Open fails or, later, when the first commit fails.
//
// A store degraded by a failed write (a commit after a good open, or the
// first transaction of Open on a database it could read: typically a full
// filesystem) tries again after Options.RetryDelay, doubling the wait up
// to Options.RetryDelayMax: it reopens the database, writes every record
// it keeps in memory in one transaction and, when that commits, works on
// the disk again (Degraded reports false, Options.OnRecover is called).
// The records kept in memory are then on disk, except those the bound
// dropped meanwhile. A store that could not open or read its database
// (damaged, locked, permissions, read-only filesystem) stays degraded
// until it is opened again (qmd restarts).
//
// A Store is safe for concurrent use.
type Store struct {
	mu          sync.Mutex
	db          *bolt.DB // nil when degraded, memory-only or closed
	path        string
	max         int
	now         func() time.Time
	openTimeout time.Duration
	lastID      uint64     // highest ID assigned (pending ones included)
	count       int        // records in db (when db != nil); written by the writer only
	mem         []Incident // records when not on a database, in ID order
	degraded    string
	writeErr    error // the failure that degraded a working database
	closeErr    error // from the writer closing the database

	// IDs (see "IDs" above).
	reserve      uint64 // how many IDs the database reserves ahead
	diskReserved uint64 // "reserved" as committed; 0 when unknown
	idFile       string // "" for NewMemory
	fileReserved uint64 // value this store wrote to idFile; 0 when none
	idFileErrs   uint64
	idFileErr    error

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
	abandoned  bool // crash (tests): the writer stops without committing
	commits    uint64
	writeErrs  uint64
	lastFlush  time.Time
	errHooks   []func(error)

	// Recovery of a store degraded by a failed write (db == nil).
	recoverable  bool
	retryMin     time.Duration
	retryMax     time.Duration
	retryDelay   time.Duration // the wait after the next failed try
	retryAt      time.Time
	recoveries   uint64
	recoverHooks []func()

	// beforeCommit, when set (tests), runs on the writer goroutine before
	// each commit and each recovery attempt, with no lock held: it can
	// simulate a slow disk, or a failing one by returning an error (the
	// commit then fails with it).
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
	if opts.IDFile == "" {
		opts.IDFile = defaultIDFile
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = DefaultRetryDelay
	}
	if opts.RetryDelayMax < opts.RetryDelay {
		opts.RetryDelayMax = max(DefaultRetryDelayMax, opts.RetryDelay)
	}
	if opts.reserve == 0 {
		opts.reserve = idReserve
	}
	s := &Store{path: opts.Path, max: opts.MaxCount, now: opts.Now, openTimeout: opts.OpenTimeout,
		batchMax: opts.BatchMax, batchDelay: opts.BatchDelay,
		reserve: opts.reserve, idFile: opts.IDFile,
		retryMin: opts.RetryDelay, retryMax: opts.RetryDelayMax, beforeCommit: opts.beforeCommit,
		wake: make(chan struct{}, 1), flushed: make(chan struct{})}
	if opts.OnWriteError != nil {
		s.errHooks = append(s.errHooks, opts.OnWriteError)
	}
	if opts.OnRecover != nil {
		s.recoverHooks = append(s.recoverHooks, opts.OnRecover)
	}
	if id, err := readIDFile(s.idFile, s.path); err != nil {
		s.idFileFailed(err)
	} else {
		s.lastID = id
	}
	recoverable, err := s.open()
	if err != nil {
		s.degrade(fmt.Errorf("open incident store %s: %w", opts.Path, err))
		if !recoverable {
			return s
		}
		s.recoverable = true
		s.scheduleRetryLocked()
	}
	s.done = make(chan struct{})
	go s.run()
	return s
}

// NewMemory returns a store that lives in memory only (tests, or qmd run
// with persistence disabled). It is not reported as degraded. Its IDs
// start at 1.
func NewMemory(maxCount int) *Store {
	if maxCount <= 0 {
		maxCount = DefaultMaxCount
	}
	return &Store{max: maxCount, now: time.Now, wake: make(chan struct{}, 1), flushed: make(chan struct{})}
}

// diskState is what a database says about IDs and records.
type diskState struct {
	top      uint64 // highest ID the database knows of: last_id, reserved, highest key
	lastID   uint64 // meta last_id
	reserved uint64 // meta reserved
	count    int    // records
}

// readState reads st from tx; the buckets may be missing (a new file).
func readState(tx *bolt.Tx, st *diskState) error {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		for _, kv := range []struct {
			key []byte
			val *uint64
		}{{keyLastID, &st.lastID}, {keyReserved, &st.reserved}} {
			if v := meta.Get(kv.key); v != nil {
				if len(v) != 8 {
					return fmt.Errorf("damaged database: bad %s", kv.key)
				}
				*kv.val = binary.BigEndian.Uint64(v)
			}
		}
	}
	st.top = max(st.lastID, st.reserved)
	if b := tx.Bucket(bucketIncidents); b != nil {
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("damaged database: bad key %x", k)
			}
			// Never hand out an ID that is already stored, even if the
			// meta records were lost.
			st.top = max(st.top, binary.BigEndian.Uint64(k))
			st.count++
		}
	}
	return nil
}

// guard turns a panic of bbolt (some kinds of damage make it panic) into
// an error: a damaged file must never take qmd down. bbolt rolls its
// transaction back on a panic, so the database can still be closed.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	return f()
}

// open opens the database, reads where the IDs are and reserves the next
// ones in a first transaction. Called before s is shared. When the
// database could be read but not written (a full filesystem), its records
// are kept in s.mem and recoverable is true: the writer retries.
func (s *Store) open() (recoverable bool, err error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return false, err
	}
	db, err := bolt.Open(s.path, 0o640, &bolt.Options{Timeout: s.openTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return false, fmt.Errorf("database is locked by another process: %w", err)
		}
		return false, err
	}
	var st diskState
	if err := guard(func() error { return db.View(func(tx *bolt.Tx) error { return readState(tx, &st) }) }); err != nil {
		_ = db.Close()
		return false, err
	}
	s.lastID = max(s.lastID, st.top)
	s.diskReserved = st.reserved
	reserved := s.lastID + s.reserve
	if s.beforeCommit != nil {
		err = s.beforeCommit()
	}
	if err == nil {
		err = guard(func() error { return s.reserveAtOpen(db, st, reserved) })
	}
	if err != nil {
		// Readable, not writable: keep what it holds.
		if recs, lerr := listDB(db, "", 0, 0); lerr == nil {
			s.mem = recs
			if over := len(s.mem) - s.max; over > 0 {
				s.mem = s.mem[over:]
			}
		}
		_ = db.Close()
		return true, err
	}
	s.diskReserved = reserved
	s.db = db
	s.dropIDFileLocked()
	return false, nil
}

// createBuckets returns the incidents and meta buckets, created if absent.
func createBuckets(tx *bolt.Tx) (incidents, meta *bolt.Bucket, err error) {
	if incidents, err = tx.CreateBucketIfNotExists(bucketIncidents); err != nil {
		return nil, nil, err
	}
	if meta, err = tx.CreateBucketIfNotExists(bucketMeta); err != nil {
		return nil, nil, err
	}
	return incidents, meta, nil
}

// reserveAtOpen is the first transaction of open: it creates the buckets,
// writes the reservation and trims to the bound.
func (s *Store) reserveAtOpen(db *bolt.DB, st diskState, reserved uint64) error {
	return db.Update(func(tx *bolt.Tx) error {
		inc, meta, err := createBuckets(tx)
		if err != nil {
			return err
		}
		if err := meta.Put(keyReserved, idKey(reserved)); err != nil {
			return err
		}
		s.count, err = trim(inc, st.count, s.max)
		return err
	})
}

// degrade switches to memory, keeping every record it can still read plus
// the pending ones. Called with s.mu held (or before s is shared).
func (s *Store) degrade(err error) {
	if s.db != nil {
		// Keep what we can still read so that List does not go empty.
		if recs, lerr := listDB(s.db, "", 0, 0); lerr == nil {
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
	// From now on every ID handed out goes to the ID file first (the
	// database may be unreadable when qmd starts again).
}

// scheduleRetryLocked arms the first retry of a degraded store. Called
// with s.mu held (or before s is shared).
func (s *Store) scheduleRetryLocked() {
	s.retryDelay = s.retryMin
	s.retryAt = time.Now().Add(s.retryDelay)
}

// Degraded reports whether the store lost its database and works in memory
// only, and why. It turns true when Open fails or when a commit fails (at
// once, before Flush or Add return), and false again when the store got
// its database back (see Store, "Failures").
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
	s.noteIDLocked(inc.ID)
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

// noteIDLocked makes sure that id, about to be handed out, is covered by
// the database's reservation or, failing that, by the ID file: a store
// opened later never hands it out again. Called with s.mu held.
func (s *Store) noteIDLocked(id uint64) {
	if s.idFile == "" || id <= s.fileReserved || s.db != nil && id <= s.diskReserved {
		return
	}
	v := id + idFileStep - 1
	if err := writeIDFile(s.idFile, s.path, v); err != nil {
		// The ID is handed out all the same: qmd keeps supervising. Tried
		// again with the next ID.
		s.idFileFailed(err)
		return
	}
	s.fileReserved = v
}

// dropIDFileLocked removes the ID file once the reservation on disk covers
// every ID handed out. Called with s.mu held (or before s is shared).
func (s *Store) dropIDFileLocked() {
	if s.idFile == "" || s.diskReserved < s.lastID {
		return
	}
	if id, err := readIDFile(s.idFile, s.path); err != nil || id == 0 {
		return // unreadable, absent, or another database's: leave it
	}
	if err := os.Remove(s.idFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.idFileFailed(err)
		return
	}
	s.fileReserved = 0
}

func (s *Store) idFileFailed(err error) {
	s.idFileErrs++
	s.idFileErr = err
}

// idFileData is the content of Options.IDFile.
type idFileData struct {
	DB       string `json:"db"`       // the database it belongs to
	Reserved uint64 `json:"reserved"` // every ID handed out is <= this
}

// readIDFile returns the high-water mark file holds for the database db;
// 0 when there is none (no file, or the file of another database).
func readIDFile(file, db string) (uint64, error) {
	if file == "" {
		return 0, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read incident ID file: %w", err)
	}
	var d idFileData
	if err := json.Unmarshal(b, &d); err != nil {
		return 0, fmt.Errorf("read incident ID file %s: %w", file, err)
	}
	if filepath.Clean(d.DB) != filepath.Clean(db) {
		return 0, nil
	}
	return d.Reserved, nil
}

// writeIDFile replaces file atomically (a reader sees the old or the new
// content, never a mix). No fsync: the file is meant for a tmpfs, which
// survives a crash of qmd but not a reboot either way.
func writeIDFile(file, db string, reserved uint64) error {
	b, err := json.Marshal(idFileData{DB: db, Reserved: reserved})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o750); err != nil {
		return fmt.Errorf("write incident ID file: %w", err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("write incident ID file: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write incident ID file: %w", err)
	}
	return nil
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
// later records. A degraded store answers with an error until it got its
// database back (see Store, "Failures").
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
// store is closed (then it commits what is left, gives the unused IDs
// back and closes the database). When a commit fails the store degrades;
// run then retries the database (see Store, "Failures") until it works
// again or the store is closed.
func (s *Store) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.mu.Lock()
		if s.abandoned {
			if s.db != nil {
				_ = s.db.Close()
				s.db = nil
			}
			s.mu.Unlock()
			return
		}
		if s.db == nil { // degraded
			if s.stopping || !s.recoverable {
				s.mu.Unlock()
				return
			}
			wait := time.Until(s.retryAt)
			s.mu.Unlock()
			if wait <= 0 {
				s.retry()
				continue
			}
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
				timer.Stop()
			}
			continue
		}
		queued := s.seq - s.snapSeq
		urgent := queued >= uint64(s.batchMax) || s.flushSeq > s.snapSeq || s.stopping
		wait := s.batchDelay - time.Since(s.since)
		if queued == 0 && s.stopping {
			s.releaseLocked()
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

// releaseLocked gives the unused reservation back on a clean close: every
// ID handed out is committed (nothing is queued), so reserved = the last
// ID is enough, and a clean restart goes on without a gap. A failure
// only leaves the gap. Called by the writer with s.mu held and s.db open;
// Record waits meanwhile (the store is closing anyway).
func (s *Store) releaseLocked() {
	if s.diskReserved <= s.lastID {
		return
	}
	last := s.lastID
	err := guard(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if err := meta.Put(keyLastID, idKey(last)); err != nil {
				return err
			}
			return meta.Put(keyReserved, idKey(last))
		})
	})
	if err != nil {
		return
	}
	s.diskReserved = last
	s.dropIDFileLocked()
}

// commitPending writes the whole queue in one transaction, raising the
// ID reservation when it runs low.
func (s *Store) commitPending() {
	s.mu.Lock()
	batch := append([]pendingRec(nil), s.pending...)
	snap, lastID, count, db, hook := s.seq, s.lastID, s.count, s.db, s.beforeCommit
	var reserve uint64 // 0: "reserved" stays
	if lastID+s.reserve/2 > s.diskReserved {
		reserve = lastID + s.reserve
	}
	s.snapSeq = snap
	s.mu.Unlock()

	var err error
	if hook != nil {
		err = hook()
	}
	if err == nil {
		count, err = s.commit(db, batch, lastID, reserve, count)
	}

	s.mu.Lock()
	if err != nil {
		s.writeErrs++
		err = fmt.Errorf("persist incident: %w", err)
		s.writeErr = err
		s.degrade(err)
		s.recoverable = true
		s.scheduleRetryLocked()
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
	if reserve > s.diskReserved {
		s.diskReserved = reserve
	}
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

// commit writes batch in one transaction (with "reserved" when not 0) and
// trims to the bound; it returns how many records the database then
// holds. Runs on the writer goroutine without s.mu: only the writer
// writes to db.
func (s *Store) commit(db *bolt.DB, batch []pendingRec, lastID, reserve uint64, count int) (n int, err error) {
	vals := make([][]byte, len(batch))
	for i, p := range batch {
		if vals[i], err = json.Marshal(p.inc); err != nil {
			return count, err
		}
	}
	err = guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
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
			if err := putMeta(tx.Bucket(bucketMeta), lastID, reserve); err != nil {
				return err
			}
			var err error
			n, err = trim(b, n, s.max)
			return err
		})
	})
	if err != nil {
		return count, err
	}
	return n, nil
}

// putMeta raises last_id to lastID and, when reserve is not 0, reserved
// to reserve; neither ever goes down here.
func putMeta(meta *bolt.Bucket, lastID, reserve uint64) error {
	for _, kv := range []struct {
		key []byte
		val uint64
	}{{keyLastID, lastID}, {keyReserved, reserve}} {
		if kv.val == 0 {
			continue
		}
		if v := meta.Get(kv.key); len(v) != 8 || binary.BigEndian.Uint64(v) < kv.val {
			if err := meta.Put(kv.key, idKey(kv.val)); err != nil {
				return err
			}
		}
	}
	return nil
}

// retry tries to get the database of a store degraded by a failed write
// back: it reopens it and writes every record kept in memory in one
// transaction. When that commits, the records changed meanwhile are
// queued and the store works on the disk again; otherwise the next try
// waits twice as long. Runs on the writer goroutine.
func (s *Store) retry() {
	s.mu.Lock()
	snap := slices.Clone(s.mem)
	lastID, hook := s.lastID, s.beforeCommit
	s.mu.Unlock()

	db, reserved, count, err := s.rewrite(snap, lastID, hook)

	s.mu.Lock()
	if err != nil {
		s.retryDelay = min(2*s.retryDelay, s.retryMax)
		s.retryAt = time.Now().Add(s.retryDelay)
		s.mu.Unlock()
		return
	}
	// The database holds nothing this store does not know of (it held
	// bbolt's lock when it opened it first; nobody else writes the file
	// while qmd runs): lastID stays.
	s.db, s.count = db, count
	s.diskReserved = max(s.diskReserved, reserved)
	s.degraded, s.writeErr, s.recoverable = "", nil, false
	s.recoveries++
	// Whatever changed in memory since the snapshot is queued: records
	// added since (their IDs are above every one of snap) and records of
	// snap updated since (coalescing).
	s.snapSeq, s.doneSeq = s.seq, s.seq
	old := make(map[uint64]Incident, len(snap))
	for _, inc := range snap {
		old[inc.ID] = inc
	}
	for _, inc := range s.mem {
		o, stored := old[inc.ID]
		if stored && sameIncident(o, inc) {
			continue
		}
		gen := s.queueLocked()
		s.pending = append(s.pending, pendingRec{inc: inc, isNew: !stored, gen: gen})
		if !stored {
			s.pendingNew++
		}
	}
	s.mem = nil
	s.dropIDFileLocked()
	hooks := slices.Clone(s.recoverHooks)
	s.mu.Unlock()
	for _, h := range hooks {
		h()
	}
}

// rewrite opens the database and writes recs (the records a degraded
// store keeps in memory) with lastID and a new reservation in one
// transaction, trimming to the bound. It returns the open database, the
// reservation and how many records it now holds.
func (s *Store) rewrite(recs []Incident, lastID uint64, hook func() error) (db *bolt.DB, reserved uint64, n int, err error) {
	var st diskState
	vals := make([][]byte, len(recs))
	for i, inc := range recs {
		if vals[i], err = json.Marshal(inc); err != nil {
			return nil, 0, 0, err
		}
	}
	db, err = bolt.Open(s.path, 0o640, &bolt.Options{Timeout: s.openTimeout})
	if err != nil {
		return nil, 0, 0, err
	}
	if hook != nil {
		err = hook()
	}
	if err == nil {
		err = guard(func() error {
			return db.Update(func(tx *bolt.Tx) error {
				if err := readState(tx, &st); err != nil {
					return err
				}
				reserved = max(lastID+s.reserve, st.reserved)
				b, meta, err := createBuckets(tx)
				if err != nil {
					return err
				}
				n = st.count
				for i, inc := range recs {
					k := idKey(inc.ID)
					if b.Get(k) == nil {
						n++
					}
					if err := b.Put(k, vals[i]); err != nil {
						return err
					}
				}
				if err := putMeta(meta, lastID, reserved); err != nil {
					return err
				}
				n, err = trim(b, n, s.max)
				return err
			})
		})
	}
	if err != nil {
		_ = db.Close()
		return nil, 0, 0, err
	}
	return db, reserved, n, nil
}

func sameIncident(a, b Incident) bool {
	return a.ID == b.ID && a.Time.Equal(b.Time) && a.Partition == b.Partition && a.Type == b.Type &&
		a.Summary == b.Summary && maps.Equal(a.Details, b.Details)
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
		return listDB(s.db, partition, afterID, limit)
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

func listDB(db *bolt.DB, partition string, afterID uint64, limit int) (out []Incident, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		if b == nil {
			return nil
		}
		c := b.Cursor()
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
// included. After a reopen that followed a crash it may be an ID that
// was reserved but never handed out (see Store, "IDs"); new IDs are above
// it all the same.
func (s *Store) LastID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Stats returns the writer's counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Pending: len(s.pending), Commits: s.commits, WriteErrors: s.writeErrs, Recoveries: s.recoveries,
		LastFlush: s.lastFlush, IDFileErrors: s.idFileErrs, IDFileErr: s.idFileErr}
}

// onWriteError adds a hook called when a commit fails and the store
// degrades (see Options.OnWriteError).
func (s *Store) onWriteError(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errHooks = append(s.errHooks, f)
}

// onRecover adds a hook called when a degraded store got its database back
// (see Options.OnRecover).
func (s *Store) onRecover(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recoverHooks = append(s.recoverHooks, f)
}

// crash stops the writer without committing anything and closes the
// database, as if qmd had been killed: the pending records are lost, the
// ID file stays as it is. Tests only (another Store can then open the
// file: bbolt's lock is released). The store must not be used afterwards.
func (s *Store) crash() {
	s.mu.Lock()
	s.abandoned = true
	done := s.done
	s.mu.Unlock()
	s.kick()
	if done != nil {
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		_ = s.db.Close()
		s.db = nil
	}
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
