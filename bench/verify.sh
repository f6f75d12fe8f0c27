#!/usr/bin/env bash
# Verify benchmark: `bluegreen verify` against the SQL-side comparisons peers use, and against
# the read limit, on the same copied data, same servers, same settings.
#
# Usage: bench/verify.sh [--scale S] [--rounds N] [--no-record] [--keep]
#   --scale S      fixture scale (default 5); the source is copied to the target once with
#                  `bluegreen copy`, then every method compares the two
#   --rounds N     rounds (default 3); every round runs every method once, in an order that
#                  rotates from round to round, so machine noise hits every method alike
#   --no-record    print the table only; do not append it to bench/RESULTS.md
#   --keep         leave the work directory (logs, per-run CSV) behind
#
# Methods (each reads source and target at the same time, one session per side unless noted):
#   bluegreen        bluegreen verify (chunks, binary COPY rows hashed with xxh3-128 in the
#                    client; --jobs = nproc sessions per side); must exit 0
#   pgcopydb-sql     pgcopydb compare data's query per table:
#                    count(1), md5(format('%s-%s', sum(hashtext(row::text)::bigint), count(1)))
#   datadiff-sql     data-diff's checksum shape per table:
#                    count(*), sum(('x' || substring(md5(concat(cols)), 18))::bit(60)::bigint)
#   read-limit       COPY (SELECT cols FROM ONLY t) TO STDOUT (FORMAT binary) > /dev/null for
#                    every table, both sides: the cost of reading the rows at all
#   read-limit-2     the same with the tables split over nproc sessions per side (what
#                    bluegreen's --jobs gets to use)
# The goals: bluegreen at least 2x faster than both SQL comparisons, and at least half as fast
# as the read limit (bluegreen seconds <= 2 x read-limit seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scale=5
rounds=3
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "verify.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

settings=(
  shared_buffers=1GB
  maintenance_work_mem=1GB
  max_wal_size=16GB
  checkpoint_timeout=30min
)

scripts/setup.sh
. bench/lib.sh
bench_build
jobs=$(nproc)
bench_workdir verify

echo "== starting source and target (settings: ${settings[*]})"
bench_servers
export PGPASSWORD="$DB_PASSWORD"   # passwords only ever in the environment
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"

echo "== loading factory_telemetry at scale $scale into the source, copying it to the target"
"$bin/bg-fixture" load --dsn "$src" --scale "$scale"
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
$PSQL "$src" -c "VACUUM (ANALYZE, FREEZE)" -c "CHECKPOINT"
current=copy
"$bin/bluegreen" copy --source "$src" --target "$tgt" --run bench >"$work/copy.out" 2>"$work/copy.log"
current=""
$PSQL "$tgt" -c "VACUUM (ANALYZE, FREEZE)" -c "CHECKPOINT"
src_bytes=$($pgbin/psql -XAt "$src" -c "SELECT pg_database_size(current_database())")
table_bytes=$($pgbin/psql -XAt "$src" -c "SELECT sum(pg_table_size(c.oid)) FROM pg_class c
  WHERE c.relnamespace = 'factory_telemetry'::regnamespace AND c.relkind = 'r'")
rows=$($pgbin/psql -XAt "$src" -c "SELECT sum(n_live_tup) FROM pg_stat_user_tables WHERE schemaname = 'factory_telemetry'")
echo "   source database: $((src_bytes / 1024 / 1024)) MB, tables (heap + TOAST): $((table_bytes / 1024 / 1024)) MB, $rows rows"

# One statement per table for each SQL method, written from the source's catalog: every
# ordinary table of factory_telemetry, non-generated columns in order (what verify compares).
gen() {
  $pgbin/psql -XAt "$src" -c "
    SELECT format($1, n.nspname, c.relname,
                  string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum))
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND a.attgenerated = ''
     WHERE n.nspname = 'factory_telemetry' AND c.relkind = 'r'
     GROUP BY n.nspname, c.relname, pg_table_size(c.oid)
     ORDER BY pg_table_size(c.oid) DESC"
}
gen "'SELECT count(1), md5(format(''%%s-%%s'', sum(hashtext((%3\$s)::text)::bigint), count(1)))::uuid FROM ONLY %1\$I.%2\$I;'" >"$work/pgcopydb.sql"
gen "'SELECT count(*), sum((''x'' || substring(md5(concat(%3\$s)), 18))::bit(60)::bigint) FROM ONLY %1\$I.%2\$I;'" >"$work/datadiff.sql"
gen "'COPY (SELECT %3\$s FROM ONLY %1\$I.%2\$I) TO STDOUT (FORMAT binary);'" >"$work/copy.sql"
# The COPY statements dealt round-robin to nproc files (largest tables first).
for j in $(seq 0 $((jobs - 1))); do
  awk -v j="$j" -v n="$jobs" '(NR - 1) % n == j' "$work/copy.sql" >"$work/copy.$j.sql"
done


# Runs a SQL file on both sides at once; each side's answers go to OUT.{source,target}.
both() {
  local file=$1 out=$2
  $PSQL -At "$src" -f "$file" >"$out.source" &
  local a=$!
  $PSQL -At "$tgt" -f "$file" >"$out.target" &
  local b=$!
  wait "$a"
  wait "$b"
}

run_bluegreen() {
  if ! "$bin/bluegreen" verify --source "$src" --target "$tgt" --run bench --json \
      >"$work/run.json" 2>"$work/run.log"; then
    tail -20 "$work/run.log" >&2
    head -c 4000 "$work/run.json" >&2
    return 1
  fi
  note=$(python3 -c "
import json, sys
r = json.load(open('$work/run.json'))
print(f\"equal={r['equal']}, {sum(t['chunks'] for t in r['tables'])} chunks, {r['bytes'] / 1e6:.0f} MB hashed\")")
}

run_pgcopydb_sql() {
  both "$work/pgcopydb.sql" "$work/pgcopydb.out"
  cmp -s "$work/pgcopydb.out.source" "$work/pgcopydb.out.target" || { echo "pgcopydb-sql: sides differ" >&2; return 1; }
  note="$(wc -l <"$work/pgcopydb.sql") tables, sides equal"
}

run_datadiff_sql() {
  both "$work/datadiff.sql" "$work/datadiff.out"
  cmp -s "$work/datadiff.out.source" "$work/datadiff.out.target" || { echo "datadiff-sql: sides differ" >&2; return 1; }
  note="$(wc -l <"$work/datadiff.sql") tables, sides equal"
}

run_read_limit() {
  $PSQL "$src" -f "$work/copy.sql" >/dev/null &
  local a=$!
  $PSQL "$tgt" -f "$work/copy.sql" >/dev/null &
  local b=$!
  wait "$a"
  wait "$b"
  note="one session per side"
}

run_read_limit_2() {
  local pids=()
  for j in $(seq 0 $((jobs - 1))); do
    $PSQL "$src" -f "$work/copy.$j.sql" >/dev/null &
    pids+=($!)
    $PSQL "$tgt" -f "$work/copy.$j.sql" >/dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  note="$jobs sessions per side"
}

methods=(bluegreen pgcopydb-sql datadiff-sql read-limit read-limit-2)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $rounds round(s); load average before: $load_before"
echo "round,method,seconds,note" >"$work/runs.csv"
for r in $(seq 1 "$rounds"); do
  n=${#methods[@]}
  for i in $(seq 0 $((n - 1))); do
    m=${methods[$(( (i + r - 1) % n ))]}
    current=$m
    note=""
    t0=$(now)
    "run_${m//-/_}"
    t1=$(now)
    secs=$(echo "$t1 - $t0" | bc)
    printf '   round %s  %-14s %7.2f s  %s\n' "$r" "$m" "$secs" "$note"
    echo "$r,$m,$secs,\"$note\"" >>"$work/runs.csv"
  done
done
current=""
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$work/runs.csv" "$scale" "$src_bytes" "$table_bytes" "$rows" "$load_before" "$load_after" \
  "$record" "$root/bench/RESULTS.md" <<'PY'
import csv, os, platform, statistics, subprocess, sys
runs, scale, src_bytes, table_bytes, rows, load_before, load_after, record, results = sys.argv[1:]
by = {}
for row in csv.DictReader(open(runs)):
    by.setdefault(row["method"], []).append(float(row["seconds"]))
med = {m: statistics.median(v) for m, v in by.items()}
bg = med["bluegreen"]
mb = int(table_bytes) / 2**20
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
mem = sh("free -g | awk '/Mem:/ {print $2}'")
lines = []
lines.append(f"## verify: scale {scale} ({int(src_bytes) / 2**20:.0f} MB database, {mb:.0f} MB of table heap + TOAST, {int(rows):,} rows), both sides compared")
lines.append("")
lines.append(f"Machine: {os.cpu_count()} cores, {mem} GiB memory, {platform.machine()}; "
             f"{sh('/usr/lib/postgresql/15/bin/postgres --version')}; {sh('rustc --version')}; "
             f"bluegreen {sh('git rev-parse --short HEAD')}{' (+ uncommitted changes)' if sh('git status --porcelain -- crates') else ''}. "
             f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}. "
             f"Source and target on this machine (testkit settings plus shared_buffers=1GB); "
             f"median of {len(by['bluegreen'])} round(s), methods in rotating order.")
lines.append("")
lines.append("| method | median s | best s | runs s | MB/s (both sides, median) | median ÷ bluegreen's |")
lines.append("|---|---:|---:|---|---:|---:|")
for m in ["bluegreen", "pgcopydb-sql", "datadiff-sql", "read-limit", "read-limit-2"]:
    v = by[m]
    lines.append(f"| {m} | {med[m]:.2f} | {min(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} | {2 * mb / med[m]:.0f} | {med[m] / bg:.2f} |")
lines.append("")
goal1 = med["pgcopydb-sql"] / bg >= 2 and med["datadiff-sql"] / bg >= 2
rl = min(med["read-limit"], med["read-limit-2"])
goal2 = rl / bg >= 0.5
lines.append(f"Goals: ≥2× faster than both SQL comparisons: {'met' if goal1 else 'NOT met'} "
             f"({med['pgcopydb-sql'] / bg:.2f}× pgcopydb-sql, {med['datadiff-sql'] / bg:.2f}× datadiff-sql); "
             f"at least half the read limit: {'met' if goal2 else 'NOT met'} "
             f"(bluegreen runs at {rl / bg:.2f}× the speed of the faster read limit).")
text = "\n".join(lines)
print()
print(text)
if record == "1":
    with open(results, "a") as f:
        f.write("\n" + text + "\n")
    print(f"\nappended to {results}")
PY
