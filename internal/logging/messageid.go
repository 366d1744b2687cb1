package logging

import "github.com/containers/qmd/internal/incident"

// messageIDs holds the journal MESSAGE_ID of every incident type: 128-bit
// random IDs, generated once and fixed forever (they key the entries in
// systemd/qmd.catalog and operators' `journalctl MESSAGE_ID=...` filters).
// Never change an ID; a new incident type gets a new random ID
// (`systemd-id128 new`) and a new catalog entry.
var messageIDs = map[incident.Type]string{
	incident.Start:          "27e4ee3a71a7ee357899a61efd5244c1",
	incident.Adopt:          "ac591026db050f80908afced66e686f0",
	incident.Restart:        "7938dd6f8bcf40d3522f34e042d3aff3",
	incident.StartLimit:     "c1099e55261fbfe30d4fe9322938b496",
	incident.Stop:           "df9f15ba1dbe207991f8432e9ff6d27c",
	incident.ConfigDrift:    "9d32e365cb8763a557fc87f0523d6252",
	incident.OOMKill:        "aa9012dafc77321db7cf67d3e070a9cb",
	incident.OOMScoreRepair: "f3f2c4edbee6c3201b600f767c25be19",
	incident.Throttle:       "0bf1d1e654f33af9b4983fba59de1638",
	incident.Unthrottle:     "3d130ba9152277cf3ea389414888a4b2",
	incident.Stall:          "c7cbc9adfddfd2caa1acd53ba8d7de1f",
	incident.CPUQuota:       "dd2d84112fc51418ba967416f14f20b5",
	incident.ForkBomb:       "3c9446ffd84ed75a0803b12a63768549",
	incident.Freeze:         "2531bf57303f397650a2e9f25dd394b6",
	incident.Thaw:           "760fadfd76c3e395502b2de09c4ede6a",
	incident.PodmanLost:     "eddd72b0abe1253bd0a179f59287b400",
	incident.PolicyLimit:    "cf48d842e47b142bee9f036a87fecf6d",
	incident.PodmanSlow:     "bc58ae88a5034f7eb224ef1cdf275b1f",
	incident.StartFailed:    "dd77e644d9db4f9e82a3da3cbab271b9",
	incident.PolicyReload:   "850e317eb4784c4da3f944ee37a4638c",
	incident.Upgrade:        "c5648e9bbf514cffb725af2a5a0d6625",
	incident.IOThrottle:     "248b7715fbed470da9ab198fe04fa03d",
	incident.DiskBudget:     "3ce0739d1da44f5f80810244a2de5018",

	// The last rung of the reaction ladder (#9).
	incident.SystemdUnresponsive: "d60fbc5ae8ab407bb6c3c6f2ddbace85",
	incident.HostMemoryLow:       "6843828c3206461383979261d5eb24a2",
}

// types lists the incident types in declaration order.
var types = []incident.Type{
	incident.Start,
	incident.Adopt,
	incident.Restart,
	incident.StartLimit,
	incident.Stop,
	incident.ConfigDrift,
	incident.OOMKill,
	incident.OOMScoreRepair,
	incident.Throttle,
	incident.Unthrottle,
	incident.Stall,
	incident.CPUQuota,
	incident.ForkBomb,
	incident.Freeze,
	incident.Thaw,
	incident.PodmanLost,
	incident.PolicyLimit,
	incident.PodmanSlow,
	incident.StartFailed,
	incident.PolicyReload,
	incident.Upgrade,
	incident.IOThrottle,
	incident.DiskBudget,
	incident.SystemdUnresponsive,
	incident.HostMemoryLow,
}

// MessageID returns the fixed journal MESSAGE_ID (32 lower-case hex
// digits) of incident type t.
func MessageID(t incident.Type) (string, bool) {
	id, ok := messageIDs[t]
	return id, ok
}

// Types returns every incident type that has a MESSAGE_ID, in the order
// internal/incident declares them. The caller owns the slice.
func Types() []incident.Type {
	return append([]incident.Type(nil), types...)
}
