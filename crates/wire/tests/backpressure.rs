//! A consumer that does not read holds the walsender back instead of filling our memory:
//! with a small buffer, the server's sent position stalls far behind the WAL until the
//! consumer reads, and then everything arrives.

mod common;

use std::time::Duration;

use testkit::Cluster;
use wire::{LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

fn sent_lsn(pg: &Cluster) -> Lsn {
    pg.sql(
        "postgres",
        "SELECT coalesce(max(sent_lsn), '0/0') FROM pg_stat_replication",
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_stalls_the_walsender_not_memory() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE blobs (id int PRIMARY KEY, body text);
         ALTER TABLE blobs ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE PUBLICATION pub FOR TABLE blobs;",
    );
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("slow", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let config = StreamConfig {
        channel_capacity: 4,
        buffer_bytes: 1 << 20,
        ..StreamConfig::default()
    };
    let mut stream = c
        .start_replication("slow", Lsn::ZERO, &PgOutputOptions::new(["pub"]), config)
        .await
        .unwrap();

    // 80 transactions of one 1 MB row each: far more than socket buffers hold.
    const ROWS: i32 = 80;
    for i in 0..ROWS {
        pg.sql(
            "postgres",
            &format!("INSERT INTO blobs SELECT {i}, string_agg(md5(g::text), '') FROM generate_series(1, 32768) g"),
        );
    }
    let end: Lsn = pg
        .sql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = sent_lsn(&pg);
    let behind = end.0.saturating_sub(stalled.0);
    assert!(
        behind > 40 << 20,
        "walsender sent up to {stalled}, only {behind} bytes behind {end}: nothing held it back"
    );

    // Reading releases it, and nothing is lost.
    let mut inserts = 0;
    while inserts < ROWS {
        let ev = common::next(&mut stream, Duration::from_secs(30)).await;
        if let LogicalMessage::Insert(i) = &ev.message {
            let wire::pgoutput::Value::Text(body) = &i.new[1] else {
                panic!("{:?}", i.new[1])
            };
            assert_eq!(body.len(), 32768 * 32);
            inserts += 1;
        }
    }
    assert!(sent_lsn(&pg) > stalled);
}
