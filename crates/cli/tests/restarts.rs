//! Servers restarting under a migration: blue restarted mid-copy (the same copy again
//! resumes) and mid-sync, green restarted mid-sync (sync reconnects by itself either way):
//! contents end identical, by psql's own digests and by verify.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, publishable_pair_at, spawn_bluegreen, stderr, stdout};
use testkit::Cluster;

const DB: &str = "factory_telemetry";

/// Ordered contents of every fixture table.
fn contents(pg: &Cluster) -> Vec<String> {
    fixtures::TABLES
        .iter()
        .map(|t| pg.sql(DB, &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")))
        .collect()
}

fn restart(pg: &Cluster) {
    pg.stop().unwrap();
    pg.start_again().unwrap();
}

/// A backlog for sync: one big transaction and some small ones.
fn backlog(blue: &Cluster, tag: &str) {
    blue.sql(
        DB,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
           SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
             FROM generate_series(1, 150000) g",
    );
    for i in 0..20 {
        blue.sql(
            DB,
            &format!("INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('{tag}{i}', 'restart')"),
        );
    }
}

/// Waits until sync has applied some of the backlog but not all of it (or all, if it is
/// quicker than we look), so the restart lands mid-stream.
fn wait_applying(green: &Cluster, blue: &Cluster) {
    let want = blue.sql(DB, "SELECT pg_current_wal_insert_lsn()");
    let started = Instant::now();
    let from = green.sql(
        DB,
        "SELECT applied_lsn::text FROM bluegreen.apply WHERE run = 'main'",
    );
    while started.elapsed() < Duration::from_secs(30) {
        let now = green.sql(
            DB,
            "SELECT applied_lsn::text FROM bluegreen.apply WHERE run = 'main'",
        );
        if now != from
            || blue.sql(DB, &format!("SELECT '{now}'::pg_lsn >= '{want}'::pg_lsn")) == "t"
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restarts_of_blue_and_green_mid_copy_and_mid_sync_end_exact() {
    let (blue, green) = publishable_pair_at(0.05);
    let (s, t) = (blue.url(DB), green.url(DB));
    let dir = tempfile::tempdir().unwrap();

    // Blue restarted mid-copy: the copy fails on it; the same copy again finishes.
    let log = dir.path().join("copy.log");
    let mut copy = common::copy_with_a_chunk_in(&blue, &green, &log);
    restart(&blue);
    let status = copy.wait().unwrap();
    if !status.success() {
        let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    }
    assert_eq!(contents(&green), contents(&blue));

    // Blue, then green, restarted while sync applies a backlog: it reconnects by itself.
    let log = dir.path().join("sync.log");
    let why = || std::fs::read_to_string(&log).unwrap_or_default();
    let sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), why);
    for (tag, which) in [("RB", &blue), ("RG", &green)] {
        backlog(&blue, tag);
        wait_applying(&green, &blue);
        restart(which);
        blue.sql(
            DB,
            &format!("INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('{tag}-after', 'restart')"),
        );
        common::wait_caught_up(&green, "main", &blue, Duration::from_secs(120), why);
    }
    assert!(common::stop_sync(sync).success(), "{}", why());
    let q = "SELECT string_agg(line_code, ',' ORDER BY line_code) FROM factory_telemetry.production_lines";
    eprintln!("blue:  {}\ngreen: {}", blue.sql(DB, q), green.sql(DB, q));
    eprintln!(
        "apply: {}",
        green.sql(DB, "SELECT row_to_json(a)::text FROM bluegreen.apply a")
    );
    eprintln!("{}", why());
    eprintln!("slot: {}", blue.sql(DB, "SELECT confirmed_flush_lsn::text || ' restart ' || restart_lsn::text FROM pg_replication_slots"));
    eprintln!(
        "origin: {}",
        green.sql(
            DB,
            "SELECT remote_lsn::text FROM pg_replication_origin_status"
        )
    );
    eprintln!(
        "prepared: {}",
        green.sql(
            DB,
            "SELECT coalesce(string_agg(gid, ','), 'none') FROM pg_prepared_xacts"
        )
    );
    eprintln!("RG-after at: {}", blue.sql(DB, "SELECT xmin::text FROM factory_telemetry.production_lines WHERE line_code = 'RG-after'"));
    let sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    std::thread::sleep(Duration::from_secs(5));
    let _ = common::stop_sync(sync);
    eprintln!("after a new sync green: {}", green.sql(DB, q));
    assert_eq!(contents(&green), contents(&blue));
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
