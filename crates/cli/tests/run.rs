//! `bluegreen run` against real PostgreSQL and PgBouncer: the one-shot migration under the
//! plant workload through the pooler, a rollback from another shell while it keeps reverse
//! sync, `--until` stopping early, and a run killed mid-way continued by the same command.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout, Running};
use testkit::{Cluster, Pgbouncer};

const DB: &str = "factory_telemetry";

struct Rig {
    blue: Cluster,
    green: Cluster,
    _pooler: Pgbouncer,
    s: String,
    t: String,
    pooled: String,
    pooler_arg: String,
    dir: tempfile::TempDir,
}

fn rig() -> Rig {
    rig_at(0.005)
}

fn rig_at(scale: f64) -> Rig {
    let (blue, green) = common::publishable_pair_at(scale);
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let pooled = pooler.url(DB, "postgres", blue.password());
    let pooler_arg = format!(
        "admin={},db={DB},file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    Rig {
        s: blue.url(DB),
        t: green.url(DB),
        blue,
        green,
        _pooler: pooler,
        pooled,
        pooler_arg,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Rig {
    fn report_dir(&self) -> String {
        self.dir.path().join("report").display().to_string()
    }

    fn run_args<'a>(&'a self, report_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--source",
            &self.s,
            "--target",
            &self.t,
            "--pooler",
            &self.pooler_arg,
            "--report-dir",
            report_dir,
        ];
        args.extend_from_slice(extra);
        args
    }

    fn pooled_port(&self) -> u16 {
        let out = Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT inet_server_port()"])
            .arg(&self.pooled)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn phase(&self) -> String {
        if self
            .green
            .sql(DB, "SELECT to_regclass('bluegreen.runs') IS NULL")
            == "t"
        {
            return "none".into();
        }
        self.green.sql(
            DB,
            "SELECT coalesce((SELECT phase FROM bluegreen.runs WHERE run = 'main'), 'none')",
        )
    }

    fn wait(&self, what: &str, limit: Duration, log: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < limit,
                "{what} not reached: {}",
                std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn interrupt(mut child: Running) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole migration in one command, under the plant workload through the pooler: it ends
/// on green with a clean verify, no failed client transaction and every committed write on
/// green, a report with every stage, and reverse sync running; a rollback from another shell
/// brings traffic back to blue, and run then ends by itself (its reverse sync was retired).
#[test]
fn run_migrates_under_load_and_a_rollback_from_another_shell_works() {
    let r = rig();
    let ledger = r.dir.path().join("ledger");
    let writer = common::workload(r.pooled.clone(), 25, 200.0, ledger.clone(), 7);
    std::thread::sleep(Duration::from_secs(1));
    let report_dir = r.report_dir();
    let run = spawn_bluegreen(
        &r.run_args(&report_dir, &["--max-lag", "2"]),
        &r.dir.path().join("run.log"),
    );
    r.wait("the cutover", Duration::from_secs(120), "run.log", || {
        r.phase() == "cut-over"
    });
    assert_eq!(r.pooled_port(), r.green.port());
    r.wait("reverse sync", Duration::from_secs(30), "run.log", || {
        r.green.sql(
            DB,
            "SELECT count(*) FROM bluegreen.apply WHERE run = 'main_reverse'
                AND heartbeat > clock_timestamp() - interval '5 s'",
        ) == "1"
    });
    common::assert_no_failed_client_transaction(&writer.join().unwrap());
    // Every write committed through the pooler, before and after the flip, is on green.
    common::check_ledger(&r.t, &ledger);

    let o = bluegreen(&[
        "rollback",
        "--source",
        &r.s,
        "--target",
        &r.t,
        "--pooler",
        &r.pooler_arg,
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(r.pooled_port(), r.blue.port());
    // Rollback retired the reverse stream: run's reverse sync ends, and so does run.
    let mut run = run;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break interrupt(run);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(r.dir.path().join("run.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    common::check_ledger(&r.s, &ledger);

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.dir.path().join("report/report.json")).unwrap(),
    )
    .unwrap();
    let stages: Vec<&str> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "plan",
            "copy",
            "catch-up",
            "verify",
            "cutover",
            "reverse-sync"
        ],
        "{json}"
    );
    assert!(json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["outcome"] == "done"));
    assert_eq!(json["verify"]["equal"], true);
    assert!(json["cutover"]["pause_seconds"].as_f64().unwrap() > 0.0);
    assert!(!json["samples"].as_array().unwrap().is_empty());
    assert!(!json["tables"].as_array().unwrap().is_empty());
    assert!(r.dir.path().join("report/report.html").exists());
}

/// --until stops early and the next run goes on from the recorded phase: copied, then
/// verified (sync stopped, traffic still on blue), then a run killed while catching up is
/// continued by the same command.
#[test]
fn run_until_stops_early_and_the_same_command_goes_on() {
    let r = rig();
    let report_dir = r.report_dir();
    let o = bluegreen(&r.run_args(&report_dir, &["--until", "copied"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(r.phase(), "copied");
    // Writes after the copy: the next run's sync must carry them.
    r.blue.sql(
        DB,
        "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('RUN1', 'after copy')",
    );
    let o = bluegreen(&r.run_args(&report_dir, &["--until", "verified"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("already copied"), "{}", stdout(&o));
    assert!(stdout(&o).contains("verify: EQUAL"), "{}", stdout(&o));
    assert_eq!(r.pooled_port(), r.blue.port());
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT count(*) FROM factory_telemetry.production_lines WHERE line_code = 'RUN1'"
        ),
        "1"
    );
    // Sync stopped with the run.
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT count(*) FROM bluegreen.apply WHERE heartbeat IS NOT NULL"
        ),
        "0"
    );

    // SIGKILL while sync catches up a backlog, then the same command: exact.
    r.blue.sql(
        DB,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
           SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
             FROM generate_series(1, 200000) g",
    );
    let mut killed = spawn_bluegreen(
        &r.run_args(&report_dir, &["--until", "verified", "--max-lag", "0.001"]),
        &r.dir.path().join("killed.log"),
    );
    r.wait("sync streaming", Duration::from_secs(60), "killed.log", || {
        r.green.sql(
            DB,
            "SELECT count(*) FROM bluegreen.apply WHERE heartbeat > clock_timestamp() - interval '5 s'",
        ) == "1"
    });
    unsafe { libc::kill(killed.id() as i32, libc::SIGKILL) };
    killed.wait().unwrap();
    let o = bluegreen(&r.run_args(&report_dir, &["--until", "verified"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("verify: EQUAL"), "{}", stdout(&o));
    let q = "SELECT count(*) FROM factory_telemetry.metric_hist";
    assert_eq!(r.green.sql(DB, q), r.blue.sql(DB, q));
}

/// A run without poolers that would cut over is refused before anything is touched.
#[test]
fn run_without_poolers_is_refused_unless_it_stops_before_cutover() {
    let o = bluegreen(&["run", "--source", "host=x", "--target", "host=y"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("needs the poolers"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--until verified"), "{}", stderr(&o));
}

/// The rehearsal: copy, sync under whatever the source is writing, verify, and a cutover of
/// only what production does not see, with a staging pooler flipped to green and back. The
/// production pooler is never paused (its clients write throughout, none fails), blue is
/// never fenced, and nothing of the run is left on the source; the report holds the estimate.
#[test]
fn a_dry_run_rehearses_without_touching_production_and_leaves_nothing_on_the_source() {
    let r = rig();
    let staging = Pgbouncer::builder()
        .database(DB, "127.0.0.1", r.blue.port(), DB)
        .user("postgres", r.blue.password())
        .start()
        .unwrap();
    let staging_arg = format!(
        "admin={},db={DB},file={}",
        staging.admin_url(),
        staging.databases_file().display()
    );
    let ledger = r.dir.path().join("ledger");
    let writer = common::workload(r.pooled.clone(), 20, 200.0, ledger.clone(), 9);
    let report_dir = r.report_dir();
    let o = bluegreen(&[
        "run",
        "--dry-run",
        "--source",
        &r.s,
        "--target",
        &r.t,
        "--pooler",
        &staging_arg,
        "--report-dir",
        &report_dir,
        "--max-lag",
        "2",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("rehearsed cutover"), "{}", stdout(&o));
    common::assert_no_failed_client_transaction(&writer.join().unwrap());
    // Production's pooler still sends clients to blue; blue was never read-only.
    assert_eq!(r.pooled_port(), r.blue.port());
    assert_eq!(
        r.blue.sql(DB, "SELECT count(*) FROM pg_db_role_setting"),
        "0"
    );
    // The staging pooler was flipped to green and back.
    let staged = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT inet_server_port()"])
        .arg(staging.url(DB, "postgres", r.blue.password()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&staged.stdout).trim(),
        r.blue.port().to_string()
    );
    // Nothing of the run on the source.
    assert_eq!(
        r.blue.sql(
            DB,
            "SELECT (SELECT count(*) FROM pg_replication_slots) || ' ' || (SELECT count(*) FROM pg_publication)
                 || ' ' || (SELECT count(*) FROM pg_replication_origin)"
        ),
        "0 0 0"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.dir.path().join("report/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["kind"], "dry-run");
    assert_eq!(json["cutover"]["rehearsed"], true);
    assert!(
        json["cutover"]["pause_seconds"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(!json["estimate"].is_null(), "{json}");
    let steps: Vec<&str> = json["cutover"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"fence"), "{steps:?}");
    assert!(steps.contains(&"flip back"), "{steps:?}");
    // The staging target keeps the data, with nothing left to stream from.
    assert_eq!(
        r.green.sql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// Ordered contents of every fixture table, read as psql prints them.
fn contents(pg: &Cluster) -> Vec<String> {
    fixtures::TABLES
        .iter()
        .map(|t| pg.sql(DB, &format!("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")))
        .collect()
}

/// SIGKILL of run mid-copy (some chunks committed, others not), while verify holds sync,
/// and while cutover is paused mid-flip (its watchdog puts traffic back), then the same
/// command: the migration finishes and green holds exactly blue's rows.
#[test]
fn run_killed_in_copy_verify_or_cutover_then_run_again_finishes_exactly() {
    for stage in ["copy", "verify", "cutover"] {
        // Big enough for copy (in 1 MB chunks, one at a time) and verify to take a while.
        let r = rig_at(if stage == "cutover" { 0.005 } else { 0.05 });
        let report_dir = r.report_dir();
        let log = format!("{stage}.log");
        let mut args = r.run_args(&report_dir, &["--until", "cutover"]);
        args.extend(["--max-lag", "2"]);
        if stage == "copy" {
            args.extend(["--chunk-mb", "1", "--jobs", "1"]);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bluegreen"));
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(r.dir.path().join(&log)).unwrap());
        if stage == "cutover" {
            cmd.env("BLUEGREEN_TEST_STALL_AFTER", "drain")
                .env("BLUEGREEN_TEST_STALL_MS", "60000");
        }
        let mut child = cmd.spawn().unwrap();
        let marker = match stage {
            "copy" => "SELECT count(*) FILTER (WHERE state = 'done') >= 2 FROM bluegreen.chunks WHERE run = 'main'",
            "verify" => "SELECT count(*) > 0 FROM bluegreen.verify_runs WHERE run = 'main' AND result = 'running'",
            _ => "SELECT count(*) > 0 FROM bluegreen.flips WHERE run = 'main'",
        };
        r.wait("the state schema", Duration::from_secs(60), &log, || {
            r.green
                .sql(DB, "SELECT to_regclass('bluegreen.flips') IS NOT NULL")
                == "t"
        });
        let started = Instant::now();
        while r.green.sql(DB, marker) != "t" {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{stage} not reached: {}",
                std::fs::read_to_string(r.dir.path().join(&log)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        if stage == "copy" {
            // Killed mid-copy, not after it.
            assert_ne!(
                r.green.sql(
                    DB,
                    "SELECT count(*) FROM bluegreen.chunks WHERE run = 'main' AND state = 'pending'"
                ),
                "0"
            );
        }
        // The killed flip's watchdog puts traffic back; the next command refuses while it
        // still holds the flip (as documented), so wait for it to finish.
        r.wait("the watchdog", Duration::from_secs(30), &log, || {
            r.green.sql(
                DB,
                "SELECT count(*) FROM bluegreen.flips WHERE run = 'main'",
            ) == "0"
        });
        // Writes while nothing runs: the next run's sync carries them.
        if stage != "cutover" {
            r.blue.sql(
                DB,
                "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('K1', 'between runs')",
            );
        }
        let o = bluegreen(&args);
        assert_eq!(code(&o), 0, "{stage}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(r.phase(), "cut-over", "{stage}");
        assert_eq!(r.pooled_port(), r.green.port(), "{stage}");
        assert_eq!(contents(&r.green), contents(&r.blue), "{stage}");
    }
}
