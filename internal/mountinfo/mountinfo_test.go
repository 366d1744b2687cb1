package mountinfo

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	mi := `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:5 / /dev rw shared:2 master:1 - devtmpfs udev rw
25 22 254:1 /var/lib/x /mnt/bind\040dir rw - ext4 /dev/vda1 rw
26 22 7:3 / /var/qm rw,relatime - ext4 /dev/loop3 rw
short line
27 22 8:17 / /srv rw no separator here at all x
`
	got, err := Parse(strings.NewReader(mi))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Devno: "254:1", Root: "/", MountPoint: "/", FSType: "ext4", Source: "/dev/vda1"},
		{Devno: "0:5", Root: "/", MountPoint: "/dev", FSType: "devtmpfs", Source: "udev"},
		{Devno: "254:1", Root: "/var/lib/x", MountPoint: "/mnt/bind dir", FSType: "ext4", Source: "/dev/vda1"},
		{Devno: "7:3", Root: "/", MountPoint: "/var/qm", FSType: "ext4", Source: "/dev/loop3"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	got, err := Parse(errReader{boom})
	if !errors.Is(err, boom) || len(got) != 0 {
		t.Fatalf("got %v, %v; want boom", got, err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/var/q\040m`:  "/var/q m",
		`/a\134b`:      `/a\b`,
		`/a\\b`:        `/a\\b`, // not an octal escape: left as it is
		`/end\040`:     "/end ",
		`/short\04`:    `/short\04`,
		`/tab\011x`:    "/tab\tx",
		`/plain`:       "/plain",
		`/bad\999rest`: `/bad\999rest`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// The real mount table of this machine parses, and / is in it.
func TestParseSelf(t *testing.T) {
	f, err := os.Open(Path)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.MountPoint == "/" && m.FSType != "" {
			return
		}
	}
	t.Fatalf("no / in %d mounts", len(ms))
}
