package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"
)

// Freeze freezes every process of the cgroup and its descendants and
// waits until the kernel reports it frozen (v2: frozen 1 in cgroup.events,
// woken by inotify; v1: freezer.state FROZEN, re-checked with a short
// backoff because v1 has no notification). ctx bounds the wait; on
// timeout the cgroup may be left freezing: call Thaw to undo.
func (c *Cgroup) Freeze(ctx context.Context) error { return c.setFrozen(ctx, true) }

// Thaw undoes Freeze and waits until the cgroup is thawed.
func (c *Cgroup) Thaw(ctx context.Context) error { return c.setFrozen(ctx, false) }

func (c *Cgroup) setFrozen(ctx context.Context, frozen bool) error {
	verb := "thaw"
	if frozen {
		verb = "freeze"
	}
	var err error
	if c.h.Version == V2 {
		err = c.setFrozenV2(ctx, frozen)
	} else {
		err = c.setFrozenV1(ctx, frozen)
	}
	if err != nil {
		return fmt.Errorf("%s cgroup %s: %w", verb, c.path, err)
	}
	return nil
}

func (c *Cgroup) setFrozenV2(ctx context.Context, frozen bool) error {
	n, err := newNotifier()
	if err != nil {
		return err
	}
	defer n.close()
	events := c.file("", "cgroup.events")
	// Watch before writing so the transition cannot be missed.
	if _, err := n.add(events, unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ErrGone
		}
		return err
	}
	v := "0"
	if frozen {
		v = "1"
	}
	if err := writeFile(c.file("", "cgroup.freeze"), v); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, n.Wake)
	defer stop()
	for {
		f, b, err := c.read("", "cgroup.events")
		if errors.Is(err, fs.ErrNotExist) {
			return ErrGone
		}
		if err != nil {
			return err
		}
		if len(b) > 0 { // empty: mid-rewrite (fake trees), wait for the next write
			st, err := ParseCgroupEvents(f, b)
			if err != nil {
				return err
			}
			if st.Frozen == frozen {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for frozen=%s in %s: %w", v, events, err)
		}
		if _, err := n.wait(nil, nil, -1); err != nil {
			return err
		}
	}
}

func (c *Cgroup) setFrozenV1(ctx context.Context, frozen bool) error {
	want := "THAWED"
	if frozen {
		want = "FROZEN"
	}
	file := c.file("freezer", "freezer.state")
	delay := time.Millisecond
	for {
		// Writing again kicks a freeze that is stuck in FREEZING.
		if err := writeFile(file, want); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return ErrGone
			}
			return err
		}
		st, err := c.freezerState()
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s in %s (state %s): %w", want, file, st, ctx.Err())
		case <-t.C:
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// Kill kills every process in the cgroup and its descendants: cgroup.kill
// on v2 (5.14+); on v1 (or without cgroup.kill) SIGKILL to each listed
// process, which races with forks: freeze first for a fork bomb.
func (c *Cgroup) Kill() error {
	if c.h.Version == V2 {
		f := c.file("", "cgroup.kill")
		if fileExists(f) {
			return writeFile(f, "1")
		}
	}
	procs, err := c.Processes()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range procs {
		if err := unix.Kill(p.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill pid %d: %w", p.PID, err))
		}
	}
	return errors.Join(errs...)
}
