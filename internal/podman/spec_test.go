//go:build remote

package podman

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/test/harness"
)

var testFacts = hostinfo.Facts{MemTotal: 8 << 30, PidMax: 4194304}

// TestSpecDefaultsHaveNoSecurityOverrides: with the new keys unset the
// create request leaves the label, the profile and the annotations to
// Podman, as before the keys existed.
func TestSpecDefaultsHaveNoSecurityOverrides(t *testing.T) {
	p := config.DefaultPartition("qm")
	s, err := Spec(&p, testFacts, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.SelinuxOpts) != 0 || s.LabelNested != nil || s.ApparmorProfile != "" || len(s.Unmask) != 0 {
		t.Errorf("defaults must not set LSM options: selinux %v nested %v apparmor %q unmask %v",
			s.SelinuxOpts, s.LabelNested, s.ApparmorProfile, s.Unmask)
	}
	if len(s.Annotations) != 0 {
		t.Errorf("defaults must not annotate: %v", s.Annotations)
	}
}

// TestSpecSELinuxLikeQM: qm.container's SecurityLabel* keys become the
// spec fields and annotations podman run --security-opt label=... makes.
func TestSpecSELinuxLikeQM(t *testing.T) {
	p := config.DefaultPartition("qm")
	p.Security = config.Security{SELinuxType: "qm_t", SELinuxFileType: "qm_file_t", SELinuxLevel: "s0", SELinuxNested: true}
	s, err := Spec(&p, testFacts, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"type:qm_t", "filetype:qm_file_t", "level:s0"}
	if !slices.Equal(s.SelinuxOpts, want) {
		t.Errorf("SelinuxOpts %v, want %v", s.SelinuxOpts, want)
	}
	// Without "type:" in this annotation Podman relabels a systemd-mode
	// container container_init_t.
	if got := s.Annotations[annotationLabel]; got != "type:qm_t,label=filetype:qm_file_t,label=level:s0" {
		t.Errorf("label annotation %q", got)
	}
	if s.LabelNested == nil || !*s.LabelNested {
		t.Errorf("LabelNested not set")
	}
	if !slices.Contains(s.Unmask, "/sys/fs/selinux") || !slices.Contains(s.Unmask, "/proc") {
		t.Errorf("nested must unmask selinuxfs and /proc: %v", s.Unmask)
	}
	found := false
	for _, m := range s.Mounts {
		if m.Destination == "/sys/fs/selinux" && m.Source == "/sys/fs/selinux" && m.Type == "bind" {
			found = true
		}
	}
	if !found {
		t.Errorf("nested must bind /sys/fs/selinux: %v", s.Mounts)
	}
	if s.Annotations[annotationMountContext] != "rootcontext" {
		t.Errorf("nested mount context annotation: %v", s.Annotations)
	}
}

func TestSpecSELinuxDisable(t *testing.T) {
	p := config.DefaultPartition("qm")
	p.Security.SELinuxDisable = true
	s, err := Spec(&p, testFacts, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.SelinuxOpts, []string{"disable"}) || s.Annotations[annotationLabel] != "disable" {
		t.Errorf("disable: %v %v", s.SelinuxOpts, s.Annotations)
	}
	if s.LabelNested != nil {
		t.Errorf("disable must not nest")
	}
}

func TestSpecAppArmorAnnotationsEnv(t *testing.T) {
	p := config.DefaultPartition("qm")
	p.Security.AppArmorProfile = "qm-partition"
	p.Annotations = map[string]string{"org.containers.qm.device.ttys": "true"}
	p.Env = map[string]string{"TZ": "UTC"}
	s, err := Spec(&p, testFacts, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.ApparmorProfile != "qm-partition" || s.Annotations[annotationApparmor] != "qm-partition" {
		t.Errorf("apparmor: %q %v", s.ApparmorProfile, s.Annotations)
	}
	if s.Annotations["org.containers.qm.device.ttys"] != "true" {
		t.Errorf("user annotation lost: %v", s.Annotations)
	}
	if s.Env["TZ"] != "UTC" {
		t.Errorf("env: %v", s.Env)
	}
	// The spec must not alias the configuration's map: the annotations
	// qmd adds stay out of the configuration (and its hash).
	if len(p.Annotations) != 1 {
		t.Errorf("Spec wrote into the configuration: %v", p.Annotations)
	}
	if len(s.SelinuxOpts) != 0 || s.Annotations[annotationLabel] != "" {
		t.Errorf("no SELinux keys set, got %v %v", s.SelinuxOpts, s.Annotations)
	}
}

// TestSpecHashCoversSecurity: the new keys are create-time settings, so a
// change of any of them changes the config-hash label.
func TestSpecHashCoversSecurity(t *testing.T) {
	base := config.DefaultPartition("qm")
	s0, err := Spec(&base, testFacts, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*config.Partition){
		"selinux_type":      func(p *config.Partition) { p.Security.SELinuxType = "qm_t" },
		"selinux_file_type": func(p *config.Partition) { p.Security.SELinuxFileType = "qm_file_t" },
		"selinux_level":     func(p *config.Partition) { p.Security.SELinuxLevel = "s0" },
		"selinux_nested":    func(p *config.Partition) { p.Security.SELinuxNested = true },
		"selinux_disable":   func(p *config.Partition) { p.Security.SELinuxDisable = true },
		"apparmor_profile":  func(p *config.Partition) { p.Security.AppArmorProfile = "unconfined" },
		"annotations":       func(p *config.Partition) { p.Annotations = map[string]string{"a.b": "c"} },
		"env":               func(p *config.Partition) { p.Env = map[string]string{"A": "1"} },
	} {
		p := config.DefaultPartition("qm")
		mut(&p)
		s, err := Spec(&p, testFacts, "")
		if err != nil {
			t.Fatal(name, err)
		}
		if s.Labels[LabelConfigHash] == s0.Labels[LabelConfigHash] {
			t.Errorf("%s does not change the create hash", name)
		}
	}
}

// TestRealPodmanSecurityKeys creates a partition with the migration keys
// against the private Podman service of test/harness (skipped like
// TestRealPodman): the server takes them and inspect shows them.
func TestRealPodmanSecurityKeys(t *testing.T) {
	pm := harness.StartPodman(t)
	rootfs := harness.Rootfs(t, "loop")
	ctx := context.Background()
	c := New(pm.URI(), 10*time.Second)
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	p := config.DefaultPartition("qmd-security-test")
	p.Rootfs = rootfs
	p.Volumes, p.Devices = nil, nil
	p.Network = "none"
	p.Seccomp = filepath.Join(harness.Repo(t), "configs", "seccomp-no-rt.json")
	p.Rlimits = map[string]string{"nofile": "1024:20000", "nproc": "4096:32768"} // HOST-FACTS: within the hard limits
	p.Annotations = map[string]string{"org.containers.qm.device.ttys": "true"}
	p.Env = map[string]string{"QMD_TEST": "a b"}
	// Label options are ignored by Podman without SELinux and "unconfined"
	// needs no AppArmor: both work on any host.
	p.Security = config.Security{SELinuxDisable: true, AppArmorProfile: "unconfined"}
	id, err := c.Create(ctx, &p)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	defer func() { _ = c.Remove(ctx, id) }()
	if got := pm.Inspect(id, `{{index .Config.Annotations "org.containers.qm.device.ttys"}}`); got != "true" {
		t.Errorf("annotation: %q", got)
	}
	if got := pm.Inspect(id, `{{index .Config.Annotations "io.podman.annotations.label"}}`); got != "disable" {
		t.Errorf("label annotation: %q", got)
	}
	if got := pm.Inspect(id, "{{.Config.Env}}"); !strings.Contains(got, "QMD_TEST=a b") {
		t.Errorf("env: %q", got)
	}
	if got := pm.Inspect(id, "{{.HostConfig.SecurityOpt}}"); !strings.Contains(got, "label=disable") {
		t.Errorf("security options: %q", got)
	}
}
