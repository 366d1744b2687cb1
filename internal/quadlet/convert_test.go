package quadlet

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/config"
)

// convert parses the documents (the .container first) and converts them;
// every result must load with qmd's loader.
func convert(t *testing.T, docs ...string) *Result {
	t.Helper()
	var files []*File
	for i, d := range docs {
		name := "/q/qm.container"
		if i > 0 {
			name = filepath.Join("/q/qm.container.d", string(rune('a'+i))+".conf")
		}
		f, err := Parse(name, []byte(d))
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		files = append(files, f)
	}
	res, err := Convert(files, Options{})
	if err != nil {
		t.Fatalf("convert: %v", err)
	}
	loadOutput(t, res)
	return res
}

// loadOutput writes the drop-in and loads it with qmd's configuration
// loader, over the vendor file as on a host.
func loadOutput(t *testing.T, res *Result) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "50-qm-quadlet.toml")
	if err := os.WriteFile(p, res.TOML, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load([]string{"../../configs/qmd.toml", p})
	if err != nil {
		t.Fatalf("the generated drop-in does not load: %v\n%s", err, res.TOML)
	}
	return cfg
}

func mapped(res *Result, key string) (string, bool) {
	for _, m := range res.Mapped {
		if m.Key == key {
			return m.Value, true
		}
	}
	return "", false
}

func findings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

// TestConvertQMFixture converts a qm.container and sub-package drop-ins
// written after containers/qm's (testdata/qm), found as Quadlet finds them
// next to the unit, and loads the result.
func TestConvertQMFixture(t *testing.T) {
	paths, err := inputs([]string{"testdata/qm/qm.container"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 5 || !strings.HasSuffix(paths[4], "90-limits.conf") {
		t.Fatalf("drop-ins next to the unit, in name order: %v", paths)
	}
	var files []*File
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(p, data)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	res, err := Convert(files, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadOutput(t, res)
	p, ok := cfg.Partition("qm")
	if !ok || len(cfg.Partitions) != 1 {
		t.Fatalf("partitions %+v", cfg.Partitions)
	}
	want := config.Security{SELinuxType: "qm_t", SELinuxFileType: "qm_file_t", SELinuxLevel: "s0", SELinuxNested: true}
	if p.Security != want {
		t.Errorf("security %+v", p.Security)
	}
	checks := map[string]string{
		"container_name":  p.ContainerName,
		"rootfs":          p.Rootfs, // from ${ROOTFS}
		"exec":            strings.Join(p.Exec, " "),
		"network":         p.Network,
		"volumes":         strings.Join(p.Volumes, " "),
		"cap_drop":        strings.Join(p.CapDrop, " "),
		"devices":         strings.Join(p.Devices, " "),
		"seccomp_profile": p.Seccomp,
		"sysctl":          p.Sysctl["fs.mqueue.queues_max"],
		"annotation":      p.Annotations["org.containers.qm.device.ttys"],
		"env":             p.Env["XDG_RUNTIME_DIR"] + " " + p.Env["LANG"],
		"nofile":          p.Rlimits["nofile"],
		"nproc":           p.Rlimits["nproc"],
		"restart":         p.Restart.Policy,
		"memory":          p.Memory.High.String() + " " + p.Memory.Max.String() + " " + p.Memory.SwapMax.String(),
		"cpu.weight":      p.CPU.Weight,
		"pids.max":        p.Pids.Max,
		"slice":           p.Slice,
		"io.weight":       strconv.FormatUint(p.IO.Weight, 10),
	}
	wantVals := map[string]string{
		"container_name":  "qm",
		"rootfs":          "/usr/lib/qm/rootfs",
		"exec":            "/sbin/init",
		"network":         "private",
		"volumes":         "/etc/qm:/etc /var/qm:/var /var/qm/tmp:/var/tmp",
		"cap_drop":        "sys_boot sys_resource",
		"devices":         "-/dev/kvm -/dev/fuse -/dev/net/tun -/dev/snd -/dev/input",
		"seccomp_profile": "/usr/share/qm/seccomp-no-rt.json",
		"sysctl":          "4",
		"annotation":      "true",
		"env":             "/run/user/0 C.UTF-8",
		"nofile":          "65536",
		"nproc":           "4096:8192",
		"restart":         "always",
		"memory":          "3G 4G 0",
		"cpu.weight":      "idle",
		"pids.max":        "50%",
		"slice":           "QM.slice",
		"io.weight":       "50",
	}
	for k, w := range wantVals {
		if checks[k] != w {
			t.Errorf("%s = %q, want %q", k, checks[k], w)
		}
	}
	// 90-limits.conf resets OOMScoreAdjust= and PodmanArgs= first.
	if p.OOMScoreAdj != 800 || p.NestedOOMScoreAdj != 800 || !p.ReadOnly || !p.ReadOnlyTmpfs {
		t.Errorf("oom %d/%d read-only %v/%v", p.OOMScoreAdj, p.NestedOOMScoreAdj, p.ReadOnly, p.ReadOnlyTmpfs)
	}
	un := findings(res.Unmapped)
	for _, w := range []string{"ManagedOOMSwap=kill", "AllowedCPUs=1", "Timezone=local"} {
		if !strings.Contains(un, w) {
			t.Errorf("not mapped should list %q:\n%s", w, un)
		}
	}
	if strings.Contains(un, "unmask") {
		t.Errorf("PodmanArgs= in 90-limits.conf reset the unmask=all of qm.container:\n%s", un)
	}
	ig := findings(res.Ignored)
	for _, w := range []string{"WantedBy=default.target", "Delegate=true", "Environment=ROOTFS=", "Description="} {
		if !strings.Contains(ig, w) {
			t.Errorf("not needed should list %q:\n%s", w, ig)
		}
	}
	// The report is in the output as a comment block, and every mapped key
	// names its line.
	out := string(res.TOML)
	for _, w := range []string{"# Not mapped", "#   testdata/qm/qm.container:22: [Service] AllowedCPUs=1", "# testdata/qm/qm.container:40: [Container] Rootfs=${ROOTFS}\nrootfs = \"/usr/lib/qm/rootfs\""} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// TestConvertEveryKey covers every key the import maps.
func TestConvertEveryKey(t *testing.T) {
	cases := []struct {
		name, doc string
		want      map[string]string
	}{
		{"container", `[Service]
Environment=R=/srv/qm "ID=7"
[Container]
ContainerName=%N-part${ID}
Rootfs="${R}/rootfs"
Exec=/sbin/init "--log-level=debug" systemd.unit=multi-user.target
HostName=qm-host
Volume=/etc/qm:/etc:ro,Z
Volume=./data:/data
Network=host
ReadOnly=false
ReadOnlyTmpfs=no
AddDevice=-/dev/kvm /dev/dri/card0:/dev/dri/card0:rwm
AddDevice=/dev/kvm
AddCapability=all
DropCapability=CAP_SYS_BOOT,net_raw
DropCapability=sys_time
SeccompProfile=unconfined
Sysctl=fs.mqueue.queues_max=8 "net.ipv4.ping_group_range=0 2000"
Annotation=org.containers.qm.device.audio=true "x.y=a b"
Environment=A=1 "B=two words" C=$${HOME}
SecurityLabelType=qm_t
SecurityLabelFileType=qm_file_t
SecurityLabelLevel=s0:c1,c2
SecurityLabelNested=yes
AppArmor=qm-partition
PidsLimit=200
Memory=1G
Ulimit=nproc=100:200
Ulimit=nofile=-1
StopTimeout=30
`, map[string]string{
			"container_name":                   `"qm-part7"`,
			"rootfs":                           `"/srv/qm/rootfs"`,
			"exec":                             `["/sbin/init", "--log-level=debug", "systemd.unit=multi-user.target"]`,
			"hostname":                         `"qm-host"`,
			"volumes":                          `["/etc/qm:/etc:ro,Z", "/q/data:/data"]`,
			"network":                          `"host"`,
			"read_only":                        "false",
			"read_only_tmpfs":                  "false",
			"devices":                          `["-/dev/kvm", "/dev/dri/card0", "/dev/kvm"]`,
			"cap_drop":                         `["sys_boot", "net_raw", "sys_time"]`,
			"seccomp_profile":                  `"unconfined"`,
			"sysctl.fs.mqueue.queues_max":      `"8"`,
			"sysctl.net.ipv4.ping_group_range": `"0 2000"`,
			"annotations.org.containers.qm.device.audio": `"true"`,
			"annotations.x.y":            `"a b"`,
			"env.A":                      `"1"`,
			"env.B":                      `"two words"`,
			"security.selinux_type":      `"qm_t"`,
			"security.selinux_file_type": `"qm_file_t"`,
			"security.selinux_level":     `"s0:c1,c2"`,
			"security.selinux_nested":    "true",
			"security.apparmor_profile":  `"qm-partition"`,
			"pids.max":                   `"200"`,
			"memory.max":                 `"1G"`,
			"rlimits.nproc":              `"100:200"`,
			"rlimits.nofile":             `"unlimited"`,
			"stop_timeout":               `"30s"`,
		}},
		{"selinux disable", "[Container]\nSecurityLabelDisable=true\nNetwork=none\n", map[string]string{
			"security.selinux_disable": "true", "network": `"none"`, "container_name": `"systemd-qm"`,
		}},
		{"bridge network", "[Container]\nNetwork=bridge\n", map[string]string{"network": `"private"`}},
		{"whole-word $VAR", "[Service]\nEnvironment=R=/srv/r\n[Container]\nRootfs=$R\nEnvironment=K=$R L=${R}\n", map[string]string{
			"rootfs": `"/srv/r"`, "env.K": `"$R"`, "env.L": `"/srv/r"`,
		}},
		{"podman args", `[Container]
AddCapability=all
DropCapability=sys_boot
PodmanArgs=--memory 2G --memory-swap=3G --pids-limit 100 --ulimit nofile=1024:4096 --cpus 1.5
PodmanArgs=--oom-score-adj 600 --hostname part --name other --read-only=false --read-only-tmpfs \
  --device /dev/snd --sysctl kernel.msgmax=65536 -v /srv:/srv --env A=1 --annotation x.y=z \
  --network none --security-opt label=type:t_t --security-opt label=filetype:f_t \
  --security-opt label=level:s0 --security-opt label=nested --security-opt apparmor=unconfined \
  --security-opt seccomp=/s.json --cap-drop net_admin,CAP_SYS_TIME -m2G
`, map[string]string{
			"memory.max":                 `"2G"`,
			"memory.swap_max":            `"1073741824"`,
			"pids.max":                   `"100"`,
			"rlimits.nofile":             `"1024:4096"`,
			"cpu.quota":                  `"150%"`,
			"oom_score_adj":              "600",
			"hostname":                   `"part"`,
			"container_name":             `"other"`,
			"read_only":                  "false",
			"read_only_tmpfs":            "true",
			"devices":                    `["/dev/snd"]`,
			"sysctl.kernel.msgmax":       `"65536"`,
			"volumes":                    `["/srv:/srv"]`,
			"env.A":                      `"1"`,
			"annotations.x.y":            `"z"`,
			"network":                    `"none"`,
			"security.selinux_type":      `"t_t"`,
			"security.selinux_file_type": `"f_t"`,
			"security.selinux_level":     `"s0"`,
			"security.selinux_nested":    "true",
			"security.apparmor_profile":  `"unconfined"`,
			"seccomp_profile":            `"/s.json"`,
			"cap_drop":                   `["sys_boot", "net_admin", "sys_time"]`,
		}},
		{"swap unlimited, pids no limit", "[Container]\nPodmanArgs=--memory-swap -1 --pids-limit=0\n", map[string]string{
			"memory.swap_max": `"infinity"`, "pids.max": `"max"`,
		}},
		{"service", `[Unit]
StartLimitBurst=3
StartLimitIntervalSec=1min 30s
[Service]
MemoryMax=50%
MemoryHigh=40%
MemorySwapMax=1G
OOMScoreAdjust=300
CPUWeight=200
CPUQuota=150%
TasksMax=4096
Restart=on-failure
LimitNOFILE=1024:65536
LimitNPROC=infinity
LimitCORE=0
TimeoutStopSec=20
`, map[string]string{
			"memory.max":                   `"50%"`,
			"memory.high":                  `"40%"`,
			"memory.swap_max":              `"1G"`,
			"oom_score_adj":                "300",
			"cpu.weight":                   `"200"`,
			"cpu.quota":                    `"150%"`,
			"pids.max":                     `"4096"`,
			"restart.policy":               `"on-failure"`,
			"rlimits.nofile":               `"1024:65536"`,
			"rlimits.nproc":                `"infinity"`,
			"rlimits.core":                 `"0"`,
			"restart.start_limit_burst":    "3",
			"restart.start_limit_interval": `"1m30s"`,
			"stop_timeout":                 `"20s"`,
		}},
		{"service unlimited", "[Service]\nTasksMax=infinity\nRestart=no\nMemoryMax=infinity\n", map[string]string{
			"pids.max": `"max"`, "restart.policy": `"no"`, "memory.max": `"infinity"`,
		}},
		{"service limit wins over the container's", "[Service]\nMemoryMax=1G\nTasksMax=infinity\n[Container]\nPodmanArgs=--memory 2G --pids-limit 64\n", map[string]string{
			"memory.max": `"1G"`, "pids.max": `"64"`,
		}},
		{"oom above 750 raises nested", "[Service]\nOOMScoreAdjust=1000\n", map[string]string{
			"oom_score_adj": "1000", "nested_oom_score_adj": "1000",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := convert(t, tc.doc)
			for k, w := range tc.want {
				if got, ok := mapped(res, k); !ok || got != w {
					t.Errorf("%s = %s (mapped %v), want %s\n%s", k, got, ok, w, res.TOML)
				}
			}
			if len(res.Unmapped) > 0 {
				t.Errorf("unexpected not-mapped findings:\n%s", findings(res.Unmapped))
			}
		})
	}
}

// TestConvertUnmappedReport: every setting the import cannot carry over is
// listed with its line and a reason, and the rest still converts.
func TestConvertUnmappedReport(t *testing.T) {
	cases := []struct{ doc, what, reason string }{
		{"[Container]\nImage=quay.io/x/y\n", "Image=quay.io/x/y", "not from an image"},
		{"[Container]\nVolume=qmEtc:/etc:copy\n", "Volume=qmEtc", "named Podman volume"},
		{"[Container]\nVolume=/data\n", "Volume=/data", "anonymous volume"},
		{"[Container]\nVolume=x.volume:/x\n", "Volume=x.volume", ".volume unit"},
		{"[Container]\nVolume=/a:/b:O\n", "Volume=/a:/b:O", `volume option "O"`},
		{"[Container]\nVolume=/a:b\n", "Volume=/a:b", "not absolute"},
		{"[Container]\nAddDevice=/dev/a:/dev/b\n", "AddDevice=/dev/a:/dev/b", "different path"},
		{"[Container]\nAddDevice=/dev/a:/dev/a:r\n", "AddDevice", `permissions "r"`},
		{"[Container]\nAddDevice=/tmp/x\n", "AddDevice", "not below /dev"},
		{"[Container]\nDropCapability=all\nAddCapability=net_raw\n", "DropCapability=all", "dropping all capabilities"},
		{"[Container]\nAddCapability=net_admin\n", "AddCapability=net_admin", "Podman's default capabilities"},
		{"[Container]\nDropCapability=sys_boot\n", "AddCapability (not set)", "Podman's default capabilities"},
		{"[Container]\nDropCapability=net_raw\nAddCapability=net_raw\n", "net_raw", "both added and dropped"},
		{"[Container]\nNetwork=mynet.network\n", "Network=mynet.network", `network "mynet.network"`},
		{"[Container]\nNetwork=host\nNetwork=private\n", "Network=host", "one network mode"},
		{"[Container]\nRootfs=/r:O\n", "Rootfs=/r:O", "rootfs options"},
		{"[Container]\nRootfs=$NOPE/r\n", "Rootfs=$NOPE/r", "write ${NAME} inside a word"},
		{"[Container]\nRootfs=${NOPE}/r\n", "Rootfs=${NOPE}/r", "${NOPE} is not set"},
		{"[Container]\nRootfs=$NOPE\n", "Rootfs=$NOPE", "$NOPE is not set"},
		{"[Container]\nRootfs=/r/%H\n", "Rootfs=/r/%H", "specifier %H"},
		{"[Container]\nExec=/init \"unterminated\n", "Exec=", "unterminated"},
		{"[Container]\nEnvironment=TZ\n", "Environment=TZ", "without a value"},
		{"[Container]\nAnnotation=flag\n", "Annotation=flag", "without =VALUE"},
		{"[Container]\nSysctl=novalue\n", "Sysctl=novalue", "not NAME=VALUE"},
		{"[Container]\nReadOnly=maybe\n", "ReadOnly=maybe", "not a boolean"},
		{"[Container]\nPidsLimit=lots\n", "PidsLimit=lots", "not a number"},
		{"[Container]\nStopTimeout=soon\n", "StopTimeout=soon", "not a number of seconds"},
		{"[Container]\nMemory=1.5g\n", "Memory=1.5g", "not a size"},
		{"[Container]\nUlimit=nofile\n", "Ulimit=nofile", "NAME=SOFT[:HARD]"},
		{"[Container]\nSeccompProfile=rel.json\n", "SeccompProfile=rel.json", "absolute path"},
		{"[Container]\nTimezone=local\n", "Timezone=local", "no timezone key"},
		{"[Container]\nMask=/proc/x\n", "Mask=/proc/x", "no mask key"},
		{"[Container]\nUnmask=ALL\n", "Unmask=ALL", "no unmask key"},
		{"[Container]\nNotify=true\n", "Notify=true", "sd_notify"},
		{"[Container]\nPublishPort=8080:80\n", "PublishPort=8080:80", "Quadlet key with no qmd equivalent"},
		{"[Container]\nSecurityLabelDisable=true\nSecurityLabelType=qm_t\n", "SecurityLabelType=qm_t", "turns SELinux labeling off"},
		{"[Container]\nSecurityLabelType=qm:t\n", "SecurityLabelType=qm:t", "qmd rejects security.selinux_type"},
		{"[Container]\nEnvironment=1BAD=x\n", "Environment=1BAD=x", "qmd rejects env.1BAD"},
		{"[Container]\nPodmanArgs=--tz local\n", "--tz local", "no timezone key"},
		{"[Container]\nPodmanArgs=--memory-reservation 1G\n", "--memory-reservation 1G", "soft limit"},
		{"[Container]\nPodmanArgs=--privileged\n", "--privileged", "no qmd equivalent"},
		{"[Container]\nPodmanArgs=--security-opt unmask=all\n", "unmask=all", "no unmask key"},
		{"[Container]\nPodmanArgs=--security-opt mask=/x\n", "mask=/x", "no mask key"},
		{"[Container]\nPodmanArgs=--security-opt label=user:u\n", "label=user:u", "SELinux type, file type"},
		{"[Container]\nPodmanArgs=--security-opt no-new-privileges\n", "no-new-privileges", "no qmd equivalent"},
		{"[Container]\nPodmanArgs=--cpu-shares 512\n", "--cpu-shares 512", "cpu.weight"},
		{"[Container]\nPodmanArgs=--cpuset-cpus 1\n", "--cpuset-cpus 1", "affinity"},
		{"[Container]\nPodmanArgs=--memory\n", "--memory", "no value"},
		{"[Container]\nPodmanArgs=someimage\n", "someimage", "not an option"},
		{"[Container]\nPodmanArgs=--memory-swap 1G\n", "--memory-swap 1G", "needs memory.max"},
		{"[Container]\nPodmanArgs=--cpus lots\n", "--cpus", "not a positive number"},
		{"[Service]\nIOWeight=0\n", "IOWeight=0", "1..10000"},
		{"[Service]\nIOWeight=default\n", "IOWeight=default", "1..10000"},
		{"[Service]\nAllowedCPUs=6-11\n", "AllowedCPUs=6-11", "cpuset"},
		{"[Service]\nManagedOOMSwap=kill\n", "ManagedOOMSwap=kill", "[partition.pressure]"},
		{"[Service]\nRestartSec=5\n", "RestartSec=5", "backs off"},
		{"[Service]\nRestart=on-abnormal\n", "Restart=on-abnormal", "always, on-failure or no"},
		{"[Service]\nEnvironmentFile=/etc/qm.env\n", "EnvironmentFile=/etc/qm.env", "not read"},
		{"[Service]\nCPUAffinity=1\n", "CPUAffinity=1", "systemd service setting with no qmd equivalent"},
		{"[Service]\nLimitNOFILE=1K\n", "LimitNOFILE=1K", "not a number"},
		{"[Service]\nTimeoutStopSec=infinity\n", "TimeoutStopSec=infinity", "finite"},
		{"[Service]\nStartLimitBurst=x\n", "StartLimitBurst=x", "not a count"},
		{"[Service]\nOOMScoreAdjust=-500\n", "OOMScoreAdjust=-500", "qmd rejects oom_score_adj = -500"},
		{"[Service]\nMemoryHigh=2G\nMemoryMax=1G\n", "MemoryHigh=2G", "is above memory.max"},
		{"[Service]\nMemorySwapMax=10%\n", "MemorySwapMax=10%", "not a percentage"},
		{"[Elsewhere]\nKey=v\n", "[Elsewhere] Key=v", "not part of a Quadlet .container"},
	}
	for _, tc := range cases {
		res := convert(t, tc.doc)
		found := false
		for _, f := range res.Unmapped {
			if strings.Contains(f.What, tc.what) && strings.Contains(f.Reason, tc.reason) && f.File == "/q/qm.container" {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: want a not-mapped finding %q / %q, got:\n%s", tc.doc, tc.what, tc.reason, findings(res.Unmapped))
			continue
		}
		if !strings.Contains(string(res.TOML), "# Not mapped") || !strings.Contains(string(res.TOML), comment(tc.what)) {
			t.Errorf("%q: the output's comment block lacks the finding:\n%s", tc.doc, res.TOML)
		}
	}
}

func TestConvertIgnoredReport(t *testing.T) {
	res := convert(t, `[Unit]
Description=x
[Install]
WantedBy=default.target
[Quadlet]
DefaultDependencies=false
[Service]
Delegate=yes
KillMode=mixed
[Container]
PodmanArgs=--rm --pids-limit 5
`)
	ig := findings(res.Ignored)
	for _, w := range []string{"Description=x", "WantedBy=default.target", "DefaultDependencies=false", "Delegate=yes", "KillMode=mixed", "--rm"} {
		if !strings.Contains(ig, w) {
			t.Errorf("not needed should list %q:\n%s", w, ig)
		}
	}
	if len(res.Unmapped) != 0 {
		t.Errorf("nothing needs a decision here:\n%s", findings(res.Unmapped))
	}
	if v, _ := mapped(res, "pids.max"); v != `"5"` {
		t.Errorf("pids.max %s", v)
	}
}

// TestConvertDropInsAndResets: drop-ins add to list keys and override
// single keys in file order; an empty assignment clears what came before.
func TestConvertDropInsAndResets(t *testing.T) {
	res := convert(t,
		"[Container]\nAddDevice=-/dev/a\nVolume=/x:/x\nNetwork=host\n[Service]\nOOMScoreAdjust=100\nMemoryMax=1G\n",
		"[Container]\nAddDevice=\nAddDevice=-/dev/b\nVolume=/y:/y\n[Service]\nOOMScoreAdjust=\n",
		"[Container]\nNetwork=\nNetwork=none\n[Service]\nMemoryMax=2G\n",
	)
	want := map[string]string{"devices": `["-/dev/b"]`, "volumes": `["/x:/x", "/y:/y"]`, "network": `"none"`, "memory.max": `"2G"`}
	for k, w := range want {
		if got, _ := mapped(res, k); got != w {
			t.Errorf("%s = %s, want %s", k, got, w)
		}
	}
	if v, ok := mapped(res, "oom_score_adj"); ok {
		t.Errorf("OOMScoreAdjust= reset it, got %s", v)
	}
	// Where each value came from: the drop-in line, not the unit's.
	for _, m := range res.Mapped {
		if m.Key == "memory.max" && (len(m.From) != 1 || m.From[0].File != "/q/qm.container.d/c.conf" || m.From[0].Line != 5) {
			t.Errorf("memory.max from %v", m.From)
		}
	}
}

func TestConvertPartitionName(t *testing.T) {
	f, _ := Parse("/q/qm.container", []byte("[Container]\nRootfs=/r\n"))
	res, err := Convert([]*File{f}, Options{Partition: "qm2"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadOutput(t, res)
	if _, ok := cfg.Partition("qm2"); !ok || !strings.Contains(string(res.TOML), `name = "qm2"`) {
		t.Errorf("partition qm2 not configured: %s", res.TOML)
	}
	f, _ = Parse("/q/bad name!.container", []byte("[Container]\n"))
	if _, err := Convert([]*File{f}, Options{}); err == nil || !strings.Contains(err.Error(), "--partition") {
		t.Errorf("an unusable file name must ask for --partition: %v", err)
	}
}

func TestParseTimespan(t *testing.T) {
	for in, want := range map[string]string{"10": "10s", "1min 30s": "1m30s", "500ms": "500ms", "2h": "2h0m0s", "1.5s": "1.5s", "90sec": "1m30s"} {
		d, err := parseTimespan(in)
		if err != nil || d.String() != want {
			t.Errorf("%q: %v %v, want %s", in, d, err, want)
		}
	}
	for _, in := range []string{"", "infinity", "10 parsecs", "s", "99999999d"} {
		if _, err := parseTimespan(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
