#!/usr/bin/env bash
# The ceiling of any TCP relay on this machine: the CONNECT bulk download of
# bench/proxy/run.sh (4 connections to benchtool's raw upstream), direct and
# through a bare relay (bench/relay, no policy, no CONNECT) in each of the
# kernel's zero-copy ways: splice(2), as cagent relays tunnels, and BPF
# sockmap redirection, with and without a stream parser. splice-cpu1 is the
# splice relay on CPU 1 with the client and upstream: what a relay costs
# when no second core carries any of its work.
#
#   sudo bench/relay/run.sh     # ROUNDS=5 DURATION=4 CONNS=4 PACE=312.5 PIN=1
#
# Pinned as bench/proxy/run.sh is: relays on CPU 0, client and upstream on
# CPU 1. Rounds are interleaved (each round measures direct, then every
# relay); the table gives medians, and the ratio is the median of the
# per-round ratios. "CPU ms/GB" is the whole machine's busy time (both CPUs,
# /proc/stat) per GB moved: a sockmap relay does its work in softirq and
# kworker context, which no process's CPU time shows.
#
# The paced rows run the same download with the upstream pacing each
# connection to PACE MB/s (TCP's SO_MAX_PACING_RATE): a link of
# CONNS x PACE MB/s between the upstream and everything else, as the
# internet is, instead of loopback's unlimited one.
#
# Needs root for the sockmap relays (BPF); without it they are left out.
# Everything talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${DURATION:-4}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-4}
PACE=${PACE:-312.5}
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  ON_PROXY="taskset -c 0" ON_LOAD="taskset -c 1"
else
  ON_PROXY="" ON_LOAD=""
fi
. bench/lib.sh
bench_workdir relay

echo "building..." >&2
go build -o "$W/benchtool" ./bench/proxy/benchtool
go build -o "$W/relay" ./bench/relay
ON_LOAD=$ON_LOAD bench_upstream 18000
UP_RAW=127.0.0.1:18099
wait_port $UP_RAW

# Each relay is NAME (its --mode); splice-cpu1 is the splice relay on the
# client's and upstream's core instead of its own.
MODES="splice"
[ -n "$ON_LOAD" ] && MODES="$MODES splice-cpu1"
if [ "$(id -u)" = 0 ]; then MODES="$MODES sockmap sockmap-strp"; else echo "not root: sockmap relays left out" >&2; fi
port=19100
declare -A ADDR
for m in $MODES; do
  port=$((port + 1)); ADDR[$m]=127.0.0.1:$port
  on=$ON_PROXY; [ "$m" = splice-cpu1 ] && on=$ON_LOAD
  $on "$W/relay" --mode "${m%-cpu1}" --listen "${ADDR[$m]}" --target $UP_RAW 2> "$W/relay.$m.log" &
  PIDS+=($!)
  wait_port "${ADDR[$m]}"
done

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
# bulk NAME TARGET [RATE]: one download into $W/NAME, "MB/s machine-CPU-ms-per-GB".
bulk() {
  local b0 mb rate=()
  [ -n "${3:-}" ] && rate=(--rate "$3")
  b0=$(busy)
  mb=$($ON_LOAD "$W/benchtool" load --mode connect-down --conns "$CONNS" --duration "${DUR}s" --target "$2" "${rate[@]}" | sed -n 's/.*mbps=\([0-9.]*\).*/\1/p')
  echo "$mb $(awk -v t=$(( $(busy) - b0 )) -v hz="$(getconf CLK_TCK)" -v mb="$mb" -v s="$DUR" 'BEGIN { printf "%.0f", t/hz*1e3/(mb*s/1e3) }')" >> "$W/$1"
}

for i in $(seq "$ROUNDS"); do
  echo "round $i of $ROUNDS..." >&2
  bulk direct $UP_RAW
  for m in $MODES; do bulk "$m" "${ADDR[$m]}"; done
  bulk paced.direct $UP_RAW "$PACE"
  for m in $MODES; do bulk "paced.$m" "${ADDR[$m]}" "$PACE"; done
done

# med [FORMAT]: the median of the numbers on stdin.
med() { sort -n | awk -v f="${1:-%.0f}" '{a[NR]=$1} END {printf f, (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1" | med; }
ratios() { paste -d' ' "$W/$1" "$W/$2" | awk '{printf "%.2f\n", $1/$3}'; }
printf '\n%s, %s x %ss, %s rounds, %s\n' "$(uname -r)" "$CONNS connections" "$DUR" "$ROUNDS" "${ON_PROXY:+relays on CPU 0, load on CPU 1}"
printf '%-22s %10s %12s %10s   %s\n' "" "MB/s" "CPU ms/GB" "/direct" "per round"
for pre in "" "paced."; do
  [ -n "$pre" ] && printf -- '-- paced: %s x %s MB/s (%.1f Gbit/s)\n' "$CONNS" "$PACE" "$(awk -v c="$CONNS" -v p="$PACE" 'BEGIN{print c*p*8/1000}')"
  printf '%-22s %10s %12s %10s\n' "${pre}direct" "$(col ${pre}direct 1)" "$(col ${pre}direct 2)" "1.00"
  for m in $MODES; do
    printf '%-22s %10s %12s %10s   %s\n' "$pre$m" "$(col $pre$m 1)" "$(col $pre$m 2)" \
      "$(ratios $pre$m ${pre}direct | med %.2f)" "$(ratios $pre$m ${pre}direct | tr '\n' ' ')"
  done
done
