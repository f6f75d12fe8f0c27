//! Teardown against a real server: an artifact held by another session ends in a typed
//! "still in use" error within the bound, never in success with the artifact left behind.

use std::time::Instant;

use testkit::Cluster;
use tokio_postgres::NoTls;

async fn client(pg: &Cluster) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

#[tokio::test]
async fn an_origin_in_use_is_reported_not_left_behind() {
    let pg = Cluster::new();
    let (holder, c) = (client(&pg).await, client(&pg).await);
    holder
        .batch_execute(
            "SELECT pg_replication_origin_create('bluegreen_t');
             SELECT pg_replication_origin_session_setup('bluegreen_t');",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let err = state::teardown::drop_origin(&c, "bluegreen_t")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, state::Error::InUse { kind: "replication origin", name } if name == "bluegreen_t"),
        "{err}"
    );
    assert!(started.elapsed() >= state::teardown::IN_USE_BOUND);
    assert!(err.hint().unwrap().contains("stop the bluegreen process"));
    // Once the holder is gone, the same call removes it, and a second finds nothing.
    drop(holder);
    assert!(state::teardown::drop_origin(&c, "bluegreen_t")
        .await
        .unwrap());
    assert!(!state::teardown::drop_origin(&c, "bluegreen_t")
        .await
        .unwrap());
}

#[tokio::test]
async fn slots_and_publications_are_dropped_once() {
    let pg = Cluster::new();
    let c = client(&pg).await;
    c.batch_execute("SELECT pg_create_logical_replication_slot('bluegreen_s', 'pgoutput')")
        .await
        .unwrap();
    assert!(state::teardown::drop_slot(&c, "bluegreen_s").await.unwrap());
    assert!(!state::teardown::drop_slot(&c, "bluegreen_s").await.unwrap());
    assert!(!state::teardown::drop_publication(&c, "bluegreen_p")
        .await
        .unwrap());
}
