package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request; the connection keeps
// one and resets it for each request.
//
// The head is written to the connection's buffer at WriteHeader. Framing: the
// handler's Content-Length when it set one (Write refuses more, and a
// shorter body ends the connection), else chunked for HTTP/1.1 clients and
// the end of the connection for HTTP/1.0. Trailers go after a chunked body:
// those the Trailer header announced, and http.TrailerPrefix keys. A Date
// header is added when there is none. Unlike net/http's server, the body is
// never sniffed for a Content-Type: a proxy passes on what the origin sent.
type response struct {
	c   *conn
	req *http.Request
	h   http.Header

	wmu         sync.Mutex // orders 100 Continue against the head (a transport may read the body on its own goroutine)
	wroteHeader bool
	status      int
	noBody      bool // HEAD, or a status without a body
	head        bool // HEAD: writes are dropped
	chunked     bool
	cl          int64 // declared Content-Length, -1 for none
	written     int64
	closeAfter  bool
	trailers    []string // announced trailer keys (canonical)
	expect100   bool     // the client waits for 100 Continue before sending the body
	sent100     bool
	hijacked    bool
	werr        error // the first write error: the connection is unusable
	body        *body
}

func (w *response) reset(req *http.Request) {
	clear(w.h)
	w.req, w.cl, w.trailers = req, -1, w.trailers[:0]
	w.wroteHeader, w.status, w.noBody, w.head, w.chunked = false, 0, false, false, false
	w.written, w.closeAfter, w.expect100, w.sent100, w.hijacked = 0, req.Close, false, false, false
	w.werr, w.body = nil, nil
	if req.Body != nil && req.Body != http.NoBody {
		w.body = &body{rc: req.Body, w: w}
		req.Body = w.body
	}
}

func (w *response) Header() http.Header { return w.h }

// continue100 sends 100 Continue, unless the final answer went out first.
func (w *response) continue100() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.sent100 || w.wroteHeader || w.hijacked {
		return
	}
	w.sent100 = true
	w.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	w.flushLocked()
}

func (w *response) WriteHeader(code int) {
	if w.hijacked {
		w.c.s.logf("h1: WriteHeader on a hijacked connection")
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.wroteHeader {
		w.c.s.logf("h1: superfluous WriteHeader(%d)", code)
		return
	}
	h := w.h
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: out now, with the header as it is; the final
		// answer follows.
		if code == http.StatusContinue {
			if w.sent100 {
				return
			}
			w.sent100 = true
		}
		b := appendStatusLine(w.c.bw.AvailableBuffer(), code)
		b = appendFields(b, h, nil, false)
		w.c.bw.Write(append(b, "\r\n"...))
		w.flushLocked()
		return
	}
	w.wroteHeader, w.status = true, code
	if vv := h["Content-Length"]; len(vv) > 0 {
		if v, err := strconv.ParseInt(vv[0], 10, 64); err == nil && v >= 0 && len(vv) == 1 {
			w.cl = v
		} else {
			w.c.s.logf("h1: invalid Content-Length %q dropped", vv)
			delete(h, "Content-Length")
		}
	}
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	delete(h, "Transfer-Encoding") // the framing is the server's
	switch {
	case code < 200 || code == http.StatusNoContent:
		delete(h, "Content-Length")
		w.noBody, w.cl = true, -1
	case code == http.StatusNotModified:
		delete(h, "Content-Length")
		delete(h, "Content-Type")
		w.noBody, w.cl = true, -1
	case w.req.Method == http.MethodHead:
		w.noBody, w.head = true, true
	case w.cl < 0 && w.req.ProtoAtLeast(1, 1):
		w.chunked = true
	case w.cl < 0:
		w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
	}
	if w.body != nil && !w.c.bodyIsDone() {
		// The rest of the body is still coming (or the client waits for a
		// 100 Continue it will not get now): this connection carries no
		// further request.
		w.closeAfter = true
	}
	if tr := h["Trailer"]; len(tr) > 0 && w.chunked {
		for _, v := range tr {
			for k := range strings.SplitSeq(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
	}
	b := appendStatusLine(w.c.bw.AvailableBuffer(), code)
	b = appendFields(b, h, w.trailers, code == http.StatusSwitchingProtocols)
	if _, ok := h["Date"]; !ok {
		b = append(b, "Date: "...)
		b = appendDate(b)
		b = append(b, "\r\n"...)
	}
	if code != http.StatusSwitchingProtocols {
		switch {
		case w.closeAfter:
			b = append(b, "Connection: close\r\n"...)
		case !w.req.ProtoAtLeast(1, 1):
			b = append(b, "Connection: keep-alive\r\n"...)
		}
	}
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if _, err := w.c.bw.Write(append(b, "\r\n"...)); err != nil {
		w.fail(err)
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if w.noBody {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	bw := w.c.bw
	if w.chunked {
		var size [20]byte
		bw.Write(append(strconv.AppendInt(size[:0], int64(len(p)), 16), '\r', '\n'))
	}
	n, err := bw.Write(p)
	if err == nil && w.chunked {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.fail(err)
	}
	return n, err
}

func (w *response) fail(err error) {
	if w.werr == nil {
		w.werr = err
	}
	w.closeAfter = true
}

// Flush sends what is buffered (the head, at least).
func (w *response) Flush() { w.FlushError() }

func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.flushLocked()
}

func (w *response) flushLocked() error {
	if w.werr != nil {
		return w.werr
	}
	if err := w.c.bw.Flush(); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

// Hijack hands the connection to the handler, with what the server has
// read of it but not parsed; the server forgets it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	c.endRequest()
	w.wmu.Lock()
	w.hijacked = true
	if w.wroteHeader {
		w.flushLocked()
	}
	w.wmu.Unlock()
	if c.r.hasByte {
		// The byte the watch read goes into the reader handed over.
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return nil, nil, err
		}
	}
	// The header's read deadline (and any other) no longer applies.
	c.rwc.SetDeadline(time.Time{})
	c.s.untrack(c)
	return c.rwc, bufio.NewReadWriter(c.br, c.bw), nil
}

// finish completes the response after the handler returned, and reports
// whether the connection can carry another request.
func (w *response) finish() bool {
	c := w.c
	if !w.wroteHeader {
		if _, ok := w.h["Content-Length"]; !ok {
			w.h["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked && w.werr == nil {
		b := append(w.c.bw.AvailableBuffer(), "0\r\n"...)
		b = appendTrailers(b, w.h, w.trailers)
		if _, err := c.bw.Write(append(b, "\r\n"...)); err != nil {
			w.fail(err)
		}
	}
	if w.cl >= 0 && !w.noBody && w.written < w.cl {
		// The body is shorter than announced: only the end of the
		// connection tells the client it is incomplete.
		w.closeAfter = true
	}
	if err := c.bw.Flush(); err != nil {
		return false
	}
	c.mu.Lock()
	gone := c.gone
	c.mu.Unlock()
	if gone {
		return false
	}
	if w.body != nil && !c.bodyIsDone() {
		// The answer went out before the body was read, and said the
		// connection ends: what the client still sends is not read.
		c.lingeringClose()
		return false
	}
	return !w.closeAfter
}

// closeBody fails later reads of the request body.
func (w *response) closeBody() {
	if w.body != nil {
		w.body.close()
	}
}

func (c *conn) bodyIsDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bodyDone
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		return append(append(b, text...), "\r\n"...)
	}
	b = append(b, "status code "...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "\r\n"...)
}

// appendFields appends h's fields but Transfer-Encoding and Connection (the
// server's to write; a 101's Connection is the handler's) and skip; names that are not valid field names are
// dropped and line breaks in values become spaces, so no value can start a
// field or a response of its own. A nil value sends nothing.
func appendFields(b []byte, h http.Header, skip []string, connection bool) []byte {
	for k, vv := range h {
		if k == "Connection" && !connection || k == "Transfer-Encoding" || slices.Contains(skip, k) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			b = appendField(b, k, v)
		}
	}
	return b
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	for i := 0; i < len(v); i++ {
		ch := v[i]
		if ch == '\r' || ch == '\n' {
			ch = ' '
		}
		b = append(b, ch)
	}
	return append(b, "\r\n"...)
}

// appendTrailers appends the announced trailer fields set in h, and the
// fields whose names carry http.TrailerPrefix.
func appendTrailers(b []byte, h http.Header, announced []string) []byte {
	for _, k := range announced {
		if httpguts.ValidHeaderFieldName(k) {
			for _, v := range h[k] {
				b = appendField(b, k, v)
			}
		}
	}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && name != "" && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vv {
				b = appendField(b, name, v)
			}
		}
	}
	return b
}

// dateCache is the Date header's value for the current second, made once a
// second instead of once a response.
type dateCache struct {
	sec int64
	b   []byte
}

var date atomic.Pointer[dateCache]

func appendDate(b []byte) []byte {
	now := time.Now()
	sec := now.Unix()
	if d := date.Load(); d != nil && d.sec == sec {
		return append(b, d.b...)
	}
	d := &dateCache{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	date.Store(d)
	return append(b, d.b...)
}

var _ interface {
	http.ResponseWriter
	http.Flusher
	http.Hijacker
	io.Writer
} = (*response)(nil)
