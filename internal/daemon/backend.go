//go:build remote

package daemon

import (
	"math"
	"sync"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// backend adapts the supervisor (and the incident store) to the D-Bus
// server's Backend. It holds no state of its own beyond the reload hook.
type backend struct {
	sup    *supervisor.Supervisor
	store  *incident.Store
	rec    *incident.Recorder
	reload func() error
	prot   *protect.Protector // host-level protection (Manager.Protected); may be nil

	mu       sync.Mutex
	degraded string // why qmd is degraded ("" = up)
}

var _ dbusapi.Backend = (*backend)(nil)

func infoOf(st supervisor.Status) dbusapi.PartitionInfo {
	active, sub := st.ActiveSub()
	info := dbusapi.PartitionInfo{
		Name:                 st.Name,
		ContainerID:          st.ContainerID,
		ActiveState:          active,
		SubState:             sub,
		Result:               st.Result,
		ControlGroup:         st.CgroupPath,
		MainPID:              uint32(max(st.MainPID, 0)),
		MemoryCurrent:        st.MemoryCurrent,
		MemoryHigh:           st.MemoryHigh,
		MemoryMax:            st.MemoryMax,
		OOMScoreAdjust:       int32(st.OOMScoreAdj),
		NRestarts:            st.NRestarts,
		NOOMKills:            st.NOOMKills,
		StateChangeTimestamp: uint64(max(st.Changed.UnixMicro(), 0)),
		Conditions:           st.Conditions.List(),
		PodmanLatencyUSec:    uint64(max(st.PodmanLatency.Microseconds(), 0)),
	}
	if info.Result == "" {
		info.Result = "success"
	}
	if info.MemoryHigh == 0 {
		info.MemoryHigh = math.MaxUint64
	}
	if info.MemoryMax == 0 {
		info.MemoryMax = math.MaxUint64
	}
	return info
}

func (b *backend) Partitions() []dbusapi.PartitionInfo {
	var out []dbusapi.PartitionInfo
	for _, st := range b.sup.Statuses() {
		out = append(out, infoOf(st))
	}
	return out
}

func (b *backend) Partition(name string) (dbusapi.PartitionInfo, error) {
	st, err := b.sup.Status(name)
	if err != nil {
		return dbusapi.PartitionInfo{}, err
	}
	return infoOf(st), nil
}

func (b *backend) Start(name string) error       { return b.sup.Start(name) }
func (b *backend) Stop(name string) error        { return b.sup.Stop(name) }
func (b *backend) Restart(name string) error     { return b.sup.Restart(name) }
func (b *backend) Freeze(name string) error      { return b.sup.Freeze(name) }
func (b *backend) Thaw(name string) error        { return b.sup.Thaw(name) }
func (b *backend) ResetFailed(name string) error { return b.sup.ResetFailed(name) }

func (b *backend) SetMemoryHigh(name string, bytes uint64, runtime bool) error {
	return b.sup.SetMemoryHigh(name, bytes, runtime)
}

func (b *backend) SetMemoryMax(name string, bytes uint64, runtime bool) error {
	return b.sup.SetMemoryMax(name, bytes, runtime)
}

func (b *backend) SetOOMScoreAdjust(name string, value int32, runtime bool) error {
	return b.sup.SetOOMScoreAdjust(name, int(value), runtime)
}

func (b *backend) Reload() error { return b.reload() }

func (b *backend) Status() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.degraded != "" || !b.sup.PodmanUp() {
		return "degraded"
	}
	if bad, _ := b.store.Degraded(); bad {
		return "degraded" // incidents kept in memory only (a full disk, a failing write)
	}
	return "up"
}

func (b *backend) setDegraded(why string) {
	b.mu.Lock()
	b.degraded = why
	b.mu.Unlock()
}

func (b *backend) Incidents(partition string, afterID uint64, limit int) ([]incident.Incident, error) {
	return b.store.List(partition, afterID, limit)
}

func (b *backend) LastIncidentID() uint64 { return b.store.LastID() }

func (b *backend) IncidentStats() dbusapi.IncidentStats {
	st := b.rec.Stats()
	return dbusapi.IncidentStats{Dropped: st.SubscriberDrops, Coalesced: st.Coalesced, Pending: uint32(max(st.Pending, 0))}
}
