package policy

import "time"

// onIOPressure answers confirmed ASIL IO pressure (a protected unit's
// io.pressure, from the host-level protector). The IO policy branch
// (pkg/policy/io.go: lowering the partition's IO limits in steps and
// restoring them with hysteresis) replaces this stub; until then IO
// pressure only resets the restore timer, as every signal does.
func (c *Controller) onIOPressure(at time.Time) {}
