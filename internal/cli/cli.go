//go:build remote

// Package cli is qmd's command line: the daemon, check-config, version,
// and the client commands that talk to the daemon over D-Bus.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/containers/qmd/internal/completion"
	"github.com/containers/qmd/internal/ctl"
	"github.com/containers/qmd/internal/daemon"
	"github.com/containers/qmd/internal/inspect/podmanapi"
	"github.com/containers/qmd/internal/quadlet"
	"github.com/containers/qmd/pkg/policy"
)

const usage = `Usage: qmd [--config FILE]... [--log-level LEVEL]     run the daemon (foreground)
       qmd check-config [--config FILE]... [--json]  validate and print the effective configuration
       qmd version
       qmd completion bash|zsh                       print the shell completion script
       qmd import-quadlet [--output FILE|-] [--force] [--check] [--partition NAME] [FILE.container] [DROPIN.conf...]  write the qmd drop-in equivalent to containers/qm's Quadlet files
%s
Configuration: /usr/share/qmd/qmd.toml, /etc/qmd/qmd.toml, /etc/qmd/qmd.toml.d/*.toml
(in that order); --config replaces that search. See the README.
`

// Main runs qmd with args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "version", "--version":
			fmt.Fprintln(stdout, "qmd", daemon.Version)
			return 0
		case "help", "-h", "--help":
			fmt.Fprintf(stdout, usage, clientUsage())
			return 0
		case "completion":
			return completion.Main(args[1:], fmt.Sprintf(usage, ""), stdout, stderr)
		case "import-quadlet":
			return quadlet.Main(args[1:], stdout, stderr)
		case "show", "exec": // client commands that also use the Podman API
			ctl.SetPodman(podmanapi.Client{})
			return runClient(args, stdout, stderr)
		}
		if isClientCommand(args[0]) {
			return runClient(args, stdout, stderr)
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "qmd: unknown command %q\n", args[0])
			fmt.Fprintf(stderr, usage, clientUsage())
			return 2
		}
	}
	return runDaemon(args, stderr)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runDaemon(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("qmd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files multiFlag
	fs.Var(&files, "config", "configuration file (repeatable; replaces the default search)")
	level := fs.String("log-level", "", "override log.level (debug, info, warn, error)")
	fs.Usage = func() { fmt.Fprintf(stderr, usage, clientUsage()) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qmd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := daemon.Run(ctx, daemon.Options{ConfigFiles: files, LogLevel: *level, Resources: policy.Factory})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "qmd: %v\n", err)
		return 1
	}
	return 0
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files multiFlag
	fs.Var(&files, "config", "configuration file (repeatable; replaces the default search)")
	asJSON := fs.Bool("json", false, "print the effective configuration as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := daemon.LoadConfig(files)
	if err != nil {
		fmt.Fprintf(stderr, "qmd: configuration is invalid:\n")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  %s\n", line)
		}
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	for _, f := range cfg.Findings {
		fmt.Fprintf(stderr, "warning: isolation: %s\n", f)
	}
	if len(cfg.Sources) == 0 {
		fmt.Fprintln(stderr, "no configuration files found; built-in defaults")
	} else {
		fmt.Fprintf(stderr, "configuration OK: %s\n", strings.Join(cfg.Sources, ", "))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(cfg); err != nil {
			fmt.Fprintf(stderr, "qmd: %v\n", err)
			return 1
		}
		return 0
	}
	if err := toml.NewEncoder(stdout).Encode(cfg); err != nil {
		fmt.Fprintf(stderr, "qmd: %v\n", err)
		return 1
	}
	return 0
}
