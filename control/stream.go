package control

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"

	"github.com/cagent-dev/cagent/control/agentca"
	"github.com/cagent-dev/cagent/control/api"
	"github.com/cagent-dev/cagent/control/notify"
	"github.com/cagent-dev/cagent/controlui"
)

// Handler is everything the control plane serves: the REST API, the data
// planes' stream endpoint and the web UI.
func Handler(srv *api.Server, cfg *Config) http.Handler {
	mux := http.NewServeMux()
	srv.Mount(mux, cfg.Hub, cfg.Stream, cfg.agentCA)
	mux.Handle("/", controlui.Handler())
	if cfg.agentCA == nil {
		return mux
	}
	return srv.RequireAgentCert(mux)
}

// setupAgentMTLS loads the agent CA and makes the TLS listener verify
// client certificates from it when given (the handler requires them on
// agent routes; people's browsers and admin tools present none).
func setupAgentMTLS(cfg *Config, tlsConf *tls.Config) error {
	if !cfg.AgentMTLS {
		return nil
	}
	if tlsConf == nil {
		return errors.New("agent mTLS needs the control plane to serve HTTPS (--tls-cert and --tls-key)")
	}
	ca, err := agentca.LoadOrCreate(cfg.DataDir, cfg.Now)
	if err != nil {
		return err
	}
	cfg.agentCA = ca
	tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
	tlsConf.ClientCAs = ca.Pool()
	return nil
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
