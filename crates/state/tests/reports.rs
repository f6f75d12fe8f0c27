//! Run reports in the state schema on a real server: stored per run and kind, rewritten in
//! place, the newest read back, kept when the run's row goes.

use serde_json::json;
use testkit::Cluster;
use tokio_postgres::NoTls;

#[tokio::test]
async fn reports_are_kept_per_run_and_read_back_newest_first() {
    let pg = Cluster::new();
    let (mut c, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    state::migrate(&mut c).await.unwrap();
    assert_eq!(state::reports::get(&c, "main").await.unwrap(), None);

    state::reports::put(&c, "main", "dry-run", &json!({"format": 1, "n": 1}))
        .await
        .unwrap();
    state::reports::put(&c, "main", "dry-run", &json!({"format": 1, "n": 2}))
        .await
        .unwrap();
    assert_eq!(
        state::reports::get(&c, "main").await.unwrap(),
        Some(json!({"format": 1, "n": 2})),
        "a rewrite replaces the report"
    );
    state::reports::put(&c, "main", "run", &json!({"format": 1, "n": 3}))
        .await
        .unwrap();
    assert_eq!(
        state::reports::get(&c, "main").await.unwrap(),
        Some(json!({"format": 1, "n": 3})),
        "the newest kind wins"
    );
    state::reports::put(&c, "other", "run", &json!({"format": 1}))
        .await
        .unwrap();
    let list = state::reports::list(&c).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].0, "other");
    // Migrating again is a no-op that keeps them.
    state::migrate(&mut c).await.unwrap();
    assert!(state::reports::get(&c, "other").await.unwrap().is_some());
}
