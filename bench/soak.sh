#!/usr/bin/env bash
# Soak benchmark (issue 20, item 7): `bluegreen sync` under the plant workload for a long while
# (default 30 minutes at 1,000 metric_hist rows a second plus the other tables' writes),
# sampling once a second sync's resident memory (VmRSS) and, from its /metrics, the lag and the
# WAL the slot holds on blue. Goals: RSS flat once warm (the median of the last 5 minutes, or
# the last third of a short run, within 10% of the median of the run's middle third: the
# allocator's warm-up over the first minutes is shown, not judged) and lag p99 under 1 s.
# Ends with sync caught up and `bluegreen verify` exit 0.
#
# bluegreen_lag_seconds is how long ago blue was at the oldest position green has not applied
# yet (sync samples blue's position five times a second, so it moves in steps of ~0.2 s).
#
# Usage: bench/soak.sh [--minutes N] [--rate R] [--scale S] [--no-record] [--keep]
#   --minutes N   workload duration (default 30)
#   --rate R      metric_hist rows per second (default 1000, MS5.0's rate)
#   --scale S     fixture scale loaded and copied first (default 0.2)
#   --no-record   print the result only; do not append it to bench/RESULTS.md
#   --keep        leave the work directory (samples.csv, logs) behind
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

minutes=30
rate=1000
scale=0.2
record=1
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

settings=()

scripts/setup.sh
. bench/lib.sh
bench_build
bench_workdir soak
echo "== starting source and target"
bench_servers
export PGPASSWORD="$DB_PASSWORD"
src="host=127.0.0.1 port=$SOURCE_PORT user=postgres dbname=factory_telemetry sslmode=disable"
tgt="host=127.0.0.1 port=$TARGET_PORT user=postgres dbname=factory_telemetry sslmode=disable"

echo "== loading factory_telemetry at scale $scale, copying it"
current=load
"$bin/bg-fixture" load --dsn "$src" --scale "$scale" >"$work/load.log" 2>&1
$PSQL "$src" -c "ALTER TABLE factory_telemetry.sensor_raw_log REPLICA IDENTITY FULL"
current=copy
"$bin/bluegreen" copy --source "$src" --target "$tgt" >"$work/copy.out" 2>"$work/copy.log"

current=sync
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics="http://127.0.0.1:$port/metrics"
"$bin/bluegreen" sync --source "$src" --target "$tgt" --metrics-addr "127.0.0.1:$port" \
  >"$work/sync.out" 2>"$work/sync.log" &
sync_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$sync_pid" 2>/dev/null || { tail -20 "$work/sync.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "sync is not ready after 60 s" >&2; exit 1; }

echo "== plant workload: $minutes min at $rate metric_hist rows/s; sampling sync every second"
current=workload
"$bin/bg-fixture" workload --dsn "$src" --seconds $((minutes * 60)) --rate "$rate" --ledger "$work/ledger" \
  >"$work/workload.log" 2>&1 &
load_pid=$!
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 {print $NF; exit}' "$work/scrape"; }
echo "second,rss_kb,lag_seconds,lag_bytes,retained_bytes" >"$work/samples.csv"
t0=$(now)
next=1
while kill -0 "$load_pid" 2>/dev/null; do
  kill -0 "$sync_pid" 2>/dev/null || { echo "sync exited during the soak" >&2; tail -20 "$work/sync.log" >&2; exit 1; }
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$sync_pid/status")
  curl -fsS --max-time 2 "$metrics" >"$work/scrape" 2>/dev/null || : >"$work/scrape"
  echo "$(echo "$(now) - $t0" | bc),$rss,$(metric bluegreen_lag_seconds),$(metric bluegreen_lag_bytes),$(metric bluegreen_slot_retained_wal_bytes)" \
    >>"$work/samples.csv"
  if [ $((next % 60)) = 0 ]; then
    printf '   %3d min  RSS %6d kB  lag %.2f s\n' $((next / 60)) "$rss" "$(metric bluegreen_lag_seconds | awk '{printf "%f", $1 + 0}')"
  fi
  next=$((next + 1))
  # Once a second, on the second.
  sleep "$(echo "$t0 + $next - $(now)" | bc | awk '{print ($1 > 0) ? $1 : 0}')"
done
wait "$load_pid" || { tail -20 "$work/workload.log" >&2; exit 1; }
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

current="sync catch-up"
end_lsn=$($pgbin/psql -XAt "$src" -c "SELECT pg_current_wal_lsn()")
caught=f
for _ in $(seq 1 600); do
  caught=$($pgbin/psql -XAt "$tgt" -c "SELECT coalesce(pg_replication_origin_progress('bluegreen_main', false) >= '$end_lsn', false)")
  [ "$caught" = t ] && break
  sleep 0.2
done
[ "$caught" = t ] || { echo "sync did not apply up to $end_lsn within 120 s of the workload's end" >&2; exit 1; }
current=verify
"$bin/bluegreen" verify --source "$src" --target "$tgt" >"$work/verify.out" 2>"$work/verify.log" \
  || { cat "$work/verify.out"; tail -20 "$work/verify.log" >&2; exit 1; }
verify_line=$(grep -m1 -i "equal" "$work/verify.out" || head -1 "$work/verify.out")
kill -INT "$sync_pid"
wait "$sync_pid" || true

current=report
results="$root/bench/RESULTS.md" samples="$work/samples.csv" minutes="$minutes" rate="$rate" scale="$scale" \
  record="$record" bg_version="$bg_version" load_start="$load_start" load_end="$load_end" verify_line="$verify_line" \
  machine="$(bench_machine)" python3 - <<'PY'
import csv, datetime, os, statistics
e = os.environ
rows = list(csv.DictReader(open(e["samples"])))
def series(k):
    return [(float(r["second"]), float(r[k])) for r in rows if r[k] not in ("", None)]
rss = series("rss_kb")
lag = series("lag_seconds")
retained = series("retained_bytes")
end = rss[-1][0]
warm, early, late = (0.1 * end, 0.2 * end), (end / 3, 2 * end / 3), (end - min(300, end / 3), end)
window = lambda s, w: [v for t, v in s if w[0] <= t <= w[1]]
rss_warm = statistics.median(window(rss, warm))
rss_early, rss_late = statistics.median(window(rss, early)), statistics.median(window(rss, late))
growth = rss_late / rss_early - 1
flat = growth < 0.10
lags = sorted(v for _, v in lag)
pct = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
p50, p99, lmax = pct(0.50), pct(0.99), lags[-1]

def chart(s, unit, scale=1.0, width=60, height=8):
    if not s:
        return ["(no samples)"]
    span = s[-1][0] - s[0][0] or 1
    buckets = [None] * width
    for t, v in s:
        i = min(width - 1, int((t - s[0][0]) / span * width))
        buckets[i] = v if buckets[i] is None else max(buckets[i], v)
    vals = [b for b in buckets if b is not None]
    lo, hi = 0.0, max(vals) or 1.0
    out = []
    for row in range(height, 0, -1):
        level = lo + (hi - lo) * row / height
        line = "".join("█" if b is not None and b >= level - (hi - lo) / height / 2 else " " for b in buckets)
        out.append(f"{level * scale:>9.2f} {unit} |{line}")
    out.append(" " * 13 + "+" + "-" * width)
    out.append(" " * 14 + f"0 min{'':{width - 14}}{span / 60:.0f} min")
    return out

lines = [
    f"### {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ} — soak: sync for {e['minutes']} min under the plant workload at {e['rate']} rows/s",
    "",
    f"- machine: {e['machine']}; load average {e['load_start']} at the start, {e['load_end']} at the end",
    f"- bluegreen {e['bg_version']}; fixture scale {e['scale']}; {len(rows)} samples, one a second",
    f"- command: `bench/soak.sh --minutes {e['minutes']} --rate {e['rate']} --scale {e['scale']}`",
    f"- RSS: median {rss_warm / 1024:.1f} MB over seconds {warm[0]:.0f}–{warm[1]:.0f} (warming up), "
    f"{rss_early / 1024:.1f} MB over seconds {early[0]:.0f}–{early[1]:.0f}, {rss_late / 1024:.1f} MB over "
    f"seconds {late[0]:.0f}–{late[1]:.0f} ({100 * growth:+.1f}%), max {max(v for _, v in rss) / 1024:.1f} MB: "
    + ("**flat**" if flat else "**NOT flat**") + " (rule: the last window's median within 10% of the middle third's)",
    f"- lag (bluegreen_lag_seconds): p50 {p50:.2f} s, p99 {p99:.2f} s, max {lmax:.2f} s: goal p99 < 1 s "
    + ("**met**" if p99 < 1 else "**NOT met**"),
    f"- WAL held on blue by the slot: max {max((v for _, v in retained), default=0) / 2**20:.1f} MB",
    f"- end: sync caught up; `bluegreen verify`: {e['verify_line'].strip()}",
    "",
    "```",
    "sync RSS (per column: the highest sample)",
    *chart([(t, v / 1024) for t, v in rss], "MB"),
    "",
    "lag (bluegreen_lag_seconds)",
    *chart(lag, "s "),
    "```",
]
text = "\n".join(lines)
print(text)
if e["record"] == "1":
    with open(e["results"], "a") as f:
        f.write("\n" + text + "\n")
    print("appended to bench/RESULTS.md")
PY
