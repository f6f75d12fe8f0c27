//! The copy + stream handoff against real PostgreSQL 15: rows visible in the slot's exported
//! snapshot plus the changes streamed from its consistent point add up exactly to the final
//! table, while a writer inserts, updates (also keys) and deletes throughout.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::Cluster;
use wire::pgoutput::{OldTuple, Value};
use wire::{Event, LogicalMessage, PgOutputOptions, StreamConfig};

type Rows = BTreeMap<i64, (String, Option<String>)>;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

fn key(t: &[Value]) -> i64 {
    text(&t[0]).unwrap().parse().unwrap()
}

async fn table(client: &tokio_postgres::Client) -> Rows {
    client
        .query("SELECT id, v::text, note FROM acct", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), (r.get(1), r.get(2))))
        .collect()
}

/// Inserts, updates (sometimes of the key) and deletes until told to stop; returns how many
/// statements of each kind changed a row.
async fn writer(client: tokio_postgres::Client, stop: Arc<AtomicBool>) -> [u64; 4] {
    let mut counts = [0u64; 4];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next_id: i64 = 1_000;
    while !stop.load(Ordering::SeqCst) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = (rng % next_id as u64) as i64;
        let op = (rng >> 32) % 10;
        let sql = match op {
            0..=3 => {
                next_id += 1;
                format!("INSERT INTO acct VALUES ({next_id}, {target}, 'ins {next_id}')")
            }
            4..=6 => format!("UPDATE acct SET v = v + 1, note = NULL WHERE id = {target}"),
            7 => {
                next_id += 1;
                format!("UPDATE acct SET id = {next_id} WHERE id = {target}")
            }
            _ => format!("DELETE FROM acct WHERE id = {target}"),
        };
        let kind = match op {
            0..=3 => 0,
            4..=6 => 1,
            7 => 2,
            _ => 3,
        };
        // Every fifth statement shares a transaction with an extra insert.
        let n = if rng % 5 == 0 {
            next_id += 1;
            let extra = format!("INSERT INTO acct VALUES ({next_id}, 0, 'tx')");
            let r = client
                .simple_query(&format!("BEGIN; {sql}; {extra}; COMMIT"))
                .await
                .unwrap();
            r.iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                    _ => None,
                })
                .nth(1)
                .unwrap_or(0)
        } else {
            client.execute(sql.as_str(), &[]).await.unwrap()
        };
        counts[kind] += n;
    }
    counts
}

fn apply(rows: &mut Rows, ev: &Event) {
    match &ev.message {
        LogicalMessage::Insert(i) => {
            let id = key(&i.new);
            let prev = rows.insert(id, (text(&i.new[1]).unwrap(), text(&i.new[2])));
            assert!(
                prev.is_none(),
                "insert of {id}, already in the snapshot: applied twice"
            );
        }
        LogicalMessage::Update(u) => {
            let id = key(&u.new);
            let old_id = match &u.old {
                Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) => key(t),
                None => id,
            };
            assert!(
                rows.remove(&old_id).is_some(),
                "update of {old_id}, missing from snapshot + stream"
            );
            rows.insert(id, (text(&u.new[1]).unwrap(), text(&u.new[2])));
        }
        LogicalMessage::Delete(d) => {
            let id = key(d.old.tuple());
            assert!(rows.remove(&id).is_some(), "delete of {id}, never seen");
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_snapshot_plus_stream_equals_final_table_under_writes() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE acct (id bigint PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO acct SELECT i, i, 'seed' FROM generate_series(0, 999) i;
         CREATE PUBLICATION pub FOR TABLE acct;",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        common::sql_client(&pg, "postgres").await,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let exported = common::connect(&pg, "postgres")
        .await
        .create_slot_exporting("handoff", false)
        .await
        .unwrap();
    let start = exported.consistent_point();

    // Read the table in the exported snapshot while writes go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = common::sql_client(&pg, "postgres").await;
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{}'",
            exported.snapshot_name()
        ))
        .await
        .unwrap();
    let mut rows = table(&reader).await;
    reader.batch_execute("COMMIT").await.unwrap();
    let in_snapshot = rows.len();

    let mut stream = exported
        .into_connection()
        .start_replication(
            "handoff",
            start,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let counts = writing.await.unwrap();
    let marker = common::sql_client(&pg, "postgres").await;
    marker
        .batch_execute("SELECT pg_logical_emit_message(true, 'test', 'end')")
        .await
        .unwrap();

    // Apply whole transactions until the marker.
    let mut txn: Vec<Event> = Vec::new();
    let mut applied = 0usize;
    'outer: loop {
        let ev = common::next(&mut stream, Duration::from_secs(60)).await;
        match &ev.message {
            LogicalMessage::Begin(_) => txn.clear(),
            LogicalMessage::Commit(c) => {
                assert!(
                    c.end_lsn > start,
                    "commit {c:?} before the consistent point {start}"
                );
                for e in &txn {
                    apply(&mut rows, e);
                    applied += 1;
                }
                stream.confirm(c.end_lsn);
            }
            LogicalMessage::Message(m) if m.prefix == "test" => break 'outer,
            _ => txn.push(ev),
        }
    }

    let final_rows = table(&marker).await;
    assert!(
        counts.iter().all(|&n| n > 10),
        "writer did too little: {counts:?}"
    );
    assert!(applied > 20, "only {applied} changes streamed");
    assert_eq!(rows.len(), final_rows.len(), "row counts differ");
    assert!(
        rows == final_rows,
        "snapshot + stream differ from the table"
    );
    eprintln!(
        "snapshot rows {in_snapshot}, streamed changes {applied}, final rows {}, writer [ins, upd, key upd, del] {counts:?}",
        final_rows.len()
    );
    let mut c = stream.shutdown().await.unwrap();
    c.drop_slot("handoff").await.unwrap();
}
