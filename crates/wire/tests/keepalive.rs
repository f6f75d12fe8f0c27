//! Keepalives against real PostgreSQL 15 with a short wal_sender_timeout: an idle stream
//! stays up, and the slot advances past WAL that produced no changes.

mod common;

use std::time::Duration;

use testkit::Cluster;
use wire::{Error, LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

const WAIT: Duration = Duration::from_secs(20);

fn confirmed_flush(pg: &Cluster, slot: &str) -> Lsn {
    pg.sql(
        "postgres",
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_survives_short_wal_sender_timeout_and_slot_advances() {
    let pg = Cluster::builder()
        .setting("wal_sender_timeout", "'2s'")
        .start()
        .unwrap();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE unpublished (id int); \
         CREATE PUBLICATION pub FOR TABLE t",
    );
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("idle", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    let walsender = c.backend_pid();
    let config = StreamConfig {
        // Far longer than wal_sender_timeout: only answering the server's requests keeps
        // the stream alive.
        status_interval: Duration::from_secs(60),
        ..StreamConfig::default()
    };
    let mut stream = c
        .start_replication("idle", Lsn::ZERO, &PgOutputOptions::new(["pub"]), config)
        .await
        .unwrap();

    pg.sql("postgres", "INSERT INTO t VALUES (1)");
    let txn = common::next_txn(&mut stream, WAIT).await;
    let LogicalMessage::Commit(commit) = &txn.last().unwrap().message else {
        panic!()
    };
    stream.confirm(commit.end_lsn);
    stream.send_status().await.unwrap();
    assert!(common::wait_until(WAIT, || confirmed_flush(&pg, "idle") >= commit.end_lsn));

    // WAL that carries no published change, then silence.
    pg.sql("postgres", "INSERT INTO unpublished VALUES (1)");
    let after_unpublished: Lsn = pg
        .sql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    assert!(after_unpublished > commit.end_lsn);
    let idle = tokio::time::timeout(Duration::from_secs(10), stream.recv()).await;
    assert!(idle.is_err(), "no message while idle, got {idle:?}");

    // Still the same walsender (the server did not time us out), and the slot moved past the
    // unpublished write on keepalives alone.
    let senders = pg.sql(
        "postgres",
        "SELECT string_agg(pid::text, ',') FROM pg_stat_replication",
    );
    assert_eq!(senders, walsender.to_string());
    let flushed = confirmed_flush(&pg, "idle");
    assert!(
        flushed >= after_unpublished,
        "confirmed_flush_lsn {flushed} did not reach {after_unpublished}\n{}",
        pg.log()
    );
    assert!(stream.feedback().reported_flush() >= after_unpublished);
    assert!(!pg
        .log()
        .contains("terminating walsender process due to replication timeout"));

    // And the stream still delivers.
    pg.sql("postgres", "INSERT INTO t VALUES (2)");
    let txn = common::next_txn(&mut stream, WAIT).await;
    assert!(txn
        .iter()
        .any(|e| matches!(e.message, LogicalMessage::Insert(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_ends_the_stream_with_a_clear_error() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t",
    );
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("down", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = c
        .start_replication(
            "down",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    // A fast shutdown waits for walsenders to hand over everything; then the stream ends.
    let (pg, stopped) = tokio::task::spawn_blocking(move || {
        let r = pg.stop();
        (pg, r)
    })
    .await
    .unwrap();
    stopped.unwrap();
    let err = tokio::time::timeout(WAIT, stream.recv())
        .await
        .expect("stream noticed the shutdown")
        .unwrap_err();
    // The walsender leaves COPY with CommandComplete once we have confirmed (by keepalive)
    // everything it sent.
    assert!(matches!(err, Error::StreamEndedByServer), "{err}");
    drop(pg);
}

/// An idle stream with a short silence timeout stays up (its reply requests are answered at
/// once, long before the walsender's own keepalive); through a black hole it ends with
/// `Error::Silent` within the timeout, where without one it would wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_timeout_ends_a_black_holed_stream_and_spares_an_idle_one() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t",
    );
    let proxy = testkit::Proxy::to_port(pg.port()).unwrap();
    let spec = conn::ConnSpec::parse(&format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode=disable",
        proxy.port(),
        pg.password()
    ))
    .unwrap();
    let mut c = wire::ReplicationConnection::connect(&spec).await.unwrap();
    c.create_slot("quiet", false, SnapshotAction::NoExport)
        .await
        .unwrap();
    let quiet = Duration::from_secs(2);
    let config = StreamConfig {
        status_interval: Duration::from_secs(60),
        silence_timeout: Some(quiet),
        ..StreamConfig::default()
    };
    let mut stream = c
        .start_replication("quiet", Lsn::ZERO, &PgOutputOptions::new(["pub"]), config)
        .await
        .unwrap();
    // Idle for three timeouts (wal_sender_timeout is 60 s: the server sends nothing
    // unasked): still up, and data still flows.
    let idle = tokio::time::timeout(quiet * 3, stream.recv()).await;
    assert!(idle.is_err(), "no message while idle, got {idle:?}");
    pg.sql("postgres", "INSERT INTO t VALUES (1)");
    common::next_txn(&mut stream, WAIT).await;

    proxy.black_hole(None);
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(quiet * 4, async {
        loop {
            if let Err(e) = stream.recv().await {
                return e;
            }
        }
    })
    .await
    .expect("a black-holed stream must end within its silence timeout");
    assert!(matches!(end, Error::Silent(d) if d == quiet), "{end:?}");
    let took = started.elapsed();
    assert!(took >= quiet && took < quiet * 2, "{took:?}");
}
