package dnsfilter

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/dns"

	"github.com/cagent-dev/cagent/audit"
)

// The fast path answers repeated allowed queries from a ready-made reply,
// without parsing or packing a dns.Msg. It is only a shortcut for what the
// full path decided: a template is made from a reply the full path built,
// is tied to the policy state and the cached upstream answer it came from,
// and still goes through the rate limit, the distinct-names budget, the
// audit event and the metrics on every use. Anything unusual (EDNS options,
// escapes, compression, several records, a policy change) takes the full path.

// maxTemplates and templateBytes bound the template map (like the cache it
// shadows) by count and by estimated bytes (templateCost); a full map starts
// over.
const (
	maxTemplates  = 4096
	templateBytes = 1 << 20
)

type template struct {
	st      *state
	expires time.Time // of the cached answer it was made from; zero: never (local answers)
	entry   *cached   // TTLs count down from this entry; nil for local answers
	wire    []byte    // the reply, ID zero, the question in lower case
	nameOff []int     // offsets where the question's name is written out
	ttlOff  []int     // offsets of TTL fields to refresh
	nameLen int

	// Charged to the distinct-names budget (forwarded names).
	charge bool
	reg    string
	host   string

	// The audit event's constant part.
	ev        audit.Event
	qtypeLbl  string
	countHits bool
}

type templates struct {
	mu    sync.RWMutex
	m     map[string]*template
	bytes int
}

// templateCost estimates the heap bytes a template keeps alive: its
// struct, key and reply, the offsets and the audit event's strings.
func templateCost(key string, t *template) int {
	return int(unsafe.Sizeof(*t)) + 64 + len(key) + len(t.wire) + 8*(len(t.nameOff)+len(t.ttlOff)) +
		len(t.reg) + len(t.host) + len(t.ev.QName) + len(t.ev.Reason) + len(t.ev.Rule) + len(t.ev.Agent)
}

func newTemplates() *templates { return &templates{m: map[string]*template{}} }

// fastQuery is what parseFast found in a query.
type fastQuery struct {
	key     []byte // lower-case name + qtype + edns flag
	nameEnd int    // offset after the question name
	qtype   uint16
	edns    bool
}

// parseFast accepts only the plainest query: one question of class IN, a
// name of plain LDH labels without compression, and at most an OPT record
// (version 0, no options). ok is false for anything else.
func parseFast(wire []byte, key []byte) (fq fastQuery, ok bool) {
	if len(wire) < 17 || wire[2]&0xF8 != 0 || // QR=0, opcode QUERY
		binary.BigEndian.Uint16(wire[4:]) != 1 || binary.BigEndian.Uint16(wire[6:]) != 0 ||
		binary.BigEndian.Uint16(wire[8:]) != 0 {
		return fq, false
	}
	arcount := binary.BigEndian.Uint16(wire[10:])
	if arcount > 1 {
		return fq, false
	}
	i := 12
	key = key[:0]
	for {
		if i >= len(wire) {
			return fq, false
		}
		l := int(wire[i])
		if l == 0 {
			break
		}
		if l > 63 || i+1+l >= len(wire) {
			return fq, false
		}
		key = append(key, byte(l))
		for _, c := range wire[i+1 : i+1+l] {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			default:
				return fq, false
			}
			key = append(key, c)
		}
		i += 1 + l
	}
	if i == 12 || i+5 > len(wire) {
		return fq, false
	}
	fq.nameEnd = i + 1
	fq.qtype = binary.BigEndian.Uint16(wire[i+1:])
	if binary.BigEndian.Uint16(wire[i+3:]) != dns.ClassINET {
		return fq, false
	}
	i += 5
	if arcount == 1 {
		// Root name, type OPT, class = size, TTL = ext-rcode/version/flags, RDLEN 0.
		if len(wire) != i+11 || wire[i] != 0 || binary.BigEndian.Uint16(wire[i+1:]) != dns.TypeOPT ||
			wire[i+6] != 0 || binary.BigEndian.Uint16(wire[i+9:]) != 0 {
			return fq, false
		}
		fq.edns = true
	} else if len(wire) != i {
		return fq, false
	}
	key = append(key, byte(fq.qtype>>8), byte(fq.qtype), 0)
	if fq.edns {
		key[len(key)-1] = 1
	}
	fq.key = key
	return fq, true
}

// fast answers wire from a template, writing the reply into out. It
// returns nil when the query must take the full path.
func (f *Filter) fast(client netip.Addr, clientKey string, wire, key, out []byte) []byte {
	fq, ok := parseFast(wire, key)
	if !ok {
		return nil
	}
	f.tpl.mu.RLock()
	t := f.tpl.m[string(fq.key)]
	f.tpl.mu.RUnlock()
	if t == nil {
		return nil
	}
	st := f.state.Load()
	now := f.now()
	if t.st != st || !t.expires.IsZero() && !now.Before(t.expires) || fq.nameEnd-12 != t.nameLen {
		return nil
	}
	p := st.p
	if ok, _ := f.limiter.Allow(clientKey, p.DNS.RateLimit); !ok {
		return nil // the full path refuses it (and takes another token: fine)
	}
	if t.charge {
		if limit := p.DNS.Tunneling.DistinctNames; limit >= 0 {
			if !f.budgets.admitMark(clientKey, t.reg, t.host, limit, now, false).ok {
				return nil
			}
		}
	}
	out = append(out[:0], t.wire...)
	out[0], out[1] = wire[0], wire[1]
	out[2] = out[2]&^0x01 | wire[2]&0x01 // RD
	out[3] = out[3]&^0x10 | wire[3]&0x10 // CD
	name := wire[12:fq.nameEnd]
	for _, off := range t.nameOff {
		copy(out[off:], name)
	}
	if t.entry != nil {
		ttl := t.entry.remaining(now)
		for _, off := range t.ttlOff {
			binary.BigEndian.PutUint32(out[off:], ttl)
		}
	}
	ev := t.ev
	ev.TS = now
	ev.Client = clientKey
	if q, ok := f.sink.(*audit.Queue); ok {
		q.Emit(&ev) // copies ev: no allocation
	} else {
		e := ev
		f.sink.Emit(&e)
	}
	if t.countHits {
		f.met.cacheHit.Inc()
	}
	f.met.countQuery(ev.Decision, "none", t.qtypeLbl)
	f.fastN.Add(1)
	return out
}

// remember makes a template from a reply the full path just built, when the
// reply is one the fast path can reproduce exactly.
func (q *query) remember(out []byte) {
	f := q.f
	if q.fastOK == nil || q.ev.Decision != audit.Allow || q.ev.Error != "" || q.edeCode != 0 || q.edeText != "" ||
		len(out) > dns.MinMsgSize || q.resp.Compress || q.resp.Truncated {
		return
	}
	var kb [260]byte
	fq, ok := parseFast(q.wire, kb[:0])
	if !ok {
		return
	}
	t := &template{st: q.st, wire: append([]byte(nil), out...), nameLen: fq.nameEnd - 12,
		charge: q.fastOK.charge, reg: q.fastOK.reg, host: q.fastOK.host, ev: q.ev, qtypeLbl: qtypeLabel(fq.qtype)}
	if c := q.fastOK.entry; c != nil {
		t.entry, t.expires, t.countHits = c, c.expires, true
	} else {
		t.expires = f.now().Add(localTTL * time.Second)
	}
	t.ev.TS, t.ev.Client = time.Time{}, ""
	t.wire[0], t.wire[1] = 0, 0
	// Walk the reply: the question name is at 12; each answer's owner is
	// either the question name (same bytes) or another name; TTLs follow.
	name := q.wire[12:fq.nameEnd]
	t.nameOff = append(t.nameOff, 12)
	i := fq.nameEnd + 4
	an := int(binary.BigEndian.Uint16(out[6:]))
	for r := 0; r < an; r++ {
		start := i
		for i < len(out) && out[i] != 0 {
			if out[i]&0xC0 != 0 {
				return // compressed: not ours to patch
			}
			i += int(out[i]) + 1
		}
		i++
		if i+10 > len(out) {
			return
		}
		if i-start == len(name) && equalFoldASCII(out[start:i], name) {
			t.nameOff = append(t.nameOff, start)
		}
		t.ttlOff = append(t.ttlOff, i+4)
		i += 10 + int(binary.BigEndian.Uint16(out[i+8:]))
	}
	if i > len(out) {
		return
	}
	f.tpl.add(string(fq.key), t)
}

// add stores t under key within the bounds.
func (ts *templates) add(key string, t *template) {
	cost := templateCost(key, t)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if old := ts.m[key]; old != nil {
		ts.bytes -= templateCost(key, old)
		delete(ts.m, key)
	}
	if len(ts.m) >= maxTemplates || ts.bytes+cost > templateBytes {
		clear(ts.m) // rare: a working set beyond the bound starts over
		ts.bytes = 0
	}
	ts.m[key] = t
	ts.bytes += cost
}

func equalFoldASCII(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// fastInfo is what the full path tells remember about an allowed answer.
type fastInfo struct {
	entry  *cached // the cached upstream answer, nil for local answers
	charge bool
	reg    string
	host   string
}
