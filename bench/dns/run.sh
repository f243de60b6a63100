#!/usr/bin/env bash
# DNS benchmark: dnsperf against `cagent dns`, dnsmasq and unbound in one run,
# all forwarding to the same local upstream (bench/dns/upstream on
# 127.0.0.77:5300), so no query ever reaches the machine's own resolver.
#
#   bench/dns/run.sh            # ~3-4 min in all
#   DUR=10 LAT_DUR=5 LAT_ROUNDS=5 bench/dns/run.sh
#   PIN=0 bench/dns/run.sh      # no CPU pinning (default: servers on CPU 0, dnsperf on CPU 1)
#
# Per peer: cached QPS (100 names, caches warmed), cached p50/p99 latency at
# a fixed rate, RSS after the cached runs, uncached QPS (every name unique),
# uncached p50/p99, peak RSS (VmHWM) and anonymous RSS at the end. Peers:
# cagent (the full binary), dnsonly (the same filter linked alone), dnsmasq,
# unbound. Prints a table and the ratios cagent/dnsmasq and cagent/unbound.
set -euo pipefail

DUR=${DUR:-6}            # seconds of each throughput run
LAT_DUR=${LAT_DUR:-4}    # seconds of each latency run
LAT_QPS=${LAT_QPS:-5000} # fixed query rate of the latency runs
OUTSTANDING=${OUTSTANDING:-64}
LAT_ROUNDS=${LAT_ROUNDS:-3} # latency runs per peer, interleaved across peers, samples pooled
# Servers on one CPU, dnsperf on another, so the load generator and the
# server under test never compete for a core (the machine is shared: other
# processes still do). Set PIN=0 to disable.
PIN=${PIN:-1}
SRV=() CLI=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SRV=(taskset -c "${SERVER_CPU:-0}") CLI=(taskset -c "${CLIENT_CPU:-1}")
fi

cd "$(dirname "$0")/../.."
need=()
for c in dnsperf dnsmasq unbound; do command -v "$c" >/dev/null || need+=("$c"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf dnsmasq unbound >/dev/null
fi

. bench/lib.sh
bench_workdir dnsbench
WORK=$W

UP=127.0.0.77
UP_PORT=5300
go build -o "$WORK/cagent" ./cmd/cagent
go build -o "$WORK/upstream" ./bench/dns/upstream
go build -o "$WORK/dnsonly" ./bench/dns/dnsonly

"$WORK/upstream" -listen "$UP:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)

# cagent dns: real answers (like the peers), no rate limit or distinct-name
# budget (the uncached run asks for hundreds of thousands of names), audit
# events written to a file as in production.
cat >"$WORK/cagent.yaml" <<EOF
dns:
  answer: upstream
  cache_ttl: 300
  rate_limit: {requests_per_minute: 1000000000, burst_size: 1000000}
  tunneling: {distinct_names_per_hour: -1}
domains:
  - domain: "*.bench.test"
EOF
"${SRV[@]}" "$WORK/cagent" dns --config "$WORK/cagent.yaml" --listen 127.0.0.1:5301 --admin 127.0.0.1:9301 \
  --upstream "$UP:$UP_PORT" --state-dir "$WORK/state" 2>"$WORK/cagent.log" &
PIDS+=($!)
CAGENT_PID=$!
# The same filter linked alone (no proxy, control plane, sqlite...): shows
# how much of cagent's RSS is the multi-command binary's own pages.
"${SRV[@]}" "$WORK/dnsonly" --config "$WORK/cagent.yaml" --listen 127.0.0.1:5304 --admin 127.0.0.1:9304 \
  --upstream "$UP:$UP_PORT" --state-dir "$WORK/state-dnsonly" 2>"$WORK/dnsonly.log" &
PIDS+=($!)
DNSONLY_PID=$!

"${SRV[@]}" dnsmasq -k --no-resolv --no-hosts --server="$UP#$UP_PORT" --listen-address=127.0.0.1 --port=5302 \
  --bind-interfaces --cache-size=10000 --dns-forward-max=1000 --pid-file="$WORK/dnsmasq.pid" --user=root \
  --log-facility="$WORK/dnsmasq.log" &
PIDS+=($!)
DNSMASQ_PID=$!

cat >"$WORK/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@5303
  port: 5303
  do-daemonize: no
  username: ""
  chroot: ""
  pidfile: ""
  directory: "$WORK"
  use-syslog: no
  logfile: "$WORK/unbound.log"
  verbosity: 0
  num-threads: 2
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  local-zone: "test." nodefault
  qname-minimisation: no
  prefetch: no
  minimal-responses: yes
forward-zone:
  name: "."
  forward-addr: $UP@$UP_PORT
EOF
"${SRV[@]}" unbound -c "$WORK/unbound.conf" &
PIDS+=($!)
UNBOUND_PID=$!

# Query files: 100 names for the cached runs; unique names per peer for the
# uncached ones (so no peer's cache, nor a previous run's, ever helps).
for i in $(seq 1 100); do echo "c$i.bench.test A"; done >"$WORK/cached.txt"
for peer in cagent dnsonly dnsmasq unbound; do
  awk -v p="$peer" 'BEGIN { for (i = 0; i < 400000; i++) printf "u%d-%s.bench.test A\n", i, p }' >"$WORK/uncached-$peer.txt"
  for ((r = 0; r < LAT_ROUNDS; r++)); do
    awk -v p="$peer" -v r="$r" 'BEGIN { for (i = 0; i < 200000; i++) printf "l%d-%s-%d.bench.test A\n", i, p, r }' >"$WORK/uncached-lat-$peer-$r.txt"
  done
done

# Wait until each server answers.
for port in 5301 5302 5303 5304; do
  for _ in $(seq 50); do
    if echo "c1.bench.test A" | dnsperf -s 127.0.0.1 -p $port -l 1 -t 1 2>/dev/null | grep -q "Queries completed: *1 "; then break; fi
    sleep 0.2
  done
done

qps() { # port file
  "${CLI[@]}" dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$DUR" -c 1 -q "$OUTSTANDING" -t 2 2>&1 | awk '/Queries per second/ { printf "%.0f", $4 }'
}
lat() { # port file: "p50 p99" latency in ms at LAT_QPS
  "${CLI[@]}" dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$LAT_DUR" -c 1 -Q "$LAT_QPS" -t 2 -v 2>/dev/null |
    awk '/^> / { print $NF * 1000 }'
}
pct() { # samples file: "p50 p99"
  sort -n "$1" | awk '{ v[NR] = $1 } END { a = int(NR * 0.5); b = int(NR * 0.99); if (a < 1) a = 1; if (b < 1) b = 1; printf "%.3f %.3f", v[a], v[b] }'
}
# Latency: LAT_ROUNDS rounds, each running every peer once in turn, so a
# burst of load from other processes hits all peers alike; per peer the
# samples of all rounds are pooled.
latall() { # kind (c or u) file-for-peer-function
  for peer in $PEERS; do : >"$WORK/lat-$1-$peer"; done
  for ((r = 0; r < LAT_ROUNDS; r++)); do
    for peer in $PEERS; do lat ${PORT[$peer]} "$($2 $peer $r)" >>"$WORK/lat-$1-$peer"; done
  done
  for peer in $PEERS; do read -r R[$peer.${1}p50] R[$peer.${1}p99] <<<"$(pct "$WORK/lat-$1-$peer")"; done
}
cachedfile() { echo "$WORK/cached.txt"; }
uncachedfile() { echo "$WORK/uncached-lat-$1-$2.txt"; }
mem() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

declare -A R PORT PID
PEERS="cagent dnsonly dnsmasq unbound"
PORT=([cagent]=5301 [dnsonly]=5304 [dnsmasq]=5302 [unbound]=5303)
PID=([cagent]=$CAGENT_PID [dnsonly]=$DNSONLY_PID [dnsmasq]=$DNSMASQ_PID [unbound]=$UNBOUND_PID)
# Phase by phase, peer after peer, so that each column is measured within a
# few seconds for all peers (the machine's load drifts).
for peer in $PEERS; do # warm the caches
  dnsperf -s 127.0.0.1 -p ${PORT[$peer]} -d "$WORK/cached.txt" -l 1 -c 1 -q 10 >/dev/null 2>&1
done
for peer in $PEERS; do R[$peer.cqps]=$(qps ${PORT[$peer]} "$WORK/cached.txt"); done
latall c cachedfile
for peer in $PEERS; do
  R[$peer.crss]=$(mem ${PID[$peer]} VmRSS) R[$peer.canon]=$(mem ${PID[$peer]} RssAnon) R[$peer.cfile]=$(mem ${PID[$peer]} RssFile)
done
for peer in $PEERS; do R[$peer.uqps]=$(qps ${PORT[$peer]} "$WORK/uncached-$peer.txt"); done
latall u uncachedfile
for peer in $PEERS; do R[$peer.rss]=$(mem ${PID[$peer]} VmHWM) R[$peer.anon]=$(mem ${PID[$peer]} RssAnon); done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "DNS benchmark: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); throughput runs ${DUR}s with $OUTSTANDING outstanding; latency ${LAT_ROUNDS} interleaved rounds of ${LAT_DUR}s at $LAT_QPS qps; pinned: ${SRV[*]:-no} / ${CLI[*]:-no}"
F="%-8s %10s %9s %9s %10s %9s %9s %9s %9s %9s %9s %9s\n"
printf "$F" peer "cached" "c p50" "c p99" "uncached" "u p50" "u p99" "RSS" "anon" "file" "peak" "peak"
printf "$F" "" "QPS" "ms" "ms" "QPS" "ms" "ms" "cached" "cached" "cached" "RSS MB" "anon MB"
for peer in $PEERS; do
  printf "$F" $peer "${R[$peer.cqps]}" "${R[$peer.cp50]}" "${R[$peer.cp99]}" \
    "${R[$peer.uqps]}" "${R[$peer.up50]}" "${R[$peer.up99]}" "${R[$peer.crss]}" "${R[$peer.canon]}" "${R[$peer.cfile]}" \
    "${R[$peer.rss]}" "${R[$peer.anon]}"
done
echo
for peer in dnsmasq unbound; do
  printf "cagent/%-8s cached QPS %s  uncached QPS %s  cached p99 %s  peak RSS %s\n" $peer \
    "$(ratio "${R[cagent.cqps]}" "${R[$peer.cqps]}")" "$(ratio "${R[cagent.uqps]}" "${R[$peer.uqps]}")" \
    "$(ratio "${R[cagent.cp99]}" "${R[$peer.cp99]}")" "$(ratio "${R[cagent.rss]}" "${R[$peer.rss]}")"
done
echo
echo "targets (cagent dns): cached QPS >= dnsmasq's: $(awk -v a="${R[cagent.cqps]}" -v b="${R[dnsmasq.cqps]}" 'BEGIN { print (a >= b) ? "met" : "NOT met" }');" \
  "cached p99 <= 1 ms: $(awk -v a="${R[cagent.cp99]}" 'BEGIN { print (a <= 1) ? "met" : "NOT met" }');" \
  "RSS <= 20 MB: cached phase $(awk -v a="${R[cagent.crss]}" 'BEGIN { print (a <= 20) ? "met" : "NOT met" }')," \
  "peak $(awk -v a="${R[cagent.rss]}" 'BEGIN { print (a <= 20) ? "met" : "NOT met" }')"
