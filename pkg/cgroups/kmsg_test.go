package cgroups

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kmsg reads kernel log records to learn when the kernel killed a process
// ("Killed process <pid>"), so OOM event latency is measured from the
// kill itself. Kernel timestamps (local_clock) and CLOCK_MONOTONIC are
// aligned with a marker record written just before the measurement.
type kmsg struct {
	f      *os.File
	offset time.Duration // kernel timestamp - CLOCK_MONOTONIC
}

func openKmsg(t testing.TB) *kmsg {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Logf("no /dev/kmsg (%v): latency from the kill itself not measured", err)
		return nil
	}
	if _, err := f.Seek(0, 2); err != nil { // SEEK_END: only new records
		f.Close()
		t.Logf("seek /dev/kmsg: %v", err)
		return nil
	}
	t.Cleanup(func() { f.Close() })
	return &kmsg{f: f}
}

func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// record reads one record: its timestamp and message.
func (k *kmsg) record() (time.Duration, string, bool) {
	buf := make([]byte, 8192)
	for {
		n, err := k.f.Read(buf)
		if errors.Is(err, unix.EPIPE) { // overwritten records: go on
			continue
		}
		if err != nil || n == 0 {
			return 0, "", false
		}
		hdr, msg, ok := strings.Cut(string(buf[:n]), ";")
		if !ok {
			continue
		}
		f := strings.Split(hdr, ",")
		if len(f) < 3 {
			continue
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			continue
		}
		return time.Duration(us) * time.Microsecond, strings.TrimSpace(msg), true
	}
}

// calibrate writes a marker and reads it back to align the clocks.
func (k *kmsg) calibrate() {
	if k == nil {
		return
	}
	marker := "qmd-test-marker-" + strconv.FormatInt(int64(monotonic()), 10)
	before := monotonic()
	k.f.Write([]byte(marker))
	after := monotonic()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ts, msg, ok := k.record()
		if !ok {
			time.Sleep(time.Millisecond)
			continue
		}
		if strings.Contains(msg, marker) {
			k.offset = ts - (before+after)/2
			return
		}
	}
}

// killedAt waits (up to a second) for "Killed process <pid>" and returns
// its time on CLOCK_MONOTONIC.
func (k *kmsg) killedAt(pid int) (time.Duration, bool) {
	if k == nil {
		return 0, false
	}
	want := "Killed process " + strconv.Itoa(pid) + " "
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ts, msg, ok := k.record()
		if !ok {
			time.Sleep(time.Millisecond)
			continue
		}
		if strings.Contains(msg, want) {
			return ts - k.offset, true
		}
	}
	return 0, false
}
