#!/usr/bin/env bash
# The newest end-to-end capability on a fresh machine: starts a local source, target and
# PgBouncer, loads the factory_telemetry fixture into the source, runs `bluegreen plan`
# (which finds the table without a primary key and names the fix), then, while the plant
# workload writes through PgBouncer: `bluegreen copy`, `bluegreen sync` with the lag
# falling to zero, and a check that the target holds every write the workload committed.
# Environment: DEMO_SCALE (default 0.2, ~50 MB), DEMO_SECONDS (default 30), DEMO_RATE (rows/s, default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${DEMO_SCALE:-0.2}
seconds=${DEMO_SECONDS:-30}
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

echo "== bluegreen plan: what the migration will do and what blocks it"
set +e
"$bin/bluegreen" plan --source "$src" --target "$tgt" >"$work/plan.txt"
code=$?
set -e
sed -n '/^blockers/,$p' "$work/plan.txt"
echo "   exit code $code (1 = blockers found)"
fix=$("$bin/bluegreen" plan --json --source "$src" --target "$tgt" | python3 -c 'import json,sys; print("\n".join(f["fix"] for f in json.load(sys.stdin)["findings"] if f["code"]=="no-replica-identity"))' || true)
echo "== applying the fix the plan named: $fix"
/usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 "$src" -c "$fix"

echo "== plant write workload through PgBouncer: $rate telemetry rows/s for ${seconds}s (ledger of every commit)"
"$bin/bg-fixture" workload --dsn "$pooled" --seconds "$seconds" --rate "$rate" --ledger "$work/ledger" >"$work/workload.log" 2>&1 &
workload_pid=$!
sleep 2

echo "== bluegreen copy (while the plant writes)"
"$bin/bluegreen" copy --source "$src" --target "$tgt" 2>"$work/copy.log" | tail -n 4

echo "== bluegreen sync: streaming every change since the copy's snapshot"
"$bin/bluegreen" sync --source "$src" --target "$tgt" 2>"$work/sync.log" &
sync_pid=$!
lag() { "$bin/bluegreen" status --json --target "$tgt" | python3 -c 'import json,sys; s=json.load(sys.stdin)["sync"] or {}; print(s.get("lag_bytes"), s.get("lag_seconds"), s.get("rows_per_second"))'; }
while kill -0 "$workload_pid" 2>/dev/null; do
  read -r b s r < <(lag)
  printf '   plant writing; lag %s bytes, %.2f s; applying %.0f rows/s\n' "${b/None/0}" "${s/None/0}" "${r/None/0}"
  sleep 3
done
wait "$workload_pid" || true
echo "   workload finished: $(tail -n 1 "$work/workload.log")"
for _ in $(seq 1 60); do
  read -r b s r < <(lag)
  printf '   lag %s bytes, %.2f s\n' "${b/None/0}" "${s/None/0}"
  [ "${b:-1}" != "None" ] && [ "$b" -le 200 ] && break
  sleep 1
done
kill -TERM "$sync_pid"; wait "$sync_pid" || true

echo "== does green hold every write the plant committed? (ledger check on the target)"
"$bin/bg-fixture" check --dsn "$tgt" --ledger "$work/ledger"
echo "== row counts, source vs target"
for t in metric_hist metric_latest sensor_raw_log equipment_documents document_downloads; do
  a=$(/usr/lib/postgresql/15/bin/psql -X -A -t "$src" -c "SELECT count(*) FROM factory_telemetry.$t")
  b=$(/usr/lib/postgresql/15/bin/psql -X -A -t "$tgt" -c "SELECT count(*) FROM factory_telemetry.$t")
  printf '   %-22s %8s %8s %s\n' "$t" "$a" "$b" "$([ "$a" = "$b" ] && echo same || echo DIFFERENT)"
done
echo "== bluegreen status"
"$bin/bluegreen" status --target "$tgt"
"$bin/bluegreen" abort --source "$src" --target "$tgt" >/dev/null
echo "== done (run removed with bluegreen abort); servers stop now"
