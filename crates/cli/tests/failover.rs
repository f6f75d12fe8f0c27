//! Green failing over: green as a primary with a physical standby; the standby falls behind
//! (its stream cut off) while sync goes on applying, then the primary dies (an immediate
//! stop, as a crash) and the standby is promoted. Sync pointed at the new primary continues
//! exactly: what the dead primary had committed but never sent to its standby is applied
//! again from the new primary's origin, because blue's slot was never told it was applied.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, publishable_pair_at, spawn_bluegreen, stderr, stdout};
use testkit::{Cluster, Proxy};

const DB: &str = "factory_telemetry";

fn contents(pg: &Cluster) -> Vec<String> {
    fixtures::TABLES
        .iter()
        .map(|t| pg.sql(DB, &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")))
        .collect()
}

fn insert_lines(blue: &Cluster, tag: &str, n: usize) {
    for i in 0..n {
        blue.sql(
            DB,
            &format!(
                "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
                   SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
                     FROM generate_series(1, 500) g;
                 INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('{tag}{i}', 'failover')"
            ),
        );
    }
}

#[test]
fn sync_continues_exactly_on_a_promoted_standby_of_green() {
    let (blue, green) = publishable_pair_at(0.02);
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let link = Proxy::to_port(green.port()).unwrap();
    let standby = green.standby_via(link.port()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let why = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    insert_lines(&blue, "A", 20);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), why);

    // The standby cut off; sync applies more on green, and has every chance to tell blue
    // (its status updates go every 10 s).
    link.black_hole(None);
    insert_lines(&blue, "GAP", 20);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), why);
    let applied = blue.sql(DB, "SELECT pg_current_wal_insert_lsn()");
    let started = Instant::now();
    let confirmed = "SELECT confirmed_flush_lsn >= $$X$$::pg_lsn FROM pg_replication_slots WHERE slot_name = 'bluegreen_main'";
    while blue.sql(DB, &confirmed.replace("X", &applied)) != "t"
        && started.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    green.crash().unwrap();
    standby.promote().unwrap();
    let _ = sync.kill();
    let _ = sync.wait();
    let q = "SELECT count(*) FROM factory_telemetry.production_lines WHERE line_code LIKE 'GAP%'";
    assert_ne!(standby.sql(DB, q), "20", "the standby did not fall behind");

    // Sync pointed at the new primary: everything, once.
    insert_lines(&blue, "B", 5);
    let t2 = standby.url(DB);
    let log2 = dir.path().join("sync2.log");
    let why2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    let sync = spawn_bluegreen(&["sync", "--source", &s, "--target", &t2], &log2);
    common::wait_caught_up(&standby, "main", &blue, Duration::from_secs(120), why2);
    assert!(common::stop_sync(sync).success(), "{}", why2());
    assert_eq!(standby.sql(DB, q), "20", "{}", why2());
    assert_eq!(contents(&standby), contents(&blue), "{}", why2());
    let o = bluegreen(&["verify", "--source", &s, "--target", &t2]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
