package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/runtime"
)

// fakeRuntime is an in-memory Podman: containers, events and Wait.
type fakeRuntime struct {
	mu         sync.Mutex
	ctrs       map[string]*fakeCtr // by ID
	nextID     int
	nextPid    int
	down       bool
	events     chan runtime.Event
	exitAtOnce map[string]bool // partition name -> init exits right after start
	creates    int
	starts     int
	removes    int
	clock      func() time.Time
	// startGate, when set, blocks Start until it is closed (a slow Podman).
	startGate chan struct{}
	// startErrs are returned by the next Start calls, in order (the start
	// is then not done).
	startErrs []error
	// stopErr is returned by Stop (the container keeps running).
	stopErr error
	// waitErrs: the next Wait calls fail at once with these.
	waitErrs []error
	waits    int
	kills    int
}

type fakeCtr struct {
	c     runtime.Container
	exitC chan struct{}
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{ctrs: map[string]*fakeCtr{}, nextPid: 1000, exitAtOnce: map[string]bool{}, clock: time.Now}
}

func (f *fakeRuntime) Connect(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return fmt.Errorf("connect: %w", runtime.ErrUnavailable)
	}
	return nil
}

func (f *fakeRuntime) Ping(ctx context.Context) error { return f.Connect(ctx) }

func (f *fakeRuntime) find(nameOrID string) *fakeCtr {
	if c, ok := f.ctrs[nameOrID]; ok {
		return c
	}
	for _, c := range f.ctrs {
		if c.c.Name == nameOrID {
			return c
		}
	}
	return nil
}

func (f *fakeRuntime) Inspect(_ context.Context, nameOrID string) (*runtime.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, runtime.ErrUnavailable
	}
	c := f.find(nameOrID)
	if c == nil {
		return nil, fmt.Errorf("inspect %s: %w", nameOrID, runtime.ErrNotFound)
	}
	cp := c.c
	return &cp, nil
}

// add puts a container in place as if created earlier (adoption tests).
func (f *fakeRuntime) add(name string, labels map[string]string, running bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	id := fmt.Sprintf("%064d", f.nextID)
	c := &fakeCtr{c: runtime.Container{ID: id, Name: name, Labels: labels, Status: "exited"}, exitC: make(chan struct{})}
	if running {
		f.nextPid++
		c.c.Running, c.c.Pid, c.c.Status, c.c.StartedAt = true, f.nextPid, "running", f.clock()
	}
	f.ctrs[id] = c
	return id
}

func (f *fakeRuntime) Create(_ context.Context, p *config.Partition) (string, error) {
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		return "", runtime.ErrUnavailable
	}
	if f.find(p.ContainerNameOrDefault()) != nil {
		f.mu.Unlock()
		return "", fmt.Errorf("create: name %s in use", p.ContainerNameOrDefault())
	}
	f.creates++
	f.mu.Unlock()
	id := f.add(p.ContainerNameOrDefault(), map[string]string{
		runtime.LabelPartition: p.Name, runtime.LabelConfigHash: p.CreateHash()}, false)
	f.mu.Lock()
	if p.Slice != "" {
		f.ctrs[id].c.CgroupParent = p.Slice // Podman under systemd's cgroup manager
	}
	f.mu.Unlock()
	return id, nil
}

// setParent sets the cgroup parent a container was created in.
func (f *fakeRuntime) setParent(id, parent string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctrs[id].c.CgroupParent = parent
}

func (f *fakeRuntime) Start(_ context.Context, id string) error {
	f.mu.Lock()
	gate := f.startGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return runtime.ErrUnavailable
	}
	if len(f.startErrs) > 0 {
		err := f.startErrs[0]
		f.startErrs = f.startErrs[1:]
		return err
	}
	c := f.find(id)
	if c == nil {
		return runtime.ErrNotFound
	}
	f.starts++
	if c.c.Running {
		return nil
	}
	f.nextPid++
	c.c.Running, c.c.Pid, c.c.Status, c.c.StartedAt = true, f.nextPid, "running", f.clock()
	c.exitC = make(chan struct{})
	if f.exitAtOnce[c.c.Labels[runtime.LabelPartition]] {
		f.exitLocked(c, 1, false)
	}
	return nil
}

// kill makes the container's init die with code, as kill -9 would.
func (f *fakeRuntime) kill(name string, code int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(name)
	f.exitLocked(c, code, true)
}

// killQuietly: the init dies and Podman's events stream says nothing (an
// event lost while Podman restarted).
func (f *fakeRuntime) killQuietly(name string, code int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exitLocked(f.find(name), code, false)
}

// emit sends an event as Podman would.
func (f *fakeRuntime) emit(name, action string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(name)
	if c != nil && f.events != nil {
		f.events <- runtime.Event{Time: f.clock(), ID: c.c.ID, Name: c.c.Name, Action: action,
			Partition: c.c.Labels[runtime.LabelPartition], ExitCode: -1}
	}
}

func (f *fakeRuntime) running(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(name)
	return c != nil && c.c.Running
}

// fakeResources is a resource policy that records what the supervisor
// asked of it.
type fakeResources struct {
	mu       sync.Mutex
	cfg      config.Partition
	init     Init
	hooks    Hooks
	high     uint64
	frozen   bool
	kills    int
	freezeFn func() error
	killFn   func()
}

func (r *fakeResources) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (r *fakeResources) Usage() Usage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Usage{MemoryCurrent: 1 << 20, MemoryHigh: r.high, MemoryMax: ^uint64(0), CgroupPath: "/fake"}
}
func (r *fakeResources) SetMemoryHigh(v uint64) error {
	r.mu.Lock()
	r.high = v
	r.mu.Unlock()
	return nil
}
func (r *fakeResources) SetMemoryMax(uint64) error { return nil }
func (r *fakeResources) SetOOMScoreAdj(int) error  { return nil }
func (r *fakeResources) Freeze(context.Context) error {
	if r.freezeFn != nil {
		if err := r.freezeFn(); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.frozen = true
	r.mu.Unlock()
	return nil
}
func (r *fakeResources) Thaw(context.Context) error {
	r.mu.Lock()
	r.frozen = false
	r.mu.Unlock()
	return nil
}
func (r *fakeResources) Kill(context.Context) error {
	r.mu.Lock()
	r.kills++
	fn := r.killFn
	r.mu.Unlock()
	if fn != nil {
		fn()
	}
	return nil
}

// fakeFactory builds fakeResources and remembers each.
type fakeFactory struct {
	mu    sync.Mutex
	built []*fakeResources
}

func (f *fakeFactory) New(p *config.Partition, init Init, h Hooks) (Resources, error) {
	r := &fakeResources{cfg: *p, init: init, hooks: h, high: ^uint64(0)}
	f.mu.Lock()
	f.built = append(f.built, r)
	f.mu.Unlock()
	return r, nil
}

func (f *fakeFactory) last() *fakeResources {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.built) == 0 {
		return nil
	}
	return f.built[len(f.built)-1]
}

func (f *fakeFactory) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.built)
}

func (f *fakeRuntime) exitLocked(c *fakeCtr, code int32, event bool) {
	c.c.Running, c.c.Pid, c.c.Status, c.c.ExitCode = false, 0, "exited", code
	close(c.exitC)
	if event && f.events != nil && !f.down {
		f.events <- runtime.Event{Time: f.clock(), ID: c.c.ID, Name: c.c.Name, Action: "died",
			Partition: c.c.Labels[runtime.LabelPartition], ExitCode: int(code)}
	}
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return runtime.ErrNotFound
	}
	if f.stopErr != nil {
		return f.stopErr
	}
	if c.c.Running {
		f.exitLocked(c, 0, false)
	}
	return nil
}

func (f *fakeRuntime) Kill(_ context.Context, id string, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return runtime.ErrNotFound
	}
	f.kills++
	if c.c.Running {
		f.exitLocked(c, 137, true)
	}
	return nil
}

func (f *fakeRuntime) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.find(id) == nil {
		return runtime.ErrNotFound
	}
	f.removes++
	delete(f.ctrs, id)
	return nil
}

func (f *fakeRuntime) Wait(ctx context.Context, id string) (int32, error) {
	f.mu.Lock()
	f.waits++
	if len(f.waitErrs) > 0 {
		err := f.waitErrs[0]
		f.waitErrs = f.waitErrs[1:]
		f.mu.Unlock()
		return -1, err
	}
	c := f.find(id)
	if c == nil {
		f.mu.Unlock()
		return -1, runtime.ErrNotFound
	}
	exitC := c.exitC
	f.mu.Unlock()
	select {
	case <-exitC:
		f.mu.Lock()
		defer f.mu.Unlock()
		return c.c.ExitCode, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

func (f *fakeRuntime) Events(context.Context, time.Time) (<-chan runtime.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, runtime.ErrUnavailable
	}
	f.events = make(chan runtime.Event, 64)
	return f.events, nil
}

// setDown takes the service away (closing the events stream) or brings it back.
func (f *fakeRuntime) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down && f.events != nil {
		close(f.events)
		f.events = nil
	}
}

func (f *fakeRuntime) count() (creates, starts, ctrs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates, f.starts, len(f.ctrs)
}
