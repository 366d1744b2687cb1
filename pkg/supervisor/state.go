package supervisor

import (
	"sort"
	"time"
)

// State is a partition's lifecycle state, in systemd's words
// (ActiveState). What else is true of a running partition (throttled,
// frozen, ...) is a Condition: independent flags, not more states, so that
// a partition can be active, throttled and frozen at once and every reader
// sees all of it.
type State string

// Lifecycle states (ARCHITECTURE.md "Partition state").
const (
	Inactive     State = "inactive"     // not running and not meant to (stopped, or restart policy done)
	Activating   State = "activating"   // being started, or waiting to be restarted
	Active       State = "active"       // the partition's init runs
	Deactivating State = "deactivating" // being stopped (or killed for a restart)
	Failed       State = "failed"       // start limit hit, stop failed, name conflict: until ResetFailed
)

// Condition is an independent flag on a partition.
type Condition string

// Conditions.
const (
	// Throttled: memory.high is below the configured value because of
	// host or ASIL memory pressure.
	Throttled Condition = "throttled"
	// Frozen: the partition's cgroup is frozen.
	Frozen Condition = "frozen"
	// CPULimited: a cpu.max quota was applied because of ASIL CPU pressure.
	CPULimited Condition = "cpu-limited"
	// IOLimited: the partition's IO bandwidth limits were lowered because
	// of ASIL IO pressure.
	IOLimited Condition = "io-limited"
	// PodmanDegraded: Podman is unreachable, or its calls for this
	// partition time out; qmd keeps retrying.
	PodmanDegraded Condition = "podman-degraded"
)

// Conditions is a set of conditions.
type Conditions map[Condition]string // condition -> why

// Has reports whether c is set.
func (cs Conditions) Has(c Condition) bool { _, ok := cs[c]; return ok }

// List returns the set conditions in a stable order.
func (cs Conditions) List() []string {
	out := make([]string, 0, len(cs))
	for c := range cs {
		out = append(out, string(c))
	}
	sort.Strings(out)
	return out
}

func (cs Conditions) clone() Conditions {
	if len(cs) == 0 {
		return nil
	}
	out := make(Conditions, len(cs))
	for k, v := range cs {
		out[k] = v
	}
	return out
}

// Sub-states (SubState): what the lifecycle state is doing, derived from
// the state and the conditions.
const (
	SubRunning    = "running"
	SubThrottled  = "throttled"
	SubFrozen     = "frozen"
	SubStarting   = "starting"
	SubRestarting = "restarting"
	SubStopping   = "stopping"
	SubDead       = "dead"
)

// Status is a snapshot of one partition, safe to hand to other goroutines
// (the partition loop publishes a fresh copy after every change).
type Status struct {
	Name       string
	State      State
	SubState   string
	Conditions Conditions
	Result     string // success, exit-code, start-limit-hit, name-conflict, start-failed, stop-failed, ...
	// Reason is the last transition's reason, as StateChanged reports it.
	Reason      string
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
	// PodmanLatency is how long the last Podman operation of this
	// partition took (a timed-out one counts its deadline).
	PodmanLatency time.Duration
}

// Running reports whether the partition's init runs (ActiveState active).
func (s Status) Running() bool { return s.State == Active }

// ActiveSub maps the status to systemd's words, as the D-Bus API reports it.
func (s Status) ActiveSub() (active, sub string) {
	return string(s.State), s.SubState
}

// deriveSub computes SubState from the lifecycle state and conditions.
func deriveSub(st State, cs Conditions, restarting bool) string {
	switch st {
	case Active:
		switch {
		case cs.Has(Frozen):
			return SubFrozen
		case cs.Has(Throttled), cs.Has(CPULimited), cs.Has(IOLimited):
			return SubThrottled
		}
		return SubRunning
	case Activating:
		if restarting {
			return SubRestarting
		}
		return SubStarting
	case Deactivating:
		return SubStopping
	}
	return SubDead
}

// Change is published on every state change.
type Change struct {
	Status Status
	Reason string
}
