//! The report as one self-contained HTML file: inline CSS, charts as inline SVG, no
//! scripts, fonts or anything fetched, so it reads the same offline and attached to a
//! change record. Every text from the report goes through [`esc`].

use std::fmt::Write;

use crate::model::{CatchUp, Report, Sample, Severity, Stage, StageOutcome, Verdict};
use crate::text::{catch_up, count, duration, qualified, rate, size, utc};

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("bluegreen report: {} {}", r.kind.title(), r.run);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>",
        esc(&title)
    );
    header(&mut h, r);
    if let Some(e) = &r.estimate {
        estimate(&mut h, e);
    }
    section(&mut h, "timeline", "Stages");
    h.push_str(&timeline(r));
    stages_table(&mut h, r);
    h.push_str("</section>\n");
    sync(&mut h, r);
    copy(&mut h, r);
    verify(&mut h, r);
    cutover(&mut h, r);
    findings(&mut h, r);
    let _ = writeln!(
        h,
        "<footer>Written by bluegreen {} · report format {} · times in UTC</footer>\n</body></html>",
        esc(&r.bluegreen),
        r.format
    );
    h
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
:root{--ink:#1f2937;--mute:#6b7280;--line:#e5e7eb;--blue:#2563eb;--green:#15803d;--amber:#b45309;--red:#b91c1c;--bg:#f9fafb}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:var(--ink);background:#fff;margin:0 auto;max-width:1040px;padding:24px 28px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:14px 0 6px;color:var(--mute);font-weight:600}
section{margin:22px 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:var(--mute);margin:2px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;margin-right:4px}
.done,.equal{background:var(--green)}.findings,.differ{background:var(--amber)}.failed,.never{background:var(--red)}.running{background:var(--blue)}.skipped{background:#9ca3af}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 12px}
.card{flex:1 1 150px;border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--bg)}
.card .k{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:650;margin-top:2px}
.card.total{border-color:var(--blue);background:#eff6ff}
.card.bad .v{color:var(--red)}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--mute);font-weight:600;background:var(--bg)}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.warn{color:var(--amber)}.bad{color:var(--red)}.ok{color:var(--green)}
ol.assume li,ul.notes li{margin:3px 0}
svg{display:block;max-width:100%;height:auto;margin:6px 0}
svg text{font:11px system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#374151}
.empty{color:var(--mute);font-style:italic}
footer{color:var(--mute);font-size:12px;margin-top:28px;border-top:1px solid var(--line);padding-top:8px}
@media print{body{padding:0}section{break-inside:avoid}}
";

fn section(h: &mut String, id: &str, title: &str) {
    let _ = writeln!(h, "<section id=\"{id}\"><h2>{}</h2>", esc(title));
}

fn outcome_badge(o: StageOutcome) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", o.as_str())
}

fn header(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<header><h1>bluegreen · {} <code>{}</code></h1>",
        esc(r.kind.title()),
        esc(&r.run)
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">from <code>{}</code> to <code>{}</code></p>",
        esc(&r.source),
        esc(&r.target)
    );
    let took = match r.ended_at {
        Some(end) => format!(
            ", ended {}, took {}",
            utc(end),
            duration(end - r.started_at)
        ),
        None => ", still running when written".into(),
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">started {}{}</p>",
        utc(r.started_at),
        esc(&took)
    );
    let _ = writeln!(h, "<p>{}</p></header>", verdict_line(r));
}

/// One line: how the run ended.
fn verdict_line(r: &Report) -> String {
    let failed = r
        .stages
        .iter()
        .find(|s| matches!(s.outcome, StageOutcome::Failed | StageOutcome::Findings));
    let mut parts = Vec::new();
    match failed {
        Some(s) => parts.push(format!(
            "{} stopped at <b>{}</b>{}",
            outcome_badge(s.outcome),
            esc(s.name.as_str()),
            s.detail
                .as_deref()
                .map(|d| format!(": {}", esc(d)))
                .unwrap_or_default()
        )),
        None if r.stages.iter().any(|s| s.outcome == StageOutcome::Running) => {
            parts.push(outcome_badge(StageOutcome::Running))
        }
        None if !r.stages.is_empty() => parts.push(outcome_badge(StageOutcome::Done)),
        None => {}
    }
    if let Some(v) = &r.verify {
        parts.push(if v.equal {
            "<span class=\"badge equal\">verify: equal</span>".into()
        } else {
            "<span class=\"badge differ\">verify: differences</span>".into()
        });
    }
    if let Some(p) = r.cutover.as_ref().and_then(|c| c.pause_seconds) {
        parts.push(format!("client pause <b>{}</b>", duration(p)));
    }
    parts.join(" ")
}

fn estimate(h: &mut String, e: &crate::Estimate) {
    section(h, "estimate", "Window estimate for production");
    let _ = writeln!(
        h,
        "<p class=\"meta\">For <code>{}</code>: {} tables, {}, about {} rows{}.</p>",
        esc(&e.production),
        e.production_tables,
        size(e.production_bytes as f64),
        count(e.production_rows),
        e.wal_bytes_per_second
            .map(|w| format!(", writing {} of WAL", rate(w)))
            .unwrap_or_default()
    );
    let known = |v: Option<f64>| v.map(duration).unwrap_or_else(|| "not known".into());
    let never = matches!(e.catch_up, CatchUp::Never { .. });
    h.push_str("<div class=\"cards\">");
    card(h, "copy", &known(e.copy_seconds), false, false);
    card(h, "catch-up", &catch_up(&e.catch_up), never, false);
    card(h, "verify", &known(e.verify_seconds), false, false);
    card(h, "client pause", &known(e.pause_seconds), false, false);
    let window = match (e.window_seconds, never) {
        (Some(w), _) => duration(w),
        (None, true) => "no end".into(),
        (None, false) => "not known".into(),
    };
    card(h, "window", &window, never, true);
    h.push_str("</div>\n");
    h.push_str("<table><tr><th>Rate measured in this run</th><th class=\"n\">value</th></tr>");
    let rates = [
        (
            "copy (overall, all workers)",
            e.rates.copy_bytes_per_second.map(rate),
        ),
        (
            "apply (source WAL)",
            e.rates.apply_bytes_per_second.map(rate),
        ),
        (
            "apply (rows)",
            e.rates
                .apply_rows_per_second
                .map(|r| format!("{} rows/s", count(r.round() as i64))),
        ),
        ("verify", e.rates.verify_bytes_per_second.map(rate)),
    ];
    for (k, v) in rates {
        let _ = write!(
            h,
            "<tr><td>{k}</td><td class=\"n\">{}</td></tr>",
            esc(&v.unwrap_or_else(|| "not measured".into()))
        );
    }
    h.push_str("</table>\n");
    if !e.slowest_tables.is_empty() {
        h.push_str("<h3>Longest tables to copy (predicted worker time)</h3><table><tr><th>table</th><th class=\"n\">time</th></tr>");
        for (t, s) in &e.slowest_tables {
            let _ = write!(
                h,
                "<tr><td class=\"mono\">{}</td><td class=\"n\">{}</td></tr>",
                esc(t),
                duration(*s)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h3>Assumptions</h3><ol class=\"assume\">");
    for a in &e.assumptions {
        let _ = write!(h, "<li>{}</li>", esc(a));
    }
    h.push_str("</ol></section>\n");
}

fn card(h: &mut String, k: &str, v: &str, bad: bool, total: bool) {
    let class = match (bad, total) {
        (true, true) => "card total bad",
        (true, false) => "card bad",
        (false, true) => "card total",
        (false, false) => "card",
    };
    let _ = write!(
        h,
        "<div class=\"{class}\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
        esc(k),
        esc(v)
    );
}

fn stages_table(h: &mut String, r: &Report) {
    if r.stages.is_empty() {
        h.push_str("<p class=\"empty\">No stage recorded.</p>");
        return;
    }
    h.push_str("<table><tr><th>stage</th><th>outcome</th><th>start</th><th>end</th><th class=\"n\">duration</th><th>detail</th></tr>");
    for s in &r.stages {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(s.name.as_str()),
            outcome_badge(s.outcome),
            utc(s.started_at),
            s.ended_at.map(utc).unwrap_or_else(|| "—".into()),
            s.seconds.map(duration).unwrap_or_else(|| "—".into()),
            esc(s.detail.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
}

fn sync(h: &mut String, r: &Report) {
    section(h, "sync", "Sync: lag and apply rate (sampled every second)");
    if r.samples.is_empty() {
        h.push_str("<p class=\"empty\">No sync samples.</p></section>\n");
        return;
    }
    let series = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        r.samples.iter().map(|s| (s.t, f(s))).collect()
    };
    let marks = stage_marks(r);
    h.push_str(&line_chart(
        "Lag (seconds behind the source)",
        &series(|s| s.lag_seconds),
        &marks,
        &|v| duration(v),
        "#2563eb",
    ));
    h.push_str(&line_chart(
        "Lag (source WAL not yet applied)",
        &series(|s| s.lag_bytes.map(|b| b as f64)),
        &marks,
        &|v| size(v),
        "#7c3aed",
    ));
    h.push_str(&line_chart(
        "Apply rate (rows per second)",
        &series(|s| s.rows_per_second),
        &marks,
        &|v| count(v.round() as i64),
        "#15803d",
    ));
    let last = r.samples.iter().rev().find_map(|s| s.applied_lsn);
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} samples{}.</p></section>",
        r.samples.len(),
        last.map(|l| format!(", last applied LSN <code>{}</code>", esc(&l.to_string())))
            .unwrap_or_default()
    );
}

/// Stage starts as (seconds since the run started, name), drawn on the sync charts.
fn stage_marks(r: &Report) -> Vec<(f64, &'static str)> {
    r.stages
        .iter()
        .map(|s| (s.started_at - r.started_at, s.name.as_str()))
        .collect()
}

fn copy(h: &mut String, r: &Report) {
    section(h, "copy", "Copy per table");
    if r.tables.is_empty() {
        h.push_str("<p class=\"empty\">No table copied.</p></section>\n");
        return;
    }
    h.push_str("<table><tr><th>table</th><th class=\"n\">rows</th><th class=\"n\">bytes</th><th class=\"n\">worker time</th><th class=\"n\">rate</th><th class=\"n\">rows/s</th></tr>");
    let mut tables: Vec<_> = r.tables.iter().collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    for t in tables {
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&qualified(&t.schema, &t.name)),
            count(t.rows),
            size(t.bytes as f64),
            duration(t.seconds),
            t.bytes_per_second.map(rate).unwrap_or_else(|| "—".into()),
            t.rows_per_second
                .map(|v| count(v.round() as i64))
                .unwrap_or_else(|| "—".into()),
        );
    }
    let rows: i64 = r.tables.iter().map(|t| t.rows).sum();
    let bytes: i64 = r.tables.iter().map(|t| t.bytes).sum();
    let secs: f64 = r.tables.iter().map(|t| t.seconds).sum();
    let _ = writeln!(
        h,
        "<tr><th>{} tables</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th></th><th></th></tr></table>",
        r.tables.len(),
        count(rows),
        size(bytes as f64),
        duration(secs)
    );
    h.push_str("<p class=\"meta\">Worker time is the time spent on the table's chunks; chunks of many tables run at once, so the copy stage takes less than their sum.</p></section>\n");
}

fn verify(h: &mut String, r: &Report) {
    section(h, "verify", "Verify per table");
    let Some(v) = &r.verify else {
        h.push_str("<p class=\"empty\">Not verified in this run.</p></section>\n");
        return;
    };
    let _ = write!(
        h,
        "<p>Compared at source LSN <code>{}</code> in {}: {}</p>",
        esc(&v.lsn.to_string()),
        duration(v.seconds),
        if v.equal {
            "<span class=\"badge equal\">equal</span>"
        } else {
            "<span class=\"badge differ\">differences</span>"
        }
    );
    h.push_str("<table><tr><th>table</th><th>verdict</th><th class=\"n\">chunks</th><th class=\"n\">source rows</th><th class=\"n\">target rows</th><th class=\"n\">mismatched chunks</th><th class=\"n\">differing rows</th></tr>");
    for t in &v.tables {
        let verdict = match t.verdict {
            Verdict::Equal => "<span class=\"badge equal\">equal</span>",
            Verdict::Differ => "<span class=\"badge differ\">differ</span>",
        };
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td>{verdict}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&qualified(&t.schema, &t.name)),
            t.chunks,
            count(t.source_rows as i64),
            count(t.target_rows as i64),
            t.mismatched_chunks,
            t.differences
        );
    }
    h.push_str("</table></section>\n");
}

fn cutover(h: &mut String, r: &Report) {
    section(h, "cutover", "Cutover");
    let Some(c) = &r.cutover else {
        h.push_str("<p class=\"empty\">No cutover in this run.</p></section>\n");
        return;
    };
    let _ = write!(
        h,
        "<p>{}; client pause: <b>{}</b></p>",
        if c.rehearsed {
            "Rehearsed (production traffic untouched)"
        } else {
            "Traffic moved"
        },
        c.pause_seconds
            .map(duration)
            .unwrap_or_else(|| "none (no pooler paused)".into())
    );
    h.push_str(
        "<table><tr><th>step</th><th>clients</th><th>result</th><th class=\"n\">duration</th></tr>",
    );
    for s in &c.steps {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&s.step),
            if s.paused { "paused" } else { "" },
            if s.ok {
                "<span class=\"ok\">ok</span>"
            } else {
                "<span class=\"bad\">failed</span>"
            },
            duration(s.seconds)
        );
    }
    h.push_str("</table></section>\n");
}

fn findings(h: &mut String, r: &Report) {
    section(h, "findings", "Findings and warnings");
    if r.findings.is_empty() {
        h.push_str("<p class=\"empty\">None.</p></section>\n");
        return;
    }
    h.push_str("<ul class=\"notes\">");
    for n in &r.findings {
        let class = match n.severity {
            Severity::Blocker => "bad",
            Severity::Warning => "warn",
            Severity::Info => "",
        };
        let _ = write!(
            h,
            "<li><b class=\"{class}\">{}</b>{} {}</li>",
            n.severity.as_str(),
            n.code
                .as_deref()
                .map(|c| format!(" <code>{}</code>", esc(c)))
                .unwrap_or_default(),
            esc(&n.message)
        );
    }
    h.push_str("</ul></section>\n");
}

// ---- SVG ----

const W: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;

/// A step for about `n` ticks over `span`: 1, 2 or 5 times a power of ten.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A step for about `n` ticks over `span` seconds, on clock-friendly values.
fn time_step(span: f64, n: f64) -> f64 {
    const STEPS: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        21600.0, 86400.0,
    ];
    let raw = span / n;
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(span, n))
}

/// Seconds since the start as an axis label: `0`, `+45 s`, `+2 min`, `+1 h 30`.
fn tick_label(t: f64) -> String {
    let t = t.round() as i64;
    if t == 0 {
        "0".into()
    } else if t < 60 {
        format!("+{t} s")
    } else if t < 3600 {
        if t % 60 == 0 {
            format!("+{} min", t / 60)
        } else {
            format!("+{}:{:02}", t / 60, t % 60)
        }
    } else {
        format!("+{} h {:02}", t / 3600, (t % 3600) / 60)
    }
}

/// Gridlines and labels at round run times between `from` and `to` (seconds since the run
/// started), `x` placing a run time.
fn x_axis(svg: &mut String, from: f64, to: f64, x: &dyn Fn(f64) -> f64, top: f64, bottom: f64) {
    let step = time_step((to - from).max(1.0), 8.0);
    let mut t = (from / step).ceil() * step;
    while t <= to + 1e-9 {
        let px = x(t);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{top:.1}\" x2=\"{px:.1}\" y2=\"{bottom:.1}\" stroke=\"#eef0f3\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 14.0,
            tick_label(t)
        );
        t += step;
    }
}

/// The stages as bars on one time axis.
fn timeline(r: &Report) -> String {
    if r.stages.is_empty() {
        return String::new();
    }
    let end = r
        .ended_at
        .into_iter()
        .chain(r.stages.iter().map(|s| s.ended_at.unwrap_or(s.started_at)))
        .fold(r.started_at, f64::max);
    let span = (end - r.started_at).max(1.0);
    let row = 26.0;
    let top = 8.0;
    let bottom = top + row * r.stages.len() as f64;
    let height = bottom + 24.0;
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" role=\"img\" aria-label=\"stage timeline\">"
    );
    x_axis(&mut svg, 0.0, span, &x, top, bottom);
    for (i, s) in r.stages.iter().enumerate() {
        let y = top + row * i as f64;
        let start = s.started_at - r.started_at;
        let stop = s.ended_at.unwrap_or(end) - r.started_at;
        let (x0, x1) = (x(start), x(stop));
        // The duration after the bar, or before it where the bar ends at the right edge.
        let (label_x, anchor) = if x1 + 70.0 <= W - RIGHT {
            (x1 + 5.0, "start")
        } else {
            (x0 - 5.0, "end")
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"><title>{}: {}</title></rect>\
             <text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            LEFT - 8.0,
            y + row / 2.0 + 4.0,
            esc(s.name.as_str()),
            y + 4.0,
            (x1 - x0).max(2.0),
            row - 8.0,
            stage_color(s),
            esc(s.name.as_str()),
            s.seconds.map(duration).unwrap_or_else(|| "running".into()),
            y + row / 2.0 + 4.0,
            s.seconds.map(duration).unwrap_or_else(|| "running".into()),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn stage_color(s: &Stage) -> &'static str {
    match s.outcome {
        StageOutcome::Done => "#22c55e",
        StageOutcome::Findings => "#f59e0b",
        StageOutcome::Failed => "#ef4444",
        StageOutcome::Running => "#3b82f6",
        StageOutcome::Skipped => "#d1d5db",
    }
}

/// A line over time (gaps where a sample has no value), with the stages' starts marked.
fn line_chart(
    title: &str,
    points: &[(f64, Option<f64>)],
    marks: &[(f64, &str)],
    fmt: &dyn Fn(f64) -> String,
    color: &str,
) -> String {
    let (h, top, bottom) = (190.0, 22.0, 160.0);
    // The sampled span only: sync runs for part of the run.
    let t_min = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let t_max = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let t_min = if t_min.is_finite() { t_min } else { 0.0 };
    let t_max = if t_max.is_finite() { t_max } else { t_min };
    let span = (t_max - t_min).max(1.0);
    let v_max = points
        .iter()
        .filter_map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let step = nice_step(if v_max > 0.0 { v_max } else { 1.0 }, 4.0);
    let y_top = (v_max / step).ceil().max(1.0) * step;
    let x = |t: f64| LEFT + ((t - t_min) / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let y = |v: f64| bottom - (v / y_top).clamp(0.0, 1.0) * (bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{0}\">\
         <text x=\"{LEFT}\" y=\"13\" font-weight=\"600\">{0}</text>",
        esc(title)
    );
    let mut v = 0.0;
    while v <= y_top + step * 1e-9 {
        let py = y(v);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            esc(&fmt(v))
        );
        v += step;
    }
    x_axis(&mut svg, t_min, t_max, &x, bottom, bottom);
    // Stage starts as dashed lines; a name too close to the one before is left off (its
    // line stays; the timeline above names every stage).
    let mut free_from = f64::NEG_INFINITY;
    for (t, name) in marks {
        if *t < t_min || *t > t_max {
            continue;
        }
        let px = x(*t);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#9ca3af\" stroke-dasharray=\"3 3\"/>"
        );
        if px >= free_from {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#6b7280\">{}</text>",
                px + 3.0,
                top + 10.0,
                esc(name)
            );
            free_from = px + 7.0 * name.len() as f64 + 8.0;
        }
    }
    // Runs of consecutive values: a missing value breaks the line.
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (t, v) in points {
        match v.filter(|v| v.is_finite()) {
            Some(v) => runs.last_mut().expect("never empty").push((x(*t), y(v))),
            None => runs.push(Vec::new()),
        }
    }
    for run in runs.iter().filter(|r| !r.is_empty()) {
        let line: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let (first, last) = (run[0].0, run[run.len() - 1].0);
        let _ = write!(
            svg,
            "<polygon points=\"{first:.1},{bottom} {} {last:.1},{bottom}\" fill=\"{color}\" fill-opacity=\"0.12\"/>\
             <polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" stroke-linejoin=\"round\"/>",
            line.join(" "),
            line.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn hostile() -> Report {
        let evil = "<script>alert('x')</script>\"&";
        let mut r = Report::new(evil, RunKind::DryRun, "host=a", "host=b", 1.8e9);
        let mut s = Stage::start(StageName::Copy, 1.8e9);
        s.end(1.8e9 + 30.0, StageOutcome::Done, Some(evil.into()));
        r.stages.push(s);
        r.tables
            .push(TableCopy::new(evil, evil, 10, 1000, None, 1.0));
        r.samples = (0..40)
            .map(|i| Sample {
                t: i as f64,
                applied_lsn: Some(lsn::Lsn(i as u64 * 1000)),
                lag_seconds: if i == 20 { None } else { Some(40.0 - i as f64) },
                lag_bytes: Some(1000 * (40 - i)),
                rows_per_second: Some(500.0),
                behind_bytes: None,
                behind_seconds: None,
                held: false,
            })
            .collect();
        r.verify = Some(Verify {
            lsn: "0/16B3748".parse().unwrap(),
            equal: false,
            seconds: 2.0,
            tables: vec![TableVerdict {
                schema: evil.into(),
                name: evil.into(),
                verdict: Verdict::Differ,
                chunks: 1,
                source_rows: 10,
                target_rows: 9,
                mismatched_chunks: 1,
                differences: 1,
            }],
        });
        r.cutover = Some(Cutover {
            rehearsed: true,
            steps: vec![CutoverStep {
                step: evil.into(),
                seconds: 0.2,
                paused: true,
                ok: true,
            }],
            pause_seconds: Some(0.3),
        });
        r.findings.push(Note {
            severity: Severity::Warning,
            code: Some(evil.into()),
            message: evil.into(),
        });
        r
    }

    #[test]
    fn names_are_escaped_everywhere() {
        let html = render(&hostile());
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert('x')"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
    }

    #[test]
    fn the_page_stands_alone() {
        let mut r = hostile();
        r.estimate = Some(crate::estimate(
            &crate::Measured::from_report(&r),
            &crate::Production {
                description: "host=prod".into(),
                tables: vec![],
                wal_bytes_per_second: Some(100.0),
            },
        ));
        let html = render(&r);
        // Nothing fetched: no URL but the SVG namespace, no script, no external font or sheet.
        let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
        assert!(!html.to_lowercase().contains("<script"));
        assert!(!html.contains("@import") && !html.contains("url("));
        assert!(!html.contains("<link") && !html.contains("src="));
        // The charts and the timeline are inline SVG.
        assert_eq!(html.matches("<svg").count(), 4, "timeline + 3 sync charts");
        assert!(html.contains("<polyline"));
        assert!(html.contains("aria-label=\"stage timeline\""));
        assert!(html.contains("id=\"estimate\""));
        // The missing lag sample breaks the lag line in two.
        let lag = html.split("<svg").nth(2).unwrap();
        assert_eq!(lag.matches("<polyline").count(), 2);
    }

    #[test]
    fn an_empty_report_renders() {
        let r = Report::new("main", RunKind::Run, "a", "b", 0.0);
        let html = render(&r);
        assert!(html.contains("No sync samples."));
        assert!(html.contains("Not verified in this run."));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(97.0, 4.0), 50.0);
        assert!((nice_step(0.3, 4.0) - 0.1).abs() < 1e-12);
        assert_eq!(time_step(600.0, 8.0), 120.0);
        assert_eq!(tick_label(90.0), "+1:30");
        assert_eq!(count(1234567), "1,234,567");
    }
}
