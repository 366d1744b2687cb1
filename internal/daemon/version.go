//go:build remote

package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"unicode"
)

// versionFile remembers which qmd version last ran, next to the incident
// store: a package upgrade (qmd restarted with a new binary that adopts
// the running partition) is then an incident of its own, "qmd upgraded
// from X to Y", and operators can tell an upgrade from a crash.
const versionFile = "qmd.version"

// checkUpgrade compares the recorded version with the running one and
// records the running one. It returns the previous version when it
// differs ("" on a first start or when unchanged). A file that cannot be
// read or written is reported, never fatal.
func checkUpgrade(dir, running string) (previous string, err error) {
	path := filepath.Join(dir, versionFile)
	b, rerr := os.ReadFile(path)
	switch {
	case rerr == nil:
		previous = string(bytes.TrimSpace(b))
		if !validVersion(previous) {
			previous = ""
			err = fmt.Errorf("%s: not a version string; rewriting it", path)
		}
	case !os.IsNotExist(rerr):
		err = fmt.Errorf("read %s: %w", path, rerr)
	}
	if previous == running {
		return "", err
	}
	if werr := writeAtomic(path, []byte(running+"\n")); werr != nil {
		return previous, fmt.Errorf("record version in %s: %w", path, werr)
	}
	return previous, err
}

func validVersion(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".qmd.version-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
