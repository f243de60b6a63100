package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cagent-dev/cagent/audit"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newAuditCmd) }

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Work with audit logs"}
	var strict bool
	verify := &cobra.Command{
		Use:   "verify FILE|DIR...",
		Short: "Check the hash chain of audit logs",
		Long: `Check audit log files as one hash chain, in the order given; a directory
stands for its *.jsonl files in name order (the order cagent writes them in).
Each file's first line must carry the hash of the previous file's last line.

Prints "OK: N events in M files" and exits 0, or prints FILE:LINE: and what
is broken at the first line that does not continue the chain, and exits 1.

The first file may continue a chain whose older files were deleted by the
retention; that is reported as a note. With --strict it is an error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := auditPaths(args)
			if err != nil {
				return err
			}
			res, err := audit.VerifyChain(paths)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.Broken == nil && strict && res.Anchor != "" {
				first := ""
				for _, p := range paths {
					if st, err := os.Stat(p); err == nil && st.Size() > 0 {
						first = p
						break
					}
				}
				res.Broken = &audit.FileBreak{File: first, Line: 1, Msg: "the chain does not start here: its first line continues from a file not given (--strict)"}
			}
			if res.Broken != nil {
				fmt.Fprintln(out, res.Broken.Error())
				return exitError{1}
			}
			fmt.Fprintf(out, "OK: %d events in %d files\n", res.Events, res.Files)
			if res.Anchor != "" {
				fmt.Fprintf(out, "note: the first event continues from a file not given (prev %.16s...); earlier events were not checked\n", res.Anchor)
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&strict, "strict", false, "require the chain to start at the first file (no older files deleted or left out)")
	cmd.AddCommand(verify)
	return cmd
}

// auditPaths expands directories to their *.jsonl files, sorted by name,
// and keeps the order of everything else.
func auditPaths(args []string) ([]string, error) {
	var paths []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			paths = append(paths, a)
			continue
		}
		ents, err := os.ReadDir(a) // sorted by name
		if err != nil {
			return nil, err
		}
		n := len(paths)
		for _, e := range ents {
			if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".jsonl") {
				paths = append(paths, filepath.Join(a, e.Name()))
			}
		}
		if len(paths) == n {
			return nil, fmt.Errorf("%s: no *.jsonl files", a)
		}
	}
	return paths, nil
}
