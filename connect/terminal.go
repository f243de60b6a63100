package connect

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cagent-dev/cagent/adminui"
	"github.com/cagent-dev/cagent/connect/wire"
)

// Execer starts a process in the sandbox. The Controller given to Run
// gets terminal sessions from the control plane's web terminal when it
// implements Execer (the daemon does: it is an adminui.Controller).
type Execer interface {
	Exec(ctx context.Context, req adminui.ExecRequest) (adminui.Process, error)
}

// termInQueue bounds the input messages waiting for one shell; a shell
// that does not read its input loses its session, the stream goes on.
const termInQueue = 64

// term is one terminal session on the data plane's side.
type term struct {
	id     string
	in     chan []byte
	cancel context.CancelFunc

	mu   sync.Mutex
	proc adminui.Process // nil until started
}

// termOpen starts a session asked for by the control plane; the shell
// runs until it exits, the control plane closes the session, or the
// connection is lost (the process is then killed).
func (s *session) termOpen(ctx context.Context, m *wire.Msg) error {
	if m.Session == "" || len(m.Session) > wire.MaxTermID {
		return nil
	}
	refuse := func(code, msg string) error {
		return s.send(ctx, &wire.Msg{Type: wire.TypeTermExit, Session: m.Session, Error: code, Message: msg})
	}
	if s.c.cfg.NoTerminal {
		return refuse(wire.TermDisabled, "this data plane does not allow terminals from the control plane")
	}
	ex, ok := s.ctl.(Execer)
	if !ok || s.ctl == nil {
		return refuse(wire.TermFailed, "this data plane runs no sandbox")
	}
	tctx, cancel := context.WithCancel(ctx)
	t := &term{id: m.Session, in: make(chan []byte, termInQueue), cancel: cancel}
	s.tmu.Lock()
	if s.terms == nil {
		s.terms = map[string]*term{}
	}
	if _, dup := s.terms[t.id]; dup || len(s.terms) >= wire.MaxTermSessions {
		s.tmu.Unlock()
		cancel()
		return refuse(wire.TermBusy, "too many terminal sessions")
	}
	s.terms[t.id] = t
	s.tmu.Unlock()
	cols, rows := m.Cols, m.Rows
	if cols == 0 || cols > 1000 {
		cols = 80
	}
	if rows == 0 || rows > 1000 {
		rows = 24
	}
	s.termWG.Add(1)
	go func() {
		defer s.termWG.Done()
		defer s.termDrop(t)
		defer cancel()
		s.runTerm(tctx, ctx, ex, t, cols, rows)
	}()
	return nil
}

func (s *session) runTerm(tctx, sctx context.Context, ex Execer, t *term, cols, rows uint16) {
	proc, err := ex.Exec(tctx, adminui.ExecRequest{TTY: true, Cols: cols, Rows: rows})
	if err != nil {
		s.c.log.Warn("terminal from the control plane: exec failed", "session", t.id, "err", err)
		_ = s.send(sctx, &wire.Msg{Type: wire.TypeTermExit, Session: t.id, Error: wire.TermFailed, Message: truncate(err.Error(), 512)})
		return
	}
	t.mu.Lock()
	t.proc = proc
	t.mu.Unlock()
	s.c.log.Info("terminal from the control plane opened", "session", t.id)
	// Killing the process is the one way to unblock its reader.
	stop := context.AfterFunc(tctx, func() { _ = proc.Close() })
	defer stop()
	if err := s.send(sctx, &wire.Msg{Type: wire.TypeTermOpened, Session: t.id}); err != nil {
		_ = proc.Close()
		_, _ = proc.Wait()
		return
	}
	// input: queued by the read loop, written here so a shell that does
	// not read cannot stall the stream.
	inDone := make(chan struct{})
	go func() {
		defer close(inDone)
		for {
			select {
			case <-tctx.Done():
				return
			case b := <-t.in:
				if _, err := proc.Write(b); err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, wire.MaxTermData)
	for {
		n, err := proc.Read(buf)
		if n > 0 {
			if serr := s.send(sctx, &wire.Msg{Type: wire.TypeTermData, Session: t.id, Data: buf[:n]}); serr != nil {
				_ = proc.Close()
				break
			}
		}
		if err != nil {
			break
		}
	}
	code, werr := proc.Wait()
	t.cancel()
	<-inDone
	_ = proc.Close()
	if sctx.Err() != nil {
		s.c.log.Info("terminal from the control plane ended: connection lost", "session", t.id)
		return
	}
	msg := &wire.Msg{Type: wire.TypeTermExit, Session: t.id, Code: &code}
	if werr != nil && !errors.Is(werr, context.Canceled) {
		msg.Message = truncate(werr.Error(), 512)
	}
	s.c.log.Info("terminal from the control plane closed", "session", t.id, "code", code)
	wctx, cancel := context.WithTimeout(sctx, 10*time.Second)
	defer cancel()
	_ = s.send(wctx, msg)
}

func (s *session) termDrop(t *term) {
	s.tmu.Lock()
	if s.terms[t.id] == t {
		delete(s.terms, t.id)
	}
	s.tmu.Unlock()
}

func (s *session) term(id string) *term {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.terms[id]
}

// termInput queues input; a full queue ends the session.
func (s *session) termInput(m *wire.Msg) {
	t := s.term(m.Session)
	if t == nil || len(m.Data) == 0 {
		return
	}
	select {
	case t.in <- m.Data:
	default:
		s.c.log.Warn("terminal input queue full; closing the session", "session", t.id)
		t.cancel()
	}
}

func (s *session) termResize(m *wire.Msg) {
	t := s.term(m.Session)
	if t == nil || m.Cols == 0 || m.Rows == 0 || m.Cols > 1000 || m.Rows > 1000 {
		return
	}
	t.mu.Lock()
	p := t.proc
	t.mu.Unlock()
	if p != nil {
		_ = p.Resize(m.Cols, m.Rows)
	}
}

func (s *session) termClose(m *wire.Msg) {
	if t := s.term(m.Session); t != nil {
		t.cancel()
	}
}
