package quadlet

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/config"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := Main(args, &out, &errb)
	return rc, out.String(), errb.String()
}

// TestMainWritesLoadableDropIn: the default flow writes the drop-in
// atomically, never replaces one without --force, and the file loads.
func TestMainWritesLoadableDropIn(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "qmd.toml.d", "50-qm-quadlet.toml") // the directory does not exist yet
	rc, _, stderr := run("--output", out, "testdata/qm/qm.container")
	if rc != 0 {
		t.Fatalf("rc %d: %s", rc, stderr)
	}
	if !strings.Contains(stderr, "not mapped") || !strings.Contains(stderr, "AllowedCPUs=1") || !strings.Contains(stderr, "wrote "+out) {
		t.Errorf("stderr must list what is not mapped and say what was written:\n%s", stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("output %v %v", fi, err)
	}
	first, _ := os.ReadFile(out)
	if _, err := config.Load([]string{"../../configs/qmd.toml", out}); err != nil {
		t.Fatalf("written drop-in does not load: %v", err)
	}

	rc, _, stderr = run("--output", out, "testdata/qm/qm.container", "testdata/qm/qm.container.d/20-sound.conf")
	if rc != 1 || !strings.Contains(stderr, "exists; use --force") {
		t.Errorf("existing output must not be replaced: rc %d %s", rc, stderr)
	}
	if now, _ := os.ReadFile(out); !bytes.Equal(now, first) {
		t.Errorf("the existing file changed")
	}
	rc, _, stderr = run("--output", out, "--force", "testdata/qm/qm.container", "testdata/qm/qm.container.d/20-sound.conf")
	if rc != 0 {
		t.Fatalf("--force: rc %d %s", rc, stderr)
	}
	if now, _ := os.ReadFile(out); bytes.Equal(now, first) || !strings.Contains(string(now), "20-sound.conf") {
		t.Errorf("--force did not replace the file")
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
}

func TestMainPrintAndCheck(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.toml")
	rc, stdout, stderr := run("--output", "-", "testdata/qm/qm.container")
	if rc != 0 || !strings.Contains(stdout, "[[partition]]\nname = \"qm\"") || !strings.Contains(stderr, "not mapped") {
		t.Errorf("--output -: rc %d\n%s\n%s", rc, stdout, stderr)
	}
	if _, err := config.Parse("stdout", []byte(stdout)); err != nil {
		t.Errorf("printed drop-in does not load: %v", err)
	}
	rc, stdout, stderr = run("--check", "--output", out, "testdata/qm/qm.container")
	if rc != 0 {
		t.Fatalf("--check: rc %d %s", rc, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("--check wrote %s", out)
	}
	for _, w := range []string{`rootfs = "/usr/lib/qm/rootfs"`, "from testdata/qm/qm.container:40 [Container] Rootfs=${ROOTFS}", "keys mapped", "settings not mapped"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("--check output lacks %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stderr, "AllowedCPUs=1") {
		t.Errorf("--check must report what is not mapped:\n%s", stderr)
	}
}

// TestMainMalformedInput: clear errors naming file:line, exit 1.
func TestMainMalformedInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "qm.container")
	if err := os.WriteFile(bad, []byte("[Container]\nRootfs=/r\nnot an assignment\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, stderr := run("--output", "-", bad)
	if rc != 1 || !strings.Contains(stderr, bad+":3: ") {
		t.Errorf("rc %d, stderr %q", rc, stderr)
	}
	drop := filepath.Join(dir, "x.conf")
	if err := os.WriteFile(drop, []byte("[Container]\nExec=/init\n[Broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[Container]\nRootfs=/r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, stderr = run("--output", "-", bad, drop)
	if rc != 1 || !strings.Contains(stderr, drop+":3: invalid section header") {
		t.Errorf("rc %d, stderr %q", rc, stderr)
	}
	for _, args := range [][]string{
		{"x.conf"},
		{"qm.container", "notes.txt"},
		{"--bogus"},
	} {
		if rc, _, stderr := run(args...); rc != 2 {
			t.Errorf("%v: rc %d (%s), want 2", args, rc, stderr)
		}
	}
	if rc, _, stderr := run("--output", "-", filepath.Join(dir, "missing.container")); rc != 1 || !strings.Contains(stderr, "missing.container") {
		t.Errorf("missing file: rc %d %s", rc, stderr)
	}
}

// TestDefaultInputs: without arguments the import reads the files Quadlet
// would: the unit from the first directory that has it, the drop-ins of
// qm.container.d/ and container.d/ with the first of a name winning.
func TestDefaultInputs(t *testing.T) {
	root := t.TempDir()
	runDir, etc, usr := filepath.Join(root, "run"), filepath.Join(root, "etc"), filepath.Join(root, "usr")
	files := map[string]string{
		filepath.Join(usr, "qm.container"):                "[Container]\nRootfs=/usr/lib/qm/rootfs\n",
		filepath.Join(usr, "qm.container.d", "10-a.conf"): "[Container]\nNetwork=host\n",
		filepath.Join(usr, "qm.container.d", "20-b.conf"): "[Container]\nReadOnly=true\n",
		filepath.Join(etc, "qm.container.d", "10-a.conf"): "[Container]\nNetwork=none\n",
		filepath.Join(etc, "container.d", "05-all.conf"):  "[Container]\nAddDevice=-/dev/fuse\n",
		filepath.Join(etc, "container.d", "20-b.conf"):    "[Container]\nReadOnly=false\n", // loses to qm.container.d
		filepath.Join(etc, "qm.container.d", "notes.txt"): "ignored",
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	saved := UnitDirs
	UnitDirs = []string{runDir, etc, usr}
	defer func() { UnitDirs = saved }()
	got, err := DefaultInputs()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(usr, "qm.container"),
		filepath.Join(etc, "container.d", "05-all.conf"),
		filepath.Join(etc, "qm.container.d", "10-a.conf"),
		filepath.Join(usr, "qm.container.d", "20-b.conf"),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("inputs:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rc, stdout, stderr := run("--output", "-")
	if rc != 0 || !strings.Contains(stdout, `network = "none"`) || !strings.Contains(stdout, `read_only = true`) {
		t.Errorf("rc %d\n%s\n%s", rc, stdout, stderr)
	}
	UnitDirs = []string{runDir}
	if rc, _, stderr := run(); rc != 1 || !strings.Contains(stderr, "is containers/qm installed") {
		t.Errorf("without qm: rc %d %s", rc, stderr)
	}
}
