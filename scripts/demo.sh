#!/usr/bin/env bash
# The newest end-to-end capability on a fresh machine: starts a local source (blue), target
# (green) and PgBouncer, loads the factory_telemetry fixture into blue, runs `bluegreen plan`
# (which finds the table without a primary key and names the fix), then, while the plant
# workload writes through PgBouncer: `bluegreen run --until cutover`, the one-shot migration
# (copy, sync until caught up, verify at one LSN, cutover flipping PgBouncer to green, with
# the client pause and a report with its stage timeline); finally a check that green holds
# every write the workload committed (its ledger), before and after the flip.
# Environment: DEMO_SCALE (default 0.2, ~60 MB), DEMO_SECONDS (default 45), DEMO_RATE (rows/s, default 500).
# DEMO_TIMESCALEDB=1 (TimescaleDB installed for PostgreSQL 15): both servers preload it, blue
# has the extension but plain tables (as MS5's), and copy converts green's time-series tables
# into hypertables by fixtures/ms5-profile.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${DEMO_SCALE:-0.2}
seconds=${DEMO_SECONDS:-45}
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
server_flags=()
copy_flags=()
if [ "${DEMO_TIMESCALEDB:-0}" = 1 ]; then
  server_flags+=(--timescaledb)
  copy_flags+=(--profile fixtures/ms5-profile.toml)
fi
"$bin/bg-servers" "$work/env" "${server_flags[@]}" <"$work/hold" &
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
if [ "${DEMO_TIMESCALEDB:-0}" = 1 ]; then
  /usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 "$src" -c "CREATE EXTENSION timescaledb"
fi
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

pooler="admin=host=127.0.0.1 port=$POOLER_PORT user=bgadmin password=bgadmin-pw dbname=pgbouncer sslmode=disable,db=factory_telemetry,file=$POOLER_DATABASES_FILE"
echo "== bluegreen run: plan, copy, sync until caught up, verify at one LSN, cutover: one command, while the plant writes"
"$bin/bluegreen" run --source "$src" --target "$tgt" --pooler "$pooler" --until cutover \
  --report-dir "$work/report" "${copy_flags[@]}" 2>"$work/run.log" | grep -E 'caught up|verify:|cut over|paused|^  (pause|fence|drain|flip|resume) |stage|window|report:' || true
if [ "${DEMO_TIMESCALEDB:-0}" = 1 ]; then
  echo "   green's hypertables (fixtures/ms5-profile.toml); cutover started their policies:"
  /usr/lib/postgresql/15/bin/psql -X -A -t "$tgt" -c "SELECT '   ' || d.hypertable_name || ': chunks of ' || d.time_interval || ', ' || h.num_chunks || ' chunk(s), ' || (SELECT count(*) FROM timescaledb_information.jobs j WHERE j.hypertable_name = d.hypertable_name AND j.scheduled) || ' running polic(ies)' FROM timescaledb_information.dimensions d JOIN timescaledb_information.hypertables h USING (hypertable_schema, hypertable_name) WHERE d.hypertable_schema = 'factory_telemetry' ORDER BY 1"
fi
echo "   new connections through PgBouncer now land on port $(/usr/lib/postgresql/15/bin/psql -X -A -t "$pooled" -c 'SELECT inet_server_port()') (green is $TARGET_PORT, blue $SOURCE_PORT)"
echo "   the run's report (stage timeline, lag and apply-rate curves, cutover steps): $work/report/report.html"

wait "$workload_pid" || true
echo "   workload finished: $(grep -E 'committed|failed' "$work/workload.log" | tr -s ' ' | tr '\n' ';')"
# The plant rejects some OEE rows on purpose (percentage out of range, SQLSTATE 23514) so the
# ledger check can show that rolled-back writes never reach green; any other failure is real.
other=$(awk '$1 == "failed" && $3 != "23514" {print $3 " x" $2}' "$work/workload.log" | tr '\n' ' ')
if [ -n "$other" ]; then
  echo "   client transactions failed for other reasons than the deliberate rejections: $other"
else
  echo "   every failed transaction was a deliberate rejection (23514); no client transaction failed because of the migration"
fi
echo "== does green hold every write the plant committed, before and after the flip? (ledger check)"
"$bin/bg-fixture" check --dsn "$tgt" --ledger "$work/ledger"
echo "== bluegreen status"
# Exit 1 here says reverse sync is not running: the demo does not start it after the flip.
"$bin/bluegreen" status --target "$tgt" || true
"$bin/bluegreen" abort --source "$src" --target "$tgt" >/dev/null
echo "== done (run removed with bluegreen abort; blue stays read-only, as cutover left it); servers stop now"
