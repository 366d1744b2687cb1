package protect

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups/psitest"
)

// psiText is a pressure file with the given some total (µs).
func psiText(some uint64) string {
	return fmt.Sprintf("some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", some)
}

// pressureFiles are a fake cgroup's three pressure files.
func pressureFiles(cg string, some uint64) map[string]string {
	m := map[string]string{}
	for _, k := range []Kind{Memory, CPU, IO} {
		m[filepath.Join(cg, k.file())] = psiText(some)
	}
	return m
}

// fakeSystemd resolves units from a map and records property changes.
type fakeSystemd struct {
	mu      sync.Mutex
	cgroups map[string]string
	lookups int
	props   map[string][]sddbus.Property
	runtime bool
}

func newFakeSystemd(units map[string]string) *fakeSystemd {
	return &fakeSystemd{cgroups: units, props: map[string][]sddbus.Property{}}
}

func (f *fakeSystemd) ControlGroup(_ context.Context, unit string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	return f.cgroups[unit], nil
}

func (f *fakeSystemd) SetUnitProperties(_ context.Context, unit string, runtime bool, props ...sddbus.Property) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.props[unit] = append(f.props[unit], props...)
	f.runtime = runtime
	return nil
}

func (f *fakeSystemd) set(unit, cg string) {
	f.mu.Lock()
	f.cgroups[unit] = cg
	f.mu.Unlock()
}

// fakeV2 is a fake cgroup2 tree (PSIRoot and memory on v2).
func fakeV2(t *testing.T) string {
	root := t.TempDir()
	testutil.WriteTree(t, root, map[string]string{"cgroup.controllers": "cpu io memory pids\n", "cgroup.procs": ""})
	return root
}

func testConfig(entries ...Entry) Config {
	return Config{Entries: entries, Window: 2 * time.Second, MemoryThreshold: 150 * time.Millisecond,
		CPUThreshold: 100 * time.Millisecond, IOThreshold: 100 * time.Millisecond, Resync: time.Hour}
}

type harness struct {
	p    *Protector
	ft   *psitest.Triggers
	sd   *fakeSystemd
	root string
	logs *observer.ObservedLogs
	mu   sync.Mutex
	incs []Incident
}

func (h *harness) incidents(typ string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, i := range h.incs {
		if i.Type == typ {
			n++
		}
	}
	return n
}

// start runs a protector on a fake tree with fake triggers; sd may be nil
// (no systemd).
func start(t *testing.T, root string, sd *fakeSystemd, cfg Config, tweak func(*Options)) *harness {
	return startWith(t, root, sd, nil, cfg, tweak)
}

// startWith is start with systemd's unit change events (events nil: none).
func startWith(t *testing.T, root string, sd *fakeSystemd, events chan string, cfg Config, tweak func(*Options)) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{ft: psitest.NewTriggers(), sd: sd, root: root, logs: logs}
	o := Options{CgroupRoot: root, ProcRoot: filepath.Join(root, "no-proc"), Log: zap.New(core),
		OpenTrigger: h.ft.Open, RearmMin: time.Millisecond,
		Incident: func(i Incident) { h.mu.Lock(); h.incs = append(h.incs, i); h.mu.Unlock() }}
	if sd != nil {
		o.Systemd = sd
		if events != nil {
			o.Systemd = watchingSystemd{fakeSystemd: sd, events: events}
		}
	}
	if tweak != nil {
		tweak(&o)
	}
	p, err := New(o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	testutil.RunInBackground(t, p.Run)
	return h
}

func (h *harness) file(cg string, k Kind) string {
	return filepath.Join(h.root, filepath.FromSlash(cg), k.file())
}

func (h *harness) waitArmed(t *testing.T, cg string, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%d arms on %s", n, cg), func() bool {
		for _, k := range []Kind{Memory, CPU, IO} {
			if h.ft.Count(h.file(cg, k)) < n {
				return false
			}
		}
		return true
	})
}

func recv(t *testing.T, ch <-chan Signal) Signal {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no signal")
	}
	return Signal{}
}

func noSignal(t *testing.T, ch <-chan Signal) {
	t.Helper()
	select {
	case s := <-ch:
		t.Fatalf("unexpected signal %+v", s)
	case <-time.After(50 * time.Millisecond):
	}
}

// watchingSystemd is a fakeSystemd that also reports unit changes.
type watchingSystemd struct {
	*fakeSystemd
	events chan string
}

func (w watchingSystemd) WatchUnits(ctx context.Context) (<-chan string, error) { return w.events, nil }

func nopLog() *zap.Logger { return zap.NewNop() }
