//go:build remote

// Package podman is qmd's narrow edge to the Podman API service. It turns a
// partition's configuration into a create request, and Podman's answers
// into small values the supervisor understands. Every call carries a
// deadline. Errors are classified (classify.go): an absent or refusing
// socket is ErrUnavailable (reconnect), a deadline or a request dropped
// after the socket accepted it is ErrTimeout (busy: retry), a missing
// container is ErrNotFound.
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
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/reports"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/podman/podmanconn"
	"github.com/containers/qmd/internal/runtime"
	"github.com/containers/qmd/pkg/cgroups"
)

// Client talks to one Podman API service. It implements runtime.Runtime.
type Client struct {
	uri     string
	timeout time.Duration
	host    hostinfo.Facts // read once: relative limits in create requests
	systemd bool           // systemd is PID 1 (a slice as cgroup parent is possible)

	mu      sync.Mutex
	conn    context.Context // carries the bindings' connection; nil until Connect
	manager string          // the service's cgroup manager ("systemd", "cgroupfs"); "" until known
}

var _ runtime.Runtime = (*Client)(nil)

// New returns a client for the API at uri (unix:///run/podman/podman.sock).
// timeout is the deadline of every ordinary call. It does not connect.
func New(uri string, timeout time.Duration) *Client {
	return &Client{uri: uri, timeout: timeout, host: hostinfo.Read(), systemd: cgroups.SystemdBooted("/run")}
}

// Deadlines and the bindings' own retries
//
// Every call except Wait and Events runs under a deadline: the client
// timeout, or for Stop the stop timeout plus the client timeout (Podman
// itself waits the stop timeout before it kills). Wait and Events are long
// polls bounded by the caller's ctx only.
//
// bindings.Connection.DoRequest (v5.8.6, pkg/bindings/connection.go) sends
// one *http.Request up to three times when http.Client.Do fails, sleeping
// 100, 200 and 300 ms after the failed attempts, and returns the last
// attempt's error. What that means here:
//   - The deadline is not multiplied: the three attempts share the
//     request, hence its context; once the deadline has passed, a further
//     attempt fails at once with context.DeadlineExceeded.
//   - The sleeps do not look at the context: a call could return up to
//     600 ms after its deadline. call() therefore returns at the deadline
//     itself and leaves the bindings' goroutine to finish its sleep alone
//     (it has no side effect left: its context is done).
//   - A body-less POST (start, stop, kill, wait) IS sent again when an
//     attempt failed after the request went out, e.g. a connection dropped
//     mid-request before the deadline. Podman's start/stop of a running or
//     stopped container answers 304, which the bindings take as success,
//     and a repeated SIGKILL is harmless, so qmd lives with it. A repeated
//     remove gives 404 (ErrNotFound), which callers already accept.
//   - A create is not repeated with its body: the bindings reuse a
//     request whose strings.Reader body the first attempt drained, so the
//     retry carries Content-Length N and an empty body and fails in the
//     client ("ContentLength=N with Body length 0"); Podman never sees a
//     second complete create (TestBindingsRetryCreateBody checks this).
//   - With a dead socket every attempt is refused, so a refused call
//     takes ~600 ms before it reports ErrUnavailable. With a client
//     timeout shorter than that, call() gives up in a sleep and reports
//     the last attempt's error (recordingTransport), not a timeout.
//   - The last attempt's error is what the bindings return: a dead
//     service shows up as the retry's refused dial even when the first
//     attempt died mid-request (see classify).

// callCtx combines the caller's cancellation and deadline with the
// connection the bindings look up through Value (podmanconn.Ctx; the
// connection is values-only, see Connect), and the call's attempt log the
// transport writes to.
type callCtx struct {
	podmanconn.Ctx
	attempts *attempts
}

func (c callCtx) Value(key any) any {
	if _, ok := key.(attemptsKey); ok && c.attempts != nil {
		return c.attempts
	}
	return c.Ctx.Value(key)
}

// attempts keeps the errors of one call's HTTP attempts: the first
// failure, and the last attempt's outcome (nil while an attempt is in
// flight or after a success).
type attempts struct {
	mu    sync.Mutex
	first error
	last  error
}

type attemptsKey struct{}

func (a *attempts) record(err error) {
	a.mu.Lock()
	a.last = err
	if a.first == nil {
		a.first = err
	}
	a.mu.Unlock()
}

func (a *attempts) firstErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first
}

func (a *attempts) lastErr() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// recordingTransport notes each failed attempt in the call's attempt log,
// so that a call abandoned at its deadline while the bindings slept
// between retries reports what the last attempt saw (a refused socket is
// ErrUnavailable, not a timeout).
type recordingTransport struct{ next http.RoundTripper }

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	a, _ := req.Context().Value(attemptsKey{}).(*attempts)
	if req.Context().Err() != nil {
		// A retry after the deadline fails at once without touching the
		// socket: it says nothing new, keep the last real attempt's error.
		a = nil
	}
	if a != nil {
		a.record(nil) // an attempt in flight at the deadline is a timeout
	}
	resp, err := t.next.RoundTrip(req)
	if a != nil {
		a.record(err)
	}
	return resp, err
}

func (t recordingTransport) CloseIdleConnections() {
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// run calls fn under a deadline of limit (none when limit is 0) and returns
// no later than that deadline or the caller's cancellation, whatever fn
// does (see "Deadlines and the bindings' own retries"). When it gives up
// on fn at the deadline it returns the last failed attempt's error if
// there was one (log may be nil), else the deadline. The error is raw: the
// caller classifies it.
func run[T any](ctx context.Context, limit time.Duration, log *attempts, fn func(context.Context) (T, error)) (T, error) {
	var cancel context.CancelFunc
	if limit > 0 {
		ctx, cancel = context.WithTimeout(ctx, limit)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // buffered: an abandoned fn never blocks
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // it finished at the same moment: keep its answer
			return r.v, r.err
		default:
		}
		var zero T
		if errors.Is(ctx.Err(), context.Canceled) {
			return zero, ctx.Err()
		}
		if last := log.lastErr(); last != nil {
			return zero, fmt.Errorf("deadline passed while the bindings waited to retry; last attempt: %w", last)
		}
		if limit > 0 {
			return zero, fmt.Errorf("no answer within %s: %w", limit, ctx.Err())
		}
		return zero, ctx.Err()
	}
}

// call runs one bindings call on the current connection (see run) and
// classifies its error under the operation's name.
func call[T any](c *Client, ctx context.Context, op string, limit time.Duration, fn func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		var zero T
		return zero, fmt.Errorf("%s: %w: not connected", op, runtime.ErrUnavailable)
	}
	log := new(attempts)
	v, err := run(ctx, limit, log, func(ctx context.Context) (T, error) {
		return fn(callCtx{Ctx: podmanconn.Ctx{Context: ctx, Conn: conn}, attempts: log})
	})
	if err != nil && bodyNotResent(err) {
		// The bindings retried a request whose body the first attempt had
		// consumed (create): the retry failed in the client, the first
		// attempt's failure is the one that says what happened.
		if first := log.firstErr(); first != nil {
			err = fmt.Errorf("%w (the bindings' retry could not resend the request body: %v)", first, err)
		}
	}
	return v, classify(op, err)
}

// bodyNotResent recognises net/http's refusal to send a request whose body
// is shorter than its Content-Length, which is what the bindings' retry of
// a drained request body runs into (the error has no type of its own).
func bodyNotResent(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "http: ContentLength=") && strings.Contains(msg, "with Body length")
}

// Connect (re)establishes the connection and pings the service, within
// the client timeout.
func (c *Client) Connect(ctx context.Context) error {
	op := "connect to podman at " + c.uri
	if path, ok := podmanconn.UnixPath(c.uri); ok {
		// Fail fast, and as ErrUnavailable, on an absent or refusing
		// socket: NewConnection's own transport is not recorded (see
		// recordingTransport), and its retries sleep 600 ms.
		_, err := run(ctx, c.timeout, nil, func(ctx context.Context) (struct{}, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
			if err == nil {
				_ = nc.Close()
			}
			return struct{}{}, err
		})
		if err != nil {
			return classify(op, err)
		}
	}
	conn, err := run(ctx, c.timeout, nil, func(ctx context.Context) (context.Context, error) {
		// NewConnection pings through ctx and stores the connection in a
		// context derived from it. Keep its values only: callCtx asks it
		// first for every key, and the context package finds a parent's
		// cancellation (and context.Cause) through Value too, so without
		// WithoutCancel every call would inherit this finished call's
		// "context canceled" as its cause.
		conn, err := bindings.NewConnection(ctx, c.uri)
		if err != nil {
			return nil, err
		}
		return context.WithoutCancel(conn), nil
	})
	if err != nil {
		return classify(op, err)
	}
	cl, err := bindings.GetClient(conn)
	if err != nil || cl.Client == nil {
		return fmt.Errorf("%s: bindings returned no client: %v", op, err)
	}
	if cl.Client.Transport == nil {
		cl.Client.Transport = http.DefaultTransport
	}
	cl.Client.Transport = recordingTransport{next: cl.Client.Transport}
	c.mu.Lock()
	old := c.conn
	c.conn = conn
	c.mu.Unlock()
	if old != nil {
		// Each connection has its own transport: release the old one's
		// idle sockets.
		if oc, err := bindings.GetClient(old); err == nil && oc.Client != nil {
			oc.Client.CloseIdleConnections()
		}
	}
	return nil
}

// Ping checks that the service answers.
func (c *Client) Ping(ctx context.Context) error {
	const op = "ping podman"
	_, err := call(c, ctx, op, c.timeout, func(ctx context.Context) (struct{}, error) {
		r, err := system.Version(ctx, nil)
		if err == nil && (r == nil || r.Server == nil) {
			err = errors.New("podman answered without its version")
		}
		return struct{}{}, err
	})
	return err
}

// Inspect returns the container's state; runtime.ErrNotFound if absent.
func (c *Client) Inspect(ctx context.Context, nameOrID string) (*runtime.Container, error) {
	op := "inspect container " + nameOrID
	d, err := call(c, ctx, op, c.timeout, func(ctx context.Context) (*define.InspectContainerData, error) {
		return containers.Inspect(ctx, nameOrID, nil)
	})
	if err != nil {
		return nil, err
	}
	if d == nil || d.State == nil || d.ID == "" {
		return nil, fmt.Errorf("%s: podman answered without container state", op)
	}
	if name := strings.TrimPrefix(d.Name, "/"); name != nameOrID && !strings.HasPrefix(d.ID, nameOrID) {
		return nil, fmt.Errorf("%s: podman answered for another container (%s, %s)", op, d.Name, podmanconn.Short(d.ID))
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
	if d.HostConfig != nil {
		out.CgroupParent = d.HostConfig.CgroupParent
	}
	if d.Config != nil {
		out.Labels = d.Config.Labels
	}
	switch {
	case out.Pid < 0:
		return nil, fmt.Errorf("%s: podman reported pid %d", op, out.Pid)
	case out.Running && out.Pid == 0:
		return nil, fmt.Errorf("%s: podman reported it running without a pid", op)
	case out.Status == "":
		return nil, fmt.Errorf("%s: podman reported no status", op)
	}
	return out, nil
}

// cgroupManager asks the service, once, which cgroup manager it uses: a
// slice as cgroup parent is valid only under systemd's (Podman refuses it
// under cgroupfs). "" when it cannot be asked now.
func (c *Client) cgroupManager(ctx context.Context) string {
	c.mu.Lock()
	m := c.manager
	c.mu.Unlock()
	if m != "" {
		return m
	}
	info, err := call(c, ctx, "podman info", c.timeout, func(ctx context.Context) (*define.Info, error) {
		return system.Info(ctx, nil)
	})
	if err != nil || info == nil || info.Host == nil {
		return ""
	}
	switch m = info.Host.CgroupManager; m {
	case "systemd", "cgroupfs":
		c.mu.Lock()
		c.manager = m
		c.mu.Unlock()
		return m
	}
	return ""
}

// Create creates the partition's container and returns its ID. The
// partition's slice becomes the cgroup parent where Podman uses systemd's
// cgroup manager; elsewhere (cgroupfs, or the service did not say) Podman
// places it, and the supervisor sees the placement in Inspect.
func (c *Client) Create(ctx context.Context, p *config.Partition) (string, error) {
	parent := ""
	// Without systemd as PID 1 Podman cannot use its cgroup manager: no
	// need to ask (and no extra request on such hosts).
	if p.Slice != "" && c.systemd && c.cgroupManager(ctx) == "systemd" {
		parent = p.Slice
	}
	s, err := Spec(p, c.host, parent)
	if err != nil {
		return "", err
	}
	op := "create container " + s.Name
	r, err := call(c, ctx, op, c.timeout, func(ctx context.Context) (types.ContainerCreateResponse, error) {
		return containers.CreateWithSpec(ctx, s, nil)
	})
	if err != nil {
		return "", err
	}
	if r.ID == "" {
		return "", fmt.Errorf("%s: podman returned no container ID", op)
	}
	return r.ID, nil
}

// Start starts a created or exited container.
func (c *Client) Start(ctx context.Context, id string) error {
	_, err := call(c, ctx, "start container "+podmanconn.Short(id), c.timeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, containers.Start(ctx, id, nil)
	})
	return err
}

// Stop stops the container, killing it after timeout. Its deadline is
// timeout plus the client timeout. Stopping a container that is not
// running is not an error (Podman answers 304).
func (c *Client) Stop(ctx context.Context, id string, timeout time.Duration) error {
	if timeout < 0 {
		timeout = 0
	}
	secs := uint((timeout + time.Second - 1) / time.Second) // round up: never kill early
	limit := time.Duration(secs)*time.Second + c.timeout
	_, err := call(c, ctx, "stop container "+podmanconn.Short(id), limit, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, containers.Stop(ctx, id, new(containers.StopOptions).WithTimeout(secs))
	})
	return err
}

// Kill sends signal (e.g. "SIGKILL") to the container's init, within the
// client timeout.
func (c *Client) Kill(ctx context.Context, id string, signal string) error {
	op := "kill container " + podmanconn.Short(id) + " with " + signal
	if signal == "" {
		return fmt.Errorf("kill container %s: no signal given", podmanconn.Short(id))
	}
	_, err := call(c, ctx, op, c.timeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, containers.Kill(ctx, id, new(containers.KillOptions).WithSignal(signal))
	})
	return err
}

// Remove removes the container (forcibly, with its anonymous volumes).
func (c *Client) Remove(ctx context.Context, id string) error {
	op := "remove container " + podmanconn.Short(id)
	rr, err := call(c, ctx, op, c.timeout, func(ctx context.Context) ([]*reports.RmReport, error) {
		return containers.Remove(ctx, id, new(containers.RemoveOptions).WithForce(true).WithVolumes(true))
	})
	if err != nil {
		return err
	}
	for _, r := range rr {
		if r != nil && r.Err != nil {
			return classify(op, r.Err)
		}
	}
	return nil
}

// Wait blocks until the container is stopped or exited and returns its
// exit code. It is a long poll: only ctx bounds it.
func (c *Client) Wait(ctx context.Context, id string) (int32, error) {
	code, err := call(c, ctx, "wait for container "+podmanconn.Short(id), 0, func(ctx context.Context) (int32, error) {
		return containers.Wait(ctx, id, new(containers.WaitOptions).WithConditions([]string{"stopped", "exited"}))
	})
	if err != nil {
		return -1, err
	}
	return code, nil
}

// Events streams container events of qmd's containers from since on. The
// channel closes when the stream ends (service gone, ctx done). The
// subscription is bounded by ctx only (a long poll); it is not run through
// call() because an abandoned subscription would leave the bindings'
// reader behind.
func (c *Client) Events(ctx context.Context, since time.Time) (<-chan runtime.Event, error) {
	const op = "subscribe to podman events"
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil, fmt.Errorf("%s: %w: not connected", op, runtime.ErrUnavailable)
	}
	sctx, cancel := context.WithCancel(ctx)
	cctx := podmanconn.Ctx{Context: sctx, Conn: conn}
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
		close(stop) // releases the bindings' body closer if it was started
		cancel()
		return nil, classify(op, err)
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
		<-sctx.Done()
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
