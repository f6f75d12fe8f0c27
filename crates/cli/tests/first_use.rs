//! What a new user hit (issue 21): a missing slot reported as such, abort stopping sync
//! before its walsender, JSON-only logs, plan saying what is true.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, fixture_pair_at, spawn_bluegreen, stderr, stdout};
use testkit::Cluster;

const DB: &str = "factory_telemetry";

/// The fixture copied by `bluegreen copy`.
fn copied(scale: f64) -> (Cluster, Cluster, String, String) {
    let (source, target) = fixture_pair_at(scale);
    source.sql(
        DB,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
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
