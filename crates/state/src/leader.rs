//! Who leads a run's copy. The leading `copy` holds a session advisory lock on the target
//! for as long as it runs, so a second leader is refused, `copy --join` workers can tell that
//! a copy is running, and the lock goes with the leader's session however it ends (a killed
//! process's session closes and the server releases it).
//!
//! The data phase's snapshot is published in the run's row while the leader holds it;
//! a worker re-reads it under a share lock in each chunk's transaction, so once a new leader
//! has replaced it (after the old one died), chunks read at the old snapshot cannot commit.

use tokio_postgres::Client;

use crate::{q, Error, GenericClient};

/// The lock's two keys: (hashtext of this, hashtext of the run).
const LOCK_SPACE: &str = "bluegreen.copy";

/// Takes the run's leader lock for this session. False: another session holds it.
pub async fn try_lead(c: &Client, run: &str) -> Result<bool, Error> {
    c.query_one(
        "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
        &[&LOCK_SPACE, &run],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("take the copy's leader lock"))
}

/// True while some session (a leading `copy`) holds the run's leader lock.
pub async fn leader_running(c: &impl GenericClient, run: &str) -> Result<bool, Error> {
    c.query_one(
        "SELECT EXISTS (
             SELECT 1 FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 2
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid = (hashtext($1)::bigint & 4294967295)::oid
                AND objid = (hashtext($2)::bigint & 4294967295)::oid)",
        &[&LOCK_SPACE, &run],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("look for the copy's leader"))
}

/// The backend pid of the session holding the run's leader lock, if any.
pub async fn holder(c: &impl GenericClient, run: &str) -> Result<Option<i32>, Error> {
    c.query_opt(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 2
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = (hashtext($1)::bigint & 4294967295)::oid
            AND objid = (hashtext($2)::bigint & 4294967295)::oid
          LIMIT 1",
        &[&LOCK_SPACE, &run],
    )
    .await
    .map(|r| r.map(|r| r.get(0)))
    .map_err(q("look for the copy's leader"))
}

/// Publishes (or with None withdraws) the snapshot the data phase reads at.
pub async fn publish_snapshot(
    c: &impl GenericClient,
    run: &str,
    snapshot: Option<(&str, lsn::Lsn)>,
) -> Result<(), Error> {
    let (name, at) = snapshot.unzip();
    c.execute(
        "UPDATE bluegreen.runs SET copy_snapshot = $2, copy_snapshot_lsn = $3::text::pg_lsn
          WHERE run = $1",
        &[&run, &name, &at],
    )
    .await
    .map(|_| ())
    .map_err(q("publish the copy's snapshot"))
}

/// The published snapshot: (name, LSN).
pub async fn snapshot(
    c: &impl GenericClient,
    run: &str,
) -> Result<Option<(String, lsn::Lsn)>, Error> {
    let row = c
        .query_opt(
            "SELECT copy_snapshot, copy_snapshot_lsn::text FROM bluegreen.runs
              WHERE run = $1 AND copy_snapshot IS NOT NULL",
            &[&run],
        )
        .await
        .map_err(q("read the copy's snapshot"))?;
    Ok(row.and_then(|r| Some((r.get(0), r.get::<_, Option<lsn::Lsn>>(1)?))))
}

/// In a chunk's transaction: true while `name` is still the published snapshot. The share
/// lock on the run's row keeps a new leader from replacing it until the chunk commits.
pub async fn snapshot_current(
    c: &impl GenericClient,
    run: &str,
    name: &str,
) -> Result<bool, Error> {
    c.query_opt(
        "SELECT 1 FROM bluegreen.runs WHERE run = $1 AND copy_snapshot = $2 FOR SHARE",
        &[&run, &name],
    )
    .await
    .map(|r| r.is_some())
    .map_err(q("check the copy's snapshot"))
}
