#!/usr/bin/env bash
# A/B comparison of two cagent builds on the HTTP keep-alive load of run.sh:
# both proxies run side by side and wrk alternates between them (and the
# direct path), so that both see the same machine load. Prints req/s and the
# proxy's CPU time per request, per round and as medians.
#
#   bench/proxy/ab.sh OLD_CAGENT NEW_CAGENT     # ROUNDS=6 DURATION=3 CONNS=32 PIN=1
#
# PIN=1 (the default, as in run.sh) runs both proxies on CPU 0 and wrk and
# the upstream on CPU 1; PIN=0 lets the scheduler place everything.
#
# Needs: go, wrk. Like run.sh it only talks to loopback: the target is
# 127.0.0.1 (allowed through ip_ranges), so no name is ever resolved.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# = 2 ] || { echo "usage: $0 OLD_CAGENT NEW_CAGENT" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
ROUNDS=${ROUNDS:-6}
DUR=${DURATION:-3}
CONNS=${CONNS:-32}
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then ON_PROXY="taskset -c 0" ON_LOAD="taskset -c 1"; else ON_PROXY="" ON_LOAD=""; fi
command -v wrk >/dev/null || { echo "missing wrk" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" || true

. bench/lib.sh
bench_workdir ab

go build -o "$W/benchtool" ./bench/proxy/benchtool
bench_upstream 18100
start() { # binary port name
  mkdir -p "$W/$3"
  $ON_PROXY "$1" proxy --config "$W/cagent.yaml" --listen 127.0.0.1:$2 --admin 127.0.0.1:$(( $2 + 100 )) \
    --state-dir "$W/$3/state" --audit-log "$W/$3/audit.jsonl" > "$W/$3/out" 2> "$W/$3/log" &
  PIDS+=($!)
}
# Not in a $(...) subshell: PIDS must reach cleanup.
start "$A" 13228 a; PA=${PIDS[-1]}
start "$B" 13229 b; PB=${PIDS[-1]}
for a in $UP_HTTP 127.0.0.1:13228 127.0.0.1:13229; do wait_port $a; done
sleep 1

cat > "$W/abs.lua" <<LUA
wrk.path = "http://$UP_HTTP/"
wrk.headers["Host"] = "$UP_HTTP"
LUA
rps() { awk '/Requests\/sec/ {print $2}'; }
run() { # pid port -> "rps us_per_req"
  local t0 out r
  t0=$(ticks $1)
  out=$($ON_LOAD wrk -t2 -c$CONNS -d${DUR}s -s "$W/abs.lua" "http://127.0.0.1:$2/")
  r=$(rps <<<"$out")
  echo "$r $(per $(( $(ticks $1) - t0 )) "$r" $DUR)"
}
# warm-up: connections, pools, heap
run $PA 13228 >/dev/null; run $PB 13229 >/dev/null
printf '%-6s %10s %10s %8s %10s %8s\n' round direct A_req/s A_us/req B_req/s B_us/req
: > "$W/rows"
for i in $(seq "$ROUNDS"); do
  d=$($ON_LOAD wrk -t2 -c$CONNS -d${DUR}s "http://$UP_HTTP/" | rps)
  if (( i % 2 )); then a=$(run $PA 13228); b=$(run $PB 13229); else b=$(run $PB 13229); a=$(run $PA 13228); fi
  printf '%-6s %10s %10s %8s %10s %8s\n' "$i" "$d" $a $b | tee -a "$W/rows"
done
med() { sort -n | awk '{v[NR]=$1} END { if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
printf '%-6s %10s %10s %8s %10s %8s\n' median "$(awk '{print $2}' "$W/rows" | med)" \
  "$(awk '{print $3}' "$W/rows" | med)" "$(awk '{print $4}' "$W/rows" | med)" \
  "$(awk '{print $5}' "$W/rows" | med)" "$(awk '{print $6}' "$W/rows" | med)"
