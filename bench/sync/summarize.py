#!/usr/bin/env python3
"""Summarizes bench/sync.sh: per mix, the catch-up rate of bluegreen sync, the PostgreSQL
subscription and the walsender's ceiling (pg_recvlogical to /dev/null) with the ratios the
goals name; who used the two cores; bluegreen's memory through one large transaction; lag
under the highest write rate. With --record, appends it, dated, with machine, versions and
settings, to the sync section of bench/RESULTS.md."""

import os
import sys
import argparse
import csv
import statistics

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import results  # noqa: E402  (bench/results.py)

SECTION = "## sync"
MIX = {
    "a": "a: metric_hist INSERT, 1 row/txn",
    "b": "b: metric_hist INSERT, 100 rows/txn",
    "c": "c: metric_latest upsert, 14 rows/txn",
    "d": "d: metric_hist UPDATE+DELETE by id, 2 rows/txn",
}
CONSUMERS = ["bluegreen", "subscription", "ceiling"]


def meta(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def rows_of(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def mixes_table(runs):
    by = {}
    for r in runs:
        by.setdefault(r["mix"], {}).setdefault(r["consumer"], []).append(r)
    lines = [
        "| mix | changed rows | WAL MB | bluegreen rows/s | subscription rows/s | ceiling rows/s "
        "| bluegreen / subscription | bluegreen / ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for mix in sorted(by):
        c = by[mix]
        rate = {k: statistics.median(float(r["rows_per_s"]) for r in v) for k, v in c.items()}
        any_row = next(iter(c.values()))[0]
        cells = [f"{rate[k]:,.0f}" if k in rate else "–" for k in CONSUMERS]
        bs = rate.get("bluegreen", 0) / rate["subscription"] if "subscription" in rate else None
        bc = rate.get("bluegreen", 0) / rate["ceiling"] if "ceiling" in rate else None
        fmt = lambda x, goal: "–" if x is None or "bluegreen" not in rate else (
            f"**{x:.2f}**" if x >= goal else f"{x:.2f} (goal {goal})"
        )
        lines.append(
            f"| {MIX.get(mix, mix)} | {int(any_row['rows']):,} | {int(any_row['wal_bytes']) / 2**20:.0f} | "
            + " | ".join(cells)
            + f" | {fmt(bs, 1.0)} | {fmt(bc, 0.9)} |"
        )
        if "bluegreen" in rate:
            verdicts.append((mix, bs, bc))
    return lines, verdicts


def cpu_table(runs):
    lines = [
        "| round | mix | consumer | s | rows/s | CPU s: client | walsender | target backends "
        "| machine busy | others | iowait | load1 | target reads |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        ours = float(r["cpu_client"]) + float(r["cpu_walsender"]) + float(r["cpu_target"])
        lines.append(
            f"| {r['round']} | {r['mix']} | {r['consumer']} | {float(r['seconds']):.2f} | "
            f"{int(r['rows_per_s']):,} | {float(r['cpu_client']):.1f} | {float(r['cpu_walsender']):.1f} | "
            f"{float(r['cpu_target']):.1f} | {float(r['cpu_machine']):.1f} | "
            f"{max(0.0, float(r['cpu_machine']) - ours):.1f} | {float(r.get('iowait') or 0):.1f} | "
            f"{r['load1']} | {int(r.get('target_reads') or 0):,} |"
        )
    return lines


def big_lines(big, rss):
    if not big:
        return []
    b = {r["what"]: r["value"] for r in big}
    secs = float(b["seconds"])
    out = [
        f"- memory: one source transaction of {int(b['rows']):,} metric_hist rows applied by bluegreen "
        f"in {secs:.1f} s ({int(b['rows']) / secs:,.0f} rows/s, load1 {b['load1']}); "
        f"peak RSS (/usr/bin/time -v) **{int(b['peak_rss_kb']) / 1024:.0f} MB**"
    ]
    if rss:
        samples = [(float(r["seconds"]), int(r["rss_kb"])) for r in rss if r["rss_kb"]]
        if samples:
            end = samples[-1][0]
            marks = []
            for f in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
                s = min(samples, key=lambda x: abs(x[0] - f * end))
                marks.append(f"{s[0]:.0f} s {s[1] / 1024:.0f} MB")
            out.append(
                f"  (RSS sampled every 0.5 s: {len(samples)} samples, min {min(s[1] for s in samples) / 1024:.0f} MB, "
                f"max {max(s[1] for s in samples) / 1024:.0f} MB; over time: {', '.join(marks)})"
            )
    return out


def lag_lines(lag, m):
    out = []
    names = []
    for r in lag:
        if r["load"] not in names:
            names.append(r["load"])
    what = {
        "fixture": "plant workload (`bg-fixture workload --rate 1000000`: as fast as it can)",
        "pgbench": "pgbench 1-row metric_hist inserts, -c 4 -j 2, no rate limit",
    }
    verdict = []
    for n in names:
        v = [float(r["lag_seconds"]) for r in lag if r["load"] == n and r["lag_seconds"] not in ("", "null")]
        if not v:
            continue
        rows = int(m.get(f"{n}.rows", 0))
        secs = float(m.get(f"{n}.seconds", 1))
        mx, p95 = max(v), pct(v, 95)
        out.append(
            f"- lag under {what.get(n, n)}: source wrote {rows / secs:,.0f} changed rows/s for {secs:.0f} s "
            f"(load1 {m.get(n + '.load1', '?')}); lag_seconds sampled every second ({len(v)} samples): "
            f"max **{mx:.2f} s**, p95 **{p95:.2f} s**"
        )
        verdict.append((n, mx, p95))
    return out, verdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--big")
    ap.add_argument("--rss")
    ap.add_argument("--lag")
    ap.add_argument("--meta", required=True)
    ap.add_argument("--record")
    a = ap.parse_args()
    m = meta(a.meta)
    runs = rows_of(a.csv)
    table, verdicts = mixes_table(runs)
    cpu = cpu_table(runs)
    big = big_lines(rows_of(a.big) if a.big else [], rows_of(a.rss) if a.rss else [])
    lag, lag_verdict = lag_lines(rows_of(a.lag) if a.lag else [], m)
    goals = []
    for mix, bs, bc in verdicts:
        parts = []
        if bs is not None:
            parts.append(f"vs subscription {bs:.2f}× ({'met' if bs >= 1.0 else 'MISSED'}, goal ≥ 1.0)")
        if bc is not None:
            parts.append(f"vs ceiling {bc:.2f}× ({'met' if bc >= 0.9 else 'MISSED'}, goal ≥ 0.9)")
        goals.append(f"- mix {mix}: " + "; ".join(parts))
    for n, mx, p95 in lag_verdict:
        goals.append(f"- lag ({n}): max {mx:.2f} s ({'met' if mx < 1.0 else 'MISSED'}, goal < 1 s)")
    text = ["", *table, "", *big, *lag, "", "goals:", *goals]
    print("\n".join(text).replace("**", ""))
    if not a.record:
        return
    entry = [
        f"### {m['date']} — {m['rows']} changed rows per mix (mix b 3×), {m['rounds']} round(s)",
        "",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; load average "
        f"{m['load_start']} at the start, {m['load_end']} at the end (1-minute load of each "
        "measurement below; the machine is shared with other engineers' builds)",
        f"- versions: PostgreSQL {m['postgresql']}, bluegreen {m['bluegreen']}"
        + (f" with `bluegreen sync {m['sync_args']}`" if m.get("sync_args") else ""),
        f"- server settings (source and target, every consumer): {m['settings']}",
        f"- fixture scale 0.05 ({m['ndefs']} metrics), sensor_raw_log REPLICA IDENTITY FULL; changes "
        "written by pgbench -c 4 -j 2 with no consumer attached, then caught up by each consumer "
        "alone, in rotating order, from its own slot advanced to the same LSN (see bench/sync.sh)",
        f"- command: `bench/sync.sh --rows {m['rows']} --rounds {m['rounds']}"
        + (f" --mixes {m['mixes']}" if m["mixes"] != "a,b,c,d" else "")
        + (f" --consumers {m['consumers']}" if m["consumers"] != "bluegreen,subscription,ceiling" else "")
        + "`",
        "",
        *table,
        "",
        *big,
        *lag,
        "",
        "Goals:",
        "",
        *goals,
        "",
        "<details><summary>every measurement, with the CPU seconds of each process (2 cores for all) and the 8 KB blocks the consumer's target database read into shared buffers from outside them</summary>",
        "",
        *cpu,
        "",
        "</details>",
        "",
    ]
    results.append(a.record, SECTION, "Newest last. Produced by `bench/sync.sh`; the design is in its header.", entry)


if __name__ == "__main__":
    main()
