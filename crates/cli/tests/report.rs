//! `bluegreen report` against a real target: a rehearsal's report kept in the state schema
//! (as `run --dry-run` keeps it) is rendered again into a directory, from the target or
//! from the directory's report.json, as one self-contained HTML file.
//!
//! The report is built from the fixture's real table sizes (its plan, with a table whose
//! name is HTML), with timings a rehearsal at about 100 MB would show. Set
//! BLUEGREEN_KEEP_REPORT=DIR to keep the rendered report for a look
//! (scripts/render-report.sh DIR/report.html out.png).

mod common;

use common::{bluegreen, code, fixture_pair, stderr, stdout};
use report::{
    Cutover, CutoverStep, Measured, Note, Production, Report, RunKind, Sample, Severity, Stage,
    StageName, StageOutcome, TableCopy, TableVerdict, Verdict, Verify,
};
use tokio_postgres::NoTls;

const DB: &str = "factory_telemetry";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const MB: f64 = 1024.0 * 1024.0;

async fn client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// A rehearsal of `plan`'s tables at `scale` times their size: copy at ~25 MB/s per
/// worker on 2 workers, a catch-up from a backlog, verify, a rehearsed flip and rollback.
fn rehearsal(plan: &catalog::Plan, scale: f64) -> Report {
    let t0 = 1_796_400_000.0;
    let mut r = Report::new(
        "rehearsal",
        RunKind::DryRun,
        "host=staging-blue port=5432 user=bluegreen dbname=factory_telemetry sslmode=require",
        "host=staging-green port=5432 user=bluegreen dbname=factory_telemetry sslmode=require",
        t0,
    );
    let mut at = t0;
    let mut stage = |r: &mut Report, name, seconds: f64| {
        let mut s = Stage::start(name, at);
        at += seconds;
        s.end(at, StageOutcome::Done, None);
        r.stages.push(s);
        at
    };
    stage(&mut r, StageName::Plan, 1.8);
    let mut worker = 0.0;
    for (i, t) in plan
        .tables
        .iter()
        .filter(|t| t.kind != "partitioned")
        .enumerate()
    {
        let bytes = (t.bytes as f64 * scale) as i64;
        let rows = (t.estimated_rows.unwrap_or(0) as f64 * scale) as i64;
        // Narrow tables of many rows copy slower per byte.
        let per_worker = 25.0 * MB * (0.7 + 0.1 * (i % 5) as f64);
        let seconds = bytes as f64 / per_worker + 0.05;
        worker += seconds;
        r.tables.push(TableCopy::new(
            &t.schema,
            &t.name,
            rows,
            (bytes as f64 * 0.92) as i64,
            Some(bytes),
            seconds,
        ));
    }
    let copy_end = stage(&mut r, StageName::Copy, worker / 1.8 + 6.0);
    // Catch-up: 180 MB behind, applying 14 MB/s while the source writes 2 MB/s.
    let mut lag = 180.0 * MB;
    let mut lsn: u64 = 0x3_0000_0000;
    let catch_up = 17.0;
    let verify_s = 24.0;
    let end = catch_up + verify_s + 12.0;
    let mut t: f64 = 0.0;
    while t <= end {
        let noise = ((t * 7.3).sin() * 0.5 + 0.5) * 0.3;
        let held = t > catch_up + 2.0 && t < catch_up + 4.0;
        let (applied, rows) = if lag > 1.0 * MB && !held {
            (14.0 * MB, 9_000.0 + 800.0 * noise)
        } else if held {
            (0.0, 0.0)
        } else {
            (2.0 * MB, 1_300.0 + 400.0 * noise)
        };
        lag = (lag + 2.0 * MB - applied).max(0.2 * MB * (1.0 + noise));
        lsn += applied as u64;
        r.samples.push(Sample {
            t: copy_end - t0 + t,
            applied_lsn: Some(wire::Lsn(lsn)),
            lag_seconds: Some(lag / (2.0 * MB)),
            lag_bytes: Some(lag as i64),
            rows_per_second: Some(rows),
            behind_bytes: None,
            behind_seconds: None,
            held: false,
        });
        t += 1.0;
    }
    stage(&mut r, StageName::CatchUp, catch_up);
    let verify_start = stage(&mut r, StageName::Verify, verify_s);
    r.verify = Some(Verify {
        lsn: "3/B374D848".parse().unwrap(),
        equal: true,
        seconds: verify_s,
        tables: r
            .tables
            .iter()
            .map(|t| TableVerdict {
                schema: t.schema.clone(),
                name: t.name.clone(),
                verdict: Verdict::Equal,
                chunks: (t.bytes as u64 / (8 << 20)).max(1),
                source_rows: t.rows as u64,
                target_rows: t.rows as u64,
                mismatched_chunks: 0,
                differences: 0,
            })
            .collect(),
    });
    let _ = verify_start;
    stage(&mut r, StageName::Cutover, 3.1);
    let steps = [
        ("guardrails", 0.42, false),
        ("arm rollback (reverse slot on green)", 0.61, false),
        ("sequences pre-sync", 0.08, false),
        ("pause pooler", 0.05, true),
        ("fence blue", 0.03, true),
        ("drain: sync holds at blue's LSN", 0.21, true),
        ("final sequence sync", 0.04, true),
        ("rewrite and reload pooler", 0.07, true),
        ("resume pooler", 0.01, false),
    ];
    r.cutover = Some(Cutover {
        rehearsed: true,
        steps: steps
            .iter()
            .map(|(s, secs, paused)| CutoverStep {
                step: s.to_string(),
                seconds: *secs,
                paused: *paused,
                ok: true,
            })
            .collect(),
        pause_seconds: Some(0.41),
    });
    stage(&mut r, StageName::Rollback, 2.4);
    let end = stage(&mut r, StageName::Cleanup, 0.9);
    r.ended_at = Some(end);
    r.findings.push(Note {
        severity: Severity::Warning,
        code: Some("no-primary-key".into()),
        message: format!("factory_telemetry.{HOSTILE} has no primary key"),
    });
    r.findings.push(Note {
        severity: Severity::Info,
        code: None,
        message: "the staging pooler was flipped and flipped back; production's was not touched"
            .into(),
    });
    r
}

#[test]
fn report_renders_a_stored_rehearsal_from_the_target_and_from_its_directory() {
    let (source, target) = fixture_pair();
    source.sql(
        DB,
        &format!(
            "CREATE TABLE factory_telemetry.\"{HOSTILE}\" (id int PRIMARY KEY);
             INSERT INTO factory_telemetry.\"{HOSTILE}\" SELECT generate_series(1, 1000);
             ANALYZE"
        ),
    );
    let (s, t) = (source.url(DB), target.url(DB));
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = rt.block_on(async {
        let (sc, mut tc) = (client(&s).await, client(&t).await);
        let plan = catalog::build_plan(
            &sc,
            "source".into(),
            &tc,
            "target".into(),
            &catalog::PlanOptions::default(),
        )
        .await
        .unwrap();
        assert!(plan.tables.iter().any(|t| t.name == HOSTILE));
        // The fixture at 0.002 scaled to about 100 MB; production 40 times that.
        let mut r = rehearsal(&plan, 500.0);
        let mut production = Production::from_plan(
            &plan,
            "host=prod-db port=5432 user=bluegreen dbname=factory_telemetry",
            Some(2.5 * MB),
        );
        for t in &mut production.tables {
            t.bytes *= 500 * 40;
            t.rows = t.rows.map(|n| n * 500 * 40);
        }
        r.estimate = Some(report::estimate(&Measured::from_report(&r), &production));
        state::migrate(&mut tc).await.unwrap();
        report::save(&tc, &r, &dir.path().join("written"))
            .await
            .unwrap();
        r
    });

    let out = dir.path().join("rendered");
    let out_s = out.to_str().unwrap();
    let o = bluegreen(&[
        "report",
        "--run",
        "rehearsal",
        "--target",
        &t,
        "--report-dir",
        out_s,
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    for want in [
        "dry run (rehearsal) rehearsal",
        "verify at 3/B374D848: equal",
        "client pause 410 ms",
        "estimate for host=prod-db",
        "window",
        "report.html",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The report comes back through the state schema whole (floats to the last bit or so:
    // jsonb keeps their digits, serde_json's fast parse may differ in the last place).
    let back = report::read_dir(&out).unwrap();
    assert_eq!(back.format, 1);
    assert_eq!((&back.run, back.kind), (&stored.run, stored.kind));
    assert_eq!(back.stages.len(), stored.stages.len());
    assert_eq!(back.samples.len(), stored.samples.len());
    assert_eq!(
        back.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
        stored.tables.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    assert_eq!(
        back.verify.as_ref().unwrap().tables.len(),
        stored.tables.len()
    );
    let (w0, w1) = (
        stored.estimate.as_ref().unwrap().window_seconds.unwrap(),
        back.estimate.as_ref().unwrap().window_seconds.unwrap(),
    );
    assert!((w0 - w1).abs() < 1e-9 * w0, "{w0} vs {w1}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the table name is shown, escaped"
    );
    assert!(html.contains("aria-label=\"stage timeline\""));
    assert!(html.contains("Lag (seconds behind the source)") && html.contains("Apply rate"));
    if let Some(keep) = std::env::var_os("BLUEGREEN_KEEP_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for f in ["report.json", "report.html"] {
            std::fs::copy(out.join(f), std::path::Path::new(&keep).join(f)).unwrap();
        }
    }

    // Without a target: from the directory's report.json.
    std::fs::remove_file(out.join("report.html")).unwrap();
    let o = bluegreen(&["report", "--report-dir", out_s]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("report.html")).unwrap(),
        html
    );

    // No such report: trouble that says so.
    let o = bluegreen(&[
        "report",
        "--run",
        "other",
        "--target",
        &t,
        "--report-dir",
        out_s,
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("no report of run other on the target"),
        "{}",
        stderr(&o)
    );
    let o = bluegreen(&[
        "report",
        "--report-dir",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("report.json"), "{}", stderr(&o));
}

/// Nothing fetched: no URL but the SVG namespace, no script, no external sheet or font,
/// and no markup from the data.
fn assert_self_contained(html: &str) {
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script") && !lower.contains("<img") && !lower.contains("<link"));
    assert!(!lower.contains("@import") && !lower.contains("url("));
    assert!(html.matches("<svg").count() >= 4);
}

#[test]
fn a_run_name_is_never_a_path() {
    let o = bluegreen(&["report", "--run", "../../x"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("run name \"../../x\" is not valid"),
        "{}",
        stderr(&o)
    );
}
