#!/usr/bin/env bash
# Copy benchmark: bluegreen copy against its peers on the same data, same servers, same settings.
#
# Usage: bench/copy.sh [--scale S] [--rounds N] [--tools LIST] [--no-record] [--keep]
#   --scale S      fixture scale (default 5: ~1.3 GB database; 1 ≈ 270 MB)
#   --rounds N     rounds (default 3); every round runs every tool once, in an order that
#                  rotates from round to round, so machine noise hits every tool alike
#   --tools LIST   comma-separated subset of: bluegreen,dump-psql,dump-restore-j2,pgcopydb,subscription
#   --no-record    print the table only; do not append it to bench/RESULTS.md
#   --keep         leave the work directory (logs, per-run CSV) behind
# Environment: BENCH_BLUEGREEN_ARGS (extra `bluegreen copy` flags, for experiments; recorded),
#              BENCH_SETTINGS (extra setting=value words for both servers; recorded).
#
# Every run copies the whole factory_telemetry database (schema, data, indexes, constraints,
# materialized views) into a freshly created, empty target database; leftovers (slots,
# publications, subscriptions) are dropped between runs; the target's row count of every
# table and materialized view, and its number of indexes and constraints, must equal the
# source's, or the run fails the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scale=5
rounds=3
tools="bluegreen,dump-psql,dump-restore-j2,pgcopydb,subscription"
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "copy.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a tool_list <<<"$tools"
for t in "${tool_list[@]}"; do
  case "$t" in bluegreen|dump-psql|dump-restore-j2|pgcopydb|subscription) ;;
    *) echo "copy.sh: unknown tool $t" >&2; exit 2 ;; esac
done

# The same server settings for every tool. testkit adds wal_level=logical, fsync=off,
# full_page_writes=off, synchronous_commit=off (no durability cost: the benchmark measures
# the tools, not the disk), max_replication_slots=20, max_wal_senders=20.
settings=(
  shared_buffers=1GB
  maintenance_work_mem=1GB
  max_parallel_maintenance_workers=2
  max_wal_size=16GB
  checkpoint_timeout=30min
)
# shellcheck disable=SC2206
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

scripts/setup.sh --bench
. bench/lib.sh
bench_build
bench_workdir copy
chmod 711 "$work"   # the target server (postgres OS user) reads the subscription's passfile here

echo "== starting source and target (settings: ${settings[*]})"
bench_servers
export PGPASSWORD="$DB_PASSWORD"   # passwords only ever in the environment or a passfile
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt_admin="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=postgres sslmode=disable"
src_uri="postgresql://postgres@127.0.0.1:$SOURCE_PORT/factory_telemetry?sslmode=disable"
tgt_uri="postgresql://postgres@127.0.0.1:$TARGET_PORT/factory_telemetry?sslmode=disable"
# The subscriber's walreceiver runs as the target server: it reads the password from a passfile.
printf '127.0.0.1:%s:*:postgres:%s\n' "$SOURCE_PORT" "$DB_PASSWORD" >"$work/pgpass"
chown postgres "$work/pgpass" 2>/dev/null || true
chmod 600 "$work/pgpass"

echo "== loading factory_telemetry at scale $scale into the source"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale"
# bluegreen refuses to publish a table whose UPDATEs/DELETEs would then fail on the source.
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
# Settle the source once, so no tool pays for the first reader's hint-bit writes.
$PSQL "$src" -c "VACUUM (ANALYZE, FREEZE)" -c "CHECKPOINT"
src_bytes=$($pgbin/psql -XAt "$src" -c "SELECT pg_database_size(current_database())")
echo "   source database: $((src_bytes / 1024 / 1024)) MB"

# Every user table and materialized view with its exact row count, then the number of
# indexes and constraints: what each run must reproduce on the target.
counts_sql="
SELECT format('%s.%s rows=%s', n.nspname, c.relname,
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bluegreen', 'pgcopydb')
   AND n.nspname NOT LIKE 'pg\\_%'
UNION ALL
SELECT format('indexes=%s', count(*)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'factory_telemetry'
UNION ALL
SELECT format('constraints=%s', count(*)) FROM pg_constraint WHERE connamespace = 'factory_telemetry'::regnamespace
ORDER BY 1"
$pgbin/psql -XAt "$src" -c "$counts_sql" >"$work/source.counts"
echo "   $(grep -c rows= "$work/source.counts") tables and materialized views, $(grep -E '^(indexes|constraints)' "$work/source.counts" | tr '\n' ' ')"

# Drops everything a run may have left: the target database (after its subscriptions), the
# source's slots and publications; then checkpoints both servers.
reset_servers() {
  if $pgbin/psql -XAt "$tgt_admin" -c "SELECT 1 FROM pg_database WHERE datname = 'factory_telemetry'" | grep -q 1; then
    $pgbin/psql -XAt "$tgt" -c "SELECT subname FROM pg_subscription" | while read -r sub; do
      [ -n "$sub" ] || continue
      $PSQL "$tgt" -c "ALTER SUBSCRIPTION \"$sub\" DISABLE" \
                   -c "ALTER SUBSCRIPTION \"$sub\" SET (slot_name = NONE)" \
                   -c "DROP SUBSCRIPTION \"$sub\""
    done
  fi
  $PSQL "$src" >/dev/null <<'SQL'
SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL;
SELECT pg_sleep(0.2);
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
SELECT format('DROP PUBLICATION %I', pubname) FROM pg_publication \gexec
SQL
  $PSQL "$tgt_admin" -c "DROP DATABASE IF EXISTS factory_telemetry WITH (FORCE)" \
                     -c "CREATE DATABASE factory_telemetry" -c "CHECKPOINT"
  $PSQL "$src" -c "CHECKPOINT"
  rm -rf "$work/run"
  mkdir -p "$work/run"
  sleep 1
}

maxrss() { awk -F': ' '/Maximum resident set size/ {print $2}' "$@" | sort -n | tail -1; }
# CPU seconds (user + system) of the tool's processes, from every /usr/bin/time report of the run.
toolcpu() { cat "$work"/run/time* 2>/dev/null | awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}'; }
# CPU seconds used so far by one server: the postmaster, its exited children (backends,
# parallel and replication workers) and its live ones.
clk=$(getconf CLK_TCK)
servercpu() {
  local conn=$1 pm ticks=0 c f
  pm=$($pgbin/psql -XAt "$conn" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
  pm=$(awk '{print $4}' "/proc/$pm/stat")
  sleep 0.3   # let the postmaster reap backends that just ended
  read -r -a f <"/proc/$pm/stat"
  ticks=$(( f[13] + f[14] + f[15] + f[16] ))
  for c in $(cat /proc/"$pm"/task/*/children 2>/dev/null); do
    read -r -a f <"/proc/$c/stat" 2>/dev/null || continue
    ticks=$(( ticks + f[13] + f[14] ))
  done
  echo "scale=2; $ticks / $clk" | bc
}
TIME="/usr/bin/time -v"

# Each run_* function copies source → target and sets: rss_kb (largest tool process),
# note (anything worth recording). The caller times it end to end.
run_bluegreen() {
  # shellcheck disable=SC2086
  RUST_LOG=info $TIME -o "$work/run/time" "$bin/bluegreen" copy --source "$src" --target "$tgt" \
    --run bench ${BENCH_BLUEGREEN_ARGS:-} >"$work/run/out" 2>"$work/run/log" &
  local tpid=$! bpid="" hwm=0
  # bluegreen's own peak RSS (VmHWM, sampled); /usr/bin/time's figure also covers its pg_dump children.
  while kill -0 "$tpid" 2>/dev/null; do
    [ -n "$bpid" ] || bpid=$(pgrep -P "$tpid" -x bluegreen || true)
    if [ -n "$bpid" ]; then
      local v
      v=$(awk '/VmHWM/ {print $2}' "/proc/$bpid/status" 2>/dev/null || true)
      [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
    fi
    sleep 0.05
  done
  if ! wait "$tpid"; then tail -20 "$work/run/log" >&2; return 1; fi
  rss_kb=$hwm
  [ "$rss_kb" -gt 0 ] || rss_kb=$(maxrss "$work/run/time")
  local steps
  steps=$($pgbin/psql -XAt "$tgt" -c "SELECT string_agg(format('%s %s', step, round(seconds::numeric, 2)), ', ' ORDER BY id) FROM bluegreen.audit")
  note="own VmHWM; with pg_dump children $(( $(maxrss "$work/run/time") / 1024 )) MB; steps: $steps"
}

run_dump_psql() {
  $TIME -o "$work/run/time.dump" $pgbin/pg_dump "$src" \
    | $TIME -o "$work/run/time.psql" $PSQL "$tgt" >/dev/null
  rss_kb=$(maxrss "$work/run/time.dump" "$work/run/time.psql")
  note="largest of pg_dump, psql"
}

run_dump_restore_j2() {
  local t0 t1
  t0=$(now)
  $TIME -o "$work/run/time.dump" $pgbin/pg_dump -Fd -j 2 -f "$work/run/dump" "$src"
  t1=$(now)
  $TIME -o "$work/run/time.restore" $pgbin/pg_restore -j 2 -d "$tgt" "$work/run/dump"
  rss_kb=$(maxrss "$work/run/time.dump" "$work/run/time.restore")
  note="pg_dump $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s; largest of pg_dump, pg_restore (per process)"
}

run_pgcopydb() {
  $TIME -o "$work/run/time" pgcopydb clone --source "$src_uri" --target "$tgt_uri" \
    --dir "$work/run/pgcopydb" --table-jobs 2 --index-jobs 2 >"$work/run/log" 2>&1 \
    || { tail -20 "$work/run/log" >&2; return 1; }
  rss_kb=$(maxrss "$work/run/time")
  note="largest process of its tree"
}

run_subscription() {
  local t0 t1 left
  t0=$(now)
  $TIME -o "$work/run/time.dump" $pgbin/pg_dump --schema-only "$src" \
    | $TIME -o "$work/run/time.psql" $PSQL "$tgt" >/dev/null
  t1=$(now)
  $PSQL "$src" -c "CREATE PUBLICATION bench_pub FOR ALL TABLES"
  $PSQL "$tgt" -c "SET client_min_messages = warning" -c "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable passfile=$work/pgpass' PUBLICATION bench_pub"
  local deadline=$(( $(date +%s) + 7200 ))
  while :; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "subscription: tables not ready after 2 h" >&2; return 1; }
    left=$($pgbin/psql -XAt "$tgt" -c "SELECT count(*) FILTER (WHERE srsubstate <> 'r') + (count(*) = 0)::int FROM pg_subscription_rel")
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  # The subscriber copies tables only: fill the materialized views as the other tools do.
  $pgbin/psql -XAt "$tgt" -c "SELECT format('REFRESH MATERIALIZED VIEW %I.%I', schemaname, matviewname) FROM pg_matviews WHERE schemaname = 'factory_telemetry'" \
    | while read -r stmt; do [ -n "$stmt" ] && $PSQL "$tgt" -c "$stmt"; done
  rss_kb=$(maxrss "$work/run/time.dump" "$work/run/time.psql")
  note="schema (pg_dump --schema-only | psql, included) $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s; RSS of pg_dump/psql only (the copy runs in server processes)"
}

csv="$work/runs.csv"
echo "round,tool,seconds,rss_kb,load1,cpu_s,note" >"$csv"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
n=${#tool_list[@]}
for r in $(seq 1 "$rounds"); do
  for i in $(seq 0 $((n - 1))); do
    tool=${tool_list[$(( (i + r - 1) % n ))]}
    reset_servers
    load1=$(cut -d' ' -f1 /proc/loadavg)
    rss_kb=0
    note=""
    current="round $r: $tool"
    s0=$(servercpu "$src"); g0=$(servercpu "$tgt_admin")
    t0=$(now)
    "run_${tool//-/_}"   # any failure ends the benchmark (set -e), named by the EXIT trap
    t1=$(now)
    current=""
    secs=$(echo "$t1 - $t0" | bc)
    s1=$(servercpu "$src"); g1=$(servercpu "$tgt_admin")
    cpu=$(echo "$s1 - $s0 + $g1 - $g0 + $(toolcpu)" | bc)
    note="CPU s: source $(echo "$s1 - $s0" | bc), target $(echo "$g1 - $g0" | bc), tool $(toolcpu); $note"
    $pgbin/psql -XAt "$tgt" -c "$counts_sql" >"$work/run/target.counts"
    if ! diff -u "$work/source.counts" "$work/run/target.counts" >"$work/run/counts.diff"; then
      echo "round $r: $tool copied something else than the source holds:" >&2
      cat "$work/run/counts.diff" >&2
      exit 1
    fi
    printf 'round %s  %-16s %7.2f s  %6d MB  %6.1f CPU s  load %s\n' "$r" "$tool" "$secs" $((rss_kb / 1024)) "$cpu" "$load1"
    echo "$r,$tool,$secs,$rss_kb,$load1,$cpu,\"${note//\"/\'}\"" >>"$csv"
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
reset_servers

# What the results depend on, for RESULTS.md.
pg_version=$($pgbin/psql -XAt "$src" -c "SHOW server_version")
server_settings=$($pgbin/psql -XAt "$tgt_admin" -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','maintenance_work_mem','max_parallel_maintenance_workers','max_wal_size','checkpoint_timeout','fsync','full_page_writes','synchronous_commit','wal_level','work_mem','max_worker_processes','max_parallel_workers','max_sync_workers_per_subscription','max_logical_replication_workers','autovacuum')")
commit=$bg_version
cat >"$work/meta.env" <<EOF
scale=$scale
rounds=$rounds
source_mb=$((src_bytes / 1024 / 1024))
nproc=$(nproc)
memory=$(awk '/MemTotal/ {printf "%.0f GB", $2/1024/1024}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
postgresql=$pg_version
pg_dump=$($pgbin/pg_dump --version | awk '{print $3}')
pgcopydb=$(pgcopydb --version 2>/dev/null | awk '/pgcopydb version/ {print $3}')
bluegreen=$commit
bluegreen_args=${BENCH_BLUEGREEN_ARGS:-}
settings=$server_settings
load_start=$load_start
load_end=$load_end
date=$(date -u +%Y-%m-%dT%H:%MZ)
EOF
args=(--csv "$csv" --meta "$work/meta.env")
[ "$record" = 1 ] && args+=(--record "$root/bench/RESULTS.md")
python3 bench/copy/summarize.py "${args[@]}"
