package cgroups

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/testutil"
)

const waitLimit = 5 * time.Second

func nextEvent(t *testing.T, w *Watcher) Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("events closed: %v", w.Err())
		}
		return ev
	case <-time.After(waitLimit):
		t.Fatal("no event")
	}
	return Event{}
}

func expect(t *testing.T, w *Watcher, kind EventKind, count uint64) Event {
	t.Helper()
	ev := nextEvent(t, w)
	if ev.Kind != kind || ev.Count != count {
		t.Fatalf("got %v count %d (err %v), want %v count %d", ev.Kind, ev.Count, ev.Err, kind, count)
	}
	return ev
}

func expectEnd(t *testing.T, w *Watcher) error {
	t.Helper()
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
			t.Logf("event before end: %v %d", ev.Kind, ev.Count)
		case <-time.After(waitLimit):
			t.Fatal("watcher did not end")
		}
	}
}

func memEvents(oom, kill uint64) string {
	return "low 0\nhigh 0\nmax " + itoa(oom) + "\noom " + itoa(oom) + "\noom_kill " + itoa(kill) + "\noom_group_kill 0\n"
}

func itoa(v uint64) string { return strconvFormat(v) }

func TestWatchV2Deltas(t *testing.T) {
	_, cg := fakeV2(t)
	dir := cg.Dir("")
	// A partition that already had OOM kills before qmd started: baseline.
	testutil.WriteTree(t, dir, map[string]string{"memory.events": memEvents(5, 5)})
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	testutil.WriteTree(t, dir, map[string]string{"memory.events": memEvents(6, 6)})
	expect(t, w, EventMemoryMax, 1)
	expect(t, w, EventOOM, 1)
	ev := expect(t, w, EventOOMKill, 1)
	if ev.Path != "/qm" || ev.Time.IsZero() {
		t.Errorf("event %+v", ev)
	}
	testutil.WriteTree(t, dir, map[string]string{"memory.events": memEvents(6, 9)})
	expect(t, w, EventOOMKill, 3)
	// Counter went backwards: cgroup recreated, count from zero.
	testutil.WriteTree(t, dir, map[string]string{"memory.events": memEvents(0, 2)})
	expect(t, w, EventOOMKill, 2)
	// pids.events.
	testutil.WriteTree(t, dir, map[string]string{"pids.events": "max 4\n"})
	expect(t, w, EventPidsMax, 4)
	// No change, no event: the next event is the one after.
	testutil.WriteTree(t, dir, map[string]string{"pids.events": "max 4\n"})
	testutil.WriteTree(t, dir, map[string]string{"pids.events": "max 5\n"})
	expect(t, w, EventPidsMax, 1)
	// cgroup.events transitions.
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 1\nfrozen 1\n"})
	expect(t, w, EventFrozen, 0)
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 0\nfrozen 0\n"})
	expect(t, w, EventEmptied, 0)
	expect(t, w, EventThawed, 0)
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 1\nfrozen 0\n"})
	expect(t, w, EventPopulated, 0)
	// Malformed content: an error event naming the file, and the watcher goes on.
	testutil.WriteTree(t, dir, map[string]string{"memory.events": "oom_kill lots\n"})
	ev = expect(t, w, EventError, 0)
	if !errors.Is(ev.Err, ErrMalformed) || !strings.Contains(ev.Err.Error(), "memory.events") {
		t.Errorf("error event %v", ev.Err)
	}
	testutil.WriteTree(t, dir, map[string]string{"memory.events": memEvents(0, 3)})
	for {
		// The fake's truncate+write gives two IN_MODIFY: maybe a second error.
		ev := nextEvent(t, w)
		if ev.Kind == EventError {
			continue
		}
		if ev.Kind != EventOOMKill || ev.Count != 1 {
			t.Fatalf("after malformed: %v %d", ev.Kind, ev.Count)
		}
		break
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := expectEnd(t, w); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
	w.Close() // idempotent
}

func TestWatchV2CgroupDisappears(t *testing.T) {
	_, cg := fakeV2(t)
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.RemoveAll(cg.Dir("")); err != nil {
		t.Fatal(err)
	}
	if err := expectEnd(t, w); !errors.Is(err, ErrGone) {
		t.Fatalf("end = %v, want ErrGone", err)
	}
	if _, err := cg.Watch(WatchOptions{}); !errors.Is(err, ErrGone) {
		t.Errorf("watch of a gone cgroup: %v", err)
	}
}

func TestWatchV2MissingFiles(t *testing.T) {
	_, cg := fakeV2(t)
	dir := cg.Dir("")
	for _, f := range []string{"memory.events", "pids.events"} {
		os.Remove(filepath.Join(dir, f))
	}
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 0\nfrozen 0\n"})
	expect(t, w, EventEmptied, 0)
	w.Close()
	os.Remove(filepath.Join(dir, "cgroup.events"))
	if _, err := cg.Watch(WatchOptions{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("no files: %v", err)
	}
}

func TestWatchChildren(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		t.Run(v.String(), func(t *testing.T) {
			var cg *Cgroup
			if v == V1 {
				_, cg = fakeV1(t)
			} else {
				_, cg = fakeV2(t)
			}
			w, err := cg.Watch(WatchOptions{Children: true})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			dir := cg.Dir("memory")
			if err := os.Mkdir(filepath.Join(dir, "nested"), 0o755); err != nil {
				t.Fatal(err)
			}
			ev := expect(t, w, EventChildCreated, 0)
			if ev.Path != "/qm/nested" {
				t.Errorf("path %q", ev.Path)
			}
			// Grandchild of a child created after the watch.
			if err := os.Mkdir(filepath.Join(dir, "nested", "libpod-x.scope"), 0o755); err != nil {
				t.Fatal(err)
			}
			ev = expect(t, w, EventChildCreated, 0)
			if ev.Path != "/qm/nested/libpod-x.scope" {
				t.Errorf("path %q", ev.Path)
			}
			// A whole subtree at once (mkdir -p): every level reported.
			if err := os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o755); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for len(got) < 3 {
				ev := expect(t, w, EventChildCreated, 0)
				got[ev.Path] = true
			}
			for _, p := range []string{"/qm/a", "/qm/a/b", "/qm/a/b/c"} {
				if !got[p] {
					t.Errorf("missing %s in %v", p, got)
				}
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if v == V1 {
				// The kernel signals the oom eventfd when a v1 memory
				// cgroup is removed; the open oom_control defers the
				// directory's IN_DELETE_SELF until the watcher closes it.
				signalEventfd(t, w.efd)
			}
			if err := expectEnd(t, w); !errors.Is(err, ErrGone) {
				t.Errorf("end = %v", err)
			}
		})
	}
}

func TestWatchV1Fake(t *testing.T) {
	_, cg := fakeV1(t)
	mem := cg.Dir("memory")
	testutil.WriteTree(t, mem, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
	w, err := cg.Watch(WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The registration line names the eventfd and the oom_control fd.
	reg := readFile(t, filepath.Join(mem, "cgroup.event_control"))
	var efd, ofd int
	if n, err := fmtSscanf(reg, &efd, &ofd); err != nil || n != 2 || efd != w.efd || ofd != w.oomFd {
		t.Fatalf("event_control %q (efd %d ofd %d)", reg, w.efd, w.oomFd)
	}
	// Simulate the kernel: kill counted, then eventfd signalled.
	testutil.WriteTree(t, mem, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n"})
	signalEventfd(t, w.efd)
	expect(t, w, EventOOM, 1)
	expect(t, w, EventOOMKill, 1)
	// Kernel order: eventfd first, the kill a moment later (retry path).
	signalEventfd(t, w.efd)
	expect(t, w, EventOOM, 1)
	testutil.WriteTree(t, mem, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"})
	expect(t, w, EventOOMKill, 2)
	// pids.events on v1.
	testutil.WriteTree(t, cg.Dir("pids"), map[string]string{"pids.events": "max 1\n"})
	expect(t, w, EventPidsMax, 1)
	// The kernel signals the eventfd when the cgroup is removed.
	os.RemoveAll(mem)
	signalEventfd(t, w.efd)
	if err := expectEnd(t, w); !errors.Is(err, ErrGone) {
		t.Errorf("end = %v", err)
	}
}

func signalEventfd(t *testing.T, fd int) { signalEventfdB(t, fd) }

func signalEventfdB(t testing.TB, fd int) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

func TestWatchV1NothingToWatch(t *testing.T) {
	_, cg := fakeV1(t)
	os.Remove(filepath.Join(cg.Dir("memory"), "memory.oom_control"))
	os.Remove(filepath.Join(cg.Dir("pids"), "pids.events"))
	if _, err := cg.Watch(WatchOptions{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("err = %v", err)
	}
}

func TestDelta(t *testing.T) {
	for _, tt := range []struct{ old, cur, want uint64 }{{0, 0, 0}, {0, 3, 3}, {3, 5, 2}, {5, 1, 1}, {5, 0, 0}} {
		if got := delta(tt.old, tt.cur); got != tt.want {
			t.Errorf("delta(%d,%d) = %d", tt.old, tt.cur, got)
		}
	}
}

func TestPSITriggerValidation(t *testing.T) {
	for _, spec := range []PSITriggerSpec{
		{Path: "/proc/pressure/memory", Kind: "most", Threshold: time.Second, Window: 2 * time.Second},
		{Path: "/proc/pressure/memory", Kind: PSISome, Threshold: time.Second, Window: 100 * time.Millisecond},
		{Path: "/proc/pressure/memory", Kind: PSISome, Threshold: time.Second, Window: 11 * time.Second},
		{Path: "/proc/pressure/memory", Kind: PSISome, Threshold: 3 * time.Second, Window: 2 * time.Second},
		{Path: "/proc/pressure/memory", Kind: PSISome, Threshold: 0, Window: 2 * time.Second},
	} {
		if _, err := NewPSITrigger(spec); err == nil {
			t.Errorf("%+v accepted", spec)
		}
	}
	_, err := NewPSITrigger(PSITriggerSpec{Path: filepath.Join(t.TempDir(), "memory.pressure"), Kind: PSISome, Threshold: time.Second, Window: 2 * time.Second})
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("missing pressure file: %v", err)
	}
	if got := (PSITriggerSpec{Kind: PSISome, Threshold: 150 * time.Millisecond, Window: time.Second}).line(); got != "some 150000 1000000\x00" {
		t.Errorf("line %q", got)
	}
}

// TestPSITriggerReal registers a trigger on the host's /proc/pressure/memory.
// Without CAP_SYS_RESOURCE a 1 s window is refused and the 2 s fallback is used.
func TestPSITriggerReal(t *testing.T) {
	const p = "/proc/pressure/memory"
	if !fileExists(p) {
		t.Skip("no PSI on this kernel")
	}
	tr, err := NewPSITrigger(PSITriggerSpec{Path: p, Kind: PSISome, Threshold: 150 * time.Millisecond, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := tr.Registration()
	t.Logf("registration: %+v", reg)
	if reg.Fallback {
		if reg.Spec.Window != 2*time.Second || reg.Spec.Threshold != 300*time.Millisecond || reg.Warning == "" {
			t.Errorf("fallback %+v", reg)
		}
	} else if reg.Spec.Window != time.Second {
		t.Errorf("window %v", reg.Spec.Window)
	}
	if psi, err := tr.Read(); err != nil {
		t.Errorf("Read: %v", err)
	} else {
		t.Logf("psi %+v", psi)
	}
	full, err := NewPSITrigger(PSITriggerSpec{Path: p, Kind: PSIFull, Threshold: time.Second, Window: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if full.Registration().Fallback {
		t.Error("4 s window fell back")
	}
	for _, x := range []*PSITrigger{tr, full} {
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
		if err := x.Err(); err != nil {
			t.Errorf("Err after Close: %v", err)
		}
		if _, ok := <-x.C(); ok {
			t.Error("C not closed")
		}
		x.Close()
	}
}

type fakeUnits struct {
	calls []string
	err   error
}

func (f *fakeUnits) SetUnitPropertiesContext(_ context.Context, name string, runtime bool, props ...sddbus.Property) error {
	for _, p := range props {
		f.calls = append(f.calls, name+" "+p.Name+"="+p.Value.String()+" runtime="+boolStr(runtime))
	}
	return f.err
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestChooseSetter(t *testing.T) {
	h, _ := fakeV2(t)
	sd := &fakeUnits{}
	scope, _ := h.Open("/machine.slice/libpod-abc.scope")
	plain, _ := h.Open("/qm")
	nested, _ := h.Open("/machine.slice/libpod-abc.scope/machine.slice/libpod-def.scope/x")
	for _, tt := range []struct {
		cg      *Cgroup
		sd      UnitPropertySetter
		booted  bool
		wantVia string
	}{
		{scope, sd, true, "systemd libpod-abc.scope"},
		{scope, sd, false, "cgroupfs /machine.slice/libpod-abc.scope"},
		{scope, nil, true, "cgroupfs /machine.slice/libpod-abc.scope"},
		{plain, sd, true, "cgroupfs /qm"},
		{nested, sd, true, "cgroupfs " + nested.Path()},
	} {
		if got := ChooseSetter(tt.cg, tt.sd, tt.booted).Via(); got != tt.wantVia {
			t.Errorf("ChooseSetter(%s, booted %v) = %s, want %s", tt.cg.Path(), tt.booted, got, tt.wantVia)
		}
	}
}

func TestSystemdSetter(t *testing.T) {
	sd := &fakeUnits{}
	s := &SystemdSetter{Conn: sd, Unit: "libpod-abc.scope"}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetMemoryHigh(ctx, 300<<20))
	must(s.SetMemoryMax(ctx, Max))
	must(s.SetMemorySwapMax(ctx, 0))
	must(s.SetCPUWeight(ctx, 1))
	must(s.SetCPUMax(ctx, CPUMax{Quota: 50000, Period: 100000}))
	must(s.SetCPUMax(ctx, CPUMax{Quota: Max}))
	must(s.SetPidsMax(ctx, 1000))
	want := []string{
		"libpod-abc.scope MemoryHigh=@t 314572800 runtime=true",
		"libpod-abc.scope MemoryMax=@t 18446744073709551615 runtime=true",
		"libpod-abc.scope MemorySwapMax=@t 0 runtime=true",
		"libpod-abc.scope CPUWeight=@t 1 runtime=true",
		"libpod-abc.scope CPUQuotaPerSecUSec=@t 500000 runtime=true",
		"libpod-abc.scope CPUQuotaPeriodUSec=@t 100000 runtime=true",
		"libpod-abc.scope CPUQuotaPerSecUSec=@t 18446744073709551615 runtime=true",
		"libpod-abc.scope TasksMax=@t 1000 runtime=true",
	}
	if strings.Join(sd.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(sd.calls, "\n"), strings.Join(want, "\n"))
	}
	if err := s.SetCPUWeight(ctx, 0); err == nil {
		t.Error("weight 0 accepted")
	}
	sd.err = errors.New("unit not loaded")
	err := s.SetMemoryHigh(ctx, 1)
	if err == nil || !strings.Contains(err.Error(), "MemoryHigh of unit libpod-abc.scope") {
		t.Errorf("err = %v", err)
	}
	// The cgroupfs setter writes the files.
	_, cg := fakeV2(t)
	fs := CgroupfsSetter{Cgroup: cg}
	must(fs.SetMemoryHigh(ctx, 1<<20))
	must(fs.SetMemoryMax(ctx, 2<<20))
	must(fs.SetMemorySwapMax(ctx, 0))
	must(fs.SetCPUWeight(ctx, 50))
	must(fs.SetCPUMax(ctx, CPUMax{Quota: 1000, Period: 10000}))
	must(fs.SetPidsMax(ctx, 10))
	if got := readFile(t, filepath.Join(cg.Dir(""), "memory.high")); got != "1048576" {
		t.Errorf("memory.high %q", got)
	}
}

func strconvFormat(v uint64) string { return strconv.FormatUint(v, 10) }

func fmtSscanf(s string, a, b *int) (int, error) { return fmt.Sscanf(s, "%d %d", a, b) }
