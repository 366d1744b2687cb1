// Package docs keeps the documentation in step with the code: the man
// pages in docs/man and the vendor configuration configs/qmd.toml list
// every configuration key of internal/config's structs (found by
// reflection over their toml tags), every D-Bus member of
// systemd/*.xml, every client command and exit code, and every incident
// type; and the man pages render without warnings.
package docs

import (
	"bufio"
	"encoding"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/ctl"
	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/logging"
	"github.com/containers/qmd/internal/testutil"
)

const (
	manTOML  = "docs/man/qmd.toml.5.md"
	manQmd   = "docs/man/qmd.8.md"
	manDBus  = "docs/man/org.containers.qmd1.5.md"
	vendorFn = "configs/qmd.toml"
)

// configKey is one key of the configuration, as written in a file.
type configKey struct {
	path  string // dotted: partition.restart.policy
	field string // Go path: config.Partition.Restart.Policy
	table bool   // a map: its own keys are free (sysctl, rlimits, env, ...)
}

// tomlUnmarshaler is BurntSushi/toml's interface: a struct that
// implements it (config.Duration, config.Size) is one value, not a table.
type tomlUnmarshaler interface{ UnmarshalTOML(any) error }

var (
	unmarshalerType     = reflect.TypeFor[tomlUnmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// configKeys walks config.Config's toml tags.
func configKeys(t *testing.T) []configKey {
	t.Helper()
	var out []configKey
	var walk func(typ reflect.Type, prefix, gopath string)
	walk = func(typ reflect.Type, prefix, gopath string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "-" {
				continue
			}
			if tag == "" {
				t.Errorf("%s.%s has no toml tag: give it one (or toml:\"-\")", gopath, f.Name)
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem() // [[partition]], [[protect]]
			}
			leaf := ft.Kind() != reflect.Struct ||
				reflect.PointerTo(ft).Implements(unmarshalerType) ||
				reflect.PointerTo(ft).Implements(textUnmarshalerType)
			if leaf {
				out = append(out, configKey{path: key, field: gopath + "." + f.Name, table: ft.Kind() == reflect.Map})
				continue
			}
			walk(ft, key, "config."+ft.Name())
		}
	}
	walk(reflect.TypeFor[config.Config](), "", "config.Config")
	if len(out) < 50 {
		t.Fatalf("found only %d configuration keys by reflection: %v", len(out), out)
	}
	return out
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(testutil.RepoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// manTerm is a key's entry in qmd.toml(5): "**partition.memory.high** = *size*, default ...".
var manTerm = regexp.MustCompile(`^\*\*([a-z0-9_]+(?:\.[a-z0-9_]+)*)\*\* = (.*)$`)

func TestManTOMLListsEveryConfigKey(t *testing.T) {
	keys := configKeys(t)
	doc := readRepoFile(t, manTOML)
	documented := map[string]int{}
	for i, line := range strings.Split(doc, "\n") {
		m := manTerm.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		documented[m[1]] = i + 1
		if !strings.Contains(m[2], "default") {
			t.Errorf("%s:%d: the entry of %s does not name its default (want \"**%s** = *type*, default VALUE\")", manTOML, i+1, m[1], m[1])
		}
	}
	known := map[string]bool{}
	for _, k := range keys {
		known[k.path] = true
		if _, ok := documented[k.path]; !ok {
			t.Errorf("configuration key %s (%s) is missing from %s: add an entry\n    **%s** = *type*, default VALUE\n    :   what it does, its unit and range.",
				k.path, k.field, manTOML, k.path)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !known[k] {
			t.Errorf("%s:%d documents %s, which is not a key of the configuration structs (internal/config): remove or rename it", manTOML, documented[k], k)
		}
	}
}

var (
	vendorHeader = regexp.MustCompile(`^\[\[?\s*([a-z0-9_.]+)\s*\]\]?$`)
	vendorKey    = regexp.MustCompile(`^([a-z0-9_]+|"[^"]*")\s*=`)
)

// vendorKeys reads the keys configs/qmd.toml shows, set or commented out
// ("# container_name = ..."), with their line numbers.
func vendorKeys(t *testing.T, tables map[string]bool) map[string]int {
	t.Helper()
	out := map[string]int{}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(readRepoFile(t, vendorFn)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			line = strings.TrimSpace(rest)
		}
		if m := vendorHeader.FindStringSubmatch(line); m != nil {
			table = m[1]
			if tables[table] { // [partition.sysctl]: the key is the table
				out[table] = n
			}
			continue
		}
		m := vendorKey.FindStringSubmatch(line)
		if m == nil || tables[table] {
			continue
		}
		key := m[1]
		if table != "" {
			key = table + "." + key
		}
		if _, seen := out[key]; !seen {
			out[key] = n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVendorConfigListsEveryConfigKey(t *testing.T) {
	keys := configKeys(t)
	tables := map[string]bool{}
	for _, k := range keys {
		tables[k.path] = k.table
	}
	shown := vendorKeys(t, tables)
	for _, k := range keys {
		if _, ok := shown[k.path]; !ok {
			t.Errorf("configuration key %s (%s) is missing from %s: show it with its default (commented out when it has no value by default)",
				k.path, k.field, vendorFn)
		}
	}
	for _, k := range sortedKeys(shown) {
		if _, ok := tables[k]; !ok {
			t.Errorf("%s:%d shows %s, which is not a key of the configuration structs (internal/config)", vendorFn, shown[k], k)
		}
	}
}

// The man page's terms are found the way the test reads them (a renamed
// format would otherwise make the test above pass on nothing).
func TestConfigKeyParsers(t *testing.T) {
	if m := manTerm.FindStringSubmatch(`**partition.restart.policy** = *string*, default **"always"**`); m == nil || m[1] != "partition.restart.policy" {
		t.Errorf("manTerm: %q", m)
	}
	for line, want := range map[string]string{
		"[[partition]]": "partition", "[partition.memory]": "partition.memory", "[[ protect ]]": "protect",
	} {
		if m := vendorHeader.FindStringSubmatch(line); m == nil || m[1] != want {
			t.Errorf("vendorHeader(%q) = %q, want %q", line, m, want)
		}
	}
	for line, want := range map[string]string{
		`name = "qm"`: "name", `container_name = "qm"  # x`: "container_name", `"fs.mqueue.queues_max" = "4"`: `"fs.mqueue.queues_max"`,
	} {
		if m := vendorKey.FindStringSubmatch(line); m == nil || m[1] != want {
			t.Errorf("vendorKey(%q) = %q, want %q", line, m, want)
		}
	}
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- org.containers.qmd1(5)

type introspection struct {
	Interfaces []struct {
		Name    string `xml:"name,attr"`
		Methods []struct {
			Name string `xml:"name,attr"`
		} `xml:"method"`
		Signals []struct {
			Name string `xml:"name,attr"`
		} `xml:"signal"`
		Properties []struct {
			Name string `xml:"name,attr"`
			Type string `xml:"type,attr"`
		} `xml:"property"`
	} `xml:"interface"`
}

// section returns the text of the man page between the heading and the
// next heading of the same or a higher level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	level := strings.Count(strings.Fields(heading)[0], "#")
	for i, l := range lines {
		if strings.TrimSpace(l) != heading {
			continue
		}
		var b strings.Builder
		for _, m := range lines[i+1:] {
			if f := strings.Fields(m); len(f) > 0 && strings.Trim(f[0], "#") == "" && strings.Count(f[0], "#") <= level {
				break
			}
			b.WriteString(m + "\n")
		}
		return b.String()
	}
	t.Fatalf("no heading %q", heading)
	return ""
}

func TestManDBusListsEveryMember(t *testing.T) {
	doc := readRepoFile(t, manDBus)
	for iface, heading := range map[string]string{
		dbusapi.ManagerInterface:   "## THE MANAGER OBJECT",
		dbusapi.PartitionInterface: "## THE PARTITION OBJECTS",
	} {
		var in introspection
		if err := xml.Unmarshal([]byte(readRepoFile(t, "systemd/"+iface+".xml")), &in); err != nil {
			t.Fatal(err)
		}
		if len(in.Interfaces) != 1 {
			t.Fatalf("systemd/%s.xml: %d interfaces", iface, len(in.Interfaces))
		}
		sec := section(t, doc, heading)
		want := func(kind, name, sub, form string) {
			if !strings.Contains(section(t, sec, sub), form) {
				t.Errorf("%s %s.%s (systemd/%s.xml) is not documented in %s, section %q %q: add %q",
					kind, iface, name, iface, manDBus, heading, sub, form)
			}
		}
		for _, m := range in.Interfaces[0].Methods {
			want("method", m.Name, "### Methods", "**"+m.Name+"**(")
		}
		for _, s := range in.Interfaces[0].Signals {
			want("signal", s.Name, "### Signals", "**"+s.Name+"**(")
		}
		for _, p := range in.Interfaces[0].Properties {
			want("property", p.Name, "### Properties", "**"+p.Name+"** ("+p.Type)
		}
	}
	errs := section(t, doc, "## ERRORS")
	for _, e := range []string{dbusapi.ErrorNoSuchPartition, dbusapi.ErrorNotRunning, dbusapi.ErrorStartLimitHit,
		dbusapi.ErrorPodmanUnavailable, dbusapi.ErrorInvalidArgs, dbusapi.ErrorAccessDenied, dbusapi.ErrorFailed} {
		if !strings.Contains(errs, "**"+e+"**") {
			t.Errorf("D-Bus error %s is not in %s, section ERRORS", e, manDBus)
		}
	}
	inc := section(t, doc, "## INCIDENTS")
	for _, typ := range logging.Types() {
		if !strings.Contains(inc, "**"+string(typ)+"**") {
			t.Errorf("incident type %q (internal/incident) is not listed in %s, section INCIDENTS", typ, manDBus)
		}
	}
	pol := section(t, doc, "## BUS POLICY")
	for _, m := range []string{"ListPartitions", "GetPartition", "ListIncidents", dbusapi.DefaultAdminGroup} {
		if !strings.Contains(pol, m) {
			t.Errorf("%s, section BUS POLICY, does not mention %s (systemd/org.containers.qmd1.conf)", manDBus, m)
		}
	}
}

// ---- qmd(8)

func TestManQmdListsEveryCommandAndExitCode(t *testing.T) {
	doc := readRepoFile(t, manQmd)
	cmds := section(t, doc, "## COMMANDS") + section(t, doc, "## CLIENT COMMANDS")
	for _, c := range append(append([]string{"help"}, daemonCommands(t)...), ctl.Commands()...) {
		if !regexp.MustCompile(`(?m)^\*\*` + regexp.QuoteMeta(c) + `\*\*`).MatchString(cmds) {
			t.Errorf("command %q is not documented in %s (want a line starting with **%s**)", c, manQmd, c)
		}
	}
	exit := section(t, doc, "## EXIT STATUS")
	for code := ctl.ExitOK; code <= ctl.ExitStartLimitHit; code++ {
		if !strings.Contains(exit, "**"+strconv.Itoa(code)+"**\n:") {
			t.Errorf("client exit code %d is not documented in %s, section EXIT STATUS", code, manQmd)
		}
	}
	sig := section(t, doc, "## SIGNALS")
	for _, s := range []string{"SIGTERM", "SIGHUP"} {
		if !strings.Contains(sig, s) {
			t.Errorf("%s, section SIGNALS, does not mention %s", manQmd, s)
		}
	}
	// Every file make install puts in place is in FILES.
	files := section(t, doc, "## FILES")
	for _, f := range []string{"/usr/bin/qmd", "qmd.service", "/usr/share/qmd/qmd.toml", "seccomp-no-rt.json", "containers.conf",
		"org.containers.qmd1.conf", "/usr/share/dbus-1/interfaces/", "sysusers.d/qmd.conf", "tmpfiles.d/qmd.conf", "qmd.catalog",
		config.AdminFile, config.DropInDir, "/var/lib/qmd/incidents.db"} {
		if !strings.Contains(files, f) {
			t.Errorf("%s, section FILES, does not mention %s", manQmd, f)
		}
	}
}

// daemonCommands reads the verbs of the daemon-level usage text in
// internal/cli (a source file: the package needs the Podman build tags).
func daemonCommands(t *testing.T) []string {
	t.Helper()
	src := readRepoFile(t, "internal/cli/cli.go")
	start := strings.Index(src, "const usage = `")
	if start < 0 {
		t.Fatal("internal/cli/cli.go: no usage constant")
	}
	text := src[start:]
	text = text[:strings.Index(text[len("const usage = `"):], "`")+len("const usage = `")]
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^(?:Usage:)?\s+qmd ([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*)`).FindAllStringSubmatch(text, -1) {
		out = append(out, strings.Split(m[1], "|")...)
	}
	if !slices.Contains(out, "check-config") || !slices.Contains(out, "completion") {
		t.Fatalf("daemon-level commands %q: usage text of internal/cli not understood", out)
	}
	return out
}

// ---- rendering

func TestManPagesRender(t *testing.T) {
	testutil.RequireBinaries(t, "go-md2man", "man")
	pages, err := filepath.Glob(testutil.RepoFile(t, "docs/man/*.md"))
	if err != nil || len(pages) != 3 {
		t.Fatalf("man pages: %v %v", pages, err)
	}
	dir := t.TempDir()
	for _, md := range pages {
		name := strings.TrimSuffix(filepath.Base(md), ".md") // qmd.toml.5
		ext := filepath.Ext(name)                            // .5
		src, err := os.ReadFile(md)
		if err != nil {
			t.Fatal(err)
		}
		title := strings.ToUpper(strings.TrimSuffix(name, ext)) + " " + ext[1:] + " "
		if !strings.HasPrefix(string(src), "% "+title) {
			t.Errorf("%s: first line must be %q, the title of %s", md, "% "+title+"...", name)
		}
		for i, l := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
				t.Errorf("%s:%d starts with %q: roff reads it as a request; rewrap the paragraph", md, i+1, l[:1])
			}
		}
		out := filepath.Join(dir, name)
		if b, err := exec.Command("go-md2man", "-in", md, "-out", out).CombinedOutput(); err != nil {
			t.Fatalf("go-md2man %s: %v\n%s", md, err, b)
		}
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", out)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=", "LC_ALL=C.UTF-8")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		text, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings %s: %v\n%s", name, err, stderr.String())
		}
		if !strings.Contains(string(text), "NAME") || len(text) < 2000 {
			t.Errorf("man %s rendered only:\n%s", name, text)
		}
	}
}
