package proxy

import (
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"testing"
)

// copyEndToEnd must copy what removeHopByHop followed by a plain copy did.
func TestCopyEndToEndMatchesRemoveHopByHop(t *testing.T) {
	for _, k := range hopHeaders {
		if !isHopHeader(k) {
			t.Fatalf("isHopHeader(%q) = false", k)
		}
	}
	names := append(slices.Clone(hopHeaders), "Content-Type", "Content-Length", "X-A", "X-B", "Date", "x-lower", "Keep-alive", "TE")
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 20000 {
		src := http.Header{}
		for range rng.IntN(8) {
			k := names[rng.IntN(len(names))]
			src[k] = append(src[k], []string{"v", "X-A", "x-b, Date", " , te ,", "close"}[rng.IntN(5)])
		}
		if i%3 == 0 {
			src["Connection"] = []string{[]string{"X-A", "x-b, Date", "keep-alive", ", ,"}[rng.IntN(4)]}
		}
		old := src.Clone()
		removeHopByHop(old)
		want := http.Header{}
		for k, vv := range old {
			want[k] = vv
		}
		got := http.Header{"Pre": {"set"}}
		want["Pre"] = []string{"set"}
		copyEndToEnd(got, src.Clone())
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("header %v:\n got %v\nwant %v", src, got, want)
		}
	}
}
