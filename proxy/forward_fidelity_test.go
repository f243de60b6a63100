package proxy

import (
	"fmt"
	"io"
	"testing"
)

// TestForwardAddsNoContentType: a response without a Content-Type reaches
// the agent without one. net/http's server would otherwise sniff the body
// and add its guess, and a proxy must not change what the origin said its
// content is.
func TestForwardAddsNoContentType(t *testing.T) {
	u := startRaw(t, serveKeepAlive("<html>hi</html>")) // no Content-Type
	e := newEnv(t, withPort(rawPolicy, u.port))
	resp, err := e.client().Get(fmt.Sprintf("http://raw.test:%d/", u.port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "<html>hi</html>" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Fatalf("the proxy added Content-Type %q", ct)
	}
}
