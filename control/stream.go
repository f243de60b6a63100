package control

import (
	"net/http"

	"github.com/cagent-dev/cagent/connect/wire"
	"github.com/cagent-dev/cagent/control/api"
)

// Handler is everything the control plane serves: the REST API and the
// data planes' stream endpoint.
func Handler(srv *api.Server, cfg *Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(wire.Path, srv.StreamHandler(cfg.Hub, cfg.Stream))
	mux.Handle("/", srv.Handler())
	return mux
}
