package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lintHost is an 8 GiB host whose root filesystem is on /dev/vda1 (disk
// vda) and whose /boot is on /dev/vda2; /dev/sdb1 exists here and holds
// /srv. /opt/root-link is a symlink to /.
func lintHost() LintHost {
	return LintHost{
		MemTotal:         8 << 30,
		HostBlockDevices: map[string]string{"254:0": "/", "254:1": "/", "254:2": "/boot", "8:17": "/srv", "8:16": "/srv"},
		HostBlockNames:   map[string]string{"vda": "/", "vda1": "/", "vda2": "/boot", "sdb": "/srv", "sdb1": "/srv"},
		DeviceNumber: func(p string) string {
			switch p {
			case "/dev/disk-by-label-srv", "/dev/sdb1":
				return "8:17"
			case "/dev/sdc":
				return "8:32"
			}
			return ""
		},
		Resolve: func(p string) string {
			if p == "/opt/root-link" {
				return "/"
			}
			if p == "/srv/run-link" {
				return "/run"
			}
			return p
		},
	}
}

func TestLintRules(t *testing.T) {
	tests := []struct {
		name string
		toml string
		key  string // "" = no finding
		risk string // a word of the risk
	}{
		{"default", ``, "", ""},
		{"rootfs slash", `rootfs = "/"`, "partition[qm].rootfs", "host's own programs"},
		{"rootfs slash trailing", `rootfs = "/usr/"`, "partition[qm].rootfs", "host's /usr"},
		{"rootfs etc", `rootfs = "/etc"`, "partition[qm].rootfs", "host's /etc"},
		{"rootfs lib64", `rootfs = "/lib64"`, "partition[qm].rootfs", "host's /lib64"},
		{"rootfs symlink to slash", `rootfs = "/opt/root-link"`, "partition[qm].rootfs", "host's /"},
		{"rootfs proc", `rootfs = "/proc/1/root"`, "partition[qm].rootfs", "kernel interface"},
		{"rootfs own tree", `rootfs = "/usr/lib/qm/rootfs"`, "", ""},
		{"rootfs under srv", `rootfs = "/srv/qm/rootfs"`, "", ""},
		{"volume podman socket", `volumes = ["/run/podman/podman.sock:/run/podman/podman.sock"]`, "partition[qm].volumes", "Podman API"},
		{"volume docker socket", `volumes = ["/var/run/docker.sock:/var/run/docker.sock"]`, "partition[qm].volumes", "Docker API"},
		{"volume run parent", `volumes = ["/run:/run"]`, "partition[qm].volumes", "contains /run/podman"},
		{"volume run symlink", `volumes = ["/srv/run-link:/x"]`, "partition[qm].volumes", "contains /run/podman"},
		{"volume dbus", `volumes = ["/run/dbus:/run/dbus"]`, "partition[qm].volumes", "D-Bus"},
		{"volume dbus socket", `volumes = ["/run/dbus/system_bus_socket:/run/dbus/system_bus_socket"]`, "partition[qm].volumes", "D-Bus"},
		{"volume systemd private", `volumes = ["/run/systemd/private:/x"]`, "partition[qm].volumes", "systemd"},
		{"volume journald", `volumes = ["/run/systemd/journal/socket:/run/systemd/journal/socket"]`, "partition[qm].volumes", "journald"},
		{"volume udev whole", `volumes = ["/run/udev:/run/udev:ro"]`, "partition[qm].volumes", "udev's control socket"},
		{"volume udev data", `volumes = ["/run/udev/data:/run/udev/data:ro"]`, "", ""},
		{"volume etc", `volumes = ["/etc:/etc"]`, "partition[qm].volumes", "host's configuration"},
		{"volume etc qm", `volumes = ["/etc/qm:/etc"]`, "", ""},
		{"volume etc qmd", `volumes = ["/etc/qmd:/etc/qmd"]`, "partition[qm].volumes", "own policy"},
		{"volume var", `volumes = ["/var:/var"]`, "partition[qm].volumes", "contains"},
		{"volume var qm", `volumes = ["/var/qm:/var", "/var/qm/tmp:/var/tmp"]`, "", ""},
		{"volume container storage", `volumes = ["/var/lib/containers/storage:/s"]`, "partition[qm].volumes", "container storage"},
		{"volume docker storage", `volumes = ["/var/lib/docker:/d"]`, "partition[qm].volumes", "Docker storage"},
		{"volume slash", `volumes = ["/:/host"]`, "partition[qm].volumes", "whole filesystem"},
		{"volume proc", `volumes = ["/proc/sys:/x"]`, "partition[qm].volumes", "kernel settings"},
		{"volume sys", `volumes = ["/sys/fs/cgroup:/sys/fs/cgroup"]`, "partition[qm].volumes", "lift its own limits"},
		{"volume dev", `volumes = ["/dev:/dev"]`, "partition[qm].volumes", "device nodes"},
		{"volume srv data", `volumes = ["/srv/qm-data:/data"]`, "", ""},
		{"volume user bus", `volumes = ["/run/user/1000/bus:/run/user/1000/bus"]`, "partition[qm].volumes", "session buses"},
		{"volume var lib parent", `volumes = ["/var/lib:/host-lib"]`, "partition[qm].volumes", "contains /var/lib/containers"},
		{"device mem", `devices = ["/dev/mem"]`, "partition[qm].devices", "physical memory"},
		{"device optional kmem", `devices = ["-/dev/kmem"]`, "partition[qm].devices", "kernel's memory"},
		{"device port", `devices = ["/dev/port"]`, "partition[qm].devices", "IO ports"},
		{"device kmsg", `devices = ["/dev/kmsg"]`, "partition[qm].devices", "kernel log"},
		{"device loop-control", `devices = ["/dev/loop-control"]`, "partition[qm].devices", "loop devices"},
		{"device watchdog1", `devices = ["/dev/watchdog1"]`, "partition[qm].devices", "watchdog"},
		{"device msr", `devices = ["/dev/cpu/0/msr"]`, "partition[qm].devices", "model-specific"},
		{"device root disk by name", `devices = ["/dev/vda"]`, "partition[qm].devices", "mounted at /"},
		{"device root partition by name", `devices = ["/dev/vda1"]`, "partition[qm].devices", "mounted at /"},
		{"device boot partition", `devices = ["/dev/vda2"]`, "partition[qm].devices", "mounted at /boot"},
		{"device by number", `devices = ["/dev/disk-by-label-srv"]`, "partition[qm].devices", "mounted at /srv"},
		{"device spare disk", `devices = ["/dev/sdc"]`, "", ""},
		{"device other vd", `devices = ["/dev/vdb"]`, "", ""},
		{"device kvm fuse", `devices = ["-/dev/kvm", "-/dev/fuse", "/dev/dri", "/dev/input", "/dev/tty7"]`, "", ""},
		{"cap_drop empty", `cap_drop = []`, "partition[qm].cap_drop", "sys_boot and sys_resource"},
		{"cap_drop only boot", `cap_drop = ["CAP_SYS_BOOT"]`, "partition[qm].cap_drop", "does not drop sys_resource"},
		{"cap_drop only resource", `cap_drop = ["sys_resource", "net_admin"]`, "partition[qm].cap_drop", "does not drop sys_boot"},
		{"cap_drop all", `cap_drop = ["all"]`, "", ""},
		{"cap_drop both prefixed", `cap_drop = ["CAP_SYS_BOOT", "cap_sys_resource", "net_raw"]`, "", ""},
		{"seccomp empty", `seccomp_profile = ""`, "partition[qm].seccomp_profile", "real-time"},
		{"seccomp unconfined", `seccomp_profile = "unconfined"`, "partition[qm].seccomp_profile", "filters no system call"},
		{"seccomp own", `seccomp_profile = "/etc/qmd/seccomp.json"`, "", ""},
		{"network host", `network = "host"`, "partition[qm].network", "network namespace"},
		{"network none", `network = "none"`, "", ""},
		{"slice empty", `slice = ""`, "partition[qm].slice", "machine.slice"},
		{"slice nested", `slice = "qm-a.slice"`, "partition[qm].slice", "nested"},
		{"slice own", `slice = "qm.slice"`, "", ""},
		{"memory max above ram", "[partition.memory]\nmax = \"16G\"", "partition[qm].memory.max", "above the host's memory"},
		{"memory max percent", "[partition.memory]\nmax = \"100%\"", "", ""},
		{"memory max below ram", "[partition.memory]\nmax = \"6G\"", "", ""},
		{"memory max infinity", "[partition.memory]\nmax = \"infinity\"\nhigh = \"infinity\"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "[[partition]]\nname = \"qm\"\n" + tt.toml + "\n"
			c, err := Parse("lint.toml", []byte(src))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			fs := Lint(c, lintHost())
			if tt.key == "" {
				if len(fs) != 0 {
					t.Fatalf("want no finding, got %v", fs)
				}
				return
			}
			if len(fs) != 1 {
				t.Fatalf("want one finding on %s, got %v", tt.key, fs)
			}
			f := fs[0]
			if f.Key != tt.key || !strings.Contains(f.Risk, tt.risk) {
				t.Errorf("finding %v: want key %s and a risk mentioning %q", f, tt.key, tt.risk)
			}
			// Every finding says where the key was set: the line of the
			// key, or of its table.
			if !strings.HasPrefix(f.Origin, "lint.toml:") {
				t.Errorf("finding %v: origin %q lacks file:line", f, f.Origin)
			}
			if tt.toml != "" && f.Origin != "lint.toml:3" && f.Origin != "lint.toml:4" {
				t.Errorf("finding %v: origin %q, want the key's line (3 or 4)", f, f.Origin)
			}
		})
	}
}

// TestLintMemoryNeeds: the memory rule is skipped when the host's memory is
// unknown, and counts the protected units' needs.
func TestLintMemoryUnknownRAM(t *testing.T) {
	c, err := Parse("m.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.memory]\nmax = \"1000G\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := lintHost()
	h.MemTotal = 0
	if fs := Lint(c, h); len(fs) != 0 {
		t.Errorf("unknown RAM: want no finding, got %v", fs)
	}
	if fs := Lint(c, lintHost()); len(fs) != 1 {
		t.Errorf("8G host: want one finding, got %v", fs)
	}
}

// TestLintMemoryProtectNeeds: memory.max is checked against the host's
// RAM minus what the protected units keep (memory_min, else memory_low).
func TestLintMemoryProtectNeeds(t *testing.T) {
	base := "[[partition]]\nname = \"qm\"\n[partition.memory]\nmax = \"6G\"\n"
	for _, tc := range []struct {
		protect string
		want    int
	}{
		{"", 0},
		{"[[protect]]\nunit = \"a.service\"\noom_score_adj = -900\nmemory_min = \"1G\"\n", 0},
		{"[[protect]]\nunit = \"a.service\"\noom_score_adj = -900\nmemory_min = \"3G\"\n", 1},
		{"[[protect]]\nunit = \"a.service\"\noom_score_adj = -900\nmemory_low = \"25%\"\n" +
			"[[protect]]\nunit = \"b.service\"\noom_score_adj = -900\nmemory_min = \"1G\"\n", 1},
	} {
		c, err := Parse("m.toml", []byte(base+tc.protect))
		if err != nil {
			t.Fatal(err)
		}
		fs := Lint(c, lintHost()) // 8G
		if len(fs) != tc.want {
			t.Errorf("protect %q: %d findings, want %d: %v", tc.protect, len(fs), tc.want, fs)
		}
		if tc.want == 1 && !strings.Contains(fs[0].Risk, "protected units") {
			t.Errorf("finding does not name the protected units' needs: %v", fs[0])
		}
	}
}

// TestLintStrict: findings are an error only with [policy] strict = true,
// and the error lists every finding with its origin.
func TestLintStrict(t *testing.T) {
	bad := "[[partition]]\nname = \"qm\"\nrootfs = \"/\"\ncap_drop = []\n"
	c, err := Parse("s.toml", []byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	fs := Lint(c, lintHost())
	if len(fs) != 2 {
		t.Fatalf("want 2 findings, got %v", fs)
	}
	if err := StrictError(c, fs); err != nil {
		t.Errorf("strict = false: want no error, got %v", err)
	}
	c, err = Parse("s.toml", []byte("[policy]\nstrict = true\n"+bad))
	if err != nil {
		t.Fatal(err)
	}
	err = StrictError(c, Lint(c, lintHost()))
	if err == nil || !IsLintError(err) {
		t.Fatalf("strict = true: want a lint error, got %v", err)
	}
	for _, want := range []string{"s.toml:5: partition[qm].rootfs", "s.toml:6: partition[qm].cap_drop", "strict"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := StrictError(c, nil); err != nil {
		t.Errorf("strict without findings: %v", err)
	}
}

// TestLintShippedConfigs: the built-in defaults, the vendor file and every
// example drop-in pass the lint without a finding, on a host shaped like
// the lint tests' and on this very host.
func TestLintShippedConfigs(t *testing.T) {
	files, err := filepath.Glob("../../configs/examples/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	sets := [][]string{nil, {"../../configs/qmd.toml"}}
	for _, f := range files {
		sets = append(sets, []string{"../../configs/qmd.toml", f})
	}
	for _, set := range sets {
		c, err := Load(set)
		if err != nil {
			t.Fatalf("%v: %v", set, err)
		}
		if err := Prepare(c, anyHost{}); err != nil {
			t.Fatalf("%v: %v", set, err)
		}
		for _, h := range []LintHost{lintHost(), OSLintHost()} {
			if fs := Lint(c, h); len(fs) != 0 {
				t.Errorf("%v: want no finding, got %v", set, fs)
			}
		}
	}
}

// TestOSLintHost: on this machine the root filesystem's device (when / is
// on a block device) is among the host's block devices, and RAM is known.
func TestOSLintHost(t *testing.T) {
	h := OSLintHost()
	t.Logf("RAM %d, host block devices %v (names %v)", h.MemTotal, h.HostBlockDevices, h.HostBlockNames)
	if h.MemTotal == 0 {
		t.Error("MemTotal unknown")
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skip(err)
	}
	for devno, mnt := range ParseMountinfoDevices(b) {
		if mnt != "/" {
			continue
		}
		if _, err := os.Stat("/sys/dev/block/" + devno); err != nil {
			t.Skipf("/ is on %s, not a block device here", devno)
		}
		if h.HostBlockDevices[devno] != "/" {
			t.Errorf("root device %s not found: %v", devno, h.HostBlockDevices)
		}
	}
}

func TestParseMountinfoDevices(t *testing.T) {
	mi := `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:5 / /dev rw shared:2 - devtmpfs udev rw
24 22 254:2 / /boot rw shared:3 - ext4 /dev/vda2 rw
25 22 254:1 /var/lib/x /mnt/bind\040dir rw shared:1 - ext4 /dev/vda1 rw
26 22 8:17 / /srv/my\040data rw - ext4 /dev/sdb1 rw
short line
`
	got := ParseMountinfoDevices([]byte(mi))
	want := map[string]string{"254:1": "/", "254:2": "/boot", "8:17": "/srv/my data"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
}
