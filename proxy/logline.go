package proxy

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cagent-dev/cagent/audit"
)

// lineHandler is the text handler of `cagent proxy`: slog's TextHandler for
// every record, except that the per-request "egress" line (record) is
// formatted here into the same bytes. slog's generic path (a Record with 19
// attributes, the caller's PC, each value resolved, kind-switched and
// checked for quoting) cost 8-10% of the CPU of a proxied keep-alive
// request. Loggers derived with With or WithGroup are plain TextHandlers,
// and record falls back to slog for them.
type lineHandler struct {
	*slog.TextHandler
	w io.Writer // written one whole line per Write, as TextHandler does
}

func newLineHandler(w io.Writer) *lineHandler {
	return &lineHandler{TextHandler: slog.NewTextHandler(w, nil), w: w}
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// egressAttrs is the canonical line's fields, in order, for slog.
func egressAttrs(ev *audit.Event) []slog.Attr {
	return []slog.Attr{
		slog.String("type", ev.Type),
		slog.String("decision", ev.Decision),
		slog.String("error", ev.Error),
		slog.String("rule", ev.Rule),
		slog.String("agent", ev.Agent),
		slog.String("client", ev.Client),
		slog.String("method", ev.Method),
		slog.String("scheme", ev.Scheme),
		slog.String("host", ev.Host),
		slog.Int("port", ev.Port),
		slog.String("path", ev.Path),
		slog.Int("status", ev.Status),
		slog.Int64("bytes_up", ev.BytesUp),
		slog.Int64("bytes_down", ev.BytesDown),
		slog.Int64("duration_ms", ev.DurationMS),
		slog.Bool("intercepted", ev.Intercepted),
		slog.String("credential", ev.Credential),
		slog.String("upstream", ev.Upstream),
		slog.String("reason", ev.Reason),
	}
}

// logEgressAt writes the canonical line through h's fast path, stamped t,
// or, for any other handler, through slog (which stamps its own records).
func logEgressAt(l *slog.Logger, level slog.Level, ev *audit.Event, t time.Time) {
	h, ok := l.Handler().(*lineHandler)
	if !ok {
		l.LogAttrs(context.Background(), level, "egress", egressAttrs(ev)...)
		return
	}
	if !h.Enabled(context.Background(), level) {
		return
	}
	bp := lineBufs.Get().(*[]byte)
	b := appendEgressLine((*bp)[:0], t, level, ev)
	h.w.Write(b)
	if cap(b) <= 4<<10 { // do not keep a huge path's buffer
		*bp = b
		lineBufs.Put(bp)
	}
}

// appendEgressLine appends the line slog.TextHandler (without options)
// writes for LogAttrs(ctx, level, "egress", egressAttrs(ev)...) at t.
func appendEgressLine(b []byte, t time.Time, level slog.Level, ev *audit.Event) []byte {
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, t.Round(0))
	b = append(b, " level="...)
	b = appendTextString(b, level.String())
	b = append(b, " msg=egress"...)
	b = appendStringField(b, " type=", ev.Type)
	b = appendStringField(b, " decision=", ev.Decision)
	b = appendStringField(b, " error=", ev.Error)
	b = appendStringField(b, " rule=", ev.Rule)
	b = appendStringField(b, " agent=", ev.Agent)
	b = appendStringField(b, " client=", ev.Client)
	b = appendStringField(b, " method=", ev.Method)
	b = appendStringField(b, " scheme=", ev.Scheme)
	b = appendStringField(b, " host=", ev.Host)
	b = appendIntField(b, " port=", int64(ev.Port))
	b = appendStringField(b, " path=", ev.Path)
	b = appendIntField(b, " status=", int64(ev.Status))
	b = appendIntField(b, " bytes_up=", ev.BytesUp)
	b = appendIntField(b, " bytes_down=", ev.BytesDown)
	b = appendIntField(b, " duration_ms=", ev.DurationMS)
	b = strconv.AppendBool(append(b, " intercepted="...), ev.Intercepted)
	b = appendStringField(b, " credential=", ev.Credential)
	b = appendStringField(b, " upstream=", ev.Upstream)
	b = appendStringField(b, " reason=", ev.Reason)
	return append(b, '\n')
}

func appendStringField(b []byte, key, v string) []byte {
	return appendTextString(append(b, key...), v)
}

func appendIntField(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(append(b, key...), v, 10)
}

// appendRFC3339Millis is slog's time format: RFC 3339 with exactly three
// digits of milliseconds (truncated, not rounded).
//
// time.RFC3339 has a fast path in AppendFormat that other layouts lack
// (their layout string is parsed on every call), so this formats RFC 3339
// and inserts the milliseconds before the zone, which is "Z" or "±hh:mm"
// in both layouts.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	b = t.AppendFormat(b, time.RFC3339)
	zone := 6
	if b[len(b)-1] == 'Z' {
		zone = 1
	}
	end := len(b) - zone // where the seconds end
	b = append(b, "...."...)
	copy(b[end+4:], b[end:end+zone])
	ms := t.Nanosecond() / 1e6
	b[end] = '.'
	b[end+1] = byte('0' + ms/100)
	b[end+2] = byte('0' + ms/10%10)
	b[end+3] = byte('0' + ms%10)
	return b
}

// appendTextString appends s as slog's TextHandler does: quoted (Go
// syntax) when it is empty or holds a space, '=', '"', a control or
// non-printing character, or invalid UTF-8. Agent-chosen strings (path,
// method, host) go through here, so a line can never be split or forged.
func appendTextString(b []byte, s string) []byte {
	if textNeedsQuoting(s) {
		return appendQuote(b, s)
	}
	return append(b, s...)
}

// appendQuote is strconv.AppendQuote, done here for printable ASCII (empty
// fields, a rule with a space), in which only '"' and '\\' are escaped.
func appendQuote(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', c)
			start = i + 1
		}
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// textNeedsQuoting is slog's needsQuoting (log/slog/text_handler.go).
// ASCII needs no quoting when it is a backslash, or in 0x21-0x7f other
// than '"' and '=' (slog's safeSet, which admits DEL).
func textNeedsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c <= ' ' || c == '=' || c == '"') {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
