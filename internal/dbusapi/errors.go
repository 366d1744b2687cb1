package dbusapi

import (
	"errors"

	"github.com/containers/qmd/internal/apierr"
	"github.com/godbus/dbus/v5"
)

// dbusError maps an error from the backend (or from validation) to the
// D-Bus error the caller sees. The message is the error's text.
func dbusError(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	var de *dbus.Error
	if errors.As(err, &de) {
		return de
	}
	name := ErrorFailed
	switch {
	case errors.Is(err, apierr.ErrNoSuchPartition):
		name = ErrorNoSuchPartition
	case errors.Is(err, apierr.ErrNotRunning):
		name = ErrorNotRunning
	case errors.Is(err, apierr.ErrStartLimitHit):
		name = ErrorStartLimitHit
	case errors.Is(err, apierr.ErrPodmanUnavailable):
		name = ErrorPodmanUnavailable
	case errors.Is(err, apierr.ErrInvalidArgs):
		name = ErrorInvalidArgs
	case errors.Is(err, apierr.ErrAccessDenied):
		name = ErrorAccessDenied
	}
	return dbus.NewError(name, []any{err.Error()})
}

func newError(name, msg string) *dbus.Error {
	return dbus.NewError(name, []any{msg})
}
