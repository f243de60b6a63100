package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/cagent-dev/cagent/control/store/storetest"
)

// BenchmarkHeartbeat measures one agent heartbeat over loopback HTTP
// (authentication, rate limit, buffering, pending-command check), with
// requests from 100 agents in parallel.
func BenchmarkHeartbeat(b *testing.B) {
	for _, kind := range storetest.Kinds {
		b.Run(kind, func(b *testing.B) {
			e := newEnv(b, storetest.DSN(b, kind))
			a := e.tenant("alpha")
			var toks []string
			for i := 0; i < 100; i++ {
				m := e.must(201, e.do("POST", a.path("/agents"), a.admin, map[string]any{"name": fmt.Sprintf("b%d", i)})).json(b)
				toks = append(toks, m["token"].(map[string]any)["token"].(string))
			}
			body := []byte(`{"status":"running","metrics":{"cpu":0.5}}`)
			url := e.hs.URL + "/api/v1/agent/heartbeat"
			next := make(chan string, len(toks))
			for _, t := range toks {
				next <- t
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				tok := <-next
				for pb.Next() {
					req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					res, err := e.hs.Client().Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					res.Body.Close()
					if res.StatusCode != 200 {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
		})
	}
}
