//go:build remote

package daemon

import (
	"testing"

	"github.com/containers/qmd/pkg/supervisor"
)

func TestStatusLine(t *testing.T) {
	sts := []supervisor.Status{
		{Name: "qm", State: supervisor.Running, ContainerID: "0123456789abcdef0123", NRestarts: 2},
		{Name: "ivi", State: supervisor.Failed},
	}
	if got, want := StatusLine(sts, true), "ivi: failed; qm: running (0123456789ab, 2 restarts)"; got != want {
		t.Errorf("StatusLine = %q, want %q", got, want)
	}
	if got := StatusLine(nil, false); got != "podman unreachable" {
		t.Errorf("no partitions, podman down: %q", got)
	}
}

func TestInfoOfMapsStates(t *testing.T) {
	info := infoOf(supervisor.Status{Name: "qm", State: supervisor.Throttled, MainPID: 42})
	if info.ActiveState != "active" || info.SubState != "throttled" || info.MainPID != 42 || info.Result != "success" {
		t.Errorf("%+v", info)
	}
	if info.MemoryHigh != ^uint64(0) || info.MemoryMax != ^uint64(0) {
		t.Errorf("unknown memory limits must read as infinity: %+v", info)
	}
}
