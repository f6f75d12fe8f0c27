#!/usr/bin/env bash
# Window estimate benchmark (issue 16): a dry run at scale S (staging source -> staging target)
# estimates the production window for a source at scale 4S (`--estimate-for`); then the real
# `bluegreen run --until cutover` of that source, under the same plant workload through
# PgBouncer, measures it. The goal: copy time and total window within ±30% of the estimate.
#
# Usage: bench/estimate.sh [--scale S] [--factor F] [--rate R] [--no-record] [--keep]
#   --scale S      the rehearsal's fixture scale (default 1.25)
#   --factor F     production is F times bigger (default 4)
#   --rate R       metric_hist rows per second of the plant workload (default 500)
#   --no-record    print the result only; do not append it to bench/RESULTS.md
#   --keep         leave the work directory behind
#
# Staging's source is a server of its own (production's WAL rate is a server's), both targets
# share one (databases `staging` and `factory_telemetry`); the workload writes to both sources during the rehearsal (production is live
# while staging rehearses, and the estimate samples production's WAL rate) and to production
# through PgBouncer during the real run. The real window is what the estimate predicts: copy +
# catch-up + verify stage durations + the client pause, read from the real run's report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scale=1.25
factor=4
rate=500
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --factor) factor=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "estimate.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
big=$(python3 -c "print(round($scale * $factor, 4))")

settings=(shared_buffers=1GB maintenance_work_mem=1GB max_parallel_maintenance_workers=2
  max_wal_size=16GB checkpoint_timeout=30min)
[ -n "${BENCH_SETTINGS:-}" ] && settings+=($BENCH_SETTINGS)

scripts/setup.sh
. bench/lib.sh
bench_build
bench_workdir estimate
load1() { cut -d' ' -f1 /proc/loadavg; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== starting sources, target and PgBouncer (settings: ${settings[*]})"
bench_servers --subscriber
admin_user=$(sed -E 's|^postgresql://([^:]+):.*|\1|' <<<"$POOLER_ADMIN_URL")
admin_pw=$(sed -E 's|^postgresql://[^:]+:([^@]+)@.*|\1|' <<<"$POOLER_ADMIN_URL")
{
  printf '127.0.0.1:%s:pgbouncer:%s:%s\n' "$POOLER_PORT" "$admin_user" "$admin_pw"
  printf '127.0.0.1:*:*:postgres:%s\n' "$DB_PASSWORD"
} >"$work/pgpass"
chmod 600 "$work/pgpass"
export PGPASSFILE=$work/pgpass
unset PGPASSWORD
base="host=127.0.0.1 user=postgres sslmode=disable"
src="$base port=$SOURCE_PORT dbname=factory_telemetry"
tgt="$base port=$TARGET_PORT dbname=factory_telemetry"
stg_src="$base port=$SUBSCRIBER_PORT dbname=staging"
stg_tgt="$base port=$TARGET_PORT dbname=staging"
pooled="$base port=$POOLER_PORT dbname=factory_telemetry"
pooler_arg="admin=postgresql://$admin_user@127.0.0.1:$POOLER_PORT/pgbouncer?sslmode=disable,db=factory_telemetry,file=$POOLER_DATABASES_FILE"
q() { $pgbin/psql -XAtq -v ON_ERROR_STOP=1 "$1" -c "$2"; }

current=load
q "$base port=$SUBSCRIBER_PORT dbname=postgres" "CREATE DATABASE staging"
q "$base port=$TARGET_PORT dbname=postgres" "CREATE DATABASE staging"
for pair in "$stg_src:$scale" "$src:$big"; do
  dsn=${pair%:*}
  s=${pair##*:}
  echo "== loading factory_telemetry at scale $s into ${dsn##*dbname=}"
  "$bin/bg-fixture" load --dsn "$dsn" --scale "$s" >>"$work/load.log" 2>&1 \
    || { tail -20 "$work/load.log" >&2; exit 1; }
  q "$dsn" "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
  q "$dsn" "VACUUM (ANALYZE, FREEZE)"
done
q "$src" "CHECKPOINT"
q "$stg_src" "CHECKPOINT"
sizes="$(q "$stg_src" "SELECT pg_size_pretty(pg_database_size('staging'))") staging, $(q "$src" "SELECT pg_size_pretty(pg_database_size('factory_telemetry'))") production"
echo "   $sizes"

# workload DSN LEDGER: the plant writing for as long as the step takes (stopped by the caller).
workload_pids=()
workload() {
  "$bin/bg-fixture" workload --dsn "$1" --seconds 3600 --rate "$rate" --ledger "$2" \
    >"$2.out" 2>&1 &
  workload_pids+=($!)
}
stop_workloads() {
  kill "${workload_pids[@]}" 2>/dev/null || true
  wait "${workload_pids[@]}" 2>/dev/null || true
  workload_pids=()
}

current="dry run"
echo "== dry run at scale $scale (staging), estimating for scale $big (production), $rate rows/s on both"
workload "$stg_src" "$work/staging.ledger"
workload "$pooled" "$work/dry-production.ledger"
sleep 3
t0=$(now)
code=0
"$bin/bluegreen" run --dry-run --source "$stg_src" --target "$stg_tgt" --estimate-for "$src" \
  --report-dir "$work/dry" >"$work/dry.out" 2>"$work/dry.log" || code=$?
dry_wall=$(python3 -c "print(round($(now) - $t0, 2))")
stop_workloads
[ "$code" = 0 ] || { tail -30 "$work/dry.log" >&2; echo "dry run exit $code" >&2; exit 2; }
echo "   dry run: ${dry_wall} s"

current="real run"
sleep 2
echo "== real run at scale $big through PgBouncer, $rate rows/s"
workload "$pooled" "$work/production.ledger"
sleep 3
load_at_run=$(load1)
t0=$(now)
code=0
"$bin/bluegreen" run --source "$src" --target "$tgt" --pooler "$pooler_arg" --until cutover \
  --report-dir "$work/real" >"$work/real.out" 2>"$work/real.log" || code=$?
real_wall=$(python3 -c "print(round($(now) - $t0, 2))")
sleep 2
stop_workloads
[ "$code" = 0 ] || { tail -30 "$work/real.log" >&2; echo "real run exit $code" >&2; exit 2; }
echo "   real run: ${real_wall} s"
current=check
"$bin/bg-fixture" check --dsn "$tgt" --ledger "$work/production.ledger" >"$work/check.out" 2>&1 \
  || { tail -20 "$work/check.out" >&2; echo "ledger check failed: a committed write is missing on green" >&2; exit 1; }

current=summary
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
pg_version=$($pgbin/postgres --version)
machine="$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory, $(uname -m)"
export scale big rate dry_wall real_wall load_before load_after load_at_run pg_version machine bg_version sizes record work root
python3 - <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(os.environ["root"], "bench"))
import results

work = os.environ["work"]
dry = json.load(open(f"{work}/dry/report.json"))
real = json.load(open(f"{work}/real/report.json"))
est = dry.get("estimate") or sys.exit("the dry run's report has no estimate")

def stage(r, name):
    s = [x for x in r["stages"] if x["name"] == name and x.get("seconds") is not None]
    return sum(x["seconds"] for x in s) if s else None

catch = est["catch_up"]
est_catch = catch.get("seconds") if catch.get("kind") == "seconds" else None
real_copy = stage(real, "copy")
real_catch = stage(real, "catch-up") or 0.0
real_verify = stage(real, "verify") or 0.0
real_pause = (real.get("cutover") or {}).get("pause_seconds") or 0.0
real_window = real_copy + real_catch + real_verify + real_pause
rows = [
    ("copy", est.get("copy_seconds"), real_copy),
    ("catch-up", est_catch, real_catch),
    ("verify", est.get("verify_seconds"), real_verify),
    ("client pause", est.get("pause_seconds"), real_pause),
    ("window (copy + catch-up + verify + pause)", est.get("window_seconds"), real_window),
]

def f(x, unit=" s"):
    return "–" if x is None else f"{x:.2f}{unit}"

table = ["| figure | estimated | measured | estimated ÷ measured | within ±30% |", "|---|---|---|---|---|"]
verdicts = {}
for name, e, m in rows:
    ratio = e / m if e is not None and m else None
    ok = None if ratio is None else abs(ratio - 1) <= 0.30
    verdicts[name] = ok
    table.append(f"| {name} | {f(e)} | {f(m)} | {f(ratio, '')} | {'–' if ok is None else ('yes' if ok else 'NO')} |")
print()
print("\n".join(table))
goal = verdicts["copy"] and verdicts["window (copy + catch-up + verify + pause)"]
print(f"\ngoal (copy and window within ±30%): {'met' if goal else 'NOT met'}")
print("assumptions the estimate wrote:")
for a in est.get("assumptions", []):
    print(f"  - {a}")

e = os.environ
if e["record"] == "1":
    from datetime import datetime, timezone
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    entry = [
        f"### {stamp} — dry run at scale {e['scale']} estimating scale {e['big']}",
        "",
        f"- machine: {e['machine']}; load average before {e['load_before']}, at the real run {e['load_at_run']}, after {e['load_after']}",
        f"- versions: {e['pg_version']}, bluegreen {e['bg_version']}",
        f"- databases: {e['sizes']}; plant workload {e['rate']} metric rows/s (+25 plant transactions/s) on both sources during the dry run, through PgBouncer during the real run",
        f"- command: `bench/estimate.sh --scale {e['scale']} --factor {round(float(e['big']) / float(e['scale']), 3)} --rate {e['rate']}`; dry run {e['dry_wall']} s wall, real run (`run --until cutover`) {e['real_wall']} s wall; ledger check OK",
        "",
        *table,
        "",
        f"Goal (copy time and total window within ±30%): **{'met' if goal else 'NOT met'}**.",
    ]
    results.append(
        os.path.join(e["root"], "bench/RESULTS.md"),
        "## estimate: a dry run's window estimate against the real run at 4× the size",
        "`bench/estimate.sh`: the dry run's report.json estimate (copy, catch-up, verify, client pause, window) against the stage durations of the real run's report.json.",
        entry,
    )
EOF
