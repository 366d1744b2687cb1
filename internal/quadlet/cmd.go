package quadlet

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Where containers/qm installs its Quadlet file (rpm/qm.spec:
// %{_datadir}/containers/systemd/qm.container) and where its sub-packages
// put drop-ins (%{_sysconfdir}/containers/systemd/qm.container.d/). Quadlet
// searches these directories in this order; the first file of a name wins.
var (
	UnitDirs      = []string{"/run/containers/systemd", "/etc/containers/systemd", "/usr/share/containers/systemd"}
	DefaultUnit   = "qm.container"
	DefaultOutput = "/etc/qmd/qmd.toml.d/50-qm-quadlet.toml"
)

const usage = `Usage: qmd import-quadlet [--output FILE|-] [--force] [--check] [--partition NAME] [FILE.container [DROPIN.conf...]]

Reads containers/qm's Quadlet file and its drop-ins and writes the equivalent
qmd drop-in. Without files: qm.container from %s
with the drop-ins of qm.container.d/ and container.d/ there (Quadlet's order).
With only FILE.container: its drop-ins in FILE.container.d/ next to it.
Settings qmd cannot take over are listed with the reason (stderr and a
comment block in the output).

  --output FILE   where to write (default %s; "-" prints it)
  --force         replace an existing output file
  --check         only report what would be mapped; write nothing
  --partition N   the qmd partition to configure (default: the file's name, "qm")
`

// Main runs `qmd import-quadlet` with args (after the subcommand) and
// returns the exit code: 0 done, 1 failed, 2 usage.
func Main(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("import-quadlet", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprintf(stderr, usage, strings.Join(UnitDirs, ", "), DefaultOutput) }
	output := fset.String("output", DefaultOutput, "")
	force := fset.Bool("force", false, "")
	check := fset.Bool("check", false, "")
	partition := fset.String("partition", "", "")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	paths, err := inputs(fset.Args())
	if err != nil {
		fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
		if fset.NArg() == 0 {
			return 1 // qm is not installed here
		}
		return 2
	}
	var files []*File
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
			return 1
		}
		f, err := Parse(p, data)
		if err != nil {
			fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
			return 1
		}
		files = append(files, f)
	}
	res, err := Convert(files, Options{Partition: *partition})
	if err != nil {
		fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
		return 1
	}
	report(stderr, res)
	if *check {
		fmt.Fprintf(stdout, "%s -> partition %q:\n", strings.Join(res.Sources, ", "), res.Partition)
		for _, m := range res.Mapped {
			var from []string
			for _, e := range m.From {
				from = append(from, fmt.Sprintf("%s [%s] %s=%s", e.Where(), e.Section, e.Key, e.Value))
			}
			if len(from) == 0 {
				from = []string{"(Quadlet's default)"}
			}
			fmt.Fprintf(stdout, "  %s = %s\n      from %s\n", m.Key, m.Value, strings.Join(from, "\n           "))
		}
		fmt.Fprintf(stdout, "%d keys mapped, %d settings not mapped, %d not needed\n", len(res.Mapped), len(res.Unmapped), len(res.Ignored))
		return 0
	}
	if *output == "-" {
		if _, err := stdout.Write(res.TOML); err != nil {
			fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
			return 1
		}
		return 0
	}
	if err := WriteFile(*output, res.TOML, *force); err != nil {
		fmt.Fprintf(stderr, "qmd import-quadlet: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s (%d keys); check it with: qmd check-config\n", *output, len(res.Mapped))
	return 0
}

func report(w io.Writer, res *Result) {
	if len(res.Unmapped) > 0 {
		fmt.Fprintf(w, "not mapped (qmd has no equivalent or the value needs a decision):\n")
		for _, f := range res.Unmapped {
			fmt.Fprintf(w, "  %s: %s\n      %s\n", f.Where(), f.What, f.Reason)
		}
	}
	if len(res.Ignored) > 0 {
		fmt.Fprintf(w, "not needed under qmd:\n")
		for _, f := range res.Ignored {
			fmt.Fprintf(w, "  %s: %s\n      %s\n", f.Where(), f.What, f.Reason)
		}
	}
}

// inputs resolves the files to read, the .container first.
func inputs(args []string) ([]string, error) {
	if len(args) == 0 {
		return DefaultInputs()
	}
	if filepath.Ext(args[0]) != ".container" {
		return nil, fmt.Errorf("%s: the first file must be the Quadlet .container file", args[0])
	}
	for _, a := range args[1:] {
		if filepath.Ext(a) != ".conf" {
			return nil, fmt.Errorf("%s: a drop-in ends in .conf", a)
		}
	}
	if len(args) > 1 {
		return args, nil
	}
	drop, err := dropIns([]string{args[0] + ".d"})
	if err != nil {
		return nil, err
	}
	return append(args[:1:1], drop...), nil
}

// DefaultInputs finds qm.container and its drop-ins as Quadlet does.
func DefaultInputs() ([]string, error) {
	var unit string
	for _, d := range UnitDirs {
		p := filepath.Join(d, DefaultUnit)
		if _, err := os.Stat(p); err == nil {
			unit = p
			break
		}
	}
	if unit == "" {
		return nil, fmt.Errorf("no %s in %s: is containers/qm installed? Name the file", DefaultUnit, strings.Join(UnitDirs, ", "))
	}
	// The drop-in directory of the unit beats the one of all .container
	// units; within each, the first directory that has a name wins.
	var dirs []string
	for _, sub := range []string{DefaultUnit + ".d", "container.d"} {
		for _, d := range UnitDirs {
			dirs = append(dirs, filepath.Join(d, sub))
		}
	}
	drop, err := dropIns(dirs)
	if err != nil {
		return nil, err
	}
	return append([]string{unit}, drop...), nil
}

// dropIns lists *.conf of the directories, the first of a name winning,
// sorted by name (Quadlet's merge order).
func dropIns(dirs []string) ([]string, error) {
	byName := map[string]string{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() || filepath.Ext(e.Name()) != ".conf" {
				continue
			}
			if _, seen := byName[e.Name()]; !seen {
				byName[e.Name()] = filepath.Join(d, e.Name())
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out, nil
}

// WriteFile writes data to path atomically: a temporary file in the same
// directory, synced, then linked (no --force: fails if path exists, even
// when another writer races) or renamed over path (--force).
func WriteFile(path string, data []byte, force bool) error {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s exists; use --force to replace it (or --output - to print)", path)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a link or a failure; gone after a rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; use --force to replace it (or --output - to print)", path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
