// Package config owns qmd's configuration: the defaults in code, the TOML
// files layered over them (vendor file, admin file, drop-ins in name order),
// and pure validation that names the key that is wrong.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// Default search paths. --config replaces the whole search.
const (
	VendorFile = "/usr/share/qmd/qmd.toml"
	AdminFile  = "/etc/qmd/qmd.toml"
	DropInDir  = "/etc/qmd/qmd.toml.d"
)

// Config is the effective configuration.
type Config struct {
	Podman     Podman      `toml:"podman"`
	Log        Log         `toml:"log"`
	DBus       DBus        `toml:"dbus"`
	Incidents  Incidents   `toml:"incidents"`
	Policy     Policy      `toml:"policy"`
	Partitions []Partition `toml:"partition"`
	Protect    []Protect   `toml:"protect"`

	// Sources lists the files that were read, in order.
	Sources []string `toml:"-"`
	// Warnings are things the configuration asks for that qmd adjusted
	// (clamped, skipped); they are logged at start.
	Warnings []string `toml:"-"`
	// Findings are the freedom-from-interference lint's findings (Lint),
	// warnings unless [policy] strict = true.
	Findings []Finding `toml:"-"`

	// origin maps key paths to the file:line that set them, for errors
	// found after loading (Prepare).
	origin map[string]string
}

// Podman says how to reach the Podman API service.
type Podman struct {
	// Socket is the API URL: unix:///run/podman/podman.sock.
	Socket string `toml:"socket"`
	// Timeout bounds every ordinary API call (not the long polls).
	Timeout Duration `toml:"timeout"`
}

// Log configures the logger.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // auto, journal, console, json
}

// DBus configures the operator interface.
type DBus struct {
	Enable     bool   `toml:"enable"`
	AdminGroup string `toml:"admin_group"`
}

// Incidents configures the durable incident store.
type Incidents struct {
	Path string `toml:"path"`
	Max  int    `toml:"max"`
}

// Policy holds host-wide settings of the resource policy.
type Policy struct {
	// DryRun detects and logs what would be done, and does nothing.
	DryRun bool `toml:"dry_run"`
	// Strict makes the freedom-from-interference findings (Lint) errors:
	// qmd refuses to start and a reload is rejected.
	Strict bool `toml:"strict"`
	// Resync is the slow tick that repairs drift (oom_score_adj, limits).
	Resync Duration `toml:"resync"`
}

// Partition describes one supervised partition.
type Partition struct {
	Name          string            `toml:"name"`
	ContainerName string            `toml:"container_name"`
	Rootfs        string            `toml:"rootfs"`
	Exec          []string          `toml:"exec"`
	Network       string            `toml:"network"`
	Volumes       []string          `toml:"volumes"`
	ReadOnly      bool              `toml:"read_only"`
	ReadOnlyTmpfs bool              `toml:"read_only_tmpfs"`
	CapDrop       []string          `toml:"cap_drop"`
	Devices       []string          `toml:"devices"`
	Sysctl        map[string]string `toml:"sysctl"`
	Seccomp       string            `toml:"seccomp_profile"`
	Rlimits       map[string]string `toml:"rlimits"`
	Env           map[string]string `toml:"env"`
	Hostname      string            `toml:"hostname"`
	// Slice is the systemd slice the partition's cgroup is created in
	// (Podman's cgroup parent; systemd cgroup manager only). qmd gives the
	// slice the partition's CPU and IO weights: the kernel weighs siblings
	// only, so CPUWeight=idle on the container's own scope in Podman's
	// machine.slice made it idle against nothing on the host. "" leaves
	// the placement to Podman (machine.slice).
	Slice string `toml:"slice"`
	// Annotations are OCI annotations of the partition container (qm's
	// device hooks key on org.containers.qm.device.*).
	Annotations map[string]string `toml:"annotations"`
	// Security is the partition's LSM confinement (SELinux, AppArmor).
	Security Security `toml:"security"`

	OOMScoreAdj       int `toml:"oom_score_adj"`
	NestedOOMScoreAdj int `toml:"nested_oom_score_adj"`

	// StopOnExit stops the partition when qmd exits (default: leave it).
	StopOnExit  bool     `toml:"stop_on_exit"`
	StopTimeout Duration `toml:"stop_timeout"`

	Restart  Restart  `toml:"restart"`
	Memory   Memory   `toml:"memory"`
	CPU      CPU      `toml:"cpu"`
	Pids     Pids     `toml:"pids"`
	Pressure Pressure `toml:"pressure"`
	IO       IO       `toml:"io"`
	Disk     Disk     `toml:"disk"`
	Liveness Liveness `toml:"liveness"`
}

// Liveness is the probe of the partition's systemd: asked every Interval
// over the partition's system bus, Failures unanswered questions in a row (each
// within Timeout) restart the partition. Nothing counts before the first
// answer until BootGrace has passed; an init that is not systemd is not
// probed.
type Liveness struct {
	Enable    bool     `toml:"enable"`
	Interval  Duration `toml:"interval"`
	Timeout   Duration `toml:"timeout"`
	Failures  int      `toml:"failures"`
	BootGrace Duration `toml:"boot_grace"`
}

// Security is the partition's LSM confinement: the SELinux label and the
// AppArmor profile Podman gives its processes. Every key unset means
// Podman's default. containers/qm's qm.container sets selinux_type =
// "qm_t", selinux_file_type = "qm_file_t", selinux_level = "s0" and
// selinux_nested = true; those types exist only with qm's SELinux policy
// module, so qmd does not default to them.
type Security struct {
	SELinuxType     string `toml:"selinux_type"`      // SecurityLabelType, e.g. "qm_t"
	SELinuxFileType string `toml:"selinux_file_type"` // SecurityLabelFileType, e.g. "qm_file_t"
	SELinuxLevel    string `toml:"selinux_level"`     // SecurityLabelLevel, e.g. "s0" or "s0:c1,c2"
	// SELinuxNested lets the partition's own Podman label its nested
	// containers (SecurityLabelNested): /sys/fs/selinux is mounted and
	// /proc unmasked, as podman run --security-opt label=nested does.
	SELinuxNested bool `toml:"selinux_nested"`
	// SELinuxDisable runs the partition unlabeled (SecurityLabelDisable).
	SELinuxDisable bool `toml:"selinux_disable"`
	// AppArmorProfile is a loaded profile name or "unconfined"; "" is
	// Podman's default (containers-default-*), Debian's default LSM.
	AppArmorProfile string `toml:"apparmor_profile"`
}

// SELinuxOpts returns the Podman label options ("type:qm_t", "disable")
// of the settings, in a fixed order.
func (s Security) SELinuxOpts() []string {
	var opts []string
	if s.SELinuxDisable {
		opts = append(opts, "disable")
	}
	if s.SELinuxType != "" {
		opts = append(opts, "type:"+s.SELinuxType)
	}
	if s.SELinuxFileType != "" {
		opts = append(opts, "filetype:"+s.SELinuxFileType)
	}
	if s.SELinuxLevel != "" {
		opts = append(opts, "level:"+s.SELinuxLevel)
	}
	return opts
}

// Restart is the restart policy: immediate first restart after clean
// running, jittered doubling backoff for repeated crashes, a start limit.
type Restart struct {
	Policy             string   `toml:"policy"` // always, on-failure, no
	BackoffInitial     Duration `toml:"backoff_initial"`
	BackoffMax         Duration `toml:"backoff_max"`
	BackoffReset       Duration `toml:"backoff_reset"`
	StartLimitBurst    int      `toml:"start_limit_burst"`
	StartLimitInterval Duration `toml:"start_limit_interval"`
}

// Memory limits of the partition cgroup (systemd names in comments).
type Memory struct {
	High    Size `toml:"high"`     // MemoryHigh
	Max     Size `toml:"max"`      // MemoryMax
	SwapMax Size `toml:"swap_max"` // MemorySwapMax
}

// CPU settings of the partition cgroup.
type CPU struct {
	Weight string `toml:"weight"` // "idle" or 1..10000 (CPUWeight)
	Quota  string `toml:"quota"`  // "" (none) or a percentage of one CPU, e.g. "200%"
}

// Pids limits the number of tasks (TasksMax).
type Pids struct {
	Max string `toml:"max"` // "max", a count, or a percentage of the kernel's pid_max
	// ForkBombRestarts: restart the partition after this many pids.max
	// events within ForkBombWindow (0 = never restart, only report).
	ForkBombRestarts int      `toml:"fork_bomb_restarts"`
	ForkBombWindow   Duration `toml:"fork_bomb_window"`
}

// Pressure configures the reactions to memory and CPU pressure.
type Pressure struct {
	// Host memory pressure ("some" stall) above Threshold within Window
	// lowers the partition's memory.high by Step towards Floor.
	HostMemory   bool     `toml:"host_memory"`
	Threshold    Duration `toml:"threshold"`
	Window       Duration `toml:"window"`
	Step         Size     `toml:"step"`
	Floor        Size     `toml:"floor"`
	RestoreAfter Duration `toml:"restore_after"`
	// Stall: "full" pressure inside the partition above StallThreshold in
	// Window -> StallAction: "kill-offender" or "none" ("freeze-restart"
	// and "restart", earlier releases' words, mean kill-offender).
	StallThreshold Duration `toml:"stall_threshold"`
	StallAction    string   `toml:"stall_action"`
	// CPU: ASIL cpu pressure above CPUThreshold -> CPUQuota on the partition.
	CPUThreshold Duration `toml:"cpu_threshold"`
	CPUQuota     string   `toml:"cpu_quota"`
	// HostReserve: a confirmed host or ASIL memory pressure window while
	// the host's MemAvailable is below this kills the partition's largest
	// process (the kernel OOM killer's pick) instead of throttling: the
	// host is then so short that the kernel's own OOM kill is near, and
	// the thrashing before it stalls the ASIL processes. 0 leaves it to
	// the kernel.
	HostReserve Size `toml:"host_reserve"`
}

// Protect names an ASIL process group whose oom_score_adj qmd sets and
// otherwise never touches, and whose pressure qmd watches.
type Protect struct {
	Unit        string `toml:"unit"`   // systemd unit, e.g. "brakes.service"
	Cgroup      string `toml:"cgroup"` // or a cgroup path
	OOMScoreAdj int    `toml:"oom_score_adj"`
	// WatchPressure adds PSI "some" triggers on this cgroup's
	// memory.pressure, cpu.pressure and io.pressure (cgroup v2).
	WatchPressure bool `toml:"watch_pressure"`
	// MemoryMin and MemoryLow become MemoryMin=/MemoryLow= on the unit
	// (memory.min/memory.low on a cgroup entry); cgroup v2 only.
	MemoryMin Size `toml:"memory_min"`
	MemoryLow Size `toml:"memory_low"`
}

// Default returns the built-in configuration: what qmd does with no files.
func Default() *Config {
	return &Config{
		Podman:    Podman{Socket: "unix:///run/podman/podman.sock", Timeout: Duration{10 * time.Second}},
		Log:       Log{Level: "info", Format: "auto"},
		DBus:      DBus{Enable: true, AdminGroup: "qmd-admin"},
		Incidents: Incidents{Path: "/var/lib/qmd/incidents.db", Max: 1000},
		Policy:    Policy{Resync: Duration{30 * time.Second}},
	}
}

// DefaultSlice is a partition's slice by default: a top-level slice of its
// own named after it ("qm" -> qm.slice), the sibling of system.slice where
// the ASIL units run, as containers/qm's QM.slice. A name that would
// nest the slice ("a-b": a-b.slice lies in a.slice, whose weight would
// count instead) or is one of the host's own slices gets "" (Podman's
// machine.slice; `qmd check-config` says to choose one).
func DefaultSlice(name string) string {
	s := name + ".slice"
	if strings.Contains(name, "-") || hostSlices[s] || s == "machine.slice" || !sliceRE.MatchString(s) {
		return ""
	}
	return s
}

// PlacedIn reports whether a container whose cgroup parent is parent sits
// where this configuration puts it. Only a systemd slice can be misplaced:
// a cgroupfs parent (Podman's cgroupfs manager) or an unknown one ("")
// counts as placed.
func (p *Partition) PlacedIn(parent string) bool {
	return p.Slice == "" || !strings.HasSuffix(parent, ".slice") || path.Base(parent) == p.Slice
}

// DefaultPartition returns a partition with every default filled in; it
// mirrors containers/qm's qm.container.
func DefaultPartition(name string) Partition {
	return Partition{
		Name:          name,
		Rootfs:        "/usr/lib/qm/rootfs",
		Exec:          []string{"/sbin/init"},
		Network:       "private",
		Slice:         DefaultSlice(name),
		Volumes:       []string{"/etc/qm:/etc", "/var/qm:/var", "/var/qm/tmp:/var/tmp"},
		ReadOnly:      true,
		ReadOnlyTmpfs: true,
		CapDrop:       []string{"sys_boot", "sys_resource"},
		Devices:       []string{"-/dev/kvm", "-/dev/fuse"},
		Sysctl:        map[string]string{"fs.mqueue.queues_max": "4"},
		Seccomp:       "/usr/share/qmd/seccomp-no-rt.json",
		// Explicit rlimits: Podman 4.3 swaps soft and hard of its defaults
		// when a create request carries none. Clamped to the host's hard
		// limits at load time.
		Rlimits:           map[string]string{"nofile": "1024:524288", "nproc": "4096:32768"},
		OOMScoreAdj:       500,
		NestedOOMScoreAdj: 750,
		StopTimeout:       Duration{10 * time.Second},
		Restart: Restart{
			Policy:             "always",
			BackoffInitial:     Duration{100 * time.Millisecond},
			BackoffMax:         Duration{30 * time.Second},
			BackoffReset:       Duration{10 * time.Minute},
			StartLimitBurst:    5,
			StartLimitInterval: Duration{10 * time.Second},
		},
		Memory: Memory{
			High:    Size{Bytes: Infinity, Set: true, Original: "infinity"},
			Max:     Size{Bytes: Infinity, Set: true, Original: "infinity"},
			SwapMax: Size{Bytes: 0, Set: true, Original: "0"},
		},
		CPU:  CPU{Weight: "idle"},
		Pids: Pids{Max: "50%", ForkBombRestarts: 3, ForkBombWindow: Duration{time.Minute}},
		Pressure: Pressure{
			HostMemory:     true,
			Threshold:      Duration{150 * time.Millisecond},
			Window:         Duration{time.Second},
			Step:           Size{Percent: 10, Set: true, Original: "10%"},
			Floor:          Size{Percent: 25, Set: true, Original: "25%"},
			RestoreAfter:   Duration{30 * time.Second},
			StallThreshold: Duration{800 * time.Millisecond},
			StallAction:    "kill-offender",
			CPUThreshold:   Duration{200 * time.Millisecond},
			CPUQuota:       "", // off: the slice's weight answers CPU contention (cpu.go)
			HostReserve:    Size{Percent: 10, Set: true, Original: "10%"},
		},
		IO: DefaultIO(),
		Liveness: Liveness{
			Enable:    true,
			Interval:  Duration{10 * time.Second},
			Timeout:   Duration{5 * time.Second},
			Failures:  3,
			BootGrace: Duration{2 * time.Minute},
		},
	}
}

// Partition returns the named partition.
func (c *Config) Partition(name string) (*Partition, bool) {
	for i := range c.Partitions {
		if c.Partitions[i].Name == name {
			return &c.Partitions[i], true
		}
	}
	return nil, false
}

// ContainerNameOrDefault is the Podman container name of the partition.
func (p *Partition) ContainerNameOrDefault() string {
	if p.ContainerName != "" {
		return p.ContainerName
	}
	return p.Name
}

// CreateHash fingerprints the settings that are fixed when the container
// is created. A running container whose label differs was created from
// another configuration: qmd keeps it and recreates it at the next restart.
// Settings qmd applies live (memory, CPU, pids, oom_score_adj) are not in it.
func (p *Partition) CreateHash() string {
	h := sha256.New()
	w := func(k string, v any) { fmt.Fprintf(h, "%s=%#v\n", k, v) }
	w("name", p.ContainerNameOrDefault())
	w("rootfs", p.Rootfs)
	w("exec", p.Exec)
	w("network", p.Network)
	w("volumes", p.Volumes)
	w("read_only", p.ReadOnly)
	w("read_only_tmpfs", p.ReadOnlyTmpfs)
	w("cap_drop", p.CapDrop)
	w("devices", p.Devices)
	w("sysctl", sortedPairs(p.Sysctl))
	w("seccomp", p.Seccomp)
	w("rlimits", sortedPairs(p.Rlimits))
	w("env", sortedPairs(p.Env))
	w("hostname", p.Hostname)
	// Keys added later are hashed only when set, so that a configuration
	// that does not use them keeps the hash of the containers it created
	// before (an upgrade of qmd must not recreate the partition).
	if len(p.Annotations) > 0 {
		w("annotations", sortedPairs(p.Annotations))
	}
	if p.Security != (Security{}) {
		w("security", p.Security.SELinuxOpts())
		w("selinux_nested", p.Security.SELinuxNested)
		w("apparmor_profile", p.Security.AppArmorProfile)
	}
	if dh := p.diskHash(); dh != "" {
		w("disk", dh) // the budget's image is mounted under a volume
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func sortedPairs(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
