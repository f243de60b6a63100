package adminui

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/cagent-dev/cagent/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cagent-dev/cagent/policy"
	"gopkg.in/yaml.v3"
)

// ConfigError is one validation problem as the API returns it.
type ConfigError struct {
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"message"`
}

func configErrors(err error) []ConfigError {
	var perrs policy.Errors
	if errors.As(err, &perrs) {
		out := make([]ConfigError, len(perrs))
		for i, e := range perrs {
			out[i] = ConfigError{Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Msg}
		}
		return out
	}
	return []ConfigError{{Msg: err.Error()}}
}

// configFile reads and writes the policy file the daemon runs.
type configFile struct {
	path string
}

func (c configFile) read() ([]byte, error) {
	b, err := os.ReadFile(c.path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.path, err)
	}
	return b, nil
}

// validate parses data as the policy file would be parsed.
func (c configFile) validate(data []byte) (*policy.Policy, []ConfigError) {
	p, err := policy.Parse(c.path, data)
	if err != nil {
		return nil, configErrors(err)
	}
	return p, nil
}

// write replaces the file atomically, keeping its mode. A symlinked policy
// file is followed, so the link stays a link.
func (c configFile) write(data []byte) error {
	target, err := filepath.EvalSymlinks(c.path)
	if err != nil {
		return fmt.Errorf("save %s: %w", c.path, err)
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(target); err == nil {
		mode = st.Mode().Perm()
	}
	if err := atomicfile.WriteFile(target, data, mode); err != nil {
		return fmt.Errorf("save %s: %w", c.path, err)
	}
	return nil
}

// DomainEntry is a domains[] entry as the structured editor edits it.
// Durations and sizes are kept as written ("120s", "10MiB"); the policy
// parser validates them.
type DomainEntry struct {
	Domain       string           `json:"domain" yaml:"domain"`
	Alias        string           `json:"alias,omitempty" yaml:"alias,omitempty"`
	Ports        []int            `json:"ports,omitempty" yaml:"ports,omitempty,flow"`
	Timeout      scalar           `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	ReadOnly     bool             `json:"read_only,omitempty" yaml:"read_only,omitempty"`
	AllowedPaths []string         `json:"allowed_paths,omitempty" yaml:"allowed_paths,omitempty,flow"`
	DeniedPaths  []string         `json:"denied_paths,omitempty" yaml:"denied_paths,omitempty,flow"`
	RateLimit    *RateLimitEntry  `json:"rate_limit,omitempty" yaml:"rate_limit,omitempty,flow"`
	EgressLimit  scalar           `json:"egress_limit,omitempty" yaml:"egress_limit,omitempty"`
	TLSIntercept bool             `json:"tls_intercept,omitempty" yaml:"tls_intercept,omitempty"`
	AllowPrivate bool             `json:"allow_private,omitempty" yaml:"allow_private,omitempty"`
	Credential   *CredentialEntry `json:"credential,omitempty" yaml:"credential,omitempty"`
	Enabled      *bool            `json:"enabled,omitempty" yaml:"enabled,omitempty"`
}

// RateLimitEntry is a domain's rate_limit.
type RateLimitEntry struct {
	RequestsPerMinute float64 `json:"requests_per_minute" yaml:"requests_per_minute"`
	BurstSize         int     `json:"burst_size,omitempty" yaml:"burst_size,omitempty"`
}

// CredentialEntry is a domain's credential reference: where the proxy gets
// the value, never the value itself.
type CredentialEntry struct {
	Header string `json:"header" yaml:"header"`
	Format string `json:"format,omitempty" yaml:"format,omitempty"`
	Env    string `json:"env,omitempty" yaml:"env,omitempty"`
	File   string `json:"file,omitempty" yaml:"file,omitempty"`
	Secret string `json:"secret,omitempty" yaml:"secret,omitempty"`
}

// scalar keeps a YAML scalar's text, whatever its tag (120 or "120s").
type scalar string

func (s *scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a scalar", n.Line)
	}
	*s = scalar(n.Value)
	return nil
}

func (s scalar) MarshalYAML() (any, error) {
	v := string(s)
	// Keep plain numbers numbers (timeout: 120 means seconds).
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v}, nil
	}
	return v, nil
}

// parseDoc parses a policy file into a YAML tree for editing. An empty
// file becomes an empty mapping.
func parseDoc(data []byte) (*yaml.Node, *yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("the policy file is not a YAML mapping")
	}
	return &doc, doc.Content[0], nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// readDomains returns the domains of a policy file as the editor sees them.
func readDomains(data []byte) ([]DomainEntry, error) {
	_, root, err := parseDoc(data)
	if err != nil {
		return nil, err
	}
	n := mapValue(root, "domains")
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return []DomainEntry{}, nil
	}
	var out []DomainEntry
	if err := n.Decode(&out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []DomainEntry{}
	}
	return out, nil
}

// replaceDomains returns data with its domains list replaced, leaving the
// rest of the file (comments included) as it was.
func replaceDomains(data []byte, domains []DomainEntry) ([]byte, error) {
	doc, root, err := parseDoc(data)
	if err != nil {
		return nil, err
	}
	var list yaml.Node
	if err := list.Encode(domains); err != nil {
		return nil, err
	}
	if len(domains) == 0 {
		list = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	}
	if v := mapValue(root, "domains"); v != nil {
		list.HeadComment, list.LineComment, list.FootComment = v.HeadComment, v.LineComment, v.FootComment
		*v = list
	} else {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "domains"}, &list)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// normalizeDomains drops empty strings the form may send.
func normalizeDomains(ds []DomainEntry) {
	clean := func(xs []string) []string {
		var out []string
		for _, x := range xs {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
		return out
	}
	for i := range ds {
		d := &ds[i]
		d.Domain = strings.TrimSpace(d.Domain)
		d.Alias = strings.TrimSpace(d.Alias)
		d.Timeout = scalar(strings.TrimSpace(string(d.Timeout)))
		d.EgressLimit = scalar(strings.TrimSpace(string(d.EgressLimit)))
		d.AllowedPaths = clean(d.AllowedPaths)
		d.DeniedPaths = clean(d.DeniedPaths)
		if c := d.Credential; c != nil && c.Header == "" && c.Env == "" && c.File == "" && c.Secret == "" && c.Format == "" {
			d.Credential = nil
		}
		if r := d.RateLimit; r != nil && r.RequestsPerMinute == 0 && r.BurstSize == 0 {
			d.RateLimit = nil
		}
	}
}
