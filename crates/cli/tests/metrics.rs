//! `--metrics-addr` against real servers: a running sync's /metrics has every metric the
//! Grafana dashboard queries, labelled with the run; the apply and lag metrics move as the
//! source writes; /readyz fails while sync is held past --max-lag and once it is stopped.
//! And JSON logs carry the run, stage and table as fields.

mod common;

use std::time::{Duration, Instant};

use common::{
    bluegreen, code, free_addr, http_get as get, publishable_pair_at as fixture_pair_at,
    spawn_bluegreen, stderr, stdout, Running,
};
use testkit::Pgbouncer;

const DB: &str = "factory_telemetry";

/// Waits (at most `secs`) until `f` holds.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of the sample `name{labels…}` (labels as written, run included), summed over
/// every sample that has all of them.
fn value(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ')?;
        let metric = series.split('{').next().unwrap_or(series);
        if metric == name && labels.iter().all(|l| series.contains(l)) {
            *found.get_or_insert(0.0) += v.parse::<f64>().ok()?;
        }
    }
    found
}

/// Every metric name the dashboard's queries use.
fn dashboard_metrics() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/deploy/grafana/bluegreen.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Grafana 10 writes schema version 38; importing needs panels with queries and places.
    assert!(dash["schemaVersion"].as_i64().unwrap() >= 36);
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("bluegreen_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn stop(mut child: Running) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "sync exited with {status}");
}

#[test]
fn sync_metrics_move_and_readyz_follows_lag() {
    let (source, target) = fixture_pair_at(0.002);
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let sync = spawn_bluegreen(
        &[
            "sync",
            "--source",
            &s,
            "--target",
            &t,
            "--metrics-addr",
            &addr,
            "--max-lag",
            "3s",
            "--log-format",
            "json",
        ],
        &dir.path().join("sync.log"),
    );
    let log = || std::fs::read_to_string(dir.path().join("sync.log")).unwrap_or_default();
    wait_for(30, "/healthz", || {
        get(&addr, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    wait_for(60, "/readyz to pass", || {
        get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let (c, m) = get(&addr, "/metrics").unwrap();
    assert_eq!(c, 200);
    for name in dashboard_metrics() {
        assert!(
            m.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) && l.contains("run=\"main\"")),
            "the dashboard queries {name}, which the sync does not export with run=\"main\":\n{m}"
        );
    }
    // Attached (what BluegreenSyncDown in alerts.yml watches).
    assert_eq!(value(&m, "bluegreen_sync_attached", &[]), Some(1.0), "{m}");
    // The copy's chunks and tables are there, labelled by table.
    assert!(value(&m, "bluegreen_copy_chunks", &["state=\"done\""]).unwrap() > 0.0);
    assert!(
        value(
            &m,
            "bluegreen_copy_rows_total",
            &["table=\"factory_telemetry.metric_hist\""]
        )
        .unwrap()
            > 0.0,
        "{m}"
    );

    // The apply counters move as the source writes.
    let applied = |op: &str| {
        get(&addr, "/metrics")
            .and_then(|(_, m)| value(&m, "bluegreen_apply_rows_total", &[&format!("op=\"{op}\"")]))
            .unwrap_or(0.0)
    };
    let (ins, upd, del) = (applied("insert"), applied("update"), applied("delete"));
    source.sql(
        DB,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
           SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now() + g * interval '1 ms', g
             FROM generate_series(1, 500) g;
         UPDATE factory_telemetry.metric_hist SET value_int = 7 WHERE id % 10 = 0;
         DELETE FROM factory_telemetry.metric_hist WHERE id % 13 = 0;",
    );
    wait_for(
        60,
        "apply_rows_total to count the inserts, updates and deletes",
        || applied("insert") >= ins + 500.0 && applied("update") > upd && applied("delete") > del,
    );

    // An interrupted stream: sync resumes from the origin and counts it.
    let counter = |name: &str| {
        get(&addr, "/metrics")
            .and_then(|(_, m)| value(&m, name, &[]))
            .unwrap_or(0.0)
    };
    assert_eq!(counter("bluegreen_sync_reconnects_total"), 0.0);
    source.sql(
        DB,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
          WHERE slot_name = 'bluegreen_main' AND active_pid IS NOT NULL",
    );
    wait_for(30, "the reconnect to be counted", || {
        counter("bluegreen_sync_reconnects_total") >= 1.0
            && counter("bluegreen_sync_errors_total") >= 1.0
    });
    wait_for(60, "/readyz to pass after the reconnect", || {
        get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });

    // Held (as verify holds it) while the source writes: the lag grows past --max-lag and
    // /readyz fails; released, it passes again.
    target.sql(
        DB,
        "UPDATE bluegreen.apply SET hold_lsn = '0/1', held_lsn = NULL WHERE run = 'main'",
    );
    std::thread::sleep(Duration::from_secs(1));
    source.sql(
        DB,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
           SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), 1",
    );
    let lag = || {
        get(&addr, "/metrics")
            .and_then(|(_, m)| value(&m, "bluegreen_lag_seconds", &[]))
            .unwrap_or(0.0)
    };
    wait_for(30, "the lag to pass --max-lag while held", || lag() > 3.0);
    assert!(
        get(&addr, "/readyz").is_some_and(|(c, _)| c == 503),
        "held past --max-lag, yet ready"
    );
    assert!(
        value(
            &get(&addr, "/metrics").unwrap().1,
            "bluegreen_lag_bytes",
            &[]
        )
        .unwrap()
            > 0.0,
        "held with a write pending, yet no lag in bytes"
    );
    target.sql(
        DB,
        "UPDATE bluegreen.apply SET hold_lsn = NULL, held_lsn = NULL WHERE run = 'main'",
    );
    wait_for(30, "/readyz to pass again once released", || {
        get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert!(lag() <= 3.0);

    // Stopped: nothing answers.
    stop(sync);
    assert!(
        get(&addr, "/readyz").is_none(),
        "a stopped sync still answers"
    );

    // Item 6: the JSON log lines carry the run and stage.
    let text = log();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines: {text}");
    for l in &lines {
        assert_eq!(l["run"], "main", "{l}");
        assert_eq!(l["stage"], "sync", "{l}");
    }
}

/// A port that is taken is trouble (exit 2), not a metrics endpoint somewhere else.
#[test]
fn metrics_addr_in_use_is_trouble() {
    let (source, target) = fixture_pair_at(0.002);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = bluegreen(&[
        "verify",
        "--source",
        &source.url(DB),
        "--target",
        &target.url(DB),
        "--metrics-addr",
        &addr,
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--metrics-addr"), "{}", stderr(&o));
    // The same from the config file's tables (every command's table is read and checked).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bluegreen.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\n[verify]\nmetrics_addr = \"{addr}\"\n\
             [sync]\nmetrics_addr = \"0.0.0.0:9187\"\nmax_lag = \"2min\"\n\
             [copy]\nmetrics_addr = \"127.0.0.1:9187\"\n[cutover]\nmetrics_addr = \"[::1]:9187\"\n\
             [rollback]\nmetrics_addr = \"localhost:9187\"\n",
            source.url(DB),
            target.url(DB)
        ),
    )
    .unwrap();
    let o = bluegreen(&["--config", cfg.to_str().unwrap(), "verify"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("--metrics-addr {addr}")),
        "{}",
        stderr(&o)
    );
}

/// Copy under --log-format json: every line names the run and stage, and the per-chunk
/// lines name their table.
#[test]
fn copy_json_logs_carry_run_stage_and_table() {
    let (source, target) = fixture_pair_at(0.002);
    let o = common::bluegreen_env(
        &[
            "copy",
            "--run",
            "logs",
            "--source",
            &source.url(DB),
            "--target",
            &target.url(DB),
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "info,copy=debug")],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty(), "{}", stderr(&o));
    for l in &lines {
        assert_eq!(l["run"], "logs", "{l}");
        assert_eq!(l["stage"], "copy", "{l}");
    }
    assert!(
        lines.iter().any(|l| l["table"]
            .as_str()
            .is_some_and(|t| t.contains("metric_hist"))),
        "no line names a table: {}",
        stderr(&o)
    );
}

/// A cutover with --metrics-addr, stalled after its last step (test hook): the phase says
/// resume and the pause is there; the flip then finishes.
#[test]
fn cutover_exports_its_phase_and_pause() {
    let (blue, green) = fixture_pair_at(0.002);
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let sync_addr = free_addr();
    let sync = spawn_bluegreen(
        &[
            "sync",
            "--source",
            &s,
            "--target",
            &t,
            "--metrics-addr",
            &sync_addr,
        ],
        &dir.path().join("sync.log"),
    );
    wait_for(60, "sync to be ready", || {
        get(&sync_addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let addr = free_addr();
    let pooler_arg = format!(
        "admin={},db={DB},file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    let flip = std::process::Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args([
            "cutover",
            "--source",
            &s,
            "--target",
            &t,
            "--pooler",
            &pooler_arg,
        ])
        .args(["--no-verify-check", "--metrics-addr", &addr])
        .env("BLUEGREEN_TEST_STALL_AFTER", "resume")
        .env("BLUEGREEN_TEST_STALL_MS", "5000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metric = |name: &str| {
        get(&addr, "/metrics")
            .and_then(|(_, m)| value(&m, name, &["run=\"main\""]))
            .unwrap_or(0.0)
    };
    // The phase is the step's place in cutover's list (1 = guardrails).
    let resume = cutover::Step::ALL
        .iter()
        .position(|s| *s == cutover::Step::Resume)
        .unwrap()
        + 1;
    wait_for(60, "the cutover phase to reach resume", || {
        metric("bluegreen_cutover_phase") == resume as f64
    });
    let paused = metric("bluegreen_cutover_pause_seconds");
    assert!(paused > 0.0 && paused < 5.0, "pause {paused}");
    assert_eq!(get(&addr, "/readyz").map(|(c, _)| c), Some(200));
    let out = flip.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    drop(sync);
}

/// A verify that finds green different shows in bluegreen_verify_mismatched_chunks (read by
/// every exporter of the run from the state schema; here the running sync's).
#[test]
fn verify_differences_show_in_the_metrics() {
    let (source, target) = fixture_pair_at(0.002);
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _sync = spawn_bluegreen(
        &[
            "sync",
            "--source",
            &s,
            "--target",
            &t,
            "--metrics-addr",
            &addr,
        ],
        &dir.path().join("sync.log"),
    );
    wait_for(60, "sync to be ready", || {
        get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let mismatched = || {
        get(&addr, "/metrics")
            .and_then(|(_, m)| value(&m, "bluegreen_verify_mismatched_chunks", &[]))
            .unwrap_or(-1.0)
    };
    assert_eq!(mismatched(), 0.0);
    // Green changed behind sync's back.
    target.sql(
        DB,
        "UPDATE factory_telemetry.metric_hist SET value_real = -1 WHERE id = (SELECT min(id) FROM factory_telemetry.metric_hist)",
    );
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    wait_for(10, "the mismatched chunk in the metrics", || {
        mismatched() >= 1.0
    });
}
