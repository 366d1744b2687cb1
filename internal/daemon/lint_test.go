//go:build remote

package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/config"
)

// TestLoadConfigLint: start and reload load the configuration through
// LoadConfig. Isolation findings are kept as warnings (Findings), or, with
// [policy] strict = true, make it fail: qmd refuses to start, and a reload
// is rejected with the running configuration kept.
func TestLoadConfigLint(t *testing.T) {
	for _, p := range []string{"/bin/sh", "/run"} {
		if _, err := os.Lstat(p); err != nil {
			t.Skipf("%s: %v", p, err)
		}
	}
	seccomp, err := filepath.Abs("../../configs/seccomp-no-rt.json")
	if err != nil {
		t.Fatal(err)
	}
	bad := "[[partition]]\nname = \"qm\"\nrootfs = \"/\"\nexec = [\"/bin/sh\"]\nvolumes = [\"/run:/run\"]\ndevices = []\nseccomp_profile = \"" + seccomp + "\"\n"
	dir := t.TempDir()
	write := func(name, src string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cfg, err := LoadConfig([]string{write("warn.toml", bad)})
	if err != nil {
		t.Fatalf("strict = false: %v", err)
	}
	if len(cfg.Findings) != 2 {
		t.Fatalf("findings %v, want rootfs and volumes", cfg.Findings)
	}
	_, err = LoadConfig([]string{write("strict.toml", "[policy]\nstrict = true\n"+bad)})
	if err == nil || !config.IsLintError(err) {
		t.Fatalf("strict = true: got %v, want the lint's error", err)
	}
	for _, want := range []string{"strict.toml:5: partition[qm].rootfs", "strict.toml:7: partition[qm].volumes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
