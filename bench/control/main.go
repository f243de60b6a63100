// Command control-bench simulates agents heartbeating against a running
// control plane: it registers N agents in a fresh tenant, then has each send
// a heartbeat every interval (start times spread evenly) for a duration, and
// reports latency percentiles and the achieved request rate.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/control"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8090", "control plane URL")
	token := flag.String("token", os.Getenv("CAGENT_TOKEN"), "superadmin token")
	agents := flag.Int("agents", 10000, "simulated agents")
	interval := flag.Duration("interval", 10*time.Second, "heartbeat interval per agent")
	duration := flag.Duration("duration", 45*time.Second, "measurement time")
	warmup := flag.Duration("warmup", 5*time.Second, "heartbeats before measuring (connections, caches)")
	setupConc := flag.Int("setup-concurrency", 8, "concurrent registrations")
	label := flag.String("label", "", "label printed with the result")
	windows = flag.Duration("windows", 0, "also log p50/p99 per window of this length")
	serve := flag.Bool("serve", false, "instead, serve the control plane like `cagent control serve` (-db, -listen, -data-dir)")
	db := flag.String("db", "", "with -serve: database")
	listen := flag.String("listen", "127.0.0.1:8090", "with -serve: listen address")
	dataDir := flag.String("data-dir", "", "with -serve: data directory")
	cpuprofile := flag.String("cpuprofile", "", "with -serve: write a CPU profile here")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serve {
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		// Same configuration as the script gives cagent control serve; lets
		// the benchmark run while other packages of the binary are mid-change.
		err := control.Run(ctx, control.Config{DB: *db, Listen: *listen, DataDir: *dataDir, Rate: 100000, Burst: 100000,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			log.Print(err)
		}
		return
	}
	if err := run(ctx, *url, *token, *agents, *interval, *warmup, *duration, *setupConc, *label); err != nil {
		log.Fatal(err)
	}
}

type client struct {
	base string
	hc   *http.Client
}

func (c *client) post(ctx context.Context, path, token string, body any, out any) (int, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, fmt.Errorf("%s: %d %s", path, res.StatusCode, rb)
	}
	if out != nil {
		return res.StatusCode, json.Unmarshal(rb, out)
	}
	return res.StatusCode, nil
}

func run(ctx context.Context, base, super string, n int, interval, warmup, duration time.Duration, conc int, label string) error {
	if super == "" {
		return errors.New("need -token or CAGENT_TOKEN")
	}
	c := &client{base: base, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}}}
	var tenant struct{ ID string }
	if _, err := c.post(ctx, "/api/v1/tenants", super, map[string]any{"name": fmt.Sprintf("bench-%d", time.Now().UnixNano())}, &tenant); err != nil {
		return err
	}
	// Register the agents.
	t0 := time.Now()
	tokens := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				var a struct {
					Token struct{ Token string } `json:"token"`
				}
				if _, err := c.post(ctx, "/api/v1/tenants/"+tenant.ID+"/agents", super, map[string]any{"name": fmt.Sprintf("agent-%05d", i)}, &a); err != nil {
					errc <- err
					return
				}
				tokens[i] = a.Token.Token
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	log.Printf("registered %d agents in %v", n, time.Since(t0).Round(time.Millisecond))

	// Heartbeat: agent i first beats at i*interval/n, then every interval.
	rctx, cancel := context.WithTimeout(ctx, warmup+duration)
	defer cancel()
	var mu sync.Mutex
	lat := make([]time.Duration, 0, int(float64(n)*duration.Seconds()/interval.Seconds())+n)
	type sample struct {
		at time.Duration
		d  time.Duration
	}
	var samples []sample
	var fails, late atomic.Int64
	start := time.Now()
	measureFrom := start.Add(warmup)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			offset := time.Duration(int64(interval) * int64(i) / int64(n))
			t := time.NewTimer(offset)
			defer t.Stop()
			due := start.Add(offset)
			body := map[string]any{"status": "running", "metrics": map[string]any{"cpu": rand.Float64(), "mem": rand.IntN(1 << 30)}}
			for {
				select {
				case <-rctx.Done():
					return
				case <-t.C:
				}
				s := time.Now()
				if s.Sub(due) > 100*time.Millisecond && !s.Before(measureFrom) {
					late.Add(1)
				}
				_, err := c.post(rctx, "/api/v1/agent/heartbeat", tokens[i], body, nil)
				d := time.Since(s)
				if s.Before(measureFrom) {
					// warming up: not counted
				} else if err != nil {
					if rctx.Err() != nil {
						return
					}
					fails.Add(1)
				} else {
					mu.Lock()
					lat = append(lat, d)
					samples = append(samples, sample{s.Sub(measureFrom), d})
					mu.Unlock()
				}
				due = due.Add(interval)
				t.Reset(time.Until(due))
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if *windows > 0 {
		// Per-window p99, to tell steady degradation from bursts of noise.
		byWin := map[int][]time.Duration{}
		for _, x := range samples {
			w := int(x.at / *windows)
			byWin[w] = append(byWin[w], x.d)
		}
		for w := 0; w < len(byWin); w++ {
			ds := byWin[w]
			slices.Sort(ds)
			if len(ds) > 0 {
				log.Printf("window %2d: %5d req, p50 %7.2f ms, p99 %8.2f ms", w, len(ds), ms(ds[len(ds)/2]), ms(ds[min(len(ds)-1, len(ds)*99/100)]))
			}
		}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	res := map[string]any{
		"label": label, "agents": n, "interval_s": interval.Seconds(), "duration_s": elapsed.Seconds(),
		"requests": len(lat), "errors": fails.Load(), "late_sends": late.Load(), "target_rps": float64(n) / interval.Seconds(),
		"achieved_rps": float64(len(lat)) / elapsed.Seconds(),
		"p50_ms":       ms(pct(0.50)), "p90_ms": ms(pct(0.90)), "p99_ms": ms(pct(0.99)), "max_ms": ms(pct(1)),
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	fmt.Printf("%s: %d agents, target %.0f req/s, achieved %.0f req/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, errors %d, sent >100ms late %d\n",
		label, n, res["target_rps"], res["achieved_rps"], res["p50_ms"], res["p99_ms"], res["max_ms"], fails.Load(), late.Load())
	return nil
}

var windows *time.Duration

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
