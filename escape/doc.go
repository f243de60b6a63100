// Package escape is the sandbox escape suite: end-to-end tests that build
// the fake internet (internal/fakeinet), start sandboxes under runc and
// gVisor, and from inside try every way out listed in issue 4 and
// docs/security.md ("Escape suite"). Each attempt is its own named subtest
// that must fail while the allowed path keeps working. The attacker is
// escape/probe, a static binary bound into each sandbox.
package escape
