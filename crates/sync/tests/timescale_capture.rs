//! TimescaleDB's pgoutput stream, routed by sync's rules (`sync::timescale`): chunk changes
//! land in their hypertable, rows that compression moves between markers are skipped, the
//! real UPDATE/DELETE after a decompression applies, and TimescaleDB's own relations
//! (compressed chunks, an aggregate's materialization, hypertables outside the run) are not
//! applied. `captured_stream_routes_chunks_and_skips_moves` runs everywhere on bytes captured
//! from TimescaleDB 2.28.3 on PostgreSQL 15 (tests/data/timescaledb-2.28.3.stream);
//! `live_stream_routes_the_same` captures them again from a real server (skipped without
//! TimescaleDB; `SYNC_PRINT_CAPTURE=1 cargo test -p sync --test timescale_capture --
//! --nocapture` prints the file).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use sync::timescale::{by_name, chunk_target, Change, Markers, Named};
use testkit::Cluster;
use wire::pgoutput::{Tuple, Value};
use wire::{Decoder, LogicalMessage};

const CAPTURED: &str = include_str!("data/timescaledb-2.28.3.stream");

/// The run migrates schema `app`; `other.o` is a hypertable outside it.
const PLANNED: &[&str] = &["app"];

const SETUP: &str = "
CREATE EXTENSION timescaledb;
CREATE SCHEMA app;
CREATE SCHEMA other;
CREATE TABLE app.r (id bigint, ts timestamptz NOT NULL, dev int NOT NULL, v float8, f real,
                    n numeric, PRIMARY KEY (id, ts, dev));
SELECT create_hypertable('app.r', by_range('ts', interval '1 day'));
SELECT add_dimension('app.r', by_hash('dev', 2));
INSERT INTO app.r SELECT g, timestamptz '2026-01-01' + g * interval '1 hour', g % 5, g, g, g
  FROM generate_series(1, 100) g;
ALTER TABLE app.r SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev',
                       timescaledb.compress_orderby = 'ts DESC');
SELECT compress_chunk(c) FROM show_chunks('app.r', older_than => timestamptz '2026-01-03') c;
CREATE TABLE other.o (ts timestamptz NOT NULL, a int);
SELECT create_hypertable('other.o', by_range('ts'));
CREATE MATERIALIZED VIEW app.rh WITH (timescaledb.continuous) AS
  SELECT time_bucket('1 day', ts) AS b, dev, count(*) FROM app.r GROUP BY 1, 2 WITH NO DATA;
-- Published with the chunks, its refresh deletes need an identity (plan's
-- chunk-replica-identity blocker says so).
DO $$DECLARE m text; BEGIN
  SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
    INTO m FROM timescaledb_information.continuous_aggregates WHERE view_name = 'rh';
  EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', m);
END$$;
CREATE PUBLICATION pub FOR TABLES IN SCHEMA app, _timescaledb_internal;
";

/// One psql call (one transaction) each, after the slot exists.
const CHANGES: &[&str] = &[
    // An insert into an uncompressed chunk.
    "INSERT INTO app.r VALUES (1000, '2026-01-04 05:00', 1, 1, 1, 1)",
    // Update and delete in compressed chunks: decompression markers, then the real change.
    "UPDATE app.r SET v = -1 WHERE id = 10",
    "DELETE FROM app.r WHERE id = 11",
    // An insert into a compressed chunk (it becomes partial), then compressed again: the
    // chunk's rows are deleted between compression markers.
    "INSERT INTO app.r VALUES (1001, '2026-01-01 05:30', 1, 2, 2, 2)",
    "SELECT compress_chunk(c) FROM show_chunks('app.r', older_than => timestamptz '2026-01-03') c",
    // Fresh chunks compressed: batches into compress_hyper_* chunks only.
    "SELECT compress_chunk(c, if_not_compressed => true)
       FROM show_chunks('app.r', older_than => timestamptz '2026-01-04') c",
    "INSERT INTO app.r VALUES (2000, '2026-01-04 07:00', 3, 'NaN', '-Infinity', 'Infinity'),
                              (2001, '2026-01-04 08:00', 4, '-Infinity', 'NaN', 'NaN')",
    // A new chunk: its Relation comes before its first change.
    "INSERT INTO app.r VALUES (3000, '2026-02-01', 0, 0, 0, 0)",
    // Decompressed: the chunk's rows inserted between decompression markers.
    "SELECT decompress_chunk(c) FROM show_chunks('app.r', older_than => timestamptz '2026-01-02') c",
    "DELETE FROM app.r WHERE id = 50",
    // Not the run's: a hypertable of another schema, an aggregate's materialization.
    "INSERT INTO other.o VALUES ('2026-01-01', 1)",
    "CALL refresh_continuous_aggregate('app.rh', NULL, NULL)",
];

/// What sync applies: (change, target table, id and the values of v, f, n).
type Applied = (Change, String, Vec<String>);

/// What routing made of a stream.
#[derive(Debug, Default)]
struct Routed {
    applied: Vec<Applied>,
    /// Row changes on chunks skipped as moves between markers.
    moved: usize,
    /// Row changes on relations that are not applied, by relation.
    ignored: HashMap<String, usize>,
    markers: usize,
}

fn text(t: &Tuple, i: usize) -> String {
    match t.get(i) {
        Some(Value::Text(b)) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// sync's rules over decoded messages; `parents`: each chunk's parent by relation id.
fn route(messages: &[Bytes], parents: &HashMap<u32, (String, String)>) -> Routed {
    let planned: Vec<String> = PLANNED.iter().map(|s| s.to_string()).collect();
    let mut d = Decoder::new();
    let mut out = Routed::default();
    // Relation id → (target, is chunk), or None when not applied (with its name).
    let mut rels: HashMap<u32, Result<(String, bool), String>> = HashMap::new();
    let mut markers = Markers::default();
    for m in messages {
        let decoded = d.decode(m).unwrap_or_else(|e| panic!("{e}"));
        let (change, id, tuple) = match &decoded.message {
            LogicalMessage::Begin(_) => {
                markers = Markers::default();
                continue;
            }
            LogicalMessage::Message(g) => {
                out.markers += usize::from(markers.message(g.transactional, &g.prefix));
                continue;
            }
            LogicalMessage::Relation(r) => {
                let name = format!("{}.{}", r.namespace, r.name);
                let target = match by_name(&r.namespace, &r.name) {
                    Named::Table => Ok((name, false)),
                    Named::Chunk => match chunk_target(parents.get(&r.id).cloned(), &planned) {
                        Some((s, n)) => Ok((format!("{s}.{n}"), true)),
                        None => Err(name),
                    },
                    Named::Ignored => Err(name),
                };
                rels.insert(r.id, target);
                continue;
            }
            LogicalMessage::Insert(i) => (Change::Insert, i.relation_id, i.new.clone()),
            LogicalMessage::Update(u) => (Change::Update, u.relation_id, u.new.clone()),
            LogicalMessage::Delete(x) => (Change::Delete, x.relation_id, x.old.tuple().clone()),
            LogicalMessage::Truncate(_) => panic!("no truncate in this stream"),
            _ => continue,
        };
        match &rels[&id] {
            Err(name) => *out.ignored.entry(name.clone()).or_default() += 1,
            Ok((_, chunk)) if markers.skips(*chunk, change) => out.moved += 1,
            Ok((target, _)) => {
                let values = if change == Change::Delete {
                    vec![text(&tuple, 0)]
                } else {
                    vec![
                        text(&tuple, 0),
                        text(&tuple, 3),
                        text(&tuple, 4),
                        text(&tuple, 5),
                    ]
                };
                out.applied.push((change, target.clone(), values));
            }
        }
    }
    out
}

fn check(routed: &Routed) {
    let r = "app.r".to_string();
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        routed.applied,
        [
            (Change::Insert, r.clone(), row(&["1000", "1", "1", "1"])),
            (Change::Update, r.clone(), row(&["10", "-1", "10", "10"])),
            (Change::Delete, r.clone(), row(&["11"])),
            (Change::Insert, r.clone(), row(&["1001", "2", "2", "2"])),
            (
                Change::Insert,
                r.clone(),
                row(&["2000", "NaN", "-Infinity", "Infinity"])
            ),
            (
                Change::Insert,
                r.clone(),
                row(&["2001", "-Infinity", "NaN", "NaN"])
            ),
            (Change::Insert, r.clone(), row(&["3000", "0", "0", "0"])),
            (Change::Delete, r.clone(), row(&["50"])),
        ],
        "{routed:#?}"
    );
    // Decompressions for the update and both deletes, the recompression's deletes, and the
    // decompressed chunk's rows: all moves.
    assert!(routed.moved >= 40, "{routed:#?}");
    assert!(routed.markers >= 10, "{routed:#?}");
    let ignored = |prefix: &str| {
        routed
            .ignored
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert!(
        ignored("_timescaledb_internal.compress_hyper_") > 0,
        "{routed:#?}"
    );
    // other.o's chunk and the aggregate's materialization chunk: both `_hyper_*` chunks
    // whose parents are not planned tables.
    assert!(ignored("_timescaledb_internal._hyper_") >= 2, "{routed:#?}");
}

/// The committed capture: `parent <relid> <schema> <name>` lines, then `msg <hex>` lines.
fn parse(text: &str) -> (Vec<Bytes>, HashMap<u32, (String, String)>) {
    let mut messages = Vec::new();
    let mut parents = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut w = line.split(' ');
        match w.next() {
            Some("parent") => {
                let id: u32 = w.next().unwrap().parse().unwrap();
                let (s, n) = (w.next().unwrap(), w.next().unwrap());
                parents.insert(id, (s.to_string(), n.to_string()));
            }
            Some("msg") => messages.push(hex(w.next().unwrap())),
            other => panic!("unexpected line {other:?}"),
        }
    }
    (messages, parents)
}

fn hex(s: &str) -> Bytes {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn captured_stream_routes_chunks_and_skips_moves() {
    let (messages, parents) = parse(CAPTURED);
    check(&route(&messages, &parents));
}

#[test]
fn live_stream_routes_the_same() {
    if testkit::skip_without_timescaledb("live_stream_routes_the_same") {
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
    // Each chunk's parent, as sync looks it up on the source (pg_inherits).
    let mut d = Decoder::new();
    let mut parents = HashMap::new();
    let mut file = String::from(
        "# pgoutput (proto 1, messages) from TimescaleDB 2.28.3 on PostgreSQL 15: see tests/timescale_capture.rs\n",
    );
    for m in &messages {
        if let LogicalMessage::Relation(r) = d.decode(m).unwrap().message {
            if by_name(&r.namespace, &r.name) == Named::Chunk && !parents.contains_key(&r.id) {
                let parent = pg.sql(
                    "x",
                    &format!(
                        "SELECT pn.nspname || ' ' || pc.relname FROM pg_inherits i
                           JOIN pg_class pc ON pc.oid = i.inhparent
                           JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                          WHERE i.inhrelid = {}",
                        r.id
                    ),
                );
                let (s, n) = parent.split_once(' ').expect("a chunk has a parent");
                file.push_str(&format!("parent {} {parent}\n", r.id));
                parents.insert(r.id, (s.to_string(), n.to_string()));
            }
        }
    }
    for line in peeked.lines() {
        file.push_str(&format!("msg {line}\n"));
    }
    if std::env::var_os("SYNC_PRINT_CAPTURE").is_some() {
        print!("{file}");
    }
    check(&route(&messages, &parents));
}
