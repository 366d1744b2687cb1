//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/errorhandling"

	"github.com/containers/qmd/internal/runtime"
)

// classify maps a Podman or transport error of operation op onto
// runtime's sentinels. The supervisor acts on the class, so the classes
// must say what the caller should do next:
//
//	caller's cancellation (context.Canceled)        -> context.Canceled, no sentinel
//	deadline: context.DeadlineExceeded anywhere,     -> runtime.ErrTimeout
//	  any error whose Timeout() is true (net.Error,
//	  url.Error, http.Client.Timeout, EAGAIN/ETIMEDOUT)
//	Podman answered 404                              -> runtime.ErrNotFound
//	socket refused or absent (ECONNREFUSED, ENOENT)  -> runtime.ErrUnavailable
//	connection closed while connecting: ECONNRESET,  -> runtime.ErrUnavailable
//	  EPIPE, ECONNABORTED, io.EOF, io.ErrUnexpectedEOF
//	  in a dial or in bindings.ConnectError
//	the same closed connection mid-request (after    -> runtime.ErrTimeout
//	  the socket accepted it)
//	anything else (other HTTP status, bad answer)    -> plain error, op named
//
// A connection dropped mid-request is "busy, not gone" on purpose. It
// proves the socket was reachable: a proxy or an overloaded service that
// gives up on a request is not a lost service, and ErrUnavailable would make
// the supervisor wait for a reconnection that never comes while the events
// stream stays healthy (the bug this classification fixes: a start request
// held for 15 s and then dropped left the partition down). If the service
// really died, nothing is lost by retrying: its events stream ends too, so
// the supervisor reconnects anyway, and the retry's dial is refused, which
// is ErrUnavailable. The bindings make this sharper still: DoRequest retries
// a failed request twice (after 100 and 200 ms) and returns the LAST
// attempt's error, so a mid-request EOF only surfaces when the socket still
// accepted connections a few hundred milliseconds later; a dead service
// shows up as the retry's ECONNREFUSED/ENOENT.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		// The caller gave up (shutdown, a superseding request): neither
		// Podman's fault nor a reason to reconnect.
		return fmt.Errorf("%s: %w", op, err)
	}
	if timedOut(err) {
		return fmt.Errorf("%s: %w: %w", op, runtime.ErrTimeout, err)
	}
	var em *errorhandling.ErrorModel
	if errors.As(err, &em) {
		if em.ResponseCode == http.StatusNotFound {
			return fmt.Errorf("%s: %w: %s", op, runtime.ErrNotFound, em.Message)
		}
		return fmt.Errorf("%s: podman answered %d: %w", op, em.ResponseCode, err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%s: %w: %w", op, runtime.ErrUnavailable, err)
	}
	if dropped(err) {
		if whileConnecting(err) {
			return fmt.Errorf("%s: %w: %w", op, runtime.ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w: connection dropped before podman answered: %w", op, runtime.ErrTimeout, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// timedOut: the call ran into a deadline.
func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return inChain(err, func(e error) bool {
		t, ok := e.(interface{ Timeout() bool })
		return ok && t.Timeout()
	})
}

// dropped: a connection was closed under the request.
func dropped(err error) bool {
	for _, target := range []error{syscall.ECONNRESET, syscall.EPIPE, syscall.ECONNABORTED, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// whileConnecting: the error happened while dialling the socket or inside
// bindings.NewConnection's ping (no working connection was established).
func whileConnecting(err error) bool {
	var ce bindings.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pce *bindings.ConnectError
	if errors.As(err, &pce) {
		return true
	}
	return inChain(err, func(e error) bool {
		oe, ok := e.(*net.OpError)
		return ok && oe.Op == "dial"
	})
}

// inChain reports whether pred holds for err or any error it wraps
// (both Unwrap() error and Unwrap() []error).
func inChain(err error, pred func(error) bool) bool {
	for depth := 0; err != nil && depth < 100; depth++ {
		if pred(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if inChain(e, pred) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}
