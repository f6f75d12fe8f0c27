#!/usr/bin/env bash
# Incremental verify benchmark (issue 18): a full verify, then --seconds of the plant workload
# through `bluegreen sync`, then an incremental verify (the default after a clean one). The
# goal: the incremental verify takes <= 5% of the full one's time, and grows with the changes,
# not with the database (run it at two scales, e.g. --scale 0.5 and --scale 5).
#
# Usage: bench/verify-incremental.sh [--scale S] [--seconds N] [--rate R] [--no-record] [--keep]
#   --scale S      fixture scale (default 5)
#   --seconds N    plant workload between the two verifies (default 60)
#   --rate R       metric_hist rows per second of the workload (default 1000, MS5.0's rate)
#   --no-record    print the result only; do not append it to bench/RESULTS.md
#   --keep         leave the work directory behind
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scale=5
seconds=60
rate=1000
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "verify-incremental.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

settings=(shared_buffers=1GB maintenance_work_mem=1GB max_wal_size=16GB checkpoint_timeout=30min)

scripts/setup.sh
. bench/lib.sh
bench_build
bench_workdir verify-incremental
echo "== starting source and target"
bench_servers
export PGPASSWORD="$DB_PASSWORD"
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"

echo "== loading factory_telemetry at scale $scale, copying it"
current=load
t0=$(now)
"$bin/bg-fixture" load --dsn "$src" --scale "$scale" >"$work/load.log" 2>&1
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
printf '   %-12s %7.2f s\n' load "$(echo "$(now) - $t0" | bc)"
current=copy
t0=$(now)
"$bin/bluegreen" copy --source "$src" --target "$tgt" >"$work/copy.out" 2>"$work/copy.log"
printf '   %-12s %7.2f s\n' copy "$(echo "$(now) - $t0" | bc)"
db_bytes=$($pgbin/psql -XAt "$src" -c "SELECT pg_database_size(current_database())")
echo "   database     $((db_bytes / 1048576)) MB; the source server's directory (data and WAL) $(du -sm "$(dirname "$SOURCE_LOG")" 2>/dev/null | cut -f1) MB, the target's about as much"

current=sync
"$bin/bluegreen" sync --source "$src" --target "$tgt" >"$work/sync.out" 2>"$work/sync.log" &
sync_pid=$!
for _ in $(seq 1 300); do
  [ "$($pgbin/psql -XAt "$tgt" -c "SELECT coalesce(bool_or(clock_timestamp() - heartbeat < interval '5 s'), false) FROM bluegreen.apply" 2>/dev/null)" = t ] && break
  sleep 0.2
done
sleep 2

verify() {  # verify NAME [flags]: timed, JSON kept as NAME.json
  local name=$1; shift
  local t0 t1
  t0=$(now)
  "$bin/bluegreen" verify --source "$src" --target "$tgt" --json "$@" >"$work/$name.json" 2>"$work/$name.log" \
    || { tail -20 "$work/$name.log" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc >"$work/$name.secs"
  printf '   %-12s %7.2f s\n' "$name" "$(cat "$work/$name.secs")"
}

echo "== full verify"
current="full verify"
verify full --full
echo "== plant workload: $seconds s at $rate metric_hist rows/s"
start_lsn=$($pgbin/psql -XAt "$src" -c "SELECT pg_current_wal_lsn()")
current=workload
"$bin/bg-fixture" workload --dsn "$src" --seconds "$seconds" --rate "$rate" --ledger "$work/ledger" \
  >"$work/workload.log" 2>&1
# Let sync apply the workload first: the incremental verify's time is then the verify's own
# (its hold would otherwise wait for the catch-up), and the catch-up is reported apart.
current="sync catch-up"
end_lsn=$($pgbin/psql -XAt "$src" -c "SELECT pg_current_wal_lsn()")
t0=$(now)
caught=f
for _ in $(seq 1 1500); do
  caught=$($pgbin/psql -XAt "$tgt" -c "SELECT coalesce(bool_or(applied_lsn >= '$end_lsn'), false) FROM bluegreen.apply")
  [ "$caught" = t ] && break
  sleep 0.2
done
[ "$caught" = t ] || { echo "sync did not apply up to $end_lsn within 300 s" >&2; exit 1; }
printf '   %-12s %7.2f s\n' catch-up "$(echo "$(now) - $t0" | bc)"
changes=$($pgbin/psql -XAt "$src" -c "SELECT '$end_lsn'::pg_lsn - '$start_lsn'::pg_lsn")
echo "== incremental verify"
current="incremental verify"
verify incremental
kill "$sync_pid" 2>/dev/null || true
wait "$sync_pid" 2>/dev/null || true

current=report
results="$root/bench/RESULTS.md" work="$work" scale="$scale" seconds="$seconds" rate="$rate" \
  db_bytes="$db_bytes" changes="$changes" record="$record" bg_version="$bg_version" python3 - <<'PY'
import json, os
w = os.environ["work"]
def load(n):
    return json.load(open(f"{w}/{n}.json")), float(open(f"{w}/{n}.secs").read())
full, fs = load("full")
inc, is_ = load("incremental")
assert inc.get("incremental_from") is not None, "the second verify was not incremental"
ch = lambda r, k: sum(t[k] for t in r["tables"])
lines = [
    f"## incremental verify: scale {os.environ['scale']} ({int(os.environ['db_bytes']) / 2**20:.0f} MB database), "
    f"{os.environ['seconds']} s of the plant workload at {os.environ['rate']} rows/s between "
    f"({int(os.environ['changes']) / 2**20:.1f} MB of source WAL, applied by sync before the second verify)",
    "",
    f"bluegreen {os.environ['bg_version']}; command: `bench/verify-incremental.sh --scale {os.environ['scale']} "
    f"--seconds {os.environ['seconds']} --rate {os.environ['rate']}`.",
    "",
    "| verify | seconds | chunks checked | chunks carried | MB hashed (both sides) |",
    "|---|---:|---:|---:|---:|",
    f"| full | {fs:.2f} | {ch(full, 'checked')} | {ch(full, 'carried')} | {full['bytes'] / 1e6:.1f} |",
    f"| incremental | {is_:.2f} | {ch(inc, 'checked')} | {ch(inc, 'carried')} | {inc['bytes'] / 1e6:.1f} |",
    "",
    f"Incremental ÷ full: {100 * is_ / fs:.1f}% of the time (goal ≤ 5%), "
    f"{100 * inc['bytes'] / max(full['bytes'], 1):.1f}% of the bytes hashed.",
    "",
    "Checked again, per table: chunks checked of all (of them by the rows written alone), MB hashed "
    "now of the full verify's: "
    + "; ".join(
        f"{t['name']} {t['checked']}/{t['chunks']} ({t.get('checked_by_keys', 0)}), "
        f"{t.get('bytes', 0) / 1e6:.1f} of {next((f.get('bytes', 0) for f in full['tables'] if f['name'] == t['name']), 0) / 1e6:.1f}"
        for t in inc["tables"] if t["checked"]
    )
    + ".",
]
text = "\n".join(lines)
print("\n" + text)
if os.environ["record"] == "1":
    with open(os.environ["results"], "a") as f:
        f.write("\n" + text + "\n")
PY
