#!/usr/bin/env bash
# Heartbeat benchmark of the control plane on SQLite and PostgreSQL.
#   bench/control/run.sh            # 10,000 agents, one heartbeat per 10 s, 45 s each
#   AGENTS=2000 DURATION=20s bench/control/run.sh
# PostgreSQL: $CAGENT_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test);
# the run uses a fresh schema and drops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
AGENTS=${AGENTS:-10000}
INTERVAL=${INTERVAL:-10s}
DURATION=${DURATION:-45s}
DBS=${DBS:-"sqlite postgres"}
PG=${CAGENT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
PORT=${PORT:-18091}
work=$(mktemp -d)
server=""
schema=""
cleanup() {
	if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
	if [ -n "$schema" ]; then psql "${PG%%\?*}" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/bench" ./bench/control
# The real binary; if another package of it does not build right now, the
# bench binary serves the control plane with the same code and settings.
if CGO_ENABLED=0 go build -o "$work/cagent" ./cmd/cagent 2>/dev/null; then
	serve() { exec "$work/cagent" control serve --db "$1" --data-dir "$2" --listen "$3" --rate 100000 --burst 100000; }
else
	echo "# cmd/cagent does not build; serving with bench -serve (same control package)"
	serve() { exec "$work/bench" -serve -db "$1" -data-dir "$2" -listen "$3"; }
fi
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $AGENTS agents, interval $INTERVAL, $DURATION per database"
for db in $DBS; do
	data="$work/data-$db"
	case $db in
	sqlite) dsn="sqlite:$data/control.db" ;;
	postgres)
		schema="bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
		psql "${PG%%\?*}" -qc "CREATE SCHEMA $schema" >/dev/null
		case $PG in *\?*) dsn="$PG&search_path=$schema" ;; *) dsn="$PG?search_path=$schema" ;; esac
		;;
	esac
	# The per-token API limit is raised so registering 10,000 agents with
	# one superadmin token is not throttled; agents beat far below it.
	serve "$dsn" "$data" "127.0.0.1:$PORT" >"$work/out-$db" 2>"$work/err-$db" &
	server=$!
	for _ in $(seq 100); do grep -q '^cagent_' "$work/out-$db" 2>/dev/null && break; sleep 0.1; done
	token=$(grep '^cagent_' "$work/out-$db")
	echo "# $db: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
	"$work/bench" -url "http://127.0.0.1:$PORT" -token "$token" -agents "$AGENTS" -interval "$INTERVAL" -duration "$DURATION" -windows "${WINDOWS:-5s}" -label "$db"
	echo "# $db: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
	kill "$server"; wait "$server" 2>/dev/null || true; server=""
	if [ -n "$schema" ]; then psql "${PG%%\?*}" -qc "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1; schema=""; fi
done
