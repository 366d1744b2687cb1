package inspect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// tree writes files (path -> content) under a temporary root; a content
// starting with "->" makes a symlink to the rest.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func val(t *testing.T, what string, r Reading, want uint64) {
	t.Helper()
	if r.Unavailable != "" || r.Unlimited || r.Value == nil || *r.Value != want {
		t.Errorf("%s = %+v (%s), want %d", what, r, r.String(), want)
	}
}

func unlimited(t *testing.T, what string, r Reading) {
	t.Helper()
	if !r.Unlimited || r.Value != nil || r.Unavailable != "" {
		t.Errorf("%s = %+v, want unlimited", what, r)
	}
}

func na(t *testing.T, what string, r Reading, reasonPart string) {
	t.Helper()
	if r.Unavailable == "" || r.Value != nil || !strings.Contains(r.Unavailable, reasonPart) {
		t.Errorf("%s = %+v, want unavailable with %q", what, r, reasonPart)
	}
	if !strings.HasPrefix(r.String(), "n/a (") {
		t.Errorf("%s prints as %q", what, r.String())
	}
}

const cgPath = "/machine.slice/libpod-abc.scope"

func TestResourcesV2(t *testing.T) {
	d := "cg" + cgPath + "/"
	root := tree(t, map[string]string{
		"cg/cgroup.controllers": "cpu io memory pids\n",
		d + "memory.current":    "104857600\n",
		d + "memory.high":       "max\n",
		d + "memory.max":        "2147483648\n",
		d + "memory.swap.max":   "0\n",
		d + "cpu.weight":        "100\n",
		d + "cpu.idle":          "1\n",
		d + "cpu.max":           "50000 100000\n",
		d + "pids.current":      "7\n",
		d + "pids.max":          "max\n",
		d + "cgroup.freeze":     "1\n",
		d + "io.weight":         "default 200\n8:0 300\n",
		d + "io.stat":           "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=2 rios=3 wios=4\n",
		d + "io.max":            "8:0 rbps=1048576 wbps=max riops=max wiops=100\n",
	})
	r := Host{CgroupRoot: filepath.Join(root, "cg")}.ReadResources(cgPath)
	if r.Unavailable != "" || r.Version != "v2" {
		t.Fatalf("resources: %+v", r)
	}
	val(t, "memory.current", r.Memory.Current, 100<<20)
	unlimited(t, "memory.high", r.Memory.High)
	val(t, "memory.max", r.Memory.Max, 2<<30)
	val(t, "memory.swap.max", r.Memory.SwapMax, 0)
	val(t, "cpu.weight", r.CPU.Weight, 100)
	val(t, "cpu.idle", r.CPU.Idle, 1)
	val(t, "cpu.max quota", r.CPU.QuotaUSec, 50000)
	val(t, "cpu.max period", r.CPU.PeriodUSec, 100000)
	val(t, "pids.current", r.Pids.Current, 7)
	unlimited(t, "pids.max", r.Pids.Max)
	if r.Pids.Current.Source != filepath.Join(root, d, "pids.current") {
		t.Errorf("pids.current source = %s", r.Pids.Current.Source)
	}
	if r.Freezer.State != "frozen" {
		t.Errorf("freezer = %+v", r.Freezer)
	}
	val(t, "io.weight", r.IO.Weight, 200)
	if len(r.IO.Stat.Devices) != 2 || r.IO.Stat.Devices[0] != (IODevice{"8:0", 4096, 8192, 1, 2}) ||
		r.IO.Stat.Devices[1] != (IODevice{"253:1", 1, 2, 3, 4}) {
		t.Errorf("io.stat = %+v", r.IO.Stat)
	}
	if l := r.IO.Max.Devices; len(l) != 1 || l[0].Device != "8:0" || l[0].ReadBPS == nil || *l[0].ReadBPS != 1<<20 ||
		l[0].WriteBPS != nil || l[0].ReadIOPS != nil || l[0].WriteIOPS == nil || *l[0].WriteIOPS != 100 {
		t.Errorf("io.max = %+v", r.IO.Max)
	}
}

// Missing and malformed files give n/a with the reason, never a value.
func TestResourcesV2Broken(t *testing.T) {
	d := "cg" + cgPath + "/"
	root := tree(t, map[string]string{
		"cg/cgroup.controllers": "memory\n",
		d + "memory.current":    "lots\n",
		d + "memory.max":        "1 2\n",
		d + "memory.high":       "",
		d + "cpu.max":           "max 0\n",
		d + "cpu.weight":        "-5\n",
		d + "cpu.idle":          "7\n",
		d + "pids.current":      "18446744073709551616\n",
		d + "cgroup.freeze":     "maybe\n",
		d + "io.weight":         "heavy\n",
		d + "io.stat":           "8:0 rbytes=1 wbytes\n",
		d + "io.max":            "sda rbps=1\n",
	})
	r := Host{CgroupRoot: filepath.Join(root, "cg")}.ReadResources(cgPath)
	if r.Unavailable != "" {
		t.Fatalf("resources: %+v", r)
	}
	na(t, "memory.current", r.Memory.Current, "not an unsigned integer")
	na(t, "memory.max", r.Memory.Max, "want one value")
	na(t, "memory.high", r.Memory.High, "empty")
	na(t, "memory.swap.max", r.Memory.SwapMax, "no such file")
	na(t, "cpu.weight", r.CPU.Weight, "not an unsigned integer")
	na(t, "cpu.idle", r.CPU.Idle, "out of range")
	na(t, "cpu.max", r.CPU.QuotaUSec, "")
	na(t, "pids.current", r.Pids.Current, "")
	na(t, "pids.max", r.Pids.Max, "no such file")
	na(t, "io.weight", r.IO.Weight, "heavy")
	if r.Freezer.Unavailable == "" || r.Freezer.State != "" {
		t.Errorf("freezer = %+v", r.Freezer)
	}
	if r.IO.Stat.Unavailable == "" || len(r.IO.Stat.Devices) != 0 {
		t.Errorf("io.stat = %+v", r.IO.Stat)
	}
	if r.IO.Max.Unavailable == "" || len(r.IO.Max.Devices) != 0 {
		t.Errorf("io.max = %+v", r.IO.Max)
	}
}

func TestResourcesV1(t *testing.T) {
	files := map[string]string{
		"cg/memory" + cgPath + "/memory.usage_in_bytes": "4096\n",
		"cg/memory" + cgPath + "/memory.limit_in_bytes": "9223372036854771712\n",
		"cg/cpu" + cgPath + "/cpu.shares":               "1024\n",
		"cg/cpu" + cgPath + "/cpu.cfs_quota_us":         "-1\n",
		"cg/cpu" + cgPath + "/cpu.cfs_period_us":        "100000\n",
		"cg/pids" + cgPath + "/pids.current":            "3\n",
		"cg/pids" + cgPath + "/pids.max":                "max\n",
		"cg/freezer" + cgPath + "/freezer.state":        "THAWED\n",
		"cg/blkio" + cgPath + "/blkio.bfq.weight":       "default 100\n",
		// The throttle counters name no device here: the bfq ones are taken.
		"cg/blkio" + cgPath + "/blkio.throttle.io_service_bytes_recursive": "Total 0\n",
		"cg/blkio" + cgPath + "/blkio.throttle.io_serviced_recursive":      "Total 0\n",
		"cg/blkio" + cgPath + "/blkio.bfq.io_service_bytes_recursive":      "8:0 Read 512\n8:0 Write 1024\n8:0 Sync 0\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 1536\nTotal 1536\n",
		"cg/blkio" + cgPath + "/blkio.bfq.io_serviced_recursive":           "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
		"cg/blkio" + cgPath + "/blkio.throttle.read_bps_device":            "8:0 1048576\n",
		"cg/blkio" + cgPath + "/blkio.throttle.write_bps_device":           "",
		"cg/blkio" + cgPath + "/blkio.throttle.read_iops_device":           "",
		"cg/blkio" + cgPath + "/blkio.throttle.write_iops_device":          "8:16 50\n8:2 7\n",
	}
	root := tree(t, files)
	r := Host{CgroupRoot: filepath.Join(root, "cg")}.ReadResources(cgPath)
	if r.Unavailable != "" || r.Version != "v1" {
		t.Fatalf("resources: %+v", r)
	}
	val(t, "memory.current", r.Memory.Current, 4096)
	na(t, "memory.high", r.Memory.High, "cgroup v1 has no memory.high")
	unlimited(t, "memory.max", r.Memory.Max)
	na(t, "memory.swap.max", r.Memory.SwapMax, "swap accounting")
	val(t, "cpu.weight", r.CPU.Weight, 39) // cpu.shares 1024, converted as systemd does
	na(t, "cpu.idle", r.CPU.Idle, "no such file")
	unlimited(t, "cpu.max quota", r.CPU.QuotaUSec)
	val(t, "cpu.max period", r.CPU.PeriodUSec, 100000)
	val(t, "pids.current", r.Pids.Current, 3)
	unlimited(t, "pids.max", r.Pids.Max)
	if r.Freezer.State != "thawed" {
		t.Errorf("freezer = %+v", r.Freezer)
	}
	val(t, "io.weight", r.IO.Weight, 100)
	if len(r.IO.Stat.Devices) != 1 || r.IO.Stat.Devices[0] != (IODevice{"8:0", 512, 1024, 1, 2}) ||
		!strings.HasSuffix(r.IO.Stat.Source, "blkio.bfq.io_service_bytes_recursive") {
		t.Errorf("io stat = %+v", r.IO.Stat)
	}
	if l := r.IO.Max.Devices; len(l) != 3 || l[0].Device != "8:0" || *l[0].ReadBPS != 1<<20 || l[0].WriteIOPS != nil ||
		l[1].Device != "8:2" || *l[1].WriteIOPS != 7 || l[2].Device != "8:16" || *l[2].WriteIOPS != 50 || l[2].ReadBPS != nil {
		t.Errorf("io limits = %+v", r.IO.Max)
	}
}

func TestResourcesUnavailable(t *testing.T) {
	root := tree(t, map[string]string{"cg/cgroup.controllers": "memory\n"})
	h := Host{CgroupRoot: filepath.Join(root, "cg")}
	for path, want := range map[string]string{
		"":                  "not running",
		"/gone.scope":       "does not exist",
		"/a/../../etc":      "not clean",
		"/machine.slice/x/": "does not exist",
	} {
		r := h.ReadResources(path)
		if !strings.Contains(r.Unavailable, want) {
			t.Errorf("ReadResources(%q).Unavailable = %q, want %q", path, r.Unavailable, want)
		}
		na(t, path+" pids.current", r.Pids.Current, want)
		na(t, path+" memory.current", r.Memory.Current, want)
		if r.IO.Stat.Devices == nil || r.IO.Max.Devices == nil {
			t.Errorf("%q: nil device lists (JSON null)", path)
		}
	}
	r := Host{CgroupRoot: filepath.Join(root, "nothing")}.ReadResources(cgPath)
	if !strings.Contains(r.Unavailable, "no cgroup hierarchy") {
		t.Errorf("no hierarchy: %q", r.Unavailable)
	}
}

// ---- the init and its namespaces

func procTree(t *testing.T, extra map[string]string) Host {
	t.Helper()
	files := map[string]string{
		"proc/42/cgroup":  "0::" + cgPath + "/init.scope\n",
		"proc/42/ns/net":  "->net:[4026532000]",
		"proc/42/ns/mnt":  "->mnt:[4026532001]",
		"proc/42/ns/user": "->user:[4026531837]",
		"proc/1/ns/net":   "->net:[4026531840]",
		"proc/1/ns/mnt":   "->mnt:[4026531841]",
		"proc/1/ns/user":  "->user:[4026531837]",
	}
	for k, v := range extra {
		files[k] = v
	}
	root := tree(t, files)
	return Host{ProcRoot: filepath.Join(root, "proc"), CgroupRoot: filepath.Join(root, "cg"), HostPID: 1}
}

func TestPin(t *testing.T) {
	h := procTree(t, map[string]string{
		"proc/43/cgroup": "0::/user.slice/other\n",
		"proc/44/cgroup": "12:memory:/libpod_parent/libpod-0123abcd\n11:pids:/libpod_parent/libpod-0123abcd\n",
		"proc/45/cgroup": "garbage",
	})
	p, err := h.Pin(42, "abc", cgPath)
	if err != nil {
		t.Fatalf("Pin(42): %v", err)
	}
	if err := p.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	p.Close()
	if _, err := h.Pin(44, "0123abcd", ""); err != nil {
		t.Errorf("Pin by container ID on v1: %v", err)
	}
	for pid, want := range map[int]string{
		0:  "not running",
		43: "not in the partition's cgroup",
		45: "cgroup",
		46: "no such process",
	} {
		if _, err := h.Pin(pid, "abc", cgPath); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Pin(%d) = %v, want an error with %q", pid, err, want)
		}
	}
	if _, err := h.Pin(42, "", ""); err == nil {
		t.Error("Pin without container ID and cgroup succeeded")
	}
	// A cgroup prefix is not a sibling: /machine.slice/libpod-abc.scope2.
	h2 := procTree(t, map[string]string{"proc/42/cgroup": "0::" + cgPath + "2\n"})
	if _, err := h2.Pin(42, "", cgPath); err == nil {
		t.Error("Pin accepted a sibling cgroup with the same prefix")
	}
}

func TestNamespaces(t *testing.T) {
	h := procTree(t, map[string]string{
		"proc/42/ns/pid":              "->pid:[4026532002]",
		"proc/42/ns/pid_for_children": "->pid:[4026532002]",
		"proc/42/ns/uts":              "->garbage",
		"proc/42/ns/ipc":              "->uts:[4026532003]",
		"proc/42/ns/cgroup":           "->cgroup:[0]",
		"proc/1/ns/pid":               "->pid:[4026531836]",
		"proc/1/ns/pid_for_children":  "->pid:[4026531836]",
	})
	ns := h.ReadNamespaces(42)
	if ns.Unavailable != "" || ns.PID != 42 || ns.HostPID != 1 {
		t.Fatalf("namespaces: %+v", ns)
	}
	got := map[string]Namespace{}
	for _, n := range ns.Entries {
		got[n.Type] = n
	}
	if n := got["net"]; n.Sharing != "private" || *n.ID != 4026532000 || *n.HostID != 4026531840 {
		t.Errorf("net: %+v", n)
	}
	if n := got["user"]; n.Sharing != "shared" || *n.ID != 4026531837 {
		t.Errorf("user: %+v", n)
	}
	if n := got["pid_for_children"]; n.Sharing != "private" || *n.ID != 4026532002 {
		t.Errorf("pid_for_children: %+v", n)
	}
	for typ, want := range map[string]string{"uts": "not TYPE:[INODE]", "ipc": "names namespace type", "cgroup": "not a positive integer"} {
		if n := got[typ]; n.Unavailable == "" || !strings.Contains(n.Unavailable, want) || n.ID != nil || n.Sharing != "" {
			t.Errorf("%s: %+v, want unavailable with %q", typ, n, want)
		}
	}
	if ns.Sharing("net") != "private" || ns.Sharing("user") != "shared" || ns.Sharing("time") != "" {
		t.Errorf("Sharing: net %q user %q time %q", ns.Sharing("net"), ns.Sharing("user"), ns.Sharing("time"))
	}
	// The host's side missing.
	h3 := procTree(t, map[string]string{"proc/42/ns/time": "->time:[4026531834]"})
	for _, n := range h3.ReadNamespaces(42).Entries {
		if n.Type == "time" && (n.Sharing != "" || !strings.HasPrefix(n.Unavailable, "host: ")) {
			t.Errorf("time without the host's: %+v", n)
		}
	}
	if ns := h.ReadNamespaces(99); ns.Unavailable == "" || ns.Entries == nil {
		t.Errorf("namespaces of a missing pid: %+v", ns)
	}
}

// ---- sockets

const unixHeader = "Num       RefCount Protocol Flags    Type St Inode Path\n"

func TestParseUnixSockets(t *testing.T) {
	data := unixHeader +
		"0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/systemd/private\n" +
		"0000000000000000: 00000002 00000000 00000000 0002 01  1002 /dev/log\n" +
		"0000000000000000: 00000003 00000000 00000000 0001 03  1003\n" +
		"0000000000000000: 00000002 00000000 00010000 0005 01  1004 @abstract@name\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01  1005 /run/with space.sock\n" +
		"0000000000000000: 00000002 00000000 00000000 0002 01  1006\n" +
		"not a socket line\n" +
		"0000000000000000: zz 00000000 00010000 0001 01 1007 /x\n"
	socks, bad, err := ParseUnixSockets("unix", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if bad != 2 || len(socks) != 6 {
		t.Fatalf("%d sockets, %d bad: %+v", len(socks), bad, socks)
	}
	want := []struct {
		path, typ string
		listening bool
	}{
		{"/run/systemd/private", "stream", true},
		{"/dev/log", "dgram", true},
		{"", "stream", false},
		{"@abstract@name", "seqpacket", true},
		{"/run/with space.sock", "stream", true},
		{"", "dgram", false},
	}
	for i, w := range want {
		s := socks[i]
		if s.Path != w.path || s.TypeName() != w.typ || s.Listening() != w.listening || s.Inode != uint64(1001+i) {
			t.Errorf("socket %d = %+v (%s, listening %v), want %+v", i, s, s.TypeName(), s.Listening(), w)
		}
	}
	for _, bad := range []string{"", "garbage\n", "0000: 1 2 3 4 5 6\n"} {
		if _, _, err := ParseUnixSockets("unix", []byte(bad)); err == nil {
			t.Errorf("ParseUnixSockets(%q) accepted a file without the header", bad)
		}
	}
}

func TestReadSockets(t *testing.T) {
	h := procTree(t, map[string]string{
		"proc/42/net/unix": unixHeader +
			"0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/systemd/private\n" +
			"0000000000000000: 00000002 00000000 00000000 0002 01 1002 /dev/log\n" +
			"0000000000000000: 00000002 00000000 00010000 0001 01 2001 /run/host-only.sock\n" +
			"0000000000000000: 00000003 00000000 00000000 0001 03 1003\n" +
			"broken line\n",
		"proc/42/fd/3":                  "->socket:[1001]",
		"proc/42/fd/4":                  "->/dev/null",
		"proc/42/comm":                  "init\n",
		"proc/43/fd/7":                  "->socket:[1002]",
		"proc/43/fd/8":                  "->socket:[1001]",
		"proc/43/comm":                  "syslogd\n",
		"cg/cgroup.controllers":         "memory pids\n",
		"cg" + cgPath + "/cgroup.procs": "",
		"cg" + cgPath + "/init.scope/cgroup.procs": "42\n43\n",
	})
	s := h.ReadSockets(42, cgPath, false)
	if s.Unavailable != "" || s.OwnersUnavailable != "" || s.MalformedLines != 1 {
		t.Fatalf("sockets: %+v", s)
	}
	paths := []string{}
	for _, e := range s.Entries {
		paths = append(paths, e.Path)
	}
	if strings.Join(paths, ",") != "/dev/log,/run/host-only.sock,/run/systemd/private" {
		t.Fatalf("sockets = %v", paths)
	}
	if o := s.Entries[0].Processes; len(o) != 1 || o[0] != (SocketOwner{43, "syslogd"}) || s.Entries[0].State != "bound" {
		t.Errorf("/dev/log: %+v", s.Entries[0])
	}
	if o := s.Entries[2].Processes; len(o) != 2 || o[0].PID != 42 || o[1].PID != 43 || s.Entries[2].State != "listening" {
		t.Errorf("/run/systemd/private: %+v", s.Entries[2])
	}
	if s.Entries[1].Processes == nil || len(s.Entries[1].Processes) != 0 {
		t.Errorf("a socket nobody in the partition holds: %+v", s.Entries[1])
	}

	// With the host's network namespace only the partition's sockets stay.
	s = h.ReadSockets(42, cgPath, true)
	if len(s.Entries) != 2 || s.Entries[0].Path != "/dev/log" || s.Entries[1].Path != "/run/systemd/private" || !s.HostNetwork {
		t.Errorf("host network: %+v", s.Entries)
	}
	// ... and without the cgroup they cannot be told apart.
	s = h.ReadSockets(42, "/gone", true)
	if s.Unavailable == "" || len(s.Entries) != 0 {
		t.Errorf("host network without owners: %+v", s)
	}
	s = h.ReadSockets(42, "/gone", false)
	if s.Unavailable != "" || s.OwnersUnavailable == "" || len(s.Entries) != 3 {
		t.Errorf("private network without owners: %+v", s)
	}
	if s := h.ReadSockets(77, cgPath, false); !strings.Contains(s.Unavailable, "no such file") {
		t.Errorf("missing net/unix: %+v", s)
	}
}

// ---- devices

func mknod(t *testing.T, path string, mode uint32, major, minor uint32) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(path, mode|0o666, int(unix.Mkdev(major, minor))); err != nil {
		t.Skipf("mknod %s: %v (needs CAP_MKNOD)", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
}

func TestDevices(t *testing.T) {
	h := procTree(t, map[string]string{
		"proc/42/root/dev/notadev": "plain file",
		"proc/42/root/dev/link":    "->/dev/null",
		"proc/42/root/dev/dri":     "->/outside",
		"proc/42/root/dev/escape":  "->../../../../../../../../../../dev",
		"proc/42/root/dev/shm/":    "",
	})
	root := filepath.Join(h.ProcRoot, "42", "root")
	mknod(t, filepath.Join(root, "dev/null"), unix.S_IFCHR, 1, 3)
	mknod(t, filepath.Join(root, "dev/zero"), unix.S_IFCHR, 1, 5)
	mknod(t, filepath.Join(root, "dev/wrong"), unix.S_IFCHR, 1, 9)
	mknod(t, filepath.Join(root, "dev/input/event0"), unix.S_IFCHR, 13, 64)
	mknod(t, filepath.Join(root, "dev/loop0"), unix.S_IFBLK, 7, 0)
	// /dev/dri is a symlink to /outside: it resolves inside the partition.
	mknod(t, filepath.Join(root, "outside/card0"), unix.S_IFCHR, 1, 5)

	specs := []DeviceSpec{
		{PathOnHost: "/dev/null", PathInContainer: "/dev/null", Permissions: "rwm"},
		{PathOnHost: "/dev/zero", PathInContainer: "/dev/dri/card0"},
		{PathOnHost: "/dev/kvm-missing", PathInContainer: "/dev/kvm-missing"},
		{PathOnHost: "/dev/null", PathInContainer: "/dev/notadev"},
		{PathOnHost: "/dev/null", PathInContainer: "/dev/link"},
		{PathOnHost: "/dev/null", PathInContainer: "/dev/wrong"},
		{PathOnHost: "/dev/full", PathInContainer: "/dev/escape/full"},
		{PathOnHost: "/dev/null", PathInContainer: "relative"},
	}
	d := h.ReadDevices(42, specs, "")
	if d.NodesUnavailable != "" || d.ConfiguredUnavailable != "" || len(d.Configured) != len(specs) {
		t.Fatalf("devices: %+v", d)
	}
	want := []struct {
		present bool
		problem string
	}{
		{true, ""},
		{true, ""},
		{false, "no such file in the partition"},
		{false, "a regular file"},
		{false, "a symlink"},
		{false, "the partition's node is char 1:9, the host's char 1:3"},
		{false, "no such file in the partition"}, // ".." stops at the partition's root: never the host's /dev/full
		{false, "not absolute"},
	}
	for i, w := range want {
		c := d.Configured[i]
		if c.Present != w.present || !strings.Contains(c.Problem, w.problem) {
			t.Errorf("%s: present %v problem %q, want %v %q", c.PathInPartition, c.Present, c.Problem, w.present, w.problem)
		}
	}
	if n := d.Configured[0].Node; n == nil || *n != (DeviceNode{"/dev/null", "char", 1, 3, "0666"}) {
		t.Errorf("/dev/null node = %+v", n)
	}
	var nodes []string
	for _, n := range d.Nodes {
		nodes = append(nodes, n.Path+"="+n.Type)
	}
	if got := strings.Join(nodes, ","); got != "/dev/input/event0=char,/dev/loop0=block,/dev/null=char,/dev/wrong=char,/dev/zero=char" {
		t.Errorf("nodes = %s", got)
	}

	// Podman not reachable: the nodes are still listed.
	d = h.ReadDevices(42, nil, "podman is away")
	if d.ConfiguredUnavailable != "podman is away" || len(d.Configured) != 0 || len(d.Nodes) != 5 {
		t.Errorf("without podman: %+v", d)
	}
	// No such process.
	d = h.ReadDevices(99, specs, "")
	if d.NodesUnavailable == "" || len(d.Configured) != len(specs) || d.Configured[0].Present || d.Configured[0].Problem == "" {
		t.Errorf("missing pid: %+v", d)
	}
}

// ---- parsers never panic and never accept garbage silently

func FuzzParsers(f *testing.F) {
	for _, s := range []string{
		unixHeader + "0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/x\n",
		"8:0 rbytes=1 wbytes=2 rios=3 wios=4\n",
		"8:0 rbps=max wbps=1 riops=max wiops=max\n",
		"8:0 Read 1\nTotal 1\n",
		"default 100\n8:0 50\n",
		"", "\n", ":", "8:0", "x=y",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if socks, _, err := ParseUnixSockets("f", b); err == nil {
			for _, s := range socks {
				_ = s.TypeName()
				_ = s.Listening()
			}
		}
		if devs, err := ParseIOStat("f", b); err == nil {
			for _, d := range devs {
				if !isDevice(d.Device) {
					t.Fatalf("io.stat device %q", d.Device)
				}
			}
		}
		_, _ = ParseIOMax("f", b)
		_, _ = ParseBlkioStat("f", b)
		_, _ = ParseDeviceValues("f", b)
		if w, err := parseDefaultWeight("f", b); err == nil && (w < 1 || w > 10000) {
			t.Fatalf("weight %d", w)
		}
	})
}
