package dbusapi

import "github.com/containers/qmd/internal/incident"

// PartitionInfo is a snapshot of one partition, as the Partition object
// shows it.
type PartitionInfo struct {
	Name, ContainerID, ActiveState, SubState, Result, ControlGroup string
	MainPID                                                        uint32
	MemoryCurrent, MemoryHigh, MemoryMax                           uint64 // math.MaxUint64 = infinity
	OOMScoreAdjust                                                 int32
	NRestarts, NOOMKills                                           uint32
	StateChangeTimestamp                                           uint64 // usec since epoch
	// Conditions are the independent flags on the lifecycle state
	// (throttled, frozen, cpu-limited, podman-degraded), sorted.
	Conditions []string
	// PodmanLatencyUSec is how long the partition's last Podman operation took.
	PodmanLatencyUSec uint64
}

// Backend is what the server delegates to (the supervisor satisfies it).
// Every method returns promptly: long work runs asynchronously and shows
// up through PartitionChanged / IncidentAdded. Errors are the apierr
// values (matched with errors.Is).
type Backend interface {
	Partitions() []PartitionInfo
	Partition(name string) (PartitionInfo, error) // apierr.ErrNoSuchPartition
	Start(name string) error
	Stop(name string) error
	Restart(name string) error
	Freeze(name string) error
	Thaw(name string) error
	ResetFailed(name string) error
	SetMemoryHigh(name string, bytes uint64, runtime bool) error
	SetMemoryMax(name string, bytes uint64, runtime bool) error
	SetOOMScoreAdjust(name string, value int32, runtime bool) error
	Reload() error
	Status() string // "up" | "degraded"
	Incidents(partition string, afterID uint64, limit int) ([]incident.Incident, error)
	LastIncidentID() uint64
	IncidentStats() IncidentStats
}

// IncidentStats are the incident recorder's counters, as Manager
// properties: what operators lost or what was folded together.
type IncidentStats struct {
	// Dropped counts incidents a subscriber (journal line, IncidentNew
	// signal) missed because it was too slow; the store still has them.
	Dropped uint64
	// Coalesced counts repeats folded into an earlier record (its details
	// count/first/last say how many and when).
	Coalesced uint64
	// Pending counts incidents not yet written to disk.
	Pending uint32
}
