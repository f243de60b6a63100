package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cagent-dev/cagent/secretstore"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func init() { commands = append(commands, newSecretCmd) }

func newSecretCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage the standalone data plane's encrypted secrets",
		Long: `Manage secrets kept encrypted in <state-dir>/secrets, referenced from a
policy as credential: {secret: NAME}. No command ever prints a value.`,
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", "/var/lib/cagent", "directory holding the data plane's state")

	cmd.AddCommand(&cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret, reading its value from stdin",
		Long: `Store a secret under NAME (1-128 of A-Z a-z 0-9 _ . -), reading the value from
stdin. On a terminal the value is not echoed. One trailing newline is removed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := secretstore.ValidName(args[0]); err != nil {
				return err
			}
			v, err := readSecretValue(cmd.InOrStdin(), cmd.ErrOrStderr(), args[0])
			if err != nil {
				return err
			}
			s, err := secretstore.Open(stateDir)
			if err != nil {
				return err
			}
			return s.Set(args[0], v)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List secret names",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := secretstore.Open(stateDir)
			if err != nil {
				return err
			}
			names, err := s.Names()
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a secret",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := secretstore.Open(stateDir)
			if err != nil {
				return err
			}
			return s.Delete(args[0])
		},
	})
	return cmd
}

// readSecretValue reads a secret from in: one line without echo when in is a
// terminal, else everything up to EOF. One trailing newline is removed.
func readSecretValue(in io.Reader, prompt io.Writer, name string) (string, error) {
	var data []byte
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		fmt.Fprintf(prompt, "Value for %s (not echoed): ", name)
		line, err := readNoEcho(f)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		data = line
	} else {
		b, err := io.ReadAll(io.LimitReader(in, secretstore.MaxValueBytes+3))
		if err != nil {
			return "", fmt.Errorf("read value: %w", err)
		}
		data = b
	}
	v := strings.TrimSuffix(string(data), "\n")
	v = strings.TrimSuffix(v, "\r")
	if v == "" {
		return "", errors.New("empty value on stdin")
	}
	if len(v) > secretstore.MaxValueBytes {
		return "", fmt.Errorf("value longer than %d bytes", secretstore.MaxValueBytes)
	}
	return v, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readNoEcho reads one line from the terminal f with echo turned off,
// restoring the terminal's settings afterwards.
func readNoEcho(f *os.File) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("turn off echo: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	line, err := bufio.NewReader(io.LimitReader(f, secretstore.MaxValueBytes+3)).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read value: %w", err)
	}
	return line, nil
}
