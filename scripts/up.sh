#!/usr/bin/env bash
# The quick start: install what a fresh Debian/Ubuntu machine lacks, then run
# the standalone data plane with its admin UI. Usage: sudo scripts/up.sh [POLICY]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-examples/coding-agent.yaml}
if [ "$(id -u)" -ne 0 ]; then
  echo "cagent up creates network namespaces and runs runc/runsc: run it as root (sudo make up)" >&2
  exit 1
fi
need=()
for cmd in runc nft ip; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ] || ! command -v runsc >/dev/null; then
  echo "installing runc, runsc (gVisor), nftables and iproute2 from the distribution's packages" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runc runsc nftables iproute2 ca-certificates
fi
mkdir -p workspace
echo "starting cagent up with $config; open http://127.0.0.1:8081 and log in with the token printed below" >&2
exec bin/cagent up --config "$config" --state-dir "${CAGENT_STATE_DIR:-/var/lib/cagent}"
