//! Production's WAL rate, which decides whether sync can catch up there.

use std::time::{Duration, Instant};

use crate::Error;

/// Bytes of WAL the server at `c` writes per second, measured over `over` (its position
/// read twice; a standby's replay position). `side` names the server in errors.
pub async fn wal_rate(
    c: &tokio_postgres::Client,
    side: &str,
    over: Duration,
) -> Result<f64, Error> {
    let first = position(c, side).await?;
    let started = Instant::now();
    tokio::time::sleep(over).await;
    let second = position(c, side).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(((second - first).max(0.0)) / seconds.max(1e-3))
}

async fn position(c: &tokio_postgres::Client, side: &str) -> Result<f64, Error> {
    let row = c
        .query_one(
            "SELECT ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                           ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::float8",
            &[],
        )
        .await
        .map_err(|source| Error::WalPosition {
            side: side.into(),
            source,
        })?;
    Ok(row.get(0))
}
