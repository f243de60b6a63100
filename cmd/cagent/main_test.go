package main

import (
	"testing"

	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
)

// The run, up and gc tests start real sandboxes; the host table they share
// goes when the last of them is done.
func TestMain(m *testing.M) { firewalltest.Exit(m.Run()) }
