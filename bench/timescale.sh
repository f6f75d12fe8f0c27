#!/usr/bin/env bash
# TimescaleDB benchmark (issue 19 item 7): what turning MS5's plain time-series tables into
# hypertables on green costs.
#   copy  the fixture into plain tables (`bluegreen copy`) vs into hypertables
#         (`bluegreen copy --profile fixtures/ms5-profile.toml`: metric_hist 1 h chunks, the
#         KPI tables 1 d, compression settings, paused policies, two continuous aggregates
#         filled once). Goal: hypertables take <= 1.2x the plain copy's time.
#   sync  the apply rate of `bluegreen sync` catching up on --rows metric_hist inserts (100
#         rows per transaction, timestamps within the last hour, as the plant writes them)
#         that piled up in its slot, into the hypertable vs into the plain table.
#
# Usage: bench/timescale.sh [--scale S] [--rounds N] [--rows N] [--no-record] [--keep]
#   --scale S      fixture scale (default 5: ~1.3 GB database; 1 ~ 270 MB)
#   --rounds N     rounds (default 3): plain and hypertables each once per round, their
#                  order alternating; each a fresh copy, then the sync measurement on it
#   --rows N       metric_hist rows the sync measurement applies (default 600000)
#   --no-record    print only; do not append to bench/RESULTS.md
#   --keep         leave the work directory (logs, CSV) behind
# Environment: BENCH_BIN / BENCH_VERSION (prebuilt binaries, see bench/lib.sh),
#              BENCH_SETTINGS (extra setting=value words for both servers; recorded).
# Needs TimescaleDB installed for PostgreSQL 15 (bg-servers --timescaledb preloads it).
#
# Every measurement starts from an empty target database (dropped and created again) and a
# source without slots or publications. The source has the timescaledb extension (the
# profile's aggregate queries run on it) and no hypertables. After each copy, and after each
# catch-up, the target must hold the source's row count of every table of the schema, or
# the run fails (contents and aggregates are checked exactly by the tests, not here).
set -euo pipefail
shopt -s inherit_errexit   # a failure inside $(…) ends the benchmark too
cd "$(dirname "$0")/.."
root=$(pwd)

scale=5
rounds=3
rows=600000
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "timescale.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$rows" -ge 100 ] || { echo "timescale.sh: --rows must be at least 100" >&2; exit 2; }

# The same settings for both servers (testkit adds wal_level=logical, fsync=off,
# full_page_writes=off, synchronous_commit=off). autovacuum off: nothing but the benchmark
# writes while changes pile up in the slot.
settings=(
  shared_buffers=1GB
  maintenance_work_mem=1GB
  max_parallel_maintenance_workers=2
  max_wal_size=16GB
  checkpoint_timeout=30min
  autovacuum=off
)
# shellcheck disable=SC2206
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

scripts/setup.sh --bench
. bench/lib.sh
bench_build
bench_workdir timescale
q() { $pgbin/psql -XAtq -v ON_ERROR_STOP=1 "$1" -c "$2"; }

echo "== starting source and target with TimescaleDB (settings: ${settings[*]})"
current="servers"
bench_servers --timescaledb
export PGPASSWORD="$DB_PASSWORD"   # passwords only ever in the environment or a passfile
base="host=127.0.0.1 user=postgres sslmode=disable"
src="$base port=$SOURCE_PORT dbname=factory_telemetry"
tgt="$base port=$TARGET_PORT dbname=factory_telemetry"
tgt_admin="$base port=$TARGET_PORT dbname=postgres"
profile=$root/fixtures/ms5-profile.toml

echo "== loading factory_telemetry at scale $scale into the source"
current="load"
$PSQL "$src" -c "CREATE EXTENSION IF NOT EXISTS timescaledb"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale" >"$work/load.log" 2>&1
# bluegreen refuses to publish a table whose UPDATEs/DELETEs would then fail on the source.
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
$PSQL "$src" -c "VACUUM (ANALYZE, FREEZE)" -c "CHECKPOINT"
src_mb=$(( $(q "$src" "SELECT pg_database_size(current_database())") / 1024 / 1024 ))
echo "   source database: $src_mb MB"

# Every table of the schema with its exact row count (the target's hypertables counted
# through their parent, as a plain SELECT reads them).
counts_sql="
SELECT format('%s rows=%s', c.relname,
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = 'factory_telemetry' ORDER BY 1"
q "$src" "$counts_sql" >"$work/source.counts"

# An empty target database; no slot or publication left on the source.
reset_servers() {
  q "$src" "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL" >/dev/null
  sleep 0.2
  q "$src" "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
  $PSQL "$src" >/dev/null <<'SQL'
SELECT format('DROP PUBLICATION %I', pubname) FROM pg_publication \gexec
SQL
  $PSQL "$tgt_admin" -c "DROP DATABASE IF EXISTS factory_telemetry WITH (FORCE)" \
                     -c "CREATE DATABASE factory_telemetry" -c "CHECKPOINT"
  $PSQL "$src" -c "CHECKPOINT"
  sleep 1
}

check_counts() {
  q "$src" "$counts_sql" >"$work/source.counts"
  q "$tgt" "$counts_sql" >"$work/target.counts"
  if ! diff -u "$work/source.counts" "$work/target.counts" >"$work/counts.diff"; then
    echo "$1: the target holds other rows than the source:" >&2
    cat "$work/counts.diff" >&2
    exit 1
  fi
}

# copy_once KIND (plain|hyper): a fresh copy; prints its seconds.
copy_once() {
  local kind=$1 args=() t0 t1
  [ "$kind" = hyper ] && args=(--profile "$profile")
  reset_servers >/dev/null
  t0=$(now)
  RUST_LOG=info "$bin/bluegreen" copy --source "$src" --target "$tgt" "${args[@]}" \
    >"$work/copy-$kind.out" 2>"$work/copy-$kind.log" || { tail -20 "$work/copy-$kind.log" >&2; return 1; }
  t1=$(now)
  check_counts "copy $kind"
  if [ "$kind" = hyper ]; then
    [ "$(q "$tgt" "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = 'factory_telemetry'")" -gt 0 ] \
      || { echo "copy --profile made no hypertable" >&2; return 1; }
  fi
  echo "$t1 - $t0" | bc
}

# Runs a 1-row transaction and prints its commit's end LSN (from a throwaway test_decoding
# slot): the position sync must reach.
marker() {
  q "$src" "SELECT pg_create_logical_replication_slot('bench_marker', 'test_decoding')" >/dev/null
  q "$src" "SET synchronous_commit = on; INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
              SELECT id, clock_timestamp(), -1 FROM factory_telemetry.metric_def ORDER BY id LIMIT 1"
  q "$src" "SELECT lsn FROM pg_logical_slot_peek_changes('bench_marker', NULL, NULL)
             WHERE data LIKE 'COMMIT%' ORDER BY lsn DESC LIMIT 1"
  q "$src" "SELECT pg_drop_replication_slot('bench_marker')" >/dev/null
}

# sync_once KIND: right after copy_once KIND, --rows inserts pile up with nothing consuming;
# then `bluegreen sync` catches up; prints its seconds (start to the origin at the goal).
sync_once() {
  local kind=$1 goal t0 t1 pid
  q "$src" "DO \$\$ DECLARE defs uuid[] := (SELECT array_agg(id ORDER BY id) FROM factory_telemetry.metric_def);
                     n int := array_length(defs, 1);
            BEGIN
              FOR b IN 1..$rows / 100 LOOP
                INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
                  SELECT defs[1 + (b * 100 + g) % n], now() - ((b * 100 + g) % 3600) * interval '1 s', g
                    FROM generate_series(1, 100) g;
                COMMIT;
              END LOOP;
            END \$\$"
  goal=$(marker)
  t0=$(now)
  RUST_LOG=info "$bin/bluegreen" sync --source "$src" --target "$tgt" \
    >"$work/sync-$kind.out" 2>"$work/sync-$kind.log" &
  pid=$!
  local deadline=$(( $(date +%s) + 3600 ))
  while [ "$(q "$tgt" "SELECT coalesce((SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = 'bluegreen_main'), '0/0') >= '$goal'::pg_lsn")" != t ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/sync-$kind.log" >&2; echo "sync ended before reaching $goal" >&2; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "sync did not reach $goal in an hour" >&2; return 1; }
    sleep 0.05
  done
  t1=$(now)
  kill -TERM "$pid"
  wait "$pid" || true
  check_counts "sync $kind"
  echo "$t1 - $t0" | bc
}

csv=$work/runs.csv
echo "round,what,kind,seconds" >"$csv"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$rounds"); do
  order=(plain hyper)
  [ $((r % 2)) = 0 ] && order=(hyper plain)
  for kind in "${order[@]}"; do
    current="round $r: copy $kind"
    secs=$(copy_once "$kind")
    printf 'round %s  copy  %-6s %8.2f s\n' "$r" "$kind" "$secs"
    echo "$r,copy,$kind,$secs" >>"$csv"
    current="round $r: sync $kind"
    secs=$(sync_once "$kind")
    printf 'round %s  sync  %-6s %8.2f s  %8.0f rows/s\n' "$r" "$kind" "$secs" "$(echo "$rows / $secs" | bc -l)"
    echo "$r,sync,$kind,$secs" >>"$csv"
  done
done
current=""
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
reset_servers >/dev/null

ts_version=$(q "$src" "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
python3 - "$csv" "$rows" "$record" "$root/bench/RESULTS.md" <<EOF
import csv, statistics, sys
path, rows, record, results = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
runs = {}
for r in csv.DictReader(open(path)):
    runs.setdefault((r["what"], r["kind"]), []).append(float(r["seconds"]))
med = {k: statistics.median(v) for k, v in runs.items()}
ratio = med[("copy", "hyper")] / med[("copy", "plain")]
lines = [
    "",
    "## timescale: scale $scale ($src_mb MB database), copy into hypertables vs plain tables, sync apply rate",
    "",
    "Machine: $(nproc) cores; PostgreSQL $(q "$src" "SHOW server_version"), TimescaleDB $ts_version; bluegreen $bg_version; "
    "settings: ${settings[*]}; load average before: $load_start, after: $load_end; median of $rounds round(s), order alternating.",
    "",
    "| measurement | plain s (median) | hypertables s (median) | runs plain | runs hypertables | hypertables ÷ plain |",
    "|---|---:|---:|---|---|---:|",
]
for what, label in (("copy", "copy (hypertables: --profile fixtures/ms5-profile.toml)"),
                    ("sync", f"sync catch-up, {rows:,} metric_hist inserts (100 per transaction)")):
    p, h = med[(what, "plain")], med[(what, "hyper")]
    lines.append(f"| {label} | {p:.2f} | {h:.2f} | "
                 + ", ".join(f"{x:.2f}" for x in runs[(what, "plain")]) + " | "
                 + ", ".join(f"{x:.2f}" for x in runs[(what, "hyper")]) + f" | {h / p:.2f} |")
p, h = med[("sync", "plain")], med[("sync", "hyper")]
lines += [
    "",
    f"Sync apply rate: plain {rows / p:,.0f} rows/s, hypertable {rows / h:,.0f} rows/s.",
    f"Goal copy into hypertables <= 1.2x plain: {'met' if ratio <= 1.2 else 'NOT met'} ({ratio:.2f}x).",
]
print("\n".join(lines))
if record:
    with open(results, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nappended to {results}")
EOF
