//! Green running out of disk (its database on a tablespace on a small tmpfs): copy stops with
//! a clear error and, once space is freed, the same copy finishes; sync, out of space mid-
//! stream, keeps saying why and goes on by itself once space is freed; nothing lost: verify
//! EQUAL. Needs root to mount the tmpfs; skips with one line otherwise.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout};
use testkit::{Cluster, SmallDisk};

const DB: &str = "factory_telemetry";
const MB: u64 = 1024 * 1024;

#[test]
fn out_of_space_on_green_stops_copy_and_sync_clearly_and_both_go_on_once_freed() {
    let disk = match SmallDisk::mount(12 * MB) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no small disk for the out-of-space test ({e})");
            return;
        }
    };
    let (blue, green) = (Cluster::new(), Cluster::new());
    common::load_fixture_after(&blue, &green, 0.15, "");
    blue.sql(
        DB,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    let ts = disk.tablespace_dir("ts").unwrap();
    green.sql("postgres", &format!("DROP DATABASE {DB}"));
    green.sql(
        "postgres",
        &format!("CREATE TABLESPACE small LOCATION '{}'", ts.display()),
    );
    green.sql(
        "postgres",
        &format!("CREATE DATABASE {DB} TABLESPACE small"),
    );
    let (s, t) = (blue.url(DB), green.url(DB));

    // Copy: out of space part way, said as such.
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    // PostgreSQL's own words vary with the failed write ("No space left on device", "wrote
    // only 4096 of 8192 bytes"); its SQLSTATE, said in words, does not.
    assert!(
        stderr(&o).contains("out of disk space") && stderr(&o).contains("free space on the target"),
        "{}",
        stderr(&o)
    );
    disk.resize(400 * MB).unwrap();
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // Sync: the disk full again under a backlog; it says so while it waits.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    disk.resize(disk.used().unwrap() + 2 * MB).unwrap();
    blue.sql(
        DB,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
           SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
             FROM generate_series(1, 100000) g",
    );
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("out of disk space") && text.contains("free space on the target") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sync did not say it is out of space: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    disk.resize(400 * MB).unwrap();
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(120), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(common::stop_sync(sync).success());
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    drop(green);
}
