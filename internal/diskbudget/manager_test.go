package diskbudget

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/runtime"
)

// fakeRT is the engine as the wrapper sees it: one container whose init
// is a real process (so the watch finds its real descendants).
type fakeRT struct {
	runtime.Runtime
	mu      sync.Mutex
	c       *runtime.Container
	calls   []string
	mounted []bool // whether the budget was mounted at each Create/Start
	path    string
}

func (f *fakeRT) Inspect(_ context.Context, name string) (*runtime.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c == nil || (name != f.c.ID && name != f.c.Name) {
		return nil, runtime.ErrNotFound
	}
	c := *f.c
	return &c, nil
}

func (f *fakeRT) note(call string) {
	_, ok, _ := mountSource(f.path)
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mounted = append(f.mounted, ok)
	f.mu.Unlock()
}

func (f *fakeRT) Create(_ context.Context, p *config.Partition) (string, error) {
	f.note("create")
	f.mu.Lock()
	f.c = &runtime.Container{ID: "c1", Name: p.ContainerNameOrDefault(), Labels: map[string]string{runtime.LabelPartition: p.Name}}
	f.mu.Unlock()
	return "c1", nil
}

func (f *fakeRT) Start(context.Context, string) error {
	f.note("start")
	return nil
}

type sink struct {
	mu   sync.Mutex
	incs []incident.Incident
}

func (s *sink) Record(inc incident.Incident) incident.Incident {
	s.mu.Lock()
	s.incs = append(s.incs, inc)
	s.mu.Unlock()
	return inc
}

func (s *sink) find(action string) *incident.Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.incs {
		if s.incs[i].Type == incident.DiskBudget && s.incs[i].Details["action"] == action {
			inc := s.incs[i]
			return &inc
		}
	}
	return nil
}

func partitionCfg(t *testing.T, path, max, reserve string) *config.Config {
	t.Helper()
	src := "[[partition]]\nname = \"qm\"\n[partition.disk]\nmax = \"" + max + "\"\npath = \"" + path + "\"\nreserve = \"" + reserve + "\"\n"
	c, err := config.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The wrapped runtime mounts the budget before the container is created
// and started, so the bind mount of the volume is the image; a start of a
// running container never touches the disk.
func TestWrapMountsBeforeCreateAndStart(t *testing.T) {
	host := hostFS(t, "128m")
	path := filepath.Join(host, "qm")
	cfg := partitionCfg(t, path, "32M", "8M")
	s := &sink{}
	m := New(cfg, Options{Sink: s})
	inner := &fakeRT{path: path}
	rt := m.Wrap(inner)
	id, err := rt.Create(context.Background(), &cfg.Partitions[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if strings.Join(inner.calls, ",") != "create,start" || !inner.mounted[0] || !inner.mounted[1] {
		t.Fatalf("calls %v, mounted %v: the budget must be mounted before create and start", inner.calls, inner.mounted)
	}
	if inc := s.find(string(Created)); inc == nil || inc.Partition != "qm" {
		t.Fatalf("no disk-budget incident for the created image: %+v", s.incs)
	}

	// Nearly full: reported once (log, incident), again only after relief.
	m.Poll(context.Background())
	if s.find("nearly-full") != nil {
		t.Fatal("an empty image reported nearly full")
	}
	if n, err := fillUntilFull(path); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill: %d bytes, %v", n, err)
	}
	m.Poll(context.Background())
	m.Poll(context.Background())
	if inc := s.find("nearly-full"); inc == nil {
		t.Fatal("a full image not reported")
	}
	count := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, inc := range s.incs {
			if inc.Details["action"] == "nearly-full" {
				n++
			}
		}
		return n
	}
	if n := count(); n != 1 {
		t.Errorf("%d nearly-full incidents for one episode, want 1", n)
	}
	if err := os.Remove(filepath.Join(path, "filler")); err != nil {
		t.Fatal(err)
	}
	m.Poll(context.Background())
	if n, err := fillUntilFull(path); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill: %d bytes, %v", n, err)
	}
	m.Poll(context.Background())
	if n := count(); n != 2 {
		t.Errorf("%d nearly-full incidents after relief and a second fill, want 2", n)
	}
	if err := os.Remove(filepath.Join(path, "filler")); err != nil {
		t.Fatal(err)
	}

	// A budget that cannot be applied stops the start.
	if err := syscall.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "stray"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background(), id); !errors.Is(err, ErrRefused) {
		t.Fatalf("start with data in the way: %v, want refused", err)
	}
	if len(inner.calls) != 2 {
		t.Errorf("the engine was asked to start although the budget was refused: %v", inner.calls)
	}
	if s.find("refused") == nil {
		t.Error("no disk-budget incident for the refusal")
	}
	// A running container (adopted, or a start that races an event) is
	// never migrated or mounted under: the engine gets the call as is.
	inner.mu.Lock()
	inner.c.Running = true
	inner.mu.Unlock()
	if err := rt.Start(context.Background(), id); err != nil {
		t.Fatalf("start of a running container: %v", err)
	}
	if isMount(t, path) {
		t.Error("the budget was mounted under a running container")
	}
	if _, err := os.Stat(filepath.Join(path, "stray")); err != nil {
		t.Errorf("data of a running partition touched: %v", err)
	}
}

// Where loop images are unavailable, the start says so (incident) and the
// free-space watch kills the partition's largest writer once the host
// filesystem drops below the reserve; the partition's init and its other
// processes live on.
func TestWatchKillsLargestWriterBelowReserve(t *testing.T) {
	host := hostFS(t, "96m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := partitionCfg(t, path, "32M", "48M")
	s := &sink{}
	var killed []int
	var kmu sync.Mutex
	m := New(cfg, Options{
		Sink:     s,
		Probe:    func() error { return errors.New("forced by the test") },
		Interval: 50 * time.Millisecond, Near: 20 * time.Millisecond,
		Kill: func(pid int) error {
			kmu.Lock()
			killed = append(killed, pid)
			kmu.Unlock()
			return syscall.Kill(pid, syscall.SIGKILL)
		},
	})
	// The "partition": an init (sh) with a quiet child and a filler.
	// The filler writes ~25 MB/s from one long-lived process (the
	// subshell itself, printf is a builtin) so the test sees how far below
	// the reserve one poll lets it get.
	init := exec.Command("sh", "-c", `sleep 60 & (exec 3>"$1/fill"; while :; do printf "%262144s" "" >&3 || exit; sleep 0.01; done) & echo $! >"$1.writer"; wait`, "sh", path)
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	inner := &fakeRT{path: path, c: &runtime.Container{ID: "c1", Name: "qm", Running: true, Pid: init.Process.Pid,
		Labels: map[string]string{runtime.LabelPartition: "qm"}}}
	rt := m.Wrap(inner)
	if m.Mechanism() != MechWatch {
		t.Fatal("probe failure did not select the free-space watch")
	}
	// The fallback is announced at the start of the partition.
	if err := m.Ensure(context.Background(), &cfg.Partitions[0]); err != nil {
		t.Fatal(err)
	}
	if s.find("fallback") == nil {
		t.Fatal("no incident announcing the fallback")
	}
	_ = rt
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var inc *incident.Incident
	for inc == nil && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		inc = s.find("kill-writer")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if inc == nil {
		t.Fatalf("no writer killed; free %d", free(t, host))
	}
	t.Logf("incident: %s", inc.Summary)
	b, err := os.ReadFile(path + ".writer")
	if err != nil {
		t.Fatal(err)
	}
	writer, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	kmu.Lock()
	defer kmu.Unlock()
	if len(killed) != 1 || killed[0] != writer {
		t.Errorf("killed %v, want exactly the filler %d", killed, writer)
	}
	if inc.Details["pid"] != strconv.Itoa(writer) {
		t.Errorf("incident names pid %s, want the filler %d", inc.Details["pid"], writer)
	}
	if err := syscall.Kill(init.Process.Pid, 0); err != nil {
		t.Errorf("the partition's init was hurt: %v", err)
	}
	// Its other process (sleep) lives on too; the killed writer is gone
	// once its parent has reaped it.
	var left []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left = descendants(init.Process.Pid); len(left) == 1 {
			break
		}
	}
	if len(left) != 1 {
		t.Errorf("processes left below init: %v, want the sleep only", left)
	} else if c := readComm(left[0]); c != "sleep" {
		t.Errorf("the process left below init is %q, want the sleep", c)
	}
	time.Sleep(100 * time.Millisecond)
	f := free(t, host)
	t.Logf("host free after the reaction: %d (reserve %d)", f, 48<<20)
	// One poll (20 ms) of writes at most below the reserve.
	if f < 44<<20 {
		t.Errorf("free space %d fell far below the reserve %d", f, 48<<20)
	}
}

// A quiet partition below the reserve (the data is there, nobody in it
// writes; the host takes the space) is left alone: killing would not give
// the space back.
func TestWatchLeavesIdlePartitionAlone(t *testing.T) {
	host := hostFS(t, "64m")
	path := filepath.Join(host, "qm")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := partitionCfg(t, path, "32M", "60M")
	s := &sink{}
	m := New(cfg, Options{Sink: s, Probe: func() error { return errors.New("forced") },
		Kill: func(int) error { t.Error("killed a process of an idle partition"); return nil }})
	// Its process wrote before (a large wchar total) but writes no more.
	init := exec.Command("sh", "-c", `(printf "%1000000s" "" >/dev/null; while :; do sleep 1; done) & wait`)
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	m.Wrap(&fakeRT{path: path, c: &runtime.Container{ID: "c1", Name: "qm", Running: true, Pid: init.Process.Pid}})
	if err := m.Ensure(context.Background(), &cfg.Partitions[0]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the subshell has written
	for i := 0; i < 3; i++ {
		// The host (not the partition) takes space between polls.
		if err := os.WriteFile(filepath.Join(host, "hostdata"+strconv.Itoa(i)), make([]byte, 2<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if !m.Poll(context.Background()) {
			t.Error("below the reserve but not polling fast")
		}
	}
	if s.find("kill-writer") != nil {
		t.Error("a kill was recorded")
	}
}

// A partition adopted at qmd start (never started by this qmd) is
// watched from Run's start on; a reload that removes its budget stops it.
func TestWatchFollowsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qm")
	cfg := partitionCfg(t, path, "32M", "1M")
	s := &sink{}
	m := New(cfg, Options{Sink: s, Probe: func() error { return errors.New("forced") }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.find("fallback") == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	watched := func() int {
		m.watchMu.Lock()
		defer m.watchMu.Unlock()
		return len(m.watch)
	}
	if s.find("fallback") == nil || watched() != 1 {
		t.Fatalf("adopted partition not watched: %d watched, incidents %+v", watched(), s.incs)
	}
	off, err := config.Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	m.SetConfig(off)
	if watched() != 0 {
		t.Error("a removed budget is still watched")
	}
}
