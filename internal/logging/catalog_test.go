package logging

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/incident"
)

const catalogPath = "../../systemd/qmd.catalog"

// incidentTypes reads the Type constants declared in internal/incident,
// so that a new constant without a MESSAGE_ID fails this package's tests.
func incidentTypes(t *testing.T) map[incident.Type]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../incident/incident.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[incident.Type]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Type" {
				continue
			}
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("incident.%s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[incident.Type(v)] = name.Name
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no incident.Type constants found")
	}
	return out
}

var messageIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestEveryIncidentTypeHasMessageID(t *testing.T) {
	declared := incidentTypes(t)
	seen := map[string]incident.Type{}
	for typ, name := range declared {
		id, ok := MessageID(typ)
		if !ok {
			t.Errorf("incident.%s (%q) has no MESSAGE_ID", name, typ)
			continue
		}
		if !messageIDPattern.MatchString(id) {
			t.Errorf("%s: MESSAGE_ID %q is not 32 lower-case hex digits", typ, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share MESSAGE_ID %s", typ, other, id)
		}
		seen[id] = typ
	}
	list := Types()
	if len(list) != len(declared) || len(messageIDs) != len(declared) {
		t.Errorf("Types() has %d, the table %d, internal/incident declares %d", len(list), len(messageIDs), len(declared))
	}
	for _, typ := range list {
		if _, ok := declared[typ]; !ok {
			t.Errorf("Types() lists %q, which internal/incident does not declare", typ)
		}
	}
	if _, ok := MessageID("no-such-type"); ok {
		t.Error("MessageID of an unknown type")
	}
}

type catalogEntry struct {
	headers map[string]string
	body    string
}

// parseCatalog reads a journal catalog: "-- <id> [lang]" starts an entry,
// "Key: value" headers follow up to a blank line, then free text.
func parseCatalog(t *testing.T, path string) map[string]catalogEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string]catalogEntry{}
	var id string
	var cur catalogEntry
	inHeaders := false
	flush := func() {
		if id != "" {
			cur.body = strings.TrimSpace(cur.body)
			entries[id] = cur
		}
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "-- "):
			flush()
			fields := strings.Fields(strings.TrimPrefix(line, "-- "))
			if len(fields) == 0 || !messageIDPattern.MatchString(fields[0]) {
				t.Fatalf("%s:%d: bad entry header %q", path, n, line)
			}
			id = fields[0]
			if _, dup := entries[id]; dup {
				t.Errorf("%s:%d: duplicate entry %s", path, n, id)
			}
			cur = catalogEntry{headers: map[string]string{}}
			inHeaders = true
		case id == "" && (line == "" || strings.HasPrefix(line, "#")):
		case id == "":
			t.Fatalf("%s:%d: text before the first entry: %q", path, n, line)
		case inHeaders && line == "":
			inHeaders = false
		case inHeaders:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("%s:%d: bad header %q", path, n, line)
			}
			cur.headers[k] = strings.TrimSpace(v)
		default:
			cur.body += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	return entries
}

func TestCatalog(t *testing.T) {
	entries := parseCatalog(t, catalogPath)
	byID := map[string]incident.Type{}
	for _, typ := range Types() {
		id, _ := MessageID(typ)
		byID[id] = typ
		e, ok := entries[id]
		if !ok {
			t.Errorf("%s: no catalog entry for MESSAGE_ID %s", typ, id)
			continue
		}
		if e.headers["Subject"] == "" {
			t.Errorf("%s: catalog entry without Subject", typ)
		}
		if e.headers["Defined-By"] != "qmd" {
			t.Errorf("%s: Defined-By = %q", typ, e.headers["Defined-By"])
		}
		if e.headers["Support"] == "" {
			t.Errorf("%s: catalog entry without Support", typ)
		}
		if len(e.body) < 80 {
			t.Errorf("%s: catalog text too short: %q", typ, e.body)
		}
		// Only substitute fields qmd sends.
		for _, m := range regexp.MustCompile(`@([A-Za-z0-9_]+)@`).FindAllStringSubmatch(e.headers["Subject"]+e.body, -1) {
			if !strings.HasPrefix(m[1], "QMD_") {
				t.Errorf("%s: substitution of unknown field %s", typ, m[0])
			}
		}
	}
	for id := range entries {
		if _, ok := byID[id]; !ok {
			t.Errorf("catalog entry %s matches no incident type", id)
		}
	}
}

// journalctl itself accepts the catalog and indexes every entry.
func TestCatalogJournalctl(t *testing.T) {
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip("journalctl not installed")
	}
	root := t.TempDir()
	dir := filepath.Join(root, "usr/lib/systemd/catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "qmd.catalog"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(journalctl, "--root="+root, "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command(journalctl, "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for _, typ := range Types() {
		id, _ := MessageID(typ)
		if !strings.Contains(string(out), id+" qmd: ") {
			t.Errorf("%s: %s not in journalctl --list-catalog:\n%s", typ, id, out)
		}
	}
}
