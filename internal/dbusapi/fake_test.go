package dbusapi

import (
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/incident"
)

// fakeBackend is a supervisor stand-in: partitions in a map, calls
// recorded, incidents in a real incident.Store.
type fakeBackend struct {
	mu     sync.Mutex
	parts  map[string]PartitionInfo
	calls  []string
	status string
	store  *incident.Store
	// onReload, when set, runs inside Reload (to change the partition set).
	onReload func(f *fakeBackend)
}

func newFake(store *incident.Store) *fakeBackend {
	if store == nil {
		store = incident.NewMemory(1000)
	}
	f := &fakeBackend{parts: map[string]PartitionInfo{}, status: "up", store: store}
	f.parts["qm"] = PartitionInfo{
		Name: "qm", ContainerID: "c0ffee", ActiveState: "active", SubState: "running",
		Result: "success", ControlGroup: "/machine.slice/libpod-c0ffee.scope", MainPID: 4242,
		MemoryCurrent: 100 << 20, MemoryHigh: math.MaxUint64, MemoryMax: 2 << 30,
		OOMScoreAdjust: 500, StateChangeTimestamp: 1700000000000000,
	}
	f.parts["broken"] = PartitionInfo{Name: "broken", ActiveState: "failed", SubState: "dead",
		Result: "start-limit-hit", MemoryHigh: math.MaxUint64, MemoryMax: math.MaxUint64, OOMScoreAdjust: 500}
	return f
}

func (f *fakeBackend) set(p PartitionInfo) {
	f.mu.Lock()
	f.parts[p.Name] = p
	f.mu.Unlock()
}

func (f *fakeBackend) record(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Partitions() []PartitionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PartitionInfo, 0, len(f.parts))
	for _, p := range f.parts {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeBackend) Partition(name string) (PartitionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.parts[name]
	if !ok {
		return PartitionInfo{}, apierr.ErrNoSuchPartition
	}
	return p, nil
}

func (f *fakeBackend) op(method, name string, check func(p PartitionInfo) error) error {
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

func notFailed(p PartitionInfo) error {
	if p.ActiveState == "failed" {
		return apierr.ErrStartLimitHit
	}
	return nil
}

func running(p PartitionInfo) error {
	if p.ActiveState != "active" {
		return apierr.ErrNotRunning
	}
	return nil
}

func (f *fakeBackend) Start(n string) error       { return f.op("Start", n, notFailed) }
func (f *fakeBackend) Stop(n string) error        { return f.op("Stop", n, running) }
func (f *fakeBackend) Restart(n string) error     { return f.op("Restart", n, notFailed) }
func (f *fakeBackend) Freeze(n string) error      { return f.op("Freeze", n, running) }
func (f *fakeBackend) Thaw(n string) error        { return f.op("Thaw", n, running) }
func (f *fakeBackend) ResetFailed(n string) error { return f.op("ResetFailed", n, nil) }
func (f *fakeBackend) SetMemoryHigh(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryHigh %d %v", b, rt), n, nil)
}

func (f *fakeBackend) SetMemoryMax(n string, b uint64, rt bool) error {
	return f.op(fmt.Sprintf("SetMemoryMax %d %v", b, rt), n, nil)
}

func (f *fakeBackend) SetOOMScoreAdjust(n string, v int32, rt bool) error {
	return f.op(fmt.Sprintf("SetOOMScoreAdjust %d %v", v, rt), n, nil)
}

func (f *fakeBackend) Reload() error {
	f.mu.Lock()
	f.record("Reload")
	hook := f.onReload
	f.mu.Unlock()
	if hook != nil {
		hook(f)
	}
	return nil
}

func (f *fakeBackend) Status() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeBackend) Incidents(p string, after uint64, limit int) ([]incident.Incident, error) {
	return f.store.List(p, after, limit)
}

func (f *fakeBackend) LastIncidentID() uint64 { return f.store.LastID() }
