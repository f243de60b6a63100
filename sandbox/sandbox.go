// Package sandbox runs one command in a fresh sandbox wired as design.md
// section 3: its own network namespace whose only reachable address is the
// gateway (this process's proxy and DNS filter), nftables on both sides,
// and an OCI bundle run by runc or gVisor's runsc with a seccomp allowlist,
// no capabilities, a read-only root and cgroup limits.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/sandbox/oci"
)

// Runtimes.
const (
	RuntimeRunc   = "runc"
	RuntimeGVisor = "gvisor"
)

// Gateway ports served on the gateway address.
const (
	PortDNS      = 53
	PortHTTP     = 80
	PortHTTPS    = 443
	PortExplicit = 3128
)

// GVisorMinPids is the smallest pids limit given to a gVisor sandbox: with
// the ptrace platform each sandboxed process costs several host tasks, and
// runsc fails to start below ~512 (design.md, platform facts).
const GVisorMinPids = 2048

// Proxy is the egress proxy serving one sandbox (*proxy.Proxy satisfies it).
type Proxy interface {
	ServeExplicit(net.Listener) error
	ServeTransparentHTTP(net.Listener) error
	ServeTransparentTLS(net.Listener) error
	CACertPEM() []byte
	Close() error
}

// DNS is the DNS filter serving one sandbox (*dnsfilter.Filter satisfies it).
type DNS interface {
	ServeUDP(net.PacketConn) error
	ServeTCP(net.Listener) error
	Close() error
}

// Gateway describes a sandbox's addresses to the Services factory.
type Gateway struct {
	ID      string
	Agent   string
	Gateway netip.Addr // where the services listen
	Addr    netip.Addr // the sandbox's address
}

// Services are the sandbox's only ways out. Either may be nil: the sandbox
// then simply has no such service (connections are refused).
type Services struct {
	Proxy Proxy
	DNS   DNS
}

// Config configures Run.
type Config struct {
	Policy  *policy.Policy // validated; its sandbox section supplies defaults
	Args    []string       // the command
	Runtime string         // runc or gvisor; default policy.sandbox.runtime, else gvisor if runsc is installed, else runc
	// Workspace overrides policy.sandbox.workspace; "" there too means no workspace.
	Workspace string
	StateDir  string // default /var/lib/cagent
	Agent     string // name in audit events (default the sandbox ID)

	// NewServices builds the proxy and DNS filter for a sandbox; nil means
	// the sandbox has no network at all beyond its loopback.
	NewServices func(Gateway) (*Services, error)

	Stdin          io.Reader // default: none
	Stdout, Stderr io.Writer // default: discarded
	// Terminal runs the command on a TTY; Stdin must then be the
	// controlling terminal (*os.File), which the runtime puts in raw mode.
	Terminal   bool
	Rows, Cols uint
	Signals    <-chan os.Signal // forwarded to the sandboxed command

	Env   map[string]string // extra variables (after policy.sandbox.env)
	Binds []oci.Bind        // extra bind mounts (tests: the probe binary)

	RuncPath, RunscPath string // default: looked up in PATH
	Logger              *slog.Logger
	Audit               audit.Sink
	Now                 func() time.Time
	// KillGrace is how long a cancelled run waits after SIGTERM before SIGKILL (default 2s).
	KillGrace time.Duration
}

// Error kinds that callers (cagent run) may want to tell apart.
var (
	ErrNotRoot          = errors.New("sandboxes need root (cagent creates network namespaces and nftables rules): run it with sudo")
	ErrRuntimeMissing   = errors.New("container runtime not installed")
	ErrWorkspaceMissing = errors.New("workspace directory does not exist")
)

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Policy == nil {
		return errors.New("sandbox: no policy")
	}
	if len(c.Args) == 0 {
		return errors.New("sandbox: no command given (cagent run --config FILE -- CMD ARGS...)")
	}
	if c.Runtime == "" {
		c.Runtime = c.Policy.Sandbox.Runtime
	}
	if c.Runtime == "runsc" {
		c.Runtime = RuntimeGVisor
	}
	if c.Runtime == "" {
		if _, err := lookRuntime(c.RunscPath, "runsc"); err == nil {
			c.Runtime = RuntimeGVisor
		} else {
			c.Runtime = RuntimeRunc
		}
	}
	switch c.Runtime {
	case RuntimeRunc:
		p, err := lookRuntime(c.RuncPath, "runc")
		if err != nil {
			return fmt.Errorf("%w: runc not found; install it with `apt-get install runc`", ErrRuntimeMissing)
		}
		c.RuncPath = p
	case RuntimeGVisor:
		p, err := lookRuntime(c.RunscPath, "runsc")
		if err != nil {
			return fmt.Errorf("%w: runsc (gVisor) not found; install it with `apt-get install runsc`, or use --runtime runc", ErrRuntimeMissing)
		}
		c.RunscPath = p
	default:
		return fmt.Errorf("sandbox: unknown runtime %q (use runc or gvisor)", c.Runtime)
	}
	if c.Workspace == "" {
		c.Workspace = c.Policy.Sandbox.Workspace
	}
	if c.Workspace != "" {
		fi, err := os.Stat(c.Workspace)
		if err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: %s (create it, or pass --workspace DIR)", ErrWorkspaceMissing, c.Workspace)
		}
	}
	if c.Policy.Sandbox.Rootfs != "host" {
		if fi, err := os.Stat(c.Policy.Sandbox.Rootfs); err != nil || !fi.IsDir() {
			return fmt.Errorf("sandbox.rootfs %s is not a directory", c.Policy.Sandbox.Rootfs)
		}
	}
	if _, err := netip.ParsePrefix(c.Policy.Sandbox.SubnetPool); err != nil {
		return fmt.Errorf("sandbox.subnet_pool: %w (was the policy validated?)", err)
	}
	if _, _, err := parseUser(c.Policy.Sandbox.User); err != nil {
		return err
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/cagent"
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.Terminal {
		if _, ok := c.Stdin.(*os.File); !ok {
			return errors.New("sandbox: Terminal needs Stdin to be the terminal")
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.KillGrace == 0 {
		c.KillGrace = 2 * time.Second
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

func lookRuntime(path, name string) (string, error) {
	if path != "" {
		return exec.LookPath(path)
	}
	return exec.LookPath(name)
}

func parseUser(s string) (uid, gid uint32, err error) {
	u, g, hasG := strings.Cut(s, ":")
	uid64, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("sandbox.user %q: %w", s, err)
	}
	gid64 := uid64
	if hasG {
		if gid64, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("sandbox.user %q: %w", s, err)
		}
	}
	return uint32(uid64), uint32(gid64), nil
}

// Intercepts reports whether any policy entry terminates TLS, in which case
// the sandbox must trust the data plane's CA.
func Intercepts(p *policy.Policy) bool {
	for i := range p.Domains {
		if p.Domains[i].TLSIntercept && p.Domains[i].IsEnabled() {
			return true
		}
	}
	return false
}
