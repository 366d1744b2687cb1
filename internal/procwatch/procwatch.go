// Package procwatch tells when a process exits, without polling: a pidfd
// (Linux 5.3+) becomes readable when the process is gone. qmd watches the
// partition's init this way to learn of a crash at once; the Podman events
// stream and Wait remain as the portable sources.
package procwatch

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrUnsupported: the kernel has no pidfd_open.
var ErrUnsupported = errors.New("pidfd_open not supported")

// Watch returns a channel that is closed when process pid exits (or ctx
// ends). The pidfd is opened before Watch returns, so an exit right after
// the call is not missed; a pid that is already gone is an error.
func Watch(ctx context.Context, pid int) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch pid %d: not a process", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return nil, ErrUnsupported
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// An eventfd lets ctx cancellation interrupt the poll.
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			var one [8]byte
			one[0] = 1
			_, _ = unix.Write(wake, one[:])
		case <-stop:
		}
	}()
	go func() {
		defer close(done)
		defer close(stop)
		defer unix.Close(fd)
		defer unix.Close(wake)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // the process exited, ctx ended, or poll failed
		}
	}()
	return done, nil
}
