// Package incident defines what qmd records when it acts or detects
// misbehaviour, and where those records are kept.
//
// An Incident is the unit operators see: over D-Bus (ListIncidents,
// IncidentNew), in journald (QMD_EVENT, QMD_INCIDENT_ID, MESSAGE_ID) and in
// `qmd incidents`. IDs are assigned by the store: unique and increasing,
// also across restarts of qmd, but not dense (see Store, "IDs").
package incident

import "time"

// Type names what happened. The strings are stable API: they appear as
// QMD_EVENT in the journal, in D-Bus signals and in the journal catalog.
type Type string

// Incident types. Keep systemd/qmd.catalog and the MESSAGE_ID table in
// internal/logging in step with this list.
const (
	Start          Type = "start"            // partition (re)created and started by qmd
	Adopt          Type = "adopt"            // a running partition was adopted at qmd start
	Restart        Type = "restart"          // partition died unexpectedly and was restarted
	StartLimit     Type = "start-limit"      // start limit hit; partition is failed
	Stop           Type = "stop"             // partition stopped on request
	ConfigDrift    Type = "config-drift"     // running container differs from the configuration
	OOMKill        Type = "oom-kill"         // the kernel OOM killer killed a process in the partition
	OOMScoreRepair Type = "oom-score-repair" // an oom_score_adj was set back to policy
	Throttle       Type = "throttle"         // memory.high lowered because of host/ASIL pressure
	Unthrottle     Type = "unthrottle"       // memory.high restored after pressure went away
	Stall          Type = "stall"            // partition stalled (full memory pressure); freeze/restart
	CPUQuota       Type = "cpu-quota"        // cpu.max quota applied or lifted
	ForkBomb       Type = "fork-bomb"        // pids.max reached
	Freeze         Type = "freeze"           // partition frozen
	Thaw           Type = "thaw"             // partition thawed
	PodmanLost     Type = "podman-lost"      // the Podman service went away / came back
	PolicyLimit    Type = "policy-limit"     // a policy value the host cannot honour (clamped/ignored)
	PodmanSlow     Type = "podman-slow"      // a Podman call timed out (busy, not gone) and is retried; or answers again
	StartFailed    Type = "start-failed"     // creating or starting the container failed; retried with backoff
	PolicyReload   Type = "policy-reload"    // a reloaded configuration was applied to the running partition
	Upgrade        Type = "upgrade"          // qmd started with another version than last time (a package upgrade)
	IOThrottle     Type = "io-throttle"      // partition io limits lowered under ASIL io pressure, or restored
	DiskBudget     Type = "disk-budget"      // the partition's disk budget: image created/grown/migrated, refused, unavailable, or a writer killed below the reserve
	// SystemdUnresponsive: the partition's systemd stopped answering on its
	// private socket; the partition is killed and restarted.
	SystemdUnresponsive Type = "systemd-unresponsive"
	// HostMemoryLow: under confirmed memory pressure the host's available
	// memory fell below pressure.host_reserve; the partition's largest
	// process was killed before the kernel's OOM killer had to.
	HostMemoryLow Type = "host-memory-low"
)

// Incident is one recorded event. ID and Time are set by the store when
// the incident is added.
type Incident struct {
	ID        uint64            `json:"id"`
	Time      time.Time         `json:"time"`
	Partition string            `json:"partition"`
	Type      Type              `json:"type"`
	Summary   string            `json:"summary"`
	Details   map[string]string `json:"details,omitempty"`
}

// Sink receives incidents. The supervisor and the resource policy only ever
// see a Sink; the store, the D-Bus signal and the journal line hang off it.
type Sink interface {
	Record(inc Incident) Incident
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Incident) Incident

// Record calls f.
func (f SinkFunc) Record(inc Incident) Incident { return f(inc) }
