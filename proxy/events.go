package proxy

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/prometheus/client_golang/prometheus"
)

// record emits the audit event of one decision and its canonical log line.
// key is the policy entry (bounded cardinality) used as the metrics label.
func (p *Proxy) record(ev *audit.Event, key string) {
	p.recordAt(ev, key, p.clock())
}

// recordAt is record for a caller that has just read p.clock() (now): it
// stamps the event with that reading, and with the real clock the log line
// too, instead of reading the clock twice more.
func (p *Proxy) recordAt(ev *audit.Event, key string, now time.Time) {
	if ev.TS.IsZero() {
		// Stamp the decision time here, so every sink (file, UI store,
		// control-plane spool) records the same time, not its own.
		ev.TS = now
	}
	if !p.realClock {
		now = time.Now() // the log line has the real time, as slog stamps it
	}
	if key == "" {
		key = "-"
	}
	p.metrics.count(ev, key)
	level := slog.LevelInfo
	if ev.Decision == audit.Deny {
		level = slog.LevelWarn
	}
	// One line per decision, always the same field names.
	logEgressAt(p.log, level, ev, now)
	p.cfg.Audit.Emit(ev)
}

type metrics struct {
	requests  *prometheus.CounterVec
	bytesUp   *prometheus.CounterVec
	bytesDown *prometheus.CounterVec
	tunnels   prometheus.Gauge

	// Per policy entry, the children looked up once instead of hashing the
	// label values on every request. Keys are label values that exist as
	// series anyway (policy entries and "-"), so this is as bounded as the
	// metric itself; a child is made on first use, as WithLabelValues would.
	mu      sync.RWMutex
	entries map[string]*entryMetrics
}

type entryMetrics struct {
	requests [2][3]atomic.Pointer[counter] // [http, connect][allow, deny, report]
	up, down atomic.Pointer[counter]
}

type counter struct{ prometheus.Counter }

var (
	metricTypes     = [2]string{audit.TypeHTTP, audit.TypeConnect}
	metricDecisions = [3]string{audit.Allow, audit.Deny, audit.Report}
)

func (m *metrics) entry(key string) *entryMetrics {
	m.mu.RLock()
	em := m.entries[key]
	m.mu.RUnlock()
	if em != nil {
		return em
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if em = m.entries[key]; em == nil {
		em = &entryMetrics{}
		m.entries[key] = em
	}
	return em
}

// get returns the child in slot, making it with mk on first use.
func get(slot *atomic.Pointer[counter], mk func() prometheus.Counter) prometheus.Counter {
	if c := slot.Load(); c != nil {
		return c.Counter
	}
	slot.CompareAndSwap(nil, &counter{mk()})
	return slot.Load().Counter
}

func (m *metrics) count(ev *audit.Event, key string) {
	em := m.entry(key)
	ti, di := -1, -1
	for i, t := range metricTypes {
		if t == ev.Type {
			ti = i
		}
	}
	for i, d := range metricDecisions {
		if d == ev.Decision {
			di = i
		}
	}
	if ti < 0 || di < 0 {
		m.requests.WithLabelValues(ev.Type, ev.Decision, key).Inc()
	} else {
		get(&em.requests[ti][di], func() prometheus.Counter { return m.requests.WithLabelValues(ev.Type, ev.Decision, key) }).Inc()
	}
	if ev.BytesUp > 0 {
		get(&em.up, func() prometheus.Counter { return m.bytesUp.WithLabelValues(key) }).Add(float64(ev.BytesUp))
	}
	if ev.BytesDown > 0 {
		get(&em.down, func() prometheus.Counter { return m.bytesDown.WithLabelValues(key) }).Add(float64(ev.BytesDown))
	}
}

func newMetrics(reg prometheus.Registerer, p *Proxy) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_proxy_requests_total", Help: "HTTP requests and tunnels by type, decision and policy entry.",
		}, []string{"type", "decision", "domain"}),
		bytesUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_proxy_bytes_up_total", Help: "Bytes sent upstream by policy entry.",
		}, []string{"domain"}),
		bytesDown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_proxy_bytes_down_total", Help: "Bytes received from upstream by policy entry.",
		}, []string{"domain"}),
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cagent_proxy_open_tunnels", Help: "Tunnels open now (not intercepted).",
		}),
		entries: map[string]*entryMetrics{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytesUp, m.bytesDown, m.tunnels, levels{p}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var (
	rateDesc   = prometheus.NewDesc("cagent_proxy_rate_limit_tokens", "Rate-limit tokens available now, by policy entry.", []string{"domain"}, nil)
	budgetDesc = prometheus.NewDesc("cagent_proxy_egress_budget_used_bytes", "Bytes sent upstream in the rolling hour, by policy entry.", []string{"domain"}, nil)
	limitDesc  = prometheus.NewDesc("cagent_proxy_egress_budget_limit_bytes", "Egress budget per rolling hour, by policy entry (0 = unlimited).", []string{"domain"}, nil)
)

// levels exports rate-limit and budget levels at scrape time.
type levels struct{ p *Proxy }

func (l levels) Describe(ch chan<- *prometheus.Desc) {
	ch <- rateDesc
	ch <- budgetDesc
	ch <- limitDesc
}

func (l levels) Collect(ch chan<- prometheus.Metric) {
	for k, v := range l.p.limiter.Levels() {
		ch <- prometheus.MustNewConstMetric(rateDesc, prometheus.GaugeValue, v, k)
	}
	for k, v := range l.p.budget.Snapshot() {
		ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, float64(v), k)
	}
	pol := l.p.state().pol
	for i := range pol.Domains {
		d := &pol.Domains[i]
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(pol.EgressLimitFor(d)), d.Domain)
	}
}
