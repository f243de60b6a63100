package main

import (
	"github.com/cagent-dev/cagent/tlsca"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newCACmd) }

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Manage the data plane's TLS interception CA"}
	var stateDir string
	export := &cobra.Command{
		Use:   "export",
		Short: "Print the interception CA certificate (PEM)",
		Long: `Print the certificate of the data plane's TLS interception CA in PEM form,
creating the CA in the state directory if it does not exist yet. Agents and
tools that talk to tls_intercept domains must trust this certificate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := tlsca.LoadOrCreate(stateDir, nil)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(ca.CertPEM())
			return err
		},
	}
	export.Flags().StringVar(&stateDir, "state-dir", "/var/lib/cagent", "directory holding the data plane's state")
	cmd.AddCommand(export)
	return cmd
}
