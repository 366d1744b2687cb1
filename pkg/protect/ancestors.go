package protect

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// Memory protection only takes effect up to what every ancestor affords:
// the kernel limits a cgroup's effective memory.min (and memory.low) by
// its parent's effective value, shared among the siblings that claim
// some (Documentation/admin-guide/cgroup-v2.rst, "memory.min"). systemd
// writes a unit's MemoryMin= into its own cgroup only; system.slice keeps
// memory.min 0, so MemoryMin= on a unit in it protects nothing at all: not
// the ASIL units' memory_min, not qmd.service's own MemoryMin=. So qmd
// raises each slice above a protected cgroup to the sum of what its
// children claim, deepest slice first, through systemd (runtime
// properties, so that systemd does not write its own value back). It
// never lowers a slice: an operator's larger value stays, and one that
// the configuration no longer needs stays until the next boot.

// protectionFiles are the cgroup files and the systemd properties of the
// memory protection, in that order.
var protectionFiles = [...]struct{ file, prop string }{{"memory.min", "MemoryMin"}, {"memory.low", "MemoryLow"}}

// coverAncestors raises the slices above the protected cgroups (and
// above qmd's own, Options.SelfCgroup) so that their children's memory
// protection takes effect. Called after the units' protection was set
// and on every resync tick.
func (p *Protector) coverAncestors(ctx context.Context) {
	if !*p.o.MemoryV2 || p.o.Systemd == nil || p.o.PSIRoot == "" {
		return
	}
	// What systemd was asked to set may not be in the files yet.
	claimed := map[string][2]uint64{}
	var leaves []string
	for _, u := range p.units {
		e := u.e
		if u.cgroup == "" || (!e.MemoryMinSet && !e.MemoryLowSet) {
			continue
		}
		leaves = append(leaves, u.cgroup)
		claimed[u.cgroup] = [2]uint64{e.MemoryMin, e.MemoryLow}
	}
	if p.o.SelfCgroup != "" {
		leaves = append(leaves, p.o.SelfCgroup)
	}
	slices := ancestorSlices(leaves)
	for _, s := range slices {
		for i, f := range protectionFiles {
			need := p.childrenClaim(s, f.file, i, claimed)
			have, err := readUint(filepath.Join(p.o.PSIRoot, filepath.FromSlash(s), f.file))
			if err != nil || need <= have || need == cgroups.Max {
				if err == nil {
					c := claimed[s]
					c[i] = max(c[i], have)
					claimed[s] = c
				}
				continue
			}
			unit := path.Base(s)
			if p.cfg.DryRun {
				p.log.Info("dry run: slice protection not raised", zap.String("slice", unit), zap.String(f.file, strconv.FormatUint(need, 10)))
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = p.o.Systemd.SetUnitProperties(sctx, unit, true, sddbus.Property{Name: f.prop, Value: godbusVariant(need)})
			cancel()
			if err != nil {
				p.log.Warn("raising the slice's memory protection failed; the protection below it is not in effect; retrying on the resync tick",
					zap.String("slice", unit), zap.String("property", f.prop), zap.Error(err))
				continue
			}
			c := claimed[s]
			c[i] = need
			claimed[s] = c
			p.log.Info("slice memory protection raised to what its children claim (the kernel limits theirs by it)",
				zap.String("slice", unit), zap.String("property", f.prop), zap.Uint64("from", have), zap.Uint64("to", need))
		}
	}
}

// childrenClaim is the sum of the protection (file, index i of claimed)
// that the direct children of the slice s claim: the larger of the file
// and what qmd asked systemd to set.
func (p *Protector) childrenClaim(s, file string, i int, claimed map[string][2]uint64) uint64 {
	dir := filepath.Join(p.o.PSIRoot, filepath.FromSlash(s))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum uint64
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		child := path.Join(s, ent.Name())
		v, err := readUint(filepath.Join(dir, ent.Name(), file))
		if err != nil {
			v = 0
		}
		v = max(v, claimed[child][i])
		if sum+v < sum {
			return cgroups.Max // a child claims "max": no finite slice value covers it
		}
		sum += v
	}
	return sum
}

// ancestorSlices are the slices above the given cgroups (path elements
// ending in ".slice", the root excluded), deepest first.
func ancestorSlices(cgroups []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, cg := range cgroups {
		for dir := path.Dir(path.Clean(cg)); dir != "/" && dir != "."; dir = path.Dir(dir) {
			if strings.HasSuffix(dir, ".slice") && !seen[dir] {
				seen[dir] = true
				out = append(out, dir)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// readUint reads a cgroup file holding one number ("max": cgroups.Max).
func readUint(name string) (uint64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	return cgroups.ParseUint(name, b)
}
