// Package packaging checks the Debian package and the RPM that `make deb`
// and `make rpm` built (`make check-packages`, part of `make test`): their
// file lists against what `make install` installs, their metadata and
// versions, their maintainer scripts (run against stub commands, with and
// without a systemd host), and lintian, rpmlint and shellcheck.
//
// QMD_PKGDIR names the directory with the packages; without it the tests
// skip (run `make check-packages`).
package packaging

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/testutil"
)

const pkgDirEnv = "QMD_PKGDIR"

// packages returns the .deb and the .rpm in QMD_PKGDIR.
func packages(t *testing.T) (deb, rpm string) {
	t.Helper()
	dir := os.Getenv(pkgDirEnv)
	if dir == "" {
		t.Skipf("%s is not set: run make check-packages", pkgDirEnv)
	}
	one := func(glob string) string {
		m, err := filepath.Glob(filepath.Join(dir, glob))
		if err != nil || len(m) != 1 {
			t.Fatalf("want exactly one %s in %s, found %q (make check-packages rebuilds them)", glob, dir, m)
		}
		return m[0]
	}
	return one("qmd_*.deb"), one("qmd-*.rpm")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func repo(t *testing.T) string { return testutil.RepoFile(t, "") }

// installed lists the files (and empty directories, with a trailing "/")
// that `make install` puts under DESTDIR with the given variables.
func installed(t *testing.T, vars ...string) map[string]string {
	t.Helper()
	dest := t.TempDir()
	args := append([]string{"-C", repo(t), "--no-print-directory", "install", "DESTDIR=" + dest, "PREFIX=/usr"}, vars...)
	run(t, "make", args...)
	out := map[string]string{}
	err := filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, dest)
		switch {
		case rel == "":
		case fi.IsDir():
			if ents, _ := os.ReadDir(p); len(ents) == 0 {
				out[rel+"/"] = "dir"
			}
		default:
			out[rel] = fmt.Sprintf("%04o", fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 15 {
		t.Fatalf("make install installed only %v", out)
	}
	return out
}

// compare reports the differences between the files a package has and
// the ones it should have.
func compare(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		g, inGot := got[k]
		w, inWant := want[k]
		switch {
		case !inGot:
			t.Errorf("%s lacks %s (make install installs it)", what, k)
		case !inWant:
			t.Errorf("%s has %s, which make install does not install and the package should not add", what, k)
		case w != "" && g != w:
			t.Errorf("%s: %s has mode %s, want %s", what, k, g, w)
		}
	}
}

// fromInstall turns make install's list into what a package holds: man
// pages compressed, plus the package's own files.
func fromInstall(inst map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range inst {
		if strings.HasPrefix(k, "/usr/share/man/") && !strings.HasSuffix(k, "/") {
			k += ".gz"
		}
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

var debLine = regexp.MustCompile(`^([dl-])([rwxsStT-]{9}) (\S+)\s+\d+ \S+ \S+ \./(\S*)`)

func modeOf(perm string) string {
	var m os.FileMode
	for i, c := range perm {
		if c != '-' {
			m |= 1 << uint(8-i)
		}
	}
	return fmt.Sprintf("%04o", m.Perm())
}

func TestDebInstallsWhatMakeInstallDoes(t *testing.T) {
	deb, _ := packages(t)
	want := fromInstall(installed(t, "MANDIR=/usr/share/man", "BASHCOMPDIR=/usr/share/bash-completion/completions",
		"ZSHCOMPDIR=/usr/share/zsh/vendor-completions"), map[string]string{
		"/usr/lib/systemd/system-preset/50-qmd.preset": "0644",
		"/usr/share/doc/qmd/README.md":                 "0644", // qmd.service's Documentation=
		"/usr/share/doc/qmd/copyright":                 "0644",
		"/usr/share/doc/qmd/changelog.gz":              "0644",
		"/usr/share/lintian/overrides/qmd":             "0644",
	})
	got := map[string]string{}
	dirs := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
		m := debLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("dpkg-deb -c line %q not understood", l)
		}
		if m[3] != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", m[4], m[3])
		}
		path := "/" + strings.TrimSuffix(m[4], "/")
		if m[1] == "d" {
			dirs[path] = true
			continue
		}
		got[path] = modeOf(m[2])
	}
	for d := range dirs { // empty directories
		empty := true
		for p := range got {
			if strings.HasPrefix(p, d+"/") {
				empty = false
			}
		}
		for p := range dirs {
			if strings.HasPrefix(p, d+"/") {
				empty = false
			}
		}
		if empty && d != "/" {
			got[d+"/"] = "dir"
		}
	}
	compare(t, filepath.Base(deb), got, want)
}

func TestRPMInstallsWhatMakeInstallDoes(t *testing.T) {
	_, rpm := packages(t)
	version := strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{VERSION}", rpm))
	want := fromInstall(installed(t, "MANDIR=/usr/share/man", "BASHCOMPDIR=/usr/share/bash-completion/completions",
		"ZSHCOMPDIR=/usr/share/zsh/site-functions"), map[string]string{
		"/usr/lib/systemd/system-preset/50-qmd.preset": "0644",
		"/usr/share/doc/qmd-" + version + "/README.md": "0644",
	})
	got := map[string]string{}
	out := run(t, "rpm", "-qp", "--qf", `[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]`, rpm)
	var paths []string
	modes := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("rpm --qf line %q not understood", l)
		}
		if strings.HasPrefix(f[2], "/usr/lib/.build-id") {
			continue // rpm's own build-id links
		}
		if f[1] != "root:root" {
			t.Errorf("%s is owned by %s, want root:root", f[2], f[1])
		}
		paths = append(paths, f[2])
		modes[f[2]] = f[0]
	}
	for _, p := range paths {
		m := modes[p]
		if m[0] != 'd' {
			got[p] = modeOf(m[1:])
			continue
		}
		if !slices.ContainsFunc(paths, func(q string) bool { return strings.HasPrefix(q, p+"/") }) {
			got[p+"/"] = "dir"
		}
	}
	compare(t, filepath.Base(rpm), got, want)
}

// The packages' versions are version.sh's for a commit of this checkout:
// N is that commit's count and the hash names it.
func TestVersionsMatchGit(t *testing.T) {
	deb, rpm := packages(t)
	versionRE := map[string]*regexp.Regexp{
		"deb": regexp.MustCompile(`^(?:0\.0~git|[0-9.]+\+git)([0-9]+)\.g([0-9a-f]{7,})(?:\.dirty)?$|^[0-9.]+$`),
		"rpm": regexp.MustCompile(`^(?:0|[0-9.]+)\^([0-9]+)\.g([0-9a-f]{7,})(?:\.dirty)?$|^[0-9.]+$`),
	}
	for kind, v := range map[string]string{
		"deb": strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version")),
		"rpm": strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{VERSION}", rpm)),
	} {
		m := versionRE[kind].FindStringSubmatch(v)
		if m == nil {
			t.Errorf("%s version %q is not what packaging/version.sh makes", kind, v)
			continue
		}
		if m[1] == "" {
			continue // a tag
		}
		count := strings.TrimSpace(run(t, "git", "-C", repo(t), "rev-list", "--count", m[2]))
		if strings.Contains(v, "~git") || strings.HasPrefix(v, "0^") {
			if count != m[1] {
				t.Errorf("%s version %s: commit %s is commit number %s, not %s", kind, v, m[2], count, m[1])
			}
		}
	}
	for field, want := range map[string]string{"Package": "qmd", "Section": "admin", "Depends": "podman (>= 4.0)"} {
		if v := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); v != want {
			t.Errorf("deb %s = %q, want %q", field, v, want)
		}
	}
}

// version.sh gives every later commit a higher version, in both systems'
// ordering, with and without a tag.
func TestVersionsIncreaseWithCommits(t *testing.T) {
	testutil.RequireBinaries(t, "git", "dpkg", "rpm")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(repo(t), "packaging/version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "packaging/version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	versions := func() (deb, rpm string) {
		t.Helper()
		v := func(kind string) string {
			cmd := exec.Command(filepath.Join(dir, "packaging/version.sh"), kind)
			cmd.Env = append(os.Environ(), "QMD_PKG_VERSION=")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("version.sh %s: %v", kind, err)
			}
			return strings.TrimSpace(string(out))
		}
		return v("deb"), v("rpm")
	}
	commit := func(n int) {
		git("commit", "-q", "--allow-empty", "-m", fmt.Sprint("c", n))
	}
	git("init", "-q")
	git("add", "packaging")
	commit(0)
	var debs, rpms []string
	add := func() {
		d, r := versions()
		debs, rpms = append(debs, d), append(rpms, r)
	}
	add()
	for i := 1; i <= 10; i++ { // 9 -> 10 -> 11 commits: more digits
		commit(i)
		add()
	}
	git("tag", "v1.2.0")
	add()
	commit(11)
	add()
	if err := os.WriteFile(filepath.Join(dir, "packaging/x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "packaging/x") // uncommitted: .dirty
	add()
	t.Logf("deb: %q\nrpm: %q", debs, rpms)
	for _, want := range []struct{ got, want string }{
		{debs[0], "0.0~git1."}, {rpms[0], "0^1."}, {debs[11], "1.2.0"}, {rpms[11], "1.2.0"},
		{debs[12], "1.2.0+git1."}, {rpms[12], "1.2.0^1."},
	} {
		if !strings.HasPrefix(want.got, want.want) || (!strings.HasSuffix(want.want, ".") && want.got != want.want) {
			t.Errorf("version %q, want %q...", want.got, want.want)
		}
	}
	if !strings.HasSuffix(debs[13], ".dirty") || !strings.HasSuffix(rpms[13], ".dirty") {
		t.Errorf("dirty tree: %s, %s", debs[13], rpms[13])
	}
	for i := 1; i < len(debs); i++ {
		if err := exec.Command("dpkg", "--compare-versions", debs[i], "gt", debs[i-1]).Run(); err != nil {
			t.Errorf("deb %s is not greater than %s", debs[i], debs[i-1])
		}
		out := strings.TrimSpace(run(t, "rpm", "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp("%s", "%s"))}`, rpms[i], rpms[i-1])))
		if out != "1" {
			t.Errorf("rpm %s is not greater than %s (vercmp %s)", rpms[i], rpms[i-1], out)
		}
	}
}

// ---- maintainer scripts

// stubs are the commands the scripts call; each logs its arguments.
var stubs = map[string]string{
	"systemctl": "", "deb-systemd-invoke": "", "systemd-sysusers": "", "systemd-tmpfiles": "", "journalctl": "",
	"busctl": "", "dbus-send": "",
	"deb-systemd-helper": `[ "$1 $2" = "--quiet was-enabled" ] && exit "${STUB_WAS_ENABLED:-0}"`,
	"qmd": `case $1 in
check-config) exit "${STUB_CHECK_CONFIG:-0}" ;;
list) printf 'NAME  ACTIVE  SUB      CONTAINER     PID   RESTARTS\nqm    active  running  c0ffee012345  4242  0\n\n1 partition listed.\n' ;;
status) exit 3 ;;
esac`,
	"podman": `[ "$1" = ps ] && echo c0ffee012345`,
}

type scriptRun struct {
	calls []string
	out   string
}

func (r scriptRun) has(call string) bool {
	return slices.ContainsFunc(r.calls, func(c string) bool { return c == call || strings.HasPrefix(c, call+" ") })
}

func (r scriptRun) index(call string) int {
	return slices.IndexFunc(r.calls, func(c string) bool { return c == call || strings.HasPrefix(c, call+" ") })
}

// runScript runs a maintainer script with the stubs first in PATH. With
// systemd, it runs in a mount namespace whose /run has /run/systemd/system
// and a listening /run/dbus/system_bus_socket, as on a booted systemd host;
// without, on this host as it is (PID 1 is not systemd here).
func runScript(t *testing.T, systemd bool, env []string, script string, args ...string) scriptRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	logf := filepath.Join(dir, "calls")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fail := map[string]bool{}
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "STUB_FAIL="); ok {
			for _, n := range strings.Fields(v) {
				fail[n] = true
			}
		}
	}
	for name, body := range stubs {
		s := "#!/bin/sh\necho \"" + name + " $*\" >>\"$STUB_LOG\"\n"
		if fail[name] {
			s += "exit 1\n"
		}
		s += body + "\nexit 0\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var cmd *exec.Cmd
	if systemd {
		testutil.RequireRoot(t)
		testutil.RequireBinaries(t, "unshare")
		run := filepath.Join(dir, "run")
		for _, d := range []string{"systemd/system", "dbus"} {
			if err := os.MkdirAll(filepath.Join(run, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		l, err := net.Listen("unix", filepath.Join(run, "dbus/system_bus_socket"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cmd = exec.Command("unshare", append([]string{"-m", "sh", "-c", `mount --bind "$0" /run && exec sh -e "$@"`, run, script}, args...)...)
	} else {
		cmd = exec.Command("sh", append([]string{"-e", script}, args...)...)
	}
	cmd.Env = append([]string{"PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin", "STUB_LOG=" + logf, "LC_ALL=C"}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(script), strings.Join(args, " "), err, out)
	}
	var r scriptRun
	r.out = string(out)
	if b, err := os.ReadFile(logf); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			r.calls = append(r.calls, sc.Text())
		}
	}
	t.Logf("%s %s (systemd %v, %q):\n  %s\n%s", filepath.Base(script), strings.Join(args, " "), systemd, env,
		strings.Join(r.calls, "\n  "), r.out)
	return r
}

// setupCalls are what both packages do after installing their files.
var setupCalls = []string{"systemd-sysusers", "systemd-tmpfiles --create qmd.conf", "journalctl --update-catalog"}

func wantCalls(t *testing.T, what string, r scriptRun, want []string, never []string) {
	t.Helper()
	for _, c := range want {
		if !r.has(c) {
			t.Errorf("%s: did not call %q; calls:\n  %s", what, c, strings.Join(r.calls, "\n  "))
		}
	}
	for _, c := range never {
		if r.has(c) {
			t.Errorf("%s: called %q; calls:\n  %s", what, c, strings.Join(r.calls, "\n  "))
		}
	}
}

// neverStop lists the calls that would stop or restart the partition or
// stop qmd the hard way.
var neverStop = []string{"qmd stop", "podman stop", "systemctl stop qmd.service", "deb-systemd-invoke stop qmd.service",
	"systemctl restart qmd.service", "deb-systemd-invoke restart qmd.service", "systemctl kill"}

func debScripts(t *testing.T) string {
	t.Helper()
	deb, _ := packages(t)
	dir := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, dir)
	return dir
}

func TestDebScripts(t *testing.T) {
	dir := debScripts(t)
	postinst, prerm, postrm := filepath.Join(dir, "postinst"), filepath.Join(dir, "prerm"), filepath.Join(dir, "postrm")
	const reload = "busctl --system --timeout=10 call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig"

	t.Run("install", func(t *testing.T) {
		r := runScript(t, true, nil, postinst, "configure", "")
		wantCalls(t, "first installation", r, append(setupCalls, reload, "deb-systemd-helper enable qmd.service",
			"systemctl --system daemon-reload", "qmd check-config", "deb-systemd-invoke start qmd.service"), neverStop)
	})
	t.Run("install-invalid-config", func(t *testing.T) {
		r := runScript(t, true, []string{"STUB_CHECK_CONFIG=1"}, postinst, "configure", "")
		wantCalls(t, "first installation, invalid configuration", r, []string{"deb-systemd-helper enable qmd.service"},
			append([]string{"deb-systemd-invoke start"}, neverStop...))
		if !strings.Contains(r.out, "qmd check-config") {
			t.Errorf("no hint to run qmd check-config: %s", r.out)
		}
	})
	t.Run("upgrade", func(t *testing.T) {
		// The old prerm, then the new postinst.
		r := runScript(t, true, nil, prerm, "upgrade", "0.0~git1.gaaaaaaa")
		if len(r.calls) != 0 {
			t.Errorf("prerm upgrade called %q; want nothing", r.calls)
		}
		// An administrator disabled qmd: the upgrade keeps it disabled.
		r = runScript(t, true, []string{"STUB_WAS_ENABLED=1"}, postinst, "configure", "0.0~git1.gaaaaaaa")
		wantCalls(t, "upgrade", r, append(setupCalls, reload, "deb-systemd-helper update-state qmd.service",
			"deb-systemd-invoke try-restart qmd.service"),
			append([]string{"deb-systemd-invoke start", "deb-systemd-helper enable", "qmd check-config"}, neverStop...))
	})
	t.Run("remove", func(t *testing.T) {
		r := runScript(t, true, nil, prerm, "remove")
		wantCalls(t, "removal", r, []string{"deb-systemd-invoke stop qmd.service"},
			[]string{"qmd stop", "qmd list", "podman stop", "systemctl disable"})
		r = runScript(t, true, nil, postrm, "remove")
		wantCalls(t, "removal (postrm)", r, []string{"deb-systemd-helper mask qmd.service", "systemctl --system daemon-reload",
			"journalctl --update-catalog", reload}, neverStop)
	})
	t.Run("remove-stop-partition", func(t *testing.T) {
		r := runScript(t, true, []string{"QMD_STOP_PARTITION_ON_REMOVE=1"}, prerm, "remove")
		wantCalls(t, "removal with QMD_STOP_PARTITION_ON_REMOVE=1", r,
			[]string{"qmd list", "qmd stop qm", "qmd status qm", "deb-systemd-invoke stop qmd.service"}, []string{"podman stop"})
		if r.index("qmd stop qm") > r.index("deb-systemd-invoke stop qmd.service") {
			t.Errorf("qmd was stopped before the partition: %q", r.calls)
		}
	})
	t.Run("purge", func(t *testing.T) {
		root := t.TempDir()
		db := filepath.Join(root, "var/lib/qmd/incidents.db")
		if err := os.MkdirAll(filepath.Dir(db), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(db, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := runScript(t, false, []string{"DPKG_ROOT=" + root}, postrm, "purge")
		wantCalls(t, "purge", r, []string{"deb-systemd-helper purge qmd.service", "deb-systemd-helper unmask qmd.service"}, neverStop)
		if _, err := os.Stat(filepath.Dir(db)); !os.IsNotExist(err) {
			t.Errorf("purge left %s: %v", filepath.Dir(db), err)
		}
	})
	// A build host or chroot: no systemd as PID 1 (this host), failing
	// helpers; the scripts still succeed and start or stop nothing.
	t.Run("no-systemd", func(t *testing.T) {
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			t.Skip("this host runs systemd")
		}
		env := []string{"STUB_FAIL=systemd-sysusers systemd-tmpfiles journalctl busctl dbus-send"}
		r := runScript(t, false, env, postinst, "configure", "")
		wantCalls(t, "installation without systemd", r, append(setupCalls, "deb-systemd-helper enable qmd.service"),
			append([]string{"systemctl", "deb-systemd-invoke"}, neverStop...))
		r = runScript(t, false, env, prerm, "remove")
		wantCalls(t, "removal without systemd", r, nil, append([]string{"systemctl", "deb-systemd-invoke"}, neverStop...))
		runScript(t, false, env, postrm, "remove")
		runScript(t, false, env, postrm, "purge")
	})
}

// rpmScripts returns the package's scriptlets, macros expanded.
func rpmScripts(t *testing.T) map[string]string {
	t.Helper()
	_, rpm := packages(t)
	dir := t.TempDir()
	out := map[string]string{}
	for _, tag := range []string{"PREIN", "POSTIN", "PREUN", "POSTUN"} {
		body := run(t, "rpm", "-qp", "--qf", "%{"+tag+"}", rpm)
		if body == "(none)" {
			continue
		}
		if prog := strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{"+tag+"PROG}", rpm)); prog != "/bin/sh" {
			t.Errorf("%s runs with %s, want /bin/sh", tag, prog)
		}
		p := filepath.Join(dir, strings.ToLower(tag))
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		out[tag] = p
	}
	return out
}

func TestRPMScripts(t *testing.T) {
	s := rpmScripts(t)
	for _, tag := range []string{"POSTIN", "PREUN", "POSTUN"} {
		if s[tag] == "" {
			t.Fatalf("the rpm has no %s scriptlet", tag)
		}
	}
	const reload = "busctl --system --timeout=10 call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig"
	t.Run("install", func(t *testing.T) {
		r := runScript(t, true, nil, s["POSTIN"], "1")
		wantCalls(t, "first installation", r, append(setupCalls, reload, "systemctl --no-reload preset qmd.service"),
			append([]string{"systemctl start", "systemctl enable"}, neverStop...))
	})
	t.Run("upgrade", func(t *testing.T) {
		// rpm -U: new %post 2, old %preun 1, old %postun 1.
		r := runScript(t, true, nil, s["POSTIN"], "2")
		wantCalls(t, "upgrade (post)", r, append(setupCalls, reload), append([]string{"systemctl --no-reload preset"}, neverStop...))
		r = runScript(t, true, nil, s["PREUN"], "1")
		if len(r.calls) != 0 {
			t.Errorf("%%preun 1 called %q; want nothing", r.calls)
		}
		r = runScript(t, true, nil, s["POSTUN"], "1")
		wantCalls(t, "upgrade (postun)", r, []string{"systemctl daemon-reload", "systemctl try-restart qmd.service"}, neverStop)
	})
	t.Run("remove", func(t *testing.T) {
		r := runScript(t, true, nil, s["PREUN"], "0")
		wantCalls(t, "removal", r, []string{"systemctl --no-reload disable qmd.service", "systemctl stop qmd.service"},
			[]string{"qmd stop", "qmd list", "podman stop"})
		r = runScript(t, true, nil, s["POSTUN"], "0")
		wantCalls(t, "removal (postun)", r, []string{"systemctl daemon-reload", "journalctl --update-catalog", reload},
			append([]string{"systemctl try-restart"}, neverStop...))
	})
	t.Run("remove-stop-partition", func(t *testing.T) {
		r := runScript(t, true, []string{"QMD_STOP_PARTITION_ON_REMOVE=1"}, s["PREUN"], "0")
		wantCalls(t, "removal with QMD_STOP_PARTITION_ON_REMOVE=1", r,
			[]string{"qmd list", "qmd stop qm", "qmd status qm", "systemctl stop qmd.service"}, []string{"podman stop"})
		if r.index("qmd stop qm") > r.index("systemctl stop qmd.service") {
			t.Errorf("qmd was stopped before the partition: %q", r.calls)
		}
	})
	t.Run("no-systemd", func(t *testing.T) {
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			t.Skip("this host runs systemd")
		}
		env := []string{"STUB_FAIL=systemd-sysusers systemd-tmpfiles journalctl busctl dbus-send systemctl"}
		r := runScript(t, false, env, s["POSTIN"], "1")
		wantCalls(t, "installation without systemd", r, setupCalls, append([]string{"systemctl start"}, neverStop...))
		r = runScript(t, false, env, s["PREUN"], "0")
		wantCalls(t, "removal without systemd", r, nil, append([]string{"systemctl stop"}, neverStop[:2]...))
		runScript(t, false, env, s["POSTUN"], "0")
		runScript(t, false, env, s["POSTUN"], "1")
	})
}

// ---- linters

// explained returns the tags packaging/README.md explains (in backquotes).
func explained(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo(t), "packaging/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLintian(t *testing.T) {
	deb, _ := packages(t)
	testutil.RequireBinaries(t, "lintian")
	cmd := exec.Command("lintian", "--info", "--pedantic", "--show-overrides", deb)
	out, _ := cmd.CombinedOutput() // exit status: tags found; judged below
	t.Logf("lintian:\n%s", out)
	readme := explained(t)
	tagRE := regexp.MustCompile(`^([EWIPXO]): qmd(?: \S+)?: (\S+)`)
	for _, l := range strings.Split(string(out), "\n") {
		m := tagRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		switch {
		case m[1] == "E" || m[1] == "W":
			t.Errorf("lintian: %s", l)
		case !strings.Contains(readme, "`"+m[2]+"`"):
			t.Errorf("lintian tag %s (%s) is not explained in packaging/README.md", m[2], l)
		}
	}
	if strings.Contains(string(out), "internal error") || strings.Contains(string(out), "Traceback") {
		t.Errorf("lintian failed:\n%s", out)
	}
}

func TestRPMLint(t *testing.T) {
	_, rpm := packages(t)
	testutil.RequireBinaries(t, "rpmlint")
	cfg := filepath.Join(repo(t), "packaging/rpm/rpmlint.toml")
	spec := filepath.Join(repo(t), "packaging/rpm/qmd.spec")
	out, err := exec.Command("rpmlint", "-c", cfg, spec, rpm).CombinedOutput()
	t.Logf("rpmlint:\n%s", out)
	if err != nil || !strings.Contains(string(out), "0 errors, 0 warnings") {
		t.Errorf("rpmlint reports problems (%v):\n%s", err, out)
	}
	// Every filter is explained in packaging/README.md too.
	readme := explained(t)
	cfgText, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+"([a-z0-9%-]+)`).FindAllStringSubmatch(string(cfgText), -1) {
		if !strings.Contains(readme, "`"+m[1]+"`") {
			t.Errorf("rpmlint filter %s is not explained in packaging/README.md", m[1])
		}
	}
}

func TestShellcheck(t *testing.T) {
	testutil.RequireBinaries(t, "shellcheck")
	scripts := []string{"packaging/version.sh", "packaging/debian/build.sh", "packaging/rpm/build.sh",
		"packaging/debian/postinst", "packaging/debian/prerm", "packaging/debian/postrm"}
	for i, s := range scripts {
		scripts[i] = filepath.Join(repo(t), s)
	}
	args := append([]string{"-x"}, scripts...)
	if out, err := exec.Command("shellcheck", args...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
	if os.Getenv(pkgDirEnv) == "" {
		return
	}
	// The RPM's scriptlets as rpm runs them (macros expanded).
	for tag, p := range rpmScripts(t) {
		if out, err := exec.Command("shellcheck", "-s", "sh", p).CombinedOutput(); err != nil {
			t.Errorf("shellcheck of the rpm's %s scriptlet: %v\n%s", tag, err, out)
		}
	}
}
