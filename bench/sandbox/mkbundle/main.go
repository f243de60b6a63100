// Command mkbundle writes the OCI bundle that bench/sandbox/run.sh runs with
// raw runc/runsc: the same confinement as `cagent run` (host rootfs, seccomp
// allowlist, no capabilities, read-only root, cgroup limits) without Cagent's
// network wiring (the runtime makes a fresh, empty network namespace).
package main

import (
	"flag"
	"log"
	"os"

	"github.com/cagent-dev/cagent/sandbox"
	"github.com/cagent-dev/cagent/sandbox/oci"
)

func main() {
	dir := flag.String("o", "", "bundle directory to create")
	runtime := flag.String("runtime", "runc", "runc or gvisor (sets the pids limit as cagent does)")
	cg := flag.String("cgroup", "/cagent-bench/raw", "cgroups path")
	flag.Parse()
	if *dir == "" || flag.NArg() == 0 {
		log.Fatal("usage: mkbundle -o DIR [-runtime runc|gvisor] -- CMD ARGS...")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	pids := int64(256)
	if *runtime == "gvisor" {
		pids = sandbox.GVisorMinPids
	}
	_, err := oci.Write(*dir, oci.Config{
		Args: flag.Args(), Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Cwd: "/",
		UID: 1000, GID: 1000, Hostname: "sandbox", HostRootfs: true,
		CgroupsPath: *cg, CPUs: 1, Memory: 2 << 30, Pids: pids,
	})
	if err != nil {
		log.Fatal(err)
	}
}
