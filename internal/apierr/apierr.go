// Package apierr holds the error values that cross qmd's API boundary: the
// supervisor returns them, the D-Bus layer maps them to D-Bus error names
// (org.containers.qmd1.Error.*, org.freedesktop.DBus.Error.InvalidArgs) and
// the CLI maps them back to exit codes.
package apierr

import (
	"errors"
	"fmt"
)

var (
	ErrNoSuchPartition   = errors.New("no such partition")
	ErrNotRunning        = errors.New("partition is not running")
	ErrStartLimitHit     = errors.New("start limit hit; reset the partition first")
	ErrPodmanUnavailable = errors.New("podman service unavailable")
	ErrInvalidArgs       = errors.New("invalid arguments")
	ErrAccessDenied      = errors.New("access denied")
)

// InvalidArgs returns an error that matches ErrInvalidArgs and says why.
func InvalidArgs(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgs, fmt.Sprintf(format, a...))
}
