#!/usr/bin/env python3
"""Summarizes bench/copy.sh runs: a table per tool (median, min, max seconds, peak RSS,
ratio to bluegreen) and bluegreen's ratio to the fastest peer; with --record, appends it,
dated, with machine, versions and settings, to the copy section of bench/RESULTS.md."""

import os
import sys
import argparse
import csv
import statistics

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import results  # noqa: E402  (bench/results.py)

ORDER = ["bluegreen", "dump-psql", "dump-restore-j2", "pgcopydb", "subscription"]
LABEL = {
    "bluegreen": "bluegreen copy",
    "dump-psql": "pg_dump \\| psql",
    "dump-restore-j2": "pg_dump -Fd -j2 + pg_restore -j2",
    "pgcopydb": "pgcopydb clone (2 table + 2 index jobs)",
    "subscription": "CREATE SUBSCRIPTION initial sync",
}
SECTION = "## copy"


def load(path):
    runs = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            runs.setdefault(row["tool"], []).append(row)
    return runs


def meta(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def table(runs, nproc):
    stats = {}
    for tool, rows in runs.items():
        secs = [float(r["seconds"]) for r in rows]
        stats[tool] = {
            "median": statistics.median(secs),
            "min": min(secs),
            "max": max(secs),
            "rss": max(int(r["rss_kb"]) for r in rows) / 1024,
            "cpu": statistics.median(float(r["cpu_s"]) for r in rows),
            "n": len(secs),
            "notes": [r["note"] for r in rows],
        }
    bg = stats.get("bluegreen", {}).get("median")
    lines = [
        "| tool | median s | min s | max s | peak RSS MB | × bluegreen | CPU s (median) | CPU s / cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in [t for t in ORDER if t in stats]:
        s = stats[tool]
        ratio = f"{s['median'] / bg:.2f}" if bg else "–"
        rss = f"{s['rss']:.0f}" if tool != "subscription" else f"({s['rss']:.0f})"
        lines.append(
            f"| {LABEL[tool]} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {rss} | {ratio} "
            f"| {s['cpu']:.1f} | {s['cpu'] / nproc:.1f} |"
        )
    peers = {t: s["median"] for t, s in stats.items() if t != "bluegreen"}
    verdict = ""
    if bg and peers:
        fastest = min(peers, key=peers.get)
        verdict = (
            f"bluegreen / fastest peer ({LABEL[fastest]}): "
            f"{bg:.2f} s / {peers[fastest]:.2f} s = **{bg / peers[fastest]:.2f}×**"
        )
    return stats, lines, verdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--record")
    a = ap.parse_args()
    runs = load(a.csv)
    m = meta(a.meta)
    stats, lines, verdict = table(runs, int(m["nproc"]))
    print()
    print("\n".join(lines).replace("\\|", "|"))
    if verdict:
        print()
        print(verdict.replace("**", "").replace("\\|", "|"))
    if not a.record:
        return
    entry = [
        f"### {m['date']} — scale {m['scale']} ({m['source_mb']} MB source database), {m['rounds']} rounds",
        "",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; "
        f"load average {m['load_start']} at the start, {m['load_end']} at the end "
        f"(1-minute load before each run is in the run log below)",
        f"- versions: PostgreSQL {m['postgresql']} (pg_dump {m['pg_dump']}), pgcopydb {m['pgcopydb']}, "
        f"bluegreen {m['bluegreen']}" + (f" with `{m['bluegreen_args']}`" if m.get("bluegreen_args") else ""),
        f"- server settings (source and target, every tool): {m['settings']}",
        "- command: `bench/copy.sh --scale {0} --rounds {1}`".format(m["scale"], m["rounds"]),
        "",
        *lines,
        "",
        "CPU s: user + system seconds of the source server, the target server (every backend and "
        "worker, including autovacuum) and the tool's own processes; CPU s / cores: the wall time "
        "that work would take with every core busy all the time (a floor on this machine).",
        "",
        verdict,
        "",
        "<details><summary>every run</summary>",
        "",
        "| round | tool | s | RSS MB | load1 | CPU s | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    with open(a.csv) as f:
        for r in csv.DictReader(f):
            entry.append(
                f"| {r['round']} | {r['tool']} | {float(r['seconds']):.2f} | "
                f"{int(r['rss_kb']) / 1024:.0f} | {r['load1']} | {float(r['cpu_s']):.1f} | {r['note']} |"
            )
    entry += ["", "</details>", ""]
    results.append(a.record, SECTION, "Newest last. Produced by `bench/copy.sh`; see bench/README.md.", entry)


if __name__ == "__main__":
    main()
