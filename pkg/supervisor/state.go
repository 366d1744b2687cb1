package supervisor

import "time"

// State is a partition's lifecycle state.
type State string

// States (ARCHITECTURE.md "Partition states").
const (
	Inactive   State = "inactive"
	Starting   State = "starting"
	Running    State = "running"
	Restarting State = "restarting"
	Stopping   State = "stopping"
	Failed     State = "failed"
	Throttled  State = "throttled" // running, memory.high lowered by pressure
	Frozen     State = "frozen"    // running, cgroup frozen
)

// ActiveSub maps a state to systemd's words, as the D-Bus API reports it.
func (s State) ActiveSub() (active, sub string) {
	switch s {
	case Running:
		return "active", "running"
	case Throttled:
		return "active", "throttled"
	case Frozen:
		return "active", "frozen"
	case Starting:
		return "activating", "starting"
	case Restarting:
		return "activating", "restarting"
	case Stopping:
		return "deactivating", "stopping"
	case Failed:
		return "failed", "dead"
	}
	return "inactive", "dead"
}

// Status is a snapshot of one partition, safe to hand to other goroutines.
type Status struct {
	Name        string
	State       State
	Result      string // success, exit-code, start-limit-hit, name-conflict, create-failed, ...
	ContainerID string
	MainPID     int
	CgroupPath  string
	NRestarts   uint32
	// Memory as the resource policy last read it (0 = unknown).
	MemoryCurrent, MemoryHigh, MemoryMax uint64
	NOOMKills                            uint32
	// Drift is set when the running container was created from another
	// configuration; it is recreated at its next restart.
	Drift       bool
	LastExit    int32
	OOMScoreAdj int
	Changed     time.Time
	PodmanUp    bool
}

// Change is published on every state change.
type Change struct {
	Status Status
	Reason string
}
