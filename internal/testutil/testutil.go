// Package testutil holds the small helpers shared by qmd's tests.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// IntegrationEnv is set by `make test` (and CI). When it is set, a missing
// binary or privilege is a test failure, not a skip: CI must never pass by
// silently skipping the tests that use real components.
const IntegrationEnv = "QMD_INTEGRATION"

// Integration reports whether real-component tests are mandatory.
func Integration() bool { return os.Getenv(IntegrationEnv) != "" }

// RequireBinaries skips the test when one of the binaries is missing, or
// fails it when QMD_INTEGRATION is set.
func RequireBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, n+" not installed (make test installs it)")
		}
	}
}

// RequireRoot skips (or fails under QMD_INTEGRATION) when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root")
	}
}

func missing(t testing.TB, why string) {
	t.Helper()
	if Integration() {
		t.Fatalf("%s, and %s is set", why, IntegrationEnv)
	}
	t.Skip(why)
}
