//! `bluegreen sync`: follow the source until SIGINT/SIGTERM or a requested stop.

use std::time::Duration;

use sync::{GroupLimits, SyncOptions};

use crate::args::SyncArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: SyncArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let source = settings.spec("source")?;
    let target = settings.spec("target")?;
    copy::names::validate_run(&args.run).map_err(Trouble::copy)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (force_tx, force_rx) = tokio::sync::watch::channel(false);
    let grace = args.stop_grace;
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        for n in 0..2 {
            tokio::select! {
                _ = next_signal(&mut int) => {}
                _ = next_signal(&mut term) => {}
            }
            if n == 0 {
                tracing::info!(
                    "stop requested: finishing the transaction at hand (a second SIGINT/SIGTERM, or {} s, ends without it)",
                    grace.as_secs_f64()
                );
                let _ = stop_tx.send(true);
            } else {
                tracing::warn!("second stop request: ending without the transaction at hand");
                let _ = force_tx.send(true);
            }
        }
        // Both senders live on, so a dropped one is never taken for a request.
        std::future::pending::<()>().await;
        drop((stop_tx, force_tx));
    });
    let (ends, opts) = options(
        &source,
        &target,
        &args.run,
        args.reverse,
        Tuning {
            group_rows: args.group_rows,
            group_ms: args.group_ms,
            sessions: usize::from(args.apply_sessions),
            link_timeout: args.link_timeout,
            stop_grace: args.stop_grace,
            hold_expiry: args.hold_expiry,
        },
    );
    let report = sync::sync(&ends, &opts, stop_rx, force_rx)
        .await
        .map_err(|e| {
            if let Some(m) = crate::metrics::global() {
                m.errors.inc();
            }
            Trouble::sync(e)
        })?;
    println!(
        "sync stopped: applied up to {} ({} rows in {:.1} s, {} reconnects)",
        report.applied_lsn, report.rows, report.seconds, report.reconnects
    );
    Ok(Outcome::Clean)
}

/// How a sync applies: sync's flags, shared with `run`.
pub struct Tuning {
    pub group_rows: u64,
    pub group_ms: u64,
    pub sessions: usize,
    pub link_timeout: Duration,
    pub stop_grace: Duration,
    pub hold_expiry: Duration,
}

impl Default for Tuning {
    /// The flags' defaults.
    fn default() -> Tuning {
        Tuning {
            group_rows: 50_000,
            group_ms: 500,
            sessions: 2,
            link_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            hold_expiry: Duration::from_secs(600),
        }
    }
}

/// Endpoints and options of the run's forward sync, or of its reverse sync after cutover
/// (green streams back to blue; the state stays on green).
pub fn options(
    source: &conn::ConnSpec,
    target: &conn::ConnSpec,
    run: &str,
    reverse: bool,
    t: Tuning,
) -> (sync::Endpoints, SyncOptions) {
    let ends = if reverse {
        sync::Endpoints {
            source: target.clone(),
            target: source.clone(),
            state: target.clone(),
        }
    } else {
        sync::Endpoints::forward(source, target)
    };
    let opts = SyncOptions {
        run: if reverse {
            cutover::reverse_run(run)
        } else {
            run.to_string()
        },
        limits: GroupLimits {
            rows: t.group_rows.max(1),
            age: Duration::from_millis(t.group_ms.max(1)),
            ..GroupLimits::default()
        },
        sessions: t.sessions,
        link_timeout: t.link_timeout,
        stop_grace: t.stop_grace,
        hold_expiry: t.hold_expiry,
        // Each direction skips what the other wrote: forward sync after a rollback must not
        // send green's writes (which reverse sync already put on blue) back to green.
        skip_origin: Some(if reverse {
            sync::origin_name(run)
        } else {
            sync::origin_name(&cutover::reverse_run(run))
        }),
    };
    (ends, opts)
}

/// The first SIGINT or SIGTERM.
pub async fn next_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    tokio::select! {
        _ = next_signal(&mut int) => {}
        _ = next_signal(&mut term) => {}
    }
}

/// The next delivery of a signal; never, when it could not be registered.
async fn next_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
