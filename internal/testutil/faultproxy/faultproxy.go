// Package faultproxy is an HTTP-aware proxy between a client and a unix
// socket HTTP service (the Podman API service), for fault-injection tests.
//
// Every client connection gets its own upstream connection; requests are
// read one at a time (HTTP/1.1, keep-alive) and forwarded as they are,
// responses are streamed back as Podman sends them, so the long polls (the
// events stream, Wait) keep working. Faults can be switched at run time:
//
//   - SetDelay: every response starts d late (its headers; a stream then
//     flows at its own pace). Changing the delay also applies to responses
//     already waiting.
//   - HoldAndDrop: the next n matching requests are forwarded (so they take
//     effect in Podman), held for a while, and then the client's connection
//     is closed without an answer: the request's outcome is lost.
//   - Block/Unblock: new connections are refused (ECONNREFUSED), as when
//     the service is gone; open connections are left alone.
//   - OnRequest: a hook runs before a matching request is forwarded (to
//     stop or kill the service at a precise moment).
//
// The proxy mirrors the service's availability: when the service refuses
// connections or its socket is gone (it was killed), the proxy refuses new
// connections too, until the service accepts again. So a client sees a
// dead service as dead (ECONNREFUSED), and a stopped or slow one as slow,
// as it would without the proxy.
//
// The proxy counts the requests it saw per method and path.
package faultproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Matcher selects requests by method and URL path (without the query).
type Matcher func(method, path string) bool

// Match returns a Matcher for method ("" = any) and a path suffix ("" =
// any), e.g. Match("POST", "/start") matches
// POST /v4.0.0/libpod/containers/<id>/start.
func Match(method, pathSuffix string) Matcher {
	return func(m, p string) bool {
		return (method == "" || m == method) && strings.HasSuffix(p, pathSuffix)
	}
}

type holdRule struct {
	match Matcher
	hold  time.Duration
	n     int
}

type hookRule struct {
	match Matcher
	n     int // remaining; < 0 = every time
	f     func(method, path string)
}

// Proxy is a running fault-injection proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	upstream string
	dir      string
	socket   string

	lnMu sync.Mutex // serialises opening and closing the listener

	mu      sync.Mutex
	ln      *net.UnixListener // nil while blocked, down or closed
	closed  bool
	blocked bool // Block
	down    bool // the upstream refuses connections
	delay   time.Duration
	changed chan struct{} // closed and replaced when the delay changes
	holds   []*holdRule
	hooks   []*hookRule
	counts  map[string]int // "METHOD /path"
	conns   map[net.Conn]struct{}
	done    chan struct{} // closed by Close

	wg sync.WaitGroup
}

// New starts a proxy in front of the unix socket upstreamSocket (a path).
// It listens on a new socket in a temporary directory and is closed at the
// end of the test.
func New(t testing.TB, upstreamSocket string) *Proxy {
	t.Helper()
	p, err := Start(upstreamSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Start is New without a testing.TB: the caller closes the proxy.
func Start(upstreamSocket string) (*Proxy, error) {
	// Not t.TempDir: a unix socket path has at most 107 bytes, and test
	// names make temp dirs long.
	dir, err := os.MkdirTemp("", "faultproxy-")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		upstream: upstreamSocket,
		dir:      dir,
		socket:   filepath.Join(dir, "proxy.sock"),
		changed:  make(chan struct{}),
		counts:   map[string]int{},
		conns:    map[net.Conn]struct{}{},
		done:     make(chan struct{}),
	}
	if err := p.update(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// Socket is the path clients connect to.
func (p *Proxy) Socket() string { return p.socket }

// URI is the socket as a unix:// URL (qmd's podman.socket).
func (p *Proxy) URI() string { return "unix://" + p.socket }

// update opens or closes the listener as the state asks.
func (p *Proxy) update() error {
	p.lnMu.Lock()
	defer p.lnMu.Unlock()
	p.mu.Lock()
	want := !p.closed && !p.blocked && !p.down
	ln := p.ln
	if !want {
		p.ln = nil
	}
	p.mu.Unlock()
	switch {
	case !want && ln != nil:
		_ = ln.Close()
	case want && ln == nil:
		return p.listen()
	}
	return nil
}

// listen opens the listener. Called with p.lnMu held.
func (p *Proxy) listen() error {
	_ = os.Remove(p.socket) // the stale socket of a closed listener
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("faultproxy: listen: %w", err)
	}
	// A closed listener keeps its file: connecting then fails with
	// ECONNREFUSED, as with a dead service.
	ln.SetUnlinkOnClose(false)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = ln.Close()
		return errors.New("faultproxy: closed")
	}
	p.ln = ln
	p.wg.Add(1)
	p.mu.Unlock()
	go p.accept(ln)
	return nil
}

// upstreamGone reports whether err from dialing the upstream means the
// service is not there (as opposed to slow).
func upstreamGone(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// setDown notes that the upstream refuses connections: refuse them too and
// watch for its return.
func (p *Proxy) setDown() {
	p.mu.Lock()
	if p.down || p.closed {
		p.mu.Unlock()
		return
	}
	p.down = true
	p.wg.Add(1)
	p.mu.Unlock()
	_ = p.update()
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-p.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			c, err := net.Dial("unix", p.upstream)
			if err == nil {
				_ = c.Close()
			} else if upstreamGone(err) {
				continue
			}
			p.mu.Lock()
			p.down = false
			p.mu.Unlock()
			_ = p.update()
			return
		}
	}()
}

// probe checks the upstream after a connection to it failed.
func (p *Proxy) probe() {
	c, err := net.Dial("unix", p.upstream)
	if err == nil {
		_ = c.Close()
		return
	}
	if upstreamGone(err) {
		p.setDown()
	}
}

func (p *Proxy) accept(ln *net.UnixListener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed (Block or Close)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.serve(c)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// SetDelay delays the start of every response by d (0: no delay). Responses
// already waiting use the new value.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
	close(p.changed)
	p.changed = make(chan struct{})
}

// HoldAndDrop makes the next n requests that match be forwarded, held for
// hold (counted from their arrival) and then answered by closing the
// client's connection, without a response. Podman's answer, if any, is
// read and discarded. Note that Go's http.Transport silently retries an
// idempotent request (GET, HEAD) whose reused connection closed before any
// answer: drop POSTs (start, stop, wait), or count on the retry.
func (p *Proxy) HoldAndDrop(match Matcher, hold time.Duration, n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holds = append(p.holds, &holdRule{match: match, hold: hold, n: n})
}

// OnRequest calls f before each of the next n matching requests is
// forwarded (n <= 0: every matching request), on the goroutine serving the
// request: the request waits until f returns.
func (p *Proxy) OnRequest(match Matcher, n int, f func(method, path string)) {
	if n <= 0 {
		n = -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hooks = append(p.hooks, &hookRule{match: match, n: n, f: f})
}

// Block refuses new connections (ECONNREFUSED) until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	_ = p.update()
}

// Unblock accepts connections again (unless the upstream is down).
func (p *Proxy) Unblock() error {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
	return p.update()
}

// Reset removes every fault: no delay, no pending holds or hooks, accepting.
func (p *Proxy) Reset() error {
	p.mu.Lock()
	p.holds, p.hooks = nil, nil
	p.mu.Unlock()
	p.SetDelay(0)
	return p.Unblock()
}

// Count returns how many requests that match the proxy has seen.
func (p *Proxy) Count(match Matcher) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, v := range p.counts {
		m, path, _ := strings.Cut(k, " ")
		if match(m, path) {
			n += v
		}
	}
	return n
}

// Counts returns the requests seen, keyed "METHOD /path".
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.update()
	p.wg.Wait()
	return os.RemoveAll(p.dir)
}

// request registers a request and returns what to do with it.
func (p *Proxy) request(method, path string) (drop bool, hold time.Duration, hooks []func(string, string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[method+" "+path]++
	for i, h := range p.holds {
		if h.match(method, path) {
			drop, hold = true, h.hold
			if h.n--; h.n == 0 {
				p.holds = append(p.holds[:i:i], p.holds[i+1:]...)
			}
			break
		}
	}
	var keep []*hookRule
	for _, h := range p.hooks {
		if h.match(method, path) {
			hooks = append(hooks, h.f)
			if h.n > 0 {
				h.n--
			}
		}
		if h.n != 0 {
			keep = append(keep, h)
		}
	}
	p.hooks = keep
	return drop, hold, hooks
}

func (p *Proxy) delayState() (time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.changed
}

// serve proxies one client connection, one request at a time.
func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var (
		up  net.Conn
		ubr *bufio.Reader
	)
	defer func() {
		if up != nil {
			_ = up.Close()
		}
	}()
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		arrived := time.Now()
		drop, hold, hooks := p.request(req.Method, req.URL.Path)
		for _, f := range hooks {
			f(req.Method, req.URL.Path)
		}
		if up == nil {
			up, err = net.Dial("unix", p.upstream)
			if err != nil {
				// The service is gone: so is the client's connection, and
				// new ones are refused until it is back.
				if upstreamGone(err) {
					p.setDown()
				}
				return
			}
			ubr = bufio.NewReader(up)
		}
		if err := req.Write(up); err != nil {
			p.probe()
			return
		}
		// The client is gone when it closes its connection (it gave up on
		// a long poll or timed out): then give up upstream too. A Go
		// client sends nothing else while it waits for an answer, so the
		// next byte it sends starts its next request.
		peeked := make(chan struct{})
		var peekErr error
		go func() {
			_, peekErr = br.Peek(1)
			close(peeked)
		}()
		if drop {
			p.drop(up, ubr, req, arrived.Add(hold), peeked)
			up = nil // drop owns it now
			return
		}
		// Until the answer is passed on, a client that goes away (or the
		// proxy closing) closes the upstream connection: whatever serve
		// waits for upstream then fails.
		finished := make(chan struct{})
		upc := up
		go func() {
			select {
			case <-peeked:
				if peekErr != nil {
					_ = upc.Close()
				}
			case <-p.done:
				_ = upc.Close()
			case <-finished:
			}
		}()
		resp, err := http.ReadResponse(ubr, req)
		if err != nil {
			close(finished)
			p.probe()
			return
		}
		if !p.wait(peeked) {
			close(finished)
			_ = resp.Body.Close()
			return
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			close(finished)
			p.tunnel(c, br, up, ubr, resp, peeked)
			return
		}
		werr := resp.Write(c)
		close(finished)
		_ = resp.Body.Close()
		if werr != nil {
			// A stream cut by the service going away: refuse new
			// connections before the client sees its connection close.
			p.probe()
			return
		}
		if resp.Close || req.Close {
			return
		}
		// Wait for the client's next request (or its close).
		<-peeked
		if peekErr != nil {
			return
		}
	}
}

// wait delays the start of a response by the configured delay (which may
// change meanwhile). It returns false if the client or the proxy went away.
func (p *Proxy) wait(peeked <-chan struct{}) bool {
	start := time.Now()
	for {
		d, changed := p.delayState()
		left := time.Until(start.Add(d))
		if left <= 0 {
			return true
		}
		t := time.NewTimer(left)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-peeked:
			// Closed, or sent more before its answer (not a Go client).
			t.Stop()
			return false
		case <-p.done:
			t.Stop()
			return false
		}
	}
}

// drop holds a request until the deadline and then lets serve close the
// client's side without an answer; the upstream answer is drained in the
// background so that Podman completes the request undisturbed.
func (p *Proxy) drop(up net.Conn, ubr *bufio.Reader, req *http.Request, until time.Time, peeked <-chan struct{}) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		drained := make(chan struct{})
		defer close(drained)
		go func() {
			select {
			case <-p.done:
			case <-drained:
			}
			_ = up.Close()
		}()
		resp, err := http.ReadResponse(ubr, req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}()
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
	case <-peeked:
	case <-p.done:
	}
}

// tunnel copies both ways after a protocol switch (attach, exec).
func (p *Proxy) tunnel(c net.Conn, br *bufio.Reader, up net.Conn, ubr *bufio.Reader, resp *http.Response, peeked <-chan struct{}) {
	if err := resp.Write(c); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// The pending peek owns br until the client's first byte (or
		// close); that byte stays buffered for the copy.
		<-peeked
		_, _ = io.Copy(up, br)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(c, ubr)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	select {
	case <-done:
		<-done
	case <-p.done:
	}
}
