package connect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cagent-dev/cagent/connect/wire"
)

// maxDone is how many finished command ids are remembered, so a command
// the control plane sends again (after a reconnect) is not run twice.
const maxDone = 64

// command runs c in the background (one at a time) and queues its result
// for the next heartbeat, which it triggers.
func (s *session) command(cmd wire.Command) {
	c := s.c
	c.cmdMu.Lock()
	if r, ok := c.done[cmd.ID]; ok {
		// Already run: report the result again, do not run it again.
		c.addResultLocked(r)
		c.cmdMu.Unlock()
		c.kick()
		return
	}
	if c.running != "" {
		c.cmdMu.Unlock()
		return // the control plane sends one command at a time; it comes again
	}
	c.running = cmd.ID
	c.cmdMu.Unlock()
	c.cmdWG.Add(1)
	go func() {
		defer c.cmdWG.Done()
		// A command is not cut short by a dropped connection, only by
		// the data plane shutting down.
		cctx, cancel := context.WithTimeout(s.runCtx, 5*time.Minute)
		defer cancel()
		err := run(cctx, s.ctl, cmd)
		r := wire.Result{ID: cmd.ID, Status: wire.Succeeded, Result: cmd.Command + ": done"}
		if err != nil {
			r.Status, r.Result = wire.Failed, truncate(cmd.Command+": "+err.Error(), 4000)
		}
		c.log.Info("command from the control plane", "id", cmd.ID, "command", cmd.Command, "status", r.Status, "result", r.Result)
		c.cmdMu.Lock()
		c.running = ""
		c.done[cmd.ID] = r
		c.order = append(c.order, cmd.ID)
		if len(c.order) > maxDone {
			delete(c.done, c.order[0])
			c.order = c.order[1:]
		}
		c.addResultLocked(r)
		c.cmdMu.Unlock()
		c.kick()
	}()
}

func run(ctx context.Context, ctl Controller, cmd wire.Command) error {
	if ctl == nil {
		return errors.New("this data plane runs no sandbox controller")
	}
	switch cmd.Command {
	case "start":
		return ctl.Start(ctx)
	case "stop":
		return ctl.Stop(ctx)
	case "restart":
		return ctl.Restart(ctx)
	case "wipe":
		return ctl.Wipe(ctx, cmd.WipeWorkspace)
	}
	return fmt.Errorf("unknown command %q", cmd.Command)
}

func (c *Client) kick() {
	select {
	case c.kickHB <- struct{}{}:
	default:
	}
}

func (c *Client) addResultLocked(r wire.Result) {
	for _, p := range c.pending {
		if p.ID == r.ID {
			return
		}
	}
	c.pending = append(c.pending, r)
}

func (c *Client) pendingResults() []wire.Result {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	n := min(len(c.pending), 10)
	return append([]wire.Result(nil), c.pending[:n]...)
}

// clearResults drops results the control plane acknowledged.
func (c *Client) clearResults(ids []string) {
	if len(ids) == 0 {
		return
	}
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	keep := c.pending[:0]
	for _, p := range c.pending {
		acked := false
		for _, id := range ids {
			if p.ID == id {
				acked = true
			}
		}
		if !acked {
			keep = append(keep, p)
		}
	}
	c.pending = keep
}
