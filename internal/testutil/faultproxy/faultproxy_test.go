package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// upstream is a tiny HTTP service on a unix socket with the shapes of
// Podman's API: plain answers, a chunked stream (events), a long poll
// (wait) and a protocol switch (attach).
type upstream struct {
	socket  string
	srv     *http.Server
	conns   atomic.Int64 // connections accepted
	release chan struct{}
	// cancelled receives the path of a request whose client went away.
	cancelled chan string

	mu   sync.Mutex
	seen map[string]int
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	dir, err := os.MkdirTemp("", "faultproxy-up-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return startUpstreamAt(t, filepath.Join(dir, "up.sock"))
}

func startUpstreamAt(t *testing.T, socket string) *upstream {
	t.Helper()
	u := &upstream{socket: socket, release: make(chan struct{}),
		cancelled: make(chan string, 16), seen: map[string]int{}}
	ln, err := net.Listen("unix", u.socket) // unlinked again by Close
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RawQuery, b)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		f := w.(http.Flusher)
		for i := 0; i < 50; i++ {
			if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
				return
			}
			f.Flush()
			select {
			case <-r.Context().Done():
				u.cancelled <- r.URL.Path
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/longpoll", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-u.release:
			fmt.Fprint(w, "released")
		case <-r.Context().Done():
			u.cancelled <- r.URL.Path
		}
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		_ = brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
		}
	})
	u.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.mu.Lock()
			u.seen[r.Method+" "+r.URL.Path]++
			u.mu.Unlock()
			mux.ServeHTTP(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.conns.Add(1)
			}
		},
	}
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(func() { _ = u.srv.Close() })
	return u
}

func (u *upstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[key]
}

// proxied starts an upstream, a proxy in front of it and a client of the
// proxy, whose idle connections are closed when the test ends.
func proxied(t *testing.T) (*upstream, *Proxy, *http.Client) {
	t.Helper()
	u := startUpstream(t)
	p := New(t, u.socket)
	c := client(p.Socket())
	t.Cleanup(c.CloseIdleConnections)
	return u, p, c
}

func client(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 1,
	}}
}

func get(t *testing.T, c *http.Client, method, path, body string) (string, error) {
	t.Helper()
	req, err := http.NewRequest(method, "http://d"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestPassthroughKeepsConnectionsAlive(t *testing.T) {
	u, p, c := proxied(t)
	for i := 0; i < 10; i++ {
		if got, err := get(t, c, "GET", fmt.Sprintf("/echo?i=%d", i), ""); err != nil || got != fmt.Sprintf("GET i=%d ", i) {
			t.Fatalf("GET %d: %q %v", i, got, err)
		}
		body := strings.Repeat("x", i*1000)
		if got, err := get(t, c, "POST", "/echo", body); err != nil || got != "POST  "+body {
			t.Fatalf("POST %d: %d bytes, %v", i, len(got), err)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for one keep-alive client connection", n)
	}
	if n := p.Count(Match("POST", "/echo")); n != 10 {
		t.Errorf("Count(POST /echo) = %d, want 10", n)
	}
	if n := p.Counts()["GET /echo"]; n != 10 {
		t.Errorf("Counts()[GET /echo] = %d, want 10 (%v)", n, p.Counts())
	}
}

func TestDelayAppliesToTheStartOfEveryResponse(t *testing.T) {
	u, p, c := proxied(t)
	p.SetDelay(300 * time.Millisecond)
	t0 := time.Now()
	if _, err := get(t, c, "GET", "/echo", ""); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("answer after %s, want >= 300ms", d)
	}
	if u.count("GET /echo") != 1 {
		t.Error("the request did not reach the upstream")
	}

	// The upstream acts at once; only the answer is late. Lifting the delay
	// releases the waiting answer.
	p.SetDelay(time.Hour)
	errc := make(chan error, 1)
	go func() { _, err := get(t, c, "POST", "/echo", "late"); errc <- err }()
	deadline := time.Now().Add(2 * time.Second)
	for u.count("POST /echo") == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if u.count("POST /echo") != 1 {
		t.Fatal("request not forwarded while its answer is delayed")
	}
	p.SetDelay(0)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("lifting the delay did not release a waiting answer")
	}
}

func TestStreamFlowsThroughAfterTheDelay(t *testing.T) {
	u, p, c := proxied(t)
	p.SetDelay(300 * time.Millisecond)
	t0 := time.Now()
	resp, err := c.Get("http://d/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var first time.Duration
	for i := 0; i < 5; i++ {
		if !sc.Scan() {
			t.Fatalf("stream ended after %d lines: %v", i, sc.Err())
		}
		if i == 0 {
			first = time.Since(t0)
		}
		if want := fmt.Sprintf("chunk %d", i); sc.Text() != want {
			t.Fatalf("line %q, want %q", sc.Text(), want)
		}
	}
	// The upstream writes 50 chunks 20 ms apart (1 s): the fifth must come
	// long before the stream ends, i.e. it is not buffered.
	if d := time.Since(t0); first < 300*time.Millisecond || d > first+500*time.Millisecond {
		t.Errorf("first chunk after %s (want >= 300ms), fifth after %s (want streamed)", first, d)
	}
	// The client leaving ends the upstream request too.
	_ = resp.Body.Close()
	c.CloseIdleConnections()
	select {
	case path := <-u.cancelled:
		if path != "/stream" {
			t.Errorf("cancelled %s", path)
		}
	case <-time.After(2 * time.Second):
		t.Error("upstream stream not cancelled when the client went away")
	}
}

func TestLongPoll(t *testing.T) {
	u, _, c := proxied(t)

	// A client giving up (timeout) ends the upstream request.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://d/longpoll", nil)
	if _, err := c.Do(req); err == nil {
		t.Fatal("long poll answered before release")
	}
	cancel()
	select {
	case <-u.cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("upstream long poll not cancelled when the client gave up")
	}

	// One that is answered late works, on a connection that stays usable.
	errc := make(chan string, 1)
	go func() { got, _ := get(t, c, "POST", "/longpoll", ""); errc <- got }()
	time.Sleep(500 * time.Millisecond)
	close(u.release)
	select {
	case got := <-errc:
		if got != "released" {
			t.Fatalf("long poll answer %q", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("long poll answer not passed on")
	}
	if got, err := get(t, c, "GET", "/echo", ""); err != nil || got != "GET  " {
		t.Fatalf("after a long poll: %q %v", got, err)
	}
}

func TestHoldAndDrop(t *testing.T) {
	u, p, c := proxied(t)
	p.HoldAndDrop(Match("POST", "/echo"), 200*time.Millisecond, 2)
	for i := 0; i < 2; i++ {
		t0 := time.Now()
		got, err := get(t, c, "POST", "/echo", "x")
		if err == nil {
			t.Fatalf("held request %d answered: %q", i, got)
		}
		if d := time.Since(t0); d < 200*time.Millisecond {
			t.Errorf("held request %d dropped after %s, want >= 200ms", i, d)
		}
		// Other requests pass meanwhile.
		if got, err := get(t, c, "GET", "/echo", ""); err != nil || got != "GET  " {
			t.Fatalf("GET between holds: %q %v", got, err)
		}
	}
	if got, err := get(t, c, "POST", "/echo", "y"); err != nil || got != "POST  y" {
		t.Fatalf("third POST (rule used up): %q %v", got, err)
	}
	// The dropped requests reached the upstream: their effect happened.
	if n := u.count("POST /echo"); n != 3 {
		t.Errorf("upstream saw %d POSTs, want 3", n)
	}
	if n := p.Count(Match("POST", "/echo")); n != 3 {
		t.Errorf("proxy counted %d POSTs, want 3", n)
	}
}

func TestBlockRefusesNewConnectionsOnly(t *testing.T) {
	u := startUpstream(t)
	p := New(t, u.socket)
	open, err := net.Dial("unix", p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	obr := bufio.NewReader(open)
	roundTrip := func(q string) string {
		t.Helper()
		fmt.Fprintf(open, "GET /echo?%s HTTP/1.1\r\nHost: d\r\n\r\n", q)
		resp, err := http.ReadResponse(obr, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// Accepted (not merely queued) before the block.
	if got := roundTrip("open=0"); got != "GET open=0 " {
		t.Fatalf("open connection: %q", got)
	}
	p.Block()
	if _, err := net.Dial("unix", p.Socket()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while blocked: %v, want ECONNREFUSED", err)
	}
	// The connection opened before still works.
	if got := roundTrip("open=1"); got != "GET open=1 " {
		t.Fatalf("open connection while blocked: %q", got)
	}
	if err := p.Unblock(); err != nil {
		t.Fatal(err)
	}
	c := client(p.Socket())
	defer c.CloseIdleConnections()
	if got, err := get(t, c, "GET", "/echo", ""); err != nil || got != "GET  " {
		t.Fatalf("after Unblock: %q %v", got, err)
	}
}

func TestOnRequestRunsBeforeForwarding(t *testing.T) {
	u, p, c := proxied(t)
	var calls []string
	var seenByUpstream []int
	p.OnRequest(Match("POST", "/echo"), 1, func(method, path string) {
		calls = append(calls, method+" "+path)
		seenByUpstream = append(seenByUpstream, u.count("POST /echo"))
	})
	for i := 0; i < 3; i++ {
		if _, err := get(t, c, "POST", "/echo", "x"); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != 1 || calls[0] != "POST /echo" || seenByUpstream[0] != 0 {
		t.Errorf("hook calls %v, upstream had seen %v at the call; want one call before forwarding", calls, seenByUpstream)
	}
}

func TestUpstreamGoneClosesClient(t *testing.T) {
	p := New(t, filepath.Join(t.TempDir(), "nothing.sock"))
	c := client(p.Socket())
	defer c.CloseIdleConnections()
	done := make(chan error, 1)
	go func() { _, err := get(t, c, "POST", "/echo", ""); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("answered without an upstream")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("client left hanging without an upstream")
	}
}

func TestUpgradeIsTunnelled(t *testing.T) {
	u := startUpstream(t)
	p := New(t, u.socket)
	conn, err := net.Dial("unix", p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /upgrade HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, s := range []string{"ping", "pong"} {
		fmt.Fprintf(conn, "%s\n", s)
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || line != "echo "+s+"\n" {
			t.Fatalf("through the tunnel: %q %v", line, err)
		}
	}
}

func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	u := startUpstream(t)
	p, err := Start(u.socket)
	if err != nil {
		t.Fatal(err)
	}
	c := client(p.Socket())
	// Open a stream, a long poll and a held request, then close.
	resp, err := c.Get("http://d/stream")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	go func() { _, _ = get(t, c, "POST", "/longpoll", "") }()
	p.HoldAndDrop(Match("POST", "/echo"), time.Hour, 1)
	go func() { _, _ = get(t, c, "POST", "/echo", "") }()
	time.Sleep(200 * time.Millisecond)
	p.SetDelay(time.Hour)
	go func() { _, _ = get(t, c, "GET", "/echo", "") }()
	time.Sleep(100 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close hangs")
	}
	if _, err := os.Stat(p.Socket()); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	c.CloseIdleConnections()
	close(u.release)
	_ = u.srv.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestMirrorsADeadUpstream(t *testing.T) {
	u, p, c := proxied(t)
	// A stream is open when the service dies.
	resp, err := c.Get("http://d/stream")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, resp.Body); close(ended) }()
	_ = u.srv.Close() // closes the listener (removing the socket) and every connection
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Fatal("stream not ended when the service died")
	}
	// The proxy now refuses, as the dead service would.
	if _, err := net.Dial("unix", p.Socket()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial with the service dead: %v, want ECONNREFUSED", err)
	}
	// The service comes back at the same socket: so does the proxy.
	startUpstreamAt(t, u.socket)
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := get(t, c, "GET", "/echo", "")
		if err == nil && got == "GET  " {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not follow the service back: %q %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A Block stays in force whatever the service does.
	p.Block()
	if _, err := net.Dial("unix", p.Socket()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while blocked: %v", err)
	}
}
