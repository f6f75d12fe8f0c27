//! Dead links, found from this side. TCP keepalives and the user timeout catch a dead path
//! in the kernel, but not everything that looks alive to the kernel answers: a middlebox
//! can keep acknowledging a flow it no longer forwards. So every session also probes each
//! server over a connection of its own, and a probe that gets no answer within the link
//! timeout ends the session (which then reconnects and resumes from the origin).

use std::future::Future;
use std::time::Duration;

use conn::ConnSpec;

use crate::error::Error;

/// The default for `--link-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves only when the link to `spec` is found dead: a probe connection or a `SELECT 1`
/// on it gets no answer in time. Probes every third of `limit`, each allowed two thirds,
/// so a link that dies is noticed within `limit`. A refused or failed connection is not a
/// dead link (the server answered); the session's own connections report that.
pub async fn watch(spec: ConnSpec, side: &'static str, limit: Duration) -> Error {
    let period = limit / 3;
    let allowed = limit.saturating_sub(period);
    let dead = Error::LinkDead { side, after: limit };
    let mut client = None;
    loop {
        let Some(c) = &client else {
            match tokio::time::timeout(allowed, conn::connect(&spec)).await {
                Err(_) => return dead,
                Ok(Ok(c)) => client = Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(side, error = %e, "link probe could not connect");
                    tokio::time::sleep(period).await;
                }
            }
            continue;
        };
        match tokio::time::timeout(allowed, c.simple_query("SELECT 1")).await {
            Err(_) => return dead,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(side, error = %e, "link probe failed");
                client = None;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// `f`'s output, or None when it takes longer than `limit`.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, f).await.ok()
}
