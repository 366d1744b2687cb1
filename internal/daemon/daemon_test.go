//go:build remote

package daemon

import (
	"testing"

	"github.com/containers/qmd/pkg/supervisor"
)

func TestStatusLine(t *testing.T) {
	sts := []supervisor.Status{
		{Name: "qm", State: supervisor.Active, SubState: supervisor.SubThrottled, ContainerID: "0123456789abcdef0123", NRestarts: 2,
			Conditions: supervisor.Conditions{supervisor.Throttled: "pressure", supervisor.PodmanDegraded: "slow"}},
		{Name: "ivi", State: supervisor.Failed, Result: "start-limit-hit"},
		{Name: "x", State: supervisor.Activating, SubState: supervisor.SubRestarting},
	}
	if got, want := StatusLine(sts, true), "ivi: failed (start-limit-hit); qm: throttled [podman-degraded,throttled] (0123456789ab, 2 restarts); x: restarting"; got != want {
		t.Errorf("StatusLine = %q, want %q", got, want)
	}
	if got := StatusLine(nil, false); got != "podman unreachable" {
		t.Errorf("no partitions, podman down: %q", got)
	}
}

func TestInfoOfMapsStates(t *testing.T) {
	info := infoOf(supervisor.Status{Name: "qm", State: supervisor.Active, SubState: supervisor.SubFrozen, MainPID: 42,
		Conditions: supervisor.Conditions{supervisor.Frozen: "x", supervisor.Throttled: "y"}})
	if info.ActiveState != "active" || info.SubState != "frozen" || info.MainPID != 42 || info.Result != "success" ||
		len(info.Conditions) != 2 || info.Conditions[0] != "frozen" || info.Conditions[1] != "throttled" {
		t.Errorf("%+v", info)
	}
	if info.MemoryHigh != ^uint64(0) || info.MemoryMax != ^uint64(0) {
		t.Errorf("unknown memory limits must read as infinity: %+v", info)
	}
}
