//! The source's schema changing under a running migration: a column added on blue mid-sync
//! holds sync with an error naming the table, the column and the fix, nothing applied past
//! it; once the operator adds the column on green, the same sync goes on exactly. A table dropped on
//! blue mid-copy ends the copy with an error naming it; the same copy again refuses, naming
//! the table and the fix; starting over leaves nothing half-done.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, publishable_pair_at, spawn_bluegreen, stderr, stdout};

const DB: &str = "factory_telemetry";

#[test]
fn a_column_added_mid_sync_holds_it_naming_the_fix_and_it_goes_on_once_added() {
    let (blue, green) = publishable_pair_at(0.002);
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });

    blue.sql(
        DB,
        "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('SC1', 'before');
         ALTER TABLE factory_telemetry.production_lines ADD COLUMN shift_note text;
         INSERT INTO factory_telemetry.production_lines (line_code, name, shift_note) VALUES ('SC2', 'after', 'new column');",
    );
    // Sync stops by itself (or keeps saying why it cannot go on): never applies SC2 without
    // its column, never skips it.
    let started = Instant::now();
    let said = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("shift_note") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sync said nothing of the new column: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(said.contains("production_lines"), "{said}");
    assert!(said.contains("ADD COLUMN"), "{said}");
    let q = "SELECT string_agg(line_code, ',' ORDER BY line_code) FROM factory_telemetry.production_lines WHERE line_code LIKE 'SC%'";
    assert_ne!(green.sql(DB, q), "SC1,SC2");

    // The fix as named: the column on green too; the same sync then carries everything.
    green.sql(
        DB,
        "ALTER TABLE factory_telemetry.production_lines ADD COLUMN shift_note text",
    );
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(common::stop_sync(sync).success());
    assert_eq!(green.sql(DB, q), "SC1,SC2");
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

/// A planned table dropped on blue while copy runs: the copy fails on it; the same copy
/// again refuses, naming the table and the fix (not "is another copy running?"); abort
/// --drop-data and a new copy then end equal.
#[test]
fn a_table_dropped_mid_copy_is_named_and_the_copy_starts_over_cleanly() {
    let (blue, green) = publishable_pair_at(0.05);
    let (s, t) = (blue.url(DB), green.url(DB));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("copy.log");
    let mut copy = common::copy_with_a_chunk_in(&blue, &green, &log);
    let pending = "SELECT count(*) FROM bluegreen.chunks WHERE state = 'pending' AND table_name = 'sensor_raw_log'";
    assert_ne!(green.sql(DB, pending), "0", "copied already");
    blue.sql(DB, "DROP TABLE factory_telemetry.sensor_raw_log");
    let status = copy.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("sensor_raw_log"), "{text}");

    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the source no longer has factory_telemetry.sensor_raw_log")
            && stderr(&o).contains("abort --drop-data"),
        "{}",
        stderr(&o)
    );

    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
