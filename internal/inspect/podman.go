package inspect

import (
	"context"
	"errors"
	"io"
	"strings"
)

// Podman is the Podman API side of `qmd show` (the configured devices)
// and `qmd exec`. internal/inspect/podmanapi implements it with the
// Podman bindings; the client commands get it from internal/cli, so that
// packages without the bindings' build tags can still build and test them.
type Podman interface {
	// Devices returns the devices the container was created with
	// (HostConfig.Devices).
	Devices(ctx context.Context, socket, container string) ([]DeviceSpec, error)
	// Exec runs req.Cmd in the running container and returns its exit
	// code once it has ended and its output has been copied.
	Exec(ctx context.Context, socket, container string, req ExecRequest) (int, error)
}

// ExecRequest is one command to run in the partition.
type ExecRequest struct {
	Cmd []string
	// TTY allocates a terminal (the caller's stdin must be one): stdout
	// and stderr are then one stream, written to Stdout.
	TTY bool
	// Stdin is copied to the command; nil attaches nothing.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output.
	Stdout, Stderr io.Writer
}

// Errors of a Podman implementation (wrapped with the details).
var (
	// ErrPodmanUnavailable: the socket is absent or refuses connections.
	ErrPodmanUnavailable = errors.New("the Podman API service cannot be reached")
	// ErrNoContainer: Podman has no such container.
	ErrNoContainer = errors.New("no such container")
	// ErrNotRunning: the container exists but is not running.
	ErrNotRunning = errors.New("the container is not running")
	// ErrCommand: the command could not be started in the container (not
	// found, not executable). Its exit code is 126 or 127 as with a shell.
	ErrCommand = errors.New("the command could not be run in the partition")
)

// SocketURI turns a --podman-socket value (a path or a unix:// URI) into
// the URI the bindings take.
func SocketURI(s string) string {
	if strings.HasPrefix(s, "/") {
		return "unix://" + s
	}
	return s
}
