package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/containers/qmd/internal/dbusapi"
)

// Exit codes of Run. Scripts may rely on them.
const (
	ExitOK              = 0 // success
	ExitFailure         = 1 // any other failure
	ExitUsage           = 2 // bad command line, or the server rejected the arguments (InvalidArgs)
	ExitNotActive       = 3 // status PARTITION: the partition is not active; or the method needs a running partition (NotRunning)
	ExitNoSuchPartition = 4 // no such partition (org.containers.qmd1.Error.NoSuchPartition)
	ExitAccessDenied    = 5 // access denied (org.freedesktop.DBus.Error.AccessDenied)
	ExitNoQmd           = 6 // qmd is not running, or the system bus is unreachable
	ExitStartLimitHit   = 7 // start limit hit (org.containers.qmd1.Error.StartLimitHit)
)

// flagSpec describes one option of a command.
type flagSpec struct {
	name  string // long name, without dashes
	short string // one-letter name, or ""
	arg   string // value placeholder; "" for a boolean flag
	help  string
}

var (
	flagHelp    = flagSpec{name: "help", short: "h", help: "show this help"}
	flagAddress = flagSpec{name: "address", arg: "ADDR", help: "D-Bus address of the bus (default: DBUS_SYSTEM_BUS_ADDRESS, else the system bus)"}
	flagJSON    = flagSpec{name: "json", help: "print JSON (lower_snake_case keys) instead of text"}
	flagRuntime = flagSpec{name: "runtime", help: "change it only until qmd restarts (not persisted)"}
)

// command is one subcommand.
type command struct {
	name     string
	args     string // synopsis of the positional arguments
	summary  string
	details  string
	minArgs  int
	maxArgs  int
	flags    []flagSpec
	run      func(ctx context.Context, inv *invocation) error
	partArgs int // how many leading positionals are partition names to validate
	// rest: once more than this many positionals were seen, every further
	// argument is a positional, dashes and all (exec's CMD [ARG...]).
	rest int
}

// invocation is a parsed command line.
type invocation struct {
	cmd    *command
	args   []string
	flags  map[string]string
	stdout io.Writer
	stderr io.Writer
}

func (inv *invocation) has(name string) bool { _, ok := inv.flags[name]; return ok }

func (inv *invocation) address() string { return inv.flags["address"] }

var commands []*command

func init() {
	readFlags := []flagSpec{flagJSON, flagAddress, flagHelp}
	commands = []*command{
		{name: "status", args: "[PARTITION]", maxArgs: 1, partArgs: 1, flags: readFlags, run: runStatus,
			summary: "show qmd's state, or one partition's state and recent incidents",
			details: "Without PARTITION: the Manager (Version, Status, LastIncidentId) and one line per partition.\n" +
				"With PARTITION: its state, container, main PID, cgroup, memory, OOM score, restarts,\n" +
				"OOM kills and its last incidents. Exits 3 when the partition is not active."},
		{name: "list", summary: "list the partitions", flags: readFlags, run: runList},
		{name: "incidents", args: "[PARTITION]", maxArgs: 1, partArgs: 1, run: runIncidents,
			flags: []flagSpec{
				{name: "after", arg: "ID", help: "only incidents with an ID greater than ID (oldest first)"},
				{name: "limit", short: "n", arg: "N", help: "at most N incidents: the first N after --after ID, else the last N"},
				{name: "follow", short: "f", help: "keep running and print new incidents as they are recorded (until interrupted)"},
				flagJSON, flagAddress, flagHelp,
			},
			summary: "list recorded incidents",
			details: "Without --after and --limit, every stored incident is listed (with --follow: the last 10).\n" +
				"With --json: a JSON array; with --json --follow: one JSON object per line."},
	}
	for _, m := range []struct{ name, method, summary string }{
		{"start", "Start", "start a partition"},
		{"stop", "Stop", "stop a partition"},
		{"restart", "Restart", "restart a partition"},
		{"freeze", "Freeze", "freeze a partition (cgroup freezer)"},
		{"thaw", "Thaw", "thaw a frozen partition"},
		{"reset-failed", "ResetFailed", "reset a failed partition (and its start limit)"},
	} {
		commands = append(commands, &command{name: m.name, args: "PARTITION", minArgs: 1, maxArgs: 1, partArgs: 1,
			summary: m.summary, flags: []flagSpec{flagAddress, flagHelp}, run: methodRunner(m.method)})
	}
	for _, m := range []struct{ name, method, what string }{
		{"set-memory-high", "SetMemoryHigh", "memory.high (throttling limit)"},
		{"set-memory-max", "SetMemoryMax", "memory.max (hard limit)"},
	} {
		commands = append(commands, &command{name: m.name, args: "PARTITION SIZE", minArgs: 2, maxArgs: 2, partArgs: 1,
			summary: "set a partition's " + m.what,
			details: "SIZE is bytes with an optional base-1024 suffix (K, M, G, T, P, E), e.g. 512M, 1.5G,\n" +
				"or \"infinity\" for no limit.",
			flags: []flagSpec{flagRuntime, flagAddress, flagHelp}, run: sizeRunner(m.method)})
	}
	commands = append(commands, &command{name: "set-oom-score-adjust", args: "PARTITION VALUE", minArgs: 2, maxArgs: 2, partArgs: 1,
		summary: "set the oom_score_adj of a partition's processes",
		details: "VALUE is an integer in 0..1000 (qmd rejects negative values: the QM partition must stay\n" +
			"a preferred OOM victim).",
		flags: []flagSpec{flagRuntime, flagAddress, flagHelp}, run: runSetOOMScoreAdjust})
	commands = append(commands, inspectCommands()...) // show, exec (inspect.go)
}

// Commands lists the subcommand names Run handles.
func Commands() []string {
	out := make([]string, len(commands))
	for i, c := range commands {
		out[i] = c.name
	}
	return out
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Usage is the help text of the client commands, with the exit codes.
func Usage() string {
	var b strings.Builder
	b.WriteString("Client commands (talk to qmd over D-Bus on the system bus):\n")
	for _, c := range commands {
		syn := c.name
		if c.args != "" {
			syn += " " + c.args
		}
		fmt.Fprintf(&b, "  qmd %-38s %s\n", syn, c.summary)
	}
	b.WriteString("\nRead commands take --json. Every command takes --address ADDR and -h/--help.\n\n")
	b.WriteString(exitCodeHelp)
	return b.String()
}

const exitCodeHelp = `Exit codes:
  0  success
  1  failure
  2  usage error, or invalid arguments (rejected by qmd)
  3  status PARTITION: the partition is not active; or it is not running
     for a method that needs it running
  4  no such partition
  5  access denied: run as root or as a member of group qmd-admin
  6  qmd is not running, or the system bus is unreachable
  7  start limit hit: run 'qmd reset-failed PARTITION'
`

func (c *command) synopsis() string {
	s := "qmd " + c.name
	for _, f := range c.flags {
		if f.name == "help" {
			continue
		}
		if f.arg != "" {
			s += fmt.Sprintf(" [--%s %s]", f.name, f.arg)
		} else {
			s += fmt.Sprintf(" [--%s]", f.name)
		}
	}
	if c.args != "" {
		s += " " + c.args
	}
	return s
}

func (c *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s.\n", c.synopsis(), capitalize(c.summary))
	if c.details != "" {
		fmt.Fprintf(&b, "\n%s\n", c.details)
	}
	b.WriteString("\nOptions:\n")
	for _, f := range c.flags {
		name := "--" + f.name
		if f.short != "" {
			name = "-" + f.short + ", " + name
		}
		if f.arg != "" {
			name += " " + f.arg
		}
		fmt.Fprintf(&b, "  %-22s %s\n", name, f.help)
	}
	b.WriteString("\n" + exitCodeHelp)
	return b.String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// parse parses args (flags anywhere, "--" ends them) for c.
func parse(c *command, args []string) (*invocation, error) {
	inv := &invocation{cmd: c, flags: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			inv.args = append(inv.args, args[i+1:]...)
			break
		}
		if c.rest > 0 && len(inv.args) > c.rest {
			inv.args = append(inv.args, args[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' || isNumber(a) {
			inv.args = append(inv.args, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var spec *flagSpec
		for j := range c.flags {
			f := &c.flags[j]
			if name == f.name || (f.short != "" && name == f.short && !strings.HasPrefix(a, "--")) {
				spec = f
				break
			}
		}
		if spec == nil {
			return nil, usagef("unknown option %s", a)
		}
		if spec.arg == "" {
			if hasValue {
				return nil, usagef("option --%s takes no value", spec.name)
			}
			inv.flags[spec.name] = ""
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, usagef("option --%s needs a value (%s)", spec.name, spec.arg)
			}
			i++
			value = args[i]
		}
		inv.flags[spec.name] = value
	}
	if inv.has("help") {
		return inv, nil
	}
	switch {
	case len(inv.args) < c.minArgs:
		return nil, usagef("missing argument (want %s)", c.args)
	case len(inv.args) > c.maxArgs:
		return nil, usagef("too many arguments: %s", strings.Join(inv.args[c.maxArgs:], " "))
	}
	for i := 0; i < c.partArgs && i < len(inv.args); i++ {
		if err := dbusapi.ValidatePartitionName(inv.args[i]); err != nil {
			return nil, usagef("%v", err)
		}
	}
	return inv, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// Run executes one client command. args excludes the program name and the
// subcommand is args[0]. It returns the process exit code (see the Exit*
// constants); output goes to stdout, diagnostics to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "qmd: missing command\n\n"+Usage())
		return ExitUsage
	}
	switch args[0] {
	case "help", "-h", "--help":
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				fmt.Fprint(stdout, c.help())
				return ExitOK
			}
		}
		fmt.Fprint(stdout, Usage())
		return ExitOK
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "qmd: unknown command %q (commands: %s)\n", args[0], strings.Join(Commands(), ", "))
		return ExitUsage
	}
	inv, err := parse(c, args[1:])
	if err != nil {
		fmt.Fprintf(stderr, "qmd %s: %v\nusage: %s\nRun 'qmd %s --help' for more.\n", c.name, err, c.synopsis(), c.name)
		return ExitUsage
	}
	if inv.has("help") {
		fmt.Fprint(stdout, c.help())
		return ExitOK
	}
	inv.stdout, inv.stderr = stdout, stderr
	return report(stderr, c, inv, c.run(ctx, inv))
}

// exitCode is returned by a command that already printed what it had to
// say and exits with a non-zero code (status of an inactive partition).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// report prints err (if any) and maps it to an exit code.
func report(stderr io.Writer, c *command, inv *invocation, err error) int {
	if err == nil {
		return ExitOK
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "qmd %s: %v\nusage: %s\n", c.name, ue.msg, c.synopsis())
		return ExitUsage
	}
	var be *busError
	if errors.As(err, &be) {
		fmt.Fprintf(stderr, "qmd: %v\n", be)
		return ExitNoQmd
	}
	part := ""
	if c.partArgs > 0 && len(inv.args) > 0 {
		part = inv.args[0]
	}
	name := errName(err)
	msg := err.Error()
	switch name {
	case dbusapi.ErrorNoSuchPartition, errUnknownObject, errNoSuchObject:
		if part != "" {
			fmt.Fprintf(stderr, "qmd: no such partition: %s\n", part)
		} else {
			fmt.Fprintf(stderr, "qmd: %s\n", msg)
		}
		return ExitNoSuchPartition
	case dbusapi.ErrorAccessDenied:
		fmt.Fprintf(stderr, "qmd: access denied: run as root or as a member of group %s\nqmd: (%s)\n", dbusapi.DefaultAdminGroup, msg)
		return ExitAccessDenied
	case errServiceUnknown, errNameHasNoOwner:
		fmt.Fprintf(stderr, "qmd: qmd is not running (no owner of %s on the system bus)\n", dbusapi.BusName)
		return ExitNoQmd
	case dbusapi.ErrorStartLimitHit:
		fmt.Fprintf(stderr, "qmd: %s\nqmd: hint: the start limit was hit; run 'qmd reset-failed %s' to clear it, then start it again\n", msg, orPartition(part))
		return ExitStartLimitHit
	case dbusapi.ErrorInvalidArgs:
		fmt.Fprintf(stderr, "qmd %s: %s\n", c.name, msg)
		return ExitUsage
	case dbusapi.ErrorNotRunning:
		fmt.Fprintf(stderr, "qmd: %s\n", msg)
		return ExitNotActive
	case errNoReply, errTimeout:
		fmt.Fprintf(stderr, "qmd: qmd did not reply: %s\n", msg)
		return ExitFailure
	}
	if name != "" {
		fmt.Fprintf(stderr, "qmd %s: %s (%s)\n", c.name, msg, name)
	} else {
		fmt.Fprintf(stderr, "qmd %s: %s\n", c.name, msg)
	}
	return ExitFailure
}

func orPartition(p string) string {
	if p == "" {
		return "PARTITION"
	}
	return p
}

// ---- mutating commands

func withClient(ctx context.Context, inv *invocation, f func(c *client) error) error {
	c, err := dial(ctx, inv.address())
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func methodRunner(method string) func(context.Context, *invocation) error {
	return func(ctx context.Context, inv *invocation) error {
		return withClient(ctx, inv, func(c *client) error {
			return c.partitionCall(ctx, inv.args[0], method)
		})
	}
}

func sizeRunner(method string) func(context.Context, *invocation) error {
	return func(ctx context.Context, inv *invocation) error {
		size, err := parseSize(inv.args[1])
		if err != nil {
			return usagef("%v", err)
		}
		return withClient(ctx, inv, func(c *client) error {
			return c.partitionCall(ctx, inv.args[0], method, size, inv.has("runtime"))
		})
	}
}

func runSetOOMScoreAdjust(ctx context.Context, inv *invocation) error {
	v, err := strconv.ParseInt(inv.args[1], 10, 32)
	if err != nil || v < -1000 || v > 1000 {
		return usagef("VALUE %q: want an integer in -1000..1000", inv.args[1])
	}
	return withClient(ctx, inv, func(c *client) error {
		return c.partitionCall(ctx, inv.args[0], "SetOOMScoreAdjust", int32(v), inv.has("runtime"))
	})
}
