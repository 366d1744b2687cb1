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

func TestMeminfoField(t *testing.T) {
	in := []byte("MemTotal:       4000 kB\nMemFree: 10 kB\nMemAvailable:    2500 kB\nHugePages_Total:       0\nBad: 12 MB\n")
	for _, c := range []struct {
		key  string
		want uint64
		ok   bool
	}{
		{"MemAvailable", 2500 * 1024, true},
		{"MemFree", 10 * 1024, true},
		{"Mem", 0, false},            // a prefix of a key is not the key
		{"HugePages_Total", 0, true}, // a count without unit
		{"Bad", 0, false},            // another unit than kB
		{"SwapFree", 0, false},       // absent
	} {
		got, ok := meminfoField(in, c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("meminfoField(%s) = %d, %v, want %d, %v", c.key, got, ok, c.want, c.ok)
		}
	}
	n, err := MemAvailable()
	if err != nil || n == 0 || n > Read().MemTotal {
		t.Errorf("MemAvailable on this host = %d, %v (MemTotal %d)", n, err, Read().MemTotal)
	}
}
