package connect_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/connect"
	"github.com/cagent-dev/cagent/control"
	"github.com/cagent-dev/cagent/daemon"
	"github.com/coder/websocket"
	"github.com/creack/pty"
)

// The daemon, which cagent up hands to Run, serves terminals.
var _ connect.Execer = (*daemon.Daemon)(nil)

// ptyCtl is a controller whose Exec runs a real shell on a real pty (the
// daemon runs it in the sandbox; the relay is the same).
type ptyCtl struct {
	recCtl
	mu    sync.Mutex
	procs []*ptyProc
}

func (p *ptyCtl) Exec(ctx context.Context, req adminui.ExecRequest) (adminui.Process, error) {
	cmd := exec.Command("/bin/sh")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PS1=$ ", "TERM=dumb", "HOME=/"}
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: req.Cols, Rows: req.Rows})
	if err != nil {
		return nil, err
	}
	pp := &ptyProc{cmd: cmd, f: f, waited: make(chan struct{})}
	p.mu.Lock()
	p.procs = append(p.procs, pp)
	p.mu.Unlock()
	return pp, nil
}

// allReaped reports whether every shell started has been waited for.
func (p *ptyCtl) allReaped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pp := range p.procs {
		select {
		case <-pp.waited:
		default:
			return false
		}
	}
	return true
}

type ptyProc struct {
	cmd    *exec.Cmd
	f      *os.File
	once   sync.Once
	waited chan struct{}
}

func (p *ptyProc) Read(b []byte) (int, error)  { return p.f.Read(b) }
func (p *ptyProc) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p *ptyProc) Resize(cols, rows uint16) error {
	return pty.Setsize(p.f, &pty.Winsize{Cols: cols, Rows: rows})
}
func (p *ptyProc) Wait() (int, error) {
	err := p.cmd.Wait()
	close(p.waited)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}
func (p *ptyProc) Close() error {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill() // an error when it has exited already
		_ = p.f.Close()
	})
	return nil
}

// termClient is a browser's side of the terminal.
type termClient struct {
	t    *testing.T
	conn *websocket.Conn
	out  strings.Builder
	ctrl []map[string]any
}

func (c *cp) ticket(tpath, agentID, token string) (int, map[string]any) {
	c.t.Helper()
	return c.do("POST", tpath+"/agents/"+agentID+"/terminal/ticket", token, nil)
}

// ptyDataPlane connects a data plane whose sandbox is a real shell on a
// pty to cp; cfg's URL, token and directories are filled in.
func ptyDataPlane(t *testing.T, cp *cp, dir, tok string, cfg connect.Config) (*dp, *ptyCtl) {
	t.Helper()
	cfg.URL, cfg.Token = cp.URL, tok
	cfg.BasePath, cfg.StateDir = writeBase(t, dir, base), filepath.Join(dir, "dp")
	ctl := &ptyCtl{}
	d := startDP(t, cfg, ctl)
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	return d, ctl
}

// runningShell starts a control plane and a pty data plane for one agent
// and returns a terminal to it whose shell has answered.
func runningShell(t *testing.T) (*cp, *dp, *ptyCtl, *termClient) {
	t.Helper()
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	d, ctl := ptyDataPlane(t, cp, dir, tok, connect.Config{})
	tc := cp.openShell(tpath, agentID)
	tc.send("echo up-$((1+1))\n")
	tc.until("up-2")
	return cp, d, ctl, tc
}

// openShell opens a terminal to agentID with a ticket of the tenant's
// admin token.
func (c *cp) openShell(tpath, agentID string) *termClient {
	c.t.Helper()
	_, tk := c.ticket(tpath, agentID, "")
	tc, _ := c.dialTerm(tpath, agentID, tk["ticket"].(string), c.URL)
	return tc
}

// dialTerm opens the WebSocket; it returns the handshake's status when
// refused.
func (c *cp) dialTerm(tpath, agentID, ticket, origin string) (*termClient, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(c.URL, "http") + tpath + "/agents/" + agentID + "/terminal?cols=80&rows=24&ticket=" + ticket
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
	if err != nil {
		if resp == nil {
			c.t.Fatalf("dial: %v", err)
		}
		return nil, resp.StatusCode
	}
	tc := &termClient{t: c.t, conn: conn}
	c.t.Cleanup(func() { conn.CloseNow() })
	return tc, http.StatusSwitchingProtocols
}

// closed reads until the server closes the socket with want.
func (tc *termClient) closed(want websocket.StatusCode) {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := tc.conn.Read(ctx); err != nil {
			if s := websocket.CloseStatus(err); s != want {
				tc.t.Fatalf("closed with %v, want %v", err, want)
			}
			return
		}
	}
}

func (tc *termClient) send(s string) {
	tc.t.Helper()
	if err := tc.conn.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *termClient) sendJSON(v any) {
	tc.t.Helper()
	b, _ := json.Marshal(v)
	if err := tc.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
		tc.t.Fatal(err)
	}
}

// until reads until the output contains want, or a control message
// arrives when want is "".
func (tc *termClient) until(want string) map[string]any {
	tc.t.Helper()
	return tc.untilN(want, 1)
}

// untilN waits for n occurrences of want (the pty echoes the input too).
func (tc *termClient) untilN(want string, n int) map[string]any {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if want != "" && strings.Count(tc.out.String(), want) >= n {
			return nil
		}
		typ, b, err := tc.conn.Read(ctx)
		if err != nil {
			tc.t.Fatalf("waiting for %q: %v; output so far %q", want, err, tc.out.String())
		}
		if typ == websocket.MessageBinary {
			tc.out.Write(b)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			tc.t.Fatalf("bad control message %q", b)
		}
		if want == "" {
			return m
		}
		tc.t.Fatalf("waiting for %q: got %v; output %q", want, m, tc.out.String())
	}
}

func newToken(t *testing.T, c *cp, tpath, kind string) (id, token string) {
	t.Helper()
	m := c.must("POST", tpath+"/tokens", map[string]any{"kind": kind, "name": kind + "-1"})
	return m["id"].(string), m["token"].(string)
}

func TestTerminalThroughControlPlane(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	devID, dev := newToken(t, cp, tpath, "dev")
	_, ctl := ptyDataPlane(t, cp, dir, tok, connect.Config{})

	code, tk := cp.ticket(tpath, agentID, dev)
	if code != http.StatusCreated || tk["ticket"] == "" || !strings.HasSuffix(tk["path"].(string), "/agents/"+agentID+"/terminal") {
		t.Fatalf("ticket: %d %v", code, tk)
	}
	tc, st := cp.dialTerm(tpath, agentID, tk["ticket"].(string), cp.URL)
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("dial: %d", st)
	}
	tc.send("echo hi\n")
	tc.untilN("hi\r\n", 2) // the echoed input, then the output
	tc.sendJSON(map[string]any{"type": "resize", "cols": 123, "rows": 45})
	tc.send("stty size\n")
	tc.until("45 123")
	// A burst of output larger than one relay frame arrives whole.
	tc.send("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo done-$((6*7))\n")
	tc.until("done-42")
	if !strings.Contains(tc.out.String(), "line-1999\r\n") {
		t.Fatal("lost output")
	}
	tc.send("exit 7\n")
	m := tc.until("")
	if m["type"] != "exit" || m["code"] != float64(7) {
		t.Fatalf("exit: %v", m)
	}
	tc.closed(websocket.StatusNormalClosure)
	waitFor(t, "shell reaped", 10*time.Second, ctl.allReaped)

	// The ticket was single use.
	if _, st := cp.dialTerm(tpath, agentID, tk["ticket"].(string), cp.URL); st != http.StatusUnauthorized {
		t.Fatalf("reused ticket: %d", st)
	}

	// One audit entry for the open and one for the close, naming the
	// token and the agent; never the keystrokes.
	var open, closed map[string]any
	waitFor(t, "audit", 10*time.Second, func() bool {
		code, l := cp.do("GET", tpath+"/audit?object_id="+agentID, "", nil)
		if code == http.StatusTooManyRequests {
			time.Sleep(100 * time.Millisecond) // polled faster than the token's rate
			return false
		}
		if code != http.StatusOK {
			t.Fatalf("audit: %d %v", code, l)
		}
		open, closed = nil, nil
		for _, it := range l["items"].([]any) {
			e := it.(map[string]any)
			b, _ := json.Marshal(e)
			if strings.Contains(string(b), "echo") || strings.Contains(string(b), "stty") {
				t.Fatalf("keystrokes in the audit trail: %s", b)
			}
			switch e["action"] {
			case "terminal.open":
				if open != nil {
					t.Fatalf("two open entries")
				}
				open = e
			case "terminal.close":
				closed = e
			}
		}
		return open != nil && closed != nil
	})
	if open["actor_token_id"] != devID || open["actor_kind"] != "dev" || closed["detail"].(map[string]any)["exit_code"] != float64(7) {
		t.Fatalf("audit: %v %v", open, closed)
	}
}

func TestTerminalRefused(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{}
	cp := startCPWith(t, control.Config{DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0", Now: clock.Now}, nil)
	tpath, agentID, tok := cp.agent("acme")
	_, admin := newToken(t, cp, tpath, "admin")
	otherPath, otherAgent, _ := cp.agent("globex")
	_, otherAdmin := newToken(t, cp, otherPath, "admin")
	// A second agent of acme, never connected.
	idle := cp.must("POST", tpath+"/agents", map[string]any{"name": "idle"})["id"].(string)
	d, _ := ptyDataPlane(t, cp, dir, tok, connect.Config{Now: clock.Now})

	for _, tc := range []struct {
		name, path, agent, token string
		want                     int
	}{
		{"agent token", tpath, agentID, tok, http.StatusForbidden},
		{"another tenant's admin", tpath, agentID, otherAdmin, http.StatusNotFound},
		{"another tenant's agent", otherPath, otherAgent, admin, http.StatusNotFound},
		{"not connected", tpath, idle, admin, http.StatusConflict},
		{"no such agent", tpath, "nope", admin, http.StatusNotFound},
		{"no token", tpath, agentID, "cagent_bogus", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, m := cp.ticket(tc.path, tc.agent, tc.token); code != tc.want {
				t.Fatalf("ticket: %d %v, want %d", code, m, tc.want)
			}
		})
	}

	fresh := func() string {
		t.Helper()
		code, m := cp.ticket(tpath, agentID, admin)
		if code != http.StatusCreated {
			t.Fatalf("ticket: %d %v", code, m)
		}
		return m["ticket"].(string)
	}
	t.Run("wrong origin", func(t *testing.T) {
		if _, st := cp.dialTerm(tpath, agentID, fresh(), "http://evil.example"); st != http.StatusForbidden {
			t.Fatalf("%d", st)
		}
	})
	t.Run("ticket for another agent", func(t *testing.T) {
		if _, st := cp.dialTerm(tpath, idle, fresh(), cp.URL); st != http.StatusUnauthorized {
			t.Fatalf("%d", st)
		}
	})
	t.Run("no ticket", func(t *testing.T) {
		if _, st := cp.dialTerm(tpath, agentID, "", cp.URL); st != http.StatusUnauthorized {
			t.Fatalf("%d", st)
		}
	})
	t.Run("expired ticket", func(t *testing.T) {
		tk := fresh()
		clock.Advance(31 * time.Second)
		if _, st := cp.dialTerm(tpath, agentID, tk, cp.URL); st != http.StatusUnauthorized {
			t.Fatalf("%d", st)
		}
	})
	t.Run("token revoked after the ticket", func(t *testing.T) {
		id, tok2 := newToken(t, cp, tpath, "dev")
		code, m := cp.ticket(tpath, agentID, tok2)
		if code != http.StatusCreated {
			t.Fatalf("ticket: %d %v", code, m)
		}
		cp.must("DELETE", tpath+"/tokens/"+id, nil)
		if _, st := cp.dialTerm(tpath, agentID, m["ticket"].(string), cp.URL); st != http.StatusUnauthorized {
			t.Fatalf("%d", st)
		}
	})
	t.Run("agent gone between ticket and socket", func(t *testing.T) {
		tk := fresh()
		d.stop()
		waitFor(t, "agent disconnected", 10*time.Second, func() bool {
			code, _ := cp.ticket(tpath, agentID, admin)
			return code == http.StatusConflict
		})
		if _, st := cp.dialTerm(tpath, agentID, tk, cp.URL); st != http.StatusConflict {
			t.Fatalf("%d", st)
		}
	})
}

func TestTerminalDisabledOnDataPlane(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	_, ctl := ptyDataPlane(t, cp, dir, tok, connect.Config{NoTerminal: true})
	_, tk := cp.ticket(tpath, agentID, "")
	tc, st := cp.dialTerm(tpath, agentID, tk["ticket"].(string), cp.URL)
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("dial: %d", st)
	}
	m := tc.until("")
	if m["type"] != "error" || m["error"] != "terminal_disabled" {
		t.Fatalf("%v", m)
	}
	if len(ctl.procs) != 0 {
		t.Fatal("a shell was started")
	}
}

// Losing the stream kills the shell, and the browser is told.
func TestTerminalEndsWithStream(t *testing.T) {
	_, d, ctl, tc := runningShell(t)
	d.stop()
	m := tc.until("")
	if m["type"] != "error" || m["error"] != "agent_disconnected" {
		t.Fatalf("%v", m)
	}
	waitFor(t, "shell killed", 10*time.Second, ctl.allReaped)
}

// A browser that does not read loses its session (the shell is killed);
// the agent's stream, and other sessions on it, go on.
func TestTerminalSlowBrowserDropsSessionNotStream(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	// A burst of output delays the heartbeats' acknowledgements: the
	// default test interval (200 ms, dead after 600 ms) is too tight
	// under -race on a loaded machine.
	d, ctl := ptyDataPlane(t, cp, dir, tok, connect.Config{Heartbeat: time.Second})
	_, tk := cp.ticket(tpath, agentID, "")
	slow, _ := cp.dialTerm(tpath, agentID, tk["ticket"].(string), cp.URL)
	slow.send("yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
	// Never read: the shell's output piles up until the control plane
	// drops the session and the data plane kills the shell.
	waitFor(t, "slow session's shell killed", 60*time.Second, func() bool {
		ctl.mu.Lock()
		n := len(ctl.procs)
		ctl.mu.Unlock()
		return n == 1 && ctl.allReaped()
	})
	_, tk = cp.ticket(tpath, agentID, "")
	tc, st := cp.dialTerm(tpath, agentID, tk["ticket"].(string), cp.URL)
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("second session: %d", st)
	}
	tc.send("echo still-$((2*21))\n")
	tc.until("still-42")
	if !d.c.Connected() {
		t.Fatal("the stream was dropped")
	}
	slow.conn.CloseNow()
	tc.send("exit\n")
	if m := tc.until(""); m["type"] != "exit" || m["code"] != float64(0) {
		t.Fatalf("%v", m)
	}
}

// Stopping the control plane ends open terminals cleanly (and goleak
// checks nothing is left behind).
func TestTerminalControlPlaneShutdown(t *testing.T) {
	cp, d, ctl, tc := runningShell(t)
	start := time.Now()
	cp.stop()
	t.Logf("control plane stopped in %v", time.Since(start))
	if m := tc.until(""); m["error"] != "shutting_down" {
		t.Fatalf("%v", m)
	}
	tc.closed(websocket.StatusGoingAway)
	d.stop()
	waitFor(t, "shell killed", 10*time.Second, ctl.allReaped)
}

func TestTerminalTicketsBoundedPerToken(t *testing.T) {
	dir := t.TempDir()
	cp := startCP(t, filepath.Join(dir, "cp"), "")
	tpath, agentID, tok := cp.agent("acme")
	_, dev := newToken(t, cp, tpath, "dev")
	d := startDP(t, connect.Config{URL: cp.URL, Token: tok, BasePath: writeBase(t, dir, base), StateDir: filepath.Join(dir, "dp")}, &ptyCtl{})
	waitFor(t, "connected", 10*time.Second, d.c.Connected)
	for i := 0; ; i++ {
		code, m := cp.ticket(tpath, agentID, dev)
		if code == http.StatusTooManyRequests {
			if i != 16 {
				t.Fatalf("refused after %d tickets", i)
			}
			break
		}
		if code != http.StatusCreated || i > 16 {
			t.Fatalf("ticket %d: %d %v", i, code, m)
		}
	}
	// Another token of the tenant is not affected.
	if code, m := cp.ticket(tpath, agentID, ""); code != http.StatusCreated {
		t.Fatalf("other token: %d %v", code, m)
	}
}
