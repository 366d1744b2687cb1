package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
)

// memTotal is MemTotal of /proc/meminfo in bytes.
func memTotal() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	n := hostinfo.ParseMemTotal(b)
	if n == 0 {
		return 0, errors.New("/proc/meminfo has no MemTotal")
	}
	return int64(n), nil
}

// parseSize reads "256M", "1G", "4096": qmd's size syntax (bytes; K/M/G/T
// are powers of 1024), a positive byte count.
func parseSize(s string) (int64, error) {
	v, err := config.ParseSize(s)
	if err != nil || v.Percent > 0 || v.Bytes == 0 || v.Bytes > math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	return int64(v.Bytes), nil
}

// runMemHog maps -pct % of RAM anonymously, writes every page and holds it
// until killed: the fastest way to take memory under TCG (perl's string
// copy takes minutes for 90 %). Outside the Go heap, so the GC never scans
// or frees it.
func runMemHog(args []string) error {
	fs := flag.NewFlagSet("memhog", flag.ContinueOnError)
	pct := fs.Float64("pct", 90, "memory to take, % of MemTotal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pct <= 0 || *pct > 200 {
		return fmt.Errorf("-pct %v: want 0 < pct <= 200", *pct)
	}
	total, err := memTotal()
	if err != nil {
		return err
	}
	want := int64(float64(total) * *pct / 100)
	const chunk = 64 << 20
	var held [][]byte
	for got := int64(0); got < want; got += chunk {
		b, err := syscall.Mmap(-1, 0, chunk, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			return fmt.Errorf("mmap after %d MiB: %w", got>>20, err)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
	}
	fmt.Printf("memhog: holding %d MiB\n", int64(len(held))*chunk>>20)
	for {
		time.Sleep(time.Hour)
	}
}

// runCPUHog spins on every CPU (or -workers) until killed.
func runCPUHog(args []string) error {
	fs := flag.NewFlagSet("cpuhog", flag.ContinueOnError)
	workers := fs.Int("workers", 0, "spinning goroutines (0: one per CPU)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	n := *workers
	if n <= 0 {
		n = runtime.NumCPU()
	}
	runtime.GOMAXPROCS(n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(i)
			for {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}()
	}
	wg.Wait()
	return nil
}

// runIOHog: random 4 KiB writes over a file of -size, fdatasync every 16
// writes so the IO reaches the device instead of staying in the page cache.
func runIOHog(args []string) error {
	fs := flag.NewFlagSet("iohog", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the file")
	sizeS := fs.String("size", "256M", "file size")
	workers := fs.Int("workers", 2, "writers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	size, err := parseSize(*sizeS)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	if *workers < 1 {
		return fmt.Errorf("-workers %d: want at least 1", *workers)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(*dir, "ffi-iohog.dat"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	blocks := size / 4096
	errc := make(chan error, *workers)
	for i := 0; i < *workers; i++ {
		go func() {
			buf := make([]byte, 4096)
			for n := 0; ; n++ {
				buf[0] = byte(n)
				if _, err := f.WriteAt(buf, rand.Int64N(blocks)*4096); err != nil {
					errc <- err
					return
				}
				if n%16 == 15 {
					if err := syscall.Fdatasync(int(f.Fd())); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	return <-errc
}

// runThrash writes a file of -pct % of RAM, then reads it again and again:
// the page cache churns through more than the memory there is.
func runThrash(args []string) error {
	fs := flag.NewFlagSet("thrash", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the file")
	pct := fs.Float64("pct", 100, "file size, % of MemTotal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	if *pct <= 0 || *pct > 400 {
		return fmt.Errorf("-pct %v: want 0 < pct <= 400", *pct)
	}
	total, err := memTotal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(*dir, "ffi-thrash.dat")
	size := int64(float64(total) * *pct / 100)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	for {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil {
				return err
			}
		}
	}
}

// runFill writes 1 MiB blocks into a new file until the filesystem is full
// (ENOSPC/EDQUOT), prints how much it wrote, then holds the file open until
// killed: the space stays taken for the rest of the window.
func runFill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(*dir, "ffi-fill.dat"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	t := time.Now()
	for {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			fmt.Printf("fill: wrote %d MiB in %.1fs, then: %v\n", written>>20, time.Since(t).Seconds(), err)
			break
		}
		if written%(64<<20) == 0 {
			// Make the blocks real on the device, as a logger would.
			if err := f.Sync(); err != nil {
				fmt.Printf("fill: fsync after %d MiB: %v\n", written>>20, err)
				break
			}
		}
	}
	// Hold the space until the harness kills us (a bare select{} would be a
	// deadlock to the Go runtime: no other goroutine).
	for {
		time.Sleep(time.Hour)
	}
}
