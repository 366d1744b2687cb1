package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/test/harness"
)

// qmdRun runs the qmd client against the private bus with stdin and
// returns stdout, stderr and the exit code.
func (e *opEnv) qmdRun(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.QMDBinary(t), args...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Addr)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("qmd %s -> %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	return out.String(), errb.String(), code
}

// TestExecAndShow: `qmd exec` runs commands in the partition through the
// Podman API with the streams attached and the exit code propagated;
// `qmd show` reports the init's namespaces and the cgroup's values as
// the host has them.
func TestExecAndShow(t *testing.T) {
	e := startWithBus(t, "")
	pid := e.pid(t)
	sock := "--podman-socket=" + e.pm.Socket

	// exec, with the socket from the configuration file and from the flag.
	if out, _, code := e.qmdRun(t, "", "exec", "--config", e.cfg, "qm", "echo", "hi"); code != 0 || out != "hi\n" {
		t.Errorf("exec qm echo hi: exit %d, stdout %q; want 0, \"hi\\n\"", code, out)
	}
	if _, _, code := e.qmdRun(t, "", "exec", sock, "qm", "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exec qm sh -c 'exit 3': exit %d, want 3", code)
	}
	if out, errOut, code := e.qmdRun(t, "", "exec", sock, "qm", "sh", "-c", "echo out; echo err >&2; exit 5"); code != 5 || out != "out\n" || errOut != "err\n" {
		t.Errorf("exec with both streams: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, code := e.qmdRun(t, "line one\nline two\n", "exec", sock, "qm", "cat"); code != 0 || out != "line one\nline two\n" {
		t.Errorf("exec qm cat with stdin: exit %d, stdout %q", code, out)
	}
	if _, errOut, code := e.qmdRun(t, "", "exec", sock, "qm", "/no/such/command"); code != 127 && code != 126 {
		t.Errorf("exec of a missing command: exit %d (want 126 or 127), stderr %q", code, errOut)
	}

	out, _, code := e.qmdRun(t, "", "exec", "--json", sock, "qm", "sh", "-c", "echo out; echo err >&2; exit 4")
	var ej struct {
		ExitCode       int `json:"exit_code"`
		Stdout, Stderr string
	}
	if err := json.Unmarshal([]byte(out), &ej); err != nil {
		t.Fatalf("exec --json: %v\n%s", err, out)
	}
	if code != 4 || ej.ExitCode != 4 || ej.Stdout != "out\n" || ej.Stderr != "err\n" {
		t.Errorf("exec --json: exit %d, %+v", code, ej)
	}

	// stdin that stays open does not hold the command: it ends when the command does.
	{
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(harness.QMDBinary(t), "exec", sock, "qm", "echo", "done")
		cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Addr)
		cmd.Stdin = r
		start := time.Now()
		out, err := cmd.Output()
		r.Close()
		w.Close()
		if err != nil || string(out) != "done\n" || time.Since(start) > 10*time.Second {
			t.Errorf("exec with an open stdin: %v, %q after %s", err, out, time.Since(start))
		}
	}

	// -t: a terminal in the partition, when qmd's stdin is one (script(1) gives it a pty).
	if script, err := exec.LookPath("script"); err == nil {
		cmd := exec.Command(script, "-qec", harness.QMDBinary(t)+" exec -t "+sock+" qm sh -c 'tty; exit 7'", "/dev/null")
		cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Addr)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 7 || !strings.Contains(string(out), "/dev/pts/") {
			t.Errorf("exec -t under a pty: exit %d (want 7), output %q (want a /dev/pts/ terminal)", code, out)
		}
	}

	// A socket in the partition: syslogd binds /dev/log (a datagram socket).
	if _, _, code := e.qmdRun(t, "", "exec", sock, "qm", "sh", "-c",
		"syslogd -n -O /tmp/messages </dev/null >/dev/null 2>&1 & i=0; while [ ! -S /dev/log ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; [ -S /dev/log ]"); code != 0 {
		t.Fatalf("syslogd in the partition did not bind /dev/log: exit %d", code)
	}

	// Podman removes ended exec sessions itself: 4.8+ on ExecRemove, older services
	// after exit_command_delay (5 min), as Docker does.
	t.Logf("exec sessions Podman still holds: %s", e.pm.Inspect("qm", "{{len .ExecIDs}}"))

	// show --json: the init's namespaces and the cgroup's pids.current.
	out, _, code = e.qmdRun(t, "", "show", "qm", "--json", sock)
	if code != 0 {
		t.Fatalf("show qm --json: exit %d", code)
	}
	var sj struct {
		MainPID   int    `json:"main_pid"`
		Cgroup    string `json:"control_group"`
		Resources struct {
			Version string `json:"cgroup_version"`
			Pids    struct {
				Current struct {
					Value  *uint64
					Source string
				}
			}
			Memory struct {
				Current struct{ Value *uint64 }
			}
		}
		Namespaces struct {
			PID     int
			Entries []struct {
				Type    string
				ID      *uint64
				HostID  *uint64 `json:"host_id"`
				Sharing string
			}
		}
		Sockets struct {
			Unavailable string
			Entries     []struct {
				Path, Type, State string
				Processes         []struct {
					PID     int
					Command string
				}
			}
		}
		Devices struct {
			Configured []struct {
				PathOnHost string `json:"path_on_host"`
				Present    bool
				Problem    string
			}
			ConfiguredUnavailable string `json:"configured_unavailable"`
			Nodes                 []struct {
				Path string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &sj); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	if sj.MainPID != pid || sj.Namespaces.PID != pid {
		t.Errorf("show: main pid %d, namespaces of %d; the partition's init is %d", sj.MainPID, sj.Namespaces.PID, pid)
	}
	want := map[string]bool{"pid": false, "mnt": false, "net": false, "uts": false, "ipc": false}
	for _, n := range sj.Namespaces.Entries {
		link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + n.Type)
		if err != nil {
			t.Errorf("namespace %s: %v", n.Type, err)
			continue
		}
		if n.ID == nil || link != n.Type+":["+strconv.FormatUint(*n.ID, 10)+"]" && !strings.HasSuffix(n.Type, "_for_children") {
			t.Errorf("namespace %s: id %v, the init's link is %s", n.Type, n.ID, link)
		}
		if _, ok := want[n.Type]; ok {
			want[n.Type] = true
			if n.Sharing != "private" {
				t.Errorf("namespace %s of the partition is %q, want private", n.Type, n.Sharing)
			}
		}
	}
	for typ, seen := range want {
		if !seen {
			t.Errorf("show --json has no %s namespace: %+v", typ, sj.Namespaces.Entries)
		}
	}
	pc := sj.Resources.Pids.Current
	if pc.Value == nil || *pc.Value < 1 || pc.Source == "" {
		t.Fatalf("resources.pids.current = %+v", pc)
	}
	b, err := os.ReadFile(pc.Source)
	if err != nil {
		t.Fatalf("pids.current source: %v", err)
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil || n < 1 || absDiff(n, *pc.Value) > 2 {
		t.Errorf("pids.current: show says %d, %s has %s", *pc.Value, pc.Source, b)
	}
	if !strings.Contains(pc.Source, sj.Cgroup) {
		t.Errorf("pids.current read from %s, not the partition's cgroup %s", pc.Source, sj.Cgroup)
	}
	if sj.Resources.Memory.Current.Value == nil || *sj.Resources.Memory.Current.Value == 0 {
		t.Errorf("memory.current = %v", sj.Resources.Memory.Current.Value)
	}
	if sj.Sockets.Unavailable != "" {
		t.Errorf("sockets unavailable: %s", sj.Sockets.Unavailable)
	}
	found := false
	for _, s := range sj.Sockets.Entries {
		if s.Path == "/dev/log" && s.Type == "dgram" && s.State == "bound" && len(s.Processes) == 1 && s.Processes[0].Command == "syslogd" {
			found = true
		}
	}
	if !found {
		t.Errorf("sockets: no /dev/log bound by syslogd: %+v", sj.Sockets.Entries)
	}
	if sj.Devices.ConfiguredUnavailable != "" {
		t.Errorf("configured devices unavailable: %s", sj.Devices.ConfiguredUnavailable)
	}
	for _, d := range sj.Devices.Configured {
		if !d.Present {
			t.Errorf("configured device %s not present in the partition: %s", d.PathOnHost, d.Problem)
		}
	}
	nodes := map[string]bool{}
	for _, n := range sj.Devices.Nodes {
		nodes[n.Path] = true
	}
	if !nodes["/dev/null"] || !nodes["/dev/zero"] {
		t.Errorf("device nodes of the partition lack /dev/null or /dev/zero: %v", nodes)
	}

	// The text view has every section.
	out, _, code = e.qmdRun(t, "", "show", sock, "qm")
	if code != 0 {
		t.Fatalf("show qm: exit %d", code)
	}
	for _, s := range []string{"● qm - QM partition", "Resources (cgroup v", "pids.current", "Devices:", "/dev/null", "Namespaces (of PID " + strconv.Itoa(pid), "Unix sockets"} {
		if !strings.Contains(out, s) {
			t.Errorf("show qm does not contain %q", s)
		}
	}
	out, _, code = e.qmdRun(t, "", "show", sock, "qm", "unix-domain-sockets")
	if code != 0 || !strings.Contains(out, "Unix sockets") || strings.Contains(out, "Resources") {
		t.Errorf("show qm unix-domain-sockets: exit %d\n%s", code, out)
	}
	if _, _, code := e.qmdRun(t, "", "show", "qm", "nonsense"); code != 2 {
		t.Errorf("show qm nonsense: exit %d, want 2", code)
	}
	if _, _, code := e.qmdRun(t, "", "exec", sock, "nosuch", "true"); code != 4 {
		t.Errorf("exec in an unknown partition: exit %d, want 4", code)
	}

	// A stopped partition: exec refuses with 3, show prints what it can and exits 3.
	if _, _, code := e.qmdRun(t, "", "stop", "qm"); code != 0 {
		t.Fatalf("stop qm: exit %d", code)
	}
	deadline := time.Now().Add(settle)
	for e.pm.Inspect("qm", "{{.State.Running}}") == "true" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	_, errOut, code := e.qmdRun(t, "", "exec", sock, "qm", "true")
	if code != 3 || !strings.Contains(errOut, "not running") {
		t.Errorf("exec in a stopped partition: exit %d, stderr %q; want 3 and \"not running\"", code, errOut)
	}
	out, _, code = e.qmdRun(t, "", "show", sock, "qm", "--json")
	if code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("show of a stopped partition: exit %d\n%s", code, out)
	}
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}
