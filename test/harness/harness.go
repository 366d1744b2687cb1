// Package harness starts the real components qmd's integration tests and
// benchmarks run against: an isolated Podman API service (its own --root,
// --runroot and socket; runc; cgroupfs), busybox partition rootfs trees, and
// the qmd binary itself as a subprocess with a generated configuration.
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
)

// Repo returns the repository's top directory.
func Repo(t testing.TB) string {
	t.Helper()
	return testutil.RepoFile(t, "")
}

// QMDBinary returns the qmd binary under test ($QMD_BIN, or bin/qmd).
func QMDBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("QMD_BIN")
	if bin == "" {
		bin = filepath.Join(Repo(t), "bin", "qmd")
	}
	if _, err := os.Stat(bin); err != nil {
		if testutil.Integration() {
			t.Fatalf("qmd binary %s missing (make build)", bin)
		}
		t.Skipf("qmd binary %s missing (make build)", bin)
	}
	return bin
}

// Podman is a private Podman API service.
type Podman struct {
	Dir    string
	Socket string // path
	conf   string
	cmd    *exec.Cmd
	t      testing.TB
}

// StartPodman starts an isolated service; it is stopped (and its
// containers removed) at the end of the test.
func StartPodman(t testing.TB) *Podman {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real Podman service; not with -short (make unit)")
	}
	testutil.RequireRoot(t)
	testutil.RequireBinaries(t, "podman", "runc", "busybox")
	dir, err := os.MkdirTemp("", "qmd-podman-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Podman{Dir: dir, Socket: filepath.Join(dir, "podman.sock"), conf: filepath.Join(Repo(t), "configs", "containers-host.conf"), t: t}
	p.Start()
	t.Cleanup(func() {
		_, _ = p.CLI("rm", "-a", "-f", "-t", "0")
		p.Kill()
		_ = os.RemoveAll(dir)
	})
	return p
}

func (p *Podman) base() []string {
	return []string{"--root", filepath.Join(p.Dir, "storage"), "--runroot", filepath.Join(p.Dir, "runroot"),
		"--tmpdir", filepath.Join(p.Dir, "tmp")}
}

// Start (re)starts the service and waits until it answers.
func (p *Podman) Start() {
	p.t.Helper()
	args := append(p.base(), "system", "service", "--time=0", "unix://"+p.Socket)
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	log, err := os.OpenFile(filepath.Join(p.Dir, "service.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: Kill must not take conmon and the containers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start podman service: %v", err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if p.ping() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(p.Dir, "service.log"))
	p.t.Fatalf("podman service did not come up:\n%s", b)
}

func (p *Podman) ping() bool {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p.Socket)
		}}}
	resp, err := c.Get("http://d/_ping")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Kill stops the service abruptly (SIGKILL), leaving containers running,
// as a crash of the service would.
func (p *Podman) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_, _ = p.cmd.Process.Wait()
	p.cmd = nil
	_ = os.Remove(p.Socket)
}

// URI is the socket URL for qmd's configuration.
func (p *Podman) URI() string { return "unix://" + p.Socket }

// CLI runs the podman command line against the same storage.
func (p *Podman) CLI(args ...string) (string, error) {
	cmd := exec.Command("podman", append(p.base(), args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Inspect returns a container's Go-template fields, "" when absent.
func (p *Podman) Inspect(name, format string) string {
	out, err := p.CLI("inspect", "-f", format, name)
	if err != nil {
		return ""
	}
	return out
}

// Rootfs builds a busybox partition rootfs (mode "loop" or "exit").
func Rootfs(t testing.TB, mode string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	out, err := exec.Command("bash", filepath.Join(Repo(t), "scripts", "mkrootfs.sh"), dir, mode).CombinedOutput()
	if err != nil {
		t.Fatalf("mkrootfs: %v\n%s", err, out)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "schedcheck"), "./test/tools/schedcheck")
	build.Dir = Repo(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build schedcheck: %v\n%s", err, out)
	}
	return dir
}

// Partition is one [[partition]] of a generated configuration.
type Partition struct {
	Name, Rootfs string
	Extra        string // more TOML lines inside the partition table
}

// Config writes a qmd configuration for the service and partitions.
// extra is TOML inserted before the partitions; D-Bus is off unless extra
// has a [dbus] table.
func Config(t testing.TB, p *Podman, dir string, extra string, parts ...Partition) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[podman]\nsocket = %q\n\n[incidents]\npath = %q\n\n", p.URI(), filepath.Join(dir, "incidents.db"))
	if !strings.Contains(extra, "[log]") {
		b.WriteString("[log]\nformat = \"json\"\nlevel = \"debug\"\n\n")
	}
	if !strings.Contains(extra, "[dbus]") {
		b.WriteString("[dbus]\nenable = false\n\n")
	}
	b.WriteString(extra + "\n")
	for _, pt := range parts {
		fmt.Fprintf(&b, "[[partition]]\nname = %q\nrootfs = %q\nvolumes = []\nseccomp_profile = %q\nstop_timeout = \"2s\"\n%s\n",
			pt.Name, pt.Rootfs, filepath.Join(Repo(t), "configs", "seccomp-no-rt.json"), pt.Extra)
	}
	path := filepath.Join(dir, "qmd.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// QMD is a running qmd daemon.
type QMD struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	cond  *sync.Cond
}

// StartQMD runs the qmd binary with the configuration (JSON logs on stderr).
func StartQMD(t testing.TB, cfg string, env ...string) *QMD {
	t.Helper()
	q := &QMD{t: t, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	q.cmd = exec.Command(QMDBinary(t), "--config", cfg)
	q.cmd.Env = append(os.Environ(), env...)
	stderr, err := q.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	q.cmd.Stdout = io.Discard
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go q.read(stderr)
	// qmd must never touch host processes: the test process and PID 1 keep
	// their oom_score_adj.
	before := hostScores()
	t.Cleanup(func() {
		q.Stop()
		if after := hostScores(); after != before {
			t.Errorf("qmd changed host processes' oom_score_adj: %s -> %s", before, after)
		}
		if t.Failed() {
			t.Logf("qmd log:\n%s", q.Log())
		}
	})
	return q
}

func (q *QMD) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		_ = json.Unmarshal([]byte(line), &m)
		q.mu.Lock()
		q.raw = append(q.raw, line)
		if m != nil {
			q.lines = append(q.lines, m)
		}
		q.cond.Broadcast()
		q.mu.Unlock()
	}
	q.err = q.cmd.Wait()
	q.mu.Lock()
	close(q.done)
	q.cond.Broadcast()
	q.mu.Unlock()
}

func hostScores() string {
	var out []string
	for _, pid := range []string{"1", "self"} {
		b, _ := os.ReadFile("/proc/" + pid + "/oom_score_adj")
		out = append(out, pid+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(out, ",")
}

// Log returns everything qmd logged.
func (q *QMD) Log() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.raw, "\n")
}

// Count returns how many log entries match all key/values.
func (q *QMD) Count(kv ...string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, m := range q.lines {
		if match(m, kv) {
			n++
		}
	}
	return n
}

func match(m map[string]any, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if fmt.Sprint(m[kv[i]]) != kv[i+1] {
			return false
		}
	}
	return true
}

// WaitLog waits until n entries match kv and returns the last match.
func (q *QMD) WaitLog(timeout time.Duration, n int, kv ...string) map[string]any {
	q.t.Helper()
	return q.WaitLogFunc(timeout, n, fmt.Sprint(kv), func(m map[string]any) bool { return match(m, kv) })
}

// WaitLogFunc waits until n entries satisfy pred and returns the last one.
func (q *QMD) WaitLogFunc(timeout time.Duration, n int, what string, pred func(map[string]any) bool) map[string]any {
	q.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { q.mu.Lock(); q.cond.Broadcast(); q.mu.Unlock() })
	defer timer.Stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		var last map[string]any
		count := 0
		for _, m := range q.lines {
			if pred(m) {
				count++
				last = m
			}
		}
		if count >= n {
			return last
		}
		select {
		case <-q.done:
			q.t.Fatalf("qmd exited (%v) before logging %d× %s\n%s", q.err, n, what, strings.Join(q.raw, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("timed out after %s waiting for %d× %s (saw %d)\n%s", timeout, n, what, count, strings.Join(q.raw, "\n"))
		}
		q.cond.Wait()
	}
}

// Stop sends SIGTERM and waits for qmd to exit.
func (q *QMD) Stop() {
	select {
	case <-q.done:
		return
	default:
	}
	_ = q.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-q.done:
	case <-time.After(15 * time.Second):
		_ = q.cmd.Process.Kill()
		<-q.done
	}
}

// Signal sends sig to qmd.
func (q *QMD) Signal(sig os.Signal) { _ = q.cmd.Process.Signal(sig) }

// Exited returns qmd's exit error once it has exited.
func (q *QMD) Exited(timeout time.Duration) (error, bool) {
	select {
	case <-q.done:
		return q.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// PID returns qmd's process id.
func (q *QMD) PID() int { return q.cmd.Process.Pid }
