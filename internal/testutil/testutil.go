// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the suite runs under CI (CI=true), where a test that
// would skip for lack of root or a tool must fail instead.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips the test when not root, or fails it under CI.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatal("this test needs root, and CI must run every root test")
	}
	t.Skip("needs root")
}

// RequireCommand returns the path of a command, skipping the test when it is
// missing (failing under CI, where .ci/run installs it).
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if InCI() {
		t.Fatalf("%s not found: .ci/run must install it", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// SkipUnlessCI skips the test for a missing facility, or fails it under CI,
// where every facility the suite needs is installed.
func SkipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// crashGCLock is held by the tests that leave a killed run for gc to find
// and by the one that runs gc --all, which collects the killed runs of
// every state directory on the host: without it, gc --all in one package's
// test can take another package's killed run before that test's own gc.
const crashGCLock = "/tmp/cagent-test-crash-gc.lock"

// LockCrashGC holds the host-wide crash-and-gc test lock until the test
// ends. go test runs packages in parallel processes, so the lock is a file.
func LockCrashGC(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(crashGCLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", crashGCLock, err)
	}
	t.Cleanup(func() { f.Close() }) // closing the descriptor releases the lock
}
