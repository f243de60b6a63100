#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind (callgrind), for
# before/after comparisons of cagent builds that the machine's noise would
# hide from a req/s or CPU-time measurement. Counts are repeatable to about
# 2% for the same build (Go's scheduler and GC still vary a little), whatever
# else the machine is doing; req/s moved by 30% between identical runs here.
#
#   bench/proxy/instr.sh CAGENT_BIN...       # N=6000 requests, CONNS=4 by default
#   KEEP=/tmp/x bench/proxy/instr.sh A B     # also keeps /tmp/x.A.callgrind (callgrind_annotate)
#
# Each build in turn runs `cagent proxy` under callgrind (GOMAXPROCS=1, async
# preemption off: callgrind cannot follow Go's preemption signals), gets 400
# warm-up requests, then exactly N absolute-form GETs through the explicit
# listener over CONNS keep-alive connections (benchtool load --mode
# http-count) to benchtool's HTTP upstream on loopback; only those N are
# counted. User space only: the kernel's share (about half the CPU per
# request, mostly the TCP sends) is not in the count, and SHA-256 runs
# valgrind's AVX2 path (~12k instructions per request for the audit hash
# chain) where the real CPU uses SHA-NI. Compare builds, not absolutes.
#
# Needs: go, valgrind. Only loopback, and the target is 127.0.0.1 (allowed
# through ip_ranges), so no name is resolved.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 CAGENT_BIN..." >&2; exit 2; }
command -v valgrind >/dev/null || { echo "missing valgrind (apt-get install -y valgrind)" >&2; exit 1; }
N=${N:-6000}
CONNS=${CONNS:-4}
. bench/lib.sh
bench_workdir instr

go build -o "$W/benchtool" ./bench/proxy/benchtool
bench_upstream 18200
UP=$UP_HTTP PX=127.0.0.1:13328
wait_port $UP
for b in "$@"; do
  b=$(realpath "$b")
  rm -rf "$W/state" "$W/audit.jsonl" "$W"/cg.*
  GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$W/cg.%p" \
    "$b" proxy --config "$W/cagent.yaml" --listen $PX --admin 127.0.0.1:13399 \
    --state-dir "$W/state" --audit-log "$W/audit.jsonl" > "$W/proxy.out" 2> "$W/proxy.log" &
  vp=$!
  PIDS+=($vp)
  wait_port $PX 300 # valgrind starts slowly
  "$W/benchtool" load --mode http-count --requests 400 --conns $CONNS --proxy $PX --target $UP > /dev/null
  callgrind_control --zero $vp > /dev/null 2>&1
  "$W/benchtool" load --mode http-count --requests $N --conns $CONNS --proxy $PX --target $UP > /dev/null
  callgrind_control --dump $vp > /dev/null 2>&1
  # The dump after --zero holds exactly the N requests.
  for _ in $(seq 50); do ls "$W"/cg.$vp.1 > /dev/null 2>&1 && break; sleep 0.1; done
  ir=$(awk '/^summary:/ {print $2}' "$W/cg.$vp.1")
  kill $vp; wait $vp 2>/dev/null || true
  printf '%-50s %8d instructions per request (N=%d)\n' "$b" $(( ir / N )) "$N"
  if [ -n "${KEEP:-}" ]; then cp "$W/cg.$vp.1" "$KEEP.$(basename "$b").callgrind"; fi
done
