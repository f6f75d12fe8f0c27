#!/usr/bin/env bash
# copy --join benchmark: one `bluegreen copy` process against a leader plus one joined worker
# (`bluegreen copy --join`), with the same total parallelism, on the same data and servers.
# On one machine the two processes share its cores, so the ratio shows what spreading a copy
# over processes costs (claims through the state schema, the worker's wait for the leader);
# across pods it would add their cores.
#
# A first copy warms the caches and is not counted.
#
# Usage: bench/copy-join.sh [--scale S] [--rounds N] [--jobs J] [--chunk-mb MB] [--no-record] [--keep]
#   --scale S      fixture scale (default 5: ~1.3 GB database)
#   --rounds N     rounds (default 3); each runs both setups, in an order that alternates
#   --jobs J       total workers (default 2): `copy --jobs J` alone, or leader and worker
#                  with --jobs J/2 each (J even)
#   --chunk-mb MB  chunk size for both setups (default 32: enough chunks to share at scale 5)
#   --no-record    print the table only; do not append it to bench/RESULTS.md
#   --keep         leave the work directory (logs, per-run CSV) behind
#
# Every run copies the whole factory_telemetry database into a freshly created, empty target
# database (slots and publications dropped between runs); the target's row count of every
# table and materialized view, and its numbers of indexes and constraints, must equal the
# source's, or the run fails the benchmark; the note says how many chunks each process copied
# (bluegreen.chunks.copied_by).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scale=5
rounds=3
jobs=2
chunk_mb=32
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --chunk-mb) chunk_mb=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "copy-join.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ $((jobs % 2)) != 0 ] || [ "$jobs" -lt 2 ]; then
  echo "copy-join.sh: --jobs must be even (split between leader and worker)" >&2; exit 2
fi
half=$((jobs / 2))

# As bench/copy.sh: testkit's settings (fsync=off, …) plus these, for both setups.
settings=(
  shared_buffers=1GB
  maintenance_work_mem=1GB
  max_parallel_maintenance_workers=2
  max_wal_size=16GB
  checkpoint_timeout=30min
)
# shellcheck disable=SC2206
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

. bench/lib.sh
bench_build
bench_workdir copy-join

echo "== starting source and target (settings: ${settings[*]})"
bench_servers
export PGPASSWORD="$DB_PASSWORD"
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt_admin="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres sslmode=disable"

echo "== loading factory_telemetry at scale $scale into the source"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale"
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
$PSQL "$src" -c "VACUUM (ANALYZE, FREEZE)" -c "CHECKPOINT"
src_bytes=$($pgbin/psql -XAt "$src" -c "SELECT pg_database_size(current_database())")
echo "   source database: $((src_bytes / 1024 / 1024)) MB"

counts_sql="
SELECT format('%s.%s rows=%s', n.nspname, c.relname,
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bluegreen')
   AND n.nspname NOT LIKE 'pg\\_%'
UNION ALL
SELECT format('indexes=%s', count(*)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'factory_telemetry'
UNION ALL
SELECT format('constraints=%s', count(*)) FROM pg_constraint WHERE connamespace = 'factory_telemetry'::regnamespace
ORDER BY 1"
$pgbin/psql -XAt "$src" -c "$counts_sql" >"$work/source.counts"

reset_servers() {
  $PSQL "$src" >/dev/null <<'SQL'
SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL;
SELECT pg_sleep(0.2);
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
SELECT format('DROP PUBLICATION %I', pubname) FROM pg_publication \gexec
SQL
  $PSQL "$tgt_admin" -c "DROP DATABASE IF EXISTS factory_telemetry WITH (FORCE)" \
                     -c "CREATE DATABASE factory_telemetry" -c "CHECKPOINT"
  $PSQL "$src" -c "CHECKPOINT"
  # The last run's logs stay beside it (with --keep, for reading where time went).
  [ -d "$work/run" ] && [ -n "${last:-}" ] && mv "$work/run" "$work/$last"
  rm -rf "$work/run"
  mkdir -p "$work/run"
  sleep 1
}

copy_cmd=("$bin/bluegreen" copy --source "$src" --target "$tgt" --run bench --chunk-mb "$chunk_mb")

run_one() {
  RUST_LOG=info "${copy_cmd[@]}" --jobs "$jobs" >"$work/run/out" 2>"$work/run/log" \
    || { tail -20 "$work/run/log" >&2; return 1; }
  note="copy --jobs $jobs"
}

run_two() {
  RUST_LOG=info "${copy_cmd[@]}" --jobs "$half" >"$work/run/out" 2>"$work/run/log" &
  local leader=$! deadline=$(( $(date +%s) + 60 ))
  # The worker joins once the leader holds the run's leader lock (it then waits for the
  # leader's data phase by itself).
  until [ "$($pgbin/psql -XAt "$tgt" -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
             AND classid = (hashtext('bluegreen.copy')::bigint & 4294967295)::oid")" = 1 ]; do
    kill -0 "$leader" 2>/dev/null || { tail -20 "$work/run/log" >&2; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the leader took no lock in 60 s" >&2; return 1; }
    sleep 0.05
  done
  RUST_LOG=info "${copy_cmd[@]}" --jobs "$half" --join >"$work/run/worker.out" 2>"$work/run/worker.log" &
  local worker=$!
  wait "$worker" || { tail -20 "$work/run/worker.log" >&2; return 1; }
  wait "$leader" || { tail -20 "$work/run/log" >&2; return 1; }
  local shares
  shares=$($pgbin/psql -XAt "$tgt" -c "SELECT count(DISTINCT copied_by) || ' ' || string_agg(n::text, '/' ORDER BY n DESC)
      FROM (SELECT copied_by, count(*) n FROM bluegreen.chunks GROUP BY 1) x")
  note="leader and worker --jobs $half each; chunks per process ${shares#* }"
  # At a tiny scale the leader may be done with the data before the worker has started.
  [ "${shares%% *}" = 2 ] || note="$note (the worker copied no chunk: too small to share)"
}

csv="$work/runs.csv"
echo "round,setup,seconds,load1,note" >"$csv"
# A first copy after the servers start reads cold caches: run one, uncounted, so neither
# setup pays for it.
reset_servers
current="warm-up"
run_one
printf 'warm-up   %8s    (not counted)\n' "done"
current=""
last="warm-up"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$rounds"); do
  order=(one two)
  [ $((r % 2)) = 0 ] && order=(two one)
  for setup in "${order[@]}"; do
    reset_servers
    load1=$(cut -d' ' -f1 /proc/loadavg)
    current="round $r: $setup"
    t0=$(now)
    "run_$setup"
    t1=$(now)
    current=""
    last="round$r-$setup"
    secs=$(echo "$t1 - $t0" | bc)
    $pgbin/psql -XAt "$tgt" -c "$counts_sql" >"$work/run/target.counts"
    # Where each process spent its time, for reading with --keep.
    $pgbin/psql -XA -F, "$tgt" -c "SELECT item, kind, name, built_by, round(seconds::numeric, 3) AS seconds
        FROM bluegreen.post_data ORDER BY item" >"$work/run/items.csv"
    $pgbin/psql -XA -F, "$tgt" -c "SELECT table_name, chunk, copied_by, est_bytes, round(seconds::numeric, 3) AS seconds,
        extract(epoch FROM done_at) AS done_at FROM bluegreen.chunks ORDER BY done_at" >"$work/run/chunks.csv"
    $pgbin/psql -XAt "$tgt" -c "SELECT at, step, seconds, detail FROM bluegreen.audit ORDER BY at" >"$work/run/audit.txt"
    if ! diff -u "$work/source.counts" "$work/run/target.counts" >"$work/run/counts.diff"; then
      echo "round $r: $setup copied something else than the source holds:" >&2
      cat "$work/run/counts.diff" >&2
      exit 1
    fi
    printf 'round %s  %-4s %8.2f s  load %s  %s\n' "$r" "$setup" "$secs" "$load1" "$note"
    echo "$r,$setup,$secs,$load1,\"$note\"" >>"$csv"
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
reset_servers

median() { sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m}'; }
m1=$(awk -F, '$2 == "one" {print $3}' "$csv" | median)
m2=$(awk -F, '$2 == "two" {print $3}' "$csv" | median)
runs1=$(awk -F, '$2 == "one" {printf "%s%.2f", sep, $3; sep = ", "}' "$csv")
runs2=$(awk -F, '$2 == "two" {printf "%s%.2f", sep, $3; sep = ", "}' "$csv")
ratio=$(echo "scale=3; $m2 / $m1" | bc)
overhead=$(python3 -c "print(round(($m2 / $m1 - 1) * 100, 1))")
table="| setup | median s | runs s | × one process |
|---|---:|---|---:|
| 1 process, \`copy --jobs $jobs\` | $m1 | $runs1 | 1.00 |
| leader + 1 joined worker, \`--jobs $half\` each | $m2 | $runs2 | $ratio |"
echo
echo "$table"
echo
echo "two processes ÷ one: $ratio (overhead ${overhead} %; goal ≤ 5 %)"

if [ "$record" = 1 ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ) — copy --join: scale $scale ($((src_bytes / 1024 / 1024)) MB source database), $rounds rounds"
    echo
    echo "- machine: $(bench_machine); load average $load_start at the start, $load_end at the end"
    echo "- bluegreen $bg_version; --chunk-mb $chunk_mb; server settings as bench/copy.sh"
    echo "- command: \`bench/copy-join.sh --scale $scale --rounds $rounds --jobs $jobs --chunk-mb $chunk_mb\`"
    echo
    echo "$table"
    echo
    echo "Two processes ÷ one: $ratio (overhead ${overhead} %; goal ≤ 5 %). Per run: $(awk -F, 'NR > 1 {printf "%sround %s %s %.2f s (%s)", sep, $1, $2, $3, $5; sep = "; "}' "$csv" | tr -d '"')."
  } >>"$root/bench/RESULTS.md"
  echo "appended to bench/RESULTS.md"
fi
