package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsWithoutFiles(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Partitions) != 1 {
		t.Fatalf("want the built-in partition, got %d", len(c.Partitions))
	}
	p := c.Partitions[0]
	if p.Name != "qm" || p.Rootfs != "/usr/lib/qm/rootfs" || p.OOMScoreAdj != 500 || p.NestedOOMScoreAdj != 750 {
		t.Errorf("defaults do not mirror qm.container: %+v", p)
	}
	if p.Restart.StartLimitBurst != 5 || p.Restart.StartLimitInterval.Duration != 10*time.Second ||
		p.Restart.BackoffInitial.Duration != 100*time.Millisecond || p.Restart.BackoffMax.Duration != 30*time.Second {
		t.Errorf("restart defaults: %+v", p.Restart)
	}
	if c.Podman.Socket != "unix:///run/podman/podman.sock" || p.StopOnExit {
		t.Errorf("podman/stop defaults: %+v stop_on_exit=%v", c.Podman, p.StopOnExit)
	}
	if p.Sysctl["fs.mqueue.queues_max"] != "4" || !p.ReadOnly {
		t.Errorf("sysctl/read-only defaults: %+v", p)
	}
}

func TestShippedConfigIsValidAndMatchesDefaults(t *testing.T) {
	c, err := Load([]string{"../../configs/qmd.toml"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := Load(nil)
	got, want := c.Partitions[0], d.Partitions[0]
	if got.Name != want.Name || got.Rootfs != want.Rootfs || got.OOMScoreAdj != want.OOMScoreAdj ||
		strings.Join(got.Volumes, ",") != strings.Join(want.Volumes, ",") || got.Network != want.Network {
		t.Errorf("configs/qmd.toml documents other defaults than the code:\n file %+v\n code %+v", got, want)
	}
}

func writeFiles(t *testing.T, files map[string]string) []string {
	t.Helper()
	dir := t.TempDir()
	var out []string
	for _, name := range sortedKeys(files) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

func TestDropInsMergeByName(t *testing.T) {
	files := writeFiles(t, map[string]string{
		"00-vendor.toml": `
[podman]
socket = "unix:///run/x.sock"

[[partition]]
name = "qm"
network = "none"
volumes = ["/etc/qm:/etc"]
[partition.memory]
max = "1G"
`,
		"10-admin.toml": `
[[partition]]
name = "qm"
oom_score_adj = 600
[partition.memory]
high = "512M"

[[partition]]
name = "cluster"
exec = ["/bin/false"]
`,
	})
	c, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	qm, ok := c.Partition("qm")
	if !ok {
		t.Fatal("qm missing")
	}
	if qm.Network != "none" || qm.OOMScoreAdj != 600 || qm.Memory.Max.Bytes != 1<<30 || qm.Memory.High.Bytes != 512<<20 {
		t.Errorf("drop-in did not merge into qm: %+v", qm)
	}
	if len(qm.Volumes) != 1 {
		t.Errorf("volumes: %v", qm.Volumes)
	}
	cl, ok := c.Partition("cluster")
	if !ok || cl.Exec[0] != "/bin/false" || cl.OOMScoreAdj != 500 {
		t.Errorf("second partition gets defaults plus its keys: %+v", cl)
	}
	if c.Podman.Socket != "unix:///run/x.sock" || c.Podman.Timeout.Duration != 10*time.Second {
		t.Errorf("podman: %+v", c.Podman)
	}
	if len(c.Sources) != 2 {
		t.Errorf("sources: %v", c.Sources)
	}
}

func TestEmptyVolumesMeansNone(t *testing.T) {
	c, err := Parse("x.toml", []byte("[[partition]]\nname = \"qm\"\nvolumes = []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Partitions[0].Volumes) != 0 {
		t.Errorf("volumes = [] must mean none, got %v", c.Partitions[0].Volumes)
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // all must appear in the error
	}{
		{"out of range", "[[partition]]\nname = \"qm\"\n\noom_score_adj = 1200\n", []string{"x.toml:4", "partition[qm].oom_score_adj", "out of range"}},
		{"negative partition", "[[partition]]\nname = \"qm\"\noom_score_adj = -5\n", []string{"x.toml:3", "oom_score_adj"}},
		{"unknown key", "[podman]\nsockett = \"unix:///x\"\n", []string{"x.toml:2", "podman.sockett", "unknown key"}},
		{"unknown partition key", "[[partition]]\nname = \"qm\"\nrootfss = \"/x\"\n", []string{"x.toml:3", "rootfss", "unknown key"}},
		{"syntax", "[podman\nsocket = 1\n", []string{"x.toml:2", "table name"}},
		{"wrong type", "[podman]\nsocket = 5\n", []string{"x.toml", "socket"}},
		{"bad size", "[[partition]]\nname = \"qm\"\n[partition.memory]\nmax = \"12Q\"\n", []string{"x.toml", "max", "not a size"}},
		{"high above max", "[[partition]]\nname = \"qm\"\n[partition.memory]\nhigh = \"2G\"\nmax = \"1G\"\n", []string{"x.toml:4", "partition[qm].memory.high", "above memory.max"}},
		{"bad network", "[[partition]]\nname = \"qm\"\nnetwork = \"bridge\"\n", []string{"x.toml:3", "partition[qm].network"}},
		{"no name", "[[partition]]\nrootfs = \"/x\"\n", []string{"x.toml:1", "partition[0].name", "needs a name"}},
		{"bad name", "[[partition]]\nname = \"q m\"\n", []string{"x.toml:2", ".name"}},
		{"duplicate container", "[[partition]]\nname = \"a\"\ncontainer_name = \"c\"\n[[partition]]\nname = \"b\"\ncontainer_name = \"c\"\n", []string{"x.toml:6", "partition[b].container_name"}},
		{"slice not a slice", "[[partition]]\nname = \"qm\"\nslice = \"qm.service\"\n", []string{"x.toml:3", "partition[qm].slice", "not a systemd slice name"}},
		{"slice empty level", "[[partition]]\nname = \"qm\"\nslice = \"qm--a.slice\"\n", []string{"x.toml:3", "partition[qm].slice", "not a systemd slice name"}},
		{"slice of the host", "[[partition]]\nname = \"qm\"\nslice = \"system.slice\"\n", []string{"x.toml:3", "partition[qm].slice", "ASIL units"}},
		{"slice below the host's", "[[partition]]\nname = \"qm\"\nslice = \"system-qm.slice\"\n", []string{"x.toml:3", "partition[qm].slice", "ASIL units"}},
		{"slice shared with other weights", "[[partition]]\nname = \"a\"\nslice = \"qm.slice\"\n[[partition]]\nname = \"b\"\nslice = \"qm.slice\"\n[partition.cpu]\nweight = \"100\"\n", []string{"partition[b].slice", "also partition a's", "cpu.weight"}},
		{"second partition line", "[[partition]]\nname = \"a\"\n[[partition]]\nname = \"b\"\n[partition.restart]\npolicy = \"sometimes\"\n", []string{"x.toml:6", "partition[b].restart.policy"}},
		{"rlimit", "[[partition]]\nname = \"qm\"\n[partition.rlimits]\nnofile = \"9:1\"\n", []string{"x.toml:4", "rlimits.nofile", "soft limit above hard"}},
		{"unknown rlimit", "[[partition]]\nname = \"qm\"\n[partition.rlimits]\nNOFILE = \"1\"\n", []string{"rlimits.NOFILE", "unknown rlimit"}},
		{"protect positive", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = 10\n", []string{"x.toml:3", "protect[0].oom_score_adj", "negative"}},
		{"protect range", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -1001\n", []string{"protect[0].oom_score_adj", "out of range"}},
		{"protect neither", "[[protect]]\noom_score_adj = -100\n", []string{"x.toml:1", "protect[0]", "unit or cgroup"}},
		{"protect root cgroup", "[[protect]]\ncgroup = \"/\"\noom_score_adj = -900\n", []string{"protect[0].cgroup", "root cgroup"}},
		{"protect duplicate", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -900\n[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -800\n", []string{"protect[1]", "already protect[0]"}},
		{"protect memory_min infinity", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -900\nmemory_min = \"infinity\"\n", []string{"protect[0].memory_min", "infinity"}},
		{"protect memory_low below min", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -900\nmemory_min = \"512M\"\nmemory_low = \"256M\"\n", []string{"protect[0].memory_low", "below memory_min"}},
		{"protect memory_min not a size", "[[protect]]\nunit = \"brakes.service\"\noom_score_adj = -900\nmemory_min = \"lots\"\n", []string{"memory_min", "not a size"}},
		{"backoff", "[[partition]]\nname = \"qm\"\n[partition.restart]\nbackoff_max = \"1ms\"\n", []string{"x.toml:4", "backoff_max"}},
		{"duration", "[[partition]]\nname = \"qm\"\nstop_timeout = \"soon\"\n", []string{"x.toml", "not a duration"}},
		{"socket scheme", "[podman]\nsocket = \"http://x\"\n", []string{"x.toml:2", "podman.socket", "scheme"}},
		{"cpu weight", "[[partition]]\nname = \"qm\"\n[partition.cpu]\nweight = \"0\"\n", []string{"x.toml:4", "cpu.weight"}},
		{"log level", "[log]\nlevel = \"loud\"\n", []string{"x.toml:2", "log.level"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSizes(t *testing.T) {
	cases := map[string]uint64{"512M": 512 << 20, "2G": 2 << 30, "4096": 4096, "1k": 1024, "infinity": Infinity, "max": Infinity, "3GB": 3 << 30}
	for in, want := range cases {
		s, err := ParseSize(in)
		if err != nil || s.Bytes != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %d", in, s.Bytes, err, want)
		}
	}
	s, err := ParseSize("50%")
	if err != nil || s.Resolve(1000) != 500 {
		t.Errorf("50%% of 1000 = %d, %v", s.Resolve(1000), err)
	}
	for _, bad := range []string{"", "-1", "G", "12Q", "101%", "0%", "nan%", "99999999999999999999", "18446744073709551615T"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

type fakeHost struct {
	exists map[string]bool
	hard   map[string]uint64
}

type fakeInfo struct {
	fs.FileInfo
	dir bool
}

func (f fakeInfo) IsDir() bool { return f.dir }

func (h fakeHost) Lstat(p string) (fs.FileInfo, error) {
	if d, ok := h.exists[p]; ok {
		return fakeInfo{dir: d}, nil
	}
	return nil, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

func (h fakeHost) RlimitHard(n string) (uint64, bool) { v, ok := h.hard[n]; return v, ok }

func TestPrepareAdaptsToHost(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := fakeHost{
		exists: map[string]bool{"/usr/lib/qm/rootfs": true, "/usr/lib/qm/rootfs/sbin/init": false,
			"/etc/qm": true, "/var/qm": true, "/var/qm/tmp": true, "/dev/fuse": false, "/usr/share/qmd/seccomp-no-rt.json": false},
		hard: map[string]uint64{"nofile": 20000, "nproc": 96365},
	}
	if err := Prepare(c, h); err != nil {
		t.Fatal(err)
	}
	p := c.Partitions[0]
	if strings.Join(p.Devices, ",") != "-/dev/fuse" {
		t.Errorf("missing optional /dev/kvm must be skipped: %v", p.Devices)
	}
	if p.Rlimits["nofile"] != "1024:20000" || p.Rlimits["nproc"] != "4096:32768" {
		t.Errorf("rlimits: %v", p.Rlimits)
	}
	if len(c.Warnings) != 2 {
		t.Errorf("want a warning for the device and the clamp: %v", c.Warnings)
	}
}

func TestPrepareMissingRootfs(t *testing.T) {
	files := writeFiles(t, map[string]string{"a.toml": "[[partition]]\nname = \"qm\"\nrootfs = \"/nonexistent/rootfs\"\nvolumes = []\n"})
	c, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	err = Prepare(c, OSHost{})
	if err == nil || !strings.Contains(err.Error(), "partition[qm].rootfs") || !strings.Contains(err.Error(), "does not exist") ||
		!strings.Contains(err.Error(), "a.toml:3") {
		t.Fatalf("want an error naming rootfs and its line, got %v", err)
	}
	var ke *KeyError
	if !errors.As(err, &ke) {
		t.Errorf("want a *KeyError, got %T", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[[partition]]\nname = \"qm\"\noom_score_adj = 1200\n"))
	f.Add([]byte("[podman]\nsocket = \"unix:///x\"\n[[protect]]\nunit = \"a.service\"\noom_score_adj = -1\n"))
	f.Add([]byte("[[partition]]\nname = \"a\"\n[partition.memory]\nhigh = \"50%\"\n"))
	f.Add([]byte("x = \"\"\"\na = 1\n\"\"\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse("f.toml", src)
		if err == nil {
			if len(c.Partitions) == 0 {
				t.Fatal("valid config without partitions")
			}
			return
		}
		msg := err.Error()
		if !strings.Contains(msg, "f.toml") && !strings.Contains(msg, "partition[") && !strings.Contains(msg, "protect[") &&
			!strings.Contains(msg, ".") {
			t.Fatalf("error names neither file nor key: %q", msg)
		}
	})
}

func TestMaxWithDefaultHighIsValid(t *testing.T) {
	if _, err := Parse("x.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.memory]\nmax = \"64M\"\n")); err != nil {
		t.Fatalf("memory.max alone (high stays infinity) rejected: %v", err)
	}
}

// TestPlacedIn: only a systemd slice other than the configured one is a
// misplaced partition; cgroupfs parents and unknown ones are not.
func TestPlacedIn(t *testing.T) {
	for name, want := range map[string]string{"qm": "qm.slice", "nav": "nav.slice", "qm-a": "", "system": "", "user": "", "machine": ""} {
		if got := DefaultPartition(name).Slice; got != want {
			t.Errorf("partition %q: default slice %q, want %q", name, got, want)
		}
	}
	p := DefaultPartition("qm")
	for parent, want := range map[string]bool{
		"qm.slice": true, "/qm.slice": true, "machine.slice": false, "/machine.slice": false,
		"": true, "/libpod_parent": true,
	} {
		if got := p.PlacedIn(parent); got != want {
			t.Errorf("slice %q, container parent %q: PlacedIn = %v, want %v", p.Slice, parent, got, want)
		}
	}
	p.Slice = ""
	if !p.PlacedIn("machine.slice") {
		t.Error(`slice "": machine.slice must count as placed (Podman's choice)`)
	}
}
