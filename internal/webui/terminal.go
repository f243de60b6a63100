package webui

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The web terminals of both UIs (the data plane's admin UI and the control
// plane's) speak one protocol over a WebSocket:
//   client -> server, binary: keyboard input for the pty
//   client -> server, text:   {"type":"resize","cols":N,"rows":N}
//   server -> client, binary: pty output
//   server -> client, text:   {"type":"exit","code":N} or {"type":"error","message":"..."}

// SameOriginWebSocket requires a same-origin Origin header on a WebSocket
// handshake. Browsers always send one there, and WebSockets are not bound
// by CORS (cookies ride along cross-site), so a missing Origin is refused
// too: a page elsewhere must not drive a terminal.
func SameOriginWebSocket(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// TerminalSize reads a terminal's cols or rows from a query value: 1 to
// 1000, else def.
func TerminalSize(v string, def uint16) uint16 {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return def
	}
	return uint16(n)
}
