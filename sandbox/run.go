package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/sandbox/firewall"
	"github.com/cagent-dev/cagent/sandbox/netsetup"
	"github.com/cagent-dev/cagent/sandbox/oci"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// In-sandbox paths of generated files.
const (
	caDir      = "/run/cagent"
	caFile     = caDir + "/ca.pem"
	bundleFile = caDir + "/ca-certificates.crt"
	systemCA   = "/etc/ssl/certs/ca-certificates.crt"
)

// Run runs cfg.Args in a fresh sandbox and returns the command's exit
// status. Everything it created is removed before it returns, also when
// ctx is cancelled (the command is then terminated).
func Run(ctx context.Context, cfg Config) (int, error) {
	if err := cfg.Validate(); err != nil {
		return -1, err
	}
	sb := &run{cfg: cfg, log: cfg.Logger}
	defer func() {
		t := cfg.Now()
		sb.cleanup()
		sb.log.Debug("sandbox removed", "id", sb.lease.ID, "teardown", cfg.Now().Sub(t))
	}()
	if err := sb.setup(); err != nil {
		return -1, err
	}
	sb.log.Debug("sandbox ready", "id", sb.lease.ID, "setup", cfg.Now().Sub(sb.started))
	return sb.exec(ctx)
}

type run struct {
	cfg      Config
	log      *slog.Logger
	sbDir    string
	lease    lease
	bundle   string
	undo     []func()
	services *Services
	closers  []func() error // the gateway listeners
	wg       sync.WaitGroup
	async    sync.WaitGroup // background undo steps
	early    []func()       // start undo steps that may run once the container is dead
	started  time.Time
}

func (r *run) cleanup() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
	r.async.Wait()
}

// background runs an undo step that nothing later in the cleanup depends
// on concurrently with the rest (the kernel's network teardown dominates);
// cleanup waits for it before returning.
func (r *run) background(fn func()) {
	r.async.Add(1)
	go func() {
		defer r.async.Done()
		fn()
	}()
}

func (r *run) setup() error {
	c := &r.cfg
	r.started = c.Now()
	r.sbDir = filepath.Join(c.StateDir, "sandbox")
	if err := os.MkdirAll(r.sbDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	pool := netip.MustParsePrefix(c.Policy.Sandbox.SubnetPool)
	r.lease = lease{PID: os.Getpid(), Runtime: c.Runtime, Created: r.started.UTC().Format(time.RFC3339), StateDir: r.sbDir}
	if err := allocate(r.sbDir, pool, &r.lease); err != nil {
		return err
	}
	l := &r.lease
	r.log.Debug("lease and namespace", "id", l.ID, "took", c.Now().Sub(r.started))
	r.undo = append(r.undo, func() {
		// Background steps use the lease's names (bundle directory, gateway
		// address): they finish before another run of this state
		// directory can take it.
		r.async.Wait()
		if err := removeStateLease(r.sbDir, l); err != nil {
			r.log.Warn("remove lease", "id", l.ID, "err", err)
		}
	})
	r.undo = append(r.undo, func() {
		if err := releaseID(l); err != nil {
			r.log.Warn("remove netns", "netns", l.netns(), "err", err)
		}
	})
	// The network (veth, both nftables tables) and the gateway services
	// (proxy and DNS filter, with their CA and budget files) do not depend
	// on each other until the listeners open on the gateway address, so
	// they are built concurrently. Their undo steps are appended in a
	// fixed order afterwards (services are closed before the network goes).
	var (
		netUndo []func()
		netErr  error
		netDone = make(chan struct{})
	)
	go func() {
		defer close(netDone)
		t0 := c.Now()
		netUndo, netErr = r.network()
		r.log.Debug("sandbox network ready", "id", l.ID, "took", c.Now().Sub(t0))
	}()
	// The bundle needs the lease and, when the proxy intercepts TLS, the
	// services' CA; without interception it is written concurrently too.
	var (
		bundleUndo func()
		bundleErr  error
	)
	writeBundle := func() {
		t0 := c.Now()
		bundleUndo, bundleErr = r.writeBundle()
		r.log.Debug("bundle written", "id", l.ID, "took", c.Now().Sub(t0))
	}
	bundleDone := make(chan struct{})
	early := c.NewServices == nil || !Intercepts(c.Policy)
	if early {
		go func() {
			defer close(bundleDone)
			writeBundle()
		}()
	}
	svcUndo, svcErr := r.buildServices()
	// The listeners open now, on the gateway address the veth may not have
	// yet (IP_FREEBIND), rather than after the network: a packet can reach
	// them only through the veth.
	var listenErr error
	if svcErr == nil {
		listenErr = r.listen()
	}
	if !early {
		if svcErr == nil {
			writeBundle()
		}
		close(bundleDone)
	}
	<-bundleDone
	<-netDone
	if bundleUndo != nil {
		r.undo = append(r.undo, bundleUndo)
	}
	// Cleanup is LIFO: the services stop before the network goes.
	for _, u := range netUndo {
		// The network's removal may start early, when the container's
		// init is seen to exit (see watchInit); the undo step then waits.
		var once sync.Once
		finished := make(chan struct{})
		start := func() { once.Do(func() { go func() { defer close(finished); u() }() }) }
		r.early = append(r.early, start)
		r.undo = append(r.undo, func() { start(); <-finished })
	}
	if svcUndo != nil {
		r.undo = append(r.undo, svcUndo)
	}
	// No v.WaitUp here: the kernel activates the link while the runtime
	// starts (tens of ms, longer than activation), and a packet sent before
	// would only be dropped and retransmitted: a delay, never a way out.
	return errors.Join(netErr, svcErr, listenErr, bundleErr)
}

// network creates the veth pair and the nftables table inside the sandbox,
// and holds the host table shared by all sandboxes (creating it if it is
// missing). It returns the undo steps of what it made, also on error.
func (r *run) network() ([]func(), error) {
	l := &r.lease
	var undo []func()
	v := netsetup.Veth{HostName: l.hostIf(), PeerName: "eth0", NS: l.netns(),
		HostAddr: netip.PrefixFrom(l.Gateway, 30), PeerAddr: netip.PrefixFrom(l.Addr, 30)}
	// The inner table is installed and the shared host table held (made if
	// missing) while the veth is made: their rules match interface names,
	// which need not exist yet. All three are in place before network
	// returns, and so before anything runs inside (nothing can send on the
	// veth before then: the namespace is empty).
	var release func()
	holdErr := make(chan error, 1)
	go func() {
		var err error
		release, err = firewall.Sandboxes.Hold()
		holdErr <- err
	}()
	innerErr := make(chan error, 1)
	go func() {
		ns, err := netns.GetFromName(l.netns())
		if err != nil {
			innerErr <- err
			return
		}
		defer ns.Close()
		innerErr <- firewall.Rules{Gateway: l.Gateway, SandboxNSFd: int(ns)}.InstallInner()
	}()
	addErr := v.Add()
	if err := <-holdErr; err != nil && addErr == nil {
		addErr = err
	}
	undo = append(undo, func() {
		t0 := r.cfg.Now()
		// The container is gone, so releasing the namespace drops its last
		// reference and the kernel destroys the veth pair with it, which
		// is 2-3x faster here than deleting the link. Wait for the host end
		// to go, so that nothing is left when the run returns; if something
		// still holds the namespace, delete the link itself. The name stays
		// claimed until then (the netns undo step, later, removes it).
		if err := netsetup.Release(l.netns()); err != nil {
			r.log.Warn("remove netns", "netns", l.netns(), "err", err)
		}
		if gone, _ := netsetup.WaitGone(l.hostIf(), time.Second); !gone {
			if err := netsetup.DeleteLink(l.hostIf()); err != nil {
				r.log.Warn("remove veth", "link", l.hostIf(), "err", err)
			}
		}
		// The host table confined the veth; with the veth gone, `cagent
		// gc` may remove the table.
		if release != nil {
			release()
		}
		r.log.Debug("veth removed", "id", l.ID, "took", r.cfg.Now().Sub(t0))
	})
	if addErr != nil {
		return undo, fmt.Errorf("sandbox network: %w", errors.Join(addErr, <-innerErr))
	}
	return undo, <-innerErr
}

// buildServices builds the proxy and DNS filter, not yet listening, and
// returns the step that stops them (nil if there is nothing to stop).
func (r *run) buildServices() (func(), error) {
	c := &r.cfg
	if c.NewServices == nil {
		return nil, nil
	}
	agent := c.Agent
	if agent == "" {
		agent = r.lease.ID
	}
	t0 := c.Now()
	svc, err := c.NewServices(Gateway{ID: r.lease.ID, Agent: agent, Gateway: r.lease.Gateway, Addr: r.lease.Addr})
	if err != nil {
		return nil, fmt.Errorf("start proxy and DNS: %w", err)
	}
	r.log.Debug("gateway services built", "id", r.lease.ID, "took", c.Now().Sub(t0))
	r.services = svc
	// The container is gone when this runs: the services stop while the
	// network is being removed.
	return func() {
		r.background(func() {
			for _, cl := range r.closers {
				_ = cl()
			}
			if svc.Proxy != nil {
				_ = svc.Proxy.Close()
			}
			if svc.DNS != nil {
				_ = svc.DNS.Close()
			}
			r.wg.Wait()
		})
	}, nil
}

// freebind lets a socket bind an address that is not (yet) local.
var freebind = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}}

// listen serves the proxy and DNS filter on the gateway address. It may
// run before the veth carries that address (see freebind).
func (r *run) listen() error {
	svc := r.services
	if svc == nil || r.cfg.NewServices == nil {
		return nil
	}
	gw := r.lease.Gateway
	ctx := context.Background()
	listen := func(port int, serve func(net.Listener) error, what string) error {
		ln, err := freebind.Listen(ctx, "tcp4", netip.AddrPortFrom(gw, uint16(port)).String())
		if err != nil {
			return fmt.Errorf("listen %s: %w", what, err)
		}
		r.closers = append(r.closers, ln.Close)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			// If a server dies the sandbox simply loses that way out: the
			// firewall leaves it nothing else (fail closed).
			if err := serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("gateway service stopped", "service", what, "err", err)
			}
			_ = ln.Close()
		}()
		return nil
	}
	if p := svc.Proxy; p != nil {
		if err := listen(PortExplicit, p.ServeExplicit, "proxy"); err != nil {
			return err
		}
		if err := listen(PortHTTP, p.ServeTransparentHTTP, "transparent http"); err != nil {
			return err
		}
		if err := listen(PortHTTPS, p.ServeTransparentTLS, "transparent tls"); err != nil {
			return err
		}
	}
	if d := svc.DNS; d != nil {
		if err := listen(PortDNS, d.ServeTCP, "dns/tcp"); err != nil {
			return err
		}
		pc, err := freebind.ListenPacket(ctx, "udp4", netip.AddrPortFrom(gw, PortDNS).String())
		if err != nil {
			return fmt.Errorf("listen dns/udp: %w", err)
		}
		r.closers = append(r.closers, pc.Close)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := d.ServeUDP(pc); err != nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("gateway service stopped", "service", "dns/udp", "err", err)
			}
			_ = pc.Close()
		}()
	}
	return nil
}

// writeBundle writes the bundle and returns the step that removes it (nil
// if it made nothing). It may run concurrently with the network's and the
// services' set-up, so it touches no state of r that they use.
func (r *run) writeBundle() (func(), error) {
	l := &r.lease
	r.bundle = bundlePath(r.sbDir, l.ID)
	_ = os.RemoveAll(r.bundle)
	if err := os.MkdirAll(filepath.Join(r.bundle, "files"), 0o755); err != nil {
		return nil, err
	}
	undo := func() {
		// After the container's removal (a later undo step, run first).
		r.background(func() { _ = os.RemoveAll(r.bundle) })
	}
	return undo, r.writeBundleFiles()
}

func (r *run) writeBundleFiles() error {
	c := &r.cfg
	l := &r.lease
	s := &c.Policy.Sandbox
	hostname := s.Hostname
	if hostname == "" {
		hostname = "sandbox"
	}
	uid, gid, _ := parseUser(s.User)
	files := filepath.Join(r.bundle, "files")
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(files, name)
		return p, os.WriteFile(p, data, 0o644)
	}
	var binds []oci.Bind
	rootHas := func(p string) bool {
		root := "/"
		if s.Rootfs != "host" {
			root = s.Rootfs
		}
		_, err := os.Stat(filepath.Join(root, p))
		return err == nil
	}
	overlay := func(dest string, data []byte) error {
		p, err := write(filepath.Base(dest), data)
		if err != nil {
			return err
		}
		if rootHas(dest) {
			binds = append(binds, oci.Bind{Source: p, Dest: dest, ReadOnly: true})
		}
		return nil
	}
	gw := l.Gateway.String()
	if err := overlay("/etc/resolv.conf", []byte("nameserver "+gw+"\noptions ndots:1 timeout:2 attempts:2\n")); err != nil {
		return err
	}
	if err := overlay("/etc/hosts", []byte("127.0.0.1\tlocalhost\n"+l.Addr.String()+"\t"+hostname+"\n")); err != nil {
		return err
	}
	if err := overlay("/etc/hostname", []byte(hostname+"\n")); err != nil {
		return err
	}
	proxyURL := "http://" + gw + ":" + strconv.Itoa(PortExplicit)
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/tmp",
		"HOSTNAME=" + hostname,
		"HTTP_PROXY=" + proxyURL, "http_proxy=" + proxyURL,
		"HTTPS_PROXY=" + proxyURL, "https_proxy=" + proxyURL,
		"NO_PROXY=localhost,127.0.0.1", "no_proxy=localhost,127.0.0.1",
	}
	if c.Terminal {
		term := os.Getenv("TERM")
		if term == "" {
			term = "xterm"
		}
		env = append(env, "TERM="+term)
	}
	// Intercepts first: without interception this runs concurrently with
	// buildServices, which sets r.services.
	if Intercepts(c.Policy) && r.services != nil && r.services.Proxy != nil {
		ca := r.services.Proxy.CACertPEM()
		if len(ca) > 0 {
			roots, _ := os.ReadFile(systemCA) // the host's roots; a missing file leaves just ours
			bundle := append(append(bytes.TrimRight(roots, "\n"), '\n'), ca...)
			if err := overlay(systemCA, bundle); err != nil {
				return err
			}
			if _, err := write("ca.pem", ca); err != nil {
				return err
			}
			binds = append(binds, oci.Bind{Source: files, Dest: caDir, ReadOnly: true})
			env = append(env, "SSL_CERT_FILE="+bundleFile, "REQUESTS_CA_BUNDLE="+bundleFile,
				"CURL_CA_BUNDLE="+bundleFile, "GIT_SSL_CAINFO="+bundleFile, "NODE_EXTRA_CA_CERTS="+caFile)
		}
	}
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	cwd := "/"
	if c.Workspace != "" {
		ws, err := filepath.Abs(c.Workspace)
		if err != nil {
			return err
		}
		c.Workspace = ws
		cwd = "/workspace"
	}
	pids := int64(s.Resources.Pids)
	if c.Runtime == RuntimeGVisor {
		pids = max(GVisorMinPids, pids*8)
	}
	// Memory+swap equal to memory (no swap) where the host accounts swap:
	// cgroup v1 with memsw, or cgroup v2.
	_, swapErr := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		swapErr = nil
	}
	masks, err := maskBinds(c, files)
	if err != nil {
		return err
	}
	// Masks last: they must cover what the other mounts expose.
	binds = append(append(binds, c.Binds...), masks...)
	_, err = oci.Write(r.bundle, oci.Config{
		Args: c.Args, Env: env, Cwd: cwd, UID: uid, GID: gid,
		Terminal: c.Terminal, Rows: c.Rows, Cols: c.Cols, Hostname: hostname,
		HostRootfs: s.Rootfs == "host", Rootfs: s.Rootfs,
		Workspace: c.Workspace, Binds: binds,
		NetNSPath:   netsetup.Path(l.netns()),
		CgroupsPath: "/cagent/" + l.ID,
		CPUs:        s.Resources.CPUs, Memory: int64(s.Resources.Memory), Pids: pids,
		MemorySwap: swapErr == nil,
	})
	return err
}

// runtimeArgs returns the runtime binary and its global flags.
func runtimeCmd(runtime, runc, runsc, stateDir string) (string, []string) {
	if runtime == RuntimeGVisor {
		// --network=host: gVisor uses the host kernel's stack, inside the
		// sandbox's network namespace (set in the spec). Debian's runsc
		// refuses --network=sandbox on these kernels.
		return runsc, []string{"--root", filepath.Join(stateDir, "runsc"), "--network=host", "--oci-seccomp"}
	}
	return runc, []string{"--root", filepath.Join(stateDir, "runc")}
}

func (r *run) exec(ctx context.Context) (int, error) {
	c := &r.cfg
	l := &r.lease
	bin, global := runtimeCmd(c.Runtime, c.RuncPath, c.RunscPath, r.sbDir)
	args := append(global, "run", "--bundle", r.bundle)
	pidFile := ""
	if c.Runtime == RuntimeRunc && len(r.early) > 0 {
		pidFile = filepath.Join(r.bundle, "init.pid")
		args = append(args, "--pid-file", pidFile)
	}
	cmd := exec.Command(bin, append(args, l.container())...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	if !c.Terminal {
		// Never hand the sandbox a descriptor of the user's terminal (e.g.
		// stdout when only stdin is redirected): with it, TIOCSTI could push
		// keystrokes into the user's shell. Copy through pipes instead.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = hideTTY(c.Stdin), hideTTYw(c.Stdout), hideTTYw(c.Stderr)
	}
	// The runtime gets none of this process's environment (which may hold
	// credentials the proxy injects); the sandbox's own comes from the spec.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	// `runtime run` removes its container when it returns; only a runtime
	// that was killed or failed to start can leave one behind.
	leftover := true
	r.undo = append(r.undo, func() {
		if leftover {
			r.deleteContainer(bin, global)
		}
	})
	agent := c.Agent
	if agent == "" {
		agent = l.ID
	}
	c.Audit.Emit(&audit.Event{TS: c.Now(), Type: audit.TypeSandbox, Agent: agent, Action: "start",
		Detail: map[string]string{"id": l.ID, "runtime": c.Runtime, "address": l.Addr.String()}})
	r.log.Info("sandbox starting", "id", l.ID, "runtime", c.Runtime, "addr", l.Addr)
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	if pidFile != "" {
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			if r.watchInit(pidFile, cmd.Process.Pid, done) {
				for _, start := range r.early {
					start()
				}
			}
		}()
		defer func() { <-watched }()
	}
	var killTimer <-chan time.Time
	ctxDone := ctx.Done()
loop:
	for {
		select {
		case <-done:
			break loop
		case sig := <-c.Signals:
			// The runtime forwards signals it receives to the container.
			_ = cmd.Process.Signal(sig)
		case <-ctxDone:
			ctxDone = nil
			_ = cmd.Process.Signal(syscall.SIGTERM)
			killTimer = time.After(c.KillGrace)
		case <-killTimer:
			r.kill(bin, global)
			_ = cmd.Process.Kill()
		}
	}
	code := exitCode(cmd.ProcessState, waitErr)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Exited() && killTimer == nil {
		leftover = false
	}
	c.Audit.Emit(&audit.Event{TS: c.Now(), Type: audit.TypeSandbox, Agent: agent, Action: "exit",
		Detail: map[string]string{"id": l.ID, "runtime": c.Runtime, "exit_code": strconv.Itoa(code)}})
	r.log.Info("sandbox exited", "id", l.ID, "code", code, "duration", c.Now().Sub(r.started))
	if code < 0 {
		return code, fmt.Errorf("%s run: %w", filepath.Base(bin), waitErr)
	}
	return code, nil
}

// watchInit reports whether the container's init (its pid from runc's
// --pid-file) was seen to exit before the runtime itself (done). runc takes
// a few more milliseconds after that (cgroups, state) which the network's
// teardown can overlap. It is safe to tear the network down then: when the
// init of a PID namespace exits, the kernel kills every other process in
// it and waits for them before the exit is reported, so nothing in the
// sandbox runs any more. The pid is checked to be a PID
// namespace's init and our runtime's child (not a reused pid) through a
// pidfd, which cannot be reused. The wait for the exit sleeps in the
// runtime's netpoller (pidfd).
func (r *run) watchInit(pidFile string, runtimePID int, done <-chan struct{}) bool {
	pid, ok := waitPidFile(pidFile, done)
	if !ok {
		return false
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	// Our container's init: a child of our runtime process and pid 1 of
	// its own PID namespace (this also holds for a zombie, as /bin/true's
	// init may already be). Checked after opening the pidfd and before the
	// signal test below, which fails once the process is reaped: a pid
	// cannot be reused while its process exists, so the status read was
	// the pidfd's process.
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil || !isInitOf(st, runtimePID) {
		return false
	}
	if unix.PidfdSendSignal(fd, 0, nil, 0) != nil {
		return false
	}
	return waitExit(pidfd, done)
}

// waitExit waits until the process of a non-blocking pidfd exits (it
// becomes readable then) and reports true, or false once done is closed.
func waitExit(pidfd *os.File, done <-chan struct{}) bool {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return false
	}
	defer untilDone(pidfd, done)()
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		exited = n > 0
		return exited
	})
	return err == nil && exited
}

// pidFilePoll is how often waitPidFile looks for runc's pid file.
const pidFilePoll = time.Millisecond

// waitPidFile waits for runc's pid file (written to a temporary name and
// renamed) and returns the pid in it, or false once done is closed. It
// polls rather than watching with inotify: closing an inotify instance
// waits in the kernel for an SRCU grace period (5-12 ms here), on the run's
// way to exit. A poll is one failed open (a few microseconds), ~50 in a run.
func waitPidFile(path string, done <-chan struct{}) (int, bool) {
	t := time.NewTicker(pidFilePoll)
	defer t.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			n, err := strconv.Atoi(string(bytes.TrimSpace(b)))
			return n, err == nil && n > 0
		}
		select {
		case <-done:
			return 0, false
		case <-t.C:
		}
	}
}

// untilDone makes f's pending and future reads fail once done is closed;
// the returned function stops watching done.
func untilDone(f *os.File, done <-chan struct{}) (stop func()) {
	stopped := make(chan struct{})
	go func() {
		select {
		case <-done:
			_ = f.SetReadDeadline(time.Now())
		case <-stopped:
		}
	}()
	return func() { close(stopped) }
}

// isInitOf reports whether a /proc/PID/status describes pid 1 of a child
// PID namespace whose parent is ppid.
func isInitOf(status []byte, ppid int) bool {
	var parentOK, initOK bool
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "PPid":
			parentOK = len(f) == 1 && f[0] == strconv.Itoa(ppid)
		case "NSpid":
			initOK = len(f) >= 2 && f[len(f)-1] == "1"
		}
	}
	return parentOK && initOK
}

func exitCode(ps *os.ProcessState, err error) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if err != nil && !errors.As(err, new(*exec.ExitError)) {
		return -1
	}
	return ps.ExitCode()
}

func (r *run) kill(bin string, global []string) {
	_ = exec.Command(bin, append(global, "kill", r.lease.container(), "KILL")...).Run()
}

func (r *run) deleteContainer(bin string, global []string) {
	out, err := exec.Command(bin, append(global, "delete", "--force", r.lease.container())...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("does not exist")) && !bytes.Contains(out, []byte("not exist")) {
		r.log.Debug("runtime delete", "id", r.lease.ID, "err", err, "out", string(out))
	}
}

func isTTY(v any) bool {
	f, ok := v.(*os.File)
	if !ok || f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// hideTTY and hideTTYw wrap a terminal so that exec copies through a pipe.
func hideTTY(r io.Reader) io.Reader {
	if isTTY(r) {
		return struct{ io.Reader }{r}
	}
	return r
}

func hideTTYw(w io.Writer) io.Writer {
	if isTTY(w) {
		return struct{ io.Writer }{w}
	}
	return w
}
