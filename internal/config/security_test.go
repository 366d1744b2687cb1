package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestSecurityAnnotationsEnvLoad(t *testing.T) {
	files := writeFiles(t, map[string]string{
		"a.toml": `[[partition]]
name = "qm"
annotations = { "org.containers.qm.device.ttys" = "true" }

[partition.env]
TZ = "UTC"

[partition.security]
selinux_type = "qm_t"
selinux_file_type = "qm_file_t"
selinux_level = "s0"
selinux_nested = true
apparmor_profile = "unconfined"
`,
		// A later drop-in adds an annotation: tables merge key by key.
		"b.toml": "[[partition]]\nname = \"qm\"\n[partition.annotations]\n\"org.containers.qm.device.audio\" = \"true\"\n",
	})
	c, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Partitions[0]
	want := Security{SELinuxType: "qm_t", SELinuxFileType: "qm_file_t", SELinuxLevel: "s0", SELinuxNested: true, AppArmorProfile: "unconfined"}
	if p.Security != want {
		t.Errorf("security %+v, want %+v", p.Security, want)
	}
	if p.Annotations["org.containers.qm.device.ttys"] != "true" || p.Annotations["org.containers.qm.device.audio"] != "true" {
		t.Errorf("annotations %v", p.Annotations)
	}
	if p.Env["TZ"] != "UTC" {
		t.Errorf("env %v", p.Env)
	}
	if got := strings.Join(p.Security.SELinuxOpts(), " "); got != "type:qm_t filetype:qm_file_t level:s0" {
		t.Errorf("SELinuxOpts %q", got)
	}
}

func TestSecurityDefaultsArePodmans(t *testing.T) {
	p := DefaultPartition("qm")
	if p.Security != (Security{}) || p.Annotations != nil {
		t.Errorf("unset must mean Podman's default: %+v %v", p.Security, p.Annotations)
	}
}

func TestSecurityValidationNamesKey(t *testing.T) {
	cases := []struct {
		body, key, msg string
		line           int
	}{
		{"[partition.security]\nselinux_type = \"qm_t:s0\"\n", "partition[qm].security.selinux_type", "not an SELinux type", 4},
		{"[partition.security]\nselinux_file_type = \"a b\"\n", "partition[qm].security.selinux_file_type", "not an SELinux type", 4},
		{"[partition.security]\nselinux_level = \"c1\"\n", "partition[qm].security.selinux_level", "not an SELinux level", 4},
		{"[partition.security]\nselinux_level = \"s0:c1,x\"\n", "partition[qm].security.selinux_level", "not an SELinux level", 4},
		{"[partition.security]\nselinux_disable = true\nselinux_type = \"qm_t\"\n", "partition[qm].security.selinux_disable", "conflicts with selinux_type", 4},
		{"[partition.security]\nselinux_disable = true\nselinux_nested = true\n", "partition[qm].security.selinux_disable", "conflicts with selinux_nested", 4},
		{"[partition.security]\napparmor_profile = \"two words\"\n", "partition[qm].security.apparmor_profile", "not an AppArmor profile", 4},
		{"[partition.annotations]\n\"bad key\" = \"x\"\n", "partition[qm].annotations.bad key", "not an annotation key", 4},
		{"[partition.annotations]\n\"a=b\" = \"x\"\n", "partition[qm].annotations.a=b", "not an annotation key", 4},
		{"[partition.annotations]\n\"io.podman.annotations.label\" = \"type:x\"\n", "partition[qm].annotations.io.podman.annotations.label", "Podman's own", 4},
		{"[partition.env]\n\"1ABC\" = \"x\"\n", "partition[qm].env.1ABC", "not a variable name", 4},
		{"[partition.env]\n\"A-B\" = \"x\"\n", "partition[qm].env.A-B", "not a variable name", 4},
		{"[partition.env]\nA = \"x\\u0000y\"\n", "partition[qm].env.A", "NUL", 4},
	}
	for _, tc := range cases {
		files := writeFiles(t, map[string]string{"bad.toml": "[[partition]]\nname = \"qm\"\n" + tc.body})
		_, err := Load(files)
		if err == nil {
			t.Errorf("%q: no error", tc.body)
			continue
		}
		if !strings.Contains(err.Error(), tc.key+":") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %q does not name %s / %q", tc.body, err, tc.key, tc.msg)
		}
		if !strings.Contains(err.Error(), "bad.toml:") {
			t.Errorf("%q: error %q does not name the file", tc.body, err)
		}
	}
	good := []string{
		"[partition.security]\nselinux_level = \"s0-s0:c0.c1023\"\n",
		"[partition.security]\nselinux_level = \"s0:c1,c2\"\n",
		"[partition.security]\nselinux_type = \"my_container.process\"\n",
		"[partition.security]\napparmor_profile = \"containers-default-0.50.1\"\n",
		"[partition.security]\nselinux_disable = true\napparmor_profile = \"unconfined\"\n",
		"[partition.annotations]\n\"run.oci.keep_original_groups\" = \"1\"\n",
		"[partition.env]\n_X1 = \"a=b c\"\n",
	}
	for _, body := range good {
		if _, err := Load(writeFiles(t, map[string]string{"ok.toml": "[[partition]]\nname = \"qm\"\n" + body})); err != nil {
			t.Errorf("%q: %v", body, err)
		}
	}
}

// TestCreateHashStableWithoutNewKeys: the keys added for the migration are
// hashed only when set, so a qmd upgrade does not consider a partition
// created by the previous version stale.
func TestCreateHashStableWithoutNewKeys(t *testing.T) {
	p := DefaultPartition("qm")
	if got := p.CreateHash(); got != "4bdebd10808d96a3" {
		t.Errorf("default create hash changed to %s: every running partition would be recreated after an upgrade", got)
	}
	p.Security.SELinuxNested = true
	if p.CreateHash() == "4bdebd10808d96a3" {
		t.Errorf("selinux_nested not in the create hash")
	}
}

func TestPrepareSecurityAdaptsToHost(t *testing.T) {
	base := map[string]bool{"/usr/lib/qm/rootfs": true, "/usr/lib/qm/rootfs/sbin/init": false,
		"/etc/qm": true, "/var/qm": true, "/var/qm/tmp": true, "/dev/kvm": false, "/dev/fuse": false,
		"/usr/share/qmd/seccomp-no-rt.json": false}
	host := func(extra ...string) fakeHost {
		h := fakeHost{exists: map[string]bool{}}
		for k, v := range base {
			h.exists[k] = v
		}
		for _, e := range extra {
			h.exists[e] = true
		}
		return h
	}
	load := func(body string) *Config {
		c, err := Load(writeFiles(t, map[string]string{"s.toml": "[[partition]]\nname = \"qm\"\n" + body}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	c := load("[partition.security]\nselinux_type = \"qm_t\"\nselinux_nested = true\n")
	if err := Prepare(c, host()); err != nil {
		t.Fatal(err)
	}
	if c.Partitions[0].Security.SELinuxNested || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "security.selinux_nested") {
		t.Errorf("nesting without SELinux must be dropped with a warning: %+v %v", c.Partitions[0].Security, c.Warnings)
	}
	c = load("[partition.security]\nselinux_nested = true\n")
	if err := Prepare(c, host(SELinuxFS)); err != nil {
		t.Fatal(err)
	}
	if !c.Partitions[0].Security.SELinuxNested || len(c.Warnings) != 0 {
		t.Errorf("nesting with SELinux must stay: %+v %v", c.Partitions[0].Security, c.Warnings)
	}

	c = load("[partition.security]\napparmor_profile = \"qm-partition\"\n")
	err := Prepare(c, host())
	if err == nil || !strings.Contains(err.Error(), "partition[qm].security.apparmor_profile") || !strings.Contains(err.Error(), "s.toml:4") {
		t.Errorf("a profile without AppArmor must be an error naming key and line: %v", err)
	}
	c = load("[partition.security]\napparmor_profile = \"qm-partition\"\n")
	if err := Prepare(c, host(AppArmorFS)); err != nil {
		t.Errorf("with AppArmor: %v", err)
	}
	c = load("[partition.security]\napparmor_profile = \"unconfined\"\n")
	if err := Prepare(c, host()); err != nil {
		t.Errorf("unconfined needs no AppArmor: %v", err)
	}
}

// TestCheckConfigShowsSecurity: check-config prints the effective
// configuration with the TOML encoder; the new keys are part of it.
func TestCheckConfigShowsSecurity(t *testing.T) {
	c, err := Load(writeFiles(t, map[string]string{"s.toml": "[[partition]]\nname = \"qm\"\nannotations = { \"a.b\" = \"c\" }\n[partition.security]\nselinux_type = \"qm_t\"\n"}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"[partition.security]", `selinux_type = "qm_t"`, "selinux_nested = false", `apparmor_profile = ""`, "[partition.annotations]", `"a.b" = "c"`} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}
