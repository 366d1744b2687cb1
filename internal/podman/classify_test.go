//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/errorhandling"

	"github.com/containers/qmd/internal/runtime"
)

// class names what the caller does next with an error.
type class string

const (
	classTimeout     class = "timeout"     // busy: retry the work
	classUnavailable class = "unavailable" // gone: reconnect
	classNotFound    class = "not-found"
	classCanceled    class = "canceled" // the caller's own cancellation
	classOther       class = "other"
)

func classOf(err error) class {
	var got []class
	if errors.Is(err, runtime.ErrTimeout) {
		got = append(got, classTimeout)
	}
	if errors.Is(err, runtime.ErrUnavailable) {
		got = append(got, classUnavailable)
	}
	if errors.Is(err, runtime.ErrNotFound) {
		got = append(got, classNotFound)
	}
	if errors.Is(err, context.Canceled) {
		got = append(got, classCanceled)
	}
	switch len(got) {
	case 0:
		return classOther
	case 1:
		return got[0]
	}
	return class(fmt.Sprint(got)) // more than one class: always wrong
}

// Constructed the way net/http and the bindings build them.
func urlErr(err error) error {
	return &url.Error{Op: "Post", URL: "http://d/v5.8.6/libpod/containers/abc/start", Err: err}
}

func dialErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: "/run/podman/podman.sock", Net: "unix"},
		Err: os.NewSyscallError("connect", errno)}
}

func connErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "unix", Err: os.NewSyscallError(op, errno)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want class
	}{
		// The bug: a deadline inside a url.Error (itself a net.Error) is
		// "busy", not "gone".
		{"url.Error DeadlineExceeded", urlErr(context.DeadlineExceeded), classTimeout},
		{"wrapped DeadlineExceeded", fmt.Errorf("unable to process API response: %w", context.DeadlineExceeded), classTimeout},
		{"net.Error Timeout()", urlErr(timeoutErr{}), classTimeout},
		{"os.ErrDeadlineExceeded on read", urlErr(&net.OpError{Op: "read", Net: "unix", Err: os.ErrDeadlineExceeded}), classTimeout},
		{"http.Client.Timeout", func() error {
			// A real http.Client timeout against a server that never answers.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					defer c.Close()
					time.Sleep(time.Second)
				}
			}()
			_, err = (&http.Client{Timeout: 50 * time.Millisecond}).Get("http://" + ln.Addr().String())
			if err == nil {
				t.Fatal("no client timeout")
			}
			return err
		}(), classTimeout},
		{"deadline inside ConnectError", bindings.ConnectError{Err: urlErr(context.DeadlineExceeded)}, classTimeout},
		{"ETIMEDOUT", urlErr(connErr("read", syscall.ETIMEDOUT)), classTimeout},

		// Absent or refusing socket: reconnect.
		{"dial ECONNREFUSED", urlErr(dialErr(syscall.ECONNREFUSED)), classUnavailable},
		{"dial ENOENT", urlErr(dialErr(syscall.ENOENT)), classUnavailable},
		{"dial ECONNRESET", urlErr(dialErr(syscall.ECONNRESET)), classUnavailable},
		{"raw ECONNREFUSED (transport, unwrapped)", dialErr(syscall.ECONNREFUSED), classUnavailable},
		{"ConnectError ECONNREFUSED", bindings.ConnectError{Err: urlErr(dialErr(syscall.ECONNREFUSED))}, classUnavailable},
		{"ConnectError ENOENT", bindings.ConnectError{Err: urlErr(dialErr(syscall.ENOENT))}, classUnavailable},
		{"ConnectError io.EOF (ping dropped)", bindings.ConnectError{Err: urlErr(io.EOF)}, classUnavailable},
		{"ConnectError ECONNRESET", bindings.ConnectError{Err: urlErr(connErr("read", syscall.ECONNRESET))}, classUnavailable},
		{"ConnectError EPIPE", bindings.ConnectError{Err: urlErr(connErr("write", syscall.EPIPE))}, classUnavailable},
		{"wrapped ConnectError io.ErrUnexpectedEOF", fmt.Errorf("connect: %w", bindings.ConnectError{Err: io.ErrUnexpectedEOF}), classUnavailable},

		// Dropped after the socket accepted the request: retry, do not
		// wait for a reconnection (see classify).
		{"io.EOF mid-request", urlErr(io.EOF), classTimeout},
		{"transport connection broken: EOF", urlErr(fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", io.EOF)), classTimeout},
		{"io.ErrUnexpectedEOF reading the body", fmt.Errorf("unable to process API response: %w", io.ErrUnexpectedEOF), classTimeout},
		{"read ECONNRESET", urlErr(connErr("read", syscall.ECONNRESET)), classTimeout},
		{"write EPIPE", urlErr(connErr("write", syscall.EPIPE)), classTimeout},

		// The caller's own cancellation.
		{"context.Canceled", context.Canceled, classCanceled},
		{"url.Error context.Canceled", urlErr(context.Canceled), classCanceled},
		{"ConnectError context.Canceled", bindings.ConnectError{Err: urlErr(context.Canceled)}, classCanceled},

		// Podman's answers.
		{"ErrorModel 404", &errorhandling.ErrorModel{Message: "no container with name or ID \"x\" found: no such container", ResponseCode: 404}, classNotFound},
		{"wrapped ErrorModel 404", fmt.Errorf("x: %w", &errorhandling.ErrorModel{Message: "gone", ResponseCode: 404}), classNotFound},
		{"ErrorModel 500", &errorhandling.ErrorModel{Message: "crun: cgroups in hybrid mode not supported", ResponseCode: 500}, classOther},
		{"ErrorModel 409", &errorhandling.ErrorModel{Message: "name in use", ResponseCode: 409}, classOther},
		{"ConnectError ping 500", bindings.ConnectError{Err: errors.New("ping response was 500")}, classOther},
		{"dial EACCES", urlErr(dialErr(syscall.EACCES)), classOther},
		{"plain error", errors.New("unmarshalling into ..."), classOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := classify("start container abc", tc.err)
			if c := classOf(got); c != tc.want {
				t.Errorf("classify(%v) = %q (%v), want %q", tc.err, c, got, tc.want)
			}
			if !strings.HasPrefix(got.Error(), "start container abc: ") {
				t.Errorf("message does not name the operation: %q", got)
			}
			// The cause stays inspectable.
			if !errors.Is(got, tc.err) {
				var em *errorhandling.ErrorModel
				if !errors.As(tc.err, &em) { // a 404 keeps only the message
					t.Errorf("classify lost the cause %v: %v", tc.err, got)
				}
			}
		})
	}
	if classify("x", nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// run returns at the deadline even when fn sleeps past it, as the
// bindings do between their retries, and reports the last attempt's error.
func TestRunBoundedByDeadline(t *testing.T) {
	const limit = 50 * time.Millisecond
	slow := func(ctx context.Context) (int, error) {
		time.Sleep(600 * time.Millisecond) // the bindings' 100+200+300 ms
		return 0, urlErr(ctx.Err())
	}
	start := time.Now()
	_, err := run(context.Background(), limit, nil, slow)
	if d := time.Since(start); d > limit+150*time.Millisecond {
		t.Errorf("run took %s with a %s deadline", d, limit)
	}
	if c := classOf(classify("op", err)); c != classTimeout {
		t.Errorf("abandoned call: %v is %s, want timeout", err, c)
	}

	// The last attempt was refused; the deadline hit during the sleep.
	log := new(attempts)
	log.record(dialErr(syscall.ECONNREFUSED))
	_, err = run(context.Background(), limit, log, slow)
	if c := classOf(classify("op", err)); c != classUnavailable {
		t.Errorf("refused then slept into the deadline: %v is %s, want unavailable", err, c)
	}

	// The caller cancels: context.Canceled, whatever the attempts saw.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = run(ctx, time.Hour, log, slow)
	if c := classOf(classify("op", err)); c != classCanceled {
		t.Errorf("cancelled call: %v is %s, want canceled", err, c)
	}
}
