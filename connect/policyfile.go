package connect

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/cagent-dev/cagent/internal/atomicfile"
	"github.com/cagent-dev/cagent/policy"
	"gopkg.in/yaml.v3"
)

// mergePolicy builds the policy the data plane runs: the local file base
// (sandbox, proxy, DNS and admin settings) with its domains replaced by
// those the control plane sent (cpYAML; nil: none yet, so nothing is
// allowed). The result is validated exactly like a policy file.
func mergePolicy(base, cpYAML []byte, url string) ([]byte, *policy.Policy, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return nil, nil, fmt.Errorf("local policy: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	domains := []any{}
	if len(cpYAML) > 0 {
		cpp, err := policy.Parse("control plane policy", cpYAML)
		if err != nil {
			return nil, nil, err
		}
		// Credentials from the control plane come from its secrets only:
		// env: and file: would let it read this host's environment and
		// files (the agent token among them) and send them upstream.
		for _, d := range cpp.Domains {
			if c := d.Credential; c != nil && (c.Env != "" || c.File != "") {
				return nil, nil, fmt.Errorf("control plane policy: domain %s: credential from env or file refused; the control plane may only use secret:", d.Domain)
			}
		}
		var cp map[string]any
		if err := yaml.Unmarshal(cpYAML, &cp); err != nil {
			return nil, nil, fmt.Errorf("control plane policy: %w", err)
		}
		if d, ok := cp["domains"].([]any); ok {
			domains = d
		}
	}
	doc["domains"] = domains
	doc["mode"] = "connected"
	cp, _ := doc["control_plane"].(map[string]any)
	if cp == nil {
		cp = map[string]any{}
	}
	if url != "" {
		cp["url"] = url
	}
	doc["control_plane"] = cp
	var b bytes.Buffer
	b.WriteString("# Written by cagent (connected mode): the local policy with the control plane's domains.\n# Edits are replaced by the next update from the control plane.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, nil, err
	}
	p, err := policy.Parse("connected policy", b.Bytes())
	if err != nil {
		return nil, nil, err
	}
	return b.Bytes(), p, nil
}

// writeIfChanged writes data atomically (0600) unless the file already
// holds it.
func writeIfChanged(path string, data []byte) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, atomicfile.WriteFile(path, data, 0o600)
}
