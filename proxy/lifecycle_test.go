package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/audit"
)

func TestCloseEndsTunnelsAndReady(t *testing.T) {
	raw := tcpEcho(t)
	e := newEnv(t, withPort("domains:\n  - domain: raw.test\n    ports: [{RAW}]\n    allow_private: true\n", raw))
	for i := 0; e.p.Ready() != nil; i++ {
		if i > 200 {
			t.Fatalf("Ready: %v", e.p.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, resp := e.rawConnect(fmt.Sprintf("raw.test:%d", raw))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := roundTrip(t, c, "x"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on an open tunnel")
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("tunnel still open after Close")
	}
	if e.p.Ready() == nil {
		t.Fatal("Ready after Close")
	}
	// The tunnel's event was recorded before Close returned.
	if evs := e.events.all(); len(evs) != 1 || evs[0].Type != audit.TypeConnect {
		t.Fatalf("events %+v", evs)
	}
}

// upgradeServer accepts "Upgrade: echo" and then echoes bytes.
func upgradeServer(t *testing.T) int {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", 426)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, brw)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).Port
}

// TestUpgradeChargedToBudget: bytes an agent sends over an upgraded
// connection (WebSocket and the like) count against the egress budget.
func TestUpgradeChargedToBudget(t *testing.T) {
	port := upgradeServer(t)
	e := newEnv(t, withPort("domains:\n  - domain: ws.test\n    ports: [{RAW}]\n    allow_private: true\n    egress_limit: 32KiB\n", port))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://ws.test:%d/ HTTP/1.1\r\nHost: ws.test:%d\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", port, port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	chunk := strings.Repeat("w", 4<<10)
	got := 0
	for i := 0; i < 32; i++ {
		if _, err := io.WriteString(c, chunk); err != nil {
			break
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := io.ReadFull(br, make([]byte, len(chunk)))
		got += n
		if err != nil {
			break
		}
	}
	if got >= 32<<10 {
		t.Fatalf("%d bytes echoed through an upgraded connection with a 32KiB budget", got)
	}
	if used := e.p.budget.Used("ws.test"); used > 32<<10 || used < 16<<10 {
		t.Fatalf("budget used %d", used)
	}
}
