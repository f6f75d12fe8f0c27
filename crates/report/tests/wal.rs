//! Production's WAL rate on a real server: writes show as bytes per second, quiet is near zero.

use std::time::Duration;

use testkit::Cluster;
use tokio_postgres::NoTls;

#[tokio::test]
async fn wal_rate_sees_writes() {
    let pg = Cluster::new();
    let (c, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (w, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    w.batch_execute("CREATE TABLE t (x text)").await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            w.batch_execute("INSERT INTO t SELECT repeat('x', 100) FROM generate_series(1, 2000)")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let busy = report::wal_rate(&c, "source", Duration::from_millis(800))
        .await
        .unwrap();
    writer.await.unwrap();
    // Each insert writes well over 200 kB of WAL, about 20 of them a second.
    assert!(busy > 1_000_000.0, "busy: {busy} B/s");
    let quiet = report::wal_rate(&c, "source", Duration::from_millis(500))
        .await
        .unwrap();
    assert!(quiet < busy / 10.0, "quiet {quiet} vs busy {busy}");
}
