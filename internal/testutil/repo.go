package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoFile returns the absolute path of rel (slash-separated, relative to
// the repository root: the first directory above the working directory
// that holds go.mod). The file need not exist.
func RepoFile(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(rel))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory (looking for %s)", rel)
		}
		dir = parent
	}
}
