//! Helpers shared by the integration tests: connection strings for testkit clusters and
//! small waits. Every test runs against a real PostgreSQL 15 from testkit.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use conn::ConnSpec;
use testkit::Cluster;
use wire::{Event, LogicalMessage, ReplicationConnection, ReplicationStream};

/// A key=value connection string as the superuser, plus `extra` pairs.
pub fn dsn(pg: &Cluster, db: &str, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname={db} sslmode=disable application_name=wire-test {extra}",
        pg.port(),
        pg.password()
    )
}

pub fn spec(pg: &Cluster, db: &str) -> ConnSpec {
    ConnSpec::parse(&dsn(pg, db, "")).expect("test connection string")
}

pub async fn connect(pg: &Cluster, db: &str) -> ReplicationConnection {
    ReplicationConnection::connect(&spec(pg, db))
        .await
        .unwrap_or_else(|e| panic!("replication connection: {e}"))
}

/// A tokio-postgres session for SQL on the side (snapshots, writers).
pub async fn sql_client(pg: &Cluster, db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(db), tokio_postgres::NoTls)
        .await
        .expect("tokio-postgres connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Receives the next event within `limit`.
pub async fn next(stream: &mut ReplicationStream, limit: Duration) -> Event {
    tokio::time::timeout(limit, stream.recv())
        .await
        .expect("no replication message in time")
        .unwrap_or_else(|e| panic!("stream error: {e}"))
}

/// Receives events until a Commit and returns the whole transaction (Begin..Commit).
pub async fn next_txn(stream: &mut ReplicationStream, limit: Duration) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = next(stream, left).await;
        let done = matches!(ev.message, LogicalMessage::Commit(_));
        out.push(ev);
        if done {
            return out;
        }
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Like [`dsn`] for another role.
pub fn dsn_as(pg: &Cluster, db: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password='{}' dbname={db} sslmode=disable {extra}",
        pg.port(),
        password.replace('\'', "\\'")
    )
}
