// Package runtime defines what the supervisor needs from a container
// engine, in the engine's own words but none of its types. internal/podman
// implements it against the Podman API; tests use a fake.
package runtime

import (
	"context"
	"errors"
	"time"

	"github.com/containers/qmd/internal/config"
)

var (
	// ErrNotFound: no such container.
	ErrNotFound = errors.New("no such container")
	// ErrUnavailable: the engine cannot be reached (socket gone, refused,
	// reset, stream closed). The caller reconnects with backoff.
	ErrUnavailable = errors.New("podman service unavailable")
	// ErrTimeout: the engine was reached but did not answer within the
	// call's deadline. It is busy, not gone: the caller retries the work
	// with backoff and reports the latency, it does not reconnect.
	ErrTimeout = errors.New("podman call timed out")
)

// Container is the part of an inspect the supervisor uses.
type Container struct {
	ID, Name   string
	Status     string // created, running, exited, stopped, paused, ...
	Running    bool
	Pid        int // 0 when not running: never signal it
	ExitCode   int32
	OOMKilled  bool
	StartedAt  time.Time
	FinishedAt time.Time
	CgroupPath string
	// CgroupParent is where the container was created (Podman's cgroup
	// parent: a slice such as machine.slice under systemd's cgroup
	// manager, a path under cgroupfs); "" when not known.
	CgroupParent string
	Labels       map[string]string
}

// Event is one container event.
type Event struct {
	Time      time.Time
	ID, Name  string
	Action    string // create, init, start, died, cleanup, restart, remove, ...
	Partition string // qmd's partition label, when set
	ExitCode  int    // -1 when the event carries none
}

// Runtime is the container engine as the supervisor sees it. Every method
// returns promptly (bounded by a deadline) except Wait and Events.
type Runtime interface {
	Connect(ctx context.Context) error
	Ping(ctx context.Context) error
	Inspect(ctx context.Context, nameOrID string) (*Container, error)
	Create(ctx context.Context, p *config.Partition) (id string, err error)
	Start(ctx context.Context, id string) error
	// Stop sends the stop signal and kills after timeout; its deadline is
	// timeout plus a margin.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Kill sends signal (e.g. "SIGKILL") to the container's init.
	Kill(ctx context.Context, id string, signal string) error
	Remove(ctx context.Context, id string) error
	Wait(ctx context.Context, id string) (int32, error)
	Events(ctx context.Context, since time.Time) (<-chan Event, error)
}

// Labels qmd puts on its containers: adoption finds a container by name AND
// the partition label; drift is detected by the config hash label.
const (
	LabelPartition  = "io.containers.qmd.partition"
	LabelConfigHash = "io.containers.qmd.config-hash"
)
