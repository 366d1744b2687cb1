//go:build remote

package podman

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/runtime"
	"github.com/containers/qmd/test/harness"
)

// TestRealPodman runs the client against a private Podman 4.3.1 API
// service (test/harness). It skips under -short or without root, podman,
// runc and busybox, and fails instead when QMD_INTEGRATION=1 is set.
func TestRealPodman(t *testing.T) {
	pm := harness.StartPodman(t)
	rootfs := harness.Rootfs(t, "loop")
	ctx := context.Background()
	c := New(pm.URI(), 10*time.Second)
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	t.Run("missing container is ErrNotFound", func(t *testing.T) {
		_, err := c.Inspect(ctx, "qmd-no-such-container")
		if !errors.Is(err, runtime.ErrNotFound) || errors.Is(err, runtime.ErrUnavailable) {
			t.Errorf("inspect missing: %v, want ErrNotFound", err)
		}
		for op, err := range map[string]error{
			"stop": c.Stop(ctx, "qmd-no-such-container", time.Second),
			"kill": c.Kill(ctx, "qmd-no-such-container", "SIGKILL"),
		} {
			if !errors.Is(err, runtime.ErrNotFound) {
				t.Errorf("%s missing: %v, want ErrNotFound", op, err)
			}
		}
	})

	p := config.DefaultPartition("qmd-podman-test")
	p.Rootfs = rootfs
	p.Volumes, p.Devices = nil, nil
	p.Network = "none"
	p.Seccomp = filepath.Join(harness.Repo(t), "configs", "seccomp-no-rt.json")
	p.Rlimits = map[string]string{"nofile": "1024:20000", "nproc": "4096:32768"} // HOST-FACTS: within the hard limits
	p.StopTimeout = config.Duration{Duration: 2 * time.Second}
	id, err := c.Create(ctx, &p)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	running := func(t *testing.T) *runtime.Container {
		t.Helper()
		if err := c.Start(ctx, id); err != nil {
			t.Fatalf("start: %v", err)
		}
		ct, err := c.Inspect(ctx, id)
		if err != nil || !ct.Running || ct.Pid <= 0 {
			t.Fatalf("after start: %+v %v", ct, err)
		}
		if ct.Name != p.Name || ct.Labels[LabelPartition] != p.Name {
			t.Errorf("inspect by ID: name %q labels %v", ct.Name, ct.Labels)
		}
		return ct
	}
	stopped := func(t *testing.T, what string) *runtime.Container {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ct, err := c.Inspect(ctx, p.Name)
			if err != nil {
				t.Fatalf("inspect after %s: %v", what, err)
			}
			if !ct.Running {
				if ct.Pid != 0 {
					t.Errorf("after %s: not running but pid %d", what, ct.Pid)
				}
				return ct
			}
			if time.Now().After(deadline) {
				t.Fatalf("still running 10 s after %s: %+v", what, ct)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	t.Run("kill SIGKILL makes it exit", func(t *testing.T) {
		running(t)
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		waited := make(chan error, 1)
		var code int32
		go func() {
			var err error
			code, err = c.Wait(wctx, id)
			waited <- err
		}()
		time.Sleep(200 * time.Millisecond) // let the long poll reach Podman
		if err := c.Kill(ctx, id, "SIGKILL"); err != nil {
			t.Fatalf("kill: %v", err)
		}
		ct := stopped(t, "SIGKILL")
		if err := <-waited; err != nil {
			t.Errorf("wait: %v", err)
		} else if code != 137 || ct.ExitCode != 137 {
			t.Errorf("exit code: wait %d, inspect %d; want 137", code, ct.ExitCode)
		}
		if err := c.Kill(ctx, id, ""); err == nil {
			t.Error("kill without a signal accepted")
		}
	})

	t.Run("stop of a stopped container is not an error", func(t *testing.T) {
		// Podman answers 304 Not Modified, which the bindings take as
		// success.
		began := time.Now()
		if err := c.Stop(ctx, id, 2*time.Second); err != nil {
			t.Errorf("stop of a stopped container: %v", err)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("stop of a stopped container took %s", d)
		}
		// Kill of a stopped container, by contrast, is refused (4.3.1: 500
		// "can only kill running containers ... container state improper"): a
		// plain error, none of the runtime classes.
		err := c.Kill(ctx, id, "SIGKILL")
		if err == nil || errors.Is(err, runtime.ErrNotFound) || errors.Is(err, runtime.ErrUnavailable) || errors.Is(err, runtime.ErrTimeout) {
			t.Errorf("kill of a stopped container: %v, want a plain error", err)
		}
		t.Logf("kill of a stopped container: %v", err)
	})

	t.Run("stop of a running container", func(t *testing.T) {
		running(t)
		if err := c.Stop(ctx, id, 2*time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
		stopped(t, "stop")
	})

	t.Run("remove", func(t *testing.T) {
		if err := c.Remove(ctx, id); err != nil {
			t.Fatalf("remove: %v", err)
		}
		if _, err := c.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("inspect after remove: %v, want ErrNotFound", err)
		}
		err := c.Remove(ctx, id)
		t.Logf("remove of a removed container: %v", err)
		if err != nil && !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("remove of a removed container: %v, want nil or ErrNotFound", err)
		}
	})

	t.Run("service gone is ErrUnavailable", func(t *testing.T) {
		pm.Kill() // SIGKILL, socket removed
		for op, err := range map[string]error{
			"ping":  c.Ping(ctx),
			"start": c.Start(ctx, id),
			"stop":  c.Stop(ctx, id, time.Second),
		} {
			if !errors.Is(err, runtime.ErrUnavailable) || errors.Is(err, runtime.ErrTimeout) {
				t.Errorf("%s with the service gone: %v, want ErrUnavailable", op, err)
			}
		}
		if _, err := c.Inspect(ctx, p.Name); !errors.Is(err, runtime.ErrUnavailable) {
			t.Errorf("inspect with the service gone: %v, want ErrUnavailable", err)
		}
		if err := c.Connect(ctx); !errors.Is(err, runtime.ErrUnavailable) {
			t.Errorf("connect with the service gone: %v, want ErrUnavailable", err)
		}
	})
}
