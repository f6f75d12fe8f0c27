//! `peek` against real PostgreSQL 15: JSON lines from a temporary slot, and from an existing
//! slot that it must leave exactly where it was.

mod common;

use std::time::Duration;

use serde_json::Value as Json;
use testkit::Cluster;
use wire::{PeekOptions, PeekSlot, SnapshotAction};

fn lines(out: &[u8]) -> Vec<Json> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn setup(pg: &Cluster) {
    pg.sql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, name text, big text);
         ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE PUBLICATION pub FOR TABLE items;",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_slot_is_printed_and_left_where_it_was() {
    let pg = Cluster::new();
    setup(&pg);
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("watched", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    c.close().await;
    pg.sql(
        "postgres",
        "INSERT INTO items VALUES (1, 'one', repeat('x', 100000)), (2, NULL, NULL)",
    );
    pg.sql("postgres", "UPDATE items SET name = 'uno' WHERE id = 1");
    pg.sql("postgres", "DELETE FROM items WHERE id = 2");
    let slot_before = pg.sql(
        "postgres",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'watched'",
    );
    let opts = PeekOptions {
        slot: PeekSlot::Existing("watched".into()),
        publications: vec!["pub".into()],
        start_lsn: None,
        limit: Some(11),
        duration: Some(Duration::from_secs(20)),
    };
    let spec = common::spec(&pg, "postgres");
    let mut out = Vec::new();
    let summary = wire::peek::run(&spec, &opts, &mut out).await.unwrap();
    assert_eq!(summary.messages, 11);
    assert!(!summary.temporary);
    let got = lines(&out);
    let kinds: Vec<&str> = got.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "begin", "relation", "insert", "insert", "commit", "begin", "update", "commit",
            "begin", "delete", "commit"
        ]
    );
    let ins = &got[2];
    assert_eq!(ins["schema"], "public");
    assert_eq!(ins["table"], "items");
    assert_eq!(ins["xid"], got[0]["xid"]);
    assert_eq!(ins["new"]["id"], "1");
    assert_eq!(ins["new"]["big"].as_str().unwrap().len(), 100_000);
    assert!(got[3]["new"]["name"].is_null());
    let up = &got[6];
    assert_eq!(up["new"]["name"], "uno");
    assert_eq!(up["new"]["big"], "unchanged-toast");
    assert_eq!(got[9]["old_kind"], "key");
    assert_eq!(got[9]["old"]["id"], "2");
    // A key-only old row holds the key: columns the server did not send are left out, not
    // shown as NULL (a real NULL, as name in the insert above, stays null).
    let old = got[9]["old"].as_object().unwrap();
    assert_eq!(old.keys().collect::<Vec<_>>(), ["id"], "{old:?}");
    assert!(got[4]["end_lsn"].as_str().unwrap().contains('/'));
    assert!(got[4]["commit_time"].as_str().unwrap().ends_with('Z'));
    assert!(
        got[1]["lsn"].is_null(),
        "Relation messages have no position"
    );
    assert_eq!(got[1]["columns"][0]["name"], "id");

    // The slot did not move, the slot is free again, and a second look sees the same.
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT confirmed_flush_lsn || ' ' || active FROM pg_replication_slots WHERE slot_name = 'watched'"
        ),
        format!("{slot_before} false")
    );
    let mut again = Vec::new();
    wire::peek::run(&spec, &opts, &mut again).await.unwrap();
    assert_eq!(lines(&again), got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_slot_shows_new_changes_and_vanishes() {
    let pg = Cluster::new();
    setup(&pg);
    let spec = common::spec(&pg, "postgres");
    let opts = PeekOptions {
        slot: PeekSlot::Temporary(format!("bluegreen_peek_{}_test", std::process::id())),
        publications: vec!["pub".into()],
        start_lsn: None,
        limit: Some(3),
        duration: Some(Duration::from_secs(30)),
    };
    let peek = tokio::spawn(async move {
        let mut out = Vec::new();
        let summary = wire::peek::run(&spec, &opts, &mut out).await;
        (summary, out)
    });
    // The slot only sees what commits after it exists: keep writing until peek has enough.
    let mut n = 0;
    while !peek.is_finished() && n < 200 {
        n += 1;
        pg.sql(
            "postgres",
            &format!("INSERT INTO items VALUES ({n}, 'x', NULL)"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (summary, out) = peek.await.unwrap();
    let summary = summary.unwrap();
    assert!(summary.temporary);
    assert!(summary.slot.starts_with("bluegreen_peek_"));
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["kind"], "begin");
    assert_eq!(got[2]["kind"], "insert");
    assert_eq!(got[2]["new"]["name"], "x");
    assert!(common::wait_until(Duration::from_secs(10), || pg
        .sql("postgres", "SELECT count(*) FROM pg_replication_slots")
        == "0"));

    // Duration alone ends a peek that sees nothing.
    let quiet = PeekOptions {
        slot: PeekSlot::Temporary(format!("bluegreen_peek_{}_test", std::process::id())),
        publications: vec!["pub".into()],
        start_lsn: None,
        limit: None,
        duration: Some(Duration::from_secs(1)),
    };
    let mut out = Vec::new();
    let s = wire::peek::run(&common::spec(&pg, "postgres"), &quiet, &mut out)
        .await
        .unwrap();
    assert_eq!((s.messages, out.len()), (0, 0));
}
