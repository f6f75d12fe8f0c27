//! Incremental verify (issue 18) against real servers, sync running: a verify after a clean
//! one checks only the chunks sync wrote since and carries the rest forward; a row changed on
//! green behind the applier's back is still found (the table is checked in full); the
//! carried-forward counts name the verify that checked them; `--full` checks everything;
//! abort takes verify's watch trigger off green.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout, Running};
use serde_json::Value;
use testkit::Cluster;

const DB: &str = "factory_telemetry";
const HIST: &str = "factory_telemetry.metric_hist";

struct Pair {
    source: Cluster,
    target: Cluster,
    s: String,
    t: String,
}

fn copied_pair(scale: f64) -> Pair {
    let (source, target) = common::publishable_pair_at(scale);
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    Pair {
        source,
        target,
        s,
        t,
    }
}

fn verify_json(p: &Pair, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "verify",
        "--source",
        &p.s,
        "--target",
        &p.t,
        "--json",
        "--chunk-mb",
        "1",
    ];
    args.extend_from_slice(extra);
    let o = bluegreen(&args);
    let doc = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}), exit {}: {}{}",
            code(&o),
            stdout(&o),
            stderr(&o)
        )
    });
    (code(&o), doc, stderr(&o))
}

fn table<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in the report"))
}

fn total(doc: &Value, field: &str) -> u64 {
    doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_u64().unwrap())
        .sum()
}

fn start_sync(p: &Pair, log: &Path) -> Running {
    spawn_bluegreen(
        &[
            "sync",
            "--source",
            &p.s,
            "--target",
            &p.t,
            "--log-format",
            "json",
        ],
        log,
    )
}

fn stop_sync(mut child: Running) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (30 s at most) until `q` on the target returns `want`.
fn wait_target(p: &Pair, q: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if p.target.sql(DB, q) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the target never showed {want} for {q}");
}

#[test]
fn incremental_verify_checks_what_changed_and_finds_writes_behind_the_applier() {
    let started = Instant::now();
    let p = copied_pair(0.02);
    let dir = tempfile::tempdir().unwrap();
    let sync = start_sync(&p, &dir.path().join("sync.log"));
    std::thread::sleep(Duration::from_secs(3));

    // The first verify has nothing to carry from: every chunk is checked.
    let (c, full, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{full:#}");
    assert_eq!(full["consistency"]["mode"], "held", "{full:#}");
    assert!(full["incremental_from"].is_null(), "{full:#}");
    let base = full["verify_id"].as_i64().unwrap();
    let hist_chunks = table(&full, "metric_hist")["chunks"].as_u64().unwrap();
    assert!(
        hist_chunks >= 3,
        "metric_hist in {hist_chunks} chunk(s): too few to tell"
    );
    assert_eq!(total(&full, "checked"), total(&full, "chunks"));
    // The watch trigger is on green's tables.
    assert_ne!(
        p.target.sql(
            DB,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'bluegreen_watch'"
        ),
        "0"
    );

    // A row changed on blue, applied by sync: only its chunk is checked again.
    let id = p.source.sql(DB, &format!("SELECT max(id) - 3 FROM {HIST}"));
    p.source.sql(
        DB,
        &format!("UPDATE {HIST} SET value_int = 424242 WHERE id = {id}"),
    );
    wait_target(
        &p,
        &format!("SELECT value_int FROM {HIST} WHERE id = {id}"),
        "424242",
    );
    let (c, inc, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{inc:#}");
    assert_eq!(inc["incremental_from"], base, "{inc:#}");
    let h = table(&inc, "metric_hist");
    assert_eq!(h["chunks"], hist_chunks, "{h:#}");
    assert_eq!(h["checked"], 1, "{h:#}");
    // By that row alone: the rest of its chunk is as the base found it.
    assert_eq!(h["checked_by_keys"], 1, "{h:#}");
    assert_eq!(h["carried"], hist_chunks - 1, "{h:#}");
    assert_eq!(h["carried_from"], serde_json::json!([base]), "{h:#}");
    // No other table was written: all of them carried from the base.
    assert_eq!(total(&inc, "checked"), 1, "{inc:#}");
    assert_eq!(total(&inc, "chunks"), total(&full, "chunks"));
    // One of metric_hist's chunks hashed, not the database.
    let (ib, fb) = (
        inc["bytes"].as_u64().unwrap(),
        full["bytes"].as_u64().unwrap(),
    );
    assert!(ib * 3 < fb, "incremental hashed {ib} bytes, full {fb}");
    eprintln!(
        "measured: full verify hashed {} bytes in {:.2} s over {} chunks; incremental after one applied change hashed {} bytes in {:.2} s ({} chunk checked)",
        full["bytes"], full["seconds"].as_f64().unwrap(), total(&full, "chunks"),
        inc["bytes"], inc["seconds"].as_f64().unwrap(), total(&inc, "checked")
    );
    let second = inc["verify_id"].as_i64().unwrap();

    // Chunks carried twice still name the verify that checked them.
    let (c, again, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{again:#}");
    assert_eq!(again["incremental_from"], second);
    assert_eq!(total(&again, "checked"), 0, "{again:#}");
    let h = table(&again, "metric_hist");
    let mut from: Vec<i64> = h["carried_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    from.sort();
    assert_eq!(from, vec![base, second], "{h:#}");
    let o = bluegreen(&[
        "verify",
        "--source",
        &p.s,
        "--target",
        &p.t,
        "--chunk-mb",
        "1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "metric_hist: 0 of {hist_chunks} chunk(s) checked, {hist_chunks} carried forward from verify"
        )),
        "{}",
        stdout(&o)
    );

    // A row in a middle chunk deleted on blue: sync's record of the old key maps it onto
    // exactly the chunk that holds it (typed, against the base's bounds).
    // (The upper bound of the base's first closed chunk: a key that exists, in that chunk.)
    let mid = p.target.sql(
        DB,
        &format!(
            "SELECT upper_bound[1] FROM bluegreen.verify_chunks
              WHERE verify_id = {base} AND table_name = 'metric_hist'
                AND lower_bound IS NOT NULL AND upper_bound IS NOT NULL
              ORDER BY chunk LIMIT 1"
        ),
    );
    p.source
        .sql(DB, &format!("DELETE FROM {HIST} WHERE id = {mid}"));
    wait_target(
        &p,
        &format!("SELECT count(*) FROM {HIST} WHERE id = {mid}"),
        "0",
    );
    let (c, del, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{del:#}");
    assert_eq!(total(&del, "checked"), 1, "{del:#}");
    assert_eq!(table(&del, "metric_hist")["checked"], 1);
    let holds = p.target.sql(
        DB,
        &format!(
            "SELECT count(*) FROM bluegreen.verify_chunks
              WHERE verify_id = {} AND pass = 'check' AND table_name = 'metric_hist'
                AND lower_bound IS NOT NULL AND upper_bound IS NOT NULL
                AND lower_bound[1]::bigint < {mid} AND upper_bound[1]::bigint >= {mid}",
            del["verify_id"]
        ),
    );
    let chunks = p.target.sql(
        DB,
        &format!(
            "SELECT string_agg(pass || ' ' || chunk || ' ' || coalesce(lower_bound::text, '-')
                               || ' ' || coalesce(upper_bound::text, '-'), '; ' ORDER BY chunk)
               FROM bluegreen.verify_chunks
              WHERE verify_id = {} AND table_name = 'metric_hist'",
            del["verify_id"]
        ),
    );
    assert_eq!(
        holds, "1",
        "the chunk checked is not the one that held {mid}: {chunks}"
    );

    // A row changed on green behind the applier's back, in a chunk sync never wrote: the
    // watch trigger noticed, the table is checked in full and the row found.
    let old = p
        .source
        .sql(DB, &format!("SELECT min(id) + 10 FROM {HIST}"));
    p.target.sql(
        DB,
        &format!("UPDATE {HIST} SET value_int = -7 WHERE id = {old}"),
    );
    let (c, found, _) = verify_json(&p, &[]);
    assert_eq!(c, 1, "{found:#}");
    let h = table(&found, "metric_hist");
    assert_eq!(h["checked"], h["chunks"], "{h:#}");
    let d = h["differences"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{h:#}");
    assert_eq!(d[0]["key"][0]["value"], old.as_str(), "{h:#}");
    // Other tables still carried.
    assert!(total(&found, "carried") > 0, "{found:#}");

    // After a verify that found differences, the next one checks everything; so does --full.
    p.target.sql(
        DB,
        &format!(
            "UPDATE {HIST} SET value_int = {}::bigint WHERE id = {old}",
            p.source.sql(
                DB,
                &format!("SELECT coalesce(value_int::text, 'NULL') FROM {HIST} WHERE id = {old}")
            )
        ),
    );
    let (c, after, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{after:#}");
    assert!(after["incremental_from"].is_null(), "{after:#}");
    let (c, forced, _) = verify_json(&p, &["--full"]);
    assert_eq!(c, 0, "{forced:#}");
    assert!(forced["incremental_from"].is_null(), "{forced:#}");
    assert_eq!(total(&forced, "checked"), total(&forced, "chunks"));
    // The journals were pruned by the clean verifies.
    assert_eq!(
        p.target.sql(
            DB,
            "SELECT (SELECT count(*) FROM bluegreen.sync_touched) + (SELECT count(*) FROM bluegreen.green_writes)"
        ),
        "0"
    );

    // A TRUNCATE on blue: sync records the table as touched whole, so it is checked in full
    // (its chunks planned afresh) while the tables it did not touch are carried.
    p.source.sql(DB, &format!("TRUNCATE {HIST}"));
    wait_target(&p, &format!("SELECT count(*) FROM {HIST}"), "0");
    let (c, trunc, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{trunc:#}");
    assert_eq!(trunc["incremental_from"], forced["verify_id"], "{trunc:#}");
    let h = table(&trunc, "metric_hist");
    assert_eq!(h["carried"], 0, "{h:#}");
    assert_eq!(h["checked"], h["chunks"], "{h:#}");
    assert_eq!(
        total(&trunc, "checked"),
        h["checked"].as_u64().unwrap(),
        "{trunc:#}"
    );

    stop_sync(sync);
    // abort takes the watch trigger off green.
    let o = bluegreen(&["abort", "--source", &p.s, "--target", &p.t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        p.target.sql(
            DB,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'bluegreen_watch'"
        ),
        "0"
    );
    eprintln!("incremental_verify: {:?}", started.elapsed());
}

/// A table without a primary key (sensor_raw_log, REPLICA IDENTITY FULL) is cut into chunks
/// by an indexed NOT NULL column (reading_id); sync records that column's old and new values,
/// so a later verify checks only the chunks they fall in, and a row moved from one chunk to
/// another has both checked.
#[test]
fn a_table_without_a_key_is_checked_only_where_sync_wrote() {
    const RAW: &str = "factory_telemetry.sensor_raw_log";
    // Scale 1: 30,000 rows, about 5 MB.
    let p = copied_pair(1.0);
    let dir = tempfile::tempdir().unwrap();
    let sync = start_sync(&p, &dir.path().join("sync.log"));
    std::thread::sleep(Duration::from_secs(3));
    let (c, full, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{full:#}");
    let raw_chunks = table(&full, "sensor_raw_log")["chunks"].as_u64().unwrap();
    assert!(
        raw_chunks >= 3,
        "sensor_raw_log in {raw_chunks} chunk(s): not cut by reading_id"
    );

    // An update inside one chunk: that chunk only.
    let (lo, hi) = (
        p.source
            .sql(DB, &format!("SELECT min(reading_id) FROM {RAW}")),
        p.source
            .sql(DB, &format!("SELECT max(reading_id) FROM {RAW}")),
    );
    let (lo, hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
    let mid = (lo + hi) / 2;
    p.source.sql(
        DB,
        &format!("UPDATE {RAW} SET note = 'seen twice' WHERE reading_id = {mid}"),
    );
    wait_target(
        &p,
        &format!("SELECT count(*) FROM {RAW} WHERE note = 'seen twice'"),
        "1",
    );
    let (c, inc, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{inc:#}");
    let r = table(&inc, "sensor_raw_log");
    assert_eq!(r["checked"], 1, "{r:#}");
    assert_eq!(r["checked_by_keys"], 1, "{r:#}");
    assert_eq!(r["carried"], raw_chunks - 1, "{r:#}");
    assert_eq!(total(&inc, "checked"), 1, "{inc:#}");

    // A row sync wrote, then changed on green as only the applier could (under
    // session_replication_role = replica, which the watch trigger does not see): checked
    // by that row, it differs, so its chunk is hashed whole and the difference located.
    let one = mid + 1;
    p.source.sql(
        DB,
        &format!("UPDATE {RAW} SET note = 'synced' WHERE reading_id = {one}"),
    );
    wait_target(
        &p,
        &format!("SELECT note FROM {RAW} WHERE reading_id = {one}"),
        "synced",
    );
    let behind = |note: &str| {
        p.target.sql(
            DB,
            &format!(
                "BEGIN; SET LOCAL session_replication_role = replica;
                 UPDATE {RAW} SET note = '{note}' WHERE reading_id = {one}; COMMIT"
            ),
        )
    };
    behind("not what blue has");
    let (c, bad, _) = verify_json(&p, &[]);
    assert_eq!(c, 1, "{bad:#}");
    let r = table(&bad, "sensor_raw_log");
    assert_eq!(
        (&r["checked"], &r["checked_by_keys"]),
        (&1.into(), &0.into()),
        "{r:#}"
    );
    assert_eq!(r["differences"].as_array().unwrap().len(), 2, "{r:#}");
    behind("synced");
    let (c, fixed, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{fixed:#}");

    // A row moved from the first chunk past the last: both ends checked, and still equal.
    p.source.sql(
        DB,
        &format!(
            "UPDATE {RAW} SET reading_id = {} WHERE reading_id = {lo}",
            hi + 1000
        ),
    );
    wait_target(
        &p,
        &format!(
            "SELECT count(*) FROM {RAW} WHERE reading_id = {}",
            hi + 1000
        ),
        "1",
    );
    let (c, moved, _) = verify_json(&p, &[]);
    assert_eq!(c, 0, "{moved:#}");
    let r = table(&moved, "sensor_raw_log");
    assert_eq!(r["checked"], 2, "{r:#}");
    assert_eq!(total(&moved, "checked"), 2, "{moved:#}");

    // Behind the applier's back, in a chunk sync never wrote: checked in full, found.
    p.target.sql(
        DB,
        &format!(
            "UPDATE {RAW} SET note = 'edited on green' WHERE reading_id = {}",
            lo + 1
        ),
    );
    let (c, found, _) = verify_json(&p, &[]);
    assert_eq!(c, 1, "{found:#}");
    let r = table(&found, "sensor_raw_log");
    assert_eq!(r["checked"], r["chunks"], "{r:#}");
    assert_eq!(r["differences"].as_array().unwrap().len(), 2, "{r:#}");
    stop_sync(sync);
}
