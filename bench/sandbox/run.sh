#!/usr/bin/env bash
# Sandbox start-to-exit benchmark: `cagent run -- /bin/true` against raw
# `runc run` and `runsc run` of an equivalent bundle (bench/sandbox/mkbundle:
# same rootfs, seccomp, capabilities and cgroup limits, but no Cagent
# network), all in one hyperfine run. Needs root, runc, runsc, hyperfine.
#
#   sudo bench/sandbox/run.sh            # RUNS=30 per command
#   RUNS=10 sudo bench/sandbox/run.sh
#
# Prints hyperfine's table, then the medians and the ratios
# cagent/raw for each runtime. Targets (issue 4): at most +50% over the raw
# runtime at the median, and at most 300 ms in total with runc.
set -euo pipefail
RUNS=${RUNS:-30}
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
need=()
for c in runc runsc hyperfine; do command -v "$c" >/dev/null || need+=("$c"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc runsc hyperfine >/dev/null
fi

WORK=$(mktemp -d /tmp/cagent-sbbench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  runc --root "$WORK/runc" delete -f bench-runc >/dev/null 2>&1 || true
  runsc --root "$WORK/runsc" delete -force bench-runsc >/dev/null 2>&1 || true
  [ -x "$WORK/cagent" ] && "$WORK/cagent" gc --state-dir "$WORK/state" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -trimpath -o "$WORK/cagent" ./cmd/cagent
go build -o "$WORK/mkbundle" ./bench/sandbox/mkbundle
"$WORK/mkbundle" -o "$WORK/b-runc" -runtime runc -cgroup /cagent-bench/runc -- /bin/true
"$WORK/mkbundle" -o "$WORK/b-runsc" -runtime gvisor -cgroup /cagent-bench/runsc -- /bin/true

# The data plane is started for real (proxy + DNS on the gateway); its
# upstream is a loopback address nothing listens on: /bin/true never asks.
cat >"$WORK/cagent.yaml" <<EOF2
dns:
  upstream: [127.0.0.77:5300]
domains:
  - domain: example.test
EOF2

CAGENT="$WORK/cagent run --config $WORK/cagent.yaml --state-dir $WORK/state"
hyperfine -N --warmup 3 --runs "$RUNS" --export-csv "$WORK/out.csv" \
  -n "raw runc"      "runc --root $WORK/runc run --bundle $WORK/b-runc bench-runc" \
  -n "cagent runc"   "$CAGENT --runtime runc -- /bin/true" \
  -n "raw runsc"     "runsc --root $WORK/runsc --network=none --oci-seccomp run --bundle $WORK/b-runsc bench-runsc" \
  -n "cagent gvisor" "$CAGENT --runtime gvisor -- /bin/true"

awk -F, 'NR>1 { med[$1]=$4*1000 }
END {
  printf "\nmedian start-to-exit (ms):\n"
  for (k in med) printf "  %-14s %8.1f\n", k, med[k]
  printf "\nratios (cagent / raw, at the median):\n"
  printf "  runc:   %.2f  (+%.0f ms)\n", med["cagent runc"]/med["raw runc"], med["cagent runc"]-med["raw runc"]
  printf "  gvisor: %.2f  (+%.0f ms)\n", med["cagent gvisor"]/med["raw runsc"], med["cagent gvisor"]-med["raw runsc"]
}' "$WORK/out.csv"
for d in /sys/fs/cgroup/*/cagent-bench; do
  [ -d "$d" ] && { rmdir "$d"/* 2>/dev/null || true; rmdir "$d" 2>/dev/null || true; }
done
