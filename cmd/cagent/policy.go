package main

import (
	"errors"
	"fmt"

	"github.com/cagent-dev/cagent/policy"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Validate a policy file or print its JSON Schema"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a policy file",
		Long: `Validate a policy file. Prints every problem as FILE:LINE:COL: message and
exits 1, or prints nothing and exits 0 when the file is valid.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := policy.ParseFile(args[0])
			var perrs policy.Errors
			switch {
			case err == nil:
				return nil
			case errors.As(err, &perrs):
				for _, e := range perrs {
					fmt.Fprintln(cmd.OutOrStdout(), e.Error())
				}
				return exitError{1}
			default:
				return err
			}
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the policy file (for editors)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := policy.JSONSchema()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return err
		},
	})
	return cmd
}
