package sandbox

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/cagent-dev/cagent/sandbox/oci"
)

// secretPaths lists the host files and directories holding the data plane's
// secrets: credential files, the control-plane token file, the admin TLS
// key, and the state directory (CA key, secret store, budgets).
func secretPaths(c *Config) []string {
	p := c.Policy
	var out []string
	for i := range p.Domains {
		if cr := p.Domains[i].Credential; cr != nil && cr.File != "" {
			out = append(out, cr.File)
		}
	}
	if p.ControlPlane != nil && p.ControlPlane.TokenFile != "" {
		out = append(out, p.ControlPlane.TokenFile)
	}
	if p.Admin.TLSKey != "" {
		out = append(out, p.Admin.TLSKey)
	}
	return append(out, c.StateDir)
}

// maskBinds hides every secret path that the sandbox would otherwise see
// through the host rootfs, its own rootfs or the workspace (a key file left
// world-readable in /etc, or one kept in the project directory): an empty
// read-only file over a file, an empty read-only directory over a directory.
// The empty file and directory are made in dir when needed.
func maskBinds(c *Config, dir string) ([]oci.Bind, error) {
	type view struct{ host, dest string }
	var views []view
	add := func(host, dest string) {
		if real, err := filepath.EvalSymlinks(host); err == nil {
			views = append(views, view{real, dest})
		}
	}
	if c.Policy.Sandbox.Rootfs == "host" {
		for _, d := range oci.HostDirs {
			// Symlinked dirs (merged /usr) are recreated as symlinks, and
			// what they point to is bound under its own name.
			if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
				add(d, d)
			}
		}
	} else {
		add(c.Policy.Sandbox.Rootfs, "/")
	}
	if c.Workspace != "" {
		add(c.Workspace, "/workspace")
	}
	var binds []oci.Bind
	seen := map[string]bool{}
	for _, p := range secretPaths(c) {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // missing: nothing to see
		}
		fi, err := os.Stat(real)
		if err != nil {
			continue
		}
		for _, v := range views {
			rel, ok := within(real, v.host)
			if !ok {
				continue
			}
			dest := filepath.Join(v.dest, rel)
			if seen[dest] {
				continue
			}
			seen[dest] = true
			src := filepath.Join(dir, "masked")
			if fi.IsDir() {
				src += ".d"
				if err := os.MkdirAll(src, 0o555); err != nil {
					return nil, err
				}
			} else if err := os.WriteFile(src, nil, 0o444); err != nil {
				return nil, err
			}
			binds = append(binds, oci.Bind{Source: src, Dest: dest, ReadOnly: true})
		}
	}
	return binds, nil
}

// within reports whether p is base or below it, and the relative path.
func within(p, base string) (string, bool) {
	if p == base {
		return ".", true
	}
	if base == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	rest, ok := strings.CutPrefix(p, base+"/")
	return rest, ok
}
