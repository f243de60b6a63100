// Command dnsonly is `cagent dns` built without the rest of cagent: the same
// dnsfilter.Run, linked alone. The benchmark runs it beside the full binary
// to separate the filter's own memory from the file-backed pages of the
// multi-command cagent binary (see docs/benchmarks.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cagent-dev/cagent/dnsfilter"
)

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var rc dnsfilter.RunConfig
	var ups multi
	flag.StringVar(&rc.ConfigPath, "config", "", "policy file")
	flag.StringVar(&rc.Listen, "listen", dnsfilter.DefaultListen, "UDP and TCP address")
	flag.Var(&ups, "upstream", "upstream resolver (repeatable)")
	flag.StringVar(&rc.Gateway, "gateway", "", "gateway address")
	flag.StringVar(&rc.Admin, "admin", dnsfilter.DefaultAdmin, "admin address")
	flag.StringVar(&rc.StateDir, "state-dir", dnsfilter.DefaultStateDir, "state directory")
	flag.StringVar(&rc.AuditLog, "audit-log", "", "audit log file")
	memLimit := flag.String("memory-limit", fmt.Sprintf("%dMiB", dnsfilter.DefaultMemoryLimit>>20), "soft memory limit (as `cagent dns`)")
	flag.Parse()
	var err error
	if rc.MemoryLimit, err = dnsfilter.ParseMemoryLimit(*memLimit); err != nil {
		fmt.Fprintln(os.Stderr, "dnsonly:", err)
		os.Exit(2)
	}
	rc.Upstreams = ups
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dnsfilter.Run(ctx, rc); err != nil {
		fmt.Fprintln(os.Stderr, "dnsonly:", err)
		os.Exit(1)
	}
}
