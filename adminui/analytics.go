package adminui

import (
	"sort"
	"strings"
	"time"

	"github.com/cagent-dev/cagent/audit"
	"github.com/cagent-dev/cagent/policy"
)

// Analytics is the traffic page's data, computed from the event store.
type Analytics struct {
	Window        string         `json:"window"`
	BucketSeconds int            `json:"bucket_seconds"`
	Series        []Bucket       `json:"series"`
	Totals        Totals         `json:"totals"`
	TopDomains    []DomainStats  `json:"top_domains"`
	Blocked       []BlockedStats `json:"blocked"`
	Limits        []LimitUsage   `json:"limits"`
}

// Bucket is one point of the requests-over-time chart.
type Bucket struct {
	T        time.Time `json:"t"`
	Requests int       `json:"requests"`
	Denied   int       `json:"denied"`
	Errors   int       `json:"errors"`
	RPS      float64   `json:"rps"`
}

// Totals over the window.
type Totals struct {
	Requests   int     `json:"requests"`
	Denied     int     `json:"denied"`
	Errors     int     `json:"errors"`
	ErrorRate  float64 `json:"error_rate"`
	DNSQueries int     `json:"dns_queries"`
	DNSDenied  int     `json:"dns_denied"`
	BytesUp    int64   `json:"bytes_up"`
	BytesDown  int64   `json:"bytes_down"`
}

// DomainStats is one row of the top-domains table.
type DomainStats struct {
	Domain    string  `json:"domain"`
	Requests  int     `json:"requests"`
	Denied    int     `json:"denied"`
	Errors    int     `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	BytesUp   int64   `json:"bytes_up"`
	BytesDown int64   `json:"bytes_down"`
}

// BlockedStats groups denials by domain and reason.
type BlockedStats struct {
	Domain   string    `json:"domain"`
	Error    string    `json:"error"`
	Reason   string    `json:"reason"`
	Type     string    `json:"type"`
	Count    int       `json:"count"`
	Last     time.Time `json:"last"`
	InPolicy bool      `json:"in_policy"` // false: the "allow" action can add it
}

// LimitUsage is a policy domain's rate-limit and egress-budget consumption.
type LimitUsage struct {
	Domain            string  `json:"domain"`
	RequestsPerMinute float64 `json:"requests_per_minute"`
	LastMinute        int     `json:"last_minute"`
	RateLimited       int     `json:"rate_limited"` // in the window
	EgressLimit       int64   `json:"egress_limit"` // bytes per rolling hour, 0 = unlimited
	EgressLastHour    int64   `json:"egress_last_hour"`
	BudgetExceeded    int     `json:"budget_exceeded"` // in the window
}

func isRequest(e *audit.Event) bool { return e.Type == audit.TypeHTTP || e.Type == audit.TypeConnect }

func isError(e *audit.Event) bool {
	return strings.HasPrefix(e.Error, "upstream_") || e.Status >= 500
}

// ComputeAnalytics summarises events over [now-window, now] against policy p
// (which may be nil).
func ComputeAnalytics(events []audit.Event, p *policy.Policy, now time.Time, window time.Duration) Analytics {
	if window <= 0 {
		window = 15 * time.Minute
	}
	nb := 60
	bucket := window / time.Duration(nb)
	if bucket < time.Second {
		bucket = time.Second
		nb = int(window / bucket)
	}
	start := now.Add(-window).Truncate(bucket)
	a := Analytics{Window: window.String(), BucketSeconds: int(bucket / time.Second), Series: make([]Bucket, nb+1)}
	for i := range a.Series {
		a.Series[i].T = start.Add(time.Duration(i) * bucket)
	}
	domains := map[string]*DomainStats{}
	blocked := map[[3]string]*BlockedStats{}
	type lim struct {
		lastMin, rateLimited, budget int
		upHour                       int64
	}
	lims := map[string]*lim{}
	limFor := func(d string) *lim {
		l := lims[d]
		if l == nil {
			l = &lim{}
			lims[d] = l
		}
		return l
	}
	// The policy entry an event counts against, for per-domain limits.
	entryOf := func(host string) string {
		if p == nil || host == "" {
			return ""
		}
		if d := p.Lookup(host); d != nil {
			return d.Domain
		}
		return ""
	}
	hourAgo, minAgo, from := now.Add(-time.Hour), now.Add(-time.Minute), now.Add(-window)
	for i := range events {
		e := &events[i]
		if e.TS.After(now) {
			continue
		}
		if isRequest(e) {
			if entry := entryOf(e.Host); entry != "" {
				l := limFor(entry)
				if !e.TS.Before(hourAgo) {
					l.upHour += e.BytesUp
				}
				if !e.TS.Before(minAgo) {
					l.lastMin++
				}
				if !e.TS.Before(from) {
					switch e.Error {
					case "rate_limited":
						l.rateLimited++
					case "egress_budget_exceeded":
						l.budget++
					}
				}
			}
		}
		if e.TS.Before(from) {
			continue
		}
		denied := e.Decision == audit.Deny
		switch {
		case isRequest(e):
			idx := int(e.TS.Sub(start) / bucket)
			if idx >= 0 && idx < len(a.Series) {
				b := &a.Series[idx]
				b.Requests++
				if denied {
					b.Denied++
				}
				if isError(e) {
					b.Errors++
				}
			}
			a.Totals.Requests++
			a.Totals.BytesUp += e.BytesUp
			a.Totals.BytesDown += e.BytesDown
			if denied {
				a.Totals.Denied++
			}
			if isError(e) {
				a.Totals.Errors++
			}
			host := EventDomain(e)
			ds := domains[host]
			if ds == nil {
				ds = &DomainStats{Domain: host}
				domains[host] = ds
			}
			ds.Requests++
			ds.BytesUp += e.BytesUp
			ds.BytesDown += e.BytesDown
			if denied {
				ds.Denied++
			}
			if isError(e) {
				ds.Errors++
			}
		case e.Type == audit.TypeDNS:
			a.Totals.DNSQueries++
			if denied {
				a.Totals.DNSDenied++
			}
		default:
			continue
		}
		if denied || e.Decision == audit.Report {
			host := EventDomain(e)
			k := [3]string{host, e.Error, e.Type}
			bs := blocked[k]
			if bs == nil {
				bs = &BlockedStats{Domain: host, Error: e.Error, Type: e.Type}
				if p != nil && host != "" {
					bs.InPolicy = p.Lookup(host) != nil
				}
				blocked[k] = bs
			}
			bs.Count++
			if e.TS.After(bs.Last) {
				bs.Last = e.TS
				bs.Reason = e.Reason
			}
		}
	}
	bs := bucket.Seconds()
	for i := range a.Series {
		a.Series[i].RPS = float64(a.Series[i].Requests) / bs
	}
	if a.Totals.Requests > 0 {
		a.Totals.ErrorRate = float64(a.Totals.Errors) / float64(a.Totals.Requests)
	}
	for _, d := range domains {
		if d.Requests > 0 {
			d.ErrorRate = float64(d.Errors) / float64(d.Requests)
		}
		a.TopDomains = append(a.TopDomains, *d)
	}
	sort.Slice(a.TopDomains, func(i, j int) bool {
		x, y := a.TopDomains[i], a.TopDomains[j]
		if x.Requests != y.Requests {
			return x.Requests > y.Requests
		}
		return x.Domain < y.Domain
	})
	if len(a.TopDomains) > 20 {
		a.TopDomains = a.TopDomains[:20]
	}
	for _, b := range blocked {
		a.Blocked = append(a.Blocked, *b)
	}
	sort.Slice(a.Blocked, func(i, j int) bool {
		x, y := a.Blocked[i], a.Blocked[j]
		if x.Count != y.Count {
			return x.Count > y.Count
		}
		return x.Domain+x.Error < y.Domain+y.Error
	})
	if len(a.Blocked) > 50 {
		a.Blocked = a.Blocked[:50]
	}
	if p != nil {
		for i := range p.Domains {
			d := &p.Domains[i]
			u := LimitUsage{Domain: d.Domain, EgressLimit: int64(p.EgressLimitFor(d))}
			if rl := p.RateLimitFor(d); rl != nil {
				u.RequestsPerMinute = rl.RequestsPerMinute
			}
			if l := lims[d.Domain]; l != nil {
				u.LastMinute, u.RateLimited, u.BudgetExceeded, u.EgressLastHour = l.lastMin, l.rateLimited, l.budget, l.upHour
			}
			a.Limits = append(a.Limits, u)
		}
	}
	return a
}
