//! The sync stage: streams the run's slot from the copy's consistent point and applies every
//! change to the target exactly once, in source commit order, until stopped. Progress lives
//! in the target's replication origin (atomic with the applied changes) and its
//! `bluegreen.apply` row (for `status`, verify's holds and cutover).

mod apply;
mod binary;
mod error;
mod link;
mod net_changes;
mod progress;
mod relmap;
mod session;
mod standbys;
pub mod timescale;

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
    /// A server that gives no answer this long counts as gone (see [`link`]): the session
    /// reconnects. Also bounds every wait of sync outside a session.
    pub link_timeout: Duration,
    /// After a stop request, how long to wait for the transaction at hand before giving it
    /// up (it is sent again at the next start).
    pub stop_grace: Duration,
    /// A hold nobody releases (or, asked for at the next drain message, nobody sends) is
    /// dropped after this long: its requester is gone.
    pub hold_expiry: Duration,
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
    pub applied_lsn: Lsn,
    pub rows: u64,
    pub reconnects: u64,
    pub seconds: f64,
}

/// Streams and applies until `stop` turns true or a stop is requested through the state
/// schema. Lost connections and failed transactions are retried with backoff (each retry
/// resumes from the origin); a schema change the target lacks waits for its DDL. Once
/// stopping, `force` turning true or `opts.stop_grace` passing ends it at once
/// ([`Error::Abandoned`]: what was not committed is sent again at the next start).
pub async fn sync(
    ends: &Endpoints,
    opts: &SyncOptions,
    mut stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
) -> Result<Report, Error> {
    let started = Instant::now();
    let run = opts.run.as_str();
    let limit = opts.link_timeout;
    let mut tgt = link::within(limit, conn::connect(&ends.state))
        .await
        .ok_or(Error::LinkDead {
            side: "state",
            after: limit,
        })?
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
    let start: Lsn = row.consistent_lsn.ok_or_else(not_ready)?;
    let snapshot_lsns: HashMap<(String, String), Lsn> = Chunk::table_lsns(&tgt, run)
        .await?
        .into_iter()
        .map(|(s, t, l)| ((s, t), l))
        .collect();
    let origin = origin_name(run);
    link::within(limit, state::apply::register(&tgt, run, &origin))
        .await
        .ok_or(Error::LinkDead {
            side: "state",
            after: limit,
        })??;
    drop(tgt);

    let progress = Arc::new(Progress::default());
    // At least the copy's snapshot is on the target: lag is measured from there until a
    // session reads the origin, never from 0/0.
    progress.set_applied(start);
    let status = tokio::spawn(progress::status_task(
        run.to_string(),
        row.slot_name.clone(),
        ends.source.clone(),
        ends.state.clone(),
        progress.clone(),
        limit,
        opts.hold_expiry,
    ));
    let guard = tokio::spawn(standbys::guard_task(
        ends.target.clone(),
        progress.clone(),
        limit,
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
        schemas: row.schemas.clone(),
        sessions: opts.sessions.clamp(1, apply::MAX_SESSIONS),
        serial_until: Default::default(),
        link_timeout: limit,
        hold_expiry: opts.hold_expiry,
        backends: Default::default(),
        walsender: Default::default(),
    };
    let mut reconnects = 0u64;
    let mut backoff = Duration::from_millis(500);
    let result = loop {
        let session_start = Instant::now();
        let give_up = forced(stop.clone(), force.clone(), opts.stop_grace);
        let outcome = tokio::select! {
            r = session::run(&ctx, &mut stop) => r,
            why = give_up => {
                break Err(Error::Abandoned { why, applied: progress.applied() });
            }
        };
        match outcome {
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
                    Error::Sql { source, .. } if conn::out_of_disk(source) => {
                        format!("{e}; waiting: {}", e.hint())
                    }
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
            Err(e) if e.retryable() => {
                // Stopping, and the session could not finish.
                break Err(Error::Abandoned {
                    why: e.to_string(),
                    applied: progress.applied(),
                });
            }
            Err(e) => break Err(e),
        }
    };
    // One last status row, then mark the applier as gone so status says so at once. (Not
    // after giving up: the link may be dead, and ending promptly was asked for.)
    let abandoned = matches!(result, Err(Error::Abandoned { .. }));
    if !abandoned {
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    status.abort();
    guard.abort();
    // An error that ends sync stays in the row, so status can say what happened (not a
    // stop that gave up: that is an operator's choice, and the next sync resumes).
    let fatal = match &result {
        Err(e) if !abandoned => Some(e.to_string()),
        _ => None,
    };
    let gone = async {
        if let Ok(c) = conn::connect(&ends.state).await {
            let _ = state::apply::gone(&c, run, fatal.as_deref()).await;
        }
    };
    // Bounded by the stop's grace too: a stop on a dead link must not wait here for it.
    let bound = if abandoned {
        Duration::from_secs(1)
    } else if *stop.borrow() {
        limit.min(opts.stop_grace)
    } else {
        limit
    };
    link::within(bound, gone).await;
    result?;
    Ok(Report {
        applied_lsn: progress.applied(),
        rows: progress.rows.load(std::sync::atomic::Ordering::Relaxed),
        reconnects,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Why a stop cannot wait any longer: resolves `stop_grace` after `stop` turns true, or
/// when `force` does, whichever comes first; never before a stop.
async fn forced(
    mut stop: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
    grace: Duration,
) -> String {
    if stop.wait_for(|s| *s).await.is_err() {
        // No one can ask for a stop any more.
        std::future::pending::<()>().await;
    }
    tokio::select! {
        _ = tokio::time::sleep(grace) => format!("the transaction at hand did not finish within {} s of the stop request", grace.as_secs_f64()),
        r = force.wait_for(|f| *f) => match r {
            Ok(_) => "a second stop request".into(),
            Err(_) => {
                tokio::time::sleep(grace).await;
                format!("the transaction at hand did not finish within {} s of the stop request", grace.as_secs_f64())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_gives_up_after_the_grace_or_a_second_request() {
        let (stop_tx, stop) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        let grace = Duration::from_millis(300);
        let waiting = tokio::time::timeout(grace * 2, forced(stop.clone(), force.clone(), grace));
        assert!(waiting.await.is_err(), "nothing before a stop");
        stop_tx.send(true).unwrap();
        let t = Instant::now();
        let why = forced(stop.clone(), force.clone(), grace).await;
        assert!(t.elapsed() >= grace, "{why}");
        assert!(why.contains("did not finish within 0.3 s"), "{why}");
        force_tx.send(true).unwrap();
        let t = Instant::now();
        let why = forced(stop, force, grace).await;
        assert!(t.elapsed() < grace, "{why}");
        assert_eq!(why, "a second stop request");
    }
}
