//! Dropping chunks in TimescaleDB's pgoutput stream, by sync's rules (`sync::timescale::
//! drops_chunks`, `Slices`): with `_timescaledb_catalog.dimension_slice` published (as copy
//! publishes it), `drop_chunks` shows as DELETEs of the dropped chunks' slices, while
//! compressing, decompressing and a new chunk (which inserts its slices) do not. Only the
//! drop_chunks transaction yields rows to delete: one filter per dropped chunk, built from
//! the catalog at the slot's start (`dim`/`slice` lines of the capture) and the stream; the
//! live test checks that those filters select exactly the rows the drop took. `captured_drops_are_seen` runs everywhere on bytes captured
//! from TimescaleDB 2.28.3 on PostgreSQL 15 (tests/data/timescaledb-2.28.3-drop.stream);
//! `live_drops_are_seen_the_same` captures them again (skipped without TimescaleDB;
//! `SYNC_PRINT_CAPTURE=1 cargo test -p sync --test timescale_drop_capture -- --nocapture`
//! prints the file).

use std::time::Duration;

use bytes::Bytes;
use sync::timescale::{
    drops_chunks, slice_id, slice_row, Change, Dimension, Dropped, Slice, Slices,
};
use testkit::Cluster;
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
CREATE SCHEMA keep;
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
    // (not published) the rows before the drop, for the live check.
    "CREATE TABLE keep.before AS SELECT * FROM app.r",
    // 5: two days of chunks (two hash partitions each, one compressed) dropped.
    "SELECT drop_chunks('app.r', older_than => timestamptz '2026-01-03')",
    // 6: an ordinary insert.
    "INSERT INTO app.r VALUES (1001, '2026-01-04 01:00', 1, 1)",
];

/// The catalog when the slot was made: `dim|id|schema|table|column|type|space` and
/// `slice|id|chunk|dimension|start|end` lines.
fn catalog(lines: &str) -> Slices {
    let mut slices = Slices::default();
    for line in lines.lines() {
        let f: Vec<&str> = line.split('|').collect();
        match f[0] {
            "dim" => slices.dimension(
                f[1].parse().unwrap(),
                Dimension {
                    hypertable: (f[2].into(), f[3].into()),
                    column: f[4].into(),
                    column_type: f[5].into(),
                    space: f[6] == "t",
                    func: None,
                },
            ),
            "slice" => slices.inserted(
                f[1].parse().unwrap(),
                Slice {
                    chunk: f[2].parse().unwrap(),
                    dimension: f[3].parse().unwrap(),
                    start: f[4].parse().unwrap(),
                    end: f[5].parse().unwrap(),
                },
            ),
            _ => {}
        }
    }
    slices
}

/// Per transaction (numbered from 0 in the stream) in which the rule sees chunks dropped: the slices
/// deleted and the filters of the rows to delete.
fn drops(messages: &[Bytes], mut slices: Slices) -> Vec<(usize, usize, Vec<String>)> {
    let run = vec!["app".to_string()];
    let mut d = Decoder::new();
    let mut rels = std::collections::HashMap::new();
    let mut txn = 0usize;
    let mut out: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for m in messages {
        let decoded = d.decode(m).unwrap_or_else(|e| panic!("{e}"));
        let (change, id, tuple) = match &decoded.message {
            LogicalMessage::Relation(r) => {
                let cols: Vec<String> = r.columns.iter().map(|c| c.name.clone()).collect();
                rels.insert(r.id, (r.namespace.clone(), r.name.clone(), cols));
                continue;
            }
            LogicalMessage::Commit(_) => {
                txn += 1;
                continue;
            }
            LogicalMessage::Insert(i) => (Change::Insert, i.relation_id, i.new.clone()),
            LogicalMessage::Update(u) => (Change::Update, u.relation_id, u.new.clone()),
            LogicalMessage::Delete(x) => (Change::Delete, x.relation_id, x.old.tuple().clone()),
            LogicalMessage::Truncate(_) => panic!("no truncate in this stream"),
            _ => continue,
        };
        let (ns, name, cols) = &rels[&id];
        if (ns.as_str(), name.as_str()) == sync::timescale::SLICE_TABLE && change == Change::Insert
        {
            let (id, slice) = slice_row(cols, &tuple).expect("a new slice is whole");
            slices.inserted(id, slice);
        }
        if drops_chunks(ns, name, change) {
            let id = slice_id(cols, &tuple).expect("a slice's DELETE carries its id");
            if out.last().is_none_or(|(t, _, _)| *t != txn) {
                out.push((txn, 0, Vec::new()));
            }
            let last = out.last_mut().unwrap();
            last.1 += 1;
            match slices.deleted(id, &run) {
                Dropped::Nothing => {}
                Dropped::Rows {
                    hypertable,
                    filter,
                    time,
                } => {
                    assert_eq!(hypertable, ("app".to_string(), "r".to_string()));
                    // Each chunk's day, whole: what the target's chunks are dropped by.
                    let time = time.expect("a time range");
                    assert!(
                        time.newer_than.is_some() && time.older_than.is_some(),
                        "{time:?}"
                    );
                    last.2.push(filter);
                }
                Dropped::Unknown(what) => panic!("unknown {what}"),
            }
        }
    }
    out
}

fn check(found: &[(usize, usize, Vec<String>)]) {
    // 2.28 keeps slices per chunk (dimension_slice.chunk_id): four chunks dropped (two
    // days by two hash partitions), a time and a hash slice each, in one transaction.
    // (Transactions are not counted: TimescaleDB's background jobs write published rows
    // of their own.)
    assert_eq!(found.len(), 1, "only drop_chunks drops chunks: {found:?}");
    let (_, deleted, filters) = &found[0];
    assert_eq!((*deleted, filters.len()), (8, 4), "{found:?}");
    for f in filters {
        assert!(
            f.contains("\"ts\" >= _timescaledb_functions.to_timestamp(")
                && f.contains("_timescaledb_functions.get_partition_hash(\"dev\")"),
            "{f}"
        );
    }
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
    check(&drops(&messages, catalog(CAPTURED)));
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
    let cat = pg.sql(
        "x",
        "SELECT 'dim|' || d.id || '|' || h.schema_name || '|' || h.table_name || '|' ||
                d.column_name || '|' || d.column_type::regtype::text || '|' ||
                (d.num_slices IS NOT NULL)::text::char
           FROM _timescaledb_catalog.dimension d
           JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id
         UNION ALL
         SELECT concat_ws('|', 'slice', id, chunk_id, dimension_id, range_start, range_end)
           FROM _timescaledb_catalog.dimension_slice",
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
        println!("{cat}");
        for line in peeked.lines() {
            println!("msg {line}");
        }
    }
    let found = drops(&messages, catalog(&cat));
    check(&found);
    // The filters select exactly the rows the drop took.
    let any: Vec<String> = found[0].2.iter().map(|f| format!("({f})")).collect();
    assert_eq!(
        pg.sql(
            "x",
            &format!(
                "SELECT (SELECT count(*) FROM keep.before WHERE {}),
                        (SELECT count(*) FROM keep.before b
                          WHERE NOT EXISTS (SELECT 1 FROM app.r r WHERE r.id = b.id))",
                any.join(" OR ")
            )
        ),
        "43|43"
    );
}
