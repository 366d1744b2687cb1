// Command schedcheck asks for a scheduling policy for itself and reports
// whether the kernel (and the seccomp profile) allowed it. The integration
// tests copy it into a partition: "schedcheck fifo" must fail there.
package main

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schedcheck fifo|rr|other")
		os.Exit(2)
	}
	policy, prio := map[string]int{"fifo": 1, "rr": 2, "other": 0}[os.Args[1]], int32(0)
	if policy != 0 {
		prio = 10
	}
	_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, uintptr(policy), uintptr(unsafe.Pointer(&prio)))
	if errno != 0 {
		fmt.Printf("sched_setscheduler(%s): %v\n", os.Args[1], errno)
		os.Exit(1)
	}
	fmt.Printf("sched_setscheduler(%s): ok\n", os.Args[1])
}
