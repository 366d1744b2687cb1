package config

import (
	"strings"
	"testing"
)

func TestDiskDefaultOff(t *testing.T) {
	c, err := Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Partitions[0]
	if p.Disk.Enabled() {
		t.Fatal("disk budget is on by default")
	}
	if got := p.DiskPath(); got != "/var/qm" {
		t.Errorf("DiskPath = %q, want the host side of the /var volume /var/qm", got)
	}
}

func TestDiskParse(t *testing.T) {
	c, err := Parse("t.toml", []byte(`[[partition]]
name = "qm"
[partition.disk]
max = "4G"
path = "/srv/qm/var/"
reserve = "512M"
`))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Partitions[0].Disk
	if !d.Enabled() || d.Max.Bytes != 4<<30 || d.ReserveBytes() != 512<<20 {
		t.Errorf("disk = %+v", d)
	}
	if got := c.Partitions[0].DiskPath(); got != "/srv/qm/var" {
		t.Errorf("DiskPath = %q", got)
	}
	c, err = Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.disk]\nmax = \"1G\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Partitions[0].Disk.ReserveBytes(); got != DefaultDiskReserve {
		t.Errorf("default reserve = %d", got)
	}
}

func TestDiskValidate(t *testing.T) {
	for _, tc := range []struct{ body, key, msg string }{
		{`max = "50%"`, "partition[qm].disk.max", "not a percentage"},
		{`max = "infinity"`, "partition[qm].disk.max", "leave max unset"},
		{`max = "1M"`, "partition[qm].disk.max", "below 16M"},
		{"max = \"1G\"\nreserve = \"10%\"", "partition[qm].disk.reserve", "size like"},
		{"max = \"1G\"\npath = \"var/qm\"", "partition[qm].disk.path", "absolute"},
		{"max = \"1G\"\npath = \"/var/qm/../..\"", "partition[qm].disk.path", ".."},
		{"max = \"1G\"\npath = \"/etc\"", "partition[qm].disk.path", "host system directory"},
		{"max = \"1G\"\npath = \"/\"", "partition[qm].disk.path", "host system directory"},
		{`path = "/srv/qm"`, "partition[qm].disk.path", "set max too"},
		{`reserve = "1G"`, "partition[qm].disk.reserve", "set max too"},
	} {
		_, err := Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.disk]\n"+tc.body+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: err = %v, want %s: ...%s", tc.body, err, tc.key, tc.msg)
		}
	}
	// No /var volume and no path: the key to set is named.
	_, err := Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\nvolumes = []\n[partition.disk]\nmax = \"1G\"\n"))
	if err == nil || !strings.Contains(err.Error(), "partition[qm].disk.path: no volume mounts /var") {
		t.Errorf("err = %v", err)
	}
}

func TestDiskCreateHash(t *testing.T) {
	p := DefaultPartition("qm")
	before := p.CreateHash()
	p.Disk.Reserve = Size{Bytes: 1, Set: true}
	if p.CreateHash() != before {
		t.Error("an unset budget changed the hash (an upgrade would recreate the partition)")
	}
	p.Disk.Max = Size{Bytes: 1 << 30, Set: true}
	on := p.CreateHash()
	if on == before {
		t.Error("enabling the budget did not change the hash: a running partition would not show config drift")
	}
	p.Disk.Max = Size{Bytes: 2 << 30, Set: true}
	if p.CreateHash() != on {
		t.Error("growing max changed the hash: the same mount, no recreation needed")
	}
}
