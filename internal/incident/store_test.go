package incident

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openT(t *testing.T, path string, max int) *Store {
	t.Helper()
	s := Open(Options{Path: path, MaxCount: max, OpenTimeout: 200 * time.Millisecond})
	if d, why := s.Degraded(); d {
		t.Fatalf("store degraded: %s", why)
	}
	return s
}

func add(t *testing.T, s *Store, part string, typ Type) Incident {
	t.Helper()
	inc, err := s.Add(Incident{Partition: part, Type: typ, Summary: string(typ) + " of " + part,
		Details: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func ids(incs []Incident) []uint64 {
	out := make([]uint64, 0, len(incs))
	for _, i := range incs {
		out = append(out, i.ID)
	}
	return out
}

func TestStorePersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "incidents.db")
	s := openT(t, path, 10)
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	first, err := s.Add(Incident{Partition: "qm", Type: OOMKill, Summary: "oom", Time: fixed,
		Details: map[string]string{"victim": "bash"}})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != 1 || !first.Time.Equal(fixed) {
		t.Fatalf("first = %+v", first)
	}
	second := add(t, s, "qm", Restart)
	if second.ID != 2 || second.Time.IsZero() {
		t.Fatalf("second = %+v", second)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path, 10)
	defer s.Close()
	if got := s.LastID(); got != 2 {
		t.Fatalf("LastID after reopen = %d, want 2", got)
	}
	all, err := s.List("", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Details["victim"] != "bash" || all[0].Type != OOMKill || !all[0].Time.Equal(fixed) {
		t.Fatalf("after reopen: %+v", all)
	}
	if third := add(t, s, "qm", Stop); third.ID != 3 {
		t.Fatalf("ID after reopen = %d, want 3", third.ID)
	}
}

func TestStoreBoundDropsOldestAndNeverReusesIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incidents.db")
	s := openT(t, path, 3)
	for i := 0; i < 5; i++ {
		add(t, s, "qm", Restart)
	}
	all, _ := s.List("", 0, 0)
	if fmt.Sprint(ids(all)) != "[3 4 5]" {
		t.Fatalf("ids = %v, want [3 4 5]", ids(all))
	}
	s.Close()

	// Reopen with a smaller bound: trimmed at open; IDs continue at 6 even
	// though only 2 records remain.
	s = openT(t, path, 2)
	defer s.Close()
	all, _ = s.List("", 0, 0)
	if fmt.Sprint(ids(all)) != "[4 5]" {
		t.Fatalf("ids = %v, want [4 5]", ids(all))
	}
	if inc := add(t, s, "qm", Restart); inc.ID != 6 {
		t.Fatalf("id = %d, want 6", inc.ID)
	}
}

func TestStorePagingAndFilter(t *testing.T) {
	for _, mode := range []string{"bolt", "memory"} {
		t.Run(mode, func(t *testing.T) {
			var s *Store
			if mode == "bolt" {
				s = openT(t, filepath.Join(t.TempDir(), "i.db"), 100)
			} else {
				s = NewMemory(100)
			}
			defer s.Close()
			for i := 0; i < 10; i++ {
				p := "qm"
				if i%3 == 0 {
					p = "other"
				}
				add(t, s, p, Restart)
			}
			// other: 1 4 7 10; qm: 2 3 5 6 8 9
			cases := []struct {
				part  string
				after uint64
				limit int
				want  string
			}{
				{"", 0, 0, "[1 2 3 4 5 6 7 8 9 10]"},
				{"", 0, 4, "[1 2 3 4]"},
				{"", 4, 4, "[5 6 7 8]"},
				{"", 8, 4, "[9 10]"},
				{"", 10, 4, "[]"},
				{"", ^uint64(0), 4, "[]"},
				{"qm", 0, 3, "[2 3 5]"},
				{"qm", 5, 3, "[6 8 9]"},
				{"other", 0, 0, "[1 4 7 10]"},
				{"nope", 0, 0, "[]"},
			}
			for _, c := range cases {
				got, err := s.List(c.part, c.after, c.limit)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(ids(got)) != c.want {
					t.Errorf("List(%q,%d,%d) = %v, want %s", c.part, c.after, c.limit, ids(got), c.want)
				}
			}
		})
	}
}

func TestStoreCorruptFileDegradesToMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incidents.db")
	garbage := []byte(strings.Repeat("this is not a bbolt database\x00\xff", 1000))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	s := Open(Options{Path: path, OpenTimeout: 200 * time.Millisecond})
	defer s.Close()
	d, why := s.Degraded()
	if !d || why == "" {
		t.Fatalf("Degraded() = %v, %q; want degraded with a reason", d, why)
	}
	t.Logf("reason: %s", why)
	// Keeps working in memory.
	if inc := add(t, s, "qm", Restart); inc.ID != 1 {
		t.Fatalf("id = %d", inc.ID)
	}
	if got, _ := s.List("", 0, 0); len(got) != 1 {
		t.Fatalf("list = %+v", got)
	}
	// The damaged file is left alone for inspection.
	b, _ := os.ReadFile(path)
	if string(b) != string(garbage) {
		t.Fatal("damaged file was modified")
	}
}

func TestStoreTruncatedFileDegrades(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incidents.db")
	s := openT(t, path, 10)
	add(t, s, "qm", Restart)
	s.Close()
	b, _ := os.ReadFile(path)
	// Keep the first page, smash the second meta page and beyond.
	for i := 4096; i < len(b); i++ {
		b[i] = 0xA5
	}
	for i := 16; i < 4096; i++ {
		b[i] = 0x5A
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s = Open(Options{Path: path, OpenTimeout: 200 * time.Millisecond})
	defer s.Close()
	if d, why := s.Degraded(); !d {
		t.Fatal("want degraded")
	} else {
		t.Logf("reason: %s", why)
	}
	add(t, s, "qm", Restart)
}

func TestStoreUnwritableDirectory(t *testing.T) {
	t.Run("parent is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		s := Open(Options{Path: filepath.Join(f, "incidents.db")})
		defer s.Close()
		if d, why := s.Degraded(); !d || why == "" {
			t.Fatalf("Degraded() = %v, %q", d, why)
		}
		if inc := add(t, s, "qm", Restart); inc.ID != 1 {
			t.Fatal(inc)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		dir := t.TempDir()
		if os.Geteuid() == 0 {
			// root ignores permission bits: use a read-only mount.
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a read-only tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", dir).Run() })
		} else {
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
		}
		s := Open(Options{Path: filepath.Join(dir, "incidents.db")})
		defer s.Close()
		d, why := s.Degraded()
		if !d || !strings.Contains(why, "read-only") && !strings.Contains(why, "permission") {
			t.Fatalf("Degraded() = %v, %q", d, why)
		}
		t.Logf("reason: %s", why)
		add(t, s, "qm", Restart)
		if s.LastID() != 1 {
			t.Fatal(s.LastID())
		}
	})
}

func TestStoreLockedFileDoesNotHang(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incidents.db")
	// Another holder of the lock (bbolt flocks the file; a second open
	// from this process on a separate fd contends like another process).
	other, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	start := time.Now()
	s := Open(Options{Path: path, OpenTimeout: 150 * time.Millisecond})
	defer s.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Open took %s", el)
	}
	d, why := s.Degraded()
	if !d || !strings.Contains(why, "locked") {
		t.Fatalf("Degraded() = %v, %q", d, why)
	}
}

func TestStoreConcurrentAdds(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "i.db"), 10000)
	defer s.Close()
	const workers, per = 8, 50
	var wg sync.WaitGroup
	seen := make(chan uint64, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				inc, err := s.Add(Incident{Partition: fmt.Sprintf("p%d", w), Type: Restart})
				if err != nil {
					t.Error(err)
					return
				}
				seen <- inc.ID
				if _, err := s.List("", 0, 10); err != nil {
					t.Error(err)
				}
				s.LastID()
			}
		}(w)
	}
	wg.Wait()
	close(seen)
	uniq := map[uint64]bool{}
	for id := range seen {
		if uniq[id] {
			t.Fatalf("duplicate id %d", id)
		}
		uniq[id] = true
	}
	if len(uniq) != workers*per || s.LastID() != workers*per {
		t.Fatalf("got %d ids, last %d", len(uniq), s.LastID())
	}
	all, _ := s.List("", 0, 0)
	for i, inc := range all {
		if inc.ID != uint64(i+1) {
			t.Fatalf("list not in ID order at %d: %d", i, inc.ID)
		}
	}
}

// A write failing after a good open (disk gone, file closed under us):
// the incident is kept in memory, the store reports degraded, IDs go on.
func TestStoreWriteFailureDegrades(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "i.db"), 10)
	add(t, s, "qm", Restart)
	add(t, s, "qm", Restart)
	s.mu.Lock()
	s.db.Close() // simulate the database becoming unusable
	s.mu.Unlock()
	inc, err := s.Add(Incident{Partition: "qm", Type: OOMKill})
	if err == nil {
		t.Fatal("want a persistence error")
	}
	if inc.ID != 3 {
		t.Fatalf("id = %d, want 3", inc.ID)
	}
	if d, why := s.Degraded(); !d || !strings.Contains(why, "persist incident") {
		t.Fatalf("Degraded() = %v, %q", d, why)
	}
	if inc := add(t, s, "qm", Stop); inc.ID != 4 {
		t.Fatalf("id = %d", inc.ID)
	}
	if got, _ := s.List("", 0, 0); len(got) < 2 || got[len(got)-1].ID != 4 {
		t.Fatalf("list = %v", ids(got))
	}
}
