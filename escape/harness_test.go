package escape

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/internal/fakeinet"
	"github.com/cagent-dev/cagent/internal/testutil"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/sandbox"
	"github.com/cagent-dev/cagent/sandbox/oci"
)

// runtimes under test: (policy name, binary).
var runtimes = []struct{ name, bin string }{{"runc", "runc"}, {"gvisor", "runsc"}}

// The credential the proxy injects; it must never be visible inside.
const secretValue = "sk-cagent-escape-suite-SECRET-6f1d3b"

// env is one fake internet plus a built probe, shared by a test's subtests.
type env struct {
	inet     *fakeinet.Internet
	probeDir string // holds "probe"
	suidDir  string // holds a setuid-root copy of probe
	state    string
	pol      *policy.Policy
	results  *results
}

var buildOnce struct {
	sync.Once
	dir string
	err error
}

// buildProbe compiles escape/probe statically, once per test binary.
func buildProbe(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cagent-probe-")
		if err != nil {
			buildOnce.err = err
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "probe"), "./probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("build probe: %v\n%s", err, out)
			return
		}
		// Readable and executable by the sandbox user.
		os.Chmod(dir, 0o755)
		buildOnce.dir = dir
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.dir
}

const policyYAML = `
domains:
  - domain: web.test
    allow_private: true
  - domain: api.test
    allow_private: true
    tls_intercept: true
    allowed_paths: ["/v1/*"]
    denied_paths: ["/v1/admin*"]
    credential: {header: Authorization, format: "Bearer {value}", env: CAGENT_ESCAPE_KEY}
  - domain: loop.test
  - domain: private.test
  - domain: meta.test
  - domain: "*.exfil.test"
    allow_private: true
dns:
  tunneling: {max_label_length: 40, max_name_length: 100, distinct_names_per_hour: 20}
sandbox:
  resources: {cpus: 1, memory: 128MiB, pids: 64}
`

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	for _, r := range runtimes {
		testutil.RequireCommand(t, r.bin)
	}
	testutil.RequireCommand(t, "go")
	e := &env{probeDir: buildProbe(t), results: &results{}}
	// The credential is in this (the data plane's) environment, as with
	// `env:` credentials in production: nothing of it may reach a sandbox.
	t.Setenv("CAGENT_ESCAPE_KEY", secretValue)
	e.inet = fakeinet.Start(t, fakeinet.Options{Records: map[string][]netip.Addr{
		"loop.test": {netip.MustParseAddr("127.0.0.1")},
		"meta.test": {netip.MustParseAddr("169.254.169.254")},
	}})
	e.inet.SetRecord("private.test", e.inet.Catcher)
	e.inet.SetRecord("*.exfil.test", e.inet.Web)
	p, err := policy.Parse("escape.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	e.pol = p
	e.state = t.TempDir()
	os.Chmod(e.state, 0o755)

	// A setuid-root copy of the probe on a mount without nosuid: only
	// no-new-privileges stands between it and euid 0.
	e.suidDir = t.TempDir()
	os.Chmod(e.suidDir, 0o755)
	b, err := os.ReadFile(filepath.Join(e.probeDir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(e.suidDir, "probe")
	if err := os.WriteFile(sp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sp, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sp, 0o4755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.results.write(t) })
	return e
}

type runOpts struct {
	services    bool // start the proxy and DNS filter
	newServices func(sandbox.Gateway) (*sandbox.Services, error)
	onGateway   func(sandbox.Gateway)
	workspace   string
	pol         *policy.Policy
	timeout     time.Duration
}

// run starts a sandbox under runtime running the probe with args and
// returns its exit code and output.
func (e *env) run(t *testing.T, runtime string, o runOpts, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmp(o.timeout, 60*time.Second))
	defer cancel()
	var out bytes.Buffer
	pol := o.pol
	if pol == nil {
		pol = e.pol
	}
	cfg := sandbox.Config{
		Policy: pol, Runtime: runtime, StateDir: e.state, Workspace: o.workspace,
		Args:   append([]string{"/probe/probe"}, args...),
		Stdout: &out, Stderr: &out,
		Binds: []oci.Bind{{Source: e.probeDir, Dest: "/probe", ReadOnly: true},
			{Source: e.suidDir, Dest: "/suid", ReadOnly: true, AllowSetuid: true}},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if o.newServices != nil {
		cfg.NewServices = o.newServices
	} else if o.services {
		cfg.NewServices = e.services(t, o.onGateway)
	} else if o.onGateway != nil {
		cfg.NewServices = func(g sandbox.Gateway) (*sandbox.Services, error) {
			o.onGateway(g)
			return &sandbox.Services{}, nil
		}
	}
	code, err := sandbox.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("sandbox.Run: %v\n%s", err, out.String())
	}
	t.Logf("%s probe %s -> exit %d\n%s", runtime, strings.Join(args, " "), code, out.String())
	return code, out.String()
}

func cmp(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// mustFail runs an escape attempt that must not succeed.
func (e *env) mustFail(t *testing.T, runtime, name string, o runOpts, args ...string) string {
	t.Helper()
	code, out := e.run(t, runtime, o, args...)
	if code == 0 {
		e.results.add(runtime, name, "ESCAPED")
		t.Errorf("escape %q succeeded under %s:\n%s", name, runtime, out)
	} else {
		e.results.add(runtime, name, "blocked")
	}
	return out
}

// mustWork runs an allowed action that must succeed.
func (e *env) mustWork(t *testing.T, runtime, name string, o runOpts, args ...string) string {
	t.Helper()
	code, out := e.run(t, runtime, o, args...)
	if code != 0 {
		e.results.add(runtime, name, "BROKEN")
		t.Errorf("allowed action %q failed under %s (exit %d):\n%s", name, runtime, code, out)
	} else {
		e.results.add(runtime, name, "works")
	}
	return out
}

// noneFromSandboxes fails if the fake internet saw traffic from a sandbox
// address directly (anything not from the host's proxy).
func (e *env) noDirectTraffic(t *testing.T) {
	t.Helper()
	for _, c := range e.inet.Caught() {
		if strings.HasPrefix(c.Remote, "10.209.") {
			t.Errorf("catcher saw a sandbox connection: %+v", c)
		}
	}
	for _, r := range e.inet.Requests() {
		if strings.HasPrefix(r.Remote, "10.209.") {
			t.Errorf("web server saw a direct sandbox request: %+v", r)
		}
	}
}

// results collects per-runtime outcomes; ESCAPE_REPORT=FILE writes them as
// a markdown table (used to fill docs/security.md).
type results struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

func (r *results) add(runtime, name, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]map[string]string{}
	}
	if r.m[name] == nil {
		r.m[name] = map[string]string{}
	}
	r.m[name][runtime] = outcome
}

func (r *results) write(t *testing.T) {
	path := os.Getenv("ESCAPE_REPORT")
	if path == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for n := range r.m {
		names = append(names, n)
	}
	sort.Strings(names)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Log(err)
		return
	}
	defer f.Close()
	for _, n := range names {
		fmt.Fprintf(f, "| %s | %s | %s |\n", n, r.m[n]["runc"], r.m[n]["gvisor"])
	}
}
