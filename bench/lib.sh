# Shared by the bench/ scripts; source it from the repository root
# (`. bench/lib.sh`). Everything here talks to loopback only.

# bench_workdir NAME makes the run's private directory, $W, and arranges
# that on exit every process in PIDS is killed and waited for and $W is
# removed, however the script ends.
bench_workdir() {
  W=$(mktemp -d "/tmp/cagent-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}

# wait_port HOST:PORT [TRIES] waits until something accepts connections
# there, TRIES x 0.1 s (100 by default), and exits the script otherwise.
wait_port() {
  for _ in $(seq "${2:-100}"); do
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no listener on $1" >&2
  exit 1
}

# ticks PID prints the CPU time (user + system, in clock ticks) the process
# has used; around a load it gives CPU per request, which the machine's other
# load disturbs far less than the request rate.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# per TICKS N SECONDS prints the CPU microseconds per unit of N units per
# second over SECONDS (TICKS from ticks), or "-" when N is 0.
per() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" -v s="$3" 'BEGIN { if (n+0 == 0) print "-"; else printf "%.1f", t/hz*1e6/(n*s) }'; }

# bench_upstream BASE starts benchtool's servers ($W/benchtool) on
# 127.0.0.1 — HTTP on BASE+80 (UP_HTTP), TLS on BASE+443, raw TCP on
# BASE+99, DNS for *.test on BASE+53 — under $ON_LOAD (a taskset prefix, or
# nothing), and writes $W/cagent.yaml: a policy that reaches 127.0.0.1
# through ip_ranges (so no name is resolved) and whose DNS upstream is
# benchtool's.
bench_upstream() {
  UP_HTTP=127.0.0.1:$(($1 + 80))
  ${ON_LOAD:-} "$W/benchtool" serve --dir "$W" --http "$UP_HTTP" --tls 127.0.0.1:$(($1 + 443)) \
    --raw 127.0.0.1:$(($1 + 99)) --dns 127.0.0.1:$(($1 + 53)) > "$W/serve.out" 2>&1 &
  PIDS+=($!)
  cat > "$W/cagent.yaml" <<YAML
dns: {upstream: ["127.0.0.1:$(($1 + 53))"]}
egress_limits: {default: 1000GiB}
ip_ranges:
  - {cidr: 127.0.0.1/32}
YAML
}
