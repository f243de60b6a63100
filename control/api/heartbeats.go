package api

import (
	"context"
	"time"

	"github.com/cagent-dev/cagent/control/store"
)

// DefaultHeartbeatFlush is how often buffered heartbeats are written. At
// thousands of agents, one transaction per interval instead of one write
// per heartbeat keeps the single SQLite writer free; reads of agents
// overlay the buffer, so this process never shows stale heartbeats.
const DefaultHeartbeatFlush = time.Second

type hbKey struct{ tenant, agent string }

func (s *Server) bufferHeartbeat(h store.HeartbeatUpdate) {
	s.hbMu.Lock()
	s.hbBuf[hbKey{h.TenantID, h.AgentID}] = h
	s.hbMu.Unlock()
}

// overlay applies a buffered heartbeat to a as read from the store.
func (s *Server) overlay(a store.Agent) store.Agent {
	k := hbKey{a.TenantID, a.ID}
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	for _, m := range []map[hbKey]store.HeartbeatUpdate{s.hbFlushing, s.hbBuf} {
		if h, ok := m[k]; ok && h.At.After(a.LastHeartbeat) {
			a.LastHeartbeat, a.Status, a.Metrics = h.At, h.Status, h.Metrics
		}
	}
	return a
}

// flushHeartbeats writes the buffer. On failure the updates are put back
// unless newer ones arrived meanwhile.
func (s *Server) flushHeartbeats(ctx context.Context) {
	s.hbMu.Lock()
	if len(s.hbBuf) == 0 {
		s.hbMu.Unlock()
		return
	}
	buf := s.hbBuf
	s.hbBuf = make(map[hbKey]store.HeartbeatUpdate, len(buf))
	s.hbFlushing = buf
	s.hbMu.Unlock()
	hs := make([]store.HeartbeatUpdate, 0, len(buf))
	for _, h := range buf {
		hs = append(hs, h)
	}
	err := s.st.HeartbeatBatch(ctx, hs)
	s.hbMu.Lock()
	s.hbFlushing = nil
	if err != nil {
		for k, h := range buf {
			if _, newer := s.hbBuf[k]; !newer {
				s.hbBuf[k] = h
			}
		}
	}
	s.hbMu.Unlock()
	if err != nil {
		s.log.Error("writing heartbeats", "count", len(hs), "err", err)
	}
}

func (s *Server) heartbeatLoop(interval time.Duration) {
	defer close(s.hbDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.hbStop:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s.flushHeartbeats(ctx)
			cancel()
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s.flushHeartbeats(ctx)
			cancel()
		}
	}
}

// Close writes buffered heartbeats and stops the background writer.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.hbStop)
		<-s.hbDone
	})
}
