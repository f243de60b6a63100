package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/control/store"
	"github.com/cagent-dev/cagent/control/store/storetest"
)

// BenchmarkHeartbeatBatch writes 1,000 heartbeats (one flush at 1,000
// req/s) into a table of 10,000 agents.
func BenchmarkHeartbeatBatch(b *testing.B) {
	for _, kind := range storetest.Kinds {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			s, err := store.Open(ctx, storetest.DSN(b, kind), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const agents = 10000
			for i := 0; i < agents; i++ {
				id := fmt.Sprintf("ag%05d", i)
				if err := s.CreateAgent(ctx, store.Agent{ID: id, TenantID: "t", Name: id, CreatedAt: t0}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				hs := make([]store.HeartbeatUpdate, 1000)
				for i := range hs {
					hs[i] = store.HeartbeatUpdate{TenantID: "t", AgentID: fmt.Sprintf("ag%05d", (n*1000+i)%agents), At: t0.Add(time.Duration(n+1) * time.Second), Status: "running"}
				}
				if err := s.HeartbeatBatch(ctx, hs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
