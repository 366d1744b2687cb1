//go:build remote

package daemon

import (
	"testing"
	"time"

	"github.com/containers/qmd/internal/incident"
)

func TestRestoredRestarts(t *testing.T) {
	st := incident.NewMemory(100)
	rec := incident.NewRecorderWithOptions(st, incident.RecorderOptions{CoalesceWindow: time.Hour})
	defer rec.Close()
	if got := restoredRestarts(st, "qm"); got != 0 {
		t.Fatalf("empty history: %d", got)
	}
	restart := func(part, summary string, n int) {
		rec.Record(incident.Incident{Partition: part, Type: incident.Restart, Summary: summary,
			Details: map[string]string{"restarts": itoa(n)}})
	}
	restart("qm", "partition init exited (code 137); restarting in 0s", 1)
	restart("qm", "partition init exited (code 1); restarting in 100ms", 2)
	restart("other", "partition init exited (code 1); restarting in 100ms", 9)
	if got := restoredRestarts(st, "qm"); got != 2 {
		t.Errorf("after 2 restarts: %d", got)
	}
	// Repeats of one summary coalesce into one record: its counter is
	// the first occurrence's, plus the repeats. (The supervisor puts the
	// counter in the summary, so its records never coalesce; the sum is
	// for records written otherwise.)
	restart("qm", "same", 3)
	restart("qm", "same", 4)
	restart("qm", "same", 5)
	if got := restoredRestarts(st, "qm"); got != 5 {
		t.Errorf("after coalesced repeats: %d, want 5", got)
	}
	rec.Record(incident.Incident{Partition: "qm", Type: incident.Restart, Summary: "x", Details: map[string]string{"restarts": "junk"}})
	if got := restoredRestarts(st, "qm"); got != 5 {
		t.Errorf("an unparsable detail changed the result: %d, want 5", got)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }
