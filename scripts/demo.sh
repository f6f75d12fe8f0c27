#!/usr/bin/env bash
# The newest end-to-end capability on a fresh machine: starts a local source, target and
# PgBouncer, loads the factory_telemetry fixture into the source, runs the plant-like write
# workload through PgBouncer, and runs `bluegreen plan` against the live source:
# first it finds the no-primary-key table and names the fix, then, fixed, it passes.
# Environment: DEMO_SCALE (default 0.2, ~20 MB), DEMO_SECONDS (default 20), DEMO_RATE (rows/s, default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${DEMO_SCALE:-0.2}
seconds=${DEMO_SECONDS:-20}
rate=${DEMO_RATE:-500}

scripts/setup.sh
echo "== building (release)"
cargo build --release --locked -q -p bluegreen -p fixtures -p testkit
bin=target/release

work=$(mktemp -d /tmp/bluegreen-demo.XXXXXX)
servers_pid=""
cleanup() {
  [ -n "$servers_pid" ] && kill "$servers_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting source, target and PgBouncer on 127.0.0.1"
mkfifo "$work/hold"
"$bin/bg-servers" "$work/env" <"$work/hold" &
servers_pid=$!
exec 3>"$work/hold"   # keeps the servers up until this script ends
for _ in $(seq 1 600); do [ -f "$work/env" ] && break; sleep 0.1; done
[ -f "$work/env" ] || { echo "servers did not start" >&2; exit 2; }
# shellcheck disable=SC1091
. "$work/env"
# Passwords go through the environment, never on command lines.
export PGPASSWORD="$DB_PASSWORD"
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"
pooled="host=127.0.0.1 port=$POOLER_PORT user=postgres dbname=factory_telemetry sslmode=disable"
echo "   source: $src"
echo "   target: $tgt"

echo "== loading factory_telemetry at scale $scale into the source"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale"

echo "== plant write workload through PgBouncer: $rate rows/s for ${seconds}s"
"$bin/bg-fixture" workload --dsn "$pooled" --seconds "$seconds" --rate "$rate" --ledger "$work/ledger" >"$work/workload.log" 2>&1 &
workload_pid=$!
sleep 2

echo "== bluegreen plan (while the plant writes)"
set +e
"$bin/bluegreen" plan --source "$src" --target "$tgt"
code=$?
set -e
echo "   exit code $code (1 = blockers found)"

fix=$("$bin/bluegreen" plan --json --source "$src" --target "$tgt" | python3 -c 'import json,sys; print("\n".join(f["fix"] for f in json.load(sys.stdin)["findings"] if f["code"]=="no-replica-identity"))' || true)
echo "== applying the fix the plan named: $fix"
/usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 "$src" -c "$fix"

echo "== bluegreen plan again"
set +e
"$bin/bluegreen" plan --source "$src" --target "$tgt" >"$work/plan2.txt"
code=$?
set -e
tail -n 1 "$work/plan2.txt"
echo "   exit code $code (0 = nothing blocks)"

wait "$workload_pid" || true
tail -n 3 "$work/workload.log"
echo "== checking the source holds every write the workload committed"
"$bin/bg-fixture" check --dsn "$src" --ledger "$work/ledger"
echo "== done; servers stop now"
