// Command ffiprobe is the freedom-from-interference benchmark's tool (issue
// #9): ASIL stand-in probes that run as systemd units on the e2e VM host,
// hostile workloads that run inside the QM partition, and the host-side
// report. One static binary so that the VM, the partition and the build host
// all run the same thing.
//
// Probes (host, each in its own unit under asil.slice):
//
//	ffiprobe tick  -out FILE [-period 1ms]           wake-up latency of a periodic task
//	ffiprobe touch -out FILE [-pct 5] [-pause 100ms] time per pass over a working set
//	ffiprobe fsync -out FILE -path F [-period 10ms]  latency of write+fsync of a small file
//	ffiprobe read  -out FILE -path F [-period 100ms] [-size 16384]
//	                                                 latency of an O_DIRECT read at a random offset
//
// A probe records samples in a window. SIGUSR1 writes the window's summary
// (count, p50/p99/max in microseconds, errors, a sequence number) to FILE
// atomically (temp file + rename) and starts a new window, so the harness
// reads one consistent JSON object per workload without parsing a stream.
//
// Workloads (inside the partition, killed by the harness through cgroup.kill):
//
//	ffiprobe memhog [-pct 90]                        take pct % of RAM (mmap, every page written) and hold it
//	ffiprobe cpuhog [-workers N]                     spin on every CPU
//	ffiprobe iohog  -dir D [-size 256M] [-workers 2] random 4 KiB writes + fdatasync
//	ffiprobe thrash -dir D [-pct 100]                write then re-read a file of pct % of RAM
//	ffiprobe fill   -dir D                           write 1 MiB blocks until ENOSPC, then hold
//
// Report (build host):
//
//	ffiprobe report FILE.jsonl                       the plain-vs-qmd table
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "tick":
		err = runTick(args)
	case "touch":
		err = runTouch(args)
	case "fsync":
		err = runFsync(args)
	case "read":
		err = runRead(args)
	case "memhog":
		err = runMemHog(args)
	case "cpuhog":
		err = runCPUHog(args)
	case "iohog":
		err = runIOHog(args)
	case "thrash":
		err = runThrash(args)
	case "fill":
		err = runFill(args)
	case "report":
		err = runReport(args, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ffiprobe %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ffiprobe tick|touch|fsync|read|memhog|cpuhog|iohog|thrash|fill|report [flags] (see the package comment)")
	os.Exit(2)
}
