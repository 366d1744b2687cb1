package quadlet

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containers/qmd/internal/config"
)

// Finding is a Quadlet setting the import does not carry over, and why.
type Finding struct {
	File   string
	Line   int    // 0 for a setting that is absent
	What   string // "[Service] AllowedCPUs=1"
	Reason string
}

// Where is file:line, or the file for a setting that is absent.
func (f Finding) Where() string {
	if f.Line == 0 {
		return f.File
	}
	return fmt.Sprintf("%s:%d", f.File, f.Line)
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Where(), f.What, f.Reason) }

// Mapped is one key of the generated drop-in and where it came from.
type Mapped struct {
	Key   string // qmd key below [[partition]], e.g. "memory.max"
	Value string // as written in TOML
	From  []Entry
	Note  string
}

// Result is the outcome of Convert.
type Result struct {
	Partition string
	Sources   []string
	Mapped    []Mapped
	// Unmapped settings need a decision: qmd has no equivalent, or the
	// value cannot be expressed. Ignored ones have no role under qmd.
	Unmapped []Finding
	Ignored  []Finding
	// TOML is the drop-in; it loads with qmd's configuration loader and
	// passes its validation.
	TOML []byte
}

// Options of Convert.
type Options struct {
	// Partition is the qmd partition the drop-in configures; "" means the
	// name of the .container file ("qm" for qm.container).
	Partition string
}

// Convert maps a Quadlet .container file and its drop-ins (in the order
// Quadlet applies them) to a qmd drop-in. The first file is the
// .container.
func Convert(files []*File, opt Options) (*Result, error) {
	if len(files) == 0 {
		return nil, errors.New("no Quadlet file")
	}
	main := files[0].Path
	unitName := strings.TrimSuffix(filepath.Base(main), filepath.Ext(main))
	name := opt.Partition
	if name == "" {
		name = unitName
	}
	c := &converter{
		unitName: unitName,
		dir:      filepath.Dir(main),
		items:    map[string]*item{},
		handled:  map[string]bool{},
		res:      &Result{Partition: name},
	}
	for _, f := range files {
		c.entries = append(c.entries, f.Entries...)
		c.res.Sources = append(c.res.Sources, f.Path)
	}
	if _, err := config.Parse("partition name", []byte("[[partition]]\nname = "+tomlString(name)+"\n")); err != nil {
		return nil, fmt.Errorf("partition name %q (from %s): %w; choose one with --partition", name, filepath.Base(main), err)
	}
	c.serviceEnv()
	c.container()
	c.service()
	c.rest()
	if err := c.finish(); err != nil {
		return nil, err
	}
	return c.res, nil
}

type converter struct {
	unitName string
	dir      string // of the .container file: relative volume sources
	entries  []Entry
	env      map[string]string // [Service] Environment=, for ${VAR}
	items    map[string]*item
	handled  map[string]bool // "Section/Key" the converter dealt with
	res      *Result
	// PodmanArgs --memory-swap needs the final --memory.
	swapTotal *Entry
	swapValue string
	// Capabilities from DropCapability=/AddCapability= and PodmanArgs.
	drops, adds       []string
	dropFrom, addFrom []Entry
}

// all returns the effective assignments of a list-valued key: an empty
// assignment clears the ones before it.
func (c *converter) all(section, key string) []Entry {
	c.handled[section+"/"+key] = true
	var out []Entry
	for _, e := range c.entries {
		if e.Section == section && e.Key == key {
			if e.Value == "" {
				out = nil
			} else {
				out = append(out, e)
			}
		}
	}
	return out
}

// last returns the effective assignment of a single-valued key; an empty
// last assignment means unset.
func (c *converter) last(section, key string) (Entry, bool) {
	c.handled[section+"/"+key] = true
	var last Entry
	found := false
	for _, e := range c.entries {
		if e.Section == section && e.Key == key {
			last, found = e, true
		}
	}
	if !found || last.Value == "" {
		return Entry{}, false
	}
	return last, true
}

func (c *converter) set(table, key, val string, note string, from ...Entry) {
	it := &item{table: table, key: key, val: val, note: note, from: from}
	c.items[it.path()] = it
}

func (c *converter) unmapped(e Entry, format string, a ...any) {
	c.res.Unmapped = append(c.res.Unmapped, Finding{File: e.File, Line: e.Line, What: what(e), Reason: fmt.Sprintf(format, a...)})
}

func (c *converter) ignored(e Entry, format string, a ...any) {
	c.res.Ignored = append(c.res.Ignored, Finding{File: e.File, Line: e.Line, What: what(e), Reason: fmt.Sprintf(format, a...)})
}

// sortFindings orders findings as the files and lines they come from.
func (c *converter) sortFindings(fs []Finding) {
	idx := map[string]int{}
	for i, s := range c.res.Sources {
		idx[s] = i
	}
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if idx[a.File] != idx[b.File] {
			return idx[a.File] < idx[b.File]
		}
		return a.Line < b.Line
	})
}

func what(e Entry) string { return fmt.Sprintf("[%s] %s=%s", e.Section, e.Key, e.Value) }

// specifiers systemd resolves in a system unit named NAME.service.
func (c *converter) specifier(r byte) (string, bool) {
	switch r {
	case '%':
		return "%", true
	case 'n':
		return c.unitName + ".service", true
	case 'N', 'p', 'P':
		return c.unitName, true
	case 'i', 'I', 'j', 'J':
		return "", true
	case 't':
		return "/run", true
	case 'S':
		return "/var/lib", true
	case 'C':
		return "/var/cache", true
	case 'L':
		return "/var/log", true
	case 'E':
		return "/etc", true
	case 'T':
		return "/tmp", true
	case 'V':
		return "/var/tmp", true
	case 'h':
		return "/root", true
	case 'u', 'g':
		return "root", true
	case 'U', 'G':
		return "0", true
	case 's':
		return "/bin/sh", true
	}
	return "", false
}

// resolve replaces systemd specifiers (%N, %%, ...) in one word and, when
// vars is set, the environment variables of [Service] Environment= as
// systemd expands them in the command line Quadlet generates: ${VAR}
// anywhere, $VAR only as the whole word, $$ as a '$'.
func (c *converter) resolve(s string, vars bool) (string, error) {
	if vars && len(s) > 1 && s[0] == '$' && s[1] != '{' && s[1] != '$' {
		name, err := c.resolve(s[1:], false)
		if err != nil {
			return "", err
		}
		v, ok := c.env[name]
		switch {
		case ok:
			return v, nil
		case !envName(name):
			return "", fmt.Errorf("systemd reads a word starting with $ as one variable name (%q); write ${NAME} inside a word", name)
		}
		return "", fmt.Errorf("$%s is not set by an Environment= in [Service] (systemd would drop the word)", name)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '%':
			if i+1 >= len(s) {
				return "", fmt.Errorf("a lone %% at the end (write %%%% for a percent sign)")
			}
			v, ok := c.specifier(s[i+1])
			if !ok {
				return "", fmt.Errorf("systemd specifier %%%c has no fixed value qmd could use", s[i+1])
			}
			b.WriteString(v)
			i++
		case ch == '$' && vars && i+1 < len(s) && s[i+1] == '$':
			b.WriteByte('$')
			i++
		case ch == '$' && vars && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${")
			}
			name := s[i+2 : i+2+end]
			v, ok := c.env[name]
			if !ok {
				return "", fmt.Errorf("${%s} is not set by an Environment= in [Service] (systemd would make it empty)", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(ch)
		}
	}
	return b.String(), nil
}

func envName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// words splits a [Container] value and resolves each word.
func (c *converter) words(e Entry, mode SplitMode) ([]string, bool) {
	ws, err := SplitWords(e.Value, mode)
	if err != nil {
		c.unmapped(e, "cannot split into words: %v", err)
		return nil, false
	}
	for i, w := range ws {
		r, err := c.resolve(w, true)
		if err != nil {
			c.unmapped(e, "%v", err)
			return nil, false
		}
		ws[i] = r
	}
	return ws, true
}

// eachWords calls fn with the resolved words of every effective
// assignment of a list-valued [Container] key; an assignment whose words
// do not split or resolve is reported and skipped.
func (c *converter) eachWords(key string, mode SplitMode, fn func(ws []string, e Entry)) {
	for _, e := range c.all("Container", key) {
		if ws, ok := c.words(e, mode); ok {
			fn(ws, e)
		}
	}
}

// value returns the resolved value of one [Container] assignment; one
// that does not resolve is reported.
func (c *converter) value(e Entry) (string, bool) {
	v, err := c.resolve(unquote(e.Value), true)
	if err != nil {
		c.unmapped(e, "%v", err)
		return "", false
	}
	return v, true
}

// single returns the resolved value of a single-valued [Container] key.
func (c *converter) single(key string) (string, Entry, bool) {
	e, ok := c.last("Container", key)
	if !ok {
		return "", e, false
	}
	v, ok := c.value(e)
	return v, e, ok
}

func (c *converter) serviceEnv() {
	c.env = map[string]string{}
	for _, e := range c.all("Service", "Environment") {
		ws, err := SplitWords(e.Value, ExecArgs)
		if err != nil {
			c.unmapped(e, "cannot split into words: %v", err)
			continue
		}
		for _, w := range ws {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				c.unmapped(e, "%q is not NAME=VALUE", w)
				continue
			}
			if r, err := c.resolve(v, false); err == nil {
				c.env[k] = r
			} else {
				c.unmapped(e, "%s: %v", k, err)
			}
		}
		c.ignored(e, "the variables of qm.service's own environment are not the partition's; used only to expand $VAR in [Container] values")
	}
	for _, e := range c.all("Service", "EnvironmentFile") {
		c.unmapped(e, "not read: $VARs it defines are not expanded; set them with Environment= or edit the values")
	}
}

func (c *converter) container() {
	if v, e, ok := c.single("ContainerName"); ok {
		c.set("", "container_name", tomlString(v), "", e)
	} else {
		c.set("", "container_name", tomlString("systemd-"+c.unitName), "ContainerName= is not set: Quadlet names the container systemd-%N")
	}
	if e, ok := c.last("Container", "Image"); ok {
		c.unmapped(e, "qmd runs a partition from a root file system directory (rootfs), not from an image")
	}
	if v, e, ok := c.single("Rootfs"); ok {
		if strings.Contains(v, ":") {
			c.unmapped(e, "rootfs options (%s) have no qmd equivalent; rootfs is a plain directory", v[strings.Index(v, ":"):])
		} else {
			c.set("", "rootfs", tomlString(v), "", e)
		}
	}
	if e, ok := c.last("Container", "Exec"); ok {
		if ws, ok := c.words(e, ExecArgs); ok && len(ws) > 0 {
			c.set("", "exec", tomlList(ws), "", e)
		}
	}
	if v, e, ok := c.single("HostName"); ok {
		c.set("", "hostname", tomlString(v), "", e)
	}
	c.network()
	c.volumes()
	c.bools()
	c.devices()
	c.capabilities()
	if v, e, ok := c.single("SeccompProfile"); ok {
		c.seccomp(v, e)
	}
	c.eachWords("Sysctl", StrvRetainEscape, func(ws []string, e Entry) {
		for _, w := range ws {
			c.sysctl(w, e)
		}
	})
	c.keyVals("Environment", "env")
	c.keyVals("Annotation", "annotations")
	c.selinux()
	if v, e, ok := c.single("PidsLimit"); ok {
		c.pidsLimit(v, e)
	}
	if v, e, ok := c.single("Memory"); ok {
		c.memory(v, e)
	}
	for _, e := range c.all("Container", "Ulimit") {
		if v, ok := c.value(e); ok {
			c.ulimit(v, e)
		}
	}
	if v, e, ok := c.single("StopTimeout"); ok {
		if n, err := strconv.ParseUint(v, 10, 32); err != nil {
			c.unmapped(e, "%q is not a number of seconds", v)
		} else {
			c.set("", "stop_timeout", tomlString((time.Duration(n) * time.Second).String()), "", e)
		}
	}
	for key, why := range map[string]string{
		"Timezone":        "qmd has no timezone key: the partition reads /etc/localtime from its own /etc (Timezone=local bind-mounted the host's zone)",
		"Mask":            "qmd has no mask key; Podman's default masked paths apply",
		"Unmask":          "qmd has no unmask key; security.selinux_nested unmasks /proc and /sys/fs/selinux as podman's label=nested does",
		"Notify":          "qmd follows the partition through the Podman API; sd_notify from inside is not used",
		"NoNewPrivileges": "qmd has no no-new-privileges key (the partition's systemd needs setuid)",
		"Label":           "qmd sets its own container labels; there is no key for more",
		"ShmSize":         "qmd has no /dev/shm size key; Podman's default (64M) applies",
		"Tmpfs":           "qmd has no tmpfs key; read_only_tmpfs mounts /run, /tmp and /var/tmp",
		"Mount":           "qmd takes bind mounts as volumes = [\"HOST:CONTAINER[:OPTIONS]\"]; rewrite this --mount",
		"User":            "the partition's init runs as root; qmd has no user key",
		"UserNS":          "qmd runs the partition in the host user namespace, as qm.container does",
	} {
		for _, e := range c.all("Container", key) {
			c.unmapped(e, "%s", why)
		}
	}
	c.eachWords("PodmanArgs", ExecArgs, c.podmanArgs)
	c.finishSwap()
	c.capsFrom()
	c.labelDisable()
}

// labelDisable: with SecurityLabelDisable=true Podman ignores the other
// label options; qmd rejects the combination, so they are left out.
func (c *converter) labelDisable() {
	if it, ok := c.items["security.selinux_disable"]; !ok || it.val != "true" {
		return
	}
	for _, k := range []string{"selinux_type", "selinux_file_type", "selinux_level", "selinux_nested"} {
		if it, ok := c.items["security."+k]; ok {
			for _, e := range it.from {
				c.unmapped(e, "SecurityLabelDisable=true turns SELinux labeling off; qmd does not combine it with %s (Podman ignores the label options then)", k)
			}
			delete(c.items, "security."+k)
		}
	}
}

func (c *converter) network() {
	nets := c.all("Container", "Network")
	if len(nets) > 1 {
		for _, e := range nets {
			c.unmapped(e, "qmd gives the partition one network mode (private, none or host), not several networks")
		}
		return
	}
	for _, e := range nets {
		if v, ok := c.value(e); ok {
			c.networkMode(v, e)
		}
	}
}

func (c *converter) networkMode(v string, e Entry) {
	switch v {
	case "host", "none", "private":
		c.set("", "network", tomlString(v), "", e)
	case "bridge":
		c.set("", "network", tomlString("private"), "Podman's default network for root containers (bridge) is network = \"private\"", e)
	default:
		c.unmapped(e, "network %q: qmd supports private, none and host", v)
	}
}

// bindOptions are the mount options qmd passes through for a bind volume.
var bindOptions = map[string]bool{
	"ro": true, "rw": true, "z": true, "Z": true, "bind": true, "rbind": true,
	"shared": true, "rshared": true, "slave": true, "rslave": true, "private": true, "rprivate": true,
	"unbindable": true, "runbindable": true, "nosuid": true, "suid": true, "nodev": true, "dev": true,
	"noexec": true, "exec": true,
}

func (c *converter) volumes() {
	var vols []string
	var from []Entry
	for _, e := range c.all("Container", "Volume") {
		v, ok := c.value(e)
		if !ok {
			continue
		}
		if vol, ok := c.volume(v, e); ok {
			vols = append(vols, vol)
			from = append(from, e)
		}
	}
	if len(from) > 0 {
		c.set("", "volumes", tomlList(vols), "", from...)
		c.items["volumes"].list = vols
	}
}

func (c *converter) volume(v string, e Entry) (string, bool) {
	parts := strings.Split(v, ":")
	if len(parts) == 1 {
		c.unmapped(e, "an anonymous volume: qmd binds host directories, give one as HOST:%s", v)
		return "", false
	}
	if len(parts) > 3 {
		c.unmapped(e, "%q: want HOST:CONTAINER[:OPTIONS]", v)
		return "", false
	}
	src := parts[0]
	switch {
	case strings.HasPrefix(src, "/"):
	case strings.HasPrefix(src, "."):
		src = filepath.Join(c.dir, src) // Quadlet: relative to the unit file
	case strings.HasSuffix(src, ".volume"):
		c.unmapped(e, "%s is a Quadlet .volume unit: qmd binds host directories; bind the volume's directory instead", src)
		return "", false
	default:
		c.unmapped(e, "%s is a named Podman volume: qmd binds host directories; bind a directory (podman volume inspect %s shows its mountpoint)", src, src)
		return "", false
	}
	if !strings.HasPrefix(parts[1], "/") {
		c.unmapped(e, "container path %q is not absolute", parts[1])
		return "", false
	}
	out := src + ":" + parts[1]
	if len(parts) == 3 && parts[2] != "" {
		for _, o := range strings.Split(parts[2], ",") {
			if !bindOptions[o] {
				c.unmapped(e, "volume option %q has no meaning for a qmd bind mount (copy, O, U, idmap are for Podman volumes)", o)
				return "", false
			}
		}
		out += ":" + parts[2]
	}
	return out, true
}

func (c *converter) bools() {
	for key, name := range map[string]string{"ReadOnly": "read_only", "ReadOnlyTmpfs": "read_only_tmpfs"} {
		c.singleBool(key, "", name)
	}
}

// singleBool sets table.name from a boolean single-valued [Container] key.
func (c *converter) singleBool(key, table, name string) {
	if v, e, ok := c.single(key); ok {
		if b, err := parseBool(v); err != nil {
			c.unmapped(e, "%v", err)
		} else {
			c.set(table, name, tomlBool(b), "", e)
		}
	}
}

func (c *converter) devices() {
	var devs []string
	var from []Entry
	c.eachWords("AddDevice", StrvRetainEscape, func(ws []string, e Entry) {
		for _, w := range ws {
			if d, ok := c.device(w, e); ok && !contains(devs, d) {
				devs = append(devs, d)
				from = append(from, e)
			}
		}
	})
	if len(devs) > 0 {
		c.set("", "devices", tomlList(devs), "", dedupEntries(from)...)
		c.items["devices"].list = devs
	}
}

func (c *converter) device(w string, e Entry) (string, bool) {
	optional := strings.HasPrefix(w, "-")
	w = strings.TrimPrefix(w, "-")
	parts := strings.Split(w, ":")
	host := parts[0]
	if len(parts) > 3 || (len(parts) >= 2 && parts[1] != "" && parts[1] != host) {
		c.unmapped(e, "device %q: qmd passes a device at its host path; a different path inside is not supported", w)
		return "", false
	}
	if len(parts) == 3 && parts[2] != "rwm" && parts[2] != "" {
		c.unmapped(e, "device %q: qmd grants read, write and mknod (rwm); permissions %q are not supported", w, parts[2])
		return "", false
	}
	if !strings.HasPrefix(host, "/dev/") {
		c.unmapped(e, "device %q is not below /dev", host)
		return "", false
	}
	if optional {
		return "-" + host, true
	}
	return host, true
}

func dedupEntries(es []Entry) []Entry {
	var out []Entry
	for _, e := range es {
		if len(out) == 0 || out[len(out)-1] != e {
			out = append(out, e)
		}
	}
	return out
}

// capName normalizes "CAP_SYS_ADMIN" / "sys_admin" to "sys_admin".
func capName(s string) string {
	return strings.TrimPrefix(strings.ToLower(s), "cap_")
}

func (c *converter) capabilities() {
	collect := func(key string, out *[]string, from *[]Entry) {
		c.eachWords(key, StrvRetainEscape, func(ws []string, e Entry) {
			for _, w := range ws {
				for _, cp := range strings.Split(w, ",") {
					if cp != "" {
						*out = append(*out, capName(cp))
					}
				}
			}
			*from = append(*from, e)
		})
	}
	collect("DropCapability", &c.drops, &c.dropFrom)
	collect("AddCapability", &c.adds, &c.addFrom)
}

// capsFrom maps Podman's --cap-drop/--cap-add (from the Quadlet keys and
// PodmanArgs) to qmd's model: every capability except cap_drop.
func (c *converter) capsFrom() {
	drops, adds := c.drops, c.adds
	dropFrom, addFrom := dedupEntries(c.dropFrom), dedupEntries(c.addFrom)
	addAll := contains(adds, "all")
	if contains(drops, "all") {
		for _, e := range dropFrom {
			c.unmapped(e, "dropping all capabilities (keeping only AddCapability=) cannot be expressed: qmd grants every capability except cap_drop; list the ones to drop")
		}
		return
	}
	var clash []string
	if !addAll {
		for _, a := range adds {
			if contains(drops, a) {
				clash = append(clash, a)
			}
		}
	}
	if len(clash) > 0 {
		for _, e := range append(dropFrom, addFrom...) {
			c.unmapped(e, "%s is both added and dropped: Podman refuses that; decide and set cap_drop", strings.Join(clash, ", "))
		}
		return
	}
	if len(dropFrom) > 0 {
		c.set("", "cap_drop", tomlList(uniq(drops)), "", dropFrom...)
	}
	if len(addFrom) > 0 && !addAll {
		for _, e := range addFrom {
			c.unmapped(e, "without AddCapability=all the Quadlet container had Podman's default capabilities plus these; qmd grants every capability except cap_drop: add the ones the partition must not have to cap_drop")
		}
	}
	if len(addFrom) == 0 && len(dropFrom) > 0 {
		c.res.Unmapped = append(c.res.Unmapped, Finding{File: dropFrom[0].File, What: "[Container] AddCapability (not set)",
			Reason: "without AddCapability=all the Quadlet container had Podman's default capabilities; qmd grants every capability except cap_drop: add the ones the partition must not have to cap_drop"})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func uniq(list []string) []string {
	var out []string
	for _, s := range list {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (c *converter) seccomp(v string, e Entry) {
	if v != "unconfined" && !strings.HasPrefix(v, "/") {
		c.unmapped(e, "seccomp profile %q: qmd wants an absolute path or \"unconfined\"", v)
		return
	}
	c.set("", "seccomp_profile", tomlString(v), "", e)
}

func (c *converter) sysctl(w string, e Entry) {
	k, v, ok := strings.Cut(w, "=")
	if !ok {
		c.unmapped(e, "sysctl %q is not NAME=VALUE", w)
		return
	}
	c.set("sysctl", k, tomlString(v), "", e)
}

// keyVals maps Environment=/Annotation= (KEY=VALUE words) to a table.
func (c *converter) keyVals(key, table string) {
	c.eachWords(key, ExecArgs, func(ws []string, e Entry) {
		for _, w := range ws {
			c.keyVal(table, w, e)
		}
	})
}

func (c *converter) keyVal(table, w string, e Entry) {
	k, v, ok := strings.Cut(w, "=")
	if !ok {
		if table == "env" {
			c.unmapped(e, "%s without a value takes it from the environment of podman (qm.service): give the value", w)
		} else {
			c.unmapped(e, "%s without =VALUE", w)
		}
		return
	}
	c.set(table, k, tomlString(v), "", e)
}

func (c *converter) selinux() {
	for key, name := range map[string]string{
		"SecurityLabelType":     "selinux_type",
		"SecurityLabelFileType": "selinux_file_type",
		"SecurityLabelLevel":    "selinux_level",
	} {
		if v, e, ok := c.single(key); ok {
			c.set("security", name, tomlString(v), "", e)
		}
	}
	for key, name := range map[string]string{
		"SecurityLabelNested":  "selinux_nested",
		"SecurityLabelDisable": "selinux_disable",
	} {
		c.singleBool(key, "security", name)
	}
	if v, e, ok := c.single("AppArmor"); ok {
		c.set("security", "apparmor_profile", tomlString(v), "", e)
	}
}

func (c *converter) pidsLimit(v string, e Entry) {
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		c.unmapped(e, "pids limit %q is not a number", v)
	case n <= 0:
		c.set("pids", "max", tomlString("max"), "a pids limit of "+v+" is no limit", e)
	default:
		c.set("pids", "max", tomlString(v), "", e)
	}
}

func (c *converter) memory(v string, e Entry) {
	s, err := config.ParseSize(v)
	if err != nil || s.Percent > 0 {
		c.unmapped(e, "memory %q: not a size qmd reads (e.g. 512M, 2G)", v)
		return
	}
	c.set("memory", "max", tomlString(v), "", e)
}

func (c *converter) ulimit(v string, e Entry) {
	name, lim, ok := strings.Cut(v, "=")
	if !ok {
		c.unmapped(e, "ulimit %q: want NAME=SOFT[:HARD]", v)
		return
	}
	name = strings.TrimPrefix(strings.ToLower(name), "rlimit_")
	parts := strings.Split(lim, ":")
	for i, p := range parts {
		if p == "-1" { // podman's "unlimited"
			parts[i] = "unlimited"
		}
	}
	lim = strings.Join(parts, ":")
	if _, err := config.ParseRlimit(lim); err != nil {
		c.unmapped(e, "ulimit %s: %v", name, err)
		return
	}
	c.set("rlimits", name, tomlString(lim), "", e)
}

// podmanFlagsWithValue are podman run options that take a value, so that
// an option qmd does not map is skipped with its value.
var podmanFlagsWithValue = map[string]bool{
	"--add-host": true, "--annotation": true, "--arch": true, "--attach": true, "-a": true,
	"--blkio-weight": true, "--blkio-weight-device": true, "--cap-add": true, "--cap-drop": true,
	"--cgroup-conf": true, "--cgroup-parent": true, "--cgroupns": true, "--cgroups": true, "--chrootdirs": true,
	"--cidfile": true, "--conmon-pidfile": true, "--cpu-period": true, "--cpu-quota": true,
	"--cpu-rt-period": true, "--cpu-rt-runtime": true, "--cpu-shares": true, "-c": true, "--cpus": true,
	"--cpuset-cpus": true, "--cpuset-mems": true, "--device": true, "--device-cgroup-rule": true,
	"--device-read-bps": true, "--device-read-iops": true, "--device-write-bps": true, "--device-write-iops": true,
	"--dns": true, "--dns-option": true, "--dns-search": true, "--entrypoint": true, "--env": true, "-e": true,
	"--env-file": true, "--expose": true, "--gidmap": true, "--gpus": true, "--group-add": true, "--group-entry": true,
	"--health-cmd": true, "--health-interval": true, "--health-on-failure": true, "--health-retries": true,
	"--health-start-period": true, "--health-timeout": true, "--hostname": true, "-h": true, "--hosts-file": true,
	"--hostuser": true, "--init-path": true, "--ip": true, "--ip6": true, "--ipc": true, "--label": true, "-l": true,
	"--label-file": true, "--log-driver": true, "--log-opt": true, "--mac-address": true, "--memory": true, "-m": true,
	"--memory-reservation": true, "--memory-swap": true, "--memory-swappiness": true, "--mount": true,
	"--name": true, "--network": true, "--net": true, "--network-alias": true, "--oom-score-adj": true,
	"--os": true, "--passwd-entry": true, "--personality": true, "--pid": true, "--pidfile": true,
	"--pids-limit": true, "--platform": true, "--pod": true, "--pod-id-file": true, "--preserve-fd": true,
	"--preserve-fds": true, "--publish": true, "-p": true, "--pull": true, "--requires": true, "--restart": true,
	"--retry": true, "--retry-delay": true, "--sdnotify": true, "--seccomp-policy": true, "--secret": true,
	"--security-opt": true, "--shm-size": true, "--shm-size-systemd": true, "--stop-signal": true,
	"--stop-timeout": true, "--subgidname": true, "--subuidname": true, "--sysctl": true, "--systemd": true,
	"--timeout": true, "--tmpfs": true, "--tz": true, "--uidmap": true, "--ulimit": true, "--umask": true,
	"--unsetenv": true, "--user": true, "-u": true, "--userns": true, "--uts": true, "--variant": true,
	"--volume": true, "-v": true, "--volumes-from": true, "--workdir": true, "-w": true,
}

// podmanArgs maps the options of PodmanArgs= that have a qmd key.
func (c *converter) podmanArgs(args []string, e Entry) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		flag, val, hasVal := strings.Cut(arg, "=")
		if !strings.HasPrefix(flag, "-") || flag == "-" || flag == "--" {
			c.unmapped(e, "PodmanArgs %q: not an option (the image or command is given by Rootfs= and Exec=)", arg)
			continue
		}
		if strings.HasPrefix(flag, "-") && !strings.HasPrefix(flag, "--") && len(flag) > 2 && !hasVal {
			// -m512m: a short option with its value attached.
			flag, val, hasVal = flag[:2], flag[2:], true
		}
		takesVal := podmanFlagsWithValue[flag]
		if takesVal && !hasVal {
			if i+1 >= len(args) {
				c.unmapped(e, "PodmanArgs %s: no value", flag)
				continue
			}
			i++
			val = args[i]
		}
		shown := flag
		if takesVal || hasVal {
			shown += " " + val
		}
		switch flag {
		case "--memory", "-m":
			c.memory(val, e)
		case "--memory-swap":
			ee := e
			c.swapTotal, c.swapValue = &ee, val
		case "--pids-limit":
			c.pidsLimit(val, e)
		case "--ulimit":
			c.ulimit(val, e)
		case "--security-opt":
			c.securityOpt(val, e)
		case "--cap-add", "--cap-drop":
			for _, cp := range strings.Split(val, ",") {
				if cp == "" {
					continue
				}
				if flag == "--cap-add" {
					c.adds = append(c.adds, capName(cp))
					c.addFrom = append(c.addFrom, e)
				} else {
					c.drops = append(c.drops, capName(cp))
					c.dropFrom = append(c.dropFrom, e)
				}
			}
		case "--device":
			if d, ok := c.device(val, e); ok {
				c.appendList("devices", d, e)
			}
		case "--sysctl":
			c.sysctl(val, e)
		case "--volume", "-v":
			if v, ok := c.volume(val, e); ok {
				c.appendList("volumes", v, e)
			}
		case "--env", "-e":
			c.keyVal("env", val, e)
		case "--annotation":
			c.keyVal("annotations", val, e)
		case "--network", "--net":
			c.networkMode(val, e)
		case "--hostname", "-h":
			c.set("", "hostname", tomlString(val), "", e)
		case "--name":
			c.set("", "container_name", tomlString(val), "", e)
		case "--oom-score-adj":
			c.oomScoreAdj(val, e)
		case "--cpus":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || f <= 0 {
				c.unmapped(e, "PodmanArgs --cpus %q is not a positive number", val)
			} else {
				c.set("cpu", "quota", tomlString(strconv.FormatFloat(f*100, 'f', -1, 64)+"%"), "--cpus "+val+" as a percentage of one CPU", e)
			}
		case "--read-only", "--read-only-tmpfs":
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					c.unmapped(e, "PodmanArgs %s: %q is not true or false", flag, val)
					continue
				}
			}
			c.set("", strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_"), tomlBool(b), "", e)
		case "--tz":
			c.unmapped(e, "PodmanArgs %s: qmd has no timezone key: the partition reads /etc/localtime from its own /etc", shown)
		case "--memory-reservation":
			c.unmapped(e, "PodmanArgs %s: a soft limit (memory.low); qmd has memory.high (throttling) and memory.max", shown)
		case "--cpu-shares", "-c":
			c.unmapped(e, "PodmanArgs %s: set cpu.weight (1..10000, or \"idle\") instead", shown)
		case "--cpuset-cpus", "--cpuset-mems":
			c.unmapped(e, "PodmanArgs %s: qmd has no CPU/memory node affinity key", shown)
		case "--rm", "--replace", "-d", "--detach":
			c.ignored(Entry{Section: e.Section, Key: e.Key, Value: shown, File: e.File, Line: e.Line}, "qmd creates, replaces and removes the container itself")
		default:
			c.unmapped(e, "PodmanArgs %s: no qmd equivalent", shown)
		}
	}
}

// appendList adds one value to a list key (devices, volumes).
func (c *converter) appendList(key, v string, e Entry) {
	it, ok := c.items[key]
	if !ok {
		c.set("", key, tomlList([]string{v}), "", e)
		c.items[key].list = []string{v}
		return
	}
	if !contains(it.list, v) {
		it.list = append(it.list, v)
	}
	it.val = tomlList(it.list)
	it.from = dedupEntries(append(it.from, e))
}

func (c *converter) securityOpt(v string, e Entry) {
	k, val, _ := strings.Cut(v, "=")
	if k == "label" {
		lk, lv, hasV := strings.Cut(val, ":")
		switch {
		case val == "nested":
			c.set("security", "selinux_nested", "true", "", e)
		case val == "disable":
			c.set("security", "selinux_disable", "true", "", e)
		case hasV && lk == "type":
			c.set("security", "selinux_type", tomlString(lv), "", e)
		case hasV && lk == "filetype":
			c.set("security", "selinux_file_type", tomlString(lv), "", e)
		case hasV && lk == "level":
			c.set("security", "selinux_level", tomlString(lv), "", e)
		default:
			c.unmapped(e, "PodmanArgs --security-opt %s: qmd sets the SELinux type, file type, level, nesting and disable only", v)
		}
		return
	}
	switch k {
	case "seccomp":
		c.seccomp(val, e)
	case "apparmor":
		c.set("security", "apparmor_profile", tomlString(val), "", e)
	case "unmask":
		c.unmapped(e, "PodmanArgs --security-opt %s: qmd has no unmask key; security.selinux_nested unmasks /proc and /sys/fs/selinux as podman's label=nested does", v)
	case "mask":
		c.unmapped(e, "PodmanArgs --security-opt %s: qmd has no mask key", v)
	default:
		c.unmapped(e, "PodmanArgs --security-opt %s: no qmd equivalent", v)
	}
}

func (c *converter) finishSwap() {
	if c.swapTotal == nil {
		return
	}
	e, v := *c.swapTotal, c.swapValue
	if v == "-1" {
		c.set("memory", "swap_max", tomlString("infinity"), "--memory-swap -1 is unlimited swap", e)
		return
	}
	total, err := config.ParseSize(v)
	it, hasMem := c.items["memory.max"]
	if err != nil || total.Percent > 0 || !hasMem {
		c.unmapped(e, "PodmanArgs --memory-swap %s: memory plus swap; qmd needs memory.max and a byte size to compute memory.swap_max", v)
		return
	}
	memStr, _ := strconv.Unquote(it.val)
	mem, err := config.ParseSize(memStr)
	if err != nil || mem.IsInfinity() || total.Bytes < mem.Bytes {
		c.unmapped(e, "PodmanArgs --memory-swap %s is below --memory %s", v, memStr)
		return
	}
	c.set("memory", "swap_max", tomlString(strconv.FormatUint(total.Bytes-mem.Bytes, 10)), "--memory-swap "+v+" minus memory.max "+memStr, e)
}

func (c *converter) oomScoreAdj(v string, e Entry) {
	n, err := strconv.Atoi(v)
	if err != nil {
		c.unmapped(e, "%q is not a number", v)
		return
	}
	c.set("", "oom_score_adj", strconv.Itoa(n), "", e)
	if n > 750 {
		// Nested containers get 750 in qm (its containers.conf); the
		// kernel keeps them at least as killable as the partition.
		c.set("", "nested_oom_score_adj", strconv.Itoa(n), "nested containers cannot be less killable than the partition", e)
	}
}

// rlimitKeys maps systemd's Limit*= to qmd's rlimits.
var rlimitKeys = map[string]string{
	"LimitCPU": "cpu", "LimitFSIZE": "fsize", "LimitDATA": "data", "LimitSTACK": "stack", "LimitCORE": "core",
	"LimitRSS": "rss", "LimitNOFILE": "nofile", "LimitAS": "as", "LimitNPROC": "nproc", "LimitMEMLOCK": "memlock",
	"LimitLOCKS": "locks", "LimitSIGPENDING": "sigpending", "LimitMSGQUEUE": "msgqueue", "LimitNICE": "nice",
	"LimitRTPRIO": "rtprio", "LimitRTTIME": "rttime",
}

func (c *converter) service() {
	for _, km := range [][2]string{{"MemoryLimit", "max"}, {"MemoryMax", "max"}, {"MemoryHigh", "high"}, {"MemorySwapMax", "swap_max"}} {
		if e, ok := c.last("Service", km[0]); ok {
			c.serviceLimit("memory", km[1], e.Value, e, func(v string) bool {
				s, err := config.ParseSize(v)
				return err == nil && s.IsInfinity()
			})
		}
	}
	if e, ok := c.last("Service", "OOMScoreAdjust"); ok {
		if it, set := c.items["oom_score_adj"]; set {
			c.ignored(e, "PodmanArgs --oom-score-adj (%s) sets the container's value", it.val)
		} else {
			c.oomScoreAdj(e.Value, e)
		}
	}
	if e, ok := c.last("Service", "CPUWeight"); ok {
		c.set("cpu", "weight", tomlString(e.Value), "", e)
	}
	if e, ok := c.last("Service", "Slice"); ok {
		c.set("", "slice", tomlString(e.Value), "", e)
	}
	if e, ok := c.last("Service", "IOWeight"); ok {
		if n, err := strconv.ParseUint(e.Value, 10, 64); err != nil || n < 1 || n > 10000 {
			c.unmapped(e, "qmd's io.weight takes 1..10000")
		} else {
			c.set("io", "weight", strconv.FormatUint(n, 10), "", e)
		}
	}
	if e, ok := c.last("Service", "CPUQuota"); ok {
		c.set("cpu", "quota", tomlString(e.Value), "", e)
	}
	if e, ok := c.last("Service", "TasksMax"); ok {
		v := e.Value
		if v == "infinity" {
			v = "max"
		}
		c.serviceLimit("pids", "max", v, e, func(v string) bool { return v == "max" })
	}
	if e, ok := c.last("Service", "Restart"); ok {
		switch e.Value {
		case "always", "on-failure", "no":
			c.set("restart", "policy", tomlString(e.Value), "", e)
		default:
			c.unmapped(e, "qmd's restart.policy is always, on-failure or no")
		}
	}
	for _, sec := range []string{"Unit", "Service"} {
		if e, ok := c.last(sec, "StartLimitBurst"); ok {
			if n, err := strconv.Atoi(e.Value); err != nil || n < 0 {
				c.unmapped(e, "%q is not a count", e.Value)
			} else {
				c.set("restart", "start_limit_burst", strconv.Itoa(n), "", e)
			}
		}
		for _, key := range []string{"StartLimitIntervalSec", "StartLimitInterval"} {
			if e, ok := c.last(sec, key); ok {
				c.timespan("restart", "start_limit_interval", e)
			}
		}
	}
	if e, ok := c.last("Service", "TimeoutStopSec"); ok {
		c.timespan("", "stop_timeout", e)
	}
	var keys []string
	for k := range rlimitKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if e, ok := c.last("Service", key); ok {
			v := e.Value
			if _, err := config.ParseRlimit(v); err != nil {
				c.unmapped(e, "%v (qmd reads counts, \"infinity\" and SOFT:HARD)", err)
				continue
			}
			c.set("rlimits", rlimitKeys[key], tomlString(v), "", e)
		}
	}
	for key, why := range map[string]string{
		"StartupCPUWeight":         "qmd has no start-up CPU weight",
		"StartupIOWeight":          "qmd has no I/O weight key",
		"AllowedCPUs":              "qmd has no CPU affinity (cpuset) key",
		"AllowedMemoryNodes":       "qmd has no memory node (cpuset) key",
		"ManagedOOMSwap":           "systemd-oomd does not watch the partition under qmd; qmd's [partition.pressure] policy reacts to memory pressure instead",
		"ManagedOOMMemoryPressure": "systemd-oomd does not watch the partition under qmd; qmd's [partition.pressure] policy reacts to memory pressure instead",
		"ManagedOOMPreference":     "systemd-oomd does not watch the partition under qmd",
		"RestartSec":               "qmd restarts at once after clean running, then backs off from restart.backoff_initial (100ms) doubling to backoff_max",
		"MemoryMin":                "qmd has no memory.min key",
		"MemoryLow":                "qmd has no memory.low key",
		"CPUQuotaPeriodSec":        "qmd uses a 100ms CPU quota period",
	} {
		for _, e := range c.all("Service", key) {
			c.unmapped(e, "%s", why)
		}
	}
	for key, why := range map[string]string{
		"Delegate":         "Podman delegates the partition's cgroup under qmd as well",
		"KillMode":         "qmd stops the partition through Podman (stop_timeout)",
		"Type":             "a setting of qm.service itself",
		"NotifyAccess":     "a setting of qm.service itself",
		"SyslogIdentifier": "the partition logs through Podman's log driver; qmd logs as qmd",
		"TimeoutStartSec":  "qmd waits for the start through the Podman API (podman.timeout)",
	} {
		for _, e := range c.all("Service", key) {
			c.ignored(e, "%s", why)
		}
	}
}

// serviceLimit sets a limit of the qm.service cgroup. The container's own
// limit (PodmanArgs --memory, --pids-limit) applies inside it as well:
// the service's limit wins unless it is no limit.
func (c *converter) serviceLimit(table, key, v string, e Entry, unlimited func(string) bool) {
	if s, err := config.ParseSize(v); table == "memory" && err != nil {
		c.unmapped(e, "%v", err)
		return
	} else if table == "memory" && s.Percent > 0 && key == "swap_max" {
		c.unmapped(e, "qmd's memory.swap_max is a size, not a percentage")
		return
	}
	if it, set := c.items[table+"."+key]; set {
		if unlimited(v) {
			c.ignored(e, "no limit: the container's own limit %s = %s applies", it.path(), it.val)
			return
		}
		c.set(table, key, tomlString(v), fmt.Sprintf("the service's limit; the container's own %s was also set", it.val), append(it.from, e)...)
		return
	}
	c.set(table, key, tomlString(v), "", e)
}

// timespan maps a systemd time span ("10", "1min 30s", "500ms") to a Go
// duration.
func (c *converter) timespan(table, key string, e Entry) {
	d, err := parseTimespan(e.Value)
	if err != nil {
		c.unmapped(e, "%v", err)
		return
	}
	c.set(table, key, tomlString(d.String()), "", e)
}

func parseTimespan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"": time.Second, "us": time.Microsecond, "usec": time.Microsecond, "ms": time.Millisecond, "msec": time.Millisecond,
		"s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
		"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	}
	rest := strings.TrimSpace(s)
	if rest == "" || rest == "infinity" {
		return 0, fmt.Errorf("%q: qmd needs a finite time span", s)
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("%q is not a time span (e.g. 10s, 1min 30s, 500ms)", s)
		}
		num, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a time span", s)
		}
		rest = strings.TrimLeft(rest[i:], " ")
		j := 0
		for j < len(rest) && rest[j] >= 'a' && rest[j] <= 'z' {
			j++
		}
		unit, ok := units[rest[:j]]
		if !ok {
			return 0, fmt.Errorf("%q: unknown time unit %q", s, rest[:j])
		}
		rest = strings.TrimLeft(rest[j:], " ")
		if num*float64(unit) > float64(100*365*24*time.Hour) {
			return 0, fmt.Errorf("%q is too long", s)
		}
		total += time.Duration(num * float64(unit))
	}
	return total, nil
}

// rest reports every assignment the converter did not deal with.
func (c *converter) rest() {
	for _, e := range c.entries {
		if c.handled[e.Section+"/"+e.Key] || e.Value == "" {
			continue
		}
		switch e.Section {
		case "Container":
			c.unmapped(e, "Quadlet key with no qmd equivalent")
		case "Service":
			c.unmapped(e, "systemd service setting with no qmd equivalent")
		case "Unit":
			c.ignored(e, "[Unit] settings of qm.service: qmd.service is the unit now")
		case "Install":
			c.ignored(e, "enable qmd.service instead (systemctl enable qmd.service)")
		case "Quadlet":
			c.ignored(e, "an option of the Quadlet generator")
		default:
			c.unmapped(e, "section [%s] is not part of a Quadlet .container file", e.Section)
		}
	}
}

// finish validates every key with qmd's own loader, reports those it
// rejects, and renders the drop-in.
func (c *converter) finish() error {
	var items []*item
	for _, it := range c.items {
		items = append(items, it)
	}
	sortItems(items)
	// When the whole is not valid, each key alone over the defaults: a
	// value qmd rejects is reported with qmd's message instead of failing
	// the whole import.
	if c.check(items) != nil {
		kept := items[:0]
		for _, it := range items {
			group := []*item{it}
			for _, k := range companions[it.path()] {
				if o, ok := c.items[k]; ok {
					group = append(group, o)
				}
			}
			sortItems(group)
			if err := c.check(group); err != nil {
				for _, e := range it.from {
					c.unmapped(e, "qmd rejects %s = %s: %s", it.path(), it.val, keyErrorMsg(err))
				}
				continue
			}
			kept = append(kept, it)
		}
		items = kept
	}
	// Then together (memory.high above memory.max, selinux_disable with a
	// type, ...): drop what qmd names until the rest is valid.
	for range len(items) + 1 {
		err := c.check(items)
		if err == nil {
			break
		}
		drop := map[string]string{}
		for _, ke := range keyErrors(err) {
			key := strings.TrimPrefix(ke.Key, "partition["+c.res.Partition+"].")
			drop[key] = ke.Msg
		}
		kept := items[:0]
		dropped := false
		for _, it := range items {
			if msg, ok := drop[it.path()]; ok {
				for _, e := range it.from {
					c.unmapped(e, "qmd rejects %s = %s: %s", it.path(), it.val, msg)
				}
				dropped = true
				continue
			}
			kept = append(kept, it)
		}
		items = kept
		if !dropped {
			return fmt.Errorf("the generated drop-in does not validate: %w", err)
		}
	}
	for _, it := range items {
		c.res.Mapped = append(c.res.Mapped, Mapped{Key: it.path(), Value: it.val, From: it.from, Note: it.note})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# qmd drop-in written by `qmd import-quadlet` from containers/qm's Quadlet files:\n")
	for _, s := range c.res.Sources {
		fmt.Fprintf(&b, "#   %s\n", comment(s))
	}
	b.WriteString("# Keys these files do not set keep qmd's defaults, which mirror qm.container\n")
	b.WriteString("# (`qmd check-config` prints the effective configuration). Each key below\n")
	b.WriteString("# names the Quadlet line it comes from.\n")
	c.sortFindings(c.res.Unmapped)
	c.sortFindings(c.res.Ignored)
	writeFindings(&b, "Not mapped: qmd has no equivalent or the value needs a decision", c.res.Unmapped)
	writeFindings(&b, "Not needed under qmd", c.res.Ignored)
	b.WriteString("\n")
	render(&b, c.res.Partition, items, true)
	c.res.TOML = []byte(b.String())
	if _, err := config.Parse("generated drop-in", c.res.TOML); err != nil {
		return fmt.Errorf("the generated drop-in does not load: %w", err)
	}
	return nil
}

func writeFindings(b *strings.Builder, title string, fs []Finding) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintf(b, "#\n# %s:\n", title)
	for _, f := range fs {
		fmt.Fprintf(b, "#   %s: %s\n#       %s\n", comment(f.Where()), comment(f.What), comment(f.Reason))
	}
}

// companions are validated together with a key: qmd checks them against
// each other, and the import sets them together.
var companions = map[string][]string{
	"oom_score_adj":        {"nested_oom_score_adj"},
	"nested_oom_score_adj": {"oom_score_adj"},
}

// check loads items over qmd's defaults.
func (c *converter) check(items []*item) error {
	var b strings.Builder
	render(&b, c.res.Partition, items, false)
	_, err := config.Parse("check", []byte(b.String()))
	return err
}

// keyErrors lists the *config.KeyError in err (a join of them).
func keyErrors(err error) []*config.KeyError {
	var out []*config.KeyError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ke *config.KeyError
		if errors.As(err, &ke) {
			out = append(out, ke)
		}
	}
	walk(err)
	return out
}

func keyErrorMsg(err error) string {
	if kes := keyErrors(err); len(kes) > 0 {
		msgs := make([]string, len(kes))
		for i, ke := range kes {
			msgs[i] = ke.Msg
		}
		return strings.Join(msgs, "; ")
	}
	msg := err.Error()
	// "check:3: key ...: message" from the TOML decoder.
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "check") {
		msg = msg[i+2:]
	}
	return msg
}
