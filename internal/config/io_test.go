package config

import (
	"strings"
	"testing"
	"time"
)

func TestIODefaultsMirrorQM(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	io := c.Partitions[0].IO
	if io.Weight != 50 {
		t.Errorf("weight: want 50 (qm.container's IOWeight), got %d", io.Weight)
	}
	if io.Threshold.Duration != 100*time.Millisecond || io.RestoreAfter.Duration != 30*time.Second ||
		io.Step.Percent != 25 || io.Floor.Bytes != 1<<20 || len(io.Devices) != 0 {
		t.Errorf("io defaults: %+v", io)
	}
	if pct, b := io.StepValue(); pct != 0.25 || b != 0 {
		t.Errorf("StepValue: %v %v", pct, b)
	}
}

func TestIOParse(t *testing.T) {
	c, err := Parse("t.toml", []byte(`
[[partition]]
name = "qm"
[partition.io]
weight = 200
threshold = "50ms"
step = "10M"
floor = "2M"
restore_after = "10s"
[[partition.io.device]]
path = "/dev/vda"
read_bps = "100M"
write_bps = "50M"
read_iops = 2000
write_iops = 1000
[[partition.io.device]]
path = "7:0"
write_bps = "max"
`))
	if err != nil {
		t.Fatal(err)
	}
	io := c.Partitions[0].IO
	if io.Weight != 200 || io.Threshold.Duration != 50*time.Millisecond || io.RestoreAfter.Duration != 10*time.Second {
		t.Errorf("io: %+v", io)
	}
	if pct, b := io.StepValue(); pct != 0 || b != 10<<20 {
		t.Errorf("absolute step: %v %v", pct, b)
	}
	if len(io.Devices) != 2 {
		t.Fatalf("devices: %+v", io.Devices)
	}
	d := io.Devices[0]
	if d.Path != "/dev/vda" || d.ReadBps.Bytes != 100<<20 || d.WriteBps.Bytes != 50<<20 || d.ReadIOPS != 2000 || d.WriteIOPS != 1000 {
		t.Errorf("device 0: %+v", d)
	}
	if d := io.Devices[1]; !d.WriteBps.IsInfinity() || d.ReadBps.Set || d.ReadIOPS != 0 {
		t.Errorf("device 1: %+v", d)
	}
}

func TestIOValidationNamesKey(t *testing.T) {
	for _, tc := range []struct{ doc, key string }{
		{"weight = 0", "partition[qm].io.weight"},
		{"weight = 10001", "partition[qm].io.weight"},
		{`threshold = "0s"`, "partition[qm].io.threshold"},
		{`threshold = "5s"`, "partition[qm].io.threshold"}, // beyond the 1s window
		{`step = "100%"`, "partition[qm].io.step"},
		{`step = "0"`, "partition[qm].io.step"},
		{`step = "max"`, "partition[qm].io.step"},
		{`floor = "10%"`, "partition[qm].io.floor"},
		{`floor = "0"`, "partition[qm].io.floor"},
		{`restore_after = "0s"`, "partition[qm].io.restore_after"},
		{"[[partition.io.device]]\nread_bps = \"1M\"", "partition[qm].io.device[0].path"},
		{"[[partition.io.device]]\npath = \"vda\"", "partition[qm].io.device[0].path"},
		{"[[partition.io.device]]\npath = \"/etc/passwd\"", "partition[qm].io.device[0].path"},
		{"[[partition.io.device]]\npath = \"8:x\"", "partition[qm].io.device[0].path"},
		{"[[partition.io.device]]\npath = \"8:0\"\n[[partition.io.device]]\npath = \"8:0\"", "partition[qm].io.device[1].path"},
		{"[[partition.io.device]]\npath = \"8:0\"\nread_bps = \"50%\"", "partition[qm].io.device[0].read_bps"},
		{"[[partition.io.device]]\npath = \"8:0\"\nwrite_bps = 0", "partition[qm].io.device[0].write_bps"},
	} {
		_, err := Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.io]\n"+tc.doc+"\n"))
		if err == nil {
			t.Errorf("%q: accepted", tc.doc)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%q: error does not name %s: %v", tc.doc, tc.key, err)
		}
	}
	_, err := Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.io]\n[[partition.io.device]]\npath = \"8:0\"\nread_iops = -1\n"))
	if err == nil || !strings.Contains(err.Error(), "partition[qm].io.device[0].read_iops") {
		t.Errorf("negative iops: %v", err)
	}
}

func TestParseMajMin(t *testing.T) {
	if ma, mi, ok := ParseMajMin("254:16"); !ok || ma != 254 || mi != 16 {
		t.Errorf("254:16 -> %d %d %v", ma, mi, ok)
	}
	for _, s := range []string{"", "8", "8:", ":0", "8:0:1", "-1:0", "99999999999:0", " 8:0"} {
		if _, _, ok := ParseMajMin(s); ok {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestPrepareIODevices runs against the real /dev: a missing device is a
// warning and skipped (one configuration, several hosts), a character
// device is an error naming the key, MAJ:MIN is kept as it is.
func TestPrepareIODevices(t *testing.T) {
	c, err := Parse("t.toml", []byte(`
[[partition]]
name = "qm"
rootfs = "/"
volumes = []
seccomp_profile = ""
devices = []
[partition.io]
[[partition.io.device]]
path = "/dev/qmd-no-such-disk"
write_bps = "1M"
[[partition.io.device]]
path = "7:0"
write_bps = "1M"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := Prepare(c, OSHost{}); err != nil {
		t.Fatal(err)
	}
	devs := c.Partitions[0].IO.Devices
	if len(devs) != 1 || devs[0].Path != "7:0" {
		t.Errorf("missing device not skipped: %+v", devs)
	}
	found := false
	for _, w := range c.Warnings {
		if strings.Contains(w, "partition[qm].io.device[0].path") && strings.Contains(w, "/dev/qmd-no-such-disk") {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning naming the key: %v", c.Warnings)
	}

	c, err = Parse("t.toml", []byte(`
[[partition]]
name = "qm"
rootfs = "/"
volumes = []
seccomp_profile = ""
devices = []
[[partition.io.device]]
path = "/dev/null"
write_bps = "1M"
`))
	if err != nil {
		t.Fatal(err)
	}
	err = Prepare(c, OSHost{})
	if err == nil || !strings.Contains(err.Error(), "partition[qm].io.device[0].path") || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("a character device must be refused naming the key: %v", err)
	}
}
