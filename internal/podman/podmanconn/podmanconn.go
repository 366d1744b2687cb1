//go:build remote

// Package podmanconn holds what qmd's two users of the Podman bindings
// (internal/podman for the daemon, internal/inspect/podmanapi for `qmd
// show` and `qmd exec`) share about a bindings connection: the call
// context that carries it, how a unix:// URI names its socket, and the
// short form of a container or exec session id.
//
// Build with -tags remote,containers_image_openpgp (see HOST-FACTS.md).
package podmanconn

import (
	"context"
	"net/url"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings"
)

// Ctx combines a call's cancellation and deadline (Context) with the
// connection the bindings look up through Value (Conn). Conn must be a
// values-only context (context.WithoutCancel of what
// bindings.NewConnection returned): the context package looks up a
// parent's cancellation, and context.Cause, through Value as well.
type Ctx struct {
	context.Context
	Conn context.Context
}

// Value looks key up in the connection first, then in the call's context.
func (c Ctx) Value(key any) any {
	if v := c.Conn.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// UnixPath returns the socket path of a unix:// URI, read as the
// bindings read it (unix://path is taken as unix:///path).
func UnixPath(uri string) (string, bool) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "unix" {
		return "", false
	}
	if !strings.HasPrefix(uri, "unix:///") {
		return bindings.JoinURL(u.Host, u.Path), true
	}
	return u.Path, true
}

// Short returns the first 12 characters of an id, as Podman prints it.
func Short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
