//! The `bluegreen` schema on the target: where every run keeps what it has done, so a
//! restarted process, `status`, and extra workers all read the same rows. Nothing important
//! lives only in process memory or local files.
//!
//! Writes that record progress take a [`GenericClient`], so callers put them in the same
//! transaction as the work they record (a chunk's rows and its `done` mark commit together).

pub mod apply;
pub mod changes;
mod chunks;
pub mod created;
mod fences;
pub mod flips;
pub mod leader;
pub mod matviews;
mod migrate;
pub mod names;
pub mod policies;
mod post_data;
pub mod reports;
mod runs;
pub mod teardown;
pub mod verify;

pub use apply::{
    emit_drain_message, emit_hold_message, hold_at_message, prepared_parts, record_divergence,
    release, request_hold, request_stop, rollback_prepared, take_hold, ApplyStatus,
};
pub use chunks::{Chunk, ChunkKind, NewChunk, TableSummary};
pub use fences::{FenceRecord, Grant, Side};
pub use flips::{Flip, Found};
pub use migrate::{drop_schema, exists, known_version, migrate, SCHEMA};
pub use post_data::{NewItem, PostDataItem, ANALYZE_KIND};
pub use runs::{NewRun, Phase, Run};

use thiserror::Error;
pub use tokio_postgres::GenericClient;

/// What fixes an error where the stage reporting it cannot say better.
impl Error {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::InUse { .. } => Some(
                "stop the bluegreen process of this run that holds it (sync, verify or cutover), then run the command again",
            ),
            Error::TooNew { .. } => Some("use the bluegreen version that wrote the state schema, or a newer one"),
            Error::Query { .. } | Error::Corrupt(_) => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("state schema: {what}: {}", conn::pg_message(source))]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("state schema version {found} is newer than this bluegreen knows ({known}); use a newer bluegreen")]
    TooNew { found: i32, known: i32 },
    #[error("unknown value {0:?} in the state schema")]
    Corrupt(String),
    #[error("{kind} {name} stays in use")]
    InUse { kind: &'static str, name: String },
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Query { what, source }
}

/// The newest audit entry of one of `steps`: (step, when as text, seconds, detail). Only
/// the run's own: entries of an earlier run of the same name (aborted: the audit log keeps
/// them) are older than the run's row.
pub async fn last_audit(
    c: &impl GenericClient,
    run: &str,
    steps: &[&str],
) -> Result<Option<(String, String, Option<f64>, Option<serde_json::Value>)>, Error> {
    let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    let row = c
        .query_opt(
            "SELECT step, to_char(at, 'YYYY-MM-DD HH24:MI:SS TZ'), seconds, detail
               FROM bluegreen.audit
              WHERE run = $1 AND step = ANY($2)
                AND at >= coalesce((SELECT created_at FROM bluegreen.runs WHERE run = $1),
                                   '-infinity')
              ORDER BY id DESC LIMIT 1",
            &[&run, &steps],
        )
        .await
        .map_err(q("read audit"))?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
}

/// Appends a step to the run's audit log.
pub async fn audit(
    c: &impl GenericClient,
    run: &str,
    step: &str,
    seconds: Option<f64>,
    detail: serde_json::Value,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO bluegreen.audit (run, step, seconds, detail) VALUES ($1, $2, $3, $4)",
        &[&run, &step, &seconds, &detail],
    )
    .await
    .map(|_| ())
    .map_err(q("audit"))
}
