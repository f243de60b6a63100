// Command cagent is the single binary of Cagent: the egress proxy, the DNS
// filter, the sandbox runner, the standalone data plane and the control plane.
// Each subcommand lives in its own file and only wires flags to a package.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit status through cobra without printing.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// commands is filled by each subcommand file's init.
var commands []func() *cobra.Command

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cagent",
		Short: "A secure execution environment for AI agents",
		Long: `cagent runs untrusted AI agents in a sandbox whose only way out is a
policy-enforcing egress proxy and DNS filter. The proxy holds the API keys and
injects them at egress, so the agent never sees them.

Start with:  cagent up --config cagent.yaml
Validate a policy with:  cagent policy check cagent.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "cagent:", err)
		os.Exit(1)
	}
}
