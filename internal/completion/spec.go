// Package completion generates qmd's bash and zsh completion scripts
// (`qmd completion bash|zsh`). It has no table of its own: the verbs,
// flags and positional arguments come from the CLI's own help, so a new
// command or flag is completed as soon as it is in the usage text:
//
//   - the daemon-level commands (check-config, version, completion, ...)
//     from the usage text of internal/cli, one synopsis line per command;
//   - the client commands from internal/ctl: ctl.Usage() for the verbs and
//     `qmd VERB --help` (the "usage:" line and the "Options:" section) for
//     their flags.
//
// Partition names are completed at run time from the running daemon: the
// scripts call `qmd list` (with --address when the command line has one)
// under `timeout ${QMD_COMPLETION_TIMEOUT:-2}` and take the first column.
package completion

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/containers/qmd/internal/ctl"
)

// Kinds of values a positional argument or a flag takes.
const (
	KindNone       = "none"         // free text (SIZE, VALUE, ID, ...)
	KindPartition  = "partition"    // a partition name, from `qmd list`
	KindCommand    = "command"      // a qmd verb (qmd help COMMAND)
	KindFile       = "file"         // a file name
	KindFileOrDash = "file-or-dash" // a file name or "-" (stdout/stdin)
	choicePrefix   = "choice:"      // choice:a,b,c
)

// Flag is one option of a command.
type Flag struct {
	Long   string // without dashes, e.g. "address"
	Short  string // one letter, or ""
	Arg    string // value placeholder (ADDR, FILE, N), "" for a boolean flag
	Help   string
	Repeat bool // "[--config FILE]...": may be given more than once
}

// Kind is how the flag's value is completed ("" for a boolean flag).
func (f Flag) Kind() string {
	if f.Arg == "" {
		return ""
	}
	return placeholderKind(f.Arg)
}

// Arg is one positional argument.
type Arg struct {
	Name   string // placeholder as in the usage text: PARTITION, SIZE, bash|zsh
	Repeat bool   // "..." after it: it may be given any number of times
}

// Kind is how the argument is completed.
func (a Arg) Kind() string { return placeholderKind(a.Name) }

// Command is one verb of qmd.
type Command struct {
	Name    string
	Summary string
	Flags   []Flag
	Args    []Arg
}

// Spec is what the scripts complete.
type Spec struct {
	// Global are the flags of qmd without a verb (the daemon).
	Global   []Flag
	Commands []Command
}

// Names lists the verbs in order.
func (s Spec) Names() []string {
	out := make([]string, len(s.Commands))
	for i, c := range s.Commands {
		out[i] = c.Name
	}
	return out
}

// Command returns the named verb.
func (s Spec) Command(name string) (Command, bool) {
	for _, c := range s.Commands {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// placeholderKind maps a value placeholder of the usage text to a kind.
// The few placeholders whose values are an enumeration not spelled out in
// the synopsis are listed here (LEVEL: the daemon's --log-level).
func placeholderKind(p string) string {
	p = strings.TrimSuffix(p, "...")
	switch {
	case strings.Contains(p, "PARTITION"):
		return KindPartition
	case p == "COMMAND":
		return KindCommand
	case p == "LEVEL":
		return choicePrefix + "debug,info,warn,error"
	case strings.Contains(p, "|"):
		alts := strings.Split(p, "|")
		file, dash := false, false
		var words []string
		for _, a := range alts {
			switch {
			case a == "-":
				dash = true
			case placeholderKind(a) == KindFile:
				file = true
			case lowerWord.MatchString(a):
				words = append(words, a)
			}
		}
		switch {
		case file && dash:
			return KindFileOrDash
		case file:
			return KindFile
		case len(words) > 0:
			return choicePrefix + strings.Join(words, ",")
		}
		return KindNone
	case strings.Contains(p, "FILE"), strings.Contains(p, "DIR"), fileSuffix.MatchString(p):
		return KindFile
	}
	return KindNone
}

var (
	lowerWord  = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	fileSuffix = regexp.MustCompile(`\.(conf|container|toml|json|d)$`)
	// An option line of `qmd VERB --help`: "  -n, --limit N   help".
	optionLine = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9_-]*)(?:[ =]([^\s]+))?(?:\s{2,}(.*))?$`)
)

// Build assembles the spec from the usage text of the daemon-level
// commands (internal/cli's usage with the client part left out) and the
// client commands of internal/ctl.
func Build(topUsage string) (Spec, error) {
	var s Spec
	for _, line := range strings.Split(topUsage, "\n") {
		syn, summary, ok := synopsisLine(line)
		if !ok {
			continue
		}
		names, c := parseSynopsis(syn)
		if len(names) == 0 { // "qmd [--config FILE]...": the daemon
			s.Global = mergeFlags(s.Global, c.Flags)
			continue
		}
		for _, n := range names {
			if _, dup := s.Command(n); dup {
				continue
			}
			cc := c
			cc.Name, cc.Summary = n, summary
			s.Commands = append(s.Commands, cc)
		}
	}
	if len(s.Global) == 0 {
		return s, fmt.Errorf("completion: no daemon synopsis (\"qmd [--config FILE]...\") in the usage text")
	}
	s.Global = mergeFlags(s.Global, []Flag{{Long: "help", Short: "h", Help: "show the usage"}, {Long: "version", Help: "print the version"}})
	if _, ok := s.Command("help"); !ok {
		s.Commands = append(s.Commands, Command{Name: "help", Summary: "show the usage, or a command's help",
			Args: []Arg{{Name: "COMMAND"}}})
	}

	summaries := map[string]string{}
	for _, line := range strings.Split(ctl.Usage(), "\n") {
		syn, summary, ok := synopsisLine(line)
		if !ok {
			continue
		}
		names, _ := parseSynopsis(syn)
		for _, n := range names {
			summaries[n] = summary
		}
	}
	for _, name := range ctl.Commands() {
		if _, dup := s.Command(name); dup {
			continue
		}
		c, err := clientCommand(name)
		if err != nil {
			return s, err
		}
		c.Summary = summaries[name]
		s.Commands = append(s.Commands, c)
	}
	return s, nil
}

// clientCommand reads `qmd NAME --help` of a client command.
func clientCommand(name string) (Command, error) {
	var out bytes.Buffer
	if code := ctl.Run(context.Background(), []string{name, "--help"}, &out, &out); code != ctl.ExitOK {
		return Command{}, fmt.Errorf("completion: qmd %s --help exited %d: %s", name, code, out.String())
	}
	c, err := parseHelp(out.String())
	if err != nil {
		return Command{}, fmt.Errorf("completion: qmd %s --help: %w", name, err)
	}
	c.Name = name
	return c, nil
}

// parseHelp reads a client command's help: the synopsis from its first
// line ("usage: qmd NAME ..."), the flags (with their short names and
// help) from the "Options:" section.
func parseHelp(help string) (Command, error) {
	lines := strings.Split(help, "\n")
	syn, ok := strings.CutPrefix(strings.TrimSpace(lines[0]), "usage: ")
	if !ok {
		return Command{}, fmt.Errorf("first line is not \"usage: qmd ...\": %q", lines[0])
	}
	_, c := parseSynopsis(strings.TrimPrefix(syn, "qmd "))
	var opts []Flag
	in := false
	for _, l := range lines[1:] {
		switch {
		case strings.TrimSpace(l) == "Options:":
			in = true
		case in && strings.TrimSpace(l) == "":
			in = false
		case in:
			m := optionLine.FindStringSubmatch(l)
			if m == nil {
				return Command{}, fmt.Errorf("option line %q not understood", l)
			}
			opts = append(opts, Flag{Short: m[1], Long: m[2], Arg: m[3], Help: m[4]})
		}
	}
	if len(opts) == 0 {
		return Command{}, fmt.Errorf("no \"Options:\" section")
	}
	c.Flags = mergeFlags(opts, c.Flags)
	return c, nil
}

// synopsisLine picks "qmd ..." out of a usage line and splits it from its
// summary (separated by two or more spaces).
func synopsisLine(line string) (syn, summary string, ok bool) {
	l := strings.TrimSpace(line)
	l = strings.TrimPrefix(l, "Usage:")
	l = strings.TrimSpace(l)
	if l != "qmd" && !strings.HasPrefix(l, "qmd ") {
		return "", "", false
	}
	l = strings.TrimSpace(strings.TrimPrefix(l, "qmd"))
	if i := strings.Index(l, "  "); i >= 0 {
		return strings.TrimSpace(l[:i]), strings.TrimSpace(l[i:]), true
	}
	return l, "", true
}

// parseSynopsis reads "VERB[|VERB...] [--flag ARG]... [--bool] POS [POS...]"
// (the leading "qmd" removed). names is empty when the synopsis starts with
// a flag (the daemon's own line).
func parseSynopsis(syn string) (names []string, c Command) {
	toks := tokens(syn)
	if len(toks) > 0 && toks[0] != "" && toks[0][0] != '[' && toks[0][0] != '-' {
		names = strings.Split(toks[0], "|")
		toks = toks[1:]
	}
	for _, t := range toks {
		repeat := strings.HasSuffix(t, "...")
		t = strings.TrimSuffix(t, "...")
		t = strings.TrimSuffix(strings.TrimPrefix(t, "["), "]")
		if strings.HasSuffix(t, "...") { // "[FILE...]"
			repeat = true
			t = strings.TrimSuffix(t, "...")
		}
		if strings.HasPrefix(t, "-") {
			name, arg, _ := strings.Cut(t, " ")
			if n, a, eq := strings.Cut(name, "="); eq {
				name, arg = n, a
			}
			f := Flag{Arg: strings.TrimSpace(arg), Repeat: repeat}
			for _, alt := range strings.Split(name, "|") {
				switch {
				case strings.HasPrefix(alt, "--"):
					f.Long = alt[2:]
				case len(alt) == 2:
					f.Short = alt[1:]
				}
			}
			if f.Long == "" && f.Short != "" {
				f.Long = f.Short
			}
			if f.Long != "" {
				c.Flags = append(c.Flags, f)
			}
			continue
		}
		if t != "" {
			c.Args = append(c.Args, Arg{Name: t, Repeat: repeat})
		}
	}
	return names, c
}

// tokens splits a synopsis at spaces outside brackets; "[--config FILE]..."
// is one token.
func tokens(s string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '[':
			depth++
		case r == ']' && depth > 0:
			depth--
		case r == ' ' && depth == 0:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteRune(r)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// mergeFlags appends the flags of extra that base does not have.
func mergeFlags(base, extra []Flag) []Flag {
	out := append([]Flag(nil), base...)
next:
	for _, e := range extra {
		for i, b := range out {
			if b.Long == e.Long {
				if out[i].Short == "" {
					out[i].Short = e.Short
				}
				out[i].Repeat = out[i].Repeat || e.Repeat
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// Main runs `qmd completion SHELL`: topUsage is the usage text of the
// daemon-level commands (see Build). It returns the exit code.
func Main(args []string, topUsage string, stdout, stderr io.Writer) int {
	const usage = "usage: qmd completion bash|zsh\n\n" +
		"Print the shell completion script. Install it with the package, or load it:\n" +
		"  bash: source <(qmd completion bash)    (or save as /usr/share/bash-completion/completions/qmd)\n" +
		"  zsh:  source <(qmd completion zsh)     (or save as _qmd in a directory of $fpath)\n" +
		"Partition names are completed from the running qmd (`qmd list`, QMD_COMPLETION_TIMEOUT seconds, default 2).\n"
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprint(stderr, "qmd completion: want exactly one shell, bash or zsh\n"+usage)
		return 2
	}
	spec, err := Build(topUsage)
	if err != nil {
		fmt.Fprintf(stderr, "qmd: %v\n", err)
		return 1
	}
	var script string
	if args[0] == "bash" {
		script = Bash(spec)
	} else {
		script = Zsh(spec)
	}
	if _, err := io.WriteString(stdout, script); err != nil {
		fmt.Fprintf(stderr, "qmd: %v\n", err)
		return 1
	}
	return 0
}
