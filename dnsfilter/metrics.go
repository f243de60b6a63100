package dnsfilter

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	queries        *prometheus.CounterVec // decision, error, qtype
	cache          *prometheus.CounterVec // result: hit, miss
	cacheHit       prometheus.Counter
	queryTimeUDP   prometheus.Observer
	queryTimeTCP   prometheus.Observer
	upstreamErrors prometheus.Counter       //
	upstreamTime   prometheus.Histogram     //
	queryTime      *prometheus.HistogramVec // proto
	budgetExceeded prometheus.Counter       // exhaustion episodes
	dropped        prometheus.Counter       // datagrams dropped: overload or unparseable
	reloads        *prometheus.CounterVec   // result: ok, error

	// counters caches the queries counter per label set: the label values
	// are few, and resolving them costs more than the increment.
	counters sync.Map // queryLabels -> prometheus.Counter
}

type queryLabels struct{ decision, code, qtype string }

func (m *metrics) countQuery(decision, code, qtype string) {
	k := queryLabels{decision, code, qtype}
	c, ok := m.counters.Load(k)
	if !ok {
		c, _ = m.counters.LoadOrStore(k, m.queries.WithLabelValues(decision, code, qtype))
	}
	c.(prometheus.Counter).Inc()
}

func newMetrics(reg prometheus.Registerer, cacheLen func() float64) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_dns_queries_total",
			Help: "DNS queries answered, by decision (allow, deny, report), decision code and query type.",
		}, []string{"decision", "error", "qtype"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_dns_cache_lookups_total",
			Help: "Answer cache lookups for forwarded names, by result (hit, miss).",
		}, []string{"result"}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cagent_dns_upstream_errors_total",
			Help: "Forwarded queries that no upstream answered.",
		}),
		upstreamTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cagent_dns_upstream_duration_seconds",
			Help:    "Time to get an answer from the upstreams, failover included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		queryTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cagent_dns_query_duration_seconds",
			Help:    "Time from reading a query to having its reply, by transport.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"proto"}),
		budgetExceeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cagent_dns_budget_exhausted_total",
			Help: "Times a client ran out of its distinct-names budget for a registered domain.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cagent_dns_dropped_total",
			Help: "Datagrams dropped without a reply (overload, or not a parseable query).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cagent_dns_policy_reloads_total",
			Help: "Policy changes applied to the filter, by result.",
		}, []string{"result"}),
	}
	m.cacheHit = m.cache.WithLabelValues("hit")
	m.queryTimeUDP = m.queryTime.WithLabelValues("udp")
	m.queryTimeTCP = m.queryTime.WithLabelValues("tcp")
	cols := []prometheus.Collector{m.queries, m.cache, m.upstreamErrors, m.upstreamTime, m.queryTime, m.budgetExceeded, m.dropped, m.reloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cagent_dns_cache_entries",
			Help: "Answers held in the cache.",
		}, cacheLen),
	}
	for _, c := range cols {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
