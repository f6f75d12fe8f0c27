//! Replication commands and stream errors against real PostgreSQL 15: slot lifecycle,
//! typed errors for unknown slots and publications, server-side termination, clean shutdown.

mod common;

use std::time::Duration;

use testkit::Cluster;
use wire::{sqlstate, Error, LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

const WAIT: Duration = Duration::from_secs(20);

fn setup(pg: &Cluster) {
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_lifecycle_and_its_errors() {
    let pg = Cluster::new();
    let mut c = common::connect(&pg, "postgres").await;
    let slot = c
        .create_slot("life_1", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    assert_eq!(slot.slot_name, "life_1");
    assert_eq!(slot.output_plugin, "pgoutput");
    assert_eq!(slot.snapshot_name, None);
    assert!(slot.consistent_point > Lsn::ZERO);
    let row = pg.sql(
        "postgres",
        "SELECT plugin, slot_type, temporary, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'life_1'",
    );
    assert_eq!(row, format!("pgoutput|logical|f|{}", slot.consistent_point));

    let dup = c
        .create_slot("life_1", false, SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(sqlstate::DUPLICATE_OBJECT), "{dup}");

    c.drop_slot("life_1").await.unwrap();
    assert_eq!(
        pg.sql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    let gone = c.drop_slot("life_1").await.unwrap_err();
    assert_eq!(gone.code(), Some(sqlstate::UNDEFINED_OBJECT), "{gone}");

    // Names are checked before anything is sent.
    let bad = c
        .create_slot("Bad-Name", false, SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument(_)), "{bad}");

    // The connection survived every error above.
    assert!(c.identify_system().await.is_ok());
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_slot_is_a_typed_error() {
    let pg = Cluster::new();
    setup(&pg);
    let c = common::connect(&pg, "postgres").await;
    let err = c
        .start_replication(
            "no_such_slot",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .err()
        .expect("unknown slot");
    assert_eq!(err.code(), Some(sqlstate::UNDEFINED_OBJECT), "{err}");
    assert!(err.to_string().contains("no_such_slot"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_publication_is_a_typed_error_on_the_stream() {
    let pg = Cluster::new();
    setup(&pg);
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("nopub", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = c
        .start_replication(
            "nopub",
            Lsn::ZERO,
            &PgOutputOptions::new(["missing_pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    // pgoutput looks the publication up when it decodes the first change.
    pg.sql("postgres", "INSERT INTO t VALUES (1, 'x')");
    let err = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = stream.recv().await {
                return e;
            }
        }
    })
    .await
    .expect("error in time");
    assert_eq!(err.code(), Some(sqlstate::UNDEFINED_OBJECT), "{err}");
    assert!(err.to_string().contains("missing_pub"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_decodes_changes_and_shuts_down_cleanly() {
    let pg = Cluster::new();
    setup(&pg);
    pg.sql("postgres", "ALTER TABLE t REPLICA IDENTITY FULL");
    let mut c = common::connect(&pg, "postgres").await;
    let slot = c
        .create_slot("flow", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = c
        .start_replication(
            "flow",
            slot.consistent_point,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    pg.sql(
        "postgres",
        "BEGIN; INSERT INTO t VALUES (1, 'a'), (2, NULL); UPDATE t SET v = 'b' WHERE id = 1; \
         DELETE FROM t WHERE id = 2; SELECT pg_logical_emit_message(true, 'bg', 'hello'); COMMIT; \
         SELECT pg_logical_emit_message(false, 'bg', 'outside'); TRUNCATE t",
    );
    let txn = common::next_txn(&mut stream, WAIT).await;
    let kinds: Vec<&str> = txn.iter().map(|e| e.message.kind()).collect();
    assert_eq!(
        kinds,
        ["begin", "relation", "insert", "insert", "update", "delete", "message", "commit"]
    );
    let LogicalMessage::Begin(begin) = &txn[0].message else {
        panic!()
    };
    let LogicalMessage::Commit(commit) = &txn[7].message else {
        panic!()
    };
    assert_eq!(begin.final_lsn, commit.commit_lsn);
    let rel = txn[2].relation().unwrap();
    assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "t"));
    let LogicalMessage::Update(up) = &txn[4].message else {
        panic!()
    };
    assert!(
        matches!(up.old, Some(wire::pgoutput::OldTuple::Full(_))),
        "REPLICA IDENTITY FULL sends the old row"
    );
    let LogicalMessage::Message(m) = &txn[6].message else {
        panic!()
    };
    assert!(m.transactional);
    assert_eq!((m.prefix.as_str(), &m.content[..]), ("bg", &b"hello"[..]));

    let outside = common::next(&mut stream, WAIT).await;
    let LogicalMessage::Message(m) = &outside.message else {
        panic!("{outside:?}")
    };
    assert!(!m.transactional);
    // TRUNCATE invalidates pgoutput's relation cache, so a Relation message may precede it.
    let trunc = common::next_txn(&mut stream, WAIT).await;
    let ev = trunc
        .iter()
        .find(|e| matches!(e.message, LogicalMessage::Truncate(_)))
        .unwrap_or_else(|| panic!("{trunc:?}"));
    let LogicalMessage::Truncate(t) = &ev.message else {
        unreachable!()
    };
    assert_eq!(t.relation_ids, vec![rel.id]);
    assert_eq!(ev.relations[0].name, "t");

    // Confirm the first transaction only, shut down, and see that the slot kept the rest.
    stream.confirm(commit.end_lsn);
    let mut c = stream.shutdown().await.unwrap();
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'flow'"
        ),
        commit.end_lsn.to_string()
    );
    // The connection is usable again for commands, but PostgreSQL 15 ends a second stream on
    // the same session at once; a new connection resumes after the confirmed point.
    assert!(c.identify_system().await.is_ok());
    let mut reused = c
        .start_replication(
            "flow",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, reused.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::StreamEndedByServer), "{err}");
    let mut stream = common::connect(&pg, "postgres")
        .await
        .start_replication(
            "flow",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    let again = common::next(&mut stream, WAIT).await;
    assert!(
        matches!(&again.message, LogicalMessage::Message(m) if &m.content[..] == b"outside"),
        "{again:?}"
    );
    let mut c = stream.shutdown().await.unwrap();
    c.drop_slot("flow").await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_walsender_is_a_clear_error() {
    let pg = Cluster::new();
    setup(&pg);
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("term", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let pid = c.backend_pid();
    let mut stream = c
        .start_replication(
            "term",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    pg.sql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let err = tokio::time::timeout(WAIT, stream.recv())
        .await
        .expect("error in time")
        .unwrap_err();
    assert_eq!(err.code(), Some(sqlstate::ADMIN_SHUTDOWN), "{err}");
    // Later calls keep failing instead of hanging.
    let again = tokio::time::timeout(WAIT, stream.recv()).await.unwrap();
    assert!(again.is_err());
}
