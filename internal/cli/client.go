//go:build remote

package cli

import (
	"fmt"
	"io"
)

func isClientCommand(string) bool { return false }

func clientUsage() string { return "" }

func runClient(args []string, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "qmd: %s: client commands are not built in\n", args[0])
	return 1
}
