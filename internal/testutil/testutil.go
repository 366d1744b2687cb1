// Package testutil holds the small helpers shared by qmd's tests.
package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
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

// HasCap reports whether the test process has capability bit (e.g.
// unix.CAP_SYS_RESOURCE) in its effective set; false when
// /proc/self/status cannot be read.
func HasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}
