package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Files returns the default search list that exists on this host: the
// vendor file, the admin file, then drop-ins in name order.
func Files() ([]string, error) {
	var files []string
	for _, f := range []string{VendorFile, AdminFile} {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("config file %s: %w", f, err)
		}
	}
	drop, err := filepath.Glob(filepath.Join(DropInDir, "*.toml"))
	if err != nil {
		return nil, fmt.Errorf("config drop-ins %s: %w", DropInDir, err)
	}
	sort.Strings(drop)
	return append(files, drop...), nil
}

// Load reads the files in order over the defaults and validates the result.
// With no files at all, the built-in default partition "qm" is used.
func Load(files []string) (*Config, error) {
	l := newLoader()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := l.apply(f, src); err != nil {
			return nil, err
		}
	}
	c := l.finish()
	if err := Validate(c, l.origin); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse loads one in-memory document over the defaults (tests, fuzzing).
func Parse(name string, src []byte) (*Config, error) {
	l := newLoader()
	if err := l.apply(name, src); err != nil {
		return nil, err
	}
	c := l.finish()
	if err := Validate(c, l.origin); err != nil {
		return nil, err
	}
	return c, nil
}

type loader struct {
	cfg *Config
	// origin maps a key path ("partition[qm].memory.high") to "file:line"
	// of the file that set it last.
	origin map[string]string
}

func newLoader() *loader {
	return &loader{cfg: Default(), origin: map[string]string{}}
}

// document is one file's top level. Partitions and protect entries are
// decoded later, one by one, so that a drop-in can change one key of an
// existing partition (matched by name) without repeating the rest.
type document struct {
	Podman    *Podman          `toml:"podman"`
	Log       *Log             `toml:"log"`
	DBus      *DBus            `toml:"dbus"`
	Incidents *Incidents       `toml:"incidents"`
	Policy    *Policy          `toml:"policy"`
	Partition []toml.Primitive `toml:"partition"`
	Protect   []toml.Primitive `toml:"protect"`
}

func (l *loader) apply(file string, src []byte) error {
	c := l.cfg
	doc := document{Podman: &c.Podman, Log: &c.Log, DBus: &c.DBus, Incidents: &c.Incidents, Policy: &c.Policy}
	md, err := toml.Decode(string(src), &doc)
	if err != nil {
		return decodeError(file, err)
	}
	lines := scanKeys(src)
	where := func(raw string) string {
		if n, ok := lines[raw]; ok {
			return fmt.Sprintf("%s:%d", file, n)
		}
		return file
	}
	// rename maps the scanner's "partition[i]" to "partition[name]".
	rename := map[string]string{}
	for i, prim := range doc.Partition {
		var id struct {
			Name string `toml:"name"`
		}
		if err := md.PrimitiveDecode(prim, &id); err != nil {
			return decodeError(file, err)
		}
		raw := fmt.Sprintf("partition[%d]", i)
		if strings.TrimSpace(id.Name) == "" {
			return &KeyError{Key: raw + ".name", Origin: where(raw), Msg: "every [[partition]] needs a name"}
		}
		p, ok := c.Partition(id.Name)
		if !ok {
			c.Partitions = append(c.Partitions, DefaultPartition(id.Name))
			p = &c.Partitions[len(c.Partitions)-1]
		}
		if err := md.PrimitiveDecode(prim, p); err != nil {
			return decodeError(file, fmt.Errorf("partition %q: %w", id.Name, err))
		}
		rename[raw] = fmt.Sprintf("partition[%s]", id.Name)
	}
	for i, prim := range doc.Protect {
		var pr Protect
		if err := md.PrimitiveDecode(prim, &pr); err != nil {
			return decodeError(file, err)
		}
		c.Protect = append(c.Protect, pr)
		rename[fmt.Sprintf("protect[%d]", i)] = fmt.Sprintf("protect[%d]", len(c.Protect)-1)
	}
	for raw, n := range lines {
		key := raw
		for from, to := range rename {
			if raw == from || strings.HasPrefix(raw, from+".") {
				key = to + strings.TrimPrefix(raw, from)
			}
		}
		l.origin[key] = fmt.Sprintf("%s:%d", file, n)
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return &KeyError{Key: k, Origin: file + lineSuffix(lines, und[0]), Msg: "unknown key"}
	}
	c.Sources = append(c.Sources, file)
	return nil
}

// lineSuffix finds a line for an undecoded key (best effort: the first
// table entry that has it).
func lineSuffix(lines map[string]int, k toml.Key) string {
	last := k[len(k)-1]
	best := 0
	for raw, n := range lines {
		if strings.HasSuffix(raw, "."+last) || raw == last {
			if best == 0 || n < best {
				best = n
			}
		}
	}
	if best == 0 {
		return ""
	}
	return fmt.Sprintf(":%d", best)
}

func (l *loader) finish() *Config {
	c := l.cfg
	if len(c.Partitions) == 0 {
		c.Partitions = []Partition{DefaultPartition("qm")}
	}
	c.origin = l.origin
	return c
}

func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			return fmt.Errorf("%s:%d: key %s: %s", file, pe.Position.Line, pe.LastKey, msg)
		}
		return fmt.Errorf("%s:%d: %s", file, pe.Position.Line, msg)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// scanKeys maps the key paths of a TOML document to their line numbers:
// "podman.socket", "partition[0].memory.high". Arrays of tables are indexed
// by their position in this document. It is deliberately simple (one key
// per line, as qmd's files are written); keys it misses still get the file
// name in error messages.
func scanKeys(src []byte) map[string]int {
	out := map[string]int{}
	counts := map[string]int{}
	table := ""
	// arrayBase maps an array-of-tables name to its current indexed prefix,
	// so "[partition.memory]" after the second "[[partition]]" becomes
	// "partition[1].memory".
	arrayBase := map[string]string{}
	inMultiline := false
	for i, line := range strings.Split(string(src), "\n") {
		t := strings.TrimSpace(line)
		if inMultiline {
			if strings.Count(t, `"""`)%2 == 1 || strings.Count(t, `'''`)%2 == 1 {
				inMultiline = false
			}
			continue
		}
		if t == "" || t[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(t, "[["):
			name := strings.TrimSpace(strings.Trim(strings.SplitN(t, "]]", 2)[0], "[ "))
			idx := counts[name]
			counts[name]++
			table = fmt.Sprintf("%s[%d]", name, idx)
			arrayBase[name] = table
			out[table] = i + 1
			continue
		case t[0] == '[':
			name := strings.TrimSpace(strings.Trim(strings.SplitN(t, "]", 2)[0], "[ "))
			table = name
			for base, indexed := range arrayBase {
				if strings.HasPrefix(name, base+".") {
					table = indexed + strings.TrimPrefix(name, base)
				}
			}
			out[table] = i + 1
			continue
		}
		k, rest, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"'`)
		if strings.Count(rest, `"""`)%2 == 1 || strings.Count(rest, `'''`)%2 == 1 {
			inMultiline = true
		}
		path := k
		if table != "" {
			path = table + "." + k
		}
		out[path] = i + 1
	}
	return out
}
