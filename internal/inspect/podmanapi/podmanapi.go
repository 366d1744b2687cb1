//go:build remote

// Package podmanapi is the Podman side of `qmd show` and `qmd exec`: the
// partition's configured devices (inspect) and commands run in it (exec
// sessions), through the Podman API service with the Podman bindings.
//
// Build with -tags remote,containers_image_openpgp (see HOST-FACTS.md).
package podmanapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/containers/podman/v5/pkg/api/handlers"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/errorhandling"

	"github.com/containers/qmd/internal/inspect"
	"github.com/containers/qmd/internal/podman/podmanconn"
)

// Client implements inspect.Podman.
type Client struct {
	// Timeout bounds every call except the command itself (0 = 10s).
	Timeout time.Duration
}

var _ inspect.Podman = Client{}

func (c Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

// connect opens a connection to uri within the timeout and returns a
// values-only context holding it.
func (c Client) connect(ctx context.Context, uri string) (context.Context, error) {
	if p, ok := podmanconn.UnixPath(uri); ok {
		// Fail at once, and clearly, on an absent or refusing socket
		// (NewConnection's retries sleep first).
		d := net.Dialer{Timeout: c.timeout()}
		nc, err := d.DialContext(ctx, "unix", p)
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("%w at %s: permission denied (the Podman socket needs root)", inspect.ErrPodmanUnavailable, uri)
		}
		if err != nil {
			return nil, fmt.Errorf("%w at %s: %v", inspect.ErrPodmanUnavailable, uri, err)
		}
		_ = nc.Close()
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, err := bindings.NewConnection(cctx, uri)
	if err != nil {
		return nil, classify("connect to podman at "+uri, err)
	}
	return context.WithoutCancel(conn), nil
}

// call runs fn with the connection, within the timeout.
func (c Client) call(ctx, conn context.Context) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithTimeout(ctx, c.timeout())
	return podmanconn.Ctx{Context: tctx, Conn: conn}, cancel
}

// Devices returns HostConfig.Devices of the container.
func (c Client) Devices(ctx context.Context, socket, container string) ([]inspect.DeviceSpec, error) {
	conn, err := c.connect(ctx, socket)
	if err != nil {
		return nil, err
	}
	cctx, cancel := c.call(ctx, conn)
	defer cancel()
	d, err := containers.Inspect(cctx, container, nil)
	if err != nil {
		return nil, classify("inspect container "+podmanconn.Short(container), err)
	}
	if d == nil || d.HostConfig == nil {
		return nil, fmt.Errorf("inspect container %s: podman answered without a host configuration", podmanconn.Short(container))
	}
	out := []inspect.DeviceSpec{}
	for _, dev := range d.HostConfig.Devices {
		out = append(out, inspect.DeviceSpec{PathOnHost: dev.PathOnHost, PathInContainer: dev.PathInContainer, Permissions: dev.CgroupPermissions})
	}
	return out, nil
}

// Exec runs req.Cmd in the container through an exec session: create it,
// start it with the streams attached, then read its exit code.
func (c Client) Exec(ctx context.Context, socket, container string, req inspect.ExecRequest) (int, error) {
	if len(req.Cmd) == 0 {
		return -1, errors.New("no command")
	}
	conn, err := c.connect(ctx, socket)
	if err != nil {
		return -1, err
	}
	cfg := new(handlers.ExecCreateConfig)
	cfg.Cmd = req.Cmd
	cfg.Tty = req.TTY
	cfg.AttachStdin = req.Stdin != nil
	cfg.AttachStdout = true
	cfg.AttachStderr = !req.TTY
	cctx, cancel := c.call(ctx, conn)
	id, err := containers.ExecCreate(cctx, container, cfg)
	cancel()
	if err != nil {
		return -1, classify("create an exec session in container "+podmanconn.Short(container), err)
	}
	defer func() {
		// Podman 4.8+ removes exec sessions on request (the bindings skip
		// the call for older services, which drop them with the container).
		rctx, cancel := c.call(context.WithoutCancel(ctx), conn)
		_ = containers.ExecRemove(rctx, id, nil)
		cancel()
	}()

	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	opts := new(containers.ExecStartAndAttachOptions).
		WithOutputStream(stdout).WithErrorStream(stderr).
		WithAttachOutput(true).WithAttachError(!req.TTY).WithAttachInput(req.Stdin != nil)
	if req.Stdin != nil {
		opts = opts.WithInputStream(*bufio.NewReader(req.Stdin))
	}
	// The attach runs until the command ends; only the caller's
	// cancellation (Ctrl-C without a terminal) ends it early. The bindings'
	// reader does not watch the context: it is left behind then.
	done := make(chan error, 1)
	go func() { done <- containers.ExecStartAndAttach(podmanconn.Ctx{Context: ctx, Conn: conn}, id, opts) }()
	var attachErr error
	select {
	case attachErr = <-done:
	case <-ctx.Done():
		return -1, fmt.Errorf("interrupted; the command may still be running in the partition (exec session %s): %w", podmanconn.Short(id), ctx.Err())
	}

	// The exit code: the session is marked exited once its process was
	// reaped; poll briefly for that.
	deadline := time.Now().Add(c.timeout())
	for {
		ictx, cancel := c.call(context.WithoutCancel(ctx), conn)
		st, err := containers.ExecInspect(ictx, id, nil)
		cancel()
		switch {
		case err != nil && attachErr != nil:
			return -1, classify("run the command", attachErr)
		case err != nil:
			return -1, classify("inspect exec session "+podmanconn.Short(id), err)
		case st.Running && time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
			continue
		case st.Running:
			return -1, fmt.Errorf("exec session %s: the command's output ended but it is still running", podmanconn.Short(id))
		}
		if attachErr != nil {
			if st.ExitCode == 126 || st.ExitCode == 127 {
				return st.ExitCode, fmt.Errorf("%w: %v", inspect.ErrCommand, attachErr)
			}
			return -1, classify("run the command", attachErr)
		}
		return st.ExitCode, nil
	}
}

// classify names op and maps Podman's answers onto inspect's errors.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var em *errorhandling.ErrorModel
	if errors.As(err, &em) {
		msg := em.Message
		if msg == "" {
			msg = em.Because
		}
		switch {
		case em.ResponseCode == http.StatusNotFound && strings.Contains(msg, "executable file"):
			return fmt.Errorf("%s: %w: %s", op, inspect.ErrCommand, msg)
		case em.ResponseCode == http.StatusNotFound:
			return fmt.Errorf("%s: %w: %s", op, inspect.ErrNoContainer, msg)
		case em.ResponseCode == http.StatusConflict, strings.Contains(msg, "not running"), strings.Contains(msg, "state improper"):
			return fmt.Errorf("%s: %w: %s", op, inspect.ErrNotRunning, msg)
		}
		return fmt.Errorf("%s: podman answered %d: %s", op, em.ResponseCode, msg)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%s: %w: %v", op, inspect.ErrPodmanUnavailable, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: no answer within the timeout: %w", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
