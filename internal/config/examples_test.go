package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// anyHost has every path (the rootfs and the others as directories) and
// high hard limits: what a host prepared for the examples looks like.
type anyHost struct{}

func (anyHost) Lstat(string) (fs.FileInfo, error) { return fakeInfo{dir: true}, nil }
func (anyHost) RlimitHard(string) (uint64, bool)  { return 1 << 20, true }

// TestShippedExamples runs what `qmd check-config` does (load over the
// vendor file, validate, prepare against the host) on each example drop-in
// of configs/examples, the equivalents of containers/qm's sub-packages.
func TestShippedExamples(t *testing.T) {
	files, err := filepath.Glob("../../configs/examples/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range files {
		names[filepath.Base(f)] = true
	}
	for _, want := range []string{"kvm.toml", "sound.toml", "video.toml", "windowmanager.toml", "img-tempdir.toml"} {
		if !names[want] {
			t.Errorf("configs/examples lacks %s", want)
		}
	}
	defaults := DefaultPartition("qm")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(src), "# ") || !strings.Contains(string(src), "# Grants:") {
				t.Errorf("an example starts with a comment saying what it grants (\"# Grants:\") and why")
			}
			c, err := Load([]string{"../../configs/qmd.toml", f})
			if err != nil {
				t.Fatalf("check-config: %v", err)
			}
			if err := Prepare(c, anyHost{}); err != nil {
				t.Fatalf("check-config on a prepared host: %v", err)
			}
			p, ok := c.Partition("qm")
			if !ok || len(c.Partitions) != 1 {
				t.Fatalf("an example configures the partition qm: %+v", c.Partitions)
			}
			// Lists replace the defaults: an example must not silently
			// take qmd's default devices and volumes away.
			for _, d := range defaults.Devices {
				if !contains(p.Devices, d) {
					t.Errorf("devices %v lose the default %s", p.Devices, d)
				}
			}
			for _, v := range defaults.Volumes {
				if !contains(p.Volumes, v) {
					t.Errorf("volumes %v lose the default %s", p.Volumes, v)
				}
			}
			if p.CreateHash() == defaults.CreateHash() && filepath.Base(f) != "img-tempdir.toml" {
				t.Errorf("the example changes nothing the partition is created with")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
