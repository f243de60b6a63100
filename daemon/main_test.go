package daemon

import (
	"testing"

	"github.com/cagent-dev/cagent/sandbox/firewall/firewalltest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(firewalltest.Exit)) }
