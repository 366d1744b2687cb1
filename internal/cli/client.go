//go:build remote

package cli

import (
	"context"
	"io"
	"os/signal"
	"slices"
	"syscall"

	"github.com/containers/qmd/internal/ctl"
)

func isClientCommand(name string) bool { return slices.Contains(ctl.Commands(), name) }

func clientUsage() string { return "\n" + ctl.Usage() }

// runClient runs a D-Bus client command; Ctrl-C ends --follow cleanly.
func runClient(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return ctl.Run(ctx, args, stdout, stderr)
}
