//go:build remote

package daemon

import (
	"strconv"

	"github.com/containers/qmd/internal/incident"
)

// restoredRestarts is the partition's NRestarts as the previous qmd left
// it, from the restart incidents in the store: the highest "restarts"
// detail, counting the repeats folded into a record by coalescing (a
// coalesced record keeps its first occurrence's counter and "count"; its
// last repeat was counter+count-1). The counter only grows (a restored qmd
// continues it), so the highest value is the latest. 0 when the history
// has none (a first start, or the history was trimmed).
func restoredRestarts(store *incident.Store, partition string) uint32 {
	incs, err := store.List(partition, 0, 0)
	if err != nil {
		return 0
	}
	var best uint64
	for _, inc := range incs {
		if inc.Type != incident.Restart {
			continue
		}
		n, err := strconv.ParseUint(inc.Details["restarts"], 10, 32)
		if err != nil {
			continue // not a counter: ignore the record, not the history
		}
		if c, err := strconv.ParseUint(inc.Details[incident.DetailCount], 10, 32); err == nil && c > 1 {
			n += c - 1
		}
		best = max(best, n)
	}
	return uint32(min(best, 1<<31))
}
