package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsCountPerEntry(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, `
domains:
  - domain: echo.test
    ports: [{PLAIN}]
    allow_private: true
`, func(c *Config) { c.Metrics = reg })
	for i := 0; i < 3; i++ {
		if resp, _ := e.get(fmt.Sprintf("http://echo.test:%d/x", e.echo.plainPort)); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if resp, _ := e.get(fmt.Sprintf("http://other.test:%d/", e.echo.plainPort)); resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.events.wait(t, 4)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cagent_proxy_requests_total" {
			continue
		}
		for _, m := range mf.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(ls, ",")] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"decision=allow,domain=echo.test,type=http": 3, "decision=deny,domain=-,type=http": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests_total %v, want %v", got, want)
	}
	var up float64
	for _, ev := range e.events.all() {
		up += float64(ev.BytesUp)
	}
	for _, mf := range mfs {
		if mf.GetName() == "cagent_proxy_bytes_up_total" {
			if len(mf.Metric) != 1 || mf.Metric[0].GetCounter().GetValue() != up || up == 0 {
				t.Fatalf("bytes_up series %v, want one for echo.test with %v", mf.Metric, up)
			}
			return
		}
	}
	t.Fatal("no bytes_up series")
}
