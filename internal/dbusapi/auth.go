package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"time"

	"github.com/containers/qmd/internal/apierr"
	"github.com/godbus/dbus/v5"
)

// DefaultAdminGroup is the group whose members may call mutating methods
// (shipped by systemd/qmd-sysusers.conf and named in the bus policy).
const DefaultAdminGroup = "qmd-admin"

const callerLookupTimeout = 5 * time.Second

// busCallerUID asks the bus daemon for the unix uid of a connection.
func busCallerUID(conn *dbus.Conn) func(sender string) (uint32, error) {
	return func(sender string) (uint32, error) {
		ctx, cancel := context.WithTimeout(context.Background(), callerLookupTimeout)
		defer cancel()
		var uid uint32
		err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, sender).Store(&uid)
		if err != nil {
			return 0, fmt.Errorf("get unix user of %s: %w", sender, err)
		}
		return uid, nil
	}
}

// GroupAdmin returns an admin check: uid 0, or a uid whose user is a member
// (primary or supplementary, per the user and group databases) of group.
func GroupAdmin(group string) func(uid uint32) (bool, error) {
	return func(uid uint32) (bool, error) {
		if uid == 0 {
			return true, nil
		}
		g, err := user.LookupGroup(group)
		if err != nil {
			var unknown user.UnknownGroupError
			if errors.As(err, &unknown) {
				return false, nil
			}
			return false, fmt.Errorf("look up group %s: %w", group, err)
		}
		u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
		if err != nil {
			var unknown user.UnknownUserIdError
			if errors.As(err, &unknown) {
				return false, nil
			}
			return false, fmt.Errorf("look up uid %d: %w", uid, err)
		}
		gids, err := u.GroupIds()
		if err != nil {
			return false, fmt.Errorf("groups of %s: %w", u.Username, err)
		}
		return slices.Contains(gids, g.Gid), nil
	}
}

// authorize checks that sender may call a mutating method. It returns nil,
// or an error matching apierr.ErrAccessDenied with a message for the caller.
func (s *Server) authorize(sender dbus.Sender, method string) (uint32, error) {
	if sender == "" {
		return 0, fmt.Errorf("%w: %s: caller unknown", apierr.ErrAccessDenied, method)
	}
	uid, err := s.callerUID(string(sender))
	if err != nil {
		return 0, fmt.Errorf("%w: %s: cannot identify caller: %v", apierr.ErrAccessDenied, method, err)
	}
	ok, err := s.isAdmin(uid)
	if err != nil {
		return uid, fmt.Errorf("%w: %s: cannot check groups of uid %d: %v", apierr.ErrAccessDenied, method, uid, err)
	}
	if !ok {
		return uid, fmt.Errorf("%w: %s needs root or membership in group %s (caller uid %d)",
			apierr.ErrAccessDenied, method, s.opts.AdminGroup, uid)
	}
	return uid, nil
}
