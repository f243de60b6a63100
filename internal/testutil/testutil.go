// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"os"
	"os/exec"
	"testing"
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
