package incident

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
)

var (
	bucketIncidents = []byte("incidents")
	bucketMeta      = []byte("meta")
	keyLastID       = []byte("last_id")
)

// Options configure a Store. The zero value means: DefaultPath,
// DefaultMaxCount, DefaultOpenTimeout, time.Now.
type Options struct {
	Path        string
	MaxCount    int
	OpenTimeout time.Duration
	Now         func() time.Time
}

// Store keeps incidents durably in an embedded bbolt database, bounded to
// MaxCount records (oldest dropped first). IDs are assigned by Add, are
// monotonic and persisted: they continue across restarts and are never
// reused, even after old incidents were dropped.
//
// When the database cannot be used (damaged file, unwritable directory,
// lock held elsewhere, a write failing later) the Store keeps working in
// memory and Degraded reports why, so that qmd keeps supervising.
//
// A Store is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	db       *bolt.DB // nil when degraded
	path     string
	max      int
	now      func() time.Time
	lastID   uint64
	count    int        // records in db (when db != nil)
	mem      []Incident // records when degraded, in ID order
	degraded string
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
	s := &Store{path: opts.Path, max: opts.MaxCount, now: opts.Now}
	if err := s.open(opts.OpenTimeout); err != nil {
		s.degrade(fmt.Errorf("open incident store %s: %w", opts.Path, err))
	}
	return s
}

// NewMemory returns a store that lives in memory only (tests, or qmd run
// with persistence disabled). It is not reported as degraded.
func NewMemory(maxCount int) *Store {
	if maxCount <= 0 {
		maxCount = DefaultMaxCount
	}
	return &Store{max: maxCount, now: time.Now}
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
		s.count = n
		return s.trim(inc)
	})
	if err != nil {
		_ = db.Close()
		return err
	}
	s.db = db
	return nil
}

// degrade switches to memory. Called with s.mu held (or before s is shared).
func (s *Store) degrade(err error) {
	if s.db != nil {
		// Keep what we can still read so that List does not go empty.
		if recs, lerr := s.listDB("", 0, s.max); lerr == nil {
			s.mem = recs
		}
		_ = s.db.Close()
		s.db = nil
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
// incident. An error means the incident could not be persisted: it was
// kept in memory and the store is now degraded.
func (s *Store) Add(inc Incident) (Incident, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inc.Time.IsZero() {
		inc.Time = s.now()
	}
	inc.Details = cloneDetails(inc.Details)
	if s.db != nil {
		stored, err := s.addDB(inc)
		if err == nil {
			return stored, nil
		}
		err = fmt.Errorf("persist incident: %w", err)
		s.degrade(err)
		inc = s.addMem(inc)
		return inc, err
	}
	return s.addMem(inc), nil
}

func (s *Store) addMem(inc Incident) Incident {
	s.lastID++
	inc.ID = s.lastID
	s.mem = append(s.mem, inc)
	if over := len(s.mem) - s.max; over > 0 {
		s.mem = append(s.mem[:0:0], s.mem[over:]...)
	}
	return inc
}

func (s *Store) addDB(inc Incident) (_ Incident, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()
	id := s.lastID + 1
	inc.ID = id
	val, err := json.Marshal(inc)
	if err != nil {
		return inc, err
	}
	added := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		if err := b.Put(idKey(id), val); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyLastID, idKey(id)); err != nil {
			return err
		}
		s.count++
		added = true
		return s.trim(b)
	})
	if err != nil {
		if added {
			s.count-- // the transaction was rolled back
		}
		return inc, err
	}
	s.lastID = id
	return inc, nil
}

// trim drops the oldest records beyond the bound. Runs inside an update.
func (s *Store) trim(b *bolt.Bucket) error {
	c := b.Cursor()
	for s.count > s.max {
		k, _ := c.First()
		if k == nil {
			s.count = 0
			return nil
		}
		if err := c.Delete(); err != nil {
			return err
		}
		s.count--
	}
	return nil
}

// List returns up to limit incidents with ID > afterID, in ID order, of one
// partition ("" = all). limit <= 0 means no limit.
func (s *Store) List(partition string, afterID uint64, limit int) ([]Incident, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		recs, err := s.listDB(partition, afterID, limit)
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
		inc := s.mem[i]
		inc.Details = cloneDetails(inc.Details)
		out = append(out, inc)
	}
	return out, nil
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

// LastID is the highest ID assigned so far (0 when none).
func (s *Store) LastID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Close closes the database. The store must not be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("close incident store: %w", err)
	}
	return nil
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
