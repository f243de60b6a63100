#!/usr/bin/env bash
# Interleaved A/B runs of `cagent dns` variants (binaries and environments)
# beside dnsmasq, for before/after comparisons on a shared, loaded machine:
# every round runs each peer in turn, so a burst of load hits all alike, and
# besides latency it reports CPU time per query (utime+stime of the server
# over the queries it answered), which is far less noisy than QPS.
#
#   bench/dns/ab.sh 'base:/tmp/cagent-old' 'new:/tmp/cagent-new' 'gogc50:/tmp/cagent-new:GOGC=50'
#
# Each argument is NAME:BINARY[:ENV[:FLAGS]] (ENV space-separated VAR=value,
# FLAGS extra `cagent dns` flags, e.g. --audit-log=/dev/null).
# Run it under `flock /tmp/cagent-bench.lock`. Phases: cached latency
# (ROUNDS rounds of LAT_DUR s at LAT_QPS, 100 names, pooled p50/p99/p99.9),
# cached throughput (DUR s, 64 outstanding), RSS, uncached flood (DUR s,
# unique names), peak RSS (VmHWM) and anonymous RSS, and GC cycles (from
# GODEBUG=gctrace=1, which every variant gets unless its ENV sets GODEBUG).
# FLOOD_FIRST=1: a cached throughput run per peer before the latency rounds.
# The servers are pinned to SERVER_CPU (0), dnsperf to CLIENT_CPU (1).
set -euo pipefail

DUR=${DUR:-5}
LAT_DUR=${LAT_DUR:-3}
LAT_QPS=${LAT_QPS:-5000}
ROUNDS=${ROUNDS:-3}
DNSMASQ=${DNSMASQ:-1}
SRV=(taskset -c "${SERVER_CPU:-0}") CLI=(taskset -c "${CLIENT_CPU:-1}")

cd "$(dirname "$0")/../.."
. bench/lib.sh
bench_workdir dnsab
WORK=$W

go build -o "$WORK/upstream" ./bench/dns/upstream
UP=127.0.0.77:5300
"$WORK/upstream" -listen "$UP" 2>/dev/null &
PIDS+=($!)
cat >"$WORK/cagent.yaml" <<EOF
dns:
  answer: upstream
  cache_ttl: 300
  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}
  tunneling: {distinct_names_per_hour: -1}
domains:
  - domain: "*.bench.test"
EOF

declare -A PORT PID
PEERS=()
port=5400
for spec in "$@"; do
  IFS=: read -r name bin envs flags <<<"$spec"
  port=$((port + 1))
  # shellcheck disable=SC2086
  env GODEBUG=gctrace=1 $envs "${SRV[@]}" "$bin" dns --config "$WORK/cagent.yaml" --listen 127.0.0.1:$port \
    --admin 127.0.0.1:$((port + 100)) --upstream "$UP" --state-dir "$WORK/state-$name" $flags 2>"$WORK/$name.log" &
  PIDS+=($!)
  PEERS+=("$name") PORT[$name]=$port PID[$name]=$!
done
if [ "$DNSMASQ" = 1 ]; then
  "${SRV[@]}" dnsmasq -k --no-resolv --no-hosts --server="${UP/:/#}" --listen-address=127.0.0.1 --port=5399 \
    --bind-interfaces --cache-size=10000 --dns-forward-max=1000 --pid-file="$WORK/dnsmasq.pid" --user=root \
    --log-facility="$WORK/dnsmasq.log" &
  PIDS+=($!)
  PEERS+=(dnsmasq) PORT[dnsmasq]=5399 PID[dnsmasq]=$!
fi

for i in $(seq 1 100); do echo "c$i.bench.test A"; done >"$WORK/cached.txt"
for peer in "${PEERS[@]}"; do
  awk -v p="$peer" 'BEGIN { for (i = 0; i < 300000; i++) printf "u%d-%s.bench.test A\n", i, p }' >"$WORK/u-$peer.txt"
  for _ in $(seq 50); do
    if echo "c1.bench.test A" | dnsperf -s 127.0.0.1 -p "${PORT[$peer]}" -l 1 -t 1 2>/dev/null | grep -q "Queries completed: *1 "; then break; fi
    sleep 0.2
  done
  dnsperf -s 127.0.0.1 -p "${PORT[$peer]}" -d "$WORK/cached.txt" -l 1 -c 1 -q 10 >/dev/null 2>&1
done

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # clock ticks
mem() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
gcs() { grep -c '^gc ' "$WORK/$1.log" 2>/dev/null || true; }
declare -A R
run() { # peer kind(lat|qps) file -> appends samples for lat; sets R[peer.kind.q] and CPU ticks
  local peer=$1 out c0 c1 q
  c0=$(cpu "${PID[$peer]}")
  if [ "$2" = lat ]; then
    out=$("${CLI[@]}" dnsperf -s 127.0.0.1 -p "${PORT[$peer]}" -d "$3" -l "$LAT_DUR" -c 1 -Q "$LAT_QPS" -t 2 -v 2>/dev/null)
    awk '/^> / { print $NF * 1000 }' <<<"$out" >>"$WORK/lat-$peer"
    awk '/^> / { print $NF * 1000 }' <<<"$out" | sort -n | awk '{ v[NR] = $1 } END { printf " %.2f", v[int(NR * 0.99)] }' >>"$WORK/rp99-$peer"
  else
    out=$("${CLI[@]}" dnsperf -s 127.0.0.1 -p "${PORT[$peer]}" -d "$3" -l "$DUR" -c 1 -q 64 -t 2 2>&1)
    R[$peer.$4]=$(awk '/Queries per second/ { printf "%.0f", $4 }' <<<"$out")
  fi
  c1=$(cpu "${PID[$peer]}")
  q=$(awk '/Queries completed/ { print $3 }' <<<"$out")
  R[$peer.$4.ticks]=$((${R[$peer.$4.ticks]:-0} + c1 - c0)) R[$peer.$4.n]=$((${R[$peer.$4.n]:-0} + q))
}
hz=$(getconf CLK_TCK)
us() { awk -v t="${1:-0}" -v n="$2" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }'; }

# FLOOD_FIRST=1 floods each peer with cached queries before the latency
# rounds, in the order bench/dns/run.sh uses (its throughput phase comes
# first), so a variant's tail after a flood can be compared too.
if [ "${FLOOD_FIRST:-0}" = 1 ]; then
  for peer in "${PEERS[@]}"; do run "$peer" qps "$WORK/cached.txt" flood; done
fi
for peer in "${PEERS[@]}"; do : >"$WORK/lat-$peer"; : >"$WORK/rp99-$peer"; R[$peer.gc0]=$(gcs "$peer"); done
for ((r = 0; r < ROUNDS; r++)); do
  for peer in "${PEERS[@]}"; do run "$peer" lat "$WORK/cached.txt" clat; done
done
for peer in "${PEERS[@]}"; do
  read -r R[$peer.p50] R[$peer.p99] R[$peer.p999] < <(sort -n "$WORK/lat-$peer" |
    awk '{ v[NR] = $1 } END { printf "%.3f %.3f %.3f\n", v[int(NR * 0.5)], v[int(NR * 0.99)], v[int(NR * 0.999)] }')
  R[$peer.gc1]=$(gcs "$peer")
done
for peer in "${PEERS[@]}"; do run "$peer" qps "$WORK/cached.txt" cqps; done
for peer in "${PEERS[@]}"; do R[$peer.crss]=$(mem "${PID[$peer]}" VmRSS) R[$peer.canon]=$(mem "${PID[$peer]}" RssAnon); done
for peer in "${PEERS[@]}"; do run "$peer" qps "$WORK/u-$peer.txt" uqps; done
for peer in "${PEERS[@]}"; do R[$peer.hwm]=$(mem "${PID[$peer]}" VmHWM) R[$peer.anon]=$(mem "${PID[$peer]}" RssAnon) R[$peer.rss]=$(mem "${PID[$peer]}" VmRSS); done

echo "ab: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds x ${LAT_DUR}s at $LAT_QPS qps, throughput ${DUR}s"
F="%-10s %7s %7s %7s %6s %6s %8s %7s %8s %7s %6s %6s %6s %6s %6s\n"
printf "$F" peer c-p50 c-p99 c-p99.9 GCs us/q cQPS us/q uQPS us/q RSS-c anon-c RSS-u anon-u peak
for peer in "${PEERS[@]}"; do
  printf "$F" "$peer" "${R[$peer.p50]}" "${R[$peer.p99]}" "${R[$peer.p999]}" "$((${R[$peer.gc1]:-0} - ${R[$peer.gc0]:-0}))" \
    "$(us "${R[$peer.clat.ticks]:-0}" "${R[$peer.clat.n]:-0}")" "${R[$peer.cqps]}" "$(us "${R[$peer.cqps.ticks]}" "${R[$peer.cqps.n]}")" \
    "${R[$peer.uqps]}" "$(us "${R[$peer.uqps.ticks]}" "${R[$peer.uqps.n]}")" \
    "${R[$peer.crss]}" "${R[$peer.canon]}" "${R[$peer.rss]}" "${R[$peer.anon]}" "${R[$peer.hwm]}"
done
for peer in "${PEERS[@]}"; do echo "per-round cached p99 $peer:$(cat "$WORK/rp99-$peer")"; done
if [ -n "${KEEP_LOGS:-}" ]; then cp "$WORK"/*.log "$KEEP_LOGS"/; fi
