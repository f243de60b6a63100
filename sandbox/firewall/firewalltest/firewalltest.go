// Package firewalltest lets test binaries that start sandboxes leave no
// host nftables table behind: the table shared by all sandboxes outlives
// runs by design (see package firewall), but not a test suite.
package firewalltest

import (
	"fmt"
	"os"

	"github.com/cagent-dev/cagent/sandbox/firewall"
)

// Exit removes the shared host table when no run holds it and no sandbox
// interface is left, then exits with code. Use it as goleak's
// Cleanup(firewalltest.Exit), or call it at the end of TestMain.
func Exit(code int) {
	if os.Geteuid() == 0 {
		if _, err := firewall.Sandboxes.RemoveIfIdle(); err != nil {
			fmt.Fprintln(os.Stderr, "firewalltest: remove the host table:", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}
