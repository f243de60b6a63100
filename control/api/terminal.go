package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/internal/webui"
	"github.com/coder/websocket"
)

// The web terminal: a browser's shell in an agent's sandbox, relayed over
// the data plane's own outbound stream (the control plane never dials a
// data plane).
//
// Browsers cannot set Authorization on a WebSocket handshake, so the page
// first POSTs .../terminal/ticket with its bearer token and gets a ticket:
// random, single use, valid TicketTTL, bound to that token, tenant and
// agent, and held in this replica's memory only. The WebSocket GET carries
// the ticket in the query. A ticket in a URL can end up in an access log,
// but it is worth nothing once used or 30 s old, which is why this was
// chosen over putting the long-lived token itself in Sec-WebSocket-Protocol.
//
// Browser protocol (the same as the data plane's local admin UI terminal):
// binary messages are pty bytes both ways; text messages are JSON:
// {"type":"resize","cols":N,"rows":N} from the browser, {"type":"exit",
// "code":N} or {"type":"error","error":"...","message":"..."} to it.

// Terminal limits.
const (
	// TicketTTL is how long a terminal ticket may wait to be used.
	TicketTTL = 30 * time.Second
	// maxTickets bounds the unused tickets held (all tenants), and
	// maxTicketsPerToken those of one token.
	maxTickets         = 10000
	maxTicketsPerToken = 16
	// termQueueBytes bounds the output queued for one browser; a browser
	// further behind is disconnected, never the agent's stream. What has
	// queued goes out together (in messages of up to termMessageBytes), so
	// bursts of small reads (a shell loop's lines) take bytes, not slots.
	termQueueBytes = 1 << 20
	// termMessageBytes bounds one output message to the browser (within
	// the 32 KiB a WebSocket client reads by default, e.g. coder/websocket).
	termMessageBytes = 32 << 10
	// termOpenTimeout: the data plane must acknowledge term_open within.
	termOpenTimeout = 15 * time.Second
	// termReadLimit bounds one browser message.
	termReadLimit = 64 << 10
)

type termTicket struct {
	tokenID, kind, tenantID, agentID string
	expires                          time.Time
}

type ticketResp struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
	// Path is the WebSocket to open with ?ticket=.
	Path string `json:"path"`
}

func terminalPath(tenantID, agentID string) string {
	return v1 + "/tenants/" + url.PathEscape(tenantID) + "/agents/" + url.PathEscape(agentID) + "/terminal"
}

// terminalTicket serves POST .../agents/{agent}/terminal/ticket.
func (s *Server) terminalTicket(c *call) error {
	agentID := c.r.PathValue("agent")
	if _, err := c.s.st.GetAgent(c.r.Context(), c.tenantID, agentID); err != nil {
		return err
	}
	// Checked here too, so a browser (which never sees why a WebSocket
	// handshake failed) learns it before opening the socket.
	if s.termHub != nil && !s.termHub.Connected(c.tenantID, agentID) {
		return errNotConnected
	}
	b := make([]byte, 24)
	rand.Read(b)
	tk := base64.RawURLEncoding.EncodeToString(b)
	now := s.cfg.Now()
	exp := now.Add(TicketTTL)
	s.termMu.Lock()
	if s.tickets == nil {
		s.tickets = map[string]termTicket{}
	}
	for k, t := range s.tickets {
		if !now.Before(t.expires) {
			delete(s.tickets, k)
		}
	}
	mine := 0
	for _, t := range s.tickets {
		if t.tokenID == c.p.TokenID {
			mine++
		}
	}
	// Per token too, so one tenant cannot use up the tickets of all.
	if len(s.tickets) >= maxTickets || mine >= maxTicketsPerToken {
		s.termMu.Unlock()
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited", msg: "too many unused terminal tickets; retry later", retry: TicketTTL}
	}
	s.tickets[tk] = termTicket{tokenID: c.p.TokenID, kind: c.p.Kind, tenantID: c.tenantID, agentID: agentID, expires: exp}
	s.termMu.Unlock()
	return c.ok(http.StatusCreated, ticketResp{Ticket: tk, ExpiresAt: exp.UTC(), Path: terminalPath(c.tenantID, agentID)})
}

// redeem takes a ticket out (single use) if it is valid for the tenant
// and agent.
func (s *Server) redeem(tk, tenantID, agentID string) (termTicket, bool) {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	t, ok := s.tickets[tk]
	if !ok {
		return termTicket{}, false
	}
	delete(s.tickets, tk)
	if !s.cfg.Now().Before(t.expires) ||
		subtle.ConstantTimeCompare([]byte(t.tenantID), []byte(tenantID)) != 1 || t.agentID != agentID {
		return termTicket{}, false
	}
	return t, true
}

var errTicket = errf(http.StatusUnauthorized, "unauthorized", "missing, invalid, expired or already used terminal ticket")

// TerminalHandler serves GET /api/v1/tenants/{tenant}/agents/{agent}/terminal.
func (s *Server) TerminalHandler(h *Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, s: s, rid: newRequestID(), client: s.clientAddr(r)}
		w.Header().Set("X-Request-Id", c.rid)
		w.Header().Set("Cache-Control", "no-store")
		tenantID, agentID := r.PathValue("tenant"), r.PathValue("agent")
		if !webui.SameOriginWebSocket(r) {
			c.fail(errf(http.StatusForbidden, "bad_origin", "WebSocket from another origin refused"))
			return
		}
		t, ok := s.redeem(r.URL.Query().Get("ticket"), tenantID, agentID)
		if !ok {
			c.fail(errTicket)
			return
		}
		// The ticket's token must still be good: revoking it or an IP ACL
		// change between ticket and socket counts.
		ctx := r.Context()
		tok, err := s.st.GetTokenForAuth(ctx, t.tokenID)
		if err != nil || tok.Disabled || (!tok.ExpiresAt.IsZero() && !s.cfg.Now().Before(tok.ExpiresAt)) ||
			!slices.Contains(readers, tok.Kind) {
			c.fail(errUnauthorized)
			return
		}
		c.p = Principal{TokenID: tok.ID, Kind: tok.Kind, TenantID: tok.TenantID, expiresAt: tok.ExpiresAt}
		c.tenantID = tenantID
		if tok.Kind != store.KindSuperadmin {
			if err := s.checkACL(ctx, tenantID, c.client); err != nil {
				c.fail(err)
				return
			}
		}
		if _, err := s.st.GetAgent(ctx, tenantID, agentID); err != nil {
			c.fail(err)
			return
		}
		cols, rows := webui.TerminalSize(r.URL.Query().Get("cols"), 80), webui.TerminalSize(r.URL.Query().Get("rows"), 24)
		ts, err := h.openTerminal(tenantID, agentID, cols, rows)
		if err != nil {
			c.fail(err)
			return
		}
		// Hub.Close waits for the session (its close is audited before
		// the store closes).
		defer h.wg.Done()
		defer ts.stream.endTerm(ts, true)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{})
		if err != nil {
			return // Accept has answered
		}
		conn.SetReadLimit(termReadLimit)
		started := time.Now()
		s.termAudit(c, "terminal.open", agentID, map[string]any{"agent_id": agentID, "session": ts.id})
		code, why := s.relayTerminal(ctx, h, conn, ts)
		detail := map[string]any{"agent_id": agentID, "session": ts.id, "duration_s": int(time.Since(started).Seconds()), "reason": why}
		if code != nil {
			detail["exit_code"] = *code
		}
		s.termAudit(c, "terminal.close", agentID, detail)
	})
}

// termAudit writes one audit entry; a failure is logged, not fatal (the
// session is already open or over).
func (s *Server) termAudit(c *call, action, agentID string, detail map[string]any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), 10*time.Second)
	defer cancel()
	d, _ := json.Marshal(detail)
	err := s.st.AppendAudit(ctx, store.AuditEntry{
		ID: store.NewID(), TS: s.cfg.Now(), TenantID: c.tenantID, ActorID: c.p.TokenID, ActorKind: c.p.Kind,
		Action: action, ObjectType: "agent", ObjectID: agentID, RemoteAddr: c.client.String(), RequestID: c.rid, Detail: d,
	})
	if err != nil {
		s.log.Error("terminal audit", "action", action, "agent", agentID, "err", err)
	}
}

type browserMsg struct {
	Type    string `json:"type"`
	Cols    uint16 `json:"cols,omitempty"`
	Rows    uint16 `json:"rows,omitempty"`
	Code    *int   `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// relayTerminal pumps one session until either end closes it; it returns
// the exit code (nil if the shell did not exit) and why it ended.
//
// Canceling a context coder/websocket is reading or writing with drops
// the connection without a close frame, so the browser's reader runs on
// its own context, canceled only after the close handshake, and the last
// messages are written on a context of their own.
func (s *Server) relayTerminal(ctx context.Context, h *Hub, conn *websocket.Conn, ts *termSession) (*int, string) {
	a := ts.stream
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	write := func(typ websocket.MessageType, b []byte, d time.Duration) error {
		wctx, c2 := context.WithTimeout(rctx, d)
		defer c2()
		return conn.Write(wctx, typ, b)
	}
	writeJSONMsg := func(m browserMsg) {
		b, _ := json.Marshal(m)
		_ = write(websocket.MessageText, b, 5*time.Second)
	}
	// browser -> data plane. Writes to the agent's stream never use the
	// session's context: canceling a write in progress would close the
	// whole stream. They end with the hub (the stream ends then anyway)
	// or send's own timeout.
	inDone := make(chan struct{})
	streamGone := false // read after inDone is closed
	go func() {
		defer close(inDone)
		for {
			typ, data, err := conn.Read(rctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				for len(data) > 0 {
					n := min(len(data), wire.MaxTermData)
					if rctx.Err() != nil {
						return
					}
					if a.send(a.h.ctx, &wire.Msg{Type: wire.TypeTermData, Session: ts.id, Data: data[:n]}) != nil {
						streamGone = true
						return
					}
					data = data[n:]
				}
				continue
			}
			var m browserMsg
			if json.Unmarshal(data, &m) == nil && m.Type == "resize" && m.Cols > 0 && m.Rows > 0 && m.Cols <= 1000 && m.Rows <= 1000 {
				if a.send(a.h.ctx, &wire.Msg{Type: wire.TypeTermResize, Session: ts.id, Cols: m.Cols, Rows: m.Rows}) != nil {
					streamGone = true
					return
				}
			}
		}
	}()
	// Close first, then end the reader (it sees the close frame).
	closeWith := func(code websocket.StatusCode, reason string) {
		conn.Close(code, truncateReason(reason))
		cancel()
		<-inDone
	}
	openTimer := time.NewTimer(termOpenTimeout)
	defer openTimer.Stop()
	opened := ts.opened
	for {
		select {
		case <-ts.outReady:
			if write(websocket.MessageBinary, ts.take(), 30*time.Second) != nil {
				closeWith(websocket.StatusGoingAway, "")
				return nil, "browser too slow or gone"
			}
		case <-opened:
			opened = nil
			openTimer.Stop()
		case <-openTimer.C:
			if opened != nil {
				writeJSONMsg(browserMsg{Type: "error", Error: "no_answer", Message: "the data plane did not open the terminal (too old a version, or busy)"})
				closeWith(websocket.StatusTryAgainLater, "no answer from the data plane")
				return nil, "no answer"
			}
		case <-h.ctx.Done():
			writeJSONMsg(browserMsg{Type: "error", Error: "shutting_down", Message: "the control plane is shutting down"})
			closeWith(websocket.StatusGoingAway, "control plane shutting down")
			return nil, "control plane shutting down"
		case <-ts.done:
			// Output queued before the end goes first.
			for b := ts.take(); len(b) > 0; b = ts.take() {
				if write(websocket.MessageBinary, b, 5*time.Second) != nil {
					break
				}
			}
			e := ts.result()
			if e.errCode != "" {
				code := websocket.StatusNormalClosure
				if e.errCode == "shutting_down" {
					code = websocket.StatusGoingAway
				}
				writeJSONMsg(browserMsg{Type: "error", Error: e.errCode, Message: e.msg})
				closeWith(code, e.errCode)
				return e.code, e.errCode
			}
			writeJSONMsg(browserMsg{Type: "exit", Code: e.code, Message: e.msg})
			closeWith(websocket.StatusNormalClosure, "process exited")
			return e.code, "exited"
		case <-inDone:
			if streamGone && h.ctx.Err() != nil {
				writeJSONMsg(browserMsg{Type: "error", Error: "shutting_down", Message: "the control plane is shutting down"})
				conn.Close(websocket.StatusGoingAway, "control plane shutting down")
				return nil, "control plane shutting down"
			}
			if streamGone {
				writeJSONMsg(browserMsg{Type: "error", Error: "agent_disconnected", Message: "the agent's connection to the control plane was lost"})
				conn.Close(websocket.StatusNormalClosure, "agent_disconnected")
				return nil, "agent_disconnected"
			}
			conn.CloseNow()
			return nil, "browser closed"
		case <-ctx.Done():
			conn.CloseNow()
			cancel()
			<-inDone
			return nil, "browser gone"
		}
	}
}

// termSession is one terminal on the control plane's side.
type termSession struct {
	id       string
	stream   *agentStream
	outMu    sync.Mutex
	outBuf   []byte        // output for the browser, not yet sent
	outReady chan struct{} // cap 1: outBuf became non-empty
	opened   chan struct{} // closed on term_opened
	done     chan struct{} // closed when the session ended on the data plane's side
	once     sync.Once
	openOnce sync.Once

	mu  sync.Mutex
	end termEnd
}

type termEnd struct {
	code    *int
	errCode string
	msg     string
}

func (t *termSession) finish(e termEnd) {
	t.once.Do(func() {
		t.mu.Lock()
		t.end = e
		t.mu.Unlock()
		close(t.done)
	})
}

// queue adds output for the browser; false means the browser is too far
// behind (termQueueBytes) and nothing was added.
func (t *termSession) queue(b []byte) bool {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if len(t.outBuf)+len(b) > termQueueBytes {
		return false
	}
	wasEmpty := len(t.outBuf) == 0
	t.outBuf = append(t.outBuf, b...)
	if wasEmpty {
		select {
		case t.outReady <- struct{}{}:
		default:
		}
	}
	return true
}

// take removes and returns up to termMessageBytes of queued output (nil
// if none); if more is left, outReady is signalled again.
func (t *termSession) take() []byte {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	b := t.outBuf
	if len(b) <= termMessageBytes {
		t.outBuf = nil
		return b
	}
	t.outBuf = t.outBuf[termMessageBytes:len(t.outBuf):len(t.outBuf)]
	select {
	case t.outReady <- struct{}{}:
	default:
	}
	return b[:termMessageBytes:termMessageBytes]
}

func (t *termSession) result() termEnd {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.end
}

var (
	errNotConnected = errf(http.StatusConflict, "agent_not_connected", "the agent is not connected to this control-plane replica")
	errTermBusy     = errf(http.StatusTooManyRequests, "terminal_busy", "too many terminal sessions open for this agent")
)

// openTerminal registers a session on the agent's newest stream here and
// asks the data plane to open it.
func (h *Hub) openTerminal(tenantID, agentID string, cols, rows uint16) (*termSession, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errf(http.StatusServiceUnavailable, "unavailable", "the control plane is shutting down")
	}
	var best *streamSub
	for sub := range h.subs[tenantID] {
		if sub.agent == agentID && sub.stream.Load() != nil && (best == nil || sub.seq > best.seq) {
			best = sub
		}
	}
	if best == nil {
		h.mu.Unlock()
		return nil, errNotConnected
	}
	// Done by the caller when the session ends, or below on failure.
	h.wg.Add(1)
	h.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			h.wg.Done()
		}
	}()
	a := best.stream.Load()
	b := make([]byte, 12)
	rand.Read(b)
	ts := &termSession{id: base64.RawURLEncoding.EncodeToString(b), stream: a, outReady: make(chan struct{}, 1),
		opened: make(chan struct{}), done: make(chan struct{})}
	a.tmu.Lock()
	if a.tclosed {
		a.tmu.Unlock()
		return nil, errNotConnected
	}
	if len(a.terms) >= wire.MaxTermSessions {
		a.tmu.Unlock()
		return nil, errTermBusy
	}
	if a.terms == nil {
		a.terms = map[string]*termSession{}
	}
	a.terms[ts.id] = ts
	a.tmu.Unlock()
	if err := a.send(h.ctx, &wire.Msg{Type: wire.TypeTermOpen, Session: ts.id, Cols: cols, Rows: rows}); err != nil {
		a.endTerm(ts, false)
		return nil, errNotConnected
	}
	ok = true
	return ts, nil
}

// endTerm forgets a session; tell says to ask the data plane to close it.
func (a *agentStream) endTerm(ts *termSession, tell bool) {
	a.tmu.Lock()
	_, ok := a.terms[ts.id]
	delete(a.terms, ts.id)
	closed := a.tclosed
	a.tmu.Unlock()
	ts.finish(termEnd{errCode: "closed", msg: "session closed"})
	if ok && tell && !closed {
		_ = a.send(a.h.ctx, &wire.Msg{Type: wire.TypeTermClose, Session: ts.id})
	}
}

// endTerms ends every session of a stream that is gone.
func (a *agentStream) endTerms() {
	a.tmu.Lock()
	a.tclosed = true
	ts := a.terms
	a.terms = nil
	a.tmu.Unlock()
	// When the control plane itself is stopping, say so: the browser's
	// handler may see the session end before it sees the shutdown.
	end := termEnd{errCode: "agent_disconnected", msg: "the agent's connection to the control plane was lost"}
	if a.h.ctx.Err() != nil {
		end = termEnd{errCode: "shutting_down", msg: "the control plane is shutting down"}
	}
	for _, t := range ts {
		t.finish(end)
	}
}

// termMsg routes a terminal message from the data plane; handled reports
// whether it was one (it then needs no reply).
func (a *agentStream) termMsg(ctx context.Context, m *wire.Msg) (handled bool, err error) {
	switch m.Type {
	case wire.TypeTermOpened, wire.TypeTermData, wire.TypeTermExit:
	default:
		return false, nil
	}
	if len(m.Session) == 0 || len(m.Session) > wire.MaxTermID || len(m.Data) > wire.MaxTermData {
		return true, fieldErr("session", "terminal message out of bounds")
	}
	a.tmu.Lock()
	ts := a.terms[m.Session]
	a.tmu.Unlock()
	if ts == nil {
		return true, nil // closed meanwhile
	}
	switch m.Type {
	case wire.TypeTermOpened:
		ts.openOnce.Do(func() { close(ts.opened) })
	case wire.TypeTermData:
		if len(m.Data) == 0 {
			return true, nil
		}
		if !ts.queue(m.Data) {
			// The browser does not keep up: drop the session, not the
			// stream (which carries the agent's policy and logs).
			a.s.log.Warn("terminal output queue full; closing the session", "tenant", a.c.p.TenantID, "agent", a.c.p.AgentID, "session", ts.id)
			a.tmu.Lock()
			delete(a.terms, ts.id)
			a.tmu.Unlock()
			ts.finish(termEnd{errCode: "too_slow", msg: "the browser did not keep up with the terminal's output"})
			return true, a.send(ctx, &wire.Msg{Type: wire.TypeTermClose, Session: ts.id})
		}
	case wire.TypeTermExit:
		a.tmu.Lock()
		delete(a.terms, ts.id)
		a.tmu.Unlock()
		ts.finish(termEnd{code: m.Code, errCode: truncate(m.Error, 64), msg: truncate(m.Message, 512)})
	}
	return true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// isTerm cheaply spots a terminal message (checked again when parsed).
func isTerm(b []byte) bool {
	return bytes.Contains(b[:min(len(b), 64)], []byte(`"type":"term_`))
}
