package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/inspect"
)

// `qmd show` and `qmd exec`: the view containers/qm's qmctl gives, for
// a partition qmd supervises. The partition (container ID, main PID,
// cgroup) comes from qmd over D-Bus; what show reports is then read from
// the host directly (internal/inspect), the configured devices and exec
// through the Podman API.

// podmanAPI is the Podman side of show and exec. internal/cli sets it
// (SetPodman): the Podman bindings need build tags this package does not.
var podmanAPI inspect.Podman

// SetPodman gives show and exec their Podman API client.
func SetPodman(p inspect.Podman) { podmanAPI = p }

// inspectHost is where show reads /proc and cgroupfs (fake trees in tests).
var inspectHost inspect.Host

// execStdin is what exec attaches as the command's stdin.
var execStdin io.Reader = os.Stdin

// maxCapture bounds what `exec --json` keeps of each output stream.
const maxCapture = 16 << 20

// Topics of show, and the names qmctl uses for them.
var (
	showTopics  = []string{"resources", "devices", "namespaces", "sockets"}
	topicAlias  = map[string]string{"unix-domain-sockets": "sockets", "available-devices": "devices"}
	flagSocket  = flagSpec{name: "podman-socket", arg: "URI", help: "Podman API socket, a path or unix:// URI (default: podman.socket of qmd's configuration)"}
	flagConfigF = flagSpec{name: "config", arg: "FILE", help: "read podman.socket from this configuration file instead of qmd's"}
)

func inspectCommands() []*command {
	return []*command{
		{name: "show", args: "PARTITION [TOPIC]", minArgs: 1, maxArgs: 2, partArgs: 1, run: runShow,
			flags:   []flagSpec{flagJSON, flagSocket, flagConfigF, flagAddress, flagHelp},
			summary: "show a partition's resources, devices, namespaces and sockets",
			details: "TOPIC is resources, devices, namespaces or sockets (qmctl's unix-domain-sockets and\n" +
				"available-devices are accepted too); without TOPIC, or with \"all\", every one of them.\n" +
				"The partition (container, main PID, cgroup) comes from qmd; the rest is read from the host:\n" +
				"  resources   the cgroup's memory current/high/max/swap, cpu weight/max, pids, freezer, io\n" +
				"              (cgroupfs under /sys/fs/cgroup, v1 or v2)\n" +
				"  devices     the devices the partition was created with (Podman inspect), checked inside\n" +
				"              it, and every device node under its /dev (/proc/PID/root/dev)\n" +
				"  namespaces  /proc/PID/ns/* of its init, each private or shared with the host (PID 1)\n" +
				"  sockets     unix sockets listening in it (/proc/PID/net/unix) and the processes holding them\n" +
				"A value that cannot be read is shown as n/a with the reason. Needs root.\n" +
				"Exits 3 when the partition is not running (what qmd knows is still printed)."},
		{name: "exec", args: "PARTITION CMD [ARG...]", minArgs: 2, maxArgs: math.MaxInt, partArgs: 1, rest: 1, run: runExec,
			flags: []flagSpec{
				{name: "tty", short: "t", help: "allocate a terminal (stdin must be one); stdout and stderr are then one stream"},
				{name: "json", help: "print {\"exit_code\":N,\"stdout\":...,\"stderr\":...} instead of the output (not with -t)"},
				flagSocket, flagConfigF, flagAddress, flagHelp,
			},
			summary: "run a command inside a running partition (Podman API)",
			details: "Options go before CMD; everything from CMD on is the command (or use -- before it).\n" +
				"stdin, stdout and stderr are attached; qmd exits with the command's exit code\n" +
				"(126/127: it could not be run). Errors of qmd itself use the exit codes below,\n" +
				"which a command can return as well: with --json, exit_code is the command's."},
	}
}

// topicsOf returns the topics to show for the optional TOPIC argument.
func topicsOf(inv *invocation) ([]string, error) {
	if len(inv.args) < 2 || inv.args[1] == "all" {
		return showTopics, nil
	}
	t := inv.args[1]
	if a, ok := topicAlias[t]; ok {
		t = a
	}
	for _, s := range showTopics {
		if s == t {
			return []string{t}, nil
		}
	}
	return nil, usagef("unknown topic %q (want %s, or all)", inv.args[1], strings.Join(showTopics, ", "))
}

// podmanSocket is --podman-socket, else podman.socket of qmd's
// configuration (the files the daemon reads, or --config FILE).
func podmanSocket(inv *invocation) (string, error) {
	if s := inv.flags["podman-socket"]; s != "" {
		return inspect.SocketURI(s), nil
	}
	var files []string
	if f := inv.flags["config"]; f != "" {
		files = []string{f}
	} else {
		var err error
		if files, err = config.Files(); err != nil {
			return "", fmt.Errorf("qmd's configuration: %w (give --podman-socket)", err)
		}
	}
	cfg, err := config.Load(files)
	if err != nil {
		return "", fmt.Errorf("qmd's configuration, for podman.socket: %s (give --podman-socket)", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return cfg.Podman.Socket, nil
}

// ---- show

type showJSON struct {
	partitionJSON
	Resources  *inspect.Resources  `json:"resources,omitempty"`
	Devices    *inspect.Devices    `json:"devices,omitempty"`
	Namespaces *inspect.Namespaces `json:"namespaces,omitempty"`
	Sockets    *inspect.Sockets    `json:"sockets,omitempty"`
}

func runShow(ctx context.Context, inv *invocation) error {
	topics, err := topicsOf(inv)
	if err != nil {
		return err
	}
	return withClient(ctx, inv, func(c *client) error {
		path, err := c.partitionPath(ctx, inv.args[0])
		if err != nil {
			return err
		}
		p, err := c.partitionAt(ctx, path)
		if err != nil {
			return err
		}
		out := collect(ctx, inv, p, topics)
		if inv.has("json") {
			if err := writeJSON(inv.stdout, out); err != nil {
				return err
			}
		} else {
			writeShow(inv.stdout, p, out)
		}
		if !running(p) {
			return exitCode(ExitNotActive)
		}
		return nil
	})
}

func running(p dbusapi.PartitionInfo) bool {
	return p.ActiveState == "active" && p.MainPID != 0 && p.ContainerID != ""
}

// collect reads the topics of partition p from the host.
func collect(ctx context.Context, inv *invocation, p dbusapi.PartitionInfo, topics []string) showJSON {
	out := showJSON{partitionJSON: toPartitionJSON(p)}
	want := map[string]bool{}
	for _, t := range topics {
		want[t] = true
	}
	h := inspectHost
	pid := int(p.MainPID)

	// Why the process-based topics cannot be read, if they cannot.
	why := ""
	var pin *inspect.Pinned
	if !running(p) {
		why = fmt.Sprintf("the partition is not running (%s/%s)", p.ActiveState, p.SubState)
	} else if want["devices"] || want["namespaces"] || want["sockets"] {
		var err error
		if pin, err = h.Pin(pid, p.ContainerID, p.ControlGroup); err != nil {
			why = err.Error()
		}
		defer pin.Close()
	}

	if want["resources"] {
		cg := p.ControlGroup
		if !running(p) {
			cg = "" // whatever qmd last knew is not the partition's cgroup any more
		}
		r := h.ReadResources(cg)
		out.Resources = &r
	}
	if why != "" {
		if want["namespaces"] {
			out.Namespaces = &inspect.Namespaces{PID: pid, Unavailable: why, Entries: []inspect.Namespace{}}
		}
		if want["sockets"] {
			out.Sockets = &inspect.Sockets{PID: pid, Unavailable: why, Entries: []inspect.Socket{}}
		}
		if want["devices"] {
			out.Devices = &inspect.Devices{PID: pid, Configured: []inspect.ConfiguredDevice{}, ConfiguredUnavailable: why,
				Nodes: []inspect.DeviceNode{}, NodesUnavailable: why}
		}
		return out
	}

	if want["namespaces"] || want["sockets"] {
		ns := h.ReadNamespaces(pid)
		if want["namespaces"] {
			out.Namespaces = &ns
		}
		if want["sockets"] {
			s := h.ReadSockets(pid, p.ControlGroup, ns.Sharing("net") == "shared")
			out.Sockets = &s
		}
	}
	if want["devices"] {
		specs, why := configuredDevices(ctx, inv, p.ContainerID)
		d := h.ReadDevices(pid, specs, why)
		out.Devices = &d
	}

	// Everything read through /proc/PID must have been the partition's.
	if pin == nil {
		return out
	}
	if err := pin.Check(); err != nil {
		gone := err.Error()
		if out.Namespaces != nil {
			*out.Namespaces = inspect.Namespaces{PID: pid, Unavailable: gone, Entries: []inspect.Namespace{}}
		}
		if out.Sockets != nil {
			*out.Sockets = inspect.Sockets{PID: pid, Unavailable: gone, Entries: []inspect.Socket{}}
		}
		if out.Devices != nil {
			*out.Devices = inspect.Devices{PID: pid, Configured: []inspect.ConfiguredDevice{}, ConfiguredUnavailable: gone,
				Nodes: []inspect.DeviceNode{}, NodesUnavailable: gone}
		}
	}
	return out
}

// configuredDevices asks Podman for the container's devices; why says
// why they are not known.
func configuredDevices(ctx context.Context, inv *invocation, container string) ([]inspect.DeviceSpec, string) {
	if podmanAPI == nil {
		return nil, "this qmd was built without the Podman API client"
	}
	socket, err := podmanSocket(inv)
	if err != nil {
		return nil, err.Error()
	}
	specs, err := podmanAPI.Devices(ctx, socket, container)
	if err != nil {
		return nil, err.Error()
	}
	return specs, ""
}

func writeShow(w io.Writer, p dbusapi.PartitionInfo, out showJSON) {
	line := writePartitionHeader(w, p)
	line("Active", fmt.Sprintf("%s (%s)", p.ActiveState, p.SubState))
	writePartitionProcess(line, p)
	if r := out.Resources; r != nil {
		writeResources(w, r)
	}
	if d := out.Devices; d != nil {
		writeDevices(w, d)
	}
	if ns := out.Namespaces; ns != nil {
		writeNamespaces(w, ns)
	}
	if s := out.Sockets; s != nil {
		writeSockets(w, s)
	}
}

func bytesOf(r inspect.Reading) string { return r.Format(formatBytes) }

func writeResources(w io.Writer, r *inspect.Resources) {
	fmt.Fprintf(w, "\nResources (cgroup %s):\n", orDash(r.Version))
	if r.Unavailable != "" {
		fmt.Fprintf(w, "  n/a (%s)\n", oneLine(r.Unavailable))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, oneLine(v)) }
	row("memory.current", bytesOf(r.Memory.Current))
	row("memory.high", bytesOf(r.Memory.High))
	row("memory.max", bytesOf(r.Memory.Max))
	row("memory.swap.max", bytesOf(r.Memory.SwapMax))
	row("cpu.weight", r.CPU.Weight.String())
	row("cpu.idle", r.CPU.Idle.String())
	cpuMax := r.CPU.QuotaUSec.String()
	if r.CPU.QuotaUSec.OK() && r.CPU.PeriodUSec.OK() {
		cpuMax += " " + r.CPU.PeriodUSec.String() + " (quota and period, usec)"
	}
	row("cpu.max", cpuMax)
	row("pids.current", r.Pids.Current.String())
	row("pids.max", r.Pids.Max.String())
	if r.Freezer.Unavailable != "" {
		row("freezer", "n/a ("+r.Freezer.Unavailable+")")
	} else {
		row("freezer", r.Freezer.State)
	}
	row("io.weight", r.IO.Weight.String())
	// perDevice writes one row a device, the key on the first only, or
	// why there is none.
	perDevice := func(key, unavailable, none string, devices []string) {
		switch {
		case unavailable != "":
			row(key, "n/a ("+unavailable+")")
		case len(devices) == 0:
			row(key, none)
		default:
			for i, d := range devices {
				if i > 0 {
					key = ""
				}
				row(key, d)
			}
		}
	}
	var stat []string
	for _, d := range r.IO.Stat.Devices {
		stat = append(stat, fmt.Sprintf("%s read %s (%d ios), write %s (%d ios)", d.Device,
			formatBytes(d.ReadBytes), d.ReadIOs, formatBytes(d.WriteBytes), d.WriteIOs))
	}
	perDevice("io.stat", r.IO.Stat.Unavailable, "no IO", stat)
	lim := func(v *uint64) string {
		if v == nil {
			return "max"
		}
		return strconv.FormatUint(*v, 10)
	}
	var limits []string
	for _, l := range r.IO.Max.Devices {
		limits = append(limits, fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", l.Device, lim(l.ReadBPS), lim(l.WriteBPS), lim(l.ReadIOPS), lim(l.WriteIOPS)))
	}
	perDevice("io.max", r.IO.Max.Unavailable, "no limits", limits)
	tw.Flush()
}

func writeDevices(w io.Writer, d *inspect.Devices) {
	fmt.Fprintf(w, "\nDevices:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch {
	case d.ConfiguredUnavailable != "":
		fmt.Fprintf(tw, "  configured: n/a (%s)\n", oneLine(d.ConfiguredUnavailable))
	case len(d.Configured) == 0:
		fmt.Fprintf(tw, "  configured: none\n")
	default:
		fmt.Fprintf(tw, "  DEVICE\tIN PARTITION\tSTATUS\tNODE\n")
		for _, c := range d.Configured {
			status, node := "present in QM", "-"
			if c.Node != nil {
				node = fmt.Sprintf("%s %d:%d %s", c.Node.Type, c.Node.Major, c.Node.Minor, c.Node.Mode)
			}
			if !c.Present {
				status = "missing in QM: " + c.Problem
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", oneLine(c.PathOnHost), oneLine(c.PathInPartition), oneLine(status), node)
		}
	}
	tw.Flush()
	if d.NodesUnavailable != "" {
		fmt.Fprintf(w, "  device nodes under /dev: n/a (%s)\n", oneLine(d.NodesUnavailable))
		return
	}
	more := ""
	if d.NodesTruncated {
		more = ", truncated"
	}
	fmt.Fprintf(w, "  device nodes under /dev (%d%s):\n", len(d.Nodes), more)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, n := range d.Nodes {
		fmt.Fprintf(tw, "    %s\t%s\t%d:%d\t%s\n", oneLine(n.Path), n.Type, n.Major, n.Minor, n.Mode)
	}
	tw.Flush()
}

func writeNamespaces(w io.Writer, ns *inspect.Namespaces) {
	fmt.Fprintf(w, "\nNamespaces (of PID %d, compared with PID %d):\n", ns.PID, ns.HostPID)
	if ns.Unavailable != "" {
		fmt.Fprintf(w, "  n/a (%s)\n", oneLine(ns.Unavailable))
		return
	}
	if ns.HostNote != "" {
		fmt.Fprintf(w, "  (%s)\n", oneLine(ns.HostNote))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  TYPE\tID\tHOST ID\tSHARING\n")
	id := func(v *uint64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatUint(*v, 10)
	}
	for _, n := range ns.Entries {
		sharing := n.Sharing
		if n.Unavailable != "" {
			sharing = "n/a (" + n.Unavailable + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Type, id(n.ID), id(n.HostID), oneLine(sharing))
	}
	tw.Flush()
}

func writeSockets(w io.Writer, s *inspect.Sockets) {
	fmt.Fprintf(w, "\nUnix sockets (listening in the partition):\n")
	if s.Unavailable != "" {
		fmt.Fprintf(w, "  n/a (%s)\n", oneLine(s.Unavailable))
		return
	}
	if s.HostNetwork {
		fmt.Fprintf(w, "  (the partition shares the host's network namespace: only sockets its processes hold)\n")
	}
	if len(s.Entries) == 0 {
		fmt.Fprintf(w, "  none\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  PATH\tTYPE\tSTATE\tPROCESSES\n")
		for _, e := range s.Entries {
			var procs []string
			for _, p := range e.Processes {
				procs = append(procs, fmt.Sprintf("%d (%s)", p.PID, oneLine(p.Command)))
			}
			path := e.Path
			if path == "" {
				path = fmt.Sprintf("(unnamed, inode %d)", e.Inode)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", oneLine(path), e.Type, e.State, orDash(strings.Join(procs, ", ")))
		}
		tw.Flush()
	}
	if s.OwnersUnavailable != "" {
		fmt.Fprintf(w, "  (processes: %s)\n", oneLine(s.OwnersUnavailable))
	}
	if s.MalformedLines > 0 {
		fmt.Fprintf(w, "  (%d malformed lines of %s skipped)\n", s.MalformedLines, s.Source)
	}
}

// ---- exec

type execJSON struct {
	ExitCode        int    `json:"exit_code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
}

// capped keeps the first max bytes written to it.
type capped struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

func runExec(ctx context.Context, inv *invocation) error {
	name, cmd := inv.args[0], inv.args[1:]
	tty, asJSON := inv.has("tty"), inv.has("json")
	if tty && asJSON {
		return usagef("--json captures the output; it cannot be combined with -t")
	}
	if tty && !isTerminal(os.Stdin) {
		fmt.Fprintln(inv.stderr, "qmd: warning: stdin is not a terminal; running without -t")
		tty = false
	}
	var p dbusapi.PartitionInfo
	err := withClient(ctx, inv, func(c *client) error {
		path, err := c.partitionPath(ctx, name)
		if err != nil {
			return err
		}
		p, err = c.partitionAt(ctx, path)
		return err
	})
	if err != nil {
		return err
	}
	if !running(p) {
		fmt.Fprintf(inv.stderr, "qmd: partition %s is not running (%s/%s)\n", oneLine(name), p.ActiveState, p.SubState)
		return exitCode(ExitNotActive)
	}
	if podmanAPI == nil {
		return errors.New("this qmd was built without the Podman API client")
	}
	socket, err := podmanSocket(inv)
	if err != nil {
		return err
	}
	req := inspect.ExecRequest{Cmd: cmd, TTY: tty, Stdin: execStdin, Stdout: inv.stdout, Stderr: inv.stderr}
	var outBuf, errBuf *capped
	if asJSON {
		outBuf, errBuf = &capped{max: maxCapture}, &capped{max: maxCapture}
		req.Stdout, req.Stderr = outBuf, errBuf
	}
	code, err := podmanAPI.Exec(ctx, socket, p.ContainerID, req)
	switch {
	case errors.Is(err, inspect.ErrNotRunning), errors.Is(err, inspect.ErrNoContainer):
		fmt.Fprintf(inv.stderr, "qmd: partition %s is not running: %v\n", oneLine(name), err)
		return exitCode(ExitNotActive)
	case errors.Is(err, inspect.ErrPodmanUnavailable):
		return fmt.Errorf("%w (is the Podman service running? --podman-socket names another socket)", err)
	case errors.Is(err, inspect.ErrCommand) && code > 0:
		fmt.Fprintf(inv.stderr, "qmd: %v\n", err)
	case err != nil:
		return err
	}
	if asJSON {
		if err := writeJSON(inv.stdout, execJSON{ExitCode: code, Stdout: outBuf.buf.String(), Stderr: errBuf.buf.String(),
			StdoutTruncated: outBuf.truncated, StderrTruncated: errBuf.truncated}); err != nil {
			return err
		}
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
