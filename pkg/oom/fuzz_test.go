package oom

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func FuzzParseScoreAdj(f *testing.F) {
	for _, s := range []string{"0\n", "-1000", "1000", "1001", "", "x", " 5 "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseScoreAdj("/proc/1/oom_score_adj", b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "/proc/1/oom_score_adj") {
				t.Fatalf("error %v", err)
			}
			return
		}
		if v < MinScore || v > MaxScore {
			t.Fatalf("%d accepted", v)
		}
	})
}

func FuzzClassify(f *testing.F) {
	f.Add("/machine.slice/libpod-qm.scope", "/machine.slice/libpod-qm.scope/machine.slice/libpod-abc.scope", 5, 1)
	f.Add("/", "/libpod-conmon-x/libpod-y", 1, 1)
	f.Add("/qm", "/qm-x", 2, 0)
	f.Fuzz(func(t *testing.T, partition, cg string, pid, initPID int) {
		p := DefaultPolicy()
		role, name := p.Classify(partition, pid, initPID, cg)
		if role == RoleNested && strings.Contains(name, "/") {
			t.Fatalf("container name %q", name)
		}
		if role != RoleNested && name != "" {
			t.Fatalf("name %q for role %s", name, role)
		}
		if _, inside := under(cg, partition); !inside && role != RoleOther {
			t.Fatalf("%s outside %s classified %s", cg, partition, role)
		}
		for _, cur := range []int{MinScore, -1, 0, 499, 500, 750, MaxScore} {
			if v, ok := p.Target(role, cur, -1); ok && (v < MinScore || v > MaxScore) {
				t.Fatalf("target %d", v)
			}
		}
	})
}

// FuzzProcCgroupMembership feeds arbitrary /proc/<pid>/cgroup content to
// the membership check used before every write.
func FuzzProcCgroupMembership(f *testing.F) {
	f.Add([]byte("0::/qm\n"), "/qm")
	f.Add([]byte("4:memory:/qm\n0::/\n"), "/qm")
	f.Add([]byte(":::\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		dir := t.TempDir()
		if err := os.MkdirAll(dir+"/1", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/1/cgroup", data, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := openProc(dir, 1)
		if err != nil {
			t.Skip()
		}
		defer p.close()
		in, err := p.inCgroup(path)
		if err != nil {
			t.Fatal(err)
		}
		if in && !strings.Contains(string(data), path) {
			t.Fatalf("%q reported in %q", path, data)
		}
	})
}
