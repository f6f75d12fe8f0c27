//! What a new user hit (issue 21): a missing slot reported as such, abort stopping sync
//! before its walsender, JSON-only logs, plan saying what is true.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout};
use testkit::Cluster;

const DB: &str = "factory_telemetry";

/// The fixture copied by `bluegreen copy`.
fn copied(scale: f64) -> (Cluster, Cluster, String, String) {
    let (source, target) = common::publishable_pair_at(scale);
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    (source, target, s, t)
}

/// Item 3: after `abort --source` alone the run's slot is gone. sync says so, with the fix
/// (not "reconnects and resumes"), and status says so instead of a lag measured from 0/0.
#[test]
fn a_missing_slot_is_reported_as_what_it_is() {
    let (_source, _target, s, t) = copied(0.002);
    let o = bluegreen(&["abort", "--source", &s]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = bluegreen(&["sync", "--source", &s, "--target", &t]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("error: replication slot bluegreen_main is gone from the source"),
        "{err}"
    );
    assert!(!err.contains("reconnects and resumes"), "{err}");
    let hint = err.lines().find(|l| l.starts_with("hint: ")).unwrap_or("");
    assert!(
        hint.contains("abort --target") && hint.contains("copy"),
        "{err}"
    );

    // status reads the target (and the source when given): it names the missing slot.
    for with_source in [false, true] {
        let mut args = vec!["status", "--target", &t];
        if with_source {
            args.extend(["--source", &s]);
        }
        let o = bluegreen(&args);
        let out = stdout(&o);
        assert_eq!(code(&o), 1, "{out}{}", stderr(&o));
        assert!(
            out.contains("replication slot bluegreen_main is gone from the source"),
            "{out}"
        );
    }
    let o = bluegreen(&["status", "--json", "--target", &t, "--source", &s]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["slot_on_source"], false, "{st}");
    // The lag is what the copy's snapshot has not got (nothing here), not the source's
    // whole WAL from 0/0.
    let lag = st["sync"]["lag_bytes"].as_i64().unwrap_or(0);
    assert!(lag < 1 << 20, "{st}");
}

/// Item 3: abort with both sides asks a running sync to stop before it ends the slot's
/// walsender: sync stops cleanly (exit 0), not with FATAL 57P01 and a wrong hint.
#[test]
fn abort_asks_sync_to_stop_before_ending_its_walsender() {
    let (_source, _target, s, t) = copied(0.002);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let mut sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    let started = Instant::now();
    loop {
        let o = bluegreen(&["status", "--json", "--target", &t]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if st["sync"]["running"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync never ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = bluegreen(&["abort", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let started = Instant::now();
    let status = loop {
        if let Some(st) = sync.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync still running after abort"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "sync exited with {status}: {text}");
    assert!(
        !text.contains("57P01") && !text.contains("error:"),
        "{text}"
    );
}
/// Every stderr line is one JSON object.
fn all_json(err: &str) -> Vec<serde_json::Value> {
    assert!(!err.trim().is_empty(), "nothing on stderr");
    err.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nall: {err}"))
        })
        .collect()
}

/// Item 6: under --log-format json every stderr line is JSON, the final error and hint too,
/// argument errors included (and the config file's log_format counts once it is read);
/// argument errors get a hint line in human mode; --help and --version stay plain.
#[test]
fn every_line_is_json_under_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("json.toml");
    std::fs::write(&cfg, "log_format = \"json\"\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    // The file's own mistakes are reported in the format it asks for.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "log_format = \"json\"\n[plan]\nbogus = 1\n").unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        &["--log-format", "json", "plan", "--bogus"][..],
        &["plan", "--log-format=json", "--schema"][..],
        &["--log-format", "json", "copy", "--jobs", "x"][..],
        &[
            "--log-format",
            "json",
            "cutover",
            "--verify-max-age",
            "1",
            "--no-verify-check",
        ][..],
        &["--log-format", "json"][..],
        &["--log-format", "json", "status"][..],
        &["--config", cfg, "status"][..],
        &["--config", bad, "plan"][..],
        &[
            "--log-format",
            "json",
            "sync",
            "--source",
            "host=/nonexistent port=1",
            "--target",
            "host=/nonexistent port=1",
        ][..],
    ] {
        let o = bluegreen(args);
        assert_eq!(code(&o), 2, "{args:?}");
        let lines = all_json(&stderr(&o));
        let last = lines.last().unwrap();
        assert_eq!(last["level"], "ERROR", "{args:?}: {last}");
        assert!(
            last["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{last}"
        );
        assert!(
            last["hint"].as_str().is_some_and(|m| !m.is_empty()),
            "{last}"
        );
        assert_eq!(last["exit_code"], 2, "{last}");
    }

    // Human mode: an argument error is one error line and one hint line.
    let o = bluegreen(&["plan", "--bogus"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("error: unexpected argument '--bogus'"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("hint: ") && lines[1].contains("bluegreen plan --help"),
        "{err}"
    );

    // Either/or flags: the hint says to pick one.
    let o = bluegreen(&["cutover", "--verify-max-age", "1", "--no-verify-check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("hint: give only one of them")),
        "{err}"
    );

    for args in [
        &["--log-format", "json", "--help"][..],
        &["--log-format", "json", "plan", "--help"][..],
        &["--log-format", "json", "--version"][..],
    ] {
        let o = bluegreen(args);
        assert_eq!(code(&o), 0, "{args:?}");
        let out = stdout(&o);
        assert!(
            out.starts_with("Migrate") || out.starts_with("Read") || out.starts_with("bluegreen "),
            "{out}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(out.lines().next().unwrap()).is_err());
    }
}

/// Item 6 with a server: peek's closing summary is a JSON line too.
#[test]
fn peek_summary_is_json_under_log_format_json() {
    let pg = Cluster::new();
    pg.create_database(DB);
    pg.sql(
        DB,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t",
    );
    let o = bluegreen(&[
        "--log-format",
        "json",
        "peek",
        "--source",
        &pg.url(DB),
        "--temporary",
        "--publication",
        "p",
        "--seconds",
        "1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = all_json(&stderr(&o));
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("peek: "))),
        "{lines:?}"
    );
}
/// Item 8: plan says what is true: a sequence set with setval(…, false) shows the value
/// nextval returns, not "unused"; replica identity columns are named as such; a table only
/// the target has is a warning naming it, not "already has 1 of the planned tables".
#[test]
fn plan_says_what_is_true() {
    let (source, target) = (Cluster::new(), Cluster::new());
    source.create_database("app");
    target.create_database("app");
    source.sql(
        "app",
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, note text);
         CREATE TABLE app.g (gid int GENERATED ALWAYS AS IDENTITY, k int PRIMARY KEY);
         CREATE SEQUENCE app.s; SELECT setval('app.s', 42, false);
         CREATE SEQUENCE app.used; SELECT nextval('app.used');
         INSERT INTO app.t VALUES (1, 'one')",
    );
    target.sql(
        "app",
        "CREATE SCHEMA app; CREATE TABLE app.leftover (x int)",
    );
    let (s, t) = (source.url("app"), target.url("app"));

    let o = bluegreen(&["plan", "--json", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let seq = |name: &str| {
        plan["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap()
            .clone()
    };
    let s42 = seq("s");
    assert!(s42["last_value"].is_null(), "{s42}");
    assert_eq!(s42["sequence_last_value"], 42, "{s42}");
    assert_eq!(s42["is_called"], false, "{s42}");
    let used = seq("used");
    assert_eq!(used["last_value"], 1, "{used}");
    assert_eq!(used["is_called"], true, "{used}");

    let table = |name: &str| {
        plan["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()
            .clone()
    };
    let g = table("g");
    assert_eq!(
        g["replica_identity_columns"],
        serde_json::json!(["k"]),
        "{g}"
    );
    assert_eq!(g["columns"][0]["identity"], "always", "{g}");
    assert!(g["columns"][1]["identity"].is_null(), "{g}");

    let findings = plan["findings"].as_array().unwrap();
    assert!(
        !findings.iter().any(|f| f["code"] == "target-not-empty"),
        "{findings:?}"
    );
    let only = findings
        .iter()
        .find(|f| f["code"] == "target-only-tables")
        .unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(only["severity"], "warning");
    assert!(
        only["message"].as_str().unwrap().contains("app.leftover"),
        "{only}"
    );

    let o = bluegreen(&["plan", "--source", &s, "--target", &t]);
    let text = stdout(&o);
    assert!(
        text.contains("app.s = 42 (not called yet: nextval returns 42)"),
        "{text}"
    );
    assert!(
        !text.contains("unused") && !text.contains("already has"),
        "{text}"
    );

    // Copy does carry the sequence, and leaves the target's own table alone.
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(target.sql("app", "SELECT nextval('app.s')"), "42");
    assert_eq!(target.sql("app", "SELECT count(*) FROM app.leftover"), "0");
    // As the warning says: abort --drop-data keeps it (the run did not create it).
    let o = bluegreen(&["abort", "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        target.sql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'app'"
        ),
        "1"
    );
}
