package cgroups

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// notifier multiplexes an inotify instance, extra fds (eventfds, PSI
// files) and a wake-up eventfd in one poll(2). It blocks without a
// timeout unless asked: no wake-ups when nothing happens.
type notifier struct {
	ifd  int // inotify
	wake int // eventfd; written by Wake to interrupt wait

	mu      sync.Mutex
	closed  bool
	watches map[int32]string // inotify wd -> path
}

func newNotifier() (*notifier, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ifd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &notifier{ifd: ifd, wake: wake, watches: map[int32]string{}}, nil
}

func (n *notifier) add(path string, mask uint32) (int32, error) {
	wd, err := unix.InotifyAddWatch(n.ifd, path, mask)
	if err != nil {
		return -1, fmt.Errorf("inotify watch %s: %w", path, err)
	}
	n.mu.Lock()
	n.watches[int32(wd)] = path
	n.mu.Unlock()
	return int32(wd), nil
}

func (n *notifier) pathOf(wd int32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.watches[wd]
}

func (n *notifier) forget(wd int32) {
	n.mu.Lock()
	delete(n.watches, wd)
	n.mu.Unlock()
}

// Wake interrupts a wait in progress (or the next one). Safe to call from
// any goroutine until close.
func (n *notifier) Wake() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	_, _ = unix.Write(n.wake, b[:])
}

// inotifyEvent is one decoded inotify event.
type inotifyEvent struct {
	wd   int32
	mask uint32
	name string
}

// waitResult says what became ready.
type waitResult struct {
	woken   bool
	inotify []inotifyEvent
	extra   []int16 // revents per extra fd, same order as given
}

// wait blocks until the inotify fd, one of extra (polled for events[i]) or
// the wake fd is ready, or timeout passes (negative: no timeout).
func (n *notifier) wait(extra []int, events []int16, timeout time.Duration) (waitResult, error) {
	fds := make([]unix.PollFd, 0, 2+len(extra))
	fds = append(fds, unix.PollFd{Fd: int32(n.ifd), Events: unix.POLLIN}, unix.PollFd{Fd: int32(n.wake), Events: unix.POLLIN})
	for i, fd := range extra {
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: events[i]})
	}
	var ts *unix.Timespec
	if timeout >= 0 {
		t := unix.NsecToTimespec(timeout.Nanoseconds())
		ts = &t
	}
	for {
		_, err := unix.Ppoll(fds, ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return waitResult{}, fmt.Errorf("poll: %w", err)
		}
		break
	}
	var res waitResult
	if fds[1].Revents&unix.POLLIN != 0 {
		var b [8]byte
		_, _ = unix.Read(n.wake, b[:])
		res.woken = true
	}
	if fds[0].Revents&unix.POLLIN != 0 {
		evs, err := n.readInotify()
		if err != nil {
			return res, err
		}
		res.inotify = evs
	}
	res.extra = make([]int16, len(extra))
	for i := range extra {
		res.extra[i] = fds[2+i].Revents
	}
	return res, nil
}

func (n *notifier) readInotify() ([]inotifyEvent, error) {
	var buf [64 * (unix.SizeofInotifyEvent + unix.NAME_MAX + 1)]byte
	var out []inotifyEvent
	for {
		k, err := unix.Read(n.ifd, buf[:])
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameLen := int(raw.Len)
			ev := inotifyEvent{wd: raw.Wd, mask: raw.Mask}
			start := off + unix.SizeofInotifyEvent
			if nameLen > 0 && start+nameLen <= k {
				name := buf[start : start+nameLen]
				for i, c := range name {
					if c == 0 {
						name = name[:i]
						break
					}
				}
				ev.name = string(name)
			}
			out = append(out, ev)
			off = start + nameLen
		}
		if k < len(buf)/2 {
			return out, nil
		}
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	unix.Close(n.ifd)
	unix.Close(n.wake)
}
