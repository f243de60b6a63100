package control

import (
	"context"
	"net/http"
	"strings"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/notify"
)

// Handler is everything the control plane serves: the REST API and the
// data planes' stream endpoint.
func Handler(srv *api.Server, cfg *Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(wire.Path, srv.StreamHandler(cfg.Hub, cfg.Stream))
	mux.Handle("/", srv.Handler())
	return mux
}

// attachRelay connects the hub to the other replicas when the store is
// PostgreSQL (LISTEN/NOTIFY). SQLite has one replica: nothing to relay.
func attachRelay(ctx context.Context, cfg *Config) error {
	if !strings.HasPrefix(cfg.DB, "postgres://") && !strings.HasPrefix(cfg.DB, "postgresql://") {
		return nil
	}
	r, err := notify.ListenPG(ctx, cfg.DB, cfg.Hub.NotifyLocal, cfg.Hub.NotifyAll, cfg.Logger)
	if err != nil {
		return err
	}
	cfg.Hub.SetRelay(r)
	return nil
}
