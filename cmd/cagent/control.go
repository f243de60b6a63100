package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/control"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/client"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

func init() { commands = append(commands, newControlCmd) }

func newControlCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run or administer the multi-tenant control plane",
		Long: `The control plane holds tenants, tokens, domain policies, secrets, IP ACLs,
agents, commands, the audit trail and logs, behind a REST API under /api/v1.

Server:   cagent control serve [--db sqlite:PATH | postgres://...] [--listen ADDR]
Keys:     cagent control rotate-key
Client:   cagent control tenants|tokens|agents|policies|secrets ... --url URL --token TOKEN
          (or CAGENT_URL and CAGENT_TOKEN)`,
	}
	cmd.AddCommand(newControlServeCmd(), newControlRotateKeyCmd())
	cl := &apiClient{}
	pf := cmd.PersistentFlags()
	pf.StringVar(&cl.url, "url", "", "control plane URL (default $CAGENT_URL or "+client.DefaultURL+")")
	pf.StringVar(&cl.token, "token", "", "API token (default $CAGENT_TOKEN)")
	pf.StringVar(&cl.tenant, "tenant", "", "tenant id (default: the token's tenant)")
	cmd.AddCommand(clientCommands(cl)...)
	return cmd
}

func serverFlags(cmd *cobra.Command, cfg *control.Config) {
	f := cmd.Flags()
	f.StringVar(&cfg.DB, "db", "", "database: sqlite:PATH or postgres://... (default sqlite:<data-dir>/control.db)")
	f.StringVar(&cfg.DataDir, "data-dir", control.DefaultDataDir, "directory for the SQLite database and the key files")
	f.StringVar(&cfg.TokenKeyFile, "token-key-file", "", "HMAC key for tokens (default <data-dir>/token.key; $"+control.EnvTokenKey+" overrides)")
	f.StringVar(&cfg.SecretKeyFile, "secret-key-file", "", "AES-256 keyring for secrets (default <data-dir>/secrets.keyring; $"+control.EnvSecretKeys+" overrides)")
}

func newControlServeCmd() *cobra.Command {
	var cfg control.Config
	var proxies []string
	var rps float64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the control plane API",
		Long: `Serve the control plane API until interrupted (SIGINT/SIGTERM shut it down
gracefully). The first start creates the key files (mode 0600) and prints a
bootstrap super-admin token once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range proxies {
				pfx, err := netip.ParsePrefix(p)
				if err != nil {
					a, aerr := netip.ParseAddr(p)
					if aerr != nil {
						return fmt.Errorf("--trusted-proxy %q: %w", p, err)
					}
					pfx = netip.PrefixFrom(a, a.BitLen())
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, pfx)
			}
			cfg.Rate = rate.Limit(rps)
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			cfg.Stdout = cmd.OutOrStdout()
			return control.Run(cmd.Context(), cfg)
		},
	}
	serverFlags(cmd, &cfg)
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", control.DefaultListen, "address to listen on")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate to serve HTTPS (with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	f.BoolVar(&cfg.AgentMTLS, "agent-mtls", false, "data planes enroll for a client certificate from this control plane's CA; agent routes require it (needs --tls-cert)")
	f.StringSliceVar(&proxies, "trusted-proxy", nil, "address or CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable)")
	f.Float64Var(&rps, "rate", 50, "API requests per second allowed per token")
	f.IntVar(&cfg.Burst, "burst", 100, "API request burst per token")
	f.DurationVar(&cfg.LogRetention, "log-retention", control.DefaultLogRetention, "delete ingested logs older than this")
	f.IntVar(&cfg.AuthFailLimit, "auth-fail-limit", api.DefaultAuthFailLimit, "failed token attempts allowed per source address (IPv4 address or IPv6 /64) per --auth-fail-window before it gets 429; -1 turns the throttle off")
	f.DurationVar(&cfg.AuthFailWindow, "auth-fail-window", api.DefaultAuthFailWindow, "window of --auth-fail-limit")
	q := api.DefaultQuotas
	f.IntVar(&cfg.Quotas.Agents, "quota-agents", q.Agents, "agents per tenant")
	f.IntVar(&cfg.Quotas.Tokens, "quota-tokens", q.Tokens, "tokens per tenant")
	f.IntVar(&cfg.Quotas.Policies, "quota-policies", q.Policies, "policy entries per tenant")
	f.IntVar(&cfg.Quotas.Secrets, "quota-secrets", q.Secrets, "secrets per tenant")
	f.IntVar(&cfg.Quotas.ACLs, "quota-acls", q.ACLs, "IP ACL entries per tenant")
	return cmd
}

func newControlRotateKeyCmd() *cobra.Command {
	var cfg control.Config
	var prune bool
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Generate a new secrets key and re-encrypt every secret with it",
		Long: `Generate a new AES-256 key, make it the active key of the keyring and
re-encrypt every stored secret with it. Old keys stay in the keyring file
(decrypt-only) unless --prune is given; prune only while the server is
stopped. A running server picks up the new keyring by itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return control.RotateKey(cmd.Context(), cfg, prune, cmd.OutOrStdout())
		},
	}
	serverFlags(cmd, &cfg)
	cmd.Flags().BoolVar(&prune, "prune", false, "drop the old keys once every secret is re-encrypted")
	return cmd
}

// apiClient holds the client flags of the admin subcommands.
type apiClient struct {
	url, token, tenant string
}

func (c *apiClient) client() *client.Client {
	cl := &client.Client{URL: c.url, Token: c.token}
	cl.FromEnv()
	return cl
}

func (c *apiClient) print(cmd *cobra.Command, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// call builds a RunE for a request whose path and body depend on the args.
func (c *apiClient) call(method string, tenant bool, build func(args []string) (string, any, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		p, body, err := build(args)
		if err != nil {
			return err
		}
		cl := c.client()
		if tenant {
			tp, err := cl.TenantPath(cmd.Context(), c.tenant)
			if err != nil {
				return err
			}
			p = tp + p
		}
		b, err := cl.Do(cmd.Context(), method, p, body)
		if err != nil {
			return err
		}
		return c.print(cmd, b)
	}
}

func fixed(p string) func([]string) (string, any, error) {
	return func([]string) (string, any, error) { return p, nil, nil }
}

func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{Use: use, Short: short}
	g.AddCommand(subs...)
	return g
}

func clientCommands(c *apiClient) []*cobra.Command {
	esc := url.PathEscape
	// tenants
	tenants := group("tenants", "Manage tenants (superadmin)",
		&cobra.Command{Use: "list", Short: "List tenants", Args: cobra.NoArgs, RunE: c.call("GET", false, fixed("/api/v1/tenants"))},
		&cobra.Command{Use: "create NAME", Short: "Create a tenant", Args: cobra.ExactArgs(1), RunE: c.call("POST", false, func(a []string) (string, any, error) {
			return "/api/v1/tenants", map[string]any{"name": a[0]}, nil
		})},
		&cobra.Command{Use: "delete ID", Short: "Delete a tenant (disables its tokens and agents)", Args: cobra.ExactArgs(1), RunE: c.call("DELETE", false, func(a []string) (string, any, error) {
			return "/api/v1/tenants/" + esc(a[0]), nil, nil
		})},
	)

	// tokens
	var kind, name, agent string
	var expires time.Duration
	create := &cobra.Command{Use: "create", Short: "Create a token (printed once)", Args: cobra.NoArgs, RunE: c.call("POST", true, func([]string) (string, any, error) {
		body := map[string]any{"kind": kind, "name": name}
		if agent != "" {
			body["agent_id"] = agent
		}
		if expires > 0 {
			body["expires_at"] = time.Now().Add(expires).UTC().Format(time.RFC3339)
		}
		return "/tokens", body, nil
	})}
	create.Flags().StringVar(&kind, "kind", "dev", "admin, dev or agent")
	create.Flags().StringVar(&name, "name", "", "a label for the token")
	create.Flags().StringVar(&agent, "agent", "", "agent id (agent tokens)")
	create.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: no expiry)")
	setDisabled := func(v bool) func([]string) (string, any, error) {
		return func(a []string) (string, any, error) {
			return "/tokens/" + esc(a[0]), map[string]any{"disabled": v}, nil
		}
	}
	tokens := group("tokens", "Manage a tenant's API tokens",
		&cobra.Command{Use: "list", Short: "List tokens", Args: cobra.NoArgs, RunE: c.call("GET", true, fixed("/tokens"))},
		create,
		&cobra.Command{Use: "disable ID", Short: "Disable a token", Args: cobra.ExactArgs(1), RunE: c.call("PATCH", true, setDisabled(true))},
		&cobra.Command{Use: "enable ID", Short: "Enable a token", Args: cobra.ExactArgs(1), RunE: c.call("PATCH", true, setDisabled(false))},
		&cobra.Command{Use: "revoke ID", Short: "Revoke (delete) a token", Args: cobra.ExactArgs(1), RunE: c.call("DELETE", true, func(a []string) (string, any, error) {
			return "/tokens/" + esc(a[0]), nil, nil
		})},
	)

	// agents
	agents := group("agents", "Manage agents",
		&cobra.Command{Use: "list", Short: "List agents", Args: cobra.NoArgs, RunE: c.call("GET", true, fixed("/agents"))},
		&cobra.Command{Use: "create NAME", Short: "Register an agent (prints its token once)", Args: cobra.ExactArgs(1), RunE: c.call("POST", true, func(a []string) (string, any, error) {
			return "/agents", map[string]any{"name": a[0]}, nil
		})},
		&cobra.Command{Use: "delete ID", Short: "Delete an agent", Args: cobra.ExactArgs(1), RunE: c.call("DELETE", true, func(a []string) (string, any, error) {
			return "/agents/" + esc(a[0]), nil, nil
		})},
	)

	// policies
	var pAgent string
	var disabled bool
	plist := &cobra.Command{Use: "list", Short: "List domain policies", Args: cobra.NoArgs, RunE: c.call("GET", true, func([]string) (string, any, error) {
		if pAgent != "" {
			return "/policies?agent_id=" + url.QueryEscape(pAgent), nil, nil
		}
		return "/policies", nil, nil
	})}
	plist.Flags().StringVar(&pAgent, "agent", "", "only this agent's entries")
	padd := &cobra.Command{
		Use:   "add FILE|-",
		Short: "Add a domain policy from a JSON domains[] entry",
		Long:  `Add a domain policy. FILE (or - for stdin) holds one domains[] entry as JSON, e.g. {"domain": "api.openai.com", "credential": {"header": "Authorization", "format": "Bearer {value}", "secret": "openai"}}.`,
		Args:  cobra.ExactArgs(1),
		RunE: c.call("POST", true, func(a []string) (string, any, error) {
			entry, err := readArg(a[0])
			if err != nil {
				return "", nil, err
			}
			if !json.Valid(entry) {
				return "", nil, fmt.Errorf("%s: not JSON", a[0])
			}
			body := map[string]any{"entry": json.RawMessage(entry), "enabled": !disabled}
			if pAgent != "" {
				body["agent_id"] = pAgent
			}
			return "/policies", body, nil
		}),
	}
	padd.Flags().StringVar(&pAgent, "agent", "", "apply to this agent only (overrides the tenant-wide entry)")
	padd.Flags().BoolVar(&disabled, "disabled", false, "create the entry disabled")
	export := &cobra.Command{Use: "export AGENT_ID", Short: "Print an agent's effective policy as YAML", Args: cobra.ExactArgs(1),
		RunE: c.call("GET", true, func(a []string) (string, any, error) { return "/agents/" + esc(a[0]) + "/policy?format=yaml", nil, nil })}
	policies := group("policies", "Manage domain policies",
		plist, padd, export,
		&cobra.Command{Use: "delete ID", Short: "Delete a domain policy", Args: cobra.ExactArgs(1), RunE: c.call("DELETE", true, func(a []string) (string, any, error) {
			return "/policies/" + esc(a[0]), nil, nil
		})},
	)

	// secrets: values come from a file or stdin, never from the command line
	// (which other users see in ps).
	setSecret := func(path string) func([]string) (string, any, error) {
		return func(a []string) (string, any, error) {
			v, err := readArg(a[1])
			if err != nil {
				return "", nil, err
			}
			return "/secrets/" + esc(a[0]) + path, map[string]any{"value": strings.TrimRight(string(v), "\r\n")}, nil
		}
	}
	secrets := group("secrets", "Manage secrets (write-only)",
		&cobra.Command{Use: "list", Short: "List secret names and versions", Args: cobra.NoArgs, RunE: c.call("GET", true, fixed("/secrets"))},
		&cobra.Command{Use: "set NAME FILE|-", Short: "Create or replace a secret from a file or stdin", Args: cobra.ExactArgs(2), RunE: c.call("PUT", true, setSecret(""))},
		&cobra.Command{Use: "rotate NAME FILE|-", Short: "Rotate an existing secret", Args: cobra.ExactArgs(2), RunE: c.call("POST", true, setSecret("/rotate"))},
		&cobra.Command{Use: "delete NAME", Short: "Delete a secret", Args: cobra.ExactArgs(1), RunE: c.call("DELETE", true, func(a []string) (string, any, error) {
			return "/secrets/" + esc(a[0]), nil, nil
		})},
	)
	return []*cobra.Command{tenants, tokens, agents, policies, secrets}
}

func readArg(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	}
	return os.ReadFile(name)
}
