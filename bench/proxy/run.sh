#!/usr/bin/env bash
# Proxy benchmark: the same load, in one run, direct and through cagent,
# squid and tinyproxy, all on loopback. Prints a table with ratios.
#
# haproxy is the ceiling: the thinnest relay there is, doing strictly less
# than any forward proxy. For HTTP keep-alive it is a reverse proxy (mode
# http) with a fixed backend, the upstream itself: no target to parse, no
# policy, no DNS, no logging, idle upstream connections reused (http-reuse
# always). For bulk it is a TCP relay (mode tcp, spliced) to the raw
# upstream: no CONNECT handshake at all. Whatever fraction of direct it
# reaches is about as much as any proxy can reach on this machine.
#
#   sudo bench/proxy/run.sh            # DURATION=5 by default (seconds per test)
#   CAGENT_BIN=/path/to/old/cagent bench/proxy/run.sh   # measure another build
#   ROUNDS=3 (interleaved rounds of the keep-alive and 4-tunnel bulk tests)
#   PIN=1    (the default on 2+ cores; PIN=0 shares all cores)
#   PACE=312.5 (MB/s per tunnel of the paced bulk test: 4 tunnels, 10 Gbit/s)
#
# Bulk is measured twice. Unpaced, the upstream sends as fast as loopback
# takes it, so the CPUs are the only limit and the ratio to direct is the
# price of a relay's CPU work on this machine (bench/relay/run.sh measures
# the same ceiling for bare relays). Paced, the upstream's TCP paces each
# connection to PACE MB/s (SO_MAX_PACING_RATE), as a real link would: the
# ratio then says whether the proxy keeps up with that link.
#
# Pinning, as bench/dns/run.sh does: every proxy runs on CPU 0, and the
# load generators and the upstream servers on CPU 1. The upstream stands
# for the internet, whose servers never use the proxy's CPU; unpinned, the
# upstream and wrk take CPU from the proxy under test and the ratio to
# direct measures the machine's core count as much as the proxy. Pinned, a
# proxy that costs less CPU per request than the client and upstream
# together keeps up with direct; one that costs more is the bottleneck, and
# its ratio to direct shows by how much. Each proxy gets one core: cagent's
# Go runtime sees one CPU (GOMAXPROCS=1), haproxy runs one thread, squid and
# tinyproxy are single-threaded or forked on that core.
#
# The keep-alive and 4-tunnel bulk tests run ROUNDS times, each round going
# through direct and every proxy in turn, so that all see the same machine
# load; the table gives each column's median, and the ratios are medians of
# the per-round ratios.
#
# Needs: go, squid, tinyproxy, wrk, haproxy (installed with apt-get if
# missing), root (for the mount namespaces that give squid and tinyproxy a private
# /etc/hosts and /etc/resolv.conf). No component ever asks the machine's
# resolver: targets are 127.0.0.1 or *.test names answered by benchtool's own
# DNS server on 127.0.0.1, and the peers' resolv.conf points at loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PACE=${PACE:-312.5}
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  ON_PROXY="taskset -c 0" ON_LOAD="taskset -c 1" HAP_THREADS=1 MODE="proxies on CPU 0, load and upstream on CPU 1"
else
  PIN=0 ON_PROXY="" ON_LOAD="" HAP_THREADS=$(nproc) MODE="unpinned, all share $(nproc) cores"
fi
CONNS=${CONNS:-32}
HOLD=${HOLD:-1000}
[ "$(id -u)" = 0 ] || { echo "run as root (mount namespaces for the peers)" >&2; exit 1; }
need=()
for c in squid tinyproxy wrk haproxy; do command -v $c >/dev/null || need+=($c); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v unshare >/dev/null || { echo "missing unshare" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" || true

. bench/lib.sh
bench_workdir bench
chmod 755 "$W"

echo "building..." >&2
if [ -n "${CAGENT_BIN:-}" ]; then cp "$CAGENT_BIN" "$W/cagent"; else CGO_ENABLED=0 go build -o "$W/cagent" ./cmd/cagent; fi
go build -o "$W/benchtool" ./bench/proxy/benchtool

UP_HTTP=127.0.0.1:18080 UP_TLS=127.0.0.1:18443 UP_RAW=127.0.0.1:18099 UP_DNS=127.0.0.1:18053
P_CAGENT=127.0.0.1:13128 P_SQUID=127.0.0.1:13129 P_TINY=127.0.0.1:13130
P_HAP_HTTP=127.0.0.1:13131 P_HAP_TCP=127.0.0.1:13132

$ON_LOAD "$W/benchtool" serve --dir "$W" --http $UP_HTTP --tls $UP_TLS --raw $UP_RAW --dns $UP_DNS > "$W/serve.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q ready "$W/serve.out" && break; sleep 0.1; done

# Private name service for the peers.
printf '127.0.0.1 localhost bench.test raw.test\n' > "$W/hosts"
printf 'nameserver 127.0.0.1\n' > "$W/resolv.conf"
chmod 644 "$W/hosts" "$W/resolv.conf"
private_ns() { exec $ON_PROXY unshare -m sh -c "mount --bind $W/hosts /etc/hosts && mount --bind $W/resolv.conf /etc/resolv.conf && exec \"\$@\"" sh "$@"; }

cat > "$W/cagent.yaml" <<YAML
dns: {upstream: ["$UP_DNS"]}
egress_limits: {default: 1000GiB}
proxy: {max_tunnels: 8192, ca_bundle: "$W/ca.pem"}
domains:
  - domain: bench.test
    ports: [18443]
    allow_private: true
    tls_intercept: true
  - domain: raw.test
    ports: [18099]
    allow_private: true
ip_ranges:
  - {cidr: 127.0.0.1/32}
YAML
$ON_PROXY "$W/cagent" proxy --config "$W/cagent.yaml" --listen $P_CAGENT --admin 127.0.0.1:13199 \
  --state-dir "$W/state" --audit-log "$W/audit.jsonl" > "$W/cagent.out" 2> "$W/cagent.log" &
CAGENT_PID=$!; PIDS+=($CAGENT_PID)

mkdir -p "$W/squid" && chown proxy "$W/squid"
cat > "$W/squid.conf" <<CONF
http_port $P_SQUID
http_access allow all
cache deny all
access_log none
cache_log $W/squid/cache.log
pid_filename $W/squid/squid.pid
coredump_dir $W/squid
dns_nameservers 127.0.0.1
hosts_file $W/hosts
max_filedescriptors 65536
cache_effective_user proxy
shutdown_lifetime 0 seconds
CONF
private_ns squid -N -f "$W/squid.conf" > "$W/squid.out" 2>&1 &
SQUID_PID=$!; PIDS+=($SQUID_PID)

cat > "$W/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port ${P_TINY##*:}
Listen 127.0.0.1
Timeout 600
MaxClients 4096
LogLevel Critical
Allow 127.0.0.1
DisableViaHeader Yes
CONF
private_ns tinyproxy -d -c "$W/tinyproxy.conf" > "$W/tinyproxy.out" 2>&1 &
TINY_PID=$!; PIDS+=($TINY_PID)

# nbthread: as many threads as the cores it may use, like cagent's
# GOMAXPROCS (1 pinned, 2 unpinned; unpinned, one thread measured about the
# same: keep-alive within the noise, bulk 5-10% less). No `log` line: haproxy logs nothing. Servers are IP
# addresses, so haproxy resolves no name. Splicing is forced: with
# splice-auto this build (2.6) never spliced the bulk download (strace: only
# recvfrom/sendto) and relayed half as much; cagent splices too. 1 MiB
# pipes, as Go's splice uses for cagent (haproxy's default of 64 KiB relayed
# 10-20% less).
cat > "$W/haproxy.cfg" <<CONF
global
  nbthread $HAP_THREADS
  tune.pipesize 1048576
defaults
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend http_in
  mode http
  bind $P_HAP_HTTP
  default_backend upstream_http
backend upstream_http
  mode http
  http-reuse always
  server up $UP_HTTP
listen raw_relay
  mode tcp
  bind $P_HAP_TCP
  option splice-request
  option splice-response
  server raw $UP_RAW
CONF
$ON_PROXY haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.out" 2>&1 &
HAP_PID=$!; PIDS+=($HAP_PID)

for a in $UP_HTTP $UP_TLS $UP_RAW $P_CAGENT $P_SQUID $P_TINY $P_HAP_HTTP $P_HAP_TCP; do wait_port $a; done
sleep 1
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$1/status; }
RSS_IDLE_CAGENT=$(rss $CAGENT_PID) RSS_IDLE_SQUID=$(rss $SQUID_PID) RSS_IDLE_TINY=$(rss $TINY_PID) RSS_IDLE_HAP=$(rss $HAP_PID)

"$W/cagent" ca export --state-dir "$W/state" > "$W/roots.pem"
cat "$W/ca.pem" >> "$W/roots.pem"

# --- HTTP keep-alive req/s and latency (wrk) ---
cat > "$W/abs.lua" <<LUA
wrk.path = "http://$UP_HTTP/"
wrk.headers["Host"] = "$UP_HTTP"
LUA
f() { awk -v i="$2" '{print $i}' <<<"$1"; }
# wrk's latency ("850.00us", "1.20ms", "1.01s") in ms.
ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms$/,"",v); else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}' <<<"$1"; }
wrk_run() { # url [script] -> "req/s p50_ms p99_ms"
  local out
  if [ -n "${2:-}" ]; then out=$($ON_LOAD wrk -t2 -c$CONNS -d${DUR}s --latency -s "$2" "$1"); else out=$($ON_LOAD wrk -t2 -c$CONNS -d${DUR}s --latency "$1"); fi
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(ms "$(awk '$1=="50%" {print $2}' <<<"$out")") $(ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
}
med() { sort -g | awk '{v[NR]=$1} END { if (NR == 0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }
# column FILE N: the median of field N over the rounds in FILE.
column() { awk -v i="$2" '{print $i}' "$1" | med; }
# rmed A B: the median over rounds of A's first field divided by B's.
rmed() { awk 'NR == FNR { a[FNR] = $1; next } a[FNR]+0 > 0 && $1+0 > 0 { print a[FNR]/$1 }' "$1" "$2" | med | awk '{ if ($1 == "-") print "-"; else printf "%.2f", $1 }'; }
pid_of() { case $1 in cagent) echo $CAGENT_PID;; squid) echo $SQUID_PID;; tinyproxy) echo $TINY_PID;; haproxy) echo $HAP_PID;; esac; }
ka_port() { case $1 in cagent) echo $P_CAGENT;; squid) echo $P_SQUID;; tinyproxy) echo $P_TINY;; haproxy) echo $P_HAP_HTTP;; esac; }
PROXIES="cagent squid tinyproxy haproxy"
echo "HTTP keep-alive (wrk -c$CONNS, $ROUNDS rounds of ${DUR}s)..." >&2
# Same client (wrk -t2 -c$CONNS) for every column, and the proxy process's
# CPU us per request. haproxy gets the same absolute-form requests (it
# forwards them unchanged; the upstream serves them like origin-form).
for i in $(seq "$ROUNDS"); do
  wrk_run "http://$UP_HTTP/" >> "$W/ka.direct"
  for n in $PROXIES; do
    pid=$(pid_of $n); t0=$(ticks $pid)
    r=$(wrk_run "http://$(ka_port $n)/" "$W/abs.lua")
    echo "$r $(per $(( $(ticks $pid) - t0 )) "$(f "$r" 1)" $DUR)" >> "$W/ka.$n"
  done
done

bt() { $ON_LOAD "$W/benchtool" load "$@"; }
kv() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# bulk_rounds PREFIX [--rate MBPS]: ROUNDS interleaved 4-tunnel downloads,
# direct and through every proxy, into $W/PREFIX.NAME ("MB/s CPU-us-per-MB").
# haproxy: a plain TCP connection to the relay, which connects to $UP_RAW (no CONNECT).
bulk_rounds() {
  local pre=$1 i n pid t0 m; shift
  for i in $(seq "$ROUNDS"); do
    bt --mode connect-down --conns 4 "$@" --duration ${DUR}s --target $UP_RAW | kv mbps >> "$W/$pre.direct"
    for n in $PROXIES; do
      pid=$(pid_of $n); t0=$(ticks $pid)
      if [ $n = haproxy ]; then m=$(bt --mode connect-down --conns 4 "$@" --duration ${DUR}s --target $P_HAP_TCP | kv mbps)
      else m=$(bt --mode connect-down --conns 4 "$@" --duration ${DUR}s --target $UP_RAW --proxy $(ka_port $n) | kv mbps); fi
      echo "$m $(per $(( $(ticks $pid) - t0 )) "$m" $DUR)" >> "$W/$pre.$n"
    done
  done
}
echo "CONNECT bulk download (4 tunnels, $ROUNDS rounds of ${DUR}s)..." >&2
bulk_rounds bulk
echo "CONNECT bulk download paced to a link of 4 x $PACE MB/s ($ROUNDS rounds of ${DUR}s)..." >&2
bulk_rounds bulkp --rate "$PACE"
echo "CONNECT bulk download (1 tunnel, ${DUR}s)..." >&2
C1_DIRECT=$(bt --mode connect-down --conns 1 --duration ${DUR}s --target $UP_RAW | kv mbps)
C1_CAGENT=$(bt --mode connect-down --conns 1 --duration ${DUR}s --target $UP_RAW --proxy $P_CAGENT | kv mbps)
C1_SQUID=$(bt --mode connect-down --conns 1 --duration ${DUR}s --target $UP_RAW --proxy $P_SQUID | kv mbps)
C1_TINY=$(bt --mode connect-down --conns 1 --duration ${DUR}s --target $UP_RAW --proxy $P_TINY | kv mbps)
C1_HAP=$(bt --mode connect-down --conns 1 --duration ${DUR}s --target $P_HAP_TCP | kv mbps)

echo "CONNECT setup by name (${DUR}s)..." >&2
O_DIRECT=$(bt --mode connect-open --duration ${DUR}s --target $UP_RAW)
O_CAGENT=$(bt --mode connect-open --duration ${DUR}s --target raw.test:18099 --proxy $P_CAGENT)
O_SQUID=$(bt --mode connect-open --duration ${DUR}s --target raw.test:18099 --proxy $P_SQUID)
O_TINY=$(bt --mode connect-open --duration ${DUR}s --target raw.test:18099 --proxy $P_TINY)

echo "CONNECT round-trip latency (1 tunnel, ${DUR}s)..." >&2
R_DIRECT=$(bt --mode connect-rtt --duration ${DUR}s --target $UP_HTTP)
R_CAGENT=$(bt --mode connect-rtt --duration ${DUR}s --target $UP_HTTP --proxy $P_CAGENT)
R_SQUID=$(bt --mode connect-rtt --duration ${DUR}s --target $UP_HTTP --proxy $P_SQUID)
R_TINY=$(bt --mode connect-rtt --duration ${DUR}s --target $UP_HTTP --proxy $P_TINY)

echo "HTTPS keep-alive, tunnelled and intercepted (${CONNS} conns, ${DUR}s)..." >&2
S_DIRECT=$(bt --mode https --conns $CONNS --duration ${DUR}s --target $UP_TLS --ca "$W/roots.pem")
S_CAGENT=$(bt --mode https --conns $CONNS --duration ${DUR}s --target $UP_TLS --ca "$W/roots.pem" --proxy $P_CAGENT)
S_SQUID=$(bt --mode https --conns $CONNS --duration ${DUR}s --target $UP_TLS --ca "$W/roots.pem" --proxy $P_SQUID)
S_TINY=$(bt --mode https --conns $CONNS --duration ${DUR}s --target $UP_TLS --ca "$W/roots.pem" --proxy $P_TINY)
I_CAGENT=$(bt --mode https --conns $CONNS --duration ${DUR}s --target bench.test:18443 --ca "$W/roots.pem" --proxy $P_CAGENT)
I_RTT_DIRECT=$(bt --mode https --conns 1 --duration ${DUR}s --target $UP_TLS --ca "$W/roots.pem")
I_RTT_CAGENT=$(bt --mode https --conns 1 --duration ${DUR}s --target bench.test:18443 --ca "$W/roots.pem" --proxy $P_CAGENT)

echo "RSS with $HOLD open tunnels..." >&2
hold_rss() { # proxy pid
  mkfifo "$W/fifo"
  $ON_LOAD "$W/benchtool" load --mode hold --conns $HOLD --target $UP_RAW --proxy "$1" < "$W/fifo" > "$W/hold.out" 2>&1 &
  local hp=$!
  exec 9>"$W/fifo"
  for _ in $(seq 300); do grep -q holding "$W/hold.out" 2>/dev/null && break; grep -q benchtool: "$W/hold.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  if grep -q holding "$W/hold.out"; then rss "$2"; else echo "n/a($(head -c 80 "$W/hold.out"))"; fi
  exec 9>&-
  wait $hp 2>/dev/null || true
  rm -f "$W/fifo"
}
T_CAGENT=$(hold_rss $P_CAGENT $CAGENT_PID)
T_SQUID=$(hold_rss $P_SQUID $SQUID_PID)
T_TINY=$(hold_rss $P_TINY $TINY_PID)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 == 0 || b+0 == 0) print "-"; else printf "%.2f", a/b }'; }

echo
echo "== Proxy benchmark $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($MODE), ${DUR}s per test, $ROUNDS rounds, load average $(cut -d' ' -f1-3 /proc/loadavg) =="
printf '%-34s %12s %12s %12s %12s %12s   %s\n' "" direct cagent squid tinyproxy "haproxy*" "cagent/direct cagent/squid cagent/tinyproxy haproxy/direct"
row() { printf '%-34s %12s %12s %12s %12s %12s   %s %s %s %s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$(ratio "$3" "$2")" "$(ratio "$3" "$4")" "$(ratio "$3" "$5")" "$(ratio "$6" "$2")"; }
col() { printf '%-34s %12s %12s %12s %12s %12s\n' "$@"; }
# rows measured in rounds: medians per column, medians of per-round ratios
rrow() { # label prefix
  printf '%-34s %12s %12s %12s %12s %12s   %s %s %s %s\n' "$1" "$(column "$W/$2.direct" 1)" "$(column "$W/$2.cagent" 1)" \
    "$(column "$W/$2.squid" 1)" "$(column "$W/$2.tinyproxy" 1)" "$(column "$W/$2.haproxy" 1)" \
    "$(rmed "$W/$2.cagent" "$W/$2.direct")" "$(rmed "$W/$2.cagent" "$W/$2.squid")" "$(rmed "$W/$2.cagent" "$W/$2.tinyproxy")" "$(rmed "$W/$2.haproxy" "$W/$2.direct")"
}
lat() { echo "$(column "$1" 2)/$(column "$1" 3)"; }
rrow "HTTP keep-alive req/s" ka
col "HTTP keep-alive p50 / p99 ms" "$(lat "$W/ka.direct")" "$(lat "$W/ka.cagent")" "$(lat "$W/ka.squid")" "$(lat "$W/ka.tinyproxy")" "$(lat "$W/ka.haproxy")"
col "  proxy CPU us per request" "-" "$(column "$W/ka.cagent" 4)" "$(column "$W/ka.squid" 4)" "$(column "$W/ka.tinyproxy" 4)" "$(column "$W/ka.haproxy" 4)"
printf '%-34s %12s\n' "  cagent/direct per round" "$(paste -d' ' "$W/ka.cagent" "$W/ka.direct" | awk '{printf "%.2f ", $1/$5}')"
rrow "CONNECT bulk MB/s (4 tunnels)" bulk
col "  proxy CPU us per MB" "-" "$(column "$W/bulk.cagent" 2)" "$(column "$W/bulk.squid" 2)" "$(column "$W/bulk.tinyproxy" 2)" "$(column "$W/bulk.haproxy" 2)"
printf '%-34s %12s\n' "  cagent/direct per round" "$(paste -d' ' "$W/bulk.cagent" "$W/bulk.direct" | awk '{printf "%.2f ", $1/$3}')"
rrow "CONNECT bulk MB/s, 4 x $PACE MB/s link" bulkp
col "  proxy CPU us per MB" "-" "$(column "$W/bulkp.cagent" 2)" "$(column "$W/bulkp.squid" 2)" "$(column "$W/bulkp.tinyproxy" 2)" "$(column "$W/bulkp.haproxy" 2)"
row "CONNECT bulk MB/s (1 tunnel)" "$C1_DIRECT" "$C1_CAGENT" "$C1_SQUID" "$C1_TINY" "$C1_HAP"
col "CONNECT setup p50 us (by name)" "$(kv p50_us <<<"$O_DIRECT")" "$(kv p50_us <<<"$O_CAGENT")" "$(kv p50_us <<<"$O_SQUID")" "$(kv p50_us <<<"$O_TINY")" "-"
row "CONNECT req/s in 1 tunnel" "$(kv rps <<<"$R_DIRECT")" "$(kv rps <<<"$R_CAGENT")" "$(kv rps <<<"$R_SQUID")" "$(kv rps <<<"$R_TINY")" "-"
col "CONNECT p50 us (added vs direct)" "$(kv p50_us <<<"$R_DIRECT")" \
  "$(kv p50_us <<<"$R_CAGENT") (+$(awk -v a="$(kv p50_us <<<"$R_CAGENT")" -v b="$(kv p50_us <<<"$R_DIRECT")" 'BEGIN{printf "%.0f", a-b}'))" \
  "$(kv p50_us <<<"$R_SQUID")" "$(kv p50_us <<<"$R_TINY")" "-"
row "HTTPS tunnelled req/s" "$(kv rps <<<"$S_DIRECT")" "$(kv rps <<<"$S_CAGENT")" "$(kv rps <<<"$S_SQUID")" "$(kv rps <<<"$S_TINY")" "-"
row "HTTPS intercepted req/s" "$(kv rps <<<"$S_DIRECT")" "$(kv rps <<<"$I_CAGENT")" "-" "-" "-"
printf '%-34s %12s %12s\n' "HTTPS intercepted p50 us, 1 conn" "$(kv p50_us <<<"$I_RTT_DIRECT")" \
  "$(kv p50_us <<<"$I_RTT_CAGENT") (+$(awk -v a="$(kv p50_us <<<"$I_RTT_CAGENT")" -v b="$(kv p50_us <<<"$I_RTT_DIRECT")" 'BEGIN{printf "%.0f", a-b}'))"
col "RSS MiB idle" "-" "$RSS_IDLE_CAGENT" "$RSS_IDLE_SQUID" "$RSS_IDLE_TINY" "$RSS_IDLE_HAP"
col "RSS MiB with $HOLD tunnels" "-" "$T_CAGENT" "$T_SQUID" "$T_TINY" "-"
echo "* haproxy $(haproxy -v | awk 'NR==1 {print $3}'), the ceiling: reverse proxy to the upstream (mode http, fixed backend) for HTTP, TCP relay (mode tcp, splice) for bulk, no CONNECT."
