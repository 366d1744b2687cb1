// Package incidenttest has an in-memory incident.Sink for tests.
package incidenttest

import (
	"sync"

	"github.com/containers/qmd/internal/incident"
)

// Recorder keeps every incident it is given, numbering them from 1. It is
// safe for concurrent use.
type Recorder struct {
	// OnRecord, when set, runs after each incident (tests wake waiters).
	OnRecord func(incident.Incident)

	mu   sync.Mutex
	incs []incident.Incident
}

// Record implements incident.Sink.
func (r *Recorder) Record(i incident.Incident) incident.Incident {
	r.mu.Lock()
	i.ID = uint64(len(r.incs) + 1)
	r.incs = append(r.incs, i)
	r.mu.Unlock()
	if r.OnRecord != nil {
		r.OnRecord(i)
	}
	return i
}

// All returns a copy of the incidents so far.
func (r *Recorder) All() []incident.Incident {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]incident.Incident(nil), r.incs...)
}

// Count returns how many incidents of type t were recorded.
func (r *Recorder) Count(t incident.Type) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, i := range r.incs {
		if i.Type == t {
			n++
		}
	}
	return n
}
