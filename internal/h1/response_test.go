package h1

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readHead reads a response's status line and header block as sent, with
// nothing removed (http.ReadResponse drops Transfer-Encoding).
func (c *client) readHead() (string, textproto.MIMEHeader) {
	c.t.Helper()
	tp := textproto.NewReader(c.br)
	line, err := tp.ReadLine()
	if err != nil {
		c.t.Fatalf("status line: %v", err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		c.t.Fatalf("header of %q: %v", line, err)
	}
	return line, h
}

// readN reads exactly n body bytes.
func (c *client) readN(n int) string {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("body: %v", err)
	}
	return string(b)
}

func TestFramingContentLength(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, "hello ")
		io.WriteString(w, "world")
	}))
	c := dial(t, ts.addr)
	c.send(get("/") + get("/"))
	for range 2 {
		status, h := c.readHead()
		if status != "HTTP/1.1 200 OK" || h.Get("Content-Length") != "11" || h.Get("Transfer-Encoding") != "" || h.Get("Connection") != "" {
			t.Fatalf("%q %v", status, h)
		}
		if body := c.readN(11); body != "hello world" {
			t.Fatalf("body %q", body)
		}
	}
	c.expectOpen(50 * time.Millisecond)
}

func TestFramingChunked(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789", 2000)
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(big); i += 700 {
			io.WriteString(w, big[i:min(i+700, len(big))])
			if i%7 == 0 {
				w.(http.Flusher).Flush()
			}
		}
	}))
	c := dial(t, ts.addr)
	c.send(get("/"))
	_, h := c.readHead()
	if h.Get("Transfer-Encoding") != "chunked" || h.Get("Content-Length") != "" {
		t.Fatalf("want chunked without Content-Length: %v", h)
	}

	resp, b, err := clientGet(t, ts.addr)
	if err != nil || string(b) != big {
		t.Fatalf("body via net/http: %d bytes, %v", len(b), err)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
		t.Errorf("ContentLength %d TransferEncoding %v", resp.ContentLength, resp.TransferEncoding)
	}
}

func TestFramingHTTP10(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cl" {
			w.Header().Set("Content-Length", "5")
		}
		io.WriteString(w, "hello")
	}))
	t.Run("no keep-alive", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send("GET / HTTP/1.0\r\n\r\n")
		status, h := c.readHead()
		if status != "HTTP/1.1 200 OK" || h.Get("Connection") != "close" || h.Get("Transfer-Encoding") != "" || h.Get("Content-Length") != "" {
			t.Fatalf("%q %v", status, h)
		}
		b, err := io.ReadAll(c.br)
		if err != nil || string(b) != "hello" {
			t.Fatalf("body to EOF: %q %v", b, err)
		}
	})
	t.Run("keep-alive with length", func(t *testing.T) {
		c := dial(t, ts.addr)
		for range 3 {
			c.send("GET /cl HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			_, h := c.readHead()
			if h.Get("Connection") != "keep-alive" || h.Get("Content-Length") != "5" {
				t.Fatalf("%v", h)
			}
			if body := c.readN(5); body != "hello" {
				t.Fatalf("%q", body)
			}
		}
		c.expectOpen(50 * time.Millisecond)
	})
	t.Run("keep-alive without length", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		_, h := c.readHead()
		if h.Get("Connection") != "close" || h.Get("Transfer-Encoding") != "" {
			t.Fatalf("an HTTP/1.0 body without length must end with the connection: %v", h)
		}
		b, err := io.ReadAll(c.br)
		if err != nil || string(b) != "hello" {
			t.Fatalf("body to EOF: %q %v", b, err)
		}
	})
}

func TestFramingHead(t *testing.T) {
	t.Parallel()
	writeErr := make(chan error, 1)
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		_, err := io.WriteString(w, "hello")
		if r.Method == "HEAD" {
			writeErr <- err
		}
	}))
	c := dial(t, ts.addr)
	c.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + get("/"))
	status, h := c.readHead()
	if status != "HTTP/1.1 200 OK" || h.Get("Content-Length") != "5" {
		t.Fatalf("HEAD: %q %v", status, h)
	}
	if err := <-writeErr; err != nil {
		t.Errorf("Write on HEAD: %v", err)
	}
	// The next bytes are the GET's answer: no body went out for HEAD.
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("GET after HEAD: %d %q", resp.StatusCode, body)
	}
}

func TestFramingNoBodyStatus(t *testing.T) {
	t.Parallel()
	writeErrs := make(chan error, 2)
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Path[1:])
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Transfer-Encoding", "chunked")
		w.WriteHeader(code)
		_, err := io.WriteString(w, "hello")
		writeErrs <- err
	}))
	for _, code := range []int{204, 304} {
		c := dial(t, ts.addr)
		c.send(get(fmt.Sprintf("/%d", code)) + get("/200"))
		status, h := c.readHead()
		if !strings.HasPrefix(status, "HTTP/1.1 "+strconv.Itoa(code)+" ") {
			t.Fatalf("status %q", status)
		}
		if h.Get("Content-Length") != "" || h.Get("Transfer-Encoding") != "" {
			t.Errorf("%d with framing fields: %v", code, h)
		}
		if code == 304 && h.Get("Content-Type") != "" {
			t.Errorf("304 with Content-Type: %v", h)
		}
		if err := <-writeErrs; !errors.Is(err, http.ErrBodyNotAllowed) {
			t.Errorf("%d: Write: %v, want http.ErrBodyNotAllowed", code, err)
		}
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("after %d: %d %q (a body went out?)", code, resp.StatusCode, body)
		}
		<-writeErrs
	}
}

func TestFramingEmptyHandler(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {}))
	c := dial(t, ts.addr)
	c.send(get("/") + get("/"))
	for range 2 {
		status, h := c.readHead()
		if status != "HTTP/1.1 200 OK" || h.Get("Content-Length") != "0" || h.Get("Transfer-Encoding") != "" {
			t.Fatalf("%q %v", status, h)
		}
	}
	c.expectOpen(50 * time.Millisecond)
}

func TestWriteBeyondContentLength(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		_, err := io.WriteString(w, "ab")
		if err == nil {
			_, err = io.WriteString(w, "cd")
			if err == nil {
				err = errors.New("no error")
			} else if err == http.ErrContentLength {
				_, err = io.WriteString(w, "c")
			}
		}
		errs <- err
	}))
	c := dial(t, ts.addr)
	c.send(get("/") + get("/"))
	for range 2 {
		resp, body := c.read("GET")
		if err := <-errs; err != nil {
			t.Fatalf("writes: %v (want http.ErrContentLength for the write past the length, then success)", err)
		}
		if body != "abc" || resp.Close {
			t.Fatalf("body %q close=%v", body, resp.Close)
		}
	}
}

func TestShortBodyClosesConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "abc")
	}))
	c := dial(t, ts.addr)
	c.send(get("/") + get("/"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != 10 {
		t.Fatalf("ContentLength %d", resp.ContentLength)
	}
	b, err := io.ReadAll(resp.Body)
	if err != io.ErrUnexpectedEOF || string(b) != "abc" {
		t.Fatalf("body %q %v, want \"abc\" and io.ErrUnexpectedEOF", b, err)
	}
	c.expectClosed()
}

func TestTrailers(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T, X-Other")
		w.Header().Set("X-Other", "set before the head")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-T", "after")
		w.Header().Set(http.TrailerPrefix+"X-P", "prefixed")
		w.Header().Set("X-Not-Announced", "dropped")
	}))
	resp, b, err := clientGet(t, ts.addr)
	if err != nil || string(b) != "body" {
		t.Fatalf("body %q %v", b, err)
	}
	for k, want := range map[string]string{"X-T": "after", "X-P": "prefixed", "X-Other": "set before the head", "X-Not-Announced": ""} {
		if got := resp.Trailer.Get(k); got != want {
			t.Errorf("trailer %s = %q, want %q (trailers %v)", k, got, want, resp.Trailer)
		}
	}
	if resp.Header.Get("X-Other") != "" {
		t.Errorf("announced trailer X-Other also sent in the head")
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, http.TrailerPrefix) || strings.Contains(k, ":") {
			t.Errorf("head has %q", k)
		}
	}
}

func TestHeaderHygiene(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/inject":
			h.Set("X-A", "a\r\nX-Injected: 1")
			h.Set("X-B", "b\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			h.Set("X-C", "c\nX-Injected2: 1")
			h["Bad Name"] = []string{"x"}
			h["Bad:Name"] = []string{"x"}
			h["X-Nl\r\nX-Injected3"] = []string{"x"}
			h["Empty-Name"] = []string{"ok"}
			h[""] = []string{"x"}
			io.WriteString(w, "inject")
		case "/nil-type":
			h["Content-Type"] = nil
			io.WriteString(w, "<html><body>hi</body></html>")
		case "/no-type":
			io.WriteString(w, "<html><body>hi</body></html>")
		case "/date":
			h.Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		case "/nil-date":
			h["Date"] = nil
		}
	}))
	c := dial(t, ts.addr)
	c.send(get("/inject") + get("/after"))
	_, h := c.readHead()
	for _, k := range []string{"X-Injected", "X-Injected2", "X-Injected3", "Bad Name", "Bad:Name"} {
		if _, ok := h[k]; ok {
			t.Errorf("header %q reached the client: %v", k, h)
		}
	}
	if got := h.Get("X-A"); got != "a  X-Injected: 1" {
		t.Errorf("X-A = %q, want the line break as spaces", got)
	}
	if got := h.Get("X-C"); got != "c X-Injected2: 1" {
		t.Errorf("X-C = %q", got)
	}
	if !strings.HasPrefix(h.Get("X-B"), "b    HTTP/1.1 200 OK") {
		t.Errorf("X-B = %q", h.Get("X-B"))
	}
	if h.Get("Empty-Name") != "ok" {
		t.Errorf("valid field lost: %v", h)
	}
	// The rest of the stream is exactly the body and the next answer.
	if h.Get("Transfer-Encoding") != "chunked" {
		t.Fatalf("framing: %v", h)
	}
	if chunk := c.readN(len("6\r\ninject\r\n0\r\n\r\n")); chunk != "6\r\ninject\r\n0\r\n\r\n" {
		t.Fatalf("body %q", chunk)
	}
	if _, body := c.read("GET"); body != "" {
		t.Fatalf("after: %q", body)
	}

	for _, path := range []string{"/nil-type", "/no-type"} {
		c.send(get(path))
		resp, body := c.read("GET")
		if _, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q sent (no sniffing wanted)", path, resp.Header.Get("Content-Type"))
		}
		if !strings.HasPrefix(body, "<html>") {
			t.Errorf("%s: %q", path, body)
		}
	}

	before := time.Now().Add(-2 * time.Second)
	c.send(get("/"))
	resp, _ := c.read("GET")
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil || d.Before(before) || d.After(time.Now().Add(2*time.Second)) || len(resp.Header["Date"]) != 1 {
		t.Errorf("Date %q (%v), want now", resp.Header["Date"], err)
	}
	c.send(get("/date"))
	resp, _ = c.read("GET")
	if got := resp.Header["Date"]; len(got) != 1 || got[0] != "Mon, 02 Jan 2006 15:04:05 GMT" {
		t.Errorf("handler's Date replaced: %q", got)
	}
	c.send(get("/nil-date"))
	resp, _ = c.read("GET")
	if got, ok := resp.Header["Date"]; ok {
		t.Errorf("a nil Date sent %q, want none (as net/http)", got)
	}
}

func TestHeaderConnectionFromHandler(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/keep":
			w.Header().Set("Connection", "keep-alive, X-Hop")
		}
		io.WriteString(w, "x")
	}))
	c := dial(t, ts.addr)
	c.send(get("/keep"))
	_, h := c.readHead()
	if got := h.Values("Connection"); len(got) != 0 {
		t.Errorf("handler's Connection field passed through on HTTP/1.1: %q", got)
	}
	c.readN(len("1\r\nx\r\n0\r\n\r\n"))
	c.send(get("/close"))
	_, h = c.readHead()
	if got := h.Values("Connection"); len(got) != 1 || got[0] != "close" {
		t.Errorf("Connection %q, want one close", got)
	}
	c.readN(len("1\r\nx\r\n0\r\n\r\n"))
	c.expectClosed()
}

func TestInformational103(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Length", "4")
		w.WriteHeader(200)
		io.WriteString(w, "done")
	}))
	c := dial(t, ts.addr)
	c.send(get("/"))
	resp, _ := c.read("GET")
	if resp.StatusCode != 103 || resp.Header.Get("Link") != "</style.css>; rel=preload; as=style" {
		t.Fatalf("first answer %d %v, want 103 with Link", resp.StatusCode, resp.Header)
	}
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || body != "done" || resp.Header.Get("Link") != "" {
		t.Fatalf("final answer %d %q %v", resp.StatusCode, body, resp.Header)
	}
	c.send(get("/"))
	if resp, _ := c.read("GET"); resp.StatusCode != 103 {
		t.Fatalf("keep-alive after 1xx: %d", resp.StatusCode)
	}
}

func TestWriteHeaderTwiceKeepsFirst(t *testing.T) {
	t.Parallel()
	ts := startServer(t, hf(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		w.WriteHeader(500)
		io.WriteString(w, "x")
	}))
	c := dial(t, ts.addr)
	c.send(get("/"))
	if resp, body := c.read("GET"); resp.StatusCode != 201 || body != "x" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if !strings.Contains(ts.log.String(), "superfluous") {
		t.Errorf("superfluous WriteHeader not logged: %q", ts.log)
	}
}

// clientGet fetches / from addr with net/http's client, and reads the body
// (the error is the body's; a failed request ends the test).
func clientGet(t *testing.T, addr string) (*http.Response, []byte, error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, err
}
