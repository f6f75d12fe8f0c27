//! One way to remove a run's replication artifacts (slots, origins, publications, and the
//! prepared parts an origin leaves), with one rule for artifacts still in use: end the
//! session that holds it, retry for a bounded time, then fail with [`Error::InUse`] naming
//! it. Nothing here returns success with the artifact still there.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::{q, Error, GenericClient};

/// How long an artifact may stay in use (its holder ending) before teardown gives up.
pub const IN_USE_BOUND: Duration = Duration::from_secs(5);
const PAUSE: Duration = Duration::from_millis(100);

/// Drops a logical replication slot, ending the session streaming from it first. False when
/// there was none.
pub async fn drop_slot(c: &impl GenericClient, slot: &str) -> Result<bool, Error> {
    let started = Instant::now();
    loop {
        let row = c
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(q("look up a replication slot"))?;
        let Some(row) = row else {
            return Ok(false);
        };
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            c.execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .map_err(q("end the session streaming from a slot"))?;
        } else {
            match c
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
            {
                Ok(_) => return Ok(true),
                // Taken again between the look and the drop: go round once more.
                Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {}
                Err(e) => return Err(q("drop a replication slot")(e)),
            }
        }
        give_up_after(started, "replication slot", slot).await?;
    }
}

/// Drops a replication origin once the session holding it has ended, then rolls back the
/// prepared parts of groups it left. False when there was no such origin.
pub async fn drop_origin(c: &impl GenericClient, origin: &str) -> Result<bool, Error> {
    let started = Instant::now();
    loop {
        match c
            .query(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
                &[&origin],
            )
            .await
        {
            Ok(rows) => {
                crate::rollback_prepared(c, origin).await?;
                return Ok(!rows.is_empty());
            }
            // Still held by a session that is ending.
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {}
            Err(e) => return Err(q("drop a replication origin")(e)),
        }
        give_up_after(started, "replication origin", origin).await?;
    }
}

/// Drops a publication. False when there was none.
pub async fn drop_publication(c: &impl GenericClient, name: &str) -> Result<bool, Error> {
    let existed = c
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(q("look up a publication"))?
        .is_some();
    c.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        conn::quote_ident(name)
    ))
    .await
    .map_err(q("drop a publication"))?;
    Ok(existed)
}

async fn give_up_after(started: Instant, kind: &'static str, name: &str) -> Result<(), Error> {
    if started.elapsed() >= IN_USE_BOUND {
        return Err(Error::InUse {
            kind,
            name: name.to_string(),
        });
    }
    tokio::time::sleep(PAUSE).await;
    Ok(())
}
