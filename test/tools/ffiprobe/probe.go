package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Summary is one window of a probe, as written to its -out file.
type Summary struct {
	Probe   string  `json:"probe"`
	Seq     int     `json:"seq"`      // windows written so far (the harness waits for it to change)
	Seconds float64 `json:"seconds"`  // window length
	Count   int     `json:"count"`    // samples
	P50     float64 `json:"p50_us"`   // microseconds
	P99     float64 `json:"p99_us"`   // microseconds
	Max     float64 `json:"max_us"`   // microseconds
	Errors  int     `json:"errors"`   // failed operations (e.g. fsync ENOSPC)
	LastErr string  `json:"last_err"` // the last of them
}

// window collects samples between two SIGUSR1.
type window struct {
	mu      sync.Mutex
	name    string
	out     string
	seq     int
	start   time.Time
	samples []float64 // microseconds
	errors  int
	lastErr string
}

func newWindow(name, out string) (*window, error) {
	if out == "" {
		return nil, errors.New("-out FILE is required")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, fmt.Errorf("-out %s: %w", out, err)
	}
	return &window{name: name, out: out, start: time.Now(), samples: make([]float64, 0, 1<<16)}, nil
}

func (w *window) add(d time.Duration) {
	w.mu.Lock()
	w.samples = append(w.samples, float64(d.Nanoseconds())/1e3)
	w.mu.Unlock()
}

func (w *window) fail(err error) {
	w.mu.Lock()
	w.errors++
	w.lastErr = err.Error()
	w.mu.Unlock()
}

// summarize computes the summary of samples (sorted in place).
func summarize(samples []float64) (p50, p99, maxv float64) {
	if len(samples) == 0 {
		return 0, 0, 0
	}
	sort.Float64s(samples)
	at := func(q float64) float64 {
		i := int(q*float64(len(samples))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(samples) {
			i = len(samples) - 1
		}
		return samples[i]
	}
	return at(0.50), at(0.99), samples[len(samples)-1]
}

// flush writes the current window and starts the next one. The samples are
// swapped out under the lock; sorting and writing happen outside it so the
// probe loop is not held up.
func (w *window) flush() error {
	w.mu.Lock()
	s, errs, last, start := w.samples, w.errors, w.lastErr, w.start
	w.samples = make([]float64, 0, cap(s))
	w.errors, w.lastErr, w.start = 0, "", time.Now()
	w.seq++
	seq := w.seq
	w.mu.Unlock()
	sum := Summary{Probe: w.name, Seq: seq, Seconds: time.Since(start).Seconds(), Count: len(s), Errors: errs, LastErr: last}
	sum.P50, sum.P99, sum.Max = summarize(s)
	b, err := json.Marshal(sum)
	if err != nil {
		return err
	}
	tmp := w.out + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, w.out)
}

// serve flushes the window on every SIGUSR1 until the process ends.
func (w *window) serve() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		for range ch {
			if err := w.flush(); err != nil {
				// A probe that cannot report must say so; the harness sees
				// the seq not changing and reports the probe as missing.
				fmt.Fprintf(os.Stderr, "ffiprobe %s: write %s: %v\n", w.name, w.out, err)
			}
		}
	}()
}

// runTick: a periodic task on absolute deadlines; the sample is how late each
// wake-up is. A wake-up later than one period re-bases the schedule (no burst
// of catch-up ticks that would hide the next stall).
func runTick(args []string) error {
	fs := flag.NewFlagSet("tick", flag.ContinueOnError)
	out := fs.String("out", "", "summary file")
	period := fs.Duration("period", time.Millisecond, "tick period")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *period <= 0 {
		return fmt.Errorf("-period %v: must be positive", *period)
	}
	w, err := newWindow("tick", *out)
	if err != nil {
		return err
	}
	w.serve()
	next := time.Now().Add(*period)
	for {
		time.Sleep(time.Until(next))
		now := time.Now()
		late := now.Sub(next)
		w.add(late)
		next = next.Add(*period)
		if late > *period {
			next = now.Add(*period)
		}
	}
}

// runTouch: keeps a working set resident by writing one byte per page, pass
// after pass; the sample is the pass time (reclaim or swap-in of the set
// shows up as a longer pass). The pause keeps the probe from eating a whole
// vCPU under TCG.
func runTouch(args []string) error {
	fs := flag.NewFlagSet("touch", flag.ContinueOnError)
	out := fs.String("out", "", "summary file")
	pct := fs.Float64("pct", 5, "working set, % of MemTotal")
	pause := fs.Duration("pause", 100*time.Millisecond, "pause between passes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pct <= 0 || *pct > 50 {
		return fmt.Errorf("-pct %v: want 0 < pct <= 50", *pct)
	}
	total, err := memTotal()
	if err != nil {
		return err
	}
	w, err := newWindow("touch", *out)
	if err != nil {
		return err
	}
	set := make([]byte, int64(float64(total)**pct/100))
	w.serve()
	var v byte
	for {
		t := time.Now()
		for i := 0; i < len(set); i += 4096 {
			set[i] = v
		}
		w.add(time.Since(t))
		v++
		time.Sleep(*pause)
	}
}

// runFsync: every period, write a 4 KiB block and fsync the file; the sample
// is write+fsync. Errors (ENOSPC from a filled disk) are counted, not fatal.
func runFsync(args []string) error {
	fs := flag.NewFlagSet("fsync", flag.ContinueOnError)
	out := fs.String("out", "", "summary file")
	path := fs.String("path", "", "file to write and fsync")
	period := fs.Duration("period", 10*time.Millisecond, "period")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("-path FILE is required")
	}
	if *period <= 0 {
		return fmt.Errorf("-period %v: must be positive", *period)
	}
	w, err := newWindow("fsync", *out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*path), 0o755); err != nil {
		return fmt.Errorf("-path %s: %w", *path, err)
	}
	f, err := os.OpenFile(*path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("-path %s: %w", *path, err)
	}
	defer f.Close()
	w.serve()
	buf := make([]byte, 4096)
	var off int64
	for n := 0; ; n++ {
		t := time.Now()
		buf[0] = byte(n)
		// 16 blocks round robin: the file stays small but the blocks change.
		_, err := f.WriteAt(buf, off)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			w.fail(err)
		} else {
			w.add(time.Since(t))
		}
		off = (off + 4096) % (16 * 4096)
		time.Sleep(time.Until(t.Add(*period)))
	}
}

// runRead is the reading ASIL stand-in: every period it reads -size bytes
// at a random aligned offset of -path with O_DIRECT (from the device, never
// from the page cache), recording each read's latency. Its waits are what
// PSI counts as io stall, unlike fsync's wait for the journal commit.
func runRead(args []string) error {
	fs := flag.NewFlagSet("read", flag.ContinueOnError)
	out := fs.String("out", "", "summary file")
	path := fs.String("path", "", "file to read (created with -file-size random bytes when missing)")
	period := fs.Duration("period", 100*time.Millisecond, "period")
	size := fs.Int("size", 16<<10, "bytes per read (a multiple of 4096)")
	fileSize := fs.Int64("file-size", 32<<20, "size of a file it creates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *path == "":
		return errors.New("-path FILE is required")
	case *period <= 0:
		return fmt.Errorf("-period %v: must be positive", *period)
	case *size <= 0 || *size%4096 != 0:
		return fmt.Errorf("-size %d: must be a positive multiple of 4096", *size)
	case *fileSize < int64(*size):
		return fmt.Errorf("-file-size %d: smaller than -size %d", *fileSize, *size)
	}
	w, err := newWindow("read", *out)
	if err != nil {
		return err
	}
	if err := ensureFile(*path, *fileSize); err != nil {
		return err
	}
	f, err := os.OpenFile(*path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("-path %s: %w", *path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	blocks := st.Size() / int64(*size)
	if blocks < 1 {
		return fmt.Errorf("-path %s: %d bytes, smaller than -size %d", *path, st.Size(), *size)
	}
	// O_DIRECT wants an aligned buffer: a page-aligned anonymous mapping.
	buf, err := syscall.Mmap(-1, 0, *size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return err
	}
	w.serve()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for {
		t := time.Now()
		if _, err := f.ReadAt(buf, rng.Int64N(blocks)*int64(*size)); err != nil {
			w.fail(err)
		} else {
			w.add(time.Since(t))
		}
		time.Sleep(time.Until(t.Add(*period)))
	}
}

// ensureFile creates path with size random bytes (synced) unless it is
// there already with at least that size.
func ensureFile(path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() >= size {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("-path %s: %w", path, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-path %s: %w", path, err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(size), 2))
	chunk := make([]byte, 1<<20)
	for done := int64(0); done < size; done += int64(len(chunk)) {
		for i := range chunk {
			chunk[i] = byte(rng.Uint32())
		}
		n := min(int64(len(chunk)), size-done)
		if _, err := f.Write(chunk[:n]); err != nil {
			return fmt.Errorf("-path %s: %w", path, err)
		}
	}
	return f.Sync()
}
