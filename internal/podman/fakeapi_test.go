//go:build remote

package podman

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/podman/podmanconn"
	"github.com/containers/qmd/internal/runtime"
)

// fakePodman is a tiny Podman API on a unix socket: enough for
// bindings.NewConnection (v5.8.6 pings GET /v5.8.6/libpod/_ping and reads
// the Libpod-API-Version header; nothing else), Ping (GET .../version),
// Inspect of a missing container (404), and a start and a create whose
// behaviour a test chooses.
type fakePodman struct {
	t       *testing.T
	sock    string
	ln      *net.UnixListener
	srv     *http.Server
	release chan struct{}

	mu     sync.Mutex
	start  func(w http.ResponseWriter, r *http.Request)
	hits   map[string]int
	bodies []createBody
}

type createBody struct {
	contentLength int64
	read          int
	err           error
}

var apiPrefix = regexp.MustCompile(`^/v[^/]+/libpod`)

func newFakePodman(t *testing.T) *fakePodman {
	t.Helper()
	f := &fakePodman{t: t, sock: filepath.Join(t.TempDir(), "podman.sock"), release: make(chan struct{}), hits: map[string]int{}}
	addr, err := net.ResolveUnixAddr("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	f.ln, err = net.ListenUnix("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(f.ln) }()
	t.Cleanup(func() {
		close(f.release)
		_ = f.srv.Close()
	})
	return f
}

func (f *fakePodman) uri() string { return "unix://" + f.sock }

func (f *fakePodman) hit(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[key]
}

func (f *fakePodman) setStart(h func(w http.ResponseWriter, r *http.Request)) {
	f.mu.Lock()
	f.start = h
	f.mu.Unlock()
}

func (f *fakePodman) serve(w http.ResponseWriter, r *http.Request) {
	path := apiPrefix.ReplaceAllString(r.URL.Path, "")
	f.mu.Lock()
	f.hits[r.Method+" "+path]++
	start := f.start
	f.mu.Unlock()
	switch {
	case path == "/_ping":
		w.Header().Set("Libpod-API-Version", "4.3.1")
		w.Header().Set("API-Version", "1.41")
		_, _ = io.WriteString(w, "OK")
	case path == "/version":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"Version": "4.3.1", "ApiVersion": "1.41", "Os": "linux", "Arch": "amd64",
			"Components": []map[string]any{{"Name": "Podman Engine", "Version": "4.3.1", "Details": map[string]string{"APIVersion": "4.3.1"}}},
		})
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/start") && start != nil:
		start(w, r)
	case r.Method == http.MethodPost && path == "/containers/create":
		b, err := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, createBody{contentLength: r.ContentLength, read: len(b), err: err})
		f.mu.Unlock()
		drop(w)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"cause": "no such container", "message": "no container with name or ID found: no such container", "response": 404,
		})
	}
}

// hang holds the request until the client gives up or the test ends.
func (f *fakePodman) hang(_ http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.release:
	}
}

// drop closes the connection without an answer, as the proxy did.
func drop(w http.ResponseWriter) {
	if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = c.Close()
	}
}

func connectFake(t *testing.T, f *fakePodman, timeout time.Duration) *Client {
	t.Helper()
	c := New(f.uri(), timeout)
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("connect to the fake podman: %v", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("ping the fake podman: %v", err)
	}
	return c
}

const fakeID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// The bug: a start that Podman (or a proxy) holds past the client timeout
// is ErrTimeout, never ErrUnavailable; and it comes back at the deadline,
// not after the bindings' retry sleeps.
func TestFakeStartHangIsTimeout(t *testing.T) {
	f := newFakePodman(t)
	f.setStart(f.hang)
	const timeout = 300 * time.Millisecond
	c := connectFake(t, f, timeout)

	began := time.Now()
	err := c.Start(context.Background(), fakeID)
	took := time.Since(began)
	if !errors.Is(err, runtime.ErrTimeout) || errors.Is(err, runtime.ErrUnavailable) {
		t.Fatalf("start held past the deadline: got %v; want ErrTimeout and not ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "start container "+podmanconn.Short(fakeID)) {
		t.Errorf("error does not name the operation and container: %v", err)
	}
	if took < timeout || took > timeout+250*time.Millisecond {
		t.Errorf("start returned after %s; want about the %s deadline", took, timeout)
	}
	// The deadline also ends the bindings' retries: the held request is
	// not sent again.
	time.Sleep(700 * time.Millisecond) // longer than the bindings' sleeps
	if n := f.hit("POST /containers/" + fakeID + "/start"); n != 1 {
		t.Errorf("podman saw %d start requests, want 1", n)
	}

	// The caller's own cancellation is context.Canceled, nothing else.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err = c.Start(ctx, fakeID)
	if !errors.Is(err, context.Canceled) || errors.Is(err, runtime.ErrUnavailable) || errors.Is(err, runtime.ErrTimeout) {
		t.Errorf("cancelled start: got %v; want context.Canceled only", err)
	}

	// A missing container is still ErrNotFound.
	if _, err := c.Inspect(context.Background(), "missing"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("inspect missing: got %v, want ErrNotFound", err)
	}
}

// The same server, gone: a closed listener is ErrUnavailable, not a
// timeout, whether the socket file went with it (ENOENT) or stayed
// (ECONNREFUSED). The client timeout is shorter than the bindings' retry
// sleeps (600 ms), so this also checks that a call abandoned at its
// deadline reports what its attempts saw.
func TestFakeClosedIsUnavailable(t *testing.T) {
	for _, unlink := range []bool{true, false} {
		name := map[bool]string{true: "socket removed", false: "socket left behind"}[unlink]
		t.Run(name, func(t *testing.T) {
			f := newFakePodman(t)
			f.setStart(f.hang)
			// 250 ms: the deadline falls inside the bindings' sleep before
			// their third attempt (at ~300 ms), not on it.
			c := connectFake(t, f, 250*time.Millisecond)
			f.ln.SetUnlinkOnClose(unlink)
			if err := f.srv.Close(); err != nil { // listener and open connections
				t.Fatal(err)
			}
			for _, call := range []struct {
				op string
				fn func() error
			}{
				{"start", func() error { return c.Start(context.Background(), fakeID) }},
				{"ping", func() error { return c.Ping(context.Background()) }},
				{"inspect", func() error { _, err := c.Inspect(context.Background(), "qm"); return err }},
			} {
				err := call.fn()
				if !errors.Is(err, runtime.ErrUnavailable) || errors.Is(err, runtime.ErrTimeout) {
					t.Errorf("%s after the service closed: got %v; want ErrUnavailable and not ErrTimeout", call.op, err)
				}
			}
			if err := c.Connect(context.Background()); !errors.Is(err, runtime.ErrUnavailable) {
				t.Errorf("connect after the service closed: got %v; want ErrUnavailable", err)
			}
		})
	}
}

// A connection dropped mid-request (the proxy): the socket accepted it,
// so it is a retry (ErrTimeout), not a lost service. It also pins down the
// bindings' internal retry: a body-less POST start IS sent three times.
func TestFakeStartDroppedIsRetry(t *testing.T) {
	f := newFakePodman(t)
	f.setStart(func(w http.ResponseWriter, _ *http.Request) { drop(w) })
	c := connectFake(t, f, 5*time.Second)
	err := c.Start(context.Background(), fakeID)
	if !errors.Is(err, runtime.ErrTimeout) || errors.Is(err, runtime.ErrUnavailable) {
		t.Fatalf("start dropped mid-request: got %v; want ErrTimeout and not ErrUnavailable", err)
	}
	if n := f.hit("POST /containers/" + fakeID + "/start"); n != 3 {
		t.Errorf("podman saw %d start requests; the bindings v5.8.6 send a failed request 3 times", n)
	}
}

// The bindings' retry of a create reuses the drained body: Podman never
// gets a second complete create request, and the error reported is the
// first attempt's (dropped: ErrTimeout), not the retry's client-side
// "ContentLength=N with Body length 0".
func TestBindingsRetryCreateBody(t *testing.T) {
	f := newFakePodman(t)
	c := connectFake(t, f, 5*time.Second)
	p := config.DefaultPartition("qm")
	p.Rootfs = t.TempDir()
	_, err := c.Create(context.Background(), &p)
	if !errors.Is(err, runtime.ErrTimeout) || errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("create dropped mid-request: got %v; want ErrTimeout (the first attempt's dropped connection)", err)
	}
	if !strings.Contains(err.Error(), "create container qm") {
		t.Errorf("error does not name the operation and container: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	complete := 0
	for _, b := range f.bodies {
		if b.err == nil && b.read > 0 && int64(b.read) == b.contentLength {
			complete++
		}
	}
	t.Logf("create: %v; requests seen by the server: %+v", err, f.bodies)
	if complete != 1 {
		t.Errorf("server got %d complete create requests, want exactly 1: %+v", complete, f.bodies)
	}
}

// A deadline inside a call is seen by the bindings and net/http as
// DeadlineExceeded (context.Cause), not as the cancellation of the context
// Connect used: net/http reports context.Cause(ctx) when a request's ctx
// ends, so a wrong cause would turn a timeout into "cancelled".
func TestCallContextCause(t *testing.T) {
	f := newFakePodman(t)
	c := connectFake(t, f, time.Second)
	causes := make(chan error, 1)
	_, err := call(c, context.Background(), "probe", 50*time.Millisecond, func(ctx context.Context) (struct{}, error) {
		<-ctx.Done()
		child, cancel := context.WithCancel(ctx) // as net/http derives its own
		defer cancel()
		causes <- context.Cause(child)
		return struct{}{}, context.Cause(ctx)
	})
	if cause := <-causes; !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("cause inside the call at its deadline = %v, want DeadlineExceeded", cause)
	}
	if !errors.Is(err, runtime.ErrTimeout) {
		t.Errorf("call at its deadline: %v, want ErrTimeout", err)
	}
}
