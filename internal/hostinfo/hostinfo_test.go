package hostinfo

import "testing"

func TestParseMemTotal(t *testing.T) {
	cases := map[string]uint64{
		"MemTotal:       24576000 kB\nMemFree: 1 kB\n": 24576000 * 1024,
		"MemFree: 1 kB\n":                  0,
		"MemTotal: lots kB\n":              0,
		"MemTotal: 99999999999999999 kB\n": 0,
		"":                                 0,
	}
	for in, want := range cases {
		if got := ParseMemTotal([]byte(in)); got != want {
			t.Errorf("ParseMemTotal(%q) = %d, want %d", in, got, want)
		}
	}
	if f := Read(); f.MemTotal == 0 || f.PidMax == 0 {
		t.Errorf("Read on this host: %+v", f)
	}
}
