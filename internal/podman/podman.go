//go:build remote

// Package podman is qmd's narrow edge to the Podman API service. It turns a
// partition's configuration into a create request, and Podman's answers
// into small values the supervisor understands. Every call carries a
// deadline; connection loss is reported as ErrUnavailable so the caller
// can reconnect.
//
// Build with -tags remote,containers_image_openpgp (see HOST-FACTS.md).
package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/errorhandling"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/runtime"
)

// Client talks to one Podman API service. It implements runtime.Runtime.
type Client struct {
	uri     string
	timeout time.Duration
	host    hostinfo.Facts // read once: relative limits in create requests

	mu   sync.Mutex
	conn context.Context // carries the bindings' connection; nil until Connect
}

var _ runtime.Runtime = (*Client)(nil)

// New returns a client for the API at uri (unix:///run/podman/podman.sock).
// It does not connect.
func New(uri string, timeout time.Duration) *Client {
	return &Client{uri: uri, timeout: timeout, host: hostinfo.Read()}
}

// Connect (re)establishes the connection and pings the service.
func (c *Client) Connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// NewConnection stores the connection in the context it returns; keep
	// the values but not this call's deadline.
	conn, err := bindings.NewConnection(context.WithoutCancel(ctx), c.uri)
	if err != nil {
		return fmt.Errorf("%w: connect %s: %w", runtime.ErrUnavailable, c.uri, err)
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	return nil
}

// callCtx combines the caller's cancellation and deadline with the
// connection the bindings look up through Value.
type callCtx struct {
	context.Context
	conn context.Context
}

func (c callCtx) Value(key any) any {
	if v := c.conn.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

func (c *Client) ctx(ctx context.Context, long bool) (context.Context, context.CancelFunc, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil, nil, fmt.Errorf("%w: not connected", runtime.ErrUnavailable)
	}
	var cancel context.CancelFunc
	if long {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	return callCtx{Context: ctx, conn: conn}, cancel, nil
}

// classify maps Podman and transport errors onto runtime's sentinels.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var em *errorhandling.ErrorModel
	if errors.As(err, &em) && em.ResponseCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w: %s", op, runtime.ErrNotFound, em.Message)
	}
	var ce bindings.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%s: %w: %w", op, runtime.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Ping checks that the service answers.
func (c *Client) Ping(ctx context.Context) error {
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = system.Version(cctx, nil)
	return classify("ping podman", err)
}

// Inspect returns the container's state; runtime.ErrNotFound if absent.
func (c *Client) Inspect(ctx context.Context, nameOrID string) (*runtime.Container, error) {
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return nil, err
	}
	defer cancel()
	d, err := containers.Inspect(cctx, nameOrID, nil)
	if err != nil {
		return nil, classify("inspect "+nameOrID, err)
	}
	if d == nil || d.State == nil || d.ID == "" {
		return nil, fmt.Errorf("inspect %s: podman answered without container state", nameOrID)
	}
	out := &runtime.Container{
		ID:         d.ID,
		Name:       d.Name,
		Status:     d.State.Status,
		Running:    d.State.Running,
		Pid:        d.State.Pid,
		ExitCode:   d.State.ExitCode,
		OOMKilled:  d.State.OOMKilled,
		StartedAt:  d.State.StartedAt,
		FinishedAt: d.State.FinishedAt,
		CgroupPath: d.State.CgroupPath,
	}
	if d.Config != nil {
		out.Labels = d.Config.Labels
	}
	if out.Pid < 0 {
		return nil, fmt.Errorf("inspect %s: podman reported pid %d", nameOrID, out.Pid)
	}
	return out, nil
}

// Create creates the partition's container and returns its ID.
func (c *Client) Create(ctx context.Context, p *config.Partition) (string, error) {
	s, err := Spec(p, c.host)
	if err != nil {
		return "", err
	}
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return "", err
	}
	defer cancel()
	r, err := containers.CreateWithSpec(cctx, s, nil)
	if err != nil {
		return "", classify("create "+s.Name, err)
	}
	if r.ID == "" {
		return "", fmt.Errorf("create %s: podman returned no container ID", s.Name)
	}
	return r.ID, nil
}

// Start starts a created or exited container.
func (c *Client) Start(ctx context.Context, id string) error {
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return err
	}
	defer cancel()
	return classify("start "+short(id), containers.Start(cctx, id, nil))
}

// Stop stops the container, killing it after timeout.
func (c *Client) Stop(ctx context.Context, id string, timeout time.Duration) error {
	cctx, cancel, err := c.ctx(ctx, true)
	if err != nil {
		return err
	}
	defer cancel()
	secs := uint(timeout / time.Second)
	return classify("stop "+short(id), containers.Stop(cctx, id, new(containers.StopOptions).WithTimeout(secs)))
}

// Kill sends signal to the container's init.
func (c *Client) Kill(ctx context.Context, id string, signal string) error {
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return err
	}
	defer cancel()
	return classify("kill "+short(id), containers.Kill(cctx, id, new(containers.KillOptions).WithSignal(signal)))
}

// Remove removes the container (forcibly, with its anonymous volumes).
func (c *Client) Remove(ctx context.Context, id string) error {
	cctx, cancel, err := c.ctx(ctx, false)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = containers.Remove(cctx, id, new(containers.RemoveOptions).WithForce(true).WithVolumes(true))
	return classify("remove "+short(id), err)
}

// Wait blocks until the container is stopped or exited and returns its
// exit code. It is a long poll: only ctx bounds it.
func (c *Client) Wait(ctx context.Context, id string) (int32, error) {
	cctx, cancel, err := c.ctx(ctx, true)
	if err != nil {
		return -1, err
	}
	defer cancel()
	code, err := containers.Wait(cctx, id, new(containers.WaitOptions).WithConditions([]string{"stopped", "exited"}))
	return code, classify("wait "+short(id), err)
}

// Events streams container events of qmd's containers from since on. The
// channel closes when the stream ends (service gone, ctx done).
func (c *Client) Events(ctx context.Context, since time.Time) (<-chan runtime.Event, error) {
	cctx, cancel, err := c.ctx(ctx, true)
	if err != nil {
		return nil, err
	}
	raw := make(chan types.Event, 64)
	stop := make(chan bool)
	opts := new(system.EventsOptions).WithStream(true).WithFilters(map[string][]string{
		"type":  {"container"},
		"label": {LabelPartition},
	})
	if !since.IsZero() {
		opts = opts.WithSince(since.Format(time.RFC3339Nano))
	}
	if err := system.Events(cctx, raw, stop, opts); err != nil {
		cancel()
		return nil, classify("subscribe to events", err)
	}
	out := make(chan runtime.Event, 64)
	go func() {
		defer close(out)
		defer cancel()
		defer close(stop) // closes the HTTP body; the reader then closes raw
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-raw:
				if !ok {
					return
				}
				ev, ok := convertEvent(e)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	// Drain raw after stop so the bindings' reader goroutine can exit.
	go func() {
		<-cctx.Done()
		for range raw { //nolint:revive // draining
		}
	}()
	return out, nil
}

func convertEvent(e types.Event) (runtime.Event, bool) {
	if e.Actor.ID == "" || e.Action == "" {
		return runtime.Event{}, false
	}
	ev := runtime.Event{
		Time:      time.Unix(0, e.TimeNano),
		ID:        e.Actor.ID,
		Name:      e.Actor.Attributes["name"],
		Action:    string(e.Action),
		Partition: e.Actor.Attributes[LabelPartition],
		ExitCode:  -1,
	}
	if e.TimeNano == 0 {
		ev.Time = time.Unix(e.Time, 0)
	}
	if s, ok := e.Actor.Attributes["containerExitCode"]; ok {
		if n, err := strconv.Atoi(s); err == nil {
			ev.ExitCode = n
		}
	}
	return ev, true
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
