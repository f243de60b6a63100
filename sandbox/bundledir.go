package sandbox

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MemBundleDir holds the bundles of runs when it is on a tmpfs: a bundle
// (config.json, the rootfs skeleton, resolv.conf, hosts, hostname) is a
// dozen metadata operations that cost several milliseconds on a journalled
// disk under load and microseconds in memory, and nothing of it outlives
// its run. Without a usable tmpfs, bundles go under <state-dir>/sandbox.
const MemBundleDir = "/dev/shm/cagent-bundles"

// bundlePath returns where the bundle of sandbox id is written.
func bundlePath(sbDir, id string) string {
	if base, ok := memBundleBase(true); ok {
		return filepath.Join(base, id)
	}
	return filepath.Join(sbDir, "bundles", id)
}

// memBundleBase returns MemBundleDir if it is a directory on a tmpfs that
// only this (root) user can write: /dev/shm is world-writable, and a
// directory someone else made (or a symlink) could be used to swap a
// bundle's config between its writing and the runtime reading it. With
// create, a missing directory is made.
func memBundleBase(create bool) (string, bool) {
	return privateTmpfsDir(MemBundleDir, create)
}

func privateTmpfsDir(dir string, create bool) (string, bool) {
	if !onTmpfs(filepath.Dir(dir)) {
		return "", false
	}
	if create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", false
		}
	}
	var fi unix.Stat_t
	if err := unix.Lstat(dir, &fi); err != nil {
		return "", false
	}
	if fi.Mode&unix.S_IFMT != unix.S_IFDIR || fi.Uid != uint32(os.Geteuid()) || fi.Mode&0o077 != 0 {
		return "", false
	}
	return dir, true
}

func onTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
