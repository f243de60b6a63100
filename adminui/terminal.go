package adminui

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/internal/webui"
	"github.com/coder/websocket"
)

// The terminal's protocol is described in package webui.

type termControl struct {
	Type string `json:"type"`
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

func (s *Server) terminal(w http.ResponseWriter, r *http.Request) {
	if !webui.SameOriginWebSocket(r) {
		s.emitAdmin(r, "terminal_open", audit.Deny, "bad websocket origin", map[string]string{"origin": r.Header.Get("Origin")})
		writeError(w, http.StatusForbidden, "bad_origin", "WebSocket from another origin refused")
		return
	}
	sess := r.Context().Value(ctxKey{}).(*session)
	// The CSRF token in the query is a second factor against a same-site
	// page that could open a socket with the cookie.
	if got := r.URL.Query().Get("csrf"); got == "" || got != sess.csrf {
		writeError(w, http.StatusForbidden, "csrf", "missing or wrong csrf parameter")
		return
	}
	cols, rows := webui.TerminalSize(r.URL.Query().Get("cols"), 80), webui.TerminalSize(r.URL.Query().Get("rows"), 24)
	release, ok := s.acquireStream(w)
	if !ok {
		return
	}
	defer release()
	if !s.trackTerminal() {
		writeError(w, http.StatusServiceUnavailable, "closing", "the admin server is shutting down")
		return
	}
	defer s.termWG.Done()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{})
	if err != nil {
		return // Accept has answered
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	proc, err := s.cfg.Controller.Exec(ctx, ExecRequest{TTY: true, Cols: cols, Rows: rows})
	if err != nil {
		s.emitAdmin(r, "terminal_open", audit.Deny, err.Error(), nil)
		msg, _ := json.Marshal(map[string]string{"type": "error", "message": err.Error()})
		_ = conn.Write(ctx, websocket.MessageText, msg)
		conn.Close(websocket.StatusInternalError, "exec failed")
		return
	}
	defer proc.Close()
	s.cfg.Audit.Emit(&audit.Event{TS: s.cfg.Now(), Type: audit.TypeCommand, Action: "terminal_open", Actor: s.actor(r), Decision: audit.Allow})

	// pty -> socket
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := proc.Read(buf)
			if n > 0 {
				if werr := conn.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					cancel()
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// socket -> pty
	inDone := make(chan struct{})
	go func() {
		defer close(inDone)
		conn.SetReadLimit(1 << 20)
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				cancel()
				return
			}
			if typ == websocket.MessageBinary {
				if _, err := proc.Write(data); err != nil {
					cancel()
					return
				}
				continue
			}
			var c termControl
			if json.Unmarshal(data, &c) == nil && c.Type == "resize" && c.Cols > 0 && c.Rows > 0 && c.Cols <= 1000 && c.Rows <= 1000 {
				_ = proc.Resize(c.Cols, c.Rows)
			}
		}
	}()

	select {
	case <-outDone:
		code, werr := proc.Wait()
		msg := map[string]any{"type": "exit", "code": code}
		if werr != nil && !errors.Is(werr, context.Canceled) {
			msg["message"] = werr.Error()
		}
		b, _ := json.Marshal(msg)
		_ = conn.Write(ctx, websocket.MessageText, b)
		conn.Close(websocket.StatusNormalClosure, "process exited")
	case <-ctx.Done():
		conn.Close(websocket.StatusGoingAway, "closing")
	}
	cancel()
	_ = proc.Close()
	<-outDone
	<-inDone
	s.cfg.Audit.Emit(&audit.Event{TS: s.cfg.Now(), Type: audit.TypeCommand, Action: "terminal_close", Actor: s.actor(r), Decision: audit.Allow})
}
