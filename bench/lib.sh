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
