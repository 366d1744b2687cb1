package hostinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BlockDevice is the device number of the block device node at path
// (symlinks such as /dev/disk/by-id followed by stat(2)).
func BlockDevice(path string) (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, fmt.Errorf("%s is not a block device", path)
	}
	return unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), nil
}

// SysBlock is a block device as sysfs shows it.
type SysBlock struct {
	Name string // the kernel's name, e.g. "vda1"
	// Disk and DiskDevno are the disk a partition is on ("vda", "254:0");
	// both empty for a whole disk, or when sysfs does not tell.
	Disk, DiskDevno string
}

// LookupBlock finds the block device devno ("MAJ:MIN") in the sysfs
// mounted at sysRoot (/sys): /sys/dev/block/MAJ:MIN links to the device's
// directory, and a partition's (it has a "partition" file) is inside its
// disk's (.../block/vda/vda1). ok is false when there is no block device
// with that number (tmpfs, overlay and proc have major 0).
func LookupBlock(sysRoot, devno string) (b SysBlock, ok bool) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "dev", "block", devno))
	if err != nil {
		return SysBlock{}, false
	}
	b.Name = filepath.Base(dir)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
		return b, true
	}
	disk := filepath.Dir(dir)
	if d, err := os.ReadFile(filepath.Join(disk, "dev")); err == nil {
		b.Disk, b.DiskDevno = filepath.Base(disk), strings.TrimSpace(string(d))
	}
	return b, true
}
