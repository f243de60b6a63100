package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// AliasSuffix is the pseudo-domain under which aliases live.
const AliasSuffix = ".devbox.local"

// ErrInvalidHost is wrapped by every NormalizeHost failure.
var ErrInvalidHost = errors.New("invalid host name")

// NormalizeHost returns the canonical form used for matching: lower case,
// one trailing dot removed, IDNs in punycode. It refuses anything that is not
// a syntactically valid DNS name (IP literals included; see ParseIPHost).
func NormalizeHost(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidHost)
	}
	ascii := true
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		p, err := idna.Lookup.ToASCII(h)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrInvalidHost, h, err)
		}
		h = p
	}
	h = strings.ToLower(h)
	if err := checkDNSName(h); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidHost, h, err)
	}
	// Browsers, curl and inet_aton read a name ending in a number ("127.1",
	// "0x7f.1", "2130706433") as an IPv4 address; such a name must never be
	// matched as a domain.
	if endsInNumber(h) {
		return "", fmt.Errorf("%w: %q looks like an IP address", ErrInvalidHost, h)
	}
	if strings.Contains(h, "xn--") {
		if _, err := idna.Lookup.ToUnicode(h); err != nil {
			return "", fmt.Errorf("%w: %q: invalid punycode: %v", ErrInvalidHost, h, err)
		}
	}
	return h, nil
}

// endsInNumber applies the WHATWG URL "ends in a number" test to a
// lower-case name: its last label is all digits or a 0x hex number.
func endsInNumber(h string) bool {
	last := h[strings.LastIndexByte(h, '.')+1:]
	if rest, ok := strings.CutPrefix(last, "0x"); ok {
		for i := 0; i < len(rest); i++ {
			if !isHex(rest[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return last != ""
}

// checkDNSName enforces RFC 1035 letter-digit-hyphen syntax (plus '_', which
// real services use in labels) on a lower-case ASCII name.
func checkDNSName(h string) error {
	if len(h) > 253 {
		return errors.New("longer than 253 characters")
	}
	for rest := h; ; {
		label, tail, more := strings.Cut(rest, ".")
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return errors.New("label longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed", c)
			}
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// ParseIPHost reports whether h (without port, brackets allowed) is an IP
// literal, and returns it unmapped.
func ParseIPHost(h string) (netip.Addr, bool) {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validatePattern checks a domain entry and returns its canonical form.
func validatePattern(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("domain is required")
	}
	// One trailing dot is the same name; NormalizeHost removes it. A second
	// one would otherwise be removed here and hidden from NormalizeHost.
	if t := strings.TrimSuffix(raw, "."); strings.HasSuffix(t, ".") || t == "" {
		return "", fmt.Errorf("invalid domain %q: empty label", raw)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] >= 0x80 {
			if p, err := idna.Lookup.ToASCII(strings.TrimPrefix(raw, "*.")); err == nil {
				if strings.HasPrefix(raw, "*.") {
					p = "*." + p
				}
				return "", fmt.Errorf("non-ASCII domain %q: write it in punycode, %q", raw, p)
			}
			return "", fmt.Errorf("non-ASCII domain %q is not a valid IDN", raw)
		}
	}
	if _, ok := ParseIPHost(strings.TrimSuffix(raw, ".")); ok {
		return "", fmt.Errorf("%q is an IP address: list IP destinations under ip_ranges", raw)
	}
	if strings.Contains(raw, ":") || strings.Contains(raw, "/") {
		return "", fmt.Errorf("%q: a domain has no scheme, port or path (use ports: for ports)", raw)
	}
	base, wildcard := strings.CutPrefix(raw, "*.")
	if strings.Contains(base, "*") {
		return "", fmt.Errorf("invalid wildcard %q: only a leading \"*.\" is allowed, as in *.example.com", raw)
	}
	if b := strings.ToLower(strings.TrimSuffix(base, ".")); b != "" && endsInNumber(b) {
		return "", fmt.Errorf("%q looks like an IP address: list IP destinations under ip_ranges", raw)
	}
	host, err := NormalizeHost(base)
	if err != nil {
		return "", err
	}
	if wildcard {
		// "*.com" or "*.co.uk" would allow a whole public suffix.
		if ps, _ := publicsuffix.PublicSuffix(host); ps == host || !strings.Contains(host, ".") {
			return "", fmt.Errorf("invalid wildcard %q: %q is a public suffix; name a registered domain, as in *.example.com", raw, host)
		}
		return "*." + host, nil
	}
	if strings.HasSuffix(host, AliasSuffix) || host == AliasSuffix[1:] {
		return "", fmt.Errorf("%q: names under devbox.local are aliases; set alias: on the real domain instead", raw)
	}
	return host, nil
}

// RegisteredDomain returns the registrable domain of a normalized name
// (eTLD+1), or the name itself when it has none (e.g. a bare TLD or *.test names).
func RegisteredDomain(host string) string {
	if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
		return d
	}
	return host
}
