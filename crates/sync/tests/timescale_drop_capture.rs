//! Dropping chunks in TimescaleDB's pgoutput stream, by sync's rule (`sync::timescale::
//! drops_chunks`): with `_timescaledb_catalog.dimension_slice` published (as copy publishes
//! it), `drop_chunks` shows as a DELETE of the dropped range's slice, while compressing,
//! decompressing and a new chunk (which inserts its slice) do not. The rule flags exactly
//! the drop_chunks transaction. `captured_drops_are_seen` runs everywhere on bytes captured
//! from TimescaleDB 2.28.3 on PostgreSQL 15 (tests/data/timescaledb-2.28.3-drop.stream);
//! `live_drops_are_seen_the_same` captures them again (skipped without TimescaleDB;
//! `SYNC_PRINT_CAPTURE=1 cargo test -p sync --test timescale_drop_capture -- --nocapture`
//! prints the file).

use std::time::Duration;

use bytes::Bytes;
use sync::timescale::{drops_chunks, Change};
use testkit::Cluster;
use wire::pgoutput::Value;
use wire::{Decoder, LogicalMessage};

const CAPTURED: &str = include_str!("data/timescaledb-2.28.3-drop.stream");

const SETUP: &str = "
CREATE EXTENSION timescaledb;
CREATE SCHEMA app;
CREATE TABLE app.r (id bigint, ts timestamptz NOT NULL, dev int NOT NULL, v float8,
                    PRIMARY KEY (id, ts, dev));
SELECT create_hypertable('app.r', by_range('ts', interval '1 day'));
SELECT add_dimension('app.r', by_hash('dev', 2));
INSERT INTO app.r SELECT g, timestamptz '2026-01-01' + g * interval '1 hour', g % 5, g
  FROM generate_series(1, 100) g;
ALTER TABLE app.r SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev');
CREATE PUBLICATION pub FOR TABLES IN SCHEMA app, _timescaledb_internal,
  TABLE _timescaledb_catalog.dimension_slice;
";

/// One psql call (one transaction) each, after the slot exists.
const CHANGES: &[&str] = &[
    // 0: compressed, 1: decompressed again: no slice changes.
    "SELECT compress_chunk(c) FROM show_chunks('app.r', older_than => timestamptz '2026-01-03') c",
    "SELECT decompress_chunk(c) FROM show_chunks('app.r', older_than => timestamptz '2026-01-02') c",
    // 2: a new chunk inserts its slice.
    "INSERT INTO app.r VALUES (1000, '2026-03-01', 1, 1)",
    // 3: rows deleted, the chunk stays.
    "DELETE FROM app.r WHERE id < 5",
    // 4: two days of chunks (two hash partitions each, one compressed) dropped.
    "SELECT drop_chunks('app.r', older_than => timestamptz '2026-01-03')",
    // 5: an ordinary insert.
    "INSERT INTO app.r VALUES (1001, '2026-01-04 01:00', 1, 1)",
];

/// The index in CHANGES of each transaction in which the rule sees chunks dropped, with
/// the dropped slice ids' count.
fn drops(messages: &[Bytes]) -> Vec<(usize, usize)> {
    let mut d = Decoder::new();
    let mut names = std::collections::HashMap::new();
    let mut txn = 0usize;
    let mut out: Vec<(usize, usize)> = Vec::new();
    for m in messages {
        let decoded = d.decode(m).unwrap_or_else(|e| panic!("{e}"));
        let (change, id, key) = match &decoded.message {
            LogicalMessage::Relation(r) => {
                names.insert(r.id, (r.namespace.clone(), r.name.clone()));
                continue;
            }
            LogicalMessage::Commit(_) => {
                txn += 1;
                continue;
            }
            LogicalMessage::Insert(i) => (Change::Insert, i.relation_id, None),
            LogicalMessage::Update(u) => (Change::Update, u.relation_id, None),
            LogicalMessage::Delete(x) => (Change::Delete, x.relation_id, x.old.tuple().first()),
            LogicalMessage::Truncate(_) => panic!("no truncate in this stream"),
            _ => continue,
        };
        let (ns, name) = &names[&id];
        if drops_chunks(ns, name, change) {
            assert!(
                matches!(key, Some(Value::Text(_))),
                "a slice's DELETE carries its id"
            );
            match out.last_mut() {
                Some((t, n)) if *t == txn => *n += 1,
                _ => out.push((txn, 1)),
            }
        }
    }
    assert_eq!(txn, CHANGES.len(), "one transaction per change");
    out
}

fn check(found: &[(usize, usize)]) {
    // 2.28 keeps slices per chunk (dimension_slice.chunk_id): four chunks dropped (two
    // days by two hash partitions), a time and a hash slice each.
    assert_eq!(found, [(4, 8)], "only drop_chunks drops chunks");
}

fn hex(s: &str) -> Bytes {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn captured_drops_are_seen() {
    let messages: Vec<Bytes> = CAPTURED
        .lines()
        .filter_map(|l| l.strip_prefix("msg "))
        .map(hex)
        .collect();
    check(&drops(&messages));
}

#[test]
fn live_drops_are_seen_the_same() {
    if testkit::skip_without_timescaledb("live_drops_are_seen_the_same") {
        return;
    }
    let pg = Cluster::builder().timescaledb().start().unwrap();
    pg.create_database("x");
    pg.sql("x", SETUP);
    pg.sql(
        "x",
        "SELECT pg_create_logical_replication_slot('cap', 'pgoutput')",
    );
    for change in CHANGES {
        pg.sql("x", change);
    }
    // testkit runs with synchronous_commit=off, and decoding stops at the flushed WAL.
    let written = pg.sql("x", "SELECT pg_current_wal_insert_lsn()");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.sql(
        "x",
        &format!("SELECT pg_current_wal_flush_lsn() >= '{written}'"),
    ) != "t"
    {
        assert!(std::time::Instant::now() < deadline, "WAL not flushed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let peeked = pg.sql(
        "x",
        "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('cap', NULL, NULL,
           'proto_version', '1', 'publication_names', 'pub', 'messages', 'true')",
    );
    let messages: Vec<Bytes> = peeked.lines().map(hex).collect();
    if std::env::var_os("SYNC_PRINT_CAPTURE").is_some() {
        println!("# pgoutput (proto 1, messages) from TimescaleDB 2.28.3 on PostgreSQL 15: see tests/timescale_drop_capture.rs");
        for line in peeked.lines() {
            println!("msg {line}");
        }
    }
    check(&drops(&messages));
}
