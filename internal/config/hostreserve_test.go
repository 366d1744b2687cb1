package config

import (
	"strings"
	"testing"
)

// TestHostReserve: the default is 10 % of RAM; "0" turns the rung off; a
// reserve above half the RAM or infinity is refused, naming the key.
func TestHostReserve(t *testing.T) {
	parse := func(doc string) (*Config, error) {
		return Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n[partition.pressure]\n"+doc+"\n"))
	}
	c, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Partitions[0].Pressure.HostReserve; r.Resolve(1000) != 100 {
		t.Errorf("default host_reserve %v resolves to %d of 1000", r, r.Resolve(1000))
	}
	for doc, want := range map[string]uint64{`host_reserve = "0"`: 0, `host_reserve = "256M"`: 256 << 20, `host_reserve = "50%"`: 500} {
		c, err := parse(doc)
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if got := c.Partitions[0].Pressure.HostReserve.Resolve(1000); got != want {
			t.Errorf("%s: resolves to %d, want %d", doc, got, want)
		}
	}
	for _, doc := range []string{`host_reserve = "60%"`, `host_reserve = "infinity"`, `host_reserve = "lots"`} {
		if _, err := parse(doc); err == nil || !strings.Contains(err.Error(), "host_reserve") {
			t.Errorf("%s: %v, want an error naming host_reserve", doc, err)
		}
	}
}
