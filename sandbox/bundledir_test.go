package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cagent-dev/cagent/internal/testutil"
)

// TestPrivateTmpfsDir: the in-memory bundle directory is used only when it
// is a real directory on a tmpfs, owned by us and closed to others: in a
// world-writable /dev/shm anyone could have made it first.
func TestPrivateTmpfsDir(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	base, err := os.MkdirTemp("/dev/shm", "cagent-bundletest-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if _, ok := privateTmpfsDir(filepath.Join(base, "x"), false); ok {
		t.Error("missing directory accepted without create")
	}
	good := filepath.Join(base, "good")
	if got, ok := privateTmpfsDir(good, true); !ok || got != good {
		t.Fatalf("privateTmpfsDir(create) = %q, %v", got, ok)
	}
	if fi, err := os.Stat(good); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created with %v, %v; want 0700", fi.Mode(), err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, ok := privateTmpfsDir(open, true); ok {
		t.Error("group/world-writable directory accepted")
	}
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	if _, ok := privateTmpfsDir(link, true); ok {
		t.Error("symlink accepted")
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, ok := privateTmpfsDir(file, true); ok {
		t.Error("regular file accepted")
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		os.Mkdir(other, 0o700)
		os.Chown(other, 1000, 1000)
		if _, ok := privateTmpfsDir(other, true); ok {
			t.Error("directory owned by another user accepted")
		}
	}
	// Not a tmpfs: refused (a temp dir on the test machine's disk).
	testutil.RequireRoot(t)
	disk := t.TempDir()
	var st = filepath.Join(disk, "d")
	if _, ok := privateTmpfsDir(st, true); ok && !onTmpfs(disk) {
		t.Error("directory on a disk accepted")
	}
}
