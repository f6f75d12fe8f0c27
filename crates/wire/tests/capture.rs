//! Real pgoutput bytes: the SQL interface (pg_logical_slot_peek_binary_changes) hands out the
//! same messages the walsender streams; decoding those bytes with the I/O-free decoder must
//! give exactly what the stream gave, for every message kind PostgreSQL 15 emits here.

mod common;

use std::time::Duration;

use bytes::Bytes;
use testkit::Cluster;
use wire::{Decoder, LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

const WORKLOAD: &str = "
CREATE TYPE color AS ENUM ('red', 'green');
CREATE TABLE items (id int PRIMARY KEY, name text, c color, tags text[]);
CREATE TABLE logs (line text);
ALTER TABLE logs REPLICA IDENTITY FULL;
CREATE PUBLICATION pub FOR TABLE items, logs;
";

/// One psql call (one session, one transaction) each.
const CHANGES: &[&str] = &[
    "INSERT INTO items VALUES (1, 'one', 'red', '{a,b}'), (2, NULL, 'green', NULL)",
    "UPDATE items SET name = 'uno' WHERE id = 1",
    "UPDATE items SET id = 3 WHERE id = 2",
    "DELETE FROM items WHERE id = 1",
    "INSERT INTO logs VALUES ('l1'); UPDATE logs SET line = 'l2'; DELETE FROM logs",
    "SELECT pg_logical_emit_message(true, 'tx', 'inside')",
    "SELECT pg_logical_emit_message(false, 'ntx', '\\x00ff'::bytea)",
    "TRUNCATE items, logs",
    "SELECT pg_replication_origin_create('blue')",
    // The origin is set up for the session, then the transaction records where it came from.
    "SELECT pg_replication_origin_session_setup('blue');
     BEGIN;
     SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
     INSERT INTO items VALUES (9, 'from blue', NULL, '{}');
     COMMIT;",
];

fn hex_decode(s: &str) -> Bytes {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_interface_bytes_decode_to_what_the_stream_delivers() {
    let pg = Cluster::new();
    pg.sql("postgres", WORKLOAD);
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("cap", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    c.close().await;
    for change in CHANGES {
        pg.sql("postgres", change);
    }
    // testkit runs with synchronous_commit=off, and decoding stops at the flushed WAL.
    let written = pg.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
    assert!(common::wait_until(Duration::from_secs(10), || {
        pg.sql(
            "postgres",
            &format!("SELECT pg_current_wal_flush_lsn() >= '{written}'"),
        ) == "t"
    }));

    let peeked = pg.sql(
        "postgres",
        "SELECT lsn || ' ' || encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('cap', NULL, NULL, \
         'proto_version', '1', 'publication_names', 'pub', 'messages', 'true')",
    );
    let mut decoder = Decoder::new();
    let mut from_sql = Vec::new();
    for line in peeked.lines() {
        let (lsn, hex) = line.split_once(' ').unwrap();
        let lsn: Lsn = lsn.parse().unwrap();
        if std::env::var_os("WIRE_PRINT_CAPTURE").is_some() {
            println!("{hex}");
        }
        let d = decoder
            .decode(&hex_decode(hex))
            .unwrap_or_else(|e| panic!("{lsn} {hex}: {e}"));
        from_sql.push(d);
    }

    let mut stream = common::connect(&pg, "postgres")
        .await
        .start_replication(
            "cap",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    for (i, want) in from_sql.iter().enumerate() {
        let got = common::next(&mut stream, Duration::from_secs(20)).await;
        assert_eq!(got.message, want.message, "message {i}");
        assert_eq!(got.relations, want.relations, "message {i}");
    }

    let kinds: std::collections::BTreeSet<&str> =
        from_sql.iter().map(|d| d.message.kind()).collect();
    let all = [
        "begin", "commit", "origin", "relation", "type", "insert", "update", "delete", "truncate",
        "message",
    ];
    assert_eq!(kinds, all.into_iter().collect(), "every kind captured");
    let origin = from_sql
        .iter()
        .find_map(|d| match &d.message {
            LogicalMessage::Origin(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(origin.name, "blue");
    assert_eq!(origin.commit_lsn, "0/ABCDEF".parse().unwrap());
}
