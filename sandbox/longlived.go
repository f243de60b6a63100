package sandbox

// A long-lived sandbox for `cagent up`: the same network, firewall and OCI
// bundle as Run, but the container's init only waits, and commands (the web
// terminal's shells) are exec'd into it. The caller serves the proxy and
// DNS filter on the gateway itself, so that it can supervise and restart
// them independently of the sandbox.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
	"github.com/creack/pty"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// LongConfig configures CreateLong. Config.Args and Config.NewServices are
// ignored: the init is a sleeper and the caller serves the gateway.
type LongConfig struct {
	Config
	// CACertPEM is the proxy's CA, installed in the sandbox's trust store
	// when the policy intercepts TLS, or always with TrustCA.
	CACertPEM []byte
	// TrustCA installs the CA even if no entry intercepts TLS yet: a
	// long-lived sandbox outlives policy reloads that may turn it on.
	TrustCA bool
}

// Long is a running long-lived sandbox.
type Long struct {
	r       *run
	bin     string
	global  []string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	closed  atomic.Bool
	execN   atomic.Int64
	mu      sync.Mutex
	procs   map[*LongProcess]struct{}
	closeMu sync.Mutex
}

// caOnly carries the proxy's CA into writeBundle without serving anything.
type caOnly struct{ pem []byte }

func (c caOnly) ServeExplicit(net.Listener) error        { return nil }
func (c caOnly) ServeTransparentHTTP(net.Listener) error { return nil }
func (c caOnly) ServeTransparentTLS(net.Listener) error  { return nil }
func (c caOnly) CACertPEM() []byte                       { return c.pem }
func (c caOnly) Close() error                            { return nil }

// sleeper is the init: it only waits, and exits on SIGTERM.
var sleeper = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}

// CreateLong sets up the sandbox's network, writes its bundle and starts
// its init. Close removes everything it created.
func CreateLong(ctx context.Context, lc LongConfig) (_ *Long, err error) {
	cfg := lc.Config
	if lc.TrustCA && len(lc.CACertPEM) > 0 && cfg.Policy != nil && !Intercepts(cfg.Policy) {
		// The bundle writer installs the CA when an entry intercepts; give
		// it a copy of the policy with one such entry (only its sandbox
		// settings and this check read it).
		pc := *cfg.Policy
		pc.Domains = append([]policy.Domain{{Domain: "cagent-ca.invalid", TLSIntercept: true}}, pc.Domains...)
		cfg.Policy = &pc
	}
	cfg.Args = sleeper
	cfg.NewServices = nil
	cfg.Terminal = false
	cfg.Stdin = nil
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			r.cleanup()
		}
	}()
	// setup() makes the network and firewall, serves nothing (no
	// NewServices) and writes the bundle, with the CA when given.
	if len(lc.CACertPEM) > 0 {
		r.services = &Services{Proxy: caOnly{lc.CACertPEM}}
	}
	if err := r.setup(); err != nil {
		return nil, err
	}
	r.services = nil
	l := &Long{r: r, done: make(chan struct{}), procs: map[*LongProcess]struct{}{}}
	l.bin, l.global = runtimeCmd(cfg.Runtime, cfg.RuncPath, cfg.RunscPath, r.sbDir)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	l.cmd = exec.Command(l.bin, append(l.global, "run", "--bundle", r.bundle, r.lease.container())...)
	l.cmd.Stdin, l.cmd.Stdout, l.cmd.Stderr = devnull, cfg.Stdout, cfg.Stderr
	// Our own process group: a Ctrl-C at the daemon's terminal is the
	// daemon's to handle, not the runtime's.
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.undo = append(r.undo, func() { r.deleteContainer(l.bin, l.global) })
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", l.bin, err)
	}
	go func() { l.waitErr = l.cmd.Wait(); close(l.done) }()
	cfg.Audit.Emit(&audit.Event{TS: cfg.Now(), Type: audit.TypeSandbox, Agent: cfg.Agent, Action: "start",
		Detail: map[string]string{"id": r.lease.ID, "runtime": cfg.Runtime, "address": r.lease.Addr.String()}})
	// Wait until the container is running, so Exec works right away.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, _ := l.state(); st == "running" {
			return l, nil
		}
		select {
		case <-l.done:
			l.closeInit()
			return nil, fmt.Errorf("sandbox init exited at start: %v", l.waitErr)
		case <-ctx.Done():
			l.closeInit()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.closeInit()
			return nil, errors.New("sandbox did not reach the running state in 20s")
		}
	}
}

func (l *Long) state() (string, error) {
	cmd := exec.Command(l.bin, append(l.global, "state", l.r.lease.container())...)
	// Own process group: a Ctrl-C meant for the daemon must not make a
	// health check fail.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// ID, Gateway address, sandbox address and runtime.
func (l *Long) ID() string      { return l.r.lease.ID }
func (l *Long) Runtime() string { return l.r.cfg.Runtime }

// Gateway is where the caller must serve the proxy (80, 443, 3128) and DNS (53).
func (l *Long) Gateway() string { return l.r.lease.Gateway.String() }

// Addr is the sandbox's own address.
func (l *Long) Addr() string { return l.r.lease.Addr.String() }

// Done is closed when the sandbox's init has exited (crash or Close).
func (l *Long) Done() <-chan struct{} { return l.done }

// Healthy reports whether the init still runs and the runtime agrees.
func (l *Long) Healthy() error {
	select {
	case <-l.done:
		return fmt.Errorf("sandbox init exited: %v", l.waitErr)
	default:
	}
	st, err := l.state()
	if err != nil {
		return fmt.Errorf("runtime state: %w", err)
	}
	if st != "running" {
		return fmt.Errorf("sandbox is %s", st)
	}
	return nil
}

func (l *Long) closeInit() {
	select {
	case <-l.done:
	default:
		_ = exec.Command(l.bin, append(l.global, "kill", l.r.lease.container(), "TERM")...).Run()
		select {
		case <-l.done:
		case <-time.After(l.r.cfg.KillGrace):
			l.r.kill(l.bin, l.global)
			select {
			case <-l.done:
			case <-time.After(5 * time.Second):
				_ = l.cmd.Process.Kill()
				<-l.done
			}
		}
	}
	l.r.cleanup()
}

// Close ends every exec'd process and the init, and removes the sandbox's
// network, firewall rules and bundle.
func (l *Long) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed.Swap(true) {
		return nil
	}
	l.mu.Lock()
	procs := make([]*LongProcess, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	l.mu.Unlock()
	for _, p := range procs {
		_ = p.Close()
	}
	l.closeInit()
	c := &l.r.cfg
	c.Audit.Emit(&audit.Event{TS: c.Now(), Type: audit.TypeSandbox, Agent: c.Agent, Action: "stop",
		Detail: map[string]string{"id": l.r.lease.ID, "runtime": c.Runtime}})
	return nil
}

// ExecSpec is a command to run in the sandbox.
type ExecSpec struct {
	Args       []string // default: /bin/bash -l if present, else /bin/sh
	TTY        bool
	Rows, Cols uint16
	Env        []string // appended to the sandbox's environment
}

// LongProcess is a command exec'd into a Long. With a TTY, Read and Write
// are the terminal; otherwise Read is stdout+stderr and Write is stdin.
type LongProcess struct {
	l       *Long
	cmd     *exec.Cmd
	pty     *os.File // master, with TTY
	stdin   io.WriteCloser
	out     io.ReadCloser
	done    chan struct{}
	waitErr error
	spec    string
	once    sync.Once
}

// Exec starts spec in the sandbox as the sandbox user, in its workspace,
// with its environment.
func (l *Long) Exec(ctx context.Context, spec ExecSpec) (*LongProcess, error) {
	if l.closed.Load() {
		return nil, errors.New("sandbox is closed")
	}
	if err := l.Healthy(); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(l.r.bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	proc := *s.Process
	proc.Args = spec.Args
	if len(proc.Args) == 0 {
		proc.Args = []string{"/bin/sh"}
		if _, err := os.Stat("/bin/bash"); err == nil && l.r.cfg.Policy.Sandbox.Rootfs == "host" {
			proc.Args = []string{"/bin/bash", "-l"}
		}
	}
	proc.Terminal = spec.TTY
	proc.Env = append(append([]string(nil), proc.Env...), spec.Env...)
	if spec.TTY {
		proc.Env = append(proc.Env, "TERM=xterm-256color")
		if spec.Rows > 0 && spec.Cols > 0 {
			proc.ConsoleSize = &specs.Box{Height: uint(spec.Rows), Width: uint(spec.Cols)}
		}
	}
	n := l.execN.Add(1)
	pf := filepath.Join(l.r.bundle, "exec-"+strconv.FormatInt(n, 10)+".json")
	pb, err := json.Marshal(&proc)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(pf, pb, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(l.bin, append(l.global, "exec", "--process", pf, l.r.lease.container())...)
	p := &LongProcess{l: l, cmd: cmd, done: make(chan struct{}), spec: pf}
	if spec.TTY {
		// The runtime gets our pty slave as its terminal: runc relays it
		// to the container's console and forwards SIGWINCH (our resizes).
		sz := &pty.Winsize{Rows: max(spec.Rows, 1), Cols: max(spec.Cols, 1)}
		if spec.Rows == 0 || spec.Cols == 0 {
			sz = &pty.Winsize{Rows: 24, Cols: 80}
		}
		m, err := pty.StartWithSize(cmd, sz)
		if err != nil {
			os.Remove(pf)
			return nil, fmt.Errorf("exec in sandbox: %w", err)
		}
		p.pty = m
	} else {
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		p.stdin, p.out = in, pr
		if err := cmd.Start(); err != nil {
			os.Remove(pf)
			return nil, fmt.Errorf("exec in sandbox: %w", err)
		}
		go func() { <-p.done; pw.Close() }()
	}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	l.mu.Lock()
	l.procs[p] = struct{}{}
	l.mu.Unlock()
	c := &l.r.cfg
	c.Audit.Emit(&audit.Event{TS: c.Now(), Type: audit.TypeCommand, Agent: c.Agent, Action: "exec",
		Detail: map[string]string{"id": l.r.lease.ID, "tty": strconv.FormatBool(spec.TTY), "argv0": proc.Args[0]}})
	// The process lives as long as ctx: the terminal's WebSocket ending
	// hangs up its shell.
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Close()
		case <-p.done:
		}
	}()
	return p, nil
}

func (p *LongProcess) Read(b []byte) (int, error) {
	if p.pty != nil {
		n, err := p.pty.Read(b)
		if err != nil {
			// EIO on the master once the slave side has gone: that is EOF.
			return n, io.EOF
		}
		return n, nil
	}
	return p.out.Read(b)
}

func (p *LongProcess) Write(b []byte) (int, error) {
	if p.pty != nil {
		return p.pty.Write(b)
	}
	return p.stdin.Write(b)
}

// Resize changes the terminal size; the runtime passes it on.
func (p *LongProcess) Resize(cols, rows uint16) error {
	if p.pty == nil {
		return errors.New("not a terminal")
	}
	return pty.Setsize(p.pty, &pty.Winsize{Rows: rows, Cols: cols})
}

// Wait returns the exit status.
func (p *LongProcess) Wait() (int, error) {
	<-p.done
	code := exitCode(p.cmd.ProcessState, p.waitErr)
	if code < 0 {
		return code, p.waitErr
	}
	return code, nil
}

// Close hangs up the process (as closing a terminal would), then kills it.
func (p *LongProcess) Close() error {
	p.once.Do(func() {
		select {
		case <-p.done:
		default:
			// runc forwards signals it receives to the exec'd process.
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
			select {
			case <-p.done:
			case <-time.After(2 * time.Second):
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
				<-p.done
			}
		}
		if p.pty != nil {
			p.pty.Close()
		}
		if p.stdin != nil {
			p.stdin.Close()
		}
		os.Remove(p.spec)
		p.l.mu.Lock()
		delete(p.l.procs, p)
		p.l.mu.Unlock()
	})
	return nil
}
