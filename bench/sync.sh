#!/usr/bin/env bash
# Sync benchmark: how fast `bluegreen sync` catches up on changes that piled up in its slot,
# against PostgreSQL's own subscriber and the walsender's own ceiling, on the same changes.
#
# Usage: bench/sync.sh [--rows N] [--mixes LIST] [--consumers LIST] [--rounds R]
#                      [--big-rows N] [--lag-seconds S] [--skip-big] [--skip-lag]
#                      [--no-record] [--keep]
#   --rows N         changed rows per mix (default 600000; mix b gets 3×N, since it is the
#                    fastest to apply)
#   --mixes LIST     subset of a,b,c,d (default all):
#                      a  metric_hist INSERT, 1 row per transaction
#                      b  metric_hist INSERT, 100 rows per transaction
#                      c  metric_latest INSERT … ON CONFLICT DO UPDATE, 14 rows per transaction
#                      d  metric_hist UPDATE + DELETE by id, 1 of each per transaction
#   --consumers LIST subset of bluegreen,subscription,ceiling (default all three)
#   --rounds R       every mix R times (default 1); the consumers' order rotates from one
#                    measurement to the next, so machine noise hits every consumer alike
#   --big-rows N     rows of the single large transaction of the memory test (default 10000000)
#   --lag-seconds S  length of each write-load run of the lag test (default 60)
#   --skip-big, --skip-lag  leave out the memory test / the lag test
#   --no-record      print only; do not append to bench/RESULTS.md
#   --keep           leave the work directory (logs, CSVs, RSS and lag samples) behind
# Environment: BENCH_SYNC_ARGS (extra `bluegreen sync` flags; recorded),
#              BENCH_SETTINGS (extra setting=value words for both servers; recorded),
#              BENCH_BIN (directory with prebuilt bluegreen, bg-fixture, bg-servers: skips the
#              build) and BENCH_VERSION (what to call that build in the results).
#
# Design: identical starting state and identical changes for every consumer.
#   * One source and two target servers, all with the same settings: each applying consumer
#     has a server, and so a buffer pool, of its own, as green would. (With both targets'
#     databases in one server, from the second round on the two copies of metric_hist no
#     longer fit its shared buffers together, and whichever consumer ran second paid for
#     reading its pages back.) `bluegreen copy` creates the run (slot bluegreen_main at its
#     consistent point, publication bluegreen_main) and copies into the target database
#     factory_telemetry. Right after, that database is dumped and restored into the
#     subscriber's server (without bluegreen's state schema), and two more pgoutput slots
#     are created on the source: bench_sub (the subscription's, created with
#     copy_data = false, create_slot = false, disabled) and bench_ceiling (pg_recvlogical's).
#     No data changes between the copy and these slots, so all three consumers start from
#     the same data.
#   * Per mix: every slot is advanced to the same LSN after a CHECKPOINT (so every consumer
#     starts with the same restart_lsn and nothing old to re-decode); with NO consumer
#     attached, pgbench (-c 4 -j 2) writes the mix; then one 1-row marker transaction whose
#     commit end LSN (read exactly from a throwaway test_decoding slot) is the goal E.
#     Then each consumer in turn, alone on the machine, catches up from its own slot:
#       bluegreen     `bluegreen sync` started → the target's replication origin
#                     bluegreen_main (what `status` reports as applied_lsn, committed
#                     atomically with the changes) reaches E → SIGTERM
#       subscription  ALTER SUBSCRIPTION … ENABLE → its origin pg_<oid> (on the subscriber's
#                     server) reaches E → DISABLE
#       ceiling       pg_recvlogical --start --endpos E -o proto_version=1
#                     -o publication_names=bluegreen_main -f /dev/null: the walsender decoding
#                     and sending the same stream with nobody applying it
#     rows/s = changed rows (pg_stat_user_tables n_tup_ins+upd+del delta of the mix) / seconds.
#     Afterwards the source, the bluegreen target and the subscriber's database must hold the
#     same metric_hist and metric_latest (count + hash of every row), or the benchmark fails.
#   * Two cores are shared by every process of a measurement: walsender + pg_recvlogical
#     (ceiling), walsender + apply worker (subscription), walsender + bluegreen + target
#     backend (bluegreen). Each measurement records the CPU seconds of each of these
#     processes and of the whole machine, so the table shows who used the cores (and how
#     much others' work on the shared machine took), and the machine's iowait seconds (time
#     the cores sat idle waiting for the disk: reads a server's cache did not hold), and the
#     blocks the consumer's target database read into shared buffers from outside them.
#   * Memory: one transaction of --big-rows metric_hist rows (INSERT … SELECT generate_series),
#     applied by bluegreen alone, its RSS sampled every 0.5 s and its peak from /usr/bin/time -v.
#   * Lag: with bluegreen sync running, the plant workload (`bg-fixture workload`, rate set
#     far above what the source can do, so it writes as fast as it can) and then pgbench
#     1-row inserts (-c 4 -j 2, no rate limit) for --lag-seconds each; `bluegreen status
#     --json` is sampled every second: lag_seconds max and p95.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rows=600000
mixes="a,b,c,d"
consumers="bluegreen,subscription,ceiling"
rounds=1
big_rows=10000000
lag_seconds=60
do_big=1
do_lag=1
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; shift 2 ;;
    --mixes) mixes=$2; shift 2 ;;
    --consumers) consumers=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --big-rows) big_rows=$2; shift 2 ;;
    --lag-seconds) lag_seconds=$2; shift 2 ;;
    --skip-big) do_big=0; shift ;;
    --skip-lag) do_lag=0; shift ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "sync.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a mix_list <<<"$mixes"
IFS=, read -r -a consumer_list <<<"$consumers"
for m in "${mix_list[@]}"; do
  case "$m" in a|b|c|d) ;; *) echo "sync.sh: unknown mix $m" >&2; exit 2 ;; esac
done
has_consumer() { [[ ",$consumers," == *",$1,"* ]]; }
for c in "${consumer_list[@]}"; do
  case "$c" in bluegreen|subscription|ceiling) ;; *) echo "sync.sh: unknown consumer $c" >&2; exit 2 ;; esac
done

# The same server settings for every consumer. testkit adds wal_level=logical, fsync=off,
# full_page_writes=off, synchronous_commit=off (the benchmark measures the consumers, not the
# disk), max_replication_slots=20, max_wal_senders=20, max_prepared_transactions=4 (sync's
# second apply session). autovacuum is off so that nothing but the benchmark writes WAL while
# changes accumulate; the script VACUUMs between mixes. shared_buffers holds what round 2
# touches (metric_hist grows past 1.2 GB with its indexes): this machine's kernel pages cold
# file cache out (DAMON reclaim), so with 1 GB round 2 of mix d read from the disk (7.6 s of
# iowait in a 14.7 s catch-up at 7666bab, and 2.9 s for the subscription).
settings=(
  shared_buffers=3GB
  max_wal_size=16GB
  checkpoint_timeout=30min
  autovacuum=off
)
# shellcheck disable=SC2206
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

scripts/setup.sh --bench
. bench/lib.sh
bench_build
q() { $pgbin/psql -XAtq -v ON_ERROR_STOP=1 "$1" -c "$2"; }
tick=$(getconf CLK_TCK)
bench_workdir sync
chmod 711 "$work"   # the target server (postgres OS user) reads the subscription's passfile here

echo "== starting source, target and the subscriber's target (settings: ${settings[*]})"
bench_servers --subscriber
export PGPASSWORD="$DB_PASSWORD"   # passwords only ever in the environment or a passfile
base="host=127.0.0.1 user=postgres sslmode=disable"
src="$base port=$SOURCE_PORT dbname=factory_telemetry"
tgt="$base port=$TARGET_PORT dbname=factory_telemetry"
sub_db="$base port=$SUBSCRIBER_PORT dbname=factory_telemetry"
tgt_admin="$base port=$TARGET_PORT dbname=postgres"
sub_admin="$base port=$SUBSCRIBER_PORT dbname=postgres"
printf '127.0.0.1:%s:*:postgres:%s\n' "$SOURCE_PORT" "$DB_PASSWORD" >"$work/pgpass"
chown postgres "$work/pgpass" 2>/dev/null || true
chmod 600 "$work/pgpass"
pgbench() { $pgbin/pgbench -n -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres "$@" factory_telemetry; }

echo "== loading factory_telemetry at scale 0.05 into the source"
"$bin/bg-fixture" load --dsn "$src" --scale 0.05 >"$work/load.log" 2>&1
$PSQL "$src" <<'SQL'
ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL;
-- Numbered metric ids for the pgbench scripts; schema public is not published.
CREATE TABLE public.bench_defs AS
  SELECT row_number() OVER (ORDER BY id)::int AS n, id FROM factory_telemetry.metric_def;
ALTER TABLE public.bench_defs ADD PRIMARY KEY (n);
VACUUM (ANALYZE, FREEZE);
CHECKPOINT;
SQL
ndefs=$(q "$src" "SELECT count(*) FROM public.bench_defs")
echo "   $ndefs metrics; metric_hist $(q "$src" "SELECT count(*) FROM factory_telemetry.metric_hist") rows"

echo "== bluegreen copy (creates the run: slot and publication bluegreen_main)"
"$bin/bluegreen" copy --source "$src" --target "$tgt" >"$work/copy.out" 2>"$work/copy.log" \
  || { tail -20 "$work/copy.log" >&2; exit 1; }
tail -1 "$work/copy.out"

echo "== the subscriber's database (the copied target, dumped and restored) and the extra slots"
$pgbin/pg_dump -Fc --exclude-schema=bluegreen -f "$work/target.dump" "$tgt"
$pgbin/pg_restore --exit-on-error -d "$sub_db" "$work/target.dump"
rm -f "$work/target.dump"
q "$src" "SELECT pg_create_logical_replication_slot('bench_sub', 'pgoutput'),
                 pg_create_logical_replication_slot('bench_ceiling', 'pgoutput')" >/dev/null
$PSQL "$sub_db" -c "SET client_min_messages = warning" -c "CREATE SUBSCRIPTION bench_sub
  CONNECTION 'host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable passfile=$work/pgpass'
  PUBLICATION bluegreen_main
  WITH (copy_data = false, create_slot = false, slot_name = 'bench_sub', enabled = false)"
sub_origin="pg_$(q "$sub_db" "SELECT oid FROM pg_subscription WHERE subname = 'bench_sub'")"
slots="bluegreen_main bench_sub bench_ceiling"

# ---- helpers ----------------------------------------------------------------------------

# Source-side totals of changed rows in the published schema.
changed_rows() {
  q "$src" "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables
             WHERE schemaname = 'factory_telemetry'"
}

# Vacuum everywhere, checkpoint, then every slot to the same LSN with nothing left to re-decode.
settle() {
  local db
  q "$src" "VACUUM ANALYZE factory_telemetry.metric_hist, factory_telemetry.metric_latest, public.bench_defs"
  for db in "$tgt" "$sub_db"; do
    q "$db" "VACUUM ANALYZE factory_telemetry.metric_hist, factory_telemetry.metric_latest"
  done
  q "$tgt_admin" "CHECKPOINT"
  q "$sub_admin" "CHECKPOINT"
  # A committed transaction, then the running-xacts record of a checkpoint: decoding past them
  # gives every slot a new restart point.
  q "$src" "SELECT pg_current_xact_id()" >/dev/null
  q "$src" "CHECKPOINT"
  local to
  to=$(q "$src" "SELECT pg_current_wal_lsn()")
  for s in $slots; do
    q "$src" "SELECT pg_replication_slot_advance('$s', '$to')" >/dev/null
  done
  q "$src" "SELECT string_agg(format('%s restart %s confirmed %s', slot_name, restart_lsn, confirmed_flush_lsn), '; ' ORDER BY slot_name)
              FROM pg_replication_slots"
}

# Runs a 1-row transaction and prints its commit's end LSN: the position every consumer must
# reach (read from a throwaway test_decoding slot created just before it).
marker() {
  q "$src" "SELECT pg_create_logical_replication_slot('bench_marker', 'test_decoding')" >/dev/null
  # Flushed at once (the servers run with synchronous_commit = off): decoding reads only flushed WAL.
  q "$src" "SET synchronous_commit = on; INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
              SELECT id, clock_timestamp(), -1 FROM public.bench_defs WHERE n = 1"
  q "$src" "SELECT lsn FROM pg_logical_slot_peek_changes('bench_marker', NULL, NULL)
             WHERE data LIKE 'COMMIT%' ORDER BY lsn DESC LIMIT 1"
  q "$src" "SELECT pg_drop_replication_slot('bench_marker')" >/dev/null
}

# Blocks until the replication origin $2 on the server of $1 has applied $3; prints that
# server's clock at that moment. Fails if the consumer process $4 (if given) dies first.
wait_origin() {
  local dsn=$1 origin=$2 lsn=$3 watch=${4:-} out=$work/wait.out
  $pgbin/psql -XAtq -v ON_ERROR_STOP=1 "$dsn" \
    -c "DO \$\$ DECLARE deadline timestamptz := clock_timestamp() + interval '3600 s'; BEGIN
          WHILE coalesce((SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = '$origin'), '0/0') < '$lsn'::pg_lsn LOOP
            IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'origin $origin did not reach $lsn'; END IF;
            PERFORM pg_sleep(0.02);
          END LOOP; END \$\$" \
    -c "SELECT extract(epoch FROM clock_timestamp())" >"$out" &
  local wpid=$!
  while kill -0 "$wpid" 2>/dev/null; do
    if [ -n "$watch" ] && ! kill -0 "$watch" 2>/dev/null; then
      kill "$wpid" 2>/dev/null || true
      echo "the consumer ended before reaching $lsn" >&2
      return 1
    fi
    sleep 0.1
  done
  wait "$wpid"
  cat "$out"
}

# In the background: CPU ticks of the processes whose pids query $2 on $1 returns (one a
# line; the first answer counts), summed and written to $3 every 0.2 s (a process's last
# value stays when it ends).
cpu_sampler() {
  local dsn=$1 query=$2 out=$3 pids=""
  echo "0" >"$out"
  while :; do
    if [ -z "$pids" ]; then
      pids=$($pgbin/psql -XAtq "$dsn" -c "$query" 2>/dev/null | tr '\n' ' ' || true)
      [ -n "${pids// /}" ] || { pids=""; sleep 0.1; continue; }
      declare -A last=()
    fi
    local p t sum=0 alive=0
    for p in $pids; do
      t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && [ -n "$t" ] && { last[$p]=$t; alive=1; }
      sum=$(( sum + ${last[$p]:-0} ))
    done
    echo "$sum" >"$out.tmp" && mv "$out.tmp" "$out"
    [ "$alive" = 1 ] || break
    sleep 0.2
  done
}
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
iowait_ticks() { awk '/^cpu / {print $6}' /proc/stat; }
ticks_s() { echo "scale=2; $1 / $tick" | bc; }
time_cpu() { awk '/User time/ {u=$NF} /System time/ {s=$NF} END {printf "%.2f", u + s}' "$1"; }
time_rss() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

walsender_q() { echo "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1' AND active_pid IS NOT NULL"; }
# Blocks the database $1 has read into its server's shared buffers from outside them (the OS
# cache or the disk): the applier's buffer misses, read once the consumer's backends have
# exited (a backend's counts reach pg_stat_database at the latest when it ends).
blks_read() { q "$1" "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()"; }

# Each consume_* catches up to $1 and sets: secs, cpu_client, cpu_wal, cpu_target, rss_kb,
# target_reads.
consume_bluegreen() {
  local goal=$1 d=$work/m r0
  r0=$(blks_read "$tgt")
  # shellcheck disable=SC2086
  RUST_LOG=info /usr/bin/time -v -o "$d/bg.time" "$bin/bluegreen" sync --source "$src" --target "$tgt" \
    ${BENCH_SYNC_ARGS:-} >"$d/bg.out" 2>"$d/bg.log" &
  local tpid=$!
  local t0
  t0=$(now)
  cpu_sampler "$src" "$(walsender_q bluegreen_main)" "$d/cpu.wal" & local s1=$!
  # Every session bluegreen has on the target (apply sessions, state and status), once its
  # apply sessions are all connected (the applier registers its pid after that).
  cpu_sampler "$tgt" "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bluegreen'
                        AND EXISTS (SELECT 1 FROM bluegreen.apply WHERE run = 'main' AND heartbeat > now() - interval '5 s' AND pid IS NOT NULL)" "$d/cpu.tgt" & local s2=$!
  local t1
  t1=$(wait_origin "$tgt_admin" bluegreen_main "$goal" "$tpid") || { tail -20 "$d/bg.log" >&2; return 1; }
  sleep 0.3   # one more sample
  cpu_wal=$(ticks_s "$(cat "$d/cpu.wal")"); cpu_target=$(ticks_s "$(cat "$d/cpu.tgt")")
  kill "$s1" "$s2" 2>/dev/null || true
  kill -TERM "$(pgrep -P "$tpid" -x bluegreen)" 2>/dev/null || true
  wait "$tpid" || { tail -20 "$d/bg.log" >&2; return 1; }
  secs=$(echo "$t1 - $t0" | bc)
  cpu_client=$(time_cpu "$d/bg.time")
  rss_kb=$(time_rss "$d/bg.time")
  target_reads=$(( $(blks_read "$tgt") - r0 ))
}

consume_subscription() {
  local goal=$1 d=$work/m t0 t1 r0
  r0=$(blks_read "$sub_db")
  t0=$(now)
  q "$sub_db" "ALTER SUBSCRIPTION bench_sub ENABLE"
  cpu_sampler "$src" "$(walsender_q bench_sub)" "$d/cpu.wal" & local s1=$!
  cpu_sampler "$sub_db" "SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_sub' AND relid IS NULL AND pid IS NOT NULL" "$d/cpu.tgt" & local s2=$!
  t1=$(wait_origin "$sub_admin" "$sub_origin" "$goal")
  sleep 0.3
  cpu_wal=$(ticks_s "$(cat "$d/cpu.wal")"); cpu_target=$(ticks_s "$(cat "$d/cpu.tgt")")
  kill "$s1" "$s2" 2>/dev/null || true
  q "$sub_db" "ALTER SUBSCRIPTION bench_sub DISABLE"
  for _ in $(seq 1 300); do
    [ "$(q "$src" "SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_sub'")" = f ] && break
    sleep 0.1
  done
  secs=$(echo "$t1 - $t0" | bc)
  cpu_client=0
  rss_kb=0
  target_reads=$(( $(blks_read "$sub_db") - r0 ))
}

consume_ceiling() {
  local goal=$1 d=$work/m t0 t1
  cpu_sampler "$src" "$(walsender_q bench_ceiling)" "$d/cpu.wal" & local s1=$!
  t0=$(now)
  /usr/bin/time -v -o "$d/rl.time" $pgbin/pg_recvlogical -d "$src" --slot bench_ceiling --start \
    --endpos "$goal" -o proto_version=1 -o publication_names=bluegreen_main -F 0 -f /dev/null \
    2>"$d/rl.log" || { cat "$d/rl.log" >&2; return 1; }
  t1=$(now)
  sleep 0.3
  cpu_wal=$(ticks_s "$(cat "$d/cpu.wal")")
  kill "$s1" 2>/dev/null || true
  secs=$(echo "$t1 - $t0" | bc)
  cpu_client=$(time_cpu "$d/rl.time")
  cpu_target=0
  rss_kb=$(time_rss "$d/rl.time")
  target_reads=0
}

fingerprint() {
  q "$1" "SELECT (SELECT format('%s/%s', count(*), sum(hashtext(t::text)::bigint)) FROM factory_telemetry.metric_hist t)
           || ' ' || (SELECT format('%s/%s', count(*), sum(hashtext(t::text)::bigint)) FROM factory_telemetry.metric_latest t)"
}

# ---- the mixes ----------------------------------------------------------------------------

mix_script() {
  case "$1" in
    a) echo bench/sync/a_insert_1.sql ;; b) echo bench/sync/b_insert_100.sql ;;
    c) echo bench/sync/c_upsert_14.sql ;; d) echo bench/sync/d_update_delete.sql ;;
  esac
}
# Transactions per pgbench client (4 clients) for about N changed rows.
mix_txns() {
  case "$1" in
    a) echo $(( rows / 4 )) ;; b) echo $(( rows * 3 / 100 / 4 )) ;;
    c) echo $(( rows / 14 / 4 )) ;; d) echo $(( rows / 2 / 4 )) ;;
  esac
}

csv=$work/results.csv
echo "round,mix,consumer,rows,wal_bytes,seconds,rows_per_s,cpu_client,cpu_walsender,cpu_target,cpu_machine,iowait,load1,rss_kb,gen_tps,target_reads" >"$csv"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
nc=${#consumer_list[@]}
turn=0
for r in $(seq 1 "$rounds"); do
  for mix in "${mix_list[@]}"; do
    current="round $r mix $mix"
    echo "== round $r, mix $mix: settling (vacuum, checkpoint, every slot to one LSN)"
    echo "   $(settle)"
    before=$(changed_rows)
    start_lsn=$(q "$src" "SELECT pg_current_wal_lsn()")
    minid=$(q "$src" "SELECT min(id) FROM factory_telemetry.metric_hist")
    maxid=$(q "$src" "SELECT max(id) FROM factory_telemetry.metric_hist")
    echo "   writing mix $mix with no consumer attached ($(mix_txns "$mix") transactions × 4 clients)"
    pgbench -f "$(mix_script "$mix")" -t "$(mix_txns "$mix")" -c 4 -j 2 \
      -D ndefs="$ndefs" -D minid="$minid" -D maxid="$maxid" >"$work/pgbench.$r.$mix.log" 2>&1 \
      || { cat "$work/pgbench.$r.$mix.log" >&2; exit 1; }
    gen_tps=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.$r.$mix.log")
    goal=$(marker)
    after=$(changed_rows)
    n=$(( after - before ))
    wal=$(q "$src" "SELECT pg_wal_lsn_diff('$goal', '$start_lsn')::bigint")
    echo "   $n changed rows, $(( wal / 1024 / 1024 )) MB of WAL, source at $gen_tps tps; goal LSN $goal"
    for i in $(seq 0 $((nc - 1))); do
      consumer=${consumer_list[$(( (i + turn) % nc ))]}
      rm -rf "$work/m"; mkdir -p "$work/m"
      load1=$(cut -d' ' -f1 /proc/loadavg)
      current="round $r mix $mix: $consumer"
      b0=$(busy_ticks); w0=$(iowait_ticks)
      "consume_$consumer" "$goal"
      b1=$(busy_ticks); w1=$(iowait_ticks)
      cpu_machine=$(ticks_s $(( b1 - b0 ))); iowait=$(ticks_s $(( w1 - w0 )))
      rate=$(echo "$n / $secs" | bc)
      printf '   %-13s %8.2f s %9d rows/s   cpu s: client %6s walsender %6s target %6s machine %6s iowait %5s  load %s  target reads %s\n' \
        "$consumer" "$secs" "$rate" "$cpu_client" "$cpu_wal" "$cpu_target" "$cpu_machine" "$iowait" "$load1" "$target_reads"
      echo "$r,$mix,$consumer,$n,$wal,$secs,$rate,$cpu_client,$cpu_wal,$cpu_target,$cpu_machine,$iowait,$load1,$rss_kb,$gen_tps,$target_reads" >>"$csv"
      [ "$consumer" = bluegreen ] && cp "$work/m/bg.log" "$work/bluegreen.$r.$mix.log"
    done
    turn=$(( turn + 1 ))
    # Every applying consumer must now hold exactly what the source holds.
    want=$(fingerprint "$src")
    has_consumer bluegreen && { got=$(fingerprint "$tgt"); [ "$got" = "$want" ] || { echo "bluegreen's target differs: $got vs source $want" >&2; exit 1; }; }
    has_consumer subscription && { got=$(fingerprint "$sub_db"); [ "$got" = "$want" ] || { echo "the subscriber differs: $got vs source $want" >&2; exit 1; }; }
    echo "   targets equal the source (metric_hist, metric_latest: $want)"
  done
done
current=""

# ---- memory: one large transaction --------------------------------------------------------
big_csv=$work/big.csv
echo "what,value" >"$big_csv"
if [ "$do_big" = 1 ]; then
  current="memory test"
  echo "== memory: one transaction of $big_rows metric_hist rows, applied by bluegreen alone"
  # The other consumers' slots would only hold WAL back from now on.
  q "$sub_db" "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)"
  q "$sub_db" "DROP SUBSCRIPTION bench_sub"
  q "$src" "SELECT pg_drop_replication_slot('bench_sub'), pg_drop_replication_slot('bench_ceiling')" >/dev/null
  slots="bluegreen_main"
  echo "   $(settle)"
  t0=$(now)
  q "$src" "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
              SELECT d.id, timestamptz '2026-01-01' + g * interval '1 ms', g * 0.25
                FROM generate_series(1, $big_rows) g JOIN public.bench_defs d ON d.n = 1 + g % $ndefs"
  t1=$(now)
  goal=$(marker)
  echo "   written in $(printf '%.0f' "$(echo "$t1 - $t0" | bc)") s; goal LSN $goal"
  rm -rf "$work/m"; mkdir -p "$work/m"
  load1=$(cut -d' ' -f1 /proc/loadavg)
  # shellcheck disable=SC2086
  RUST_LOG=info /usr/bin/time -v -o "$work/m/bg.time" "$bin/bluegreen" sync --source "$src" --target "$tgt" \
    ${BENCH_SYNC_ARGS:-} >"$work/m/bg.out" 2>"$work/m/bg.log" &
  tpid=$!
  t0=$(now)
  (
    bpid=""
    while [ -z "$bpid" ]; do bpid=$(pgrep -P "$tpid" -x bluegreen || true); sleep 0.05; done
    echo "seconds,rss_kb,walsender_behind_bytes" >"$work/rss.csv"
    while [ -r "/proc/$bpid/status" ]; do
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$bpid/status" 2>/dev/null || true)
      sent=$($pgbin/psql -XAtq "$src" -c "SELECT pg_wal_lsn_diff('$goal'::pg_lsn, sent_lsn)::bigint FROM pg_stat_replication LIMIT 1" 2>/dev/null || true)
      [ -n "$rss" ] && echo "$(echo "$(now) - $t0" | bc),$rss,${sent:-}" >>"$work/rss.csv"
      sleep 0.5
    done
  ) &
  sampler=$!
  t1=$(wait_origin "$tgt_admin" bluegreen_main "$goal" "$tpid") || { tail -20 "$work/m/bg.log" >&2; exit 1; }
  kill -TERM "$(pgrep -P "$tpid" -x bluegreen)" 2>/dev/null || true
  wait "$tpid" || { tail -20 "$work/m/bg.log" >&2; exit 1; }
  wait "$sampler" 2>/dev/null || true
  secs=$(echo "$t1 - $t0" | bc)
  peak=$(time_rss "$work/m/bg.time")
  cp "$work/m/bg.log" "$work/bluegreen.big.log"
  want=$(fingerprint "$src"); got=$(fingerprint "$tgt")
  [ "$got" = "$want" ] || { echo "after the large transaction bluegreen's target differs: $got vs $want" >&2; exit 1; }
  {
    echo "rows,$big_rows"
    echo "seconds,$secs"
    echo "load1,$load1"
    echo "peak_rss_kb,$peak"
    echo "cpu_client,$(time_cpu "$work/m/bg.time")"
  } >>"$big_csv"
  printf '   applied in %.1f s (%d rows/s), peak RSS %d MB\n' "$secs" "$(echo "$big_rows / $secs" | bc)" $((peak / 1024))
  current=""
fi

# ---- lag under the highest write rate the source sustains --------------------------------
lag_csv=$work/lag.csv
echo "load,second,lag_seconds,lag_bytes,rows_per_second" >"$lag_csv"
lag_meta=$work/lag.meta
: >"$lag_meta"
if [ "$do_lag" = 1 ]; then
  current="lag test"
  echo "== lag: bluegreen sync running while the source writes as fast as it can"
  q "$src" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name <> 'bluegreen_main'" >/dev/null
  slots="bluegreen_main"
  echo "   $(settle)"
  # shellcheck disable=SC2086
  RUST_LOG=info "$bin/bluegreen" sync --source "$src" --target "$tgt" ${BENCH_SYNC_ARGS:-} \
    >"$work/lag.bg.out" 2>"$work/lag.bg.log" &
  sync_pid=$!
  sleep 5
  lag_run() {   # name, then the writer command
    local name=$1; shift
    local before after t0 t1 s=0
    before=$(changed_rows)
    t0=$(now)
    "$@" >"$work/lag.$name.log" 2>&1 &
    local wpid=$!
    while kill -0 "$wpid" 2>/dev/null; do
      sleep 1
      s=$((s + 1))
      "$bin/bluegreen" status --target "$tgt" --json 2>/dev/null \
        | jq -r --arg n "$name" --arg s "$s" '[$n, $s, .sync.lag_seconds, .sync.lag_bytes, .sync.rows_per_second] | @csv' \
        | tr -d '"' >>"$lag_csv" || true
    done
    wait "$wpid" || { tail -20 "$work/lag.$name.log" >&2; return 1; }
    t1=$(now)
    after=$(changed_rows)
    kill -0 "$sync_pid" || { tail -20 "$work/lag.bg.log" >&2; return 1; }
    echo "$name.rows=$((after - before))" >>"$lag_meta"
    echo "$name.seconds=$(echo "$t1 - $t0" | bc)" >>"$lag_meta"
    echo "$name.load1=$(cut -d' ' -f1 /proc/loadavg)" >>"$lag_meta"
    echo "   $name: $((after - before)) changed rows in $(printf '%.0f' "$(echo "$t1 - $t0" | bc)") s; lag_seconds max $(awk -F, -v n="$name" '$1 == n {if ($3 > m) m = $3} END {print m + 0}' "$lag_csv")"
  }
  lag_run fixture "$bin/bg-fixture" workload --dsn "$src" --seconds "$lag_seconds" --rate 1000000 --ledger "$work/ledger"
  sleep 5
  lag_run pgbench pgbench -f bench/sync/a_insert_1.sql -T "$lag_seconds" -c 4 -j 2 -D ndefs="$ndefs"
  sleep 5
  kill -TERM "$sync_pid"
  wait "$sync_pid" || { tail -20 "$work/lag.bg.log" >&2; exit 1; }
  "$bin/bg-fixture" check --dsn "$tgt" --ledger "$work/ledger" >"$work/lag.check.log" 2>&1 \
    || { echo "the target misses writes of the plant workload:" >&2; tail "$work/lag.check.log" >&2; exit 1; }
  current=""
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

pg_version=$(q "$src" "SHOW server_version")
server_settings=$(q "$tgt_admin" "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','max_wal_size','checkpoint_timeout','fsync','full_page_writes','synchronous_commit','wal_level','work_mem','autovacuum','logical_decoding_work_mem','wal_sender_timeout','max_prepared_transactions')")
cat >"$work/meta.env" <<EOF
rows=$rows
rounds=$rounds
mixes=$mixes
consumers=$consumers
ndefs=$ndefs
nproc=$(nproc)
memory=$(awk '/MemTotal/ {printf "%.0f GB", $2/1024/1024}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
postgresql=$pg_version
bluegreen=$bg_version
sync_args=${BENCH_SYNC_ARGS:-}
settings=$server_settings
load_start=$load_start
load_end=$load_end
lag_seconds=$lag_seconds
date=$(date -u +%Y-%m-%dT%H:%MZ)
EOF
cat "$lag_meta" >>"$work/meta.env"
args=(--csv "$csv" --big "$big_csv" --lag "$lag_csv" --meta "$work/meta.env")
[ -f "$work/rss.csv" ] && args+=(--rss "$work/rss.csv")
[ "$record" = 1 ] && args+=(--record "$root/bench/RESULTS.md")
python3 bench/sync/summarize.py "${args[@]}"
