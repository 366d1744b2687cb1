// Package psitest has fake PSI triggers for the tests of cgroups.PSISet
// users (the partition's stall trigger in pkg/policy, the host-level
// protector in pkg/protect): the test fires and ends them by hand.
package psitest

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/pkg/cgroups"
)

// Source is a PSI trigger driven by the test: Fire delivers a firing,
// End closes it as the kernel's POLLERR would.
type Source struct {
	Spec   cgroups.PSITriggerSpec
	ch     chan time.Time
	once   sync.Once
	mu     sync.Mutex
	closed bool
}

// C delivers the firings.
func (s *Source) C() <-chan time.Time { return s.ch }

// Registration is what was asked for.
func (s *Source) Registration() cgroups.PSIRegistration {
	return cgroups.PSIRegistration{Spec: s.Spec}
}

// Err says why C was closed: the watched cgroup went away.
func (s *Source) Err() error { return cgroups.ErrGone }

// Close records that the user let go of the trigger.
func (s *Source) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// Closed reports whether Close was called.
func (s *Source) Closed() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.closed }

// Fire delivers a firing at at; it blocks until the user receives it.
func (s *Source) Fire(at time.Time) { s.ch <- at }

// End closes C as the kernel does when the watched cgroup is removed.
func (s *Source) End() { s.once.Do(func() { close(s.ch) }) }

// Triggers opens Sources for pressure files that exist (a missing one is
// cgroups.ErrUnsupported, as for the real trigger) and keeps them by path.
type Triggers struct {
	mu      sync.Mutex
	sources map[string][]*Source
	opens   int
	opened  chan string
}

// NewTriggers is an empty Triggers.
func NewTriggers() *Triggers {
	return &Triggers{sources: map[string][]*Source{}, opened: make(chan string, 1024)}
}

// Open is the user's trigger opener.
func (f *Triggers) Open(spec cgroups.PSITriggerSpec) (cgroups.PSISource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens++
	if _, err := os.Stat(spec.Path); err != nil {
		return nil, fmt.Errorf("open %s: %w", spec.Path, cgroups.ErrUnsupported)
	}
	s := &Source{Spec: spec, ch: make(chan time.Time)}
	f.sources[spec.Path] = append(f.sources[spec.Path], s)
	select {
	case f.opened <- spec.Path:
	default: // nobody waits (WaitOpened): never block the user
	}
	return s, nil
}

// Opens is how many times Open was called, failed ones included.
func (f *Triggers) Opens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens
}

// Count is how many sources were opened on path.
func (f *Triggers) Count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sources[path])
}

// Latest is the newest source opened on path.
func (f *Triggers) Latest(t testing.TB, path string) *Source {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ss := f.sources[path]
	if len(ss) == 0 {
		t.Fatalf("no trigger on %s", path)
	}
	return ss[len(ss)-1]
}

// WaitOpened waits up to 5 s for a source opened on path after the
// previous WaitOpened.
func (f *Triggers) WaitOpened(t testing.TB, path string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-f.opened:
			if p == path {
				return
			}
		case <-deadline:
			t.Fatalf("no trigger registered on %s", path)
		}
	}
}
