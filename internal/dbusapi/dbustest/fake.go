// Package dbustest holds a fake dbusapi.Backend shared by the tests of
// the D-Bus server (internal/dbusapi) and of its client (internal/ctl).
package dbustest

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/incident"
)

// FakeBackend is a supervisor stand-in: partitions in a map, calls
// recorded, incidents in a real incident.Store.
type FakeBackend struct {
	mu     sync.Mutex
	parts  map[string]dbusapi.PartitionInfo
	calls  []string
	status string
	// Store holds the incidents. Replace it only before serving.
	Store *incident.Store
	// OnReload, when set, runs inside Reload (to change the partition set).
	OnReload func(f *FakeBackend)
}

var _ dbusapi.Backend = (*FakeBackend)(nil)

// NewFakeBackend returns a backend with two partitions: "qm" (active,
// running) and "broken" (failed, start limit hit), status "up", and
// incidents in store (a new in-memory store when nil).
func NewFakeBackend(store *incident.Store) *FakeBackend {
	if store == nil {
		store = incident.NewMemory(1000)
	}
	f := &FakeBackend{parts: map[string]dbusapi.PartitionInfo{}, status: "up", Store: store}
	f.parts["qm"] = dbusapi.PartitionInfo{
		Name: "qm", ContainerID: "c0ffee", ActiveState: "active", SubState: "running",
		Result: "success", ControlGroup: "/machine.slice/libpod-c0ffee.scope", MainPID: 4242,
		MemoryCurrent: 100 << 20, MemoryHigh: math.MaxUint64, MemoryMax: 2 << 30,
		OOMScoreAdjust: 500, StateChangeTimestamp: 1700000000000000,
	}
	f.parts["broken"] = dbusapi.PartitionInfo{Name: "broken", ActiveState: "failed", SubState: "dead",
		Result: "start-limit-hit", MemoryHigh: math.MaxUint64, MemoryMax: math.MaxUint64, OOMScoreAdjust: 500}
	return f
}

// Set adds or replaces partition p.
func (f *FakeBackend) Set(p dbusapi.PartitionInfo) {
	f.mu.Lock()
	f.parts[p.Name] = p
	f.mu.Unlock()
}

// Delete removes a partition.
func (f *FakeBackend) Delete(name string) {
	f.mu.Lock()
	delete(f.parts, name)
	f.mu.Unlock()
}

// SetStatus sets what Status returns.
func (f *FakeBackend) SetStatus(s string) {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
}

// AddIncident records an incident (with details k=v) in the store.
func (f *FakeBackend) AddIncident(t testing.TB, partition string, typ incident.Type, summary string) incident.Incident {
	t.Helper()
	inc, err := f.Store.Add(incident.Incident{Partition: partition, Type: typ, Summary: summary,
		Details: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func (f *FakeBackend) record(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

// Calls lists the mutating calls that reached the backend, as
// "Method [args] partition" (and "Reload").
func (f *FakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *FakeBackend) Partitions() []dbusapi.PartitionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]dbusapi.PartitionInfo, 0, len(f.parts))
	for _, p := range f.parts {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *FakeBackend) Partition(name string) (dbusapi.PartitionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.parts[name]
	if !ok {
		return dbusapi.PartitionInfo{}, apierr.ErrNoSuchPartition
	}
	return p, nil
}

func (f *FakeBackend) op(method, name string, check func(p dbusapi.PartitionInfo) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.parts[name]
	if !ok {
		return apierr.ErrNoSuchPartition
	}
	if check != nil {
		if err := check(p); err != nil {
			return err
		}
	}
	f.record("%s %s", method, name)
	return nil
}

func notFailed(p dbusapi.PartitionInfo) error {
	if p.ActiveState == "failed" {
		return apierr.ErrStartLimitHit
	}
	return nil
}

func running(p dbusapi.PartitionInfo) error {
	if p.ActiveState != "active" {
		return apierr.ErrNotRunning
	}
	return nil
}

func (f *FakeBackend) Start(n string) error       { return f.op("Start", n, notFailed) }
func (f *FakeBackend) Stop(n string) error        { return f.op("Stop", n, running) }
func (f *FakeBackend) Restart(n string) error     { return f.op("Restart", n, notFailed) }
func (f *FakeBackend) Freeze(n string) error      { return f.op("Freeze", n, running) }
func (f *FakeBackend) Thaw(n string) error        { return f.op("Thaw", n, running) }
func (f *FakeBackend) ResetFailed(n string) error { return f.op("ResetFailed", n, nil) }
func (f *FakeBackend) SetMemoryHigh(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryHigh %d %v", b, rt), n, nil)
}

func (f *FakeBackend) SetMemoryMax(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryMax %d %v", b, rt), n, nil)
}

func (f *FakeBackend) SetOOMScoreAdjust(n string, v int32, rt bool) error {
	return f.op(fmt.Sprintf("SetOOMScoreAdjust %d %v", v, rt), n, nil)
}

func (f *FakeBackend) Reload() error {
	f.mu.Lock()
	f.record("Reload")
	hook := f.OnReload
	f.mu.Unlock()
	if hook != nil {
		hook(f)
	}
	return nil
}

func (f *FakeBackend) Status() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *FakeBackend) Incidents(p string, after uint64, limit int) ([]incident.Incident, error) {
	return f.Store.List(p, after, limit)
}

func (f *FakeBackend) LastIncidentID() uint64 { return f.Store.LastID() }

// IncidentStats reports the store's pending count; drops and coalescing
// are the recorder's, which the fake has none of.
func (f *FakeBackend) IncidentStats() dbusapi.IncidentStats {
	return dbusapi.IncidentStats{Pending: uint32(f.Store.Stats().Pending)}
}
