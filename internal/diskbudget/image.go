// Package diskbudget owns [partition.disk]: a size-limited ext4 image,
// preallocated on the host filesystem and loop-mounted on the partition's
// writable-state directory (the host side of its /var volume) before the
// partition's container is created or started, so a partition can never
// take more than max of that filesystem. Where loop images cannot be used
// it falls back to a free-space watch (watch.go).
//
// Why an image and not project quotas: an image behaves the same on every
// kernel with loop devices (quotas need CONFIG_QUOTA and a filesystem made
// or tuned with the project feature, which the root filesystem of an
// existing host usually is not), the fallocate reserves the space up front
// (a quota only caps, it does not reserve), and it is testable on the
// build machine, whose kernel has no quota support.
package diskbudget

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/mountinfo"
)

// ImageSuffix names the image next to the directory it is mounted on:
// /var/qm -> /var/qm.qmd.img. It lives on the same filesystem as the
// directory, the one the budget protects.
const ImageSuffix = ".qmd.img"

// ImageFile is the image of the writable-state directory path.
func ImageFile(path string) string { return filepath.Clean(path) + ImageSuffix }

// Image is one partition's budget: an ext4 image File mounted on Path.
type Image struct {
	File    string // the image, e.g. /var/qm.qmd.img
	Path    string // the writable-state directory, e.g. /var/qm
	Max     uint64 // the image size
	Reserve uint64 // free space the host filesystem keeps
}

// Action says what Ensure did.
type Action string

// Actions of Ensure.
const (
	Mounted        Action = "mounted"         // an existing image was checked and mounted
	AlreadyMounted Action = "already-mounted" // the image was mounted already (qmd restart)
	Created        Action = "created"         // a new, empty image was created and mounted
	Migrated       Action = "migrated"        // a new image was created, the directory's data copied into it
	Grown          Action = "grown"           // the image was grown to max (and mounted)
)

// Result is what Ensure did and the usage afterwards.
type Result struct {
	Action Action
	Loop   string // the loop device, e.g. /dev/loop3
	Used   uint64 // bytes used inside the image
	Size   uint64 // bytes the image's filesystem holds (a little below Max: ext4 metadata)
	Moved  uint64 // bytes of data migrated into the image
	// Warning: what did not work and was left for later (a grow).
	Warning string
}

// ErrRefused marks an error that a retry will not fix by itself: the
// operator has to act (free space, shrink, data in the way).
var ErrRefused = errors.New("disk budget refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// Ensure makes Path the mount of an image of Max bytes: it re-uses and
// mounts an existing image (fsck first), grows it when Max grew, or creates
// one, migrating what Path holds into it. It never hides data under a
// mount and never shrinks an image. It must only run while the partition's
// container is not running: the container binds Path at start, and a
// migration under a running writer would lose its writes.
func (im Image) Ensure(ctx context.Context) (Result, error) {
	if im.Max == 0 {
		return Result{}, errors.New("disk budget: max is 0")
	}
	src, mounted, err := mountSource(im.Path)
	if err != nil {
		return Result{}, err
	}
	if mounted {
		return im.ensureMounted(ctx, src)
	}
	st, err := os.Stat(im.File)
	switch {
	case err == nil:
		return im.reuse(ctx, st.Size())
	case errors.Is(err, fs.ErrNotExist):
		return im.create(ctx)
	default:
		return Result{}, fmt.Errorf("disk budget: image %s: %w", im.File, err)
	}
}

// ensureMounted handles a Path that is a mount already: qmd's image (a qmd
// restart, a partition restart) is grown online when Max grew; anything
// else is the operator's own filesystem, which qmd does not touch.
func (im Image) ensureMounted(ctx context.Context, src string) (Result, error) {
	back := loopBacking(src)
	if back == "" || !sameFile(back, im.File) {
		return Result{}, refuse("%s is already a mount of %s, not of qmd's image %s: qmd does not mount over it (unset [partition.disk] max, or unmount it)", im.Path, src, im.File)
	}
	res := Result{Action: AlreadyMounted, Loop: src}
	if err := noDiscard(src); err != nil {
		return Result{}, err
	}
	st, err := os.Stat(im.File)
	if err != nil {
		return Result{}, fmt.Errorf("disk budget: image %s: %w", im.File, err)
	}
	switch {
	case uint64(st.Size()) > im.Max:
		return Result{}, im.shrinkRefused(st.Size())
	case uint64(st.Size()) < im.Max:
		// Ensure runs while the partition's container is stopped: unmount
		// and grow offline (an online resize needs CAP_SYS_RESOURCE and a
		// kernel that allows it). If something else keeps the mount busy,
		// try online; failing that, keep the current size until a later
		// start: a smaller budget is no reason to keep the partition down.
		if err := unix.Unmount(im.Path, 0); err == nil {
			return im.reuse(ctx, st.Size())
		}
		if err := im.extend(st.Size()); err != nil {
			return Result{}, err
		}
		err := run(ctx, "losetup", "-c", src)
		if err == nil {
			err = run(ctx, "resize2fs", src)
		}
		if err != nil {
			res.Warning = "the mount is busy and an online resize failed; the filesystem keeps its size until a start finds it unmounted: " + err.Error()
		} else {
			res.Action = Grown
		}
	}
	res.Used, res.Size = usage(im.Path)
	return res, nil
}

// reuse mounts an existing image (after a host reboot, or after it was
// unmounted), growing it first when Max grew.
func (im Image) reuse(ctx context.Context, size int64) (Result, error) {
	if uint64(size) > im.Max {
		return Result{}, im.shrinkRefused(size)
	}
	if err := os.MkdirAll(im.Path, 0o755); err != nil {
		return Result{}, fmt.Errorf("disk budget: %w", err)
	}
	// Empty directories are no data: systemd-tmpfiles recreates
	// /var/qm/tmp at every boot, before qmd mounts the image over /var/qm.
	// They are set aside and recreated in the image if it lacks them (a
	// volume's host side must exist for Podman).
	skel, onlyDirs, err := skeleton(im.Path)
	if err != nil {
		return Result{}, err
	}
	if !onlyDirs {
		// Both hold data (a partition ran without the budget, or a
		// migration was interrupted after the image was committed): qmd
		// cannot tell which is current and hides neither.
		return Result{}, refuse("%s holds data and is not mounted, and the image %s exists: qmd will not hide either; move the directory's content into the image or aside, or remove the image", im.Path, im.File)
	}
	// -p repairs what is safe to repair unattended; exit 1 and 2 mean
	// "fixed", 4 and above need a human.
	if code, out := runCode(ctx, "e2fsck", "-p", im.File); code >= 4 || code < 0 {
		return Result{}, refuse("e2fsck -p %s failed (exit %d): %s; run e2fsck by hand", im.File, code, out)
	}
	act := Mounted
	if uint64(size) < im.Max {
		if err := im.extend(size); err != nil {
			return Result{}, err
		}
		// An offline resize insists on a fresh forced check.
		if code, out := runCode(ctx, "e2fsck", "-f", "-p", im.File); code >= 4 || code < 0 {
			return Result{}, refuse("e2fsck -f -p %s failed (exit %d): %s", im.File, code, out)
		}
		if err := run(ctx, "resize2fs", im.File); err != nil {
			return Result{}, err
		}
		act = Grown
	}
	// Re-take the space that mkfs, resize2fs or a host fstrim gave back,
	// so the host's free space keeps counting the whole budget.
	if err := im.allocate(im.File); err != nil {
		return Result{}, err
	}
	if err := removeContents(im.Path); err != nil { // empty directories only, checked above
		return Result{}, fmt.Errorf("disk budget: %w", err)
	}
	loop, err := mount(ctx, im.File, im.Path)
	if err != nil {
		return Result{}, err
	}
	if err := recreate(im.Path, skel); err != nil {
		return Result{}, err
	}
	return im.result(act, loop, 0)
}

// dirEntry is an empty directory below the writable-state directory, to
// recreate in the image.
type dirEntry struct {
	rel      string
	mode     fs.FileMode
	uid, gid int
}

// skeleton lists the directories below dir, parents first; onlyDirs is
// false as soon as anything else (a file, a link, a device) is there.
func skeleton(dir string) ([]dirEntry, bool, error) {
	var out []dirEntry
	onlyDirs := true
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			onlyDirs = false
			return filepath.SkipAll
		}
		if p == dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		e := dirEntry{mode: info.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky | fs.ModeSetuid)}
		e.rel, _ = filepath.Rel(dir, p)
		if st != nil {
			e.uid, e.gid = int(st.Uid), int(st.Gid)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("disk budget: reading %s: %w", dir, err)
	}
	return out, onlyDirs, nil
}

// recreate makes the listed directories that the image lacks, with their
// owners and modes; existing ones are the partition's and left alone.
func recreate(dir string, skel []dirEntry) error {
	for _, e := range skel {
		p := filepath.Join(dir, e.rel)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("disk budget: %w", err)
		}
		if err := os.Chown(p, e.uid, e.gid); err != nil {
			return fmt.Errorf("disk budget: %w", err)
		}
		if err := os.Chmod(p, e.mode); err != nil {
			return fmt.Errorf("disk budget: %w", err)
		}
	}
	return nil
}

// create makes a new image, preallocated, and mounts it on Path; what
// Path holds is copied into it first (ownership, permissions, xattrs,
// hard links, sparse files kept) and removed from under the mount only
// after the copy succeeded and the image was committed by a rename.
func (im Image) create(ctx context.Context) (Result, error) {
	if err := im.checkFree(im.Max); err != nil {
		return Result{}, err
	}
	var data uint64
	pathExists := false
	if st, err := os.Stat(im.Path); err == nil {
		if !st.IsDir() {
			return Result{}, refuse("%s is not a directory", im.Path)
		}
		pathExists = true
		if data, err = diskUsage(im.Path); err != nil {
			return Result{}, err
		}
		// ext4 keeps ~2-5 % for its metadata: data that fills more than
		// 90 % of max does not fit with room to run.
		if data > im.Max/10*9 {
			return Result{}, refuse("%s holds %s, more than 90%% of max %s: raise [partition.disk] max or clean up the directory first", im.Path, human(data), human(im.Max))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("disk budget: %w", err)
	}
	tmpImg := im.File + ".new"
	im.cleanInterrupted(tmpImg)
	if err := im.allocate(tmpImg); err != nil {
		return Result{}, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmpImg)
		}
	}()
	// -m 0: no blocks reserved for root; the partition's own root would
	// use them anyway. nodiscard: mkfs would otherwise punch holes into
	// the preallocated file (discard on a loop device = hole punch) and
	// give the space back to the host. lazy init off: the inode tables are written now,
	// not by a kernel thread after the partition started.
	if err := run(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", tmpImg); err != nil {
		return Result{}, err
	}
	if err := im.allocate(tmpImg); err != nil {
		return Result{}, err
	}
	act := Created
	if pathExists {
		if n, err := entries(im.Path); err != nil {
			return Result{}, err
		} else if n > 0 {
			act = Migrated
		}
		if err := im.copyInto(ctx, tmpImg); err != nil {
			return Result{}, err
		}
	} else if err := os.MkdirAll(im.Path, 0o755); err != nil {
		return Result{}, fmt.Errorf("disk budget: %w", err)
	}
	if err := os.Rename(tmpImg, im.File); err != nil {
		return Result{}, fmt.Errorf("disk budget: commit image: %w", err)
	}
	ok = true
	if act == Migrated {
		if err := removeContents(im.Path); err != nil {
			return Result{}, fmt.Errorf("disk budget: %s was copied into %s, removing the original failed (the next start refuses until it is empty): %w", im.Path, im.File, err)
		}
	}
	loop, err := mount(ctx, im.File, im.Path)
	if err != nil {
		return Result{}, err
	}
	if act != Migrated {
		data = 0
	}
	return im.result(act, loop, data)
}

// cleanInterrupted removes what a creation cut short (qmd killed during a
// migration) left behind: the temporary mount (it outlives qmd) and the
// uncommitted image. The directory's data was only read by then.
func (im Image) cleanInterrupted(tmpImg string) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(im.File), migratePrefix+"*"))
	for _, d := range stale {
		for unix.Unmount(d, 0) == nil {
		}
		_ = os.Remove(d)
	}
	_ = os.Remove(tmpImg)
}

const migratePrefix = ".qmd-disk-migrate-"

// copyInto mounts the new image at a temporary directory next to it and
// copies Path's content and its root's owner and mode into it.
func (im Image) copyInto(ctx context.Context, img string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(im.File), migratePrefix)
	if err != nil {
		return fmt.Errorf("disk budget: %w", err)
	}
	defer func() { _ = os.Remove(tmp) }()
	if _, err := mount(ctx, img, tmp); err != nil {
		return err
	}
	umounted := false
	defer func() {
		if !umounted {
			_ = unix.Unmount(tmp, 0)
		}
	}()
	// cp -a keeps owners, modes, timestamps, xattrs (SELinux labels
	// included), ACLs, hard links and symlinks; --sparse=always keeps
	// sparse files sparse so they fit as they did.
	if err := run(ctx, "cp", "-a", "--sparse=always", im.Path+"/.", tmp+"/"); err != nil {
		return fmt.Errorf("disk budget: migrating %s into the image: %w", im.Path, err)
	}
	if err := copyRootAttrs(im.Path, tmp); err != nil {
		return fmt.Errorf("disk budget: copying the attributes of %s: %w", im.Path, err)
	}
	lost := filepath.Join(tmp, "lost+found")
	if _, err := os.Stat(filepath.Join(im.Path, "lost+found")); errors.Is(err, fs.ErrNotExist) {
		// mkfs's lost+found is not the partition's data; e2fsck recreates it.
		_ = os.Remove(lost)
	}
	unix.Sync()
	if err := unix.Unmount(tmp, 0); err != nil {
		return fmt.Errorf("disk budget: unmount %s: %w", tmp, err)
	}
	umounted = true
	return nil
}

// result is what Ensure did once the image is mounted on Path through
// the loop device loop (as mount found it).
func (im Image) result(act Action, loop string, moved uint64) (Result, error) {
	r := Result{Action: act, Loop: loop, Moved: moved}
	r.Used, r.Size = usage(im.Path)
	return r, nil
}

func (im Image) shrinkRefused(size int64) error {
	return refuse("the image %s is %s, max is %s: shrinking is not supported (ext4 cannot shrink online and data may not fit); set max to at least %s, or stop the partition, move its data out and remove the image",
		im.File, human(uint64(size)), human(im.Max), human(uint64(size)))
}

// checkFree refuses when the host filesystem holding the image would keep
// less than Reserve after need more bytes are allocated.
func (im Image) checkFree(need uint64) error {
	dir := filepath.Dir(im.File)
	free, err := FreeBytes(dir)
	if err != nil {
		return fmt.Errorf("disk budget: statfs %s: %w", dir, err)
	}
	if free < need+im.Reserve {
		return refuse("the filesystem of %s has %s free; the image needs %s and the reserve is %s: free space, lower [partition.disk] max or reserve",
			dir, human(free), human(need), human(im.Reserve))
	}
	return nil
}

// allocate creates the image file with all its blocks allocated: the host
// filesystem's free space is taken up front, so the image can neither fail
// later for lack of space nor take more than Max.
func (im Image) allocate(file string) error { return im.fallocate(file, os.O_CREATE, 0) }

// extend grows the image file from size to Max, preallocated.
func (im Image) extend(size int64) error {
	if err := im.checkFree(im.Max - uint64(size)); err != nil {
		return err
	}
	return im.fallocate(im.File, 0, size)
}

// fallocate allocates file's blocks from off up to Max and syncs it; flag
// is added to O_RDWR (O_CREATE for a new file).
func (im Image) fallocate(file string, flag int, off int64) error {
	f, err := os.OpenFile(file, os.O_RDWR|flag, 0o600)
	if err != nil {
		return fmt.Errorf("disk budget: %w", err)
	}
	defer f.Close()
	// Mode 0 allocates the holes and leaves written blocks as they are:
	// also used to fill the holes mkfs (zeroing by hole punching) and
	// fstrim (discard through the loop device) leave behind.
	if err := unix.Fallocate(int(f.Fd()), 0, off, int64(im.Max)-off); err != nil {
		return fmt.Errorf("disk budget: fallocate %s to %s: %w", file, human(im.Max), err)
	}
	return f.Sync()
}

// mount loop-mounts img on dir and returns the loop device. mount(8) sets
// up the loop device with autoclear: it is released when the filesystem is
// unmounted. The mount is made in the host's mount namespace (qmd.service
// has no private mounts), so it outlives qmd.
func mount(ctx context.Context, img, dir string) (loop string, err error) {
	if err := run(ctx, "mount", "-t", "ext4", "-o", "loop", img, dir); err != nil {
		return "", err
	}
	src, _, err := mountSource(dir)
	if err != nil {
		return "", err
	}
	// Direct I/O on the backing file: without it every block the
	// partition writes is cached twice (in the image's ext4 and in the
	// host's cache of the image file), memory the partition's cgroup does
	// not pay for. An optimisation only: a backing filesystem without
	// O_DIRECT keeps buffered I/O.
	_, _ = runCode(ctx, "losetup", "--direct-io=on", src)
	return src, noDiscard(src)
}

// noDiscard turns discard off on the loop device: a discard there (the
// host's fstrim.timer trims every mounted filesystem) punches holes into
// the image and gives its space back to the host, which may then use it;
// the partition's next writes would fail with I/O errors instead of a
// clean ENOSPC at max. Without discard the image keeps its preallocation.
func noDiscard(dev string) error {
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "loop") {
		return nil
	}
	f := filepath.Join("/sys/block", name, "queue", "discard_max_bytes")
	if err := os.WriteFile(f, []byte("0"), 0); err != nil {
		return fmt.Errorf("disk budget: turning discard off on %s: %w", dev, err)
	}
	return nil
}

// mountSource returns the source of the topmost mount on dir, if any.
func mountSource(dir string) (string, bool, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open(mountinfo.Path)
	if err != nil {
		return "", false, fmt.Errorf("disk budget: %w", err)
	}
	defer f.Close()
	ms, err := mountinfo.Parse(f)
	if err != nil {
		return "", false, fmt.Errorf("disk budget: read mountinfo: %w", err)
	}
	src, found := "", false
	for _, m := range ms {
		if m.MountPoint == dir {
			src, found = m.Source, true // the last one is on top
		}
	}
	return src, found, nil
}

// loopBacking returns the file behind a loop device (/dev/loop3), "" when
// dev is not a loop device.
func loopBacking(dev string) string {
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "loop") {
		return ""
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// FreeBytes is the space available to unprivileged writers on the
// filesystem holding path (statfs f_bavail): the partition's processes
// are not root on the host's filesystem reserve.
func FreeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// usage is the used and total bytes of the filesystem mounted at dir.
func usage(dir string) (used, size uint64) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, 0
	}
	return (st.Blocks - st.Bfree) * uint64(st.Bsize), st.Blocks * uint64(st.Bsize)
}

// diskUsage is the space the files under dir take (allocated blocks, hard
// links counted once), what they will take in the image.
func diskUsage(dir string) (uint64, error) {
	var total uint64
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk budget: measuring %s: %w", dir, err)
	}
	return total, nil
}

func entries(dir string) (int, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("disk budget: %w", err)
	}
	return len(es), nil
}

func removeContents(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range es {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, name string, args ...string) error {
	if code, out := runCode(ctx, name, args...); code != 0 {
		return fmt.Errorf("disk budget: %s %s: exit %d: %s", name, strings.Join(args, " "), code, out)
	}
	return nil
}

// runCode runs a command and returns its exit code (-1 when it could not
// run) and its trimmed output.
func runCode(ctx context.Context, name string, args ...string) (int, string) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	msg := strings.TrimSpace(out.String())
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, msg
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), msg
	default:
		return -1, strings.TrimSpace(msg + " " + err.Error())
	}
}

func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f%ciB", float64(b)/float64(div), "KMGTP"[exp])
}

// copyRootAttrs gives the image's root directory the owner, mode and
// extended attributes (an SELinux label) of the directory it replaces: cp
// copies what is inside a directory, not the target itself.
func copyRootAttrs(from, to string) error {
	info, err := os.Stat(from)
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no stat", from)
	}
	if err := os.Chown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(to, info.Mode().Perm()|info.Mode()&(fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(from, buf)
	if err != nil || n == 0 {
		return nil // no xattrs, or a filesystem without them: nothing to keep
	}
	var errs []error
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		val := make([]byte, 64<<10)
		m, err := unix.Getxattr(from, name, val)
		if err != nil {
			continue
		}
		if err := unix.Setxattr(to, name, val[:m], 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			errs = append(errs, fmt.Errorf("xattr %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
