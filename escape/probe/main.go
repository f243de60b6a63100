// Command probe is run INSIDE a sandbox by the escape suite. Each
// subcommand attempts one thing; it prints "OK ..." and exits 0 when the
// attempt worked, or "BLOCKED: reason" and exits 1 when it failed. It is
// built static (CGO_ENABLED=0) so it runs on any rootfs.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func ok(format string, a ...any) {
	fmt.Printf("OK "+format+"\n", a...)
	os.Exit(0)
}

func blocked(format string, a ...any) {
	fmt.Printf("BLOCKED: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		blocked("usage: probe SUBCOMMAND ARGS...")
	}
	a := os.Args[2:]
	for i := range a {
		a[i] = expandGateway(a[i])
	}
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	switch os.Args[1] {
	case "tcp":
		c, err := net.DialTimeout("tcp4", arg(0), 3*time.Second)
		if err != nil {
			blocked("%v", err)
		}
		c.Close()
		ok("connected to %s", arg(0))
	case "udp":
		udp(arg(0))
	case "dns":
		dnsQuery(arg(0), arg(1))
	case "resolve":
		addrs, err := net.LookupHost(arg(0))
		if err != nil {
			blocked("%v", err)
		}
		ok("%s", strings.Join(addrs, ","))
	case "resolve-many":
		// resolve-many SUFFIX N: N distinct names; OK if all resolved.
		n, _ := strconv.Atoi(arg(1))
		failed := 0
		for i := range n {
			if _, err := net.LookupHost(fmt.Sprintf("x%d-%d.%s", i, time.Now().UnixNano()%1000, arg(0))); err != nil {
				failed++
			}
		}
		if failed > 0 {
			blocked("%d of %d lookups failed", failed, n)
		}
		ok("all %d resolved", n)
	case "raw":
		sock(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	case "packet":
		sock(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	case "ipv6":
		sock(unix.AF_INET6, unix.SOCK_STREAM, 0)
	case "iouring":
		var params [120]byte
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != 0 {
			blocked("io_uring_setup: %v", errno)
		}
		unix.Close(int(fd))
		ok("io_uring fd %d", fd)
	case "syscall":
		sysc(arg(0))
	case "http":
		httpGet(a)
	case "connect":
		connect(arg(0), arg(1), arg(2), arg(3))
	case "tls":
		// tls ADDR SNI: a TLS handshake and GET / naming SNI, straight to ADDR.
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp4", arg(0), &tls.Config{ServerName: arg(1), InsecureSkipVerify: true})
		if err != nil {
			blocked("%v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(8 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", arg(1))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			blocked("read: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("STATUS %d\n%s\n", resp.StatusCode, body)
		if resp.StatusCode/100 == 2 {
			ok("status %d", resp.StatusCode)
		}
		blocked("status %d", resp.StatusCode)
	case "rawhttp":
		// rawhttp ADDR REQUEST-LINE HOST: send a request verbatim (no client normalization).
		rawHTTP(arg(0), arg(1), arg(2))
	case "after":
		// after DURATION SUBCOMMAND ARGS...: wait, then run the subcommand.
		d, _ := time.ParseDuration(a[0])
		time.Sleep(d)
		err := syscall.Exec("/proc/self/exe", append([]string{"probe"}, a[1:]...), os.Environ())
		blocked("exec: %v", err)
	case "exec":
		err := syscall.Exec(a[0], a, os.Environ())
		blocked("exec %s: %v", a[0], err)
	case "whoami-ok":
		// The sanity check: a listener and a connection on loopback.
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			blocked("%v", err)
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			blocked("%v", err)
		}
		c.Close()
		ok("uid %d, loopback works", os.Getuid())
	case "whoami":
		fmt.Printf("uid=%d euid=%d gid=%d egid=%d\n", os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
		if os.Geteuid() == 0 {
			ok("euid 0")
		}
		if err := syscall.Setuid(0); err == nil {
			ok("setuid(0) worked")
		}
		blocked("euid %d", os.Geteuid())
	case "forkbomb":
		forkbomb(arg(0))
	case "sleep":
		d, _ := time.ParseDuration(arg(0))
		time.Sleep(d)
		ok("slept")
	case "membomb":
		mb, _ := strconv.Atoi(arg(0))
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		ok("allocated %d MiB", len(keep))
	case "find":
		// The needle comes hex-encoded so that the probe's own command
		// line does not contain it.
		needle, err := hex.DecodeString(arg(0))
		if err != nil {
			blocked("find: %v", err)
		}
		find(string(needle))
	case "listen":
		// listen ADDR DURATION: accept connections, print OK on the first.
		l, err := net.Listen("tcp4", arg(0))
		if err != nil {
			blocked("%v", err)
		}
		d, _ := time.ParseDuration(arg(1))
		l.(*net.TCPListener).SetDeadline(time.Now().Add(d))
		fmt.Println("LISTENING")
		c, err := l.Accept()
		if err != nil {
			blocked("nobody came: %v", err)
		}
		c.Close()
		ok("accepted %s", c.RemoteAddr())
	default:
		blocked("unknown subcommand %q", os.Args[1])
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func sock(domain, typ, proto int) {
	fd, err := unix.Socket(domain, typ, proto)
	if err != nil {
		blocked("socket(%d, %d, %d): %v", domain, typ, proto, err)
	}
	unix.Close(fd)
	ok("socket(%d, %d, %d) = %d", domain, typ, proto, fd)
}

func sysc(name string) {
	var r1 uintptr
	var errno syscall.Errno
	switch name {
	case "ptrace":
		_, _, errno = unix.Syscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
	case "bpf":
		_, _, errno = unix.Syscall(unix.SYS_BPF, 0, 0, 0)
	case "keyctl":
		r1, _, errno = unix.Syscall(unix.SYS_KEYCTL, 0 /* GET_KEYRING_ID */, ^uintptr(3) /* session */, 0)
	case "mount":
		errno = errnoOf(unix.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
	case "unshare":
		errno = errnoOf(unix.Unshare(unix.CLONE_NEWUSER | unix.CLONE_NEWNET))
	case "clone-newuser":
		cmd := exec.Command("/proc/self/exe", "sleep", "0s")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET}
		if err := cmd.Run(); err != nil {
			blocked("%v", err)
		}
		ok("child in new user+net namespace ran")
	case "setns":
		f, err := os.Open("/proc/1/ns/net")
		if err != nil {
			blocked("%v", err)
		}
		errno = errnoOf(unix.Setns(int(f.Fd()), unix.CLONE_NEWNET))
	case "perf_event_open":
		var attr unix.PerfEventAttr
		attr.Size = uint32(unsafe.Sizeof(attr))
		attr.Type = unix.PERF_TYPE_SOFTWARE
		_, err := unix.PerfEventOpen(&attr, 0, -1, -1, 0)
		errno = errnoOf(err)
	default:
		blocked("unknown syscall %q", name)
	}
	if errno != 0 {
		blocked("%s: %v", name, errno)
	}
	ok("%s returned %d", name, r1)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EINVAL
}

func udp(addr string) {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		blocked("%v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("escape?")); err != nil {
		blocked("write: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		blocked("no reply: %v", err)
	}
	ok("reply %q", b[:n])
}

// dnsQuery sends one A query for name to server over UDP.
func dnsQuery(server, name string) {
	var q bytes.Buffer
	binary.Write(&q, binary.BigEndian, [6]uint16{0x1234, 0x0100, 1, 0, 0, 0})
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q.WriteByte(byte(len(l)))
		q.WriteString(l)
	}
	q.Write([]byte{0, 0, 1, 0, 1})
	c, err := net.Dial("udp4", server)
	if err != nil {
		blocked("%v", err)
	}
	defer c.Close()
	c.Write(q.Bytes())
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 1500)
	n, err := c.Read(b)
	if err != nil {
		blocked("no answer: %v", err)
	}
	rcode := b[3] & 0xf
	ancount := binary.BigEndian.Uint16(b[6:8])
	if n < 12 || rcode != 0 || ancount == 0 {
		blocked("rcode %d answers %d", rcode, ancount)
	}
	ok("rcode %d answers %d", rcode, ancount)
}

// httpGet: http URL [-noproxy] [-host H] [-want STATUS]. OK when the status
// is 2xx (or equals -want); the body is printed either way.
func httpGet(a []string) {
	u := a[0]
	var host string
	noproxy, insecure := false, false
	for i := 1; i < len(a); i++ {
		switch a[i] {
		case "-noproxy":
			noproxy = true
		case "-insecure":
			insecure = true
		case "-host":
			i++
			host = a[i]
		}
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{}}
	if noproxy {
		tr.Proxy = nil
	}
	tr.TLSClientConfig.InsecureSkipVerify = insecure
	cl := &http.Client{Transport: tr, Timeout: 8 * time.Second}
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		blocked("%v", err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := cl.Do(req)
	if err != nil {
		blocked("%v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	fmt.Printf("STATUS %d\n%s\n", resp.StatusCode, body)
	if resp.StatusCode/100 == 2 {
		ok("status %d", resp.StatusCode)
	}
	blocked("status %d %s", resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
}

// connect PROXY TARGET [SNI] [HOST]: CONNECT through the explicit proxy, then
// (with SNI) a TLS handshake naming SNI and a GET with Host HOST.
func connect(proxy, target, sni, host string) {
	c, err := net.DialTimeout("tcp4", proxy, 3*time.Second)
	if err != nil {
		blocked("%v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(8 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		blocked("read: %v", err)
	}
	fmt.Printf("CONNECT STATUS %d %s\n", resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
	if resp.StatusCode != 200 {
		blocked("connect status %d", resp.StatusCode)
	}
	if sni == "" {
		ok("tunnel open")
	}
	tc := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		blocked("tls: %v", err)
	}
	if host == "" {
		host = sni
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	r2, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		blocked("read: %v", err)
	}
	body, _ := io.ReadAll(r2.Body)
	fmt.Printf("STATUS %d\n%s\n", r2.StatusCode, body)
	if r2.StatusCode/100 == 2 {
		ok("status %d via tunnel", r2.StatusCode)
	}
	blocked("status %d", r2.StatusCode)
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func rawHTTP(addr, line, host string) {
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		blocked("%v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(8 * time.Second))
	fmt.Fprintf(c, "%s\r\nHost: %s\r\nConnection: close\r\n\r\n", line, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		blocked("read: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("STATUS %d\n%s\n", resp.StatusCode, body)
	if resp.StatusCode/100 == 2 {
		ok("status %d", resp.StatusCode)
	}
	blocked("status %d %s", resp.StatusCode, resp.Header.Get("X-Cagent-Deny-Reason"))
}

func forkbomb(limit string) {
	n, _ := strconv.Atoi(limit)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		cmd := exec.Command("/proc/self/exe", "sleep", "30s")
		if err := cmd.Start(); err != nil {
			fmt.Printf("BLOCKED: after %d processes: %v\n", i, err)
			for _, p := range procs {
				p.Process.Kill()
				p.Wait()
			}
			os.Exit(1)
		}
		procs = append(procs, cmd)
	}
	fmt.Printf("OK started %d processes\n", n)
	for _, p := range procs {
		p.Process.Kill()
		p.Wait()
	}
	os.Exit(0)
}

// find looks for needle in the environment, /proc and readable files.
func find(needle string) {
	for _, e := range os.Environ() {
		if strings.Contains(e, needle) {
			ok("in environment")
		}
	}
	search := func(p string) {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(needle)) {
			ok("in %s", p)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, f := range []string{"environ", "cmdline"} {
			search(filepath.Join(p, f))
		}
	}
	for _, root := range []string{"/workspace", "/tmp", "/run", "/etc", "/proc/self"} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || !fi.Mode().IsRegular() || fi.Size() > 4<<20 {
				return nil
			}
			search(p)
			return nil
		})
	}
	blocked("not found")
}

// expandGateway replaces "gw" in "gw:PORT" (and in "http://gw/...") with the
// gateway address, read from /etc/resolv.conf.
func expandGateway(s string) string {
	if !strings.HasPrefix(s, "gw:") && !strings.Contains(s, "//gw") {
		return s
	}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		blocked("read resolv.conf: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
			if strings.HasPrefix(s, "gw:") {
				return f[1] + s[2:]
			}
			return strings.Replace(s, "//gw", "//"+f[1], 1)
		}
	}
	blocked("no nameserver in resolv.conf")
	return s
}
