#!/usr/bin/env bash
# Sandbox start-to-exit benchmark: `cagent run -- /bin/true` against raw
# `runc run` and `runsc run` of an equivalent bundle (bench/sandbox/mkbundle:
# same rootfs, seccomp, capabilities and cgroup limits, but no Cagent
# network), all in one run, interleaved. Needs root, runc, runsc.
#
#   sudo bench/sandbox/run.sh            # RUNS=30 per command
#   RUNS=10 sudo bench/sandbox/run.sh
#
# Prints the medians and p90s, then the ratios
# cagent/raw for each runtime. Targets (issue 4): at most +50% over the raw
# runtime at the median, and at most 300 ms in total with runc.
set -euo pipefail
RUNS=${RUNS:-30}
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
need=()
for c in runc runsc bc; do command -v "$c" >/dev/null || need+=("$c"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc runsc bc >/dev/null
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
NAMES=("raw runc" "cagent runc" "raw runsc" "cagent gvisor")
CMDS=(
  "runc --root $WORK/runc run --bundle $WORK/b-runc bench-runc"
  "$CAGENT --runtime runc -- /bin/true"
  "runsc --root $WORK/runsc --network=none --oci-seccomp run --bundle $WORK/b-runsc bench-runsc"
  "$CAGENT --runtime gvisor -- /bin/true"
)
# Interleaved: round i runs each command once, so load from other processes
# on the machine hits every command alike (ratios stay meaningful on a busy
# machine). 3 warm-up rounds first (CA creation, page cache).
for ((i = -3; i < RUNS; i++)); do
  for j in "${!CMDS[@]}"; do
    t0=$(date +%s%N)
    ${CMDS[$j]} >/dev/null 2>&1 </dev/null || { echo "failed: ${CMDS[$j]}" >&2; exit 1; }
    t1=$(date +%s%N)
    ((i >= 0)) && echo "$j $(((t1 - t0) / 1000))" >>"$WORK/times"
  done
done

median() { awk -v j="$1" '$1 == j { print $2 }' "$WORK/times" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
p90() { awk -v j="$1" '$1 == j { print $2 }' "$WORK/times" | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.9); if (i < 1) i = 1; print a[i] }'; }
declare -a MED
printf "%-14s %10s %10s   (%d interleaved runs each)\n" "command" "median ms" "p90 ms" "$RUNS"
for j in "${!CMDS[@]}"; do
  MED[$j]=$(median "$j")
  printf "%-14s %10.1f %10.1f\n" "${NAMES[$j]}" "$(echo "${MED[$j]} / 1000" | bc -l)" "$(echo "$(p90 "$j") / 1000" | bc -l)"
done
echo
printf "cagent runc   / raw runc : %.2f  (+%.1f ms)\n" "$(echo "${MED[1]} / ${MED[0]}" | bc -l)" "$(echo "(${MED[1]} - ${MED[0]}) / 1000" | bc -l)"
printf "cagent gvisor / raw runsc: %.2f  (+%.1f ms)\n" "$(echo "${MED[3]} / ${MED[2]}" | bc -l)" "$(echo "(${MED[3]} - ${MED[2]}) / 1000" | bc -l)"
for d in /sys/fs/cgroup/*/cagent-bench; do
  [ -d "$d" ] && { rmdir "$d"/* 2>/dev/null || true; rmdir "$d" 2>/dev/null || true; }
done
