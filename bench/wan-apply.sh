#!/usr/bin/env bash
# Sync's apply rate with blue behind a WAN (issue 20's WAN bench): the same backlog applied by
# `bluegreen sync` reading blue through testkit's proxy (adding --rtt-ms of round trip, as a
# plant-floor blue seen from AKS) and reading it directly, alternating, on the same servers.
# Goal: the apply rate through the WAN >= 0.8x the loopback rate.
#
# Each run: --transactions transactions of --rows metric_hist rows written on blue with nothing
# streaming, then `bluegreen sync` started; timed until green's replication origin passes
# blue's position after the writes (the origin moves with each group's commit: exact, unlike
# the state row the status task writes every 200 ms). "streaming" is from sync's "streaming"
# log line to then (the apply rate); "total" adds the start (connections, slot and origin
# checks: a handful of round trips each).
#
# Usage: bench/wan-apply.sh [--rtt-ms MS] [--rounds N] [--transactions T] [--rows R] [--no-record] [--keep]
#   --rtt-ms MS        added round trip to blue (default 20)
#   --rounds N         rounds of one WAN and one direct run each (default 3)
#   --transactions T   backlog per run (default 3000)
#   --rows R           metric_hist rows per transaction (default 100)
#   --no-record        print the result only; do not append it to bench/RESULTS.md
#   --keep             leave the work directory behind
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rtt=20
rounds=3
transactions=3000
rows=100
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rtt-ms) rtt=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --transactions) transactions=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "wan-apply.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

settings=()

scripts/setup.sh
. bench/lib.sh
bench_build
bench_workdir wan-apply
echo "== starting source (behind a ${rtt} ms round trip) and target"
bench_servers --source-rtt-ms "$rtt"
export PGPASSWORD="$DB_PASSWORD"
direct="host=127.0.0.1 port=$SOURCE_DIRECT_PORT user=postgres dbname=factory_telemetry sslmode=disable"
wan="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"

current=load
"$bin/bg-fixture" load --dsn "$direct" --scale 0.05 >"$work/load.log" 2>&1
$PSQL "$direct" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
current=copy
"$bin/bluegreen" copy --source "$direct" --target "$tgt" >"$work/copy.out" 2>"$work/copy.log"
metric=$($pgbin/psql -XAt "$direct" -c "SELECT id FROM factory_telemetry.metric_def ORDER BY id LIMIT 1")
for _ in $(seq 1 "$transactions"); do
  echo "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
        SELECT '$metric', now() + g * interval '1 ms', g FROM generate_series(1, $rows) g;"
done >"$work/backlog.sql"

# Seconds since the epoch of sync's "streaming" line in log $1.
streaming_at() {
  local line
  line=$(grep -m1 ' streaming ' "$1" | cut -d' ' -f1)
  [ -n "$line" ] && date -d "$line" +%s.%N
}

# CPU seconds the servers' holder (testkit's proxy runs in it) has used.
proxy_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$servers_pid/stat"; }

csv="$work/runs.csv"
echo "round,link,total,streaming,proxy_cpu" >"$csv"
run() {  # run ROUND LINK
  local r=$1 link=$2 src end t0 t1 pid cpu0 done=f
  src=$direct
  [ "$link" = wan ] && src=$wan
  $PSQL "$direct" -f "$work/backlog.sql" >/dev/null
  end=$($pgbin/psql -XAt "$direct" -c "SELECT pg_current_wal_lsn()")
  cpu0=$(proxy_cpu)
  t0=$(now)
  RUST_LOG=info "$bin/bluegreen" sync --source "$src" --target "$tgt" >"$work/sync-$r-$link.out" 2>"$work/sync-$r-$link.log" &
  pid=$!
  for _ in $(seq 1 3000); do
    done=$($pgbin/psql -XAt "$tgt" -c "SELECT coalesce(pg_replication_origin_progress('bluegreen_main', false) >= '$end', false)" 2>/dev/null || echo f)
    [ "$done" = t ] && break
    sleep 0.02
  done
  t1=$(now)
  [ "$done" = t ] || { echo "round $r $link: sync did not apply up to $end within 60 s" >&2; exit 1; }
  kill -INT "$pid"; wait "$pid" || true
  local total streaming
  total=$(echo "$t1 - $t0" | bc)
  streaming=$(echo "$t1 - $(streaming_at "$work/sync-$r-$link.log")" | bc)
  echo "$r,$link,$total,$streaming,$(echo "$(proxy_cpu) - $cpu0" | bc)" >>"$csv"
  printf 'round %s  %-6s total %6.2f s  streaming %6.2f s  proxy CPU %s s\n' "$r" "$link" "$total" "$streaming" "$(echo "$(proxy_cpu) - $cpu0" | bc)"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$rounds"); do
  order=(wan direct)
  [ $((r % 2)) = 0 ] && order=(direct wan)
  for link in "${order[@]}"; do
    current="round $r: $link"
    run "$r" "$link"
  done
done
current=""
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

current=report
results="$root/bench/RESULTS.md" csv="$csv" rtt="$rtt" rounds="$rounds" transactions="$transactions" \
  rows="$rows" record="$record" bg_version="$bg_version" load_start="$load_start" load_end="$load_end" \
  machine="$(bench_machine)" python3 - <<'PY'
import csv, os, statistics, datetime
e = os.environ
runs = list(csv.DictReader(open(e["csv"])))
n = int(e["transactions"]) * int(e["rows"])
def col(link, k):
    return [float(r[k]) for r in runs if r["link"] == link]
med = {(l, k): statistics.median(col(l, k)) for l in ("wan", "direct") for k in ("total", "streaming")}
ratio_s = med[("direct", "streaming")] / med[("wan", "streaming")]
ratio_t = med[("direct", "total")] / med[("wan", "total")]
lines = [
    f"### {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ} — sync's apply rate, blue behind a {e['rtt']} ms round trip vs direct",
    "",
    f"- machine: {e['machine']}; load average {e['load_start']} at the start, {e['load_end']} at the end",
    f"- bluegreen {e['bg_version']}; backlog per run: {e['transactions']} transactions of {e['rows']} metric_hist rows",
    f"- command: `bench/wan-apply.sh --rtt-ms {e['rtt']} --rounds {e['rounds']} --transactions {e['transactions']} --rows {e['rows']}`",
    "",
    "| link | total s (median) | streaming s (median) | rows/s streaming | runs: total / streaming s | proxy CPU s |",
    "|---|---:|---:|---:|---|---|",
]
for l in ("direct", "wan"):
    lines.append(
        f"| {l} | {med[(l, 'total')]:.2f} | {med[(l, 'streaming')]:.2f} | {n / med[(l, 'streaming')]:,.0f} | "
        + ", ".join(f"{float(r['total']):.2f} / {float(r['streaming']):.2f}" for r in runs if r["link"] == l)
        + " | " + ", ".join(r["proxy_cpu"] for r in runs if r["link"] == l) + " |"
    )
lines += ["", f"Apply rate through {e['rtt']} ms ÷ direct: **{ratio_s:.2f}×** while streaming (goal ≥ 0.8×); "
          f"{ratio_t:.2f}× counting sync's start.", ""]
text = "\n".join(lines)
print(text)
if e["record"] == "1":
    with open(e["results"], "a") as f:
        f.write("\n" + text + "\n")
    print("appended to bench/RESULTS.md")
PY
