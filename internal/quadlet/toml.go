package quadlet

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tomlString encodes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f || r == utf8.RuneError {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlBool(b bool) string { return strconv.FormatBool(b) }

// comment makes text safe for a TOML comment: one line, printable.
func comment(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// item is one qmd key of the generated drop-in.
type item struct {
	table string   // "" (the partition itself), "security", "sysctl", ...
	key   string   // key within the table
	val   string   // TOML-encoded value
	from  []Entry  // the Quadlet lines it comes from
	note  string   // why, when the mapping is not one to one
	list  []string // the values of a list key that PodmanArgs may extend
}

func (it *item) path() string {
	if it.table == "" {
		return it.key
	}
	return it.table + "." + it.key
}

// tableOrder and keyOrder fix the layout of the generated file; keys of
// the free-form tables (sysctl, env, annotations, rlimits) are sorted.
var (
	tableOrder = []string{"", "security", "sysctl", "env", "annotations", "rlimits", "restart", "memory", "cpu", "pids"}
	keyOrder   = map[string][]string{
		"":         {"container_name", "rootfs", "exec", "network", "hostname", "volumes", "read_only", "read_only_tmpfs", "cap_drop", "devices", "seccomp_profile", "oom_score_adj", "nested_oom_score_adj", "stop_timeout"},
		"security": {"selinux_type", "selinux_file_type", "selinux_level", "selinux_nested", "selinux_disable", "apparmor_profile"},
		"restart":  {"policy", "start_limit_burst", "start_limit_interval"},
		"memory":   {"high", "max", "swap_max"},
		"cpu":      {"weight", "quota"},
		"pids":     {"max"},
	}
	freeTables = map[string]bool{"sysctl": true, "env": true, "annotations": true, "rlimits": true}
)

// sortItems orders items as they are written.
func sortItems(items []*item) {
	rank := func(it *item) (int, int) {
		t := len(tableOrder)
		for i, name := range tableOrder {
			if name == it.table {
				t = i
			}
		}
		k := len(keyOrder[it.table])
		for i, name := range keyOrder[it.table] {
			if name == it.key {
				k = i
			}
		}
		return t, k
	}
	sort.SliceStable(items, func(i, j int) bool {
		ti, ki := rank(items[i])
		tj, kj := rank(items[j])
		if ti != tj {
			return ti < tj
		}
		if ki != kj {
			return ki < kj
		}
		return items[i].key < items[j].key
	})
}

// render writes the [[partition]] of the items (sorted).
func render(b *strings.Builder, partition string, items []*item, withSources bool) {
	fmt.Fprintf(b, "[[partition]]\nname = %s\n", tomlString(partition))
	table := ""
	for _, it := range items {
		if it.table != table {
			table = it.table
			fmt.Fprintf(b, "\n[partition.%s]\n", table)
		}
		if withSources {
			for _, e := range it.from {
				fmt.Fprintf(b, "# %s\n", comment(e.String()))
			}
			if it.note != "" {
				fmt.Fprintf(b, "# (%s)\n", comment(it.note))
			}
		}
		k := it.key
		if freeTables[it.table] {
			k = tomlString(k)
		}
		fmt.Fprintf(b, "%s = %s\n", k, it.val)
	}
}
