package main

import (
	"fmt"
	"log/slog"

	"github.com/cagent-dev/cagent/sandbox"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newGCCmd) }

func newGCCmd() *cobra.Command {
	var stateDir string
	var all bool
	cmd := &cobra.Command{
		Use:   "gc [--state-dir DIR]",
		Short: "Remove what crashed sandbox runs left behind",
		Long: `Remove the network namespaces, veths, nftables tables, container state,
bundles and subnet leases of sandboxes whose cagent process is gone (a crash
or SIGKILL), and the one-off agent directories (/dev/shm/cagent-sandbox-*)
of such runs. Sandboxes of live runs are left alone. With --all, crashed runs
of every state directory are found through the host-wide registry in
/run/cagent/leases. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			ids, err := sandbox.GC(cmd.Context(), sandbox.GCConfig{StateDir: stateDir, All: all, Logger: log,
				OnDirRemoved: func(dir string) { fmt.Fprintln(cmd.OutOrStdout(), "removed directory", dir) }})
			for _, id := range ids {
				fmt.Fprintln(cmd.OutOrStdout(), "removed sandbox", id)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/cagent", "state directory of the runs to clean up")
	cmd.Flags().BoolVar(&all, "all", false, "also clean up crashed runs of any state directory (from the host-wide registry in "+sandbox.RegistryDir+")")
	return cmd
}
