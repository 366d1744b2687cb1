package oom

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Protected is an ASIL process group whose oom_score_adj qmd sets to Score
// (-1000..-1) and otherwise never touches. Exactly one of Cgroup and Unit
// names it.
type Protected struct {
	Cgroup string // cgroup path, e.g. "/system.slice/brakes.service"
	Unit   string // systemd unit, mapped to a cgroup path by UnitCgroupPath
	Score  int
}

// Path is the cgroup path the entry names.
func (p Protected) Path() string {
	if p.Cgroup != "" {
		return cleanCgroup(p.Cgroup)
	}
	return UnitCgroupPath(p.Unit)
}

func (p Protected) label() string {
	if p.Unit != "" {
		return "unit " + p.Unit
	}
	return "cgroup " + p.Cgroup
}

// UnitCgroupPath maps a systemd unit name to its default cgroup path:
// slices nest by their dashes (a-b.slice -> /a.slice/a-b.slice), every
// other unit lives in /system.slice (services and scopes started without
// an explicit Slice=; give Cgroup explicitly otherwise).
func UnitCgroupPath(unit string) string {
	if strings.HasSuffix(unit, ".slice") {
		if unit == "-.slice" {
			return "/"
		}
		base := strings.TrimSuffix(unit, ".slice")
		parts := strings.Split(base, "-")
		p := ""
		for i := range parts {
			p += "/" + strings.Join(parts[:i+1], "-") + ".slice"
		}
		return p
	}
	return "/system.slice/" + unit
}

func cleanCgroup(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p)
}

// Policy is the oom_score_adj policy.
//
// Nested containers: a process is in a nested container when the path of
// its cgroup below the partition's cgroup has an element starting with one
// of NestedMarkers (Podman: "libpod-<id>" with the cgroupfs manager,
// "libpod-<id>.scope" with systemd) and no earlier element starting with
// one of IgnoreMarkers ("libpod-conmon-": conmon, the container monitor,
// is a partition process, not part of the container). The first matching
// element names the container (marker and ".scope" stripped).
//
// Values: the partition's init gets PartitionScore exactly. Nested
// container processes below NestedScore and other partition processes
// below PartitionScore are raised to it; higher values are left alone (a
// process may volunteer to be killed first; only lowering endangers ASIL).
type Policy struct {
	PartitionScore int
	NestedScore    int
	NestedMarkers  []string
	IgnoreMarkers  []string
	Protected      []Protected
}

// DefaultPolicy mirrors containers/qm: 500 for the partition, 750 for
// nested containers, Podman's cgroup names.
func DefaultPolicy() Policy {
	return Policy{
		PartitionScore: DefaultPartitionScore,
		NestedScore:    DefaultNestedScore,
		NestedMarkers:  []string{"libpod-"},
		IgnoreMarkers:  []string{"libpod-conmon-"},
	}
}

// Validate checks the policy; errors name the setting.
func (p Policy) Validate() error {
	var errs []error
	if err := ValidateScore(p.PartitionScore); err != nil {
		errs = append(errs, fmt.Errorf("partition score: %w", err))
	}
	if err := ValidateScore(p.NestedScore); err != nil {
		errs = append(errs, fmt.Errorf("nested score: %w", err))
	}
	if p.NestedScore < p.PartitionScore {
		errs = append(errs, fmt.Errorf("nested score %d below partition score %d", p.NestedScore, p.PartitionScore))
	}
	for i, m := range p.NestedMarkers {
		if m == "" || strings.Contains(m, "/") {
			errs = append(errs, fmt.Errorf("nested marker %d: %q must be a non-empty cgroup name prefix", i, m))
		}
	}
	for i, m := range p.IgnoreMarkers {
		if m == "" || strings.Contains(m, "/") {
			errs = append(errs, fmt.Errorf("ignore marker %d: %q must be a non-empty cgroup name prefix", i, m))
		}
	}
	seen := map[string]int{}
	for i, pr := range p.Protected {
		switch {
		case pr.Cgroup == "" && pr.Unit == "":
			errs = append(errs, fmt.Errorf("protected %d: needs a cgroup or a unit", i))
			continue
		case pr.Cgroup != "" && pr.Unit != "":
			errs = append(errs, fmt.Errorf("protected %d: give a cgroup or a unit, not both", i))
			continue
		case pr.Unit != "" && (strings.Contains(pr.Unit, "/") || !strings.Contains(pr.Unit, ".")):
			errs = append(errs, fmt.Errorf("protected %d: unit %q is not a unit name", i, pr.Unit))
			continue
		}
		if pr.Score < MinScore || pr.Score > -1 {
			errs = append(errs, fmt.Errorf("protected %d (%s): score %d outside %d..-1", i, pr.label(), pr.Score, MinScore))
		}
		if pr.Path() == "/" {
			errs = append(errs, fmt.Errorf("protected %d (%s): the root cgroup cannot be protected", i, pr.label()))
		}
		if j, dup := seen[pr.Path()]; dup {
			errs = append(errs, fmt.Errorf("protected %d (%s): same cgroup as protected %d", i, pr.label(), j))
		}
		seen[pr.Path()] = i
	}
	return errors.Join(errs...)
}

// Role is what a process is to the policy.
type Role string

// Roles.
const (
	RoleInit      Role = "init"      // the partition's init
	RolePartition Role = "partition" // any other partition process
	RoleNested    Role = "nested"    // a process of a nested container
	RoleProtected Role = "protected" // an ASIL process named in the config
	RoleOther     Role = "other"     // not qmd's business
)

// under reports whether cgroup p is root or below it.
func under(p, root string) (rel string, ok bool) {
	if root == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	if p == root {
		return "", true
	}
	if strings.HasPrefix(p, root+"/") {
		return p[len(root)+1:], true
	}
	return "", false
}

// Classify says what a process in cgroup cg is, given the partition's
// cgroup and init PID. For RoleNested it also names the container.
func (p Policy) Classify(partition string, pid, initPID int, cg string) (Role, string) {
	rel, ok := under(cg, partition)
	if !ok {
		return RoleOther, ""
	}
	if pid == initPID && initPID > 0 {
		return RoleInit, ""
	}
	if rel == "" {
		return RolePartition, ""
	}
	for _, el := range strings.Split(rel, "/") {
		for _, ig := range p.IgnoreMarkers {
			if strings.HasPrefix(el, ig) {
				return RolePartition, ""
			}
		}
		for _, m := range p.NestedMarkers {
			if strings.HasPrefix(el, m) {
				name := strings.TrimSuffix(strings.TrimPrefix(el, m), ".scope")
				return RoleNested, name
			}
		}
	}
	return RolePartition, ""
}

// Target is the value a process of the role should have, given its
// current value; ok is false when nothing is to be done.
func (p Policy) Target(role Role, current, protectedScore int) (int, bool) {
	switch role {
	case RoleInit:
		return p.PartitionScore, current != p.PartitionScore
	case RolePartition:
		return p.PartitionScore, current < p.PartitionScore
	case RoleNested:
		return p.NestedScore, current < p.NestedScore
	case RoleProtected:
		return protectedScore, current != protectedScore
	}
	return current, false
}
