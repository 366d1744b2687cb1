//go:build remote

// Command qmd supervises the QM partition of a mixed-criticality host.
// Without a subcommand it is the daemon (as qmd.service runs it); the other
// subcommands check the configuration or talk to the running daemon.
package main

import (
	"os"

	"github.com/containers/qmd/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
