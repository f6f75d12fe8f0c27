//! Dead links (see [`conn::watch_link`]): every session probes each server over a
//! connection of its own, and a probe that gets no answer within the link timeout ends the
//! session (which then reconnects and resumes from the origin).

use std::future::Future;
use std::time::Duration;

use conn::ConnSpec;

use crate::error::Error;

/// Resolves only when the link to `spec` is found dead.
pub async fn watch(spec: ConnSpec, side: &'static str, limit: Duration) -> Error {
    conn::watch_link(spec, limit).await;
    Error::LinkDead { side, after: limit }
}

/// `f`'s output, or None when it takes longer than `limit`.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, f).await.ok()
}
