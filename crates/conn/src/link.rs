//! Dead links, found from this side. TCP keepalives and the user timeout catch a dead path
//! in the kernel, but not everything that looks alive to the kernel answers: a middlebox
//! can keep acknowledging a flow it no longer forwards, and a server's socket can stay open
//! behind it. A probe over a connection of its own asks the server itself.

use std::time::Duration;

use crate::spec::ConnSpec;

/// The default link timeout (`--link-timeout`).
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves only when the link to `spec` is found dead: a probe connection or a `SELECT 1`
/// on it gets no answer in time. Probes every third of `limit`, each allowed two thirds,
/// so a link that dies is noticed within `limit`. A refused or failed connection is not a
/// dead link (the server, or the network, answered); the caller's own connections report
/// that.
pub async fn watch_link(spec: ConnSpec, limit: Duration) {
    let period = limit / 3;
    let allowed = limit.saturating_sub(period);
    let mut client = None;
    loop {
        let Some(c) = &client else {
            match tokio::time::timeout(allowed, crate::connect(&spec)).await {
                Err(_) => return,
                Ok(Ok(c)) => client = Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(target = %spec.target(), error = %e, "link probe could not connect");
                    tokio::time::sleep(period).await;
                }
            }
            continue;
        };
        match tokio::time::timeout(allowed, c.simple_query("SELECT 1")).await {
            Err(_) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(target = %spec.target(), error = %e, "link probe failed");
                client = None;
            }
        }
        tokio::time::sleep(period).await;
    }
}
