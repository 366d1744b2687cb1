//go:build remote

package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheckUpgrade(t *testing.T) {
	dir := t.TempDir()
	if prev, err := checkUpgrade(dir, "1.0"); prev != "" || err != nil {
		t.Fatalf("first start: %q %v", prev, err)
	}
	if prev, err := checkUpgrade(dir, "1.0"); prev != "" || err != nil {
		t.Fatalf("same version: %q %v", prev, err)
	}
	if prev, err := checkUpgrade(dir, "1.1"); prev != "1.0" || err != nil {
		t.Fatalf("upgrade: %q %v", prev, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, versionFile)); string(b) != "1.1\n" {
		t.Errorf("recorded %q", b)
	}
	// Garbage is reported and replaced, never taken for a version.
	if err := os.WriteFile(filepath.Join(dir, versionFile), []byte("\x00\x01 junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if prev, err := checkUpgrade(dir, "1.2"); prev != "" || err == nil {
		t.Fatalf("garbage: %q %v", prev, err)
	}
	if prev, _ := checkUpgrade(dir, "1.3"); prev != "1.2" {
		t.Errorf("after garbage: %q", prev)
	}
	// An unwritable place is an error, not a panic or a hang.
	if _, err := checkUpgrade("/proc/self/nonexistent", "1.0"); err == nil {
		t.Error("unwritable directory accepted")
	}
}
