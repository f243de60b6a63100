#!/usr/bin/env bash
# Regenerates cmd/cagent/default.pgo, the CPU profile `go build` uses for
# profile-guided optimisation of the cagent binary (inlining and
# devirtualisation of the hot paths; https://go.dev/doc/pgo).
#
# The profile comes from the data plane's own Go benchmarks, which run real
# servers on loopback: HTTP keep-alive and intercepted HTTPS through the
# proxy (client and upstream in the same process), and the DNS filter
# answering cached queries over UDP. Regenerate it after large changes to
# those paths; a stale profile only loses some of the gain.
#
#   scripts/pgo.sh            # BENCHTIME=5s per benchmark by default
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-5s}
W=$(mktemp -d /tmp/cagent-pgo.XXXXXX)
trap 'rm -rf "$W"' EXIT
go test -run '^$' -bench '(HTTPKeepAlive|InterceptedHTTPS)/proxy' -benchtime "$BENCHTIME" \
  -cpuprofile "$W/proxy.pprof" -o "$W/proxy.test" ./proxy/ > "$W/proxy.out"
go test -run '^$' -bench 'ServeUDPCached' -benchtime "$BENCHTIME" \
  -cpuprofile "$W/dns.pprof" -o "$W/dns.test" ./dnsfilter/ > "$W/dns.out"
grep -h '^Benchmark' "$W/proxy.out" "$W/dns.out" >&2
go tool pprof -proto "$W/proxy.pprof" "$W/dns.pprof" > cmd/cagent/default.pgo
echo "wrote cmd/cagent/default.pgo ($(wc -c < cmd/cagent/default.pgo) bytes)" >&2
