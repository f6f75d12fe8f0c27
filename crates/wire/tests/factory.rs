//! The factory_telemetry fixture (MS5.0's schema: UUID keys, JSONB, TEXT[], TOASTed
//! documents, a table without a primary key) loaded while a slot streams: every row the
//! decoder delivers equals the source's text form, table by table.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use testkit::Cluster;
use wire::pgoutput::{Relation, Value};
use wire::{LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

type Row = Vec<Option<String>>;
type Rows = Vec<Row>;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(b) => Some(String::from_utf8(b.to_vec()).expect("UTF-8")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_telemetry_load_streams_exactly_the_source_rows() {
    let pg = Cluster::new();
    pg.create_database("plant");
    pg.sql("plant", "CREATE PUBLICATION everything FOR ALL TABLES");
    let mut c = common::connect(&pg, "plant").await;
    c.create_slot("factory", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = c
        .start_replication(
            "factory",
            Lsn::ZERO,
            &PgOutputOptions::new(["everything"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();

    let report = fixtures::load_parallel(&pg.url("plant"), 0.01, 2)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    pg.sql(
        "plant",
        "SELECT pg_logical_emit_message(true, 'test', 'loaded')",
    );

    // Per table: rows by replica identity key (tables without one only ever get inserts).
    let mut streamed: BTreeMap<String, (Arc<Relation>, BTreeMap<Row, Row>)> = BTreeMap::new();
    let mut txn: Vec<wire::Event> = Vec::new();
    let mut serial = 0u64;
    loop {
        let ev = common::next(&mut stream, Duration::from_secs(60)).await;
        match &ev.message {
            LogicalMessage::Message(m) if m.prefix == "test" => break,
            LogicalMessage::Begin(_) => txn.clear(),
            LogicalMessage::Commit(c) => {
                for e in txn.drain(..) {
                    let Some(rel) = e.relation().cloned() else {
                        continue;
                    };
                    let name = format!("{}.{}", rel.namespace, rel.name);
                    let rows = &mut streamed
                        .entry(name)
                        .or_insert_with(|| (rel.clone(), BTreeMap::new()))
                        .1;
                    let key = |t: &[Value]| -> Row {
                        rel.columns
                            .iter()
                            .zip(t)
                            .filter(|(c, _)| c.is_key)
                            .map(|(_, v)| text(v))
                            .collect()
                    };
                    match &e.message {
                        LogicalMessage::Insert(i) => {
                            let mut k = key(&i.new);
                            if k.is_empty() {
                                serial += 1;
                                k = vec![Some(format!("#{serial}"))];
                            }
                            let row = i.new.iter().map(text).collect();
                            assert!(rows.insert(k, row).is_none(), "duplicate insert");
                        }
                        LogicalMessage::Update(u) => {
                            let old_key = u
                                .old
                                .as_ref()
                                .map_or_else(|| key(&u.new), |o| key(o.tuple()));
                            let old = rows.remove(&old_key).expect("update of a known row");
                            let row = u
                                .new
                                .iter()
                                .zip(old)
                                .map(|(v, before)| match v {
                                    Value::UnchangedToast => before,
                                    v => text(v),
                                })
                                .collect();
                            rows.insert(key(&u.new), row);
                        }
                        LogicalMessage::Delete(d) => {
                            rows.remove(&key(d.old.tuple()))
                                .expect("delete of a known row");
                        }
                        _ => {}
                    }
                }
                stream.confirm(c.end_lsn);
            }
            _ => txn.push(ev),
        }
    }

    let client = common::sql_client(&pg, "plant").await;
    let mut tables = 0;
    let mut rows_checked = 0;
    for (name, (rel, rows)) in streamed {
        let mut got: Rows = rows.into_values().collect();
        let cols: Vec<String> = rel
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name.replace('"', "\"\"")))
            .collect();
        let sql = format!(
            "SELECT {} FROM \"{}\".\"{}\"",
            cols.join(", "),
            rel.namespace,
            rel.name
        );
        let mut want: Rows = client
            .simple_query(&sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{name}: row count");
        assert!(got == want, "{name}: streamed rows differ from the source");
        tables += 1;
        rows_checked += got.len();
    }
    let loaded: u64 = report.total_rows();
    assert_eq!(
        tables,
        fixtures::TABLES.len(),
        "every table streamed something"
    );
    assert_eq!(rows_checked as u64, loaded, "every loaded row compared");
}
