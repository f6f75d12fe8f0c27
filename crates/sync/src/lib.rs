//! The sync stage: streams the run's slot from the copy's consistent point and applies every
//! change to the target exactly once, in source commit order, until stopped. Progress lives
//! in the target's replication origin (atomic with the applied changes) and its
//! `bluegreen.apply` row (for `status`, verify's holds and cutover).

mod apply;
mod binary;
mod error;
mod net;
mod progress;
mod relmap;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use state::{Chunk, Phase, Run};
use tokio::sync::watch;
use wire::Lsn;

pub use error::Error;
pub use session::GroupLimits;

use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub run: String,
    pub limits: GroupLimits,
    /// Transactions carrying this replication origin are not applied: reverse sync skips
    /// what forward sync wrote on green, so nothing loops back to blue.
    pub skip_origin: Option<String>,
    /// Target sessions that apply updates and deletes (split by key; more than one needs
    /// max_prepared_transactions on the target, else one is used).
    pub sessions: usize,
}

/// The servers a sync touches: it streams from `source`, applies to `target`, and keeps its
/// state (run row, apply row) in `state` — the target for forward sync; for reverse sync
/// after cutover, green, which is then the source.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub source: ConnSpec,
    pub target: ConnSpec,
    pub state: ConnSpec,
}

impl Endpoints {
    pub fn forward(source: &ConnSpec, target: &ConnSpec) -> Endpoints {
        Endpoints {
            source: source.clone(),
            target: target.clone(),
            state: target.clone(),
        }
    }
}

pub use state::names::origin as origin_name;

/// What a finished (stopped) sync reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub applied_lsn: String,
    pub rows: u64,
    pub reconnects: u64,
    pub seconds: f64,
}

/// Streams and applies until `stop` turns true or a stop is requested through the state
/// schema. Lost connections and failed transactions are retried with backoff (each retry
/// resumes from the origin); a schema change the target lacks waits for its DDL.
pub async fn sync(
    ends: &Endpoints,
    opts: &SyncOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<Report, Error> {
    let started = Instant::now();
    let run = opts.run.as_str();
    let mut tgt = conn::connect(&ends.state)
        .await
        .map_err(|source| Error::Conn {
            side: "state",
            source,
        })?;
    let not_ready = || Error::NotReady(format!("no copied run {run} on the target"));
    if !state::exists(&tgt).await? {
        return Err(not_ready());
    }
    let row = Run::get(&tgt, run).await?.ok_or_else(not_ready)?;
    // A state schema made by an older bluegreen gains the applier's table.
    state::migrate(&mut tgt).await?;
    if row.phase != Phase::Copied {
        return Err(Error::NotReady(format!(
            "run {run}'s copy has not finished (phase {})",
            row.phase.as_str()
        )));
    }
    let start: Lsn = row
        .consistent_lsn
        .as_deref()
        .and_then(|l| l.parse().ok())
        .ok_or_else(not_ready)?;
    let snapshot_lsns: HashMap<(String, String), Lsn> = Chunk::table_lsns(&tgt, run)
        .await?
        .into_iter()
        .filter_map(|(s, t, l)| Some(((s, t), l.parse().ok()?)))
        .collect();
    let origin = origin_name(run);
    tgt.execute(
        "INSERT INTO bluegreen.apply (run, origin) VALUES ($1, $2)
         ON CONFLICT (run) DO UPDATE SET stop_requested = false, hold_lsn = NULL, held_lsn = NULL",
        &[&run, &origin],
    )
    .await
    .map_err(error::sql("target", "register the applier"))?;
    drop(tgt);

    let progress = Arc::new(Progress::default());
    let status = tokio::spawn(progress::status_task(
        run.to_string(),
        row.slot_name.clone(),
        ends.source.clone(),
        ends.state.clone(),
        progress.clone(),
    ));
    let ctx = session::Context {
        run: run.to_string(),
        slot: row.slot_name.clone(),
        publication: row.publication.clone(),
        origin,
        start,
        source: ends.source.clone(),
        target: ends.target.clone(),
        state: ends.state.clone(),
        limits: opts.limits.clone(),
        skip_origin: opts.skip_origin.clone(),
        progress: progress.clone(),
        snapshot_lsns,
        sessions: opts.sessions.clamp(1, apply::MAX_SESSIONS),
        serial_until: Default::default(),
    };
    let mut reconnects = 0u64;
    let mut backoff = Duration::from_millis(500);
    let result = loop {
        let session_start = Instant::now();
        match session::run(&ctx, &mut stop).await {
            Ok(session::Exit::Stopped) => break Ok(()),
            Err(Error::Replay { table, lsn }) => {
                // Not trouble: the group goes again from the origin, over one session.
                tracing::info!(%table, %lsn, "replaying a group over one session: a change touched a row another session held");
                ctx.serial_until
                    .fetch_max(lsn.0, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) if e.retryable() && !*stop.borrow() => {
                if session_start.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                let text = match &e {
                    Error::SchemaMismatch { .. } => format!("{e}; waiting: {}", e.hint()),
                    _ => e.to_string(),
                };
                tracing::warn!(error = %text, retry_in = ?backoff, "sync interrupted; resuming from the origin");
                progress.set_error(Some(text));
                reconnects += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
                if *stop.borrow() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    // One last status row, then mark the applier as gone so status says so at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    status.abort();
    if let Ok(c) = conn::connect(&ends.state).await {
        let _ = c
            .execute(
                "UPDATE bluegreen.apply SET heartbeat = NULL, pid = NULL WHERE run = $1",
                &[&run],
            )
            .await;
    }
    result?;
    Ok(Report {
        applied_lsn: progress.applied().to_string(),
        rows: progress.rows.load(std::sync::atomic::Ordering::Relaxed),
        reconnects,
        seconds: started.elapsed().as_secs_f64(),
    })
}
