package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/store"
	"github.com/coder/websocket"
)

// Hub knows the agent streams connected to this replica and wakes them
// when something they run changes. Its Notify is the api.Config.Notify of
// the server (and, with several replicas, is also called for changes made
// on the others).
type Hub struct {
	mu     sync.Mutex
	subs   map[string]map[*streamSub]struct{} // by tenant
	closed bool
	seq    uint64
	relay  Relay
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

type streamSub struct {
	agent string
	seq   uint64
	wake  chan struct{}
	// gone is closed when a newer stream of the same agent replaced this
	// one (MaxPerAgent).
	gone chan struct{}
	// stream is set once the WebSocket is up (terminals ride it).
	stream atomic.Pointer[agentStream]
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{subs: map[string]map[*streamSub]struct{}{}, ctx: ctx, cancel: cancel}
}

// Close ends every stream and waits until their handlers are done (the
// HTTP server's Shutdown does not wait for hijacked connections); new
// streams are refused. Call it before closing the store.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	r := h.relay
	h.relay = nil
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	if r != nil {
		r.Close()
	}
}

// Relay carries change notifications to the other control-plane replicas
// (package notify).
type Relay interface {
	Publish(tenantID, agentID string)
	Close()
}

// SetRelay makes Notify also publish to the other replicas; Close closes
// the relay. Call it before serving.
func (h *Hub) SetRelay(r Relay) {
	h.mu.Lock()
	h.relay = r
	h.mu.Unlock()
}

// Notify wakes the streams of agentID in tenantID, or of every agent of the
// tenant when agentID is "", here and (through the relay) on the other
// replicas. It never blocks.
func (h *Hub) Notify(tenantID, agentID string) {
	h.NotifyLocal(tenantID, agentID)
	h.mu.Lock()
	r := h.relay
	h.mu.Unlock()
	if r != nil {
		r.Publish(tenantID, agentID)
	}
}

// NotifyAll wakes every stream of this replica (after notifications may
// have been missed).
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// NotifyLocal wakes matching streams of this replica only (a notification
// relayed from another replica).
func (h *Hub) NotifyLocal(tenantID, agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[tenantID] {
		if agentID == "" || s.agent == agentID {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Connected reports whether the agent has a stream open to this replica.
func (h *Hub) Connected(tenantID, agentID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[tenantID] {
		if s.agent == agentID {
			return true
		}
	}
	return false
}

// Count is the number of open streams.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}

// subscribe registers a stream of agentID. When the agent already has max
// streams here, the oldest are told to end (gone) and forgotten, so that
// one agent token cannot hold any number of connections, yet a data plane
// reconnecting before its old connection is noticed dead is never refused.
func (h *Hub) subscribe(tenantID, agentID string, max int) *streamSub {
	s := &streamSub{agent: agentID, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	if h.subs[tenantID] == nil {
		h.subs[tenantID] = map[*streamSub]struct{}{}
	}
	m := h.subs[tenantID]
	var same []*streamSub
	for o := range m {
		if o.agent == agentID {
			same = append(same, o)
		}
	}
	if max > 0 && len(same) >= max {
		sort.Slice(same, func(i, j int) bool { return same[i].seq < same[j].seq })
		for _, o := range same[:len(same)-max+1] {
			close(o.gone)
			delete(m, o)
		}
	}
	h.seq++
	s.seq = h.seq
	m[s] = struct{}{}
	return s
}

func (h *Hub) unsubscribe(tenantID string, s *streamSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[tenantID], s)
	if len(h.subs[tenantID]) == 0 {
		delete(h.subs, tenantID)
	}
}

// StreamOptions tune the agent stream.
type StreamOptions struct {
	// Resync: the state is recomputed at least this often (default
	// wire.ResyncInterval) and sent if it changed.
	Resync time.Duration
	// VerifyPeer, if set, is called with the request before the upgrade
	// (the mTLS check); a non-nil error refuses the connection with 403.
	VerifyPeer func(r *http.Request, p Principal) error
	// MaxPerAgent bounds one agent's streams on this replica (default
	// DefaultMaxStreamsPerAgent): a new stream past it closes the oldest.
	MaxPerAgent int
}

// DefaultMaxStreamsPerAgent: a data plane holds one stream, two while a
// dead connection is not yet noticed.
const DefaultMaxStreamsPerAgent = 2

// errReplaced ends a stream that a newer one of the same agent replaced.
var errReplaced = errf(http.StatusConflict, "replaced", "a newer connection of this agent replaced this one")

// StreamHandler serves GET /api/v1/agent/stream: the data plane's one
// connection. Only agent tokens are accepted. The handler pushes the
// agent's state (effective policy and referenced secrets) on connect and
// whenever hub says it changed, pushes commands, and takes heartbeats and
// log batches.
func (s *Server) StreamHandler(h *Hub, opt StreamOptions) http.Handler {
	if opt.Resync <= 0 {
		opt.Resync = wire.ResyncInterval
	}
	if opt.MaxPerAgent <= 0 {
		opt.MaxPerAgent = DefaultMaxStreamsPerAgent
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, s: s, rid: newRequestID(), client: s.clientAddr(r)}
		w.Header().Set("X-Request-Id", c.rid)
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			c.fail(errf(http.StatusMethodNotAllowed, "method_not_allowed", "use GET"))
			return
		}
		p, err := s.authn(c)
		if err != nil {
			c.fail(err)
			return
		}
		c.p, c.tenantID = p, p.TenantID
		if p.Kind != store.KindAgent {
			c.fail(errForbidden)
			return
		}
		if ok, wait := s.allow(p.TokenID); !ok {
			c.fail(&apiError{status: http.StatusTooManyRequests, code: "rate_limited", msg: "too many connections for this token; retry later", retry: wait})
			return
		}
		if opt.VerifyPeer != nil {
			if err := opt.VerifyPeer(r, p); err != nil {
				c.fail(errf(http.StatusForbidden, "forbidden", "%v", err))
				return
			}
		}
		sub := h.subscribe(p.TenantID, p.AgentID, opt.MaxPerAgent)
		if sub == nil {
			c.fail(errf(http.StatusServiceUnavailable, "unavailable", "the control plane is shutting down"))
			return
		}
		h.wg.Add(1)
		defer h.wg.Done()
		defer h.unsubscribe(p.TenantID, sub)
		// The connection outlives the server's read and write timeouts.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		// No browser can send an Authorization header on a WebSocket
		// handshake, so cross-origin pages cannot ride on this endpoint.
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		conn.SetReadLimit(wire.MaxMessage)
		st := &agentStream{s: s, h: h, c: c, conn: conn, resync: opt.Resync}
		st.setExpiry(p.expiresAt)
		sub.stream.Store(st)
		defer st.endTerms()
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stopAfter := context.AfterFunc(h.ctx, cancel)
		defer stopAfter()
		err = st.run(ctx, sub)
		st.closeFor(err)
	})
}

// closeFor closes the connection with a status saying why: a refused
// token or message is a policy violation (with the error code), anything
// else on our side an internal error (details only in the log).
func (a *agentStream) closeFor(err error) {
	conn, p := a.conn, a.c.p
	switch {
	case a.h.ctx.Err() != nil:
		conn.Close(websocket.StatusGoingAway, "control plane shutting down")
	case err == nil, errors.Is(err, context.Canceled), websocket.CloseStatus(err) != -1:
		conn.Close(websocket.StatusNormalClosure, "")
	default:
		var ae *apiError
		if errors.As(err, &ae) {
			conn.Close(websocket.StatusPolicyViolation, truncateReason(ae.code+": "+ae.msg))
		} else {
			a.s.log.Warn("agent stream", "tenant", p.TenantID, "agent", p.AgentID, "request_id", a.c.rid, "err", err)
			conn.Close(websocket.StatusInternalError, "internal error")
		}
	}
}

// truncateReason fits a close reason into a control frame (123 bytes).
func truncateReason(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

type agentStream struct {
	s      *Server
	h      *Hub
	c      *call
	conn   *websocket.Conn
	resync time.Duration

	wmu         sync.Mutex
	lastVersion string
	lastCommand string
	// expires is the token's expiry in Unix ns (0: none), as of the last
	// authentication; every message from the data plane checks it.
	expires atomic.Int64

	// Terminal sessions riding this stream (terminal.go).
	tmu     sync.Mutex
	terms   map[string]*termSession
	tclosed bool
}

func (a *agentStream) setExpiry(t time.Time) {
	if t.IsZero() {
		a.expires.Store(0)
		return
	}
	a.expires.Store(t.UnixNano())
}

// expired reports whether the stream's token has expired.
func (a *agentStream) expired() bool {
	exp := a.expires.Load()
	return exp != 0 && a.s.cfg.Now().UnixNano() >= exp
}

func (a *agentStream) send(ctx context.Context, m *wire.Msg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return a.conn.Write(wctx, websocket.MessageText, b)
}

func (a *agentStream) run(ctx context.Context, sub *streamSub) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() { readErr <- a.readLoop(ctx, sub) }()
	t := time.NewTicker(a.resync)
	defer t.Stop()
	for {
		if err := a.push(ctx); err != nil {
			// Close first (the reader then ends): canceling the reader's
			// context would drop the connection without a close frame.
			a.closeFor(err)
			<-readErr
			return err
		}
		select {
		case err := <-readErr:
			return err
		case <-sub.gone:
			// Logged: two data planes (or a data plane and a thief) using
			// one agent token keep replacing each other.
			a.s.log.Warn("agent stream replaced by a newer connection of the same agent", "tenant", a.c.p.TenantID,
				"agent", a.c.p.AgentID, "client", a.c.client.String(), "request_id", a.c.rid)
			a.closeFor(errReplaced)
			<-readErr
			return errReplaced
		case <-sub.wake:
		case <-t.C:
		}
	}
}

// push re-checks the token (revoking or disabling it, or deleting the
// agent, ends the stream), then sends the state if it changed and the
// unfinished command if not sent yet on this connection.
func (a *agentStream) push(ctx context.Context) error {
	p, err := a.s.authenticate(ctx, a.c.r)
	if err != nil {
		return err
	}
	a.setExpiry(p.expiresAt)
	p = a.c.p
	m, err := a.s.AgentState(ctx, p.TenantID, p.AgentID)
	if err != nil {
		return err
	}
	if m.Version != a.lastVersion {
		if err := a.send(ctx, m); err != nil {
			return err
		}
		a.lastVersion = m.Version
	}
	cmd, err := a.s.NextCommand(ctx, p.TenantID, p.AgentID)
	if err != nil {
		return err
	}
	if cmd != nil && cmd.ID != a.lastCommand {
		if err := a.send(ctx, &wire.Msg{Type: wire.TypeCommand, Command: &wire.Command{ID: cmd.ID, Command: cmd.Kind, WipeWorkspace: cmd.WipeWorkspace}}); err != nil {
			return err
		}
		a.lastCommand = cmd.ID
	}
	return nil
}

// AgentState is the state message for an agent: its effective policy (the
// same export as GET /api/v1/agent/policy) and the values of the secrets
// its credentials reference. A referenced secret that does not exist is
// left out; the data plane then fails requests needing it.
func (s *Server) AgentState(ctx context.Context, tenantID, agentID string) (*wire.Msg, error) {
	pol, err := s.EffectivePolicy(ctx, tenantID, agentID)
	if err != nil {
		return nil, err
	}
	y, err := PolicyYAML(pol)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0)
	for n := range referencedSecrets(pol) {
		names = append(names, n)
	}
	sort.Strings(names)
	secrets := map[string]string{}
	hash := sha256.New()
	hash.Write(y)
	for _, n := range names {
		x, err := s.st.GetSecret(ctx, tenantID, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		v, err := s.open(x)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", n, err)
		}
		secrets[n] = string(v)
		// The version hashes the value with the name; it goes only to the
		// agent entitled to the value.
		fmt.Fprintf(hash, "\x00%s\x00%d\x00%s", n, len(v), v)
	}
	return &wire.Msg{Type: wire.TypeState, PolicyYAML: string(y), Secrets: secrets, Version: hex.EncodeToString(hash.Sum(nil))[:32]}, nil
}

// logsOnce is the store's idempotent insert (store.SQL has it).
type logsOnce interface {
	InsertLogsOnce(ctx context.Context, entries []store.LogEntry) (int, error)
}

func (a *agentStream) readLoop(ctx context.Context, sub *streamSub) error {
	for {
		typ, b, err := a.conn.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			return errf(http.StatusBadRequest, "invalid_json", "text messages only")
		}
		// Between re-authentications (on changes and at every resync) an
		// expired token's messages are refused here.
		if a.expired() {
			return errUnauthorized
		}
		// Terminal traffic skips the token's request pacing: it touches
		// no database, is bounded per session (queue, frame size), and
		// pacing it would make a shell crawl and, behind a burst of
		// output still in flight for a session just closed, delay the
		// heartbeat acknowledgements until the data plane gives up.
		if isTerm(b) {
			var m wire.Msg
			if err := json.Unmarshal(b, &m); err != nil {
				return errf(http.StatusBadRequest, "invalid_json", "message is not valid JSON")
			}
			if ok, err := a.termMsg(ctx, &m); ok {
				if err != nil {
					return err
				}
				continue
			}
		}
		// Every message is a request of the token: it shares the REST
		// routes' rate limit, so one agent cannot keep the database busy.
		if err := a.s.pace(ctx, a.c.p.TokenID); err != nil {
			return err
		}
		reply, completed, err := a.handle(ctx, b)
		if err != nil {
			return err
		}
		if completed {
			// The next command may now be sent.
			select {
			case sub.wake <- struct{}{}:
			default:
			}
		}
		if reply == nil {
			continue
		}
		if err := a.send(ctx, reply); err != nil {
			return err
		}
	}
}

// handle processes one message from the data plane (untrusted input) and
// returns the reply, and whether a command was completed.
func (a *agentStream) handle(ctx context.Context, b []byte) (*wire.Msg, bool, error) {
	var m wire.Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, false, errf(http.StatusBadRequest, "invalid_json", "message is not valid JSON")
	}
	if ok, err := a.termMsg(ctx, &m); ok {
		// A session closed meanwhile: ignored, no reply.
		return nil, false, err
	}
	switch m.Type {
	case wire.TypeHeartbeat:
		completed, err := a.heartbeat(ctx, &m)
		if err != nil {
			return nil, false, err
		}
		return &wire.Msg{Type: wire.TypeHeartbeatAck}, completed, nil
	case wire.TypeLogs:
		ack, err := a.logs(ctx, &m)
		return ack, false, err
	}
	return nil, false, fieldErr("type", "unknown message type %q", m.Type)
}

func (a *agentStream) heartbeat(ctx context.Context, m *wire.Msg) (bool, error) {
	req := heartbeatReq{Status: m.Status, Metrics: m.Metrics}
	for _, r := range m.Results {
		req.Results = append(req.Results, commandResult{ID: r.ID, Status: r.Status, Result: r.Result})
	}
	if err := req.check(); err != nil {
		return false, err
	}
	c, p, s := a.c, a.c.p, a.s
	now := c.now()
	s.bufferHeartbeat(store.HeartbeatUpdate{TenantID: p.TenantID, AgentID: p.AgentID, At: now, Status: req.Status, Metrics: req.Metrics})
	completed := false
	for _, r := range req.Results {
		err := s.st.InTx(ctx, func(st store.Store) error {
			if err := st.CompleteCommand(ctx, p.TenantID, p.AgentID, r.ID, r.Status, r.Result, now); err != nil {
				return err
			}
			return c.audit(st, "command.result", "command", r.ID, map[string]any{"agent_id": p.AgentID, "status": r.Status})
		})
		if errors.Is(err, store.ErrNotFound) {
			continue // unknown, another agent's, or already finished
		}
		if err != nil {
			return false, err
		}
		completed = true
	}
	return completed, nil
}

func (a *agentStream) logs(ctx context.Context, m *wire.Msg) (*wire.Msg, error) {
	p := a.c.p
	if !spoolRE.MatchString(m.Spool) {
		return nil, fieldErr("spool", "16 to 64 lower-case hex digits")
	}
	if m.FirstSeq == 0 || len(m.Entries) == 0 || len(m.Entries) > wire.MaxLogBatch {
		return nil, fieldErr("entries", "1 to %d entries from first_seq >= 1", wire.MaxLogBatch)
	}
	ins, ok := a.s.st.(logsOnce)
	if !ok {
		return nil, errors.New("store cannot insert logs idempotently")
	}
	now := a.c.now()
	es := make([]store.LogEntry, 0, len(m.Entries))
	rejected := 0
	for i, raw := range m.Entries {
		one := logsReq{Entries: []json.RawMessage{raw}}
		e, aerr := one.check(1, p.TenantID, p.AgentID, now)
		if aerr != nil {
			// A bad entry must not block the spool behind it forever:
			// it is dropped and counted in the acknowledgement.
			rejected++
			continue
		}
		e[0].ID = logID(p.TenantID, p.AgentID, m.Spool, m.FirstSeq+uint64(i))
		es = append(es, e[0])
	}
	if _, err := ins.InsertLogsOnce(ctx, es); err != nil {
		return nil, err
	}
	ack := &wire.Msg{Type: wire.TypeLogsAck, Spool: m.Spool, LastSeq: m.FirstSeq + uint64(len(m.Entries)) - 1}
	if rejected > 0 {
		ack.Message = strconv.Itoa(rejected) + " entries rejected (not a JSON object or too large)"
	}
	return ack, nil
}

// logID is the idempotency key of one spooled event: the same event sent
// twice maps to the same row. The tenant and agent are part of it, so one
// agent cannot collide with another's rows.
func logID(tenantID, agentID, spool string, seq uint64) string {
	h := sha256.Sum256([]byte("cagent-log\x00" + tenantID + "\x00" + agentID + "\x00" + spool + "\x00" + strconv.FormatUint(seq, 10)))
	return hex.EncodeToString(h[:16])
}
