package incident

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestMain keeps the tests away from the real DefaultIDFile: a store that
// degrades writes its ID file, and a test must not leave one in /run/qmd.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qmd-incident-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defaultIDFile = filepath.Join(dir, "incident-id")
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
