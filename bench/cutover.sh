#!/usr/bin/env bash
# Cutover benchmark: how long clients writing through PgBouncer are held up by `bluegreen
# cutover` and `bluegreen rollback`, whether any of their transactions fails, and whether any
# write is lost, over repeated flips blue → green → blue under a steady write load.
#
# Usage: bench/cutover.sh [--tps LIST] [--flips N] [--clients C] [--cycle-seconds S]
#                         [--scale S] [--script FILE] [--no-verify] [--no-record] [--keep]
#   --tps LIST         client rates, one measurement each (default 200,1000)
#   --flips N          cutovers per rate, each followed by a rollback (default 10: 20 flips)
#   --clients C        pgbench clients (default 8, over 2 threads)
#   --cycle-seconds S  time budgeted per cutover + rollback cycle when sizing pgbench's -T
#                      (default 30); flips stop when the load ends (pgbench cannot be stopped
#                      early without losing its log), and the load runs on after the last one
#   --scale S          fixture scale (default 0.05)
#   --script FILE      pgbench script of one client transaction (default bench/cutover/txn.sql:
#                      four round trips; bench/cutover/txn-one-trip.sql writes the same rows
#                      in one statement, one round trip)
#   --no-capacity      skip the applier capacity measurement
#   --no-verify        skip the closing `bluegreen verify`
#   --no-record        print only; do not append to bench/RESULTS.md
#   --keep             leave the work directory (pgbench logs, flip outputs, sync logs) behind
# Environment: BENCH_SETTINGS (extra setting=value words for both servers; recorded),
#              BENCH_SERVERS_ARGS (extra bg-servers flags, e.g. "--source-rtt-ms 20"; recorded),
#              BENCH_FLIP_ARGS (extra cutover/rollback flags; recorded),
#              BENCH_BIN (directory with prebuilt bluegreen, bg-fixture, bg-servers: skips the
#              build) and BENCH_VERSION (what to call that build in the results).
#
# Design:
#   * bg-servers: blue (source) and green (target) PostgreSQL 15 and a PgBouncer (transaction
#     pooling) routing factory_telemetry to blue. The fixture (scale 0.05) on blue,
#     sensor_raw_log REPLICA IDENTITY FULL, `bluegreen copy`, `bluegreen sync` started.
#   * Per rate: pgbench -n -R <tps> -c 8 -j 2 -T <flips × cycle + 20 s> -l through PgBouncer,
#     script bench/cutover/txn.sql: one transaction = a marked metric_hist insert (bigserial id:
#     the sequence must follow the flips too) + a metric_latest upsert. After 5 s of load,
#     --flips times: forward sync caught up → `bluegreen cutover --no-verify-check` → forward
#     sync exits by itself → `bluegreen sync --reverse` started and caught up → `bluegreen
#     rollback --no-verify-check` → reverse sync exits by itself → forward `bluegreen sync`
#     started again. "Caught up" = the applier's applied_lsn (bluegreen.apply) has passed the
#     source's pg_current_wal_insert_lsn() read just before, with a live heartbeat. A refused or
#     failed flip (a guardrail, or the pre-drain timing out: traffic stays where it was) is
#     recorded and retried once sync has caught up again: a cutover up to 5 times (then the
#     rate gets no more flips), a rollback up to 20 (traffic must come back to blue).
#   * Failed transactions: pgbench's "number of failed transactions" plus every client that
#     aborted on an error (pgbench 15 aborts a client on any error but serialization/deadlock)
#     plus log lines that are not a completed transaction. Goal: 0.
#   * Client pause of a flip: the coordinator's pause window is read from its step log (the
#     `pause` step's wall-clock end minus its duration → the `resume` step's end); the client
#     pause is the longest time from being sent to being done (pgbench -l: latency minus
#     schedule lag) among the transactions on the wire during that window. Also reported: the
#     same with pgbench's own latency under -R (from the scheduled start), which adds waiting
#     behind pgbench's backlog when the machine cannot keep up with the rate. p50/p99/max over
#     the flips, next to the coordinator's `paused N ms` (first PAUSE sent to last RESUME
#     answered) and its per-step timings, and next to both latencies of transactions more than
#     1 s from any flip command's run: the machine's noise floor.
#   * Applier capacity (context for the drain): before the rates, pgbench runs the same script
#     on blue directly without a rate limit for 15 s while forward sync runs; capacity =
#     transactions / (time until a marker row inserted on blue right after them is on green).
#     When the applier kept up, that is only a lower bound (marked ≥).
#   * Zero loss: after each rate, forward sync caught up, then on blue and on green
#     count(*) and sum(hashtext(row)) of the rows that rate's pgbench inserted (marker
#     value_text = 'bench-cutover', value_int = tps) must be equal, and the count must equal
#     the transactions pgbench completed; at the end the whole metric_hist and metric_latest
#     fingerprints must be equal on both, and `bluegreen verify` must exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tps_list="200,1000"
flips=10
clients=8
cycle=30
scale=0.05
script=bench/cutover/txn.sql
do_verify=1
do_capacity=1
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tps) tps_list=$2; shift 2 ;;
    --flips) flips=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --cycle-seconds) cycle=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --script) script=$2; shift 2 ;;
    --no-verify) do_verify=0; shift ;;
    --no-capacity) do_capacity=0; shift ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "cutover.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a rates <<<"$tps_list"

# testkit's defaults (fsync=off, full_page_writes=off: the disk is not what is measured) with
# the production commit semantics: every client commit and every applier group commit waits
# for its WAL flush.
settings=(synchronous_commit=on)
# shellcheck disable=SC2206
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

scripts/setup.sh
. bench/lib.sh
bench_build
load1() { cut -d' ' -f1 /proc/loadavg; }
bench_workdir cutover
chmod 755 "$work"
mkdir -p "$work/flips" "$work/sync" "$work/pgbench"

echo "== starting blue, green and PgBouncer (settings: ${settings[*]})"
bench_servers
# Passwords only in a passfile: the pooler's admin console has its own.
admin_user=$(sed -E 's|^postgresql://([^:]+):.*|\1|' <<<"$POOLER_ADMIN_URL")
admin_pw=$(sed -E 's|^postgresql://[^:]+:([^@]+)@.*|\1|' <<<"$POOLER_ADMIN_URL")
{
  printf '127.0.0.1:%s:pgbouncer:%s:%s\n' "$POOLER_PORT" "$admin_user" "$admin_pw"
  printf '127.0.0.1:*:*:postgres:%s\n' "$DB_PASSWORD"
} >"$work/pgpass"
chmod 600 "$work/pgpass"
export PGPASSFILE=$work/pgpass
unset PGPASSWORD
base="host=127.0.0.1 user=postgres sslmode=disable dbname=factory_telemetry"
src="$base port=$SOURCE_PORT"
tgt="$base port=$TARGET_PORT"
pooled="$base port=$POOLER_PORT"
pooler_arg="admin=postgresql://$admin_user@127.0.0.1:$POOLER_PORT/pgbouncer?sslmode=disable,db=factory_telemetry,file=$POOLER_DATABASES_FILE"
q() { $pgbin/psql -XAtq -v ON_ERROR_STOP=1 "$1" -c "$2"; }

current="setup"
echo "== loading factory_telemetry at scale $scale into blue"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale" >"$work/load.log" 2>&1 \
  || { tail -20 "$work/load.log" >&2; exit 1; }
q "$src" "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
ndefs=$(q "$src" "SELECT count(*) FROM factory_telemetry.metric_def")
# The script's metric ids must be the fixture's.
[ "$(q "$src" "SELECT count(*) FROM factory_telemetry.metric_def d JOIN generate_series(0, $ndefs - 1) k ON d.id = md5('metric_def:' || k)::uuid")" = "$ndefs" ] \
  || { echo "metric_def ids are not md5('metric_def:' || k)" >&2; exit 1; }
echo "   $ndefs metrics; metric_hist $(q "$src" "SELECT count(*) FROM factory_telemetry.metric_hist") rows"

echo "== bluegreen copy"
"$bin/bluegreen" copy --source "$src" --target "$tgt" >"$work/copy.out" 2>"$work/copy.log" \
  || { tail -20 "$work/copy.log" >&2; exit 1; }
tail -1 "$work/copy.out"

# ---- helpers ----------------------------------------------------------------------------

sync_n=0
sync_pid=""
# Starts forward (fwd) or reverse (rev) sync in the background.
start_sync() {
  sync_n=$((sync_n + 1))
  local log=$work/sync/$sync_n.$1.log
  if [ "$1" = rev ]; then
    "$bin/bluegreen" sync --reverse --source "$src" --target "$tgt" >"$log.out" 2>"$log" &
  else
    "$bin/bluegreen" sync --source "$src" --target "$tgt" >"$log.out" 2>"$log" &
  fi
  sync_pid=$!
}

# Waits until the sync process $1 has exited (it stops by itself after a flip); SIGTERM after 30 s.
wait_exit() {
  local pid=$1
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "   sync $pid did not stop by itself within 30 s: SIGTERM" >&2
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Waits until run $1's applier (state on green) has applied everything the source $2 had
# written when called, with a live heartbeat and no stop pending. Fails after 120 s or if the
# sync process dies.
wait_caught_up() {
  local run=$1 from=$2 want
  want=$(q "$from" "SELECT pg_current_wal_insert_lsn()")  # the write position can lag a commit
  for _ in $(seq 1 480); do
    kill -0 "$sync_pid" 2>/dev/null || { echo "sync ($run) exited:" >&2; tail -n 20 "$work/sync/$sync_n".*.log >&2; return 1; }
    [ "$(q "$tgt" "SELECT coalesce(bool_and(applied_lsn >= '$want'::pg_lsn
                     AND heartbeat > clock_timestamp() - interval '3 s'
                     AND NOT stop_requested AND last_error IS NULL), false)
                     FROM bluegreen.apply WHERE run = '$run'")" = t ] && return 0
    sleep 0.25
  done
  echo "sync ($run) did not catch up to $want within 120 s" >&2
  return 1
}

flips_csv=$work/flips.csv
echo "tps,cycle,verb,attempt,rc,start,end,load1,out" >"$flips_csv"
# Runs `bluegreen $1` (cutover or rollback) for rate $2, cycle $3; a refused or failed
# attempt (traffic stays where it was) is recorded and retried once the applier has caught up
# again, up to $4 attempts in all.
flip() {
  local verb=$1 tps=$2 i=$3 tries=$4 attempt rc t0 t1 out
  for attempt in $(seq 1 "$tries"); do
    out=$work/flips/$tps.$i.$verb.$attempt
    t0=$(now)
    set +e
    # shellcheck disable=SC2086
    "$bin/bluegreen" "$verb" --source "$src" --target "$tgt" --pooler "$pooler_arg" \
      --no-verify-check ${BENCH_FLIP_ARGS:-} >"$out.out" 2>"$out.log"
    rc=$?
    set -e
    t1=$(now)
    echo "$tps,$i,$verb,$attempt,$rc,$t0,$t1,$(load1),$out.out" >>"$flips_csv"
    if [ "$rc" = 0 ]; then
      printf '   %-8s %2d  %s\n' "$verb" "$i" "$(head -1 "$out.out" | sed 's/; caught up.*//')"
      return 0
    fi
    echo "   $verb $i attempt $attempt failed (exit $rc): $(sed 's/\x1b\[[0-9;]*m//g' "$out.log" | grep -m1 -E 'error|failed' || tail -1 "$out.log")" >&2
    sleep 2
    if [ "$verb" = cutover ]; then wait_caught_up main "$src"; else wait_caught_up main_reverse "$tgt"; fi
  done
  return 1
}

marked() {   # count/hash of the rows pgbench inserted at rate $2, on server $1
  q "$1" "SELECT count(*) || '/' || coalesce(sum(hashtext(t::text)::bigint), 0)
            FROM factory_telemetry.metric_hist t WHERE value_text = 'bench-cutover' AND value_int = $2"
}
fingerprint() {
  q "$1" "SELECT (SELECT format('%s/%s', count(*), sum(hashtext(t::text)::bigint)) FROM factory_telemetry.metric_hist t)
           || ' ' || (SELECT format('%s/%s', count(*), sum(hashtext(t::text)::bigint)) FROM factory_telemetry.metric_latest t)"
}

# ---- the measurements --------------------------------------------------------------------

echo "== bluegreen sync (forward)"
start_sync fwd
wait_caught_up main "$src"
capacity=skipped
if [ "$do_capacity" = 1 ]; then
  current="capacity"
  echo "== applier capacity: pgbench on blue without a rate limit for 15 s, forward sync running"
  t0=$(now)
  $pgbin/pgbench -n -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres -c "$clients" -j 2 -T 15 \
    -f "$script" -D ndefs="$ndefs" -D tps=0 factory_telemetry >"$work/capacity.out" 2>&1 \
    || { cat "$work/capacity.out" >&2; exit 1; }
  t1=$(now)
  # A marker row after the last of them: applied means everything before it is.
  q "$src" "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_int, value_text)
            VALUES (md5('metric_def:0')::uuid, clock_timestamp(), 0, 'bench-cutover-capacity-marker')"
  until [ "$(q "$tgt" "SELECT count(*) FROM factory_telemetry.metric_hist
                        WHERE value_text = 'bench-cutover-capacity-marker'")" = 1 ]; do
    kill -0 "$sync_pid" 2>/dev/null || { echo "sync exited" >&2; exit 1; }
    sleep 0.05
  done
  t2=$(now)
  n=$(awk '/^number of transactions actually processed/ {print $6; exit}' "$work/capacity.out")
  wrote=$(echo "$n / ($t1 - $t0)" | bc)
  applied=$(echo "$n / ($t2 - $t0)" | bc)
  behind=$(echo "$t2 - $t1" | bc)
  capacity="$applied"
  (( $(echo "$behind < 0.5" | bc) )) && capacity="≥ $applied"
  echo "   clients wrote $wrote txn/s; the applier applied $capacity txn/s (done $(printf '%.1f' "$behind") s after the writes; load $(load1))"
  capacity="$capacity txn/s (clients wrote $wrote txn/s unthrottled, load $(load1))"
fi
loss_csv=$work/loss.csv
echo "tps,pgbench_rc,processed,failed,aborted_clients,blue,green,seconds" >"$loss_csv"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for tps in "${rates[@]}"; do
  current="rate $tps"
  secs=$((flips * cycle + 20))
  echo "== $tps tps through PgBouncer ($clients clients, up to $secs s): $flips cutovers and $flips rollbacks"
  set +e
  $pgbin/pgbench -n -h 127.0.0.1 -p "$POOLER_PORT" -U postgres -R "$tps" -c "$clients" -j 2 \
    -T "$secs" -l --log-prefix="$work/pgbench/$tps" -f "$script" \
    -D ndefs="$ndefs" -D tps="$tps" factory_telemetry >"$work/pgbench/$tps.out" 2>"$work/pgbench/$tps.err" &
  pgbench_pid=$!
  set -e
  t_load=$(now)
  sleep 5
  for i in $(seq 1 "$flips"); do
    kill -0 "$pgbench_pid" 2>/dev/null \
      || { echo "   pgbench ended before cutover $i (raise --cycle-seconds): no more flips at this rate" >&2; break; }
    wait_caught_up main "$src"
    fwd=$sync_pid
    # Refused cutovers leave traffic on blue: after 5, this rate gets no more flips.
    flip cutover "$tps" "$i" 5 \
      || { echo "   cutover $i failed 5 times: no more flips at this rate" >&2; break; }
    wait_exit "$fwd"
    start_sync rev
    wait_caught_up main_reverse "$tgt"
    rev=$sync_pid
    # Traffic must come back to blue for the checks.
    flip rollback "$tps" "$i" 20 || { echo "rollback $i failed 20 times: traffic stays on green" >&2; exit 1; }
    wait_exit "$rev"
    start_sync fwd
  done
  kill -0 "$pgbench_pid" 2>/dev/null \
    || echo "   pgbench ended before the last rollback finished (raise --cycle-seconds): flips after its end are left out of the client figures" >&2
  echo "   flips done after $(printf '%.0f' "$(echo "$(now) - $t_load" | bc)") s; load runs on to its end"
  set +e
  wait "$pgbench_pid"
  pgbench_rc=$?
  set -e
  processed=$(awk '/^number of transactions actually processed/ {print $6; exit}' "$work/pgbench/$tps.out")
  failed=$(awk '/^number of failed transactions/ {print $5; exit}' "$work/pgbench/$tps.out")
  aborted=$(grep -c 'aborted' "$work/pgbench/$tps.err" || true)
  echo "   pgbench exit $pgbench_rc: ${processed:-?} transactions, ${failed:-?} failed, $aborted clients aborted"
  [ "$aborted" = 0 ] || sed -n '1,5p' "$work/pgbench/$tps.err" | sed 's/^/   | /'
  wait_caught_up main "$src"
  b=$(marked "$src" "$tps"); g=$(marked "$tgt" "$tps")
  echo "   rows pgbench inserted: blue $b, green $g (count/hash)"
  echo "$tps,$pgbench_rc,${processed:-},${failed:-},$aborted,$b,$g,$secs" >>"$loss_csv"
done
current="final checks"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
wait_caught_up main "$src"
fb=$(fingerprint "$src"); fg=$(fingerprint "$tgt")
echo "== metric_hist and metric_latest: blue $fb; green $fg"
verify_rc=skipped
if [ "$do_verify" = 1 ]; then
  set +e
  "$bin/bluegreen" verify --source "$src" --target "$tgt" >"$work/verify.out" 2>"$work/verify.log"
  verify_rc=$?
  set -e
  echo "== bluegreen verify: exit $verify_rc ($(tail -1 "$work/verify.out"))"
fi
kill -TERM "$sync_pid" 2>/dev/null || true
wait "$sync_pid" 2>/dev/null || true

pg_version=$(q "$src" "SHOW server_version")
server_settings=$(q "$tgt" "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','fsync','full_page_writes','synchronous_commit','wal_level','wal_writer_delay','wal_sender_timeout')")
cat >"$work/meta.env" <<EOF
tps=$tps_list
flips=$flips
clients=$clients
scale=$scale
nproc=$(nproc)
memory=$(awk '/MemTotal/ {printf "%.0f GB", $2/1024/1024}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
postgresql=$pg_version
pgbouncer=$(pgbouncer --version 2>/dev/null | head -1)
pgbench=$($pgbin/pgbench --version)
bluegreen=$bg_version
flip_args=--no-verify-check ${BENCH_FLIP_ARGS:-}
script=$script
servers_args=${BENCH_SERVERS_ARGS:-}
settings=$server_settings
load_start=$load_start
load_end=$load_end
fingerprint_blue=$fb
fingerprint_green=$fg
verify_rc=$verify_rc
capacity=$capacity
date=$(date -u +%Y-%m-%dT%H:%MZ)
EOF
args=(--flips "$flips_csv" --loss "$loss_csv" --pgbench "$work/pgbench" --meta "$work/meta.env")
[ "$record" = 1 ] && args+=(--record "$root/bench/RESULTS.md")
current="summary"
python3 bench/cutover/summarize.py "${args[@]}"
current=""
