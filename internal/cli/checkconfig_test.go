//go:build remote

package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A configuration a new user might write to "just get it running": the
// host's / as rootfs, no capabilities dropped, no seccomp filter, the
// host's /run (Podman's, D-Bus's and systemd's sockets) and /dev/kmsg.
// Every path exists on this host, so only the lint can object.
const isolationBreaking = `[[partition]]
name = "qm"
rootfs = "/"
exec = ["/bin/sh"]
cap_drop = []
seccomp_profile = "unconfined"
volumes = ["/run:/run"]
devices = ["/dev/kmsg"]
`

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "qmd.toml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCheckConfigLintWarns: without strict the findings are printed as
// warnings, each with file:line, key and risk, and the exit status is 0.
func TestCheckConfigLintWarns(t *testing.T) {
	for _, p := range []string{"/bin/sh", "/run", "/dev/kmsg"} {
		if _, err := os.Lstat(p); err != nil {
			t.Skipf("%s: %v", p, err)
		}
	}
	f := writeConfig(t, isolationBreaking)
	var stdout, stderr bytes.Buffer
	code := Main([]string{"check-config", "--config", f}, &stdout, &stderr)
	out := stderr.String()
	t.Logf("qmd check-config:\n%s", out)
	if code != 0 {
		t.Fatalf("exit %d, want 0 (warnings only)", code)
	}
	for _, want := range []string{
		"warning: isolation: " + f + ":3: partition[qm].rootfs: \"/\" is the host's /",
		f + ":5: partition[qm].cap_drop: does not drop sys_boot and sys_resource",
		f + ":6: partition[qm].seccomp_profile: \"unconfined\"",
		f + ":7: partition[qm].volumes: \"/run:/run\" contains /run/podman",
		f + ":8: partition[qm].devices: /dev/kmsg",
		"configuration OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out, "warning: isolation:"); n != 5 {
		t.Errorf("%d findings, want 5", n)
	}
}

// TestCheckConfigLintStrict: with [policy] strict = true the same file is
// invalid: exit status 1 and every finding in the error.
func TestCheckConfigLintStrict(t *testing.T) {
	for _, p := range []string{"/bin/sh", "/run", "/dev/kmsg"} {
		if _, err := os.Lstat(p); err != nil {
			t.Skipf("%s: %v", p, err)
		}
	}
	f := writeConfig(t, "[policy]\nstrict = true\n\n"+isolationBreaking)
	var stdout, stderr bytes.Buffer
	code := Main([]string{"check-config", "--config", f}, &stdout, &stderr)
	out := stderr.String()
	t.Logf("qmd check-config:\n%s", out)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"configuration is invalid",
		"freedom from interference ([policy] strict = true)",
		f + ":6: partition[qm].rootfs",
		f + ":11: partition[qm].devices",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("an invalid configuration is not printed: %q", stdout.String())
	}
}

// TestCheckConfigShippedClean: the vendor file passes on this host with no
// isolation warning (its rootfs and seccomp profile are swapped for paths
// that exist here; everything else as shipped).
func TestCheckConfigShippedClean(t *testing.T) {
	src, err := os.ReadFile("../../configs/qmd.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sbin", "init"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc-qm", "var-qm", "var-qm-tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := strings.NewReplacer(
		`rootfs = "/usr/lib/qm/rootfs"`, `rootfs = "`+root+`"`,
		`"/usr/share/qmd/seccomp-no-rt.json"`, `"`+mustAbs(t, "../../configs/seccomp-no-rt.json")+`"`,
		`"/etc/qm:/etc"`, `"`+dir+`/etc-qm:/etc"`,
		`"/var/qm:/var"`, `"`+dir+`/var-qm:/var"`,
		`"/var/qm/tmp:/var/tmp"`, `"`+dir+`/var-qm-tmp:/var/tmp"`,
	).Replace(string(src))
	f := writeConfig(t, s)
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"check-config", "--config", f}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "isolation") {
		t.Errorf("the shipped configuration has isolation findings:\n%s", stderr.String())
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
