package dnsfilter

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/cagent-dev/cagent/audit"
)

// appendEvent appends e as JSON, byte for byte what json.Marshal produces
// for the fields a DNS event uses, without reflection or allocation (the
// filter writes one event per query). Events using other fields are handed
// to json.Marshal. TestAppendEventMatchesMarshal holds the two together.
func appendEvent(b []byte, e *audit.Event) ([]byte, error) {
	if e.Method != "" || e.Scheme != "" || e.Host != "" || e.Port != 0 || e.Path != "" || e.Status != 0 ||
		e.BytesUp != 0 || e.BytesDown != 0 || e.DurationMS != 0 || e.Intercepted || e.Credential != "" ||
		e.Upstream != "" || e.Actor != "" || len(e.Detail) > 0 {
		c := *e // only this branch's copy escapes, not e
		j, err := json.Marshal(&c)
		return append(b, j...), err
	}
	b = append(b, `{"ts":"`...)
	b = e.TS.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = field(b, "type", e.Type)
	b = field(b, "agent", e.Agent)
	b = field(b, "decision", e.Decision)
	b = field(b, "reason", e.Reason)
	b = field(b, "rule", e.Rule)
	b = field(b, "error", e.Error)
	b = field(b, "client", e.Client)
	b = field(b, "qname", e.QName)
	b = field(b, "qtype", e.QType)
	b = field(b, "rcode", e.RCode)
	if len(e.Answer) > 0 {
		b = append(b, `,"answer":[`...)
		for i, a := range e.Answer {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
		}
		b = append(b, ']')
	}
	b = field(b, "action", e.Action)
	b = append(b, `,"prev":`...)
	b = appendJSONString(b, e.Prev)
	return append(b, '}'), nil
}

func field(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does (HTML-safe, invalid UTF-8
// replaced, U+2028 and U+2029 escaped).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
