#!/usr/bin/env python3
"""Summarizes a bench/cutover.sh run: per client rate, the flips, the client transactions that
failed, the pause clients saw in each flip (largest pgbench latency among the transactions
overlapping the flip command's run) next to the coordinator's own `paused N ms`, the per-step
timings, the noise floor (latency away from flips), and the zero-loss checks. With --record,
appends it, dated, with machine, versions and settings, to the cutover section of
bench/RESULTS.md. Exits 1 when a transaction failed or a write is missing."""

import os
import sys
import argparse
import csv
import datetime
import glob
import math
import re
import statistics

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import results  # noqa: E402  (bench/results.py)

SECTION = "## cutover"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
GOAL_MS = 500.0
# Away from flips: transactions at least this far from every flip window.
QUIET_S = 1.0


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(v)))
    return v[k - 1]


def meta(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def pgbench_log(prefix):
    """(scheduled start, end, latency from the scheduled start, latency from when it was sent)
    of each completed transaction, in seconds; and the count of other lines."""
    txns, other = [], 0
    for path in glob.glob(prefix + ".[0-9]*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
                if len(p) < 6:
                    continue
                if not p[2].isdigit():
                    other += 1  # failed / serialization / deadlock / skipped
                    continue
                lat = int(p[2]) / 1e6
                lag = int(p[6]) / 1e6 if len(p) > 6 else 0.0
                end = int(p[4]) + int(p[5]) / 1e6
                txns.append((end - lat, end, lat, lat - lag))
    return txns, other


def coordinator(path):
    """paused ms and [(step, ms)] from a flip's stdout."""
    paused, steps = None, []
    with open(path) as f:
        for line in f:
            m = re.search(r"paused (\d+) ms", line)
            if m:
                paused = float(m.group(1))
                continue
            m = re.match(r"^  (\S.*?)\s+(-?[\d.]+) ms$", line)
            if m:
                steps.append((m.group(1), float(m.group(2))))
    return paused, steps


STEP_LOG = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z .*cutover step step=\"([^\"]+)\" seconds=([\d.e-]+)"
)


def pause_window(log_path):
    """[first PAUSE sent, last RESUME answered] in epoch seconds, from the flip's stderr
    (tracing logs each step with its wall-clock end and duration); None if not found."""
    ends = {}
    try:
        with open(log_path) as f:
            for line in f:
                m = STEP_LOG.match(ANSI.sub("", line))
                if m:
                    t = datetime.datetime.fromisoformat(m.group(1)).replace(
                        tzinfo=datetime.timezone.utc
                    )
                    ends[m.group(2)] = (t.timestamp(), float(m.group(3)))
    except FileNotFoundError:
        return None
    if "pause" not in ends or "resume" not in ends:
        return None
    return ends["pause"][0] - ends["pause"][1], ends["resume"][0]


def fmt_ms(v):
    return "–" if v is None else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flips", required=True)
    ap.add_argument("--loss", required=True)
    ap.add_argument("--pgbench", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--record")
    a = ap.parse_args()
    m = meta(a.meta)

    with open(a.flips) as f:
        flips = list(csv.DictReader(f))
    with open(a.loss) as f:
        loss = {r["tps"]: r for r in csv.DictReader(f)}

    rows, per_flip, step_rows, problems, notes = [], [], [], [], []
    step_names = []
    for tps, lr in loss.items():
        txns, other = pgbench_log(f"{a.pgbench}/{tps}")
        ok = [r for r in flips if r["tps"] == tps and r["rc"] == "0"]
        bad = [r for r in flips if r["tps"] == tps and r["rc"] != "0"]
        # The flip commands' runs (for the noise floor) and their pauses (for the pause).
        windows = [(float(r["start"]), float(r["end"])) for r in ok]
        pauses = [
            pause_window(r["out"][: -len(".out")] + ".log") or w for r, w in zip(ok, windows)
        ]
        client, sched, coord, steps = [], [], [], {}
        load_end = max((t[1] for t in txns), default=0.0)
        for r, (t0, t1) in zip(ok, pauses):
            # Sent → done: transactions on the wire during the pause.
            hit = [t for t in txns if t[1] - t[3] <= t1 and t[1] >= t0]
            worst = max((t[3] for t in hit), default=0.0) * 1000
            # Scheduled → done: also counts waiting behind pgbench's own backlog.
            worst_s = max((t[2] for t in txns if t[0] <= t1 and t[1] >= t0), default=0.0) * 1000
            paused, st = coordinator(r["out"])
            if t0 < load_end:  # a flip after the load ended says nothing about clients
                client.append(worst)
                sched.append(worst_s)
            if paused is not None:
                coord.append(paused)
            for name, ms in st:
                if name not in step_names:
                    step_names.append(name)
                steps.setdefault(name, []).append(ms)
            per_flip.append(
                (tps, r["cycle"], r["verb"], worst, worst_s, paused, len(hit), r["load1"], st)
            )
        away = [
            t
            for t in txns
            if all(t[1] < w0 - QUIET_S or t[0] > w1 + QUIET_S for w0, w1 in windows)
        ]
        quiet = [t[3] * 1000 for t in away]
        quiet_s = [t[2] * 1000 for t in away]
        failed = int(lr["failed"] or 0) + int(lr["aborted_clients"] or 0) + other
        processed = int(lr["processed"] or 0)
        blue, green = lr["blue"], lr["green"]
        blue_n = int(blue.split("/")[0])
        lost_ok = blue == green and blue_n == processed
        if failed:
            problems.append(f"{tps} tps: {failed} client transactions failed")
        if lr["pgbench_rc"] != "0":
            problems.append(f"{tps} tps: pgbench exited {lr['pgbench_rc']}")
        if not lost_ok:
            problems.append(
                f"{tps} tps: pgbench completed {processed} transactions; marked rows blue {blue}, green {green}"
            )
        if bad:
            reasons = {}
            for r in bad:
                log = r["out"][: -len(".out")] + ".log"
                try:
                    with open(log) as f:
                        text = ANSI.sub("", f.read())
                except FileNotFoundError:
                    text = ""
                m_ = re.search(r"error: (.*)", text) or re.search(r'step="([^"]+)" error="?([^"\n]*)', text)
                why = m_.group(0) if m_ else f"exit {r['rc']}"
                why = re.sub(r"[\d.]+ s\b", "N s", why)
                why = re.sub(r"\d+/[0-9A-F]+", "LSN", why)
                reasons[why] = reasons.get(why, 0) + 1
            notes.append(
                f"{tps} tps: {len(bad)} flip attempts refused or failed and undone (traffic stayed put; retried once sync had caught up): "
                + "; ".join(f"{n}× {w}" for w, n in reasons.items())
            )
        rows.append(
            {
                "tps": tps,
                "flips": len(ok),
                "failed_flips": len(bad),
                "txns": processed,
                "failed": failed,
                "c50": pct(client, 50) if client else None,
                "c99": pct(client, 99) if client else None,
                "cmax": max(client) if client else None,
                "s50": pct(sched, 50) if sched else None,
                "s99": pct(sched, 99) if sched else None,
                "smax": max(sched) if sched else None,
                "qs99": pct(quiet_s, 99) if quiet_s else None,
                "k50": pct(coord, 50) if coord else None,
                "kmax": max(coord) if coord else None,
                "q99": pct(quiet, 99) if quiet else None,
                "qmax": max(quiet) if quiet else None,
                "rows": f"{blue_n} = {processed}" if blue_n == processed else f"{blue_n} ≠ {processed}",
                "same": "yes" if blue == green else "NO",
                "steps": steps,
            }
        )

    table = [
        "| tps | flips (+ refused) | txns | failed txns | client pause p50 / p99 / max ms | coordinator paused p50 / max ms | away from flips p99 / max ms | from schedule: pause p50 / p99 / max; away p99 ms | rows inserted = txns | blue = green |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['tps']} | {r['flips']}" + (f" (+{r['failed_flips']})" if r["failed_flips"] else "")
            + f" | {r['txns']} | {r['failed']} | "
            f"{fmt_ms(r['c50'])} / {fmt_ms(r['c99'])} / **{fmt_ms(r['cmax'])}** | "
            f"{fmt_ms(r['k50'])} / {fmt_ms(r['kmax'])} | {fmt_ms(r['q99'])} / {fmt_ms(r['qmax'])} | "
            f"{fmt_ms(r['s50'])} / {fmt_ms(r['s99'])} / {fmt_ms(r['smax'])}; {fmt_ms(r['qs99'])} | "
            f"{r['rows']} | {r['same']} |"
        )
    steps_t = [
        "| tps | " + " | ".join(step_names) + " |",
        "|---:|" + "---:|" * len(step_names),
    ]
    for r in rows:
        cells = []
        for n in step_names:
            v = r["steps"].get(n, [])
            cells.append(f"{statistics.median(v):.0f} / {max(v):.0f}" if v else "–")
        steps_t.append(f"| {r['tps']} | " + " | ".join(cells) + " |")
    flips_t = [
        "| tps | # | flip | client pause ms | from schedule ms | coordinator paused ms | txns on the wire | load1 | steps ms |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for tps, i, verb, worst, worst_s, paused, n, l1, st in per_flip:
        flips_t.append(
            f"| {tps} | {i} | {verb} | {worst:.0f} | {worst_s:.0f} | {fmt_ms(paused)} | {n} | {l1} | "
            + ", ".join(f"{s} {ms:.0f}" for s, ms in st)
            + " |"
        )
    at_goal = [r for r in rows if r["tps"] == "1000"]
    want_flips = 2 * int(m.get("flips", "0") or 0)
    if not at_goal:
        goal = "not measured (no 1000 tps run)"
    else:
        g = at_goal[0]
        done_ = f"max {fmt_ms(g['cmax'])} ms over {g['flips']} flips; from schedule {fmt_ms(g['smax'])} ms"
        if g["cmax"] is None or g["flips"] < want_flips:
            goal = f"NOT measured in full ({g['flips']} of {want_flips} flips; {done_})"
        elif g["cmax"] < GOAL_MS:
            goal = f"met ({done_})"
        else:
            goal = f"NOT met ({done_})"
    verdict = [
        f"- goal (issue 7): client pause max under {GOAL_MS:.0f} ms at 1,000 tps: "
        + goal
        + "; failed client transactions: "
        + ("0" if not any(r["failed"] for r in rows) else "SOME")
        + "; every committed write on both servers: "
        + ("yes" if all(r["same"] == "yes" and "≠" not in r["rows"] for r in rows) else "NO"),
        f"- end state: metric_hist/metric_latest fingerprints blue `{m.get('fingerprint_blue')}`, green `{m.get('fingerprint_green')}`"
        + (" (equal)" if m.get("fingerprint_blue") == m.get("fingerprint_green") else " (DIFFERENT)")
        + f"; `bluegreen verify` exit {m.get('verify_rc')}",
    ]
    if m.get("fingerprint_blue") != m.get("fingerprint_green"):
        problems.append("final fingerprints differ")
    if m.get("verify_rc") not in ("0", "skipped"):
        problems.append(f"bluegreen verify exited {m.get('verify_rc')}")
    for n in notes:
        verdict.append(f"- note: {n}")
    for p in problems:
        verdict.append(f"- problem: {p}")

    print()
    print("\n".join(table))
    print()
    print("coordinator steps, median / max ms:")
    print("\n".join(steps_t))
    print()
    print("\n".join(verdict))

    if a.record:
        entry = [
            f"### {m['date']} — {m['tps']} tps, {m['flips']} cutovers + {m['flips']} rollbacks each",
            "",
            f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, shared with other engineers' "
            f"builds and benchmarks: load average {m['load_start']} at the start, {m['load_end']} at the end",
            f"- versions: {m['postgresql']}, {m['pgbouncer']} (transaction pooling), {m['pgbench']}, bluegreen {m['bluegreen']}",
            f"- servers (both): {m['settings']}",
            f"- load: `pgbench -n -R <tps> -c {m['clients']} -j 2 -l -f {m.get('script', 'bench/cutover/txn.sql')}` through PgBouncer "
            "(metric_hist insert + metric_latest upsert per transaction); fixture scale "
            f"{m['scale']}; flips `{m['flip_args']}`; bg-servers `{m.get('servers_args') or '(defaults)'}`",
            f"- applier capacity on this transaction mix (sync alone against unthrottled pgbench on blue): {m.get('capacity')}",
            "- client pause = the longest a pgbench transaction took from being sent to being done, "
            "among those on the wire during the coordinator's pause (first PAUSE sent to last RESUME "
            "answered, from its step log); coordinator paused = that interval as it reports it; away "
            "from flips = transactions more than 1 s from any flip command's run (the noise floor); "
            "from schedule = pgbench's own latency under -R (from the scheduled start), which also "
            "counts waiting behind pgbench's backlog when the machine cannot keep up",
            "",
            *table,
            "",
            "Coordinator steps, median / max ms:",
            "",
            *steps_t,
            "",
            *verdict,
            "",
            "<details><summary>every flip</summary>",
            "",
            *flips_t,
            "",
            "</details>",
            "",
        ]
        results.append(a.record, SECTION, "Newest last. Produced by `bench/cutover.sh`; the design is in its header.", entry)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
