package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
)

// helperEnv makes the test binary run one client command (TestHelperProcess).
const helperEnv = "QMD_CTL_HELPER"

// TestHelperProcess is not a test: run as a child with helperEnv set, it
// runs Run with the arguments after "--" and exits with its code.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Run(context.Background(), args, os.Stdout, os.Stderr))
}

// runAs runs a client command in a child process as uid (and gid), with
// no supplementary groups, so the bus identifies it as that user.
func (b *bus) runAs(t *testing.T, uid int, args ...string) (int, string) {
	t.Helper()
	testutil.RequireBinaries(t, "setpriv")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary's directory is private to root: copy it next to
	// the bus socket (a 0755 directory).
	bin := filepath.Join(b.dir, "ctl.test")
	if _, err := os.Stat(bin); err != nil {
		copyFile(t, exe, bin)
	}
	id := fmt.Sprint(uid)
	argv := append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", bin, "-test.run=^TestHelperProcess$", "--"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", argv...)
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DBUS_SYSTEM_BUS_ADDRESS="+b.addr)
	out, err := cmd.CombinedOutput()
	t.Logf("uid %d: qmd %s: %v\n%s", uid, strings.Join(args, " "), err, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBusPolicyOtherUser runs the client as an unprivileged user against
// the project's bus policy: reads work, every mutating command is denied
// by the bus (exit 5) before it reaches qmd.
func TestBusPolicyOtherUser(t *testing.T) {
	b := startBus(t)
	fb := newFake()
	fb.AddIncident(t, "qm", incident.Start, "started")
	b.serve(t, fb, dbusapi.Options{})

	const nobody = 65534
	for _, args := range [][]string{{"status"}, {"list"}, {"incidents", "--json"}, {"status", "qm", "--json"}} {
		code, out := b.runAs(t, nobody, args...)
		if code != ExitOK {
			t.Errorf("uid %d: qmd %v: exit %d\n%s", nobody, args, code, out)
		}
	}
	for _, args := range [][]string{
		{"start", "qm"}, {"stop", "qm"}, {"restart", "qm"}, {"freeze", "qm"}, {"thaw", "qm"},
		{"reset-failed", "qm"}, {"set-memory-high", "qm", "1G"}, {"set-memory-max", "qm", "1G"},
		{"set-oom-score-adjust", "qm", "100"},
	} {
		code, out := b.runAs(t, nobody, args...)
		if code != ExitAccessDenied || !strings.Contains(out, "access denied: run as root or as a member of group qmd-admin") {
			t.Errorf("uid %d: qmd %v: exit %d, want %d\n%s", nobody, args, code, ExitAccessDenied, out)
		}
	}
	if calls := fb.Calls(); len(calls) != 0 {
		t.Errorf("backend was called: %v", calls)
	}
	// A partition that does not exist is still reported as such to readers.
	if code, out := b.runAs(t, nobody, "status", "nope"); code != ExitNoSuchPartition {
		t.Errorf("status nope: exit %d\n%s", code, out)
	}
}
