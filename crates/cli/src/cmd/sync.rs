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
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("stop requested: finishing the transaction at hand");
        let _ = stop_tx.send(true);
    });
    let ends = if args.reverse {
        // Green streams back to blue; the state stays on green.
        sync::Endpoints {
            source: target.clone(),
            target: source.clone(),
            state: target.clone(),
        }
    } else {
        sync::Endpoints::forward(&source, &target)
    };
    let opts = SyncOptions {
        run: if args.reverse {
            cutover::reverse_run(&args.run)
        } else {
            args.run.clone()
        },
        limits: GroupLimits {
            rows: args.group_rows.max(1),
            age: Duration::from_millis(args.group_ms.max(1)),
            ..GroupLimits::default()
        },
        // Each direction skips what the other wrote: forward sync after a rollback must not
        // send green's writes (which reverse sync already put on blue) back to green.
        sessions: usize::from(args.apply_sessions),
        skip_origin: Some(if args.reverse {
            sync::origin_name(&args.run)
        } else {
            sync::origin_name(&cutover::reverse_run(&args.run))
        }),
    };
    let report = sync::sync(&ends, &opts, stop_rx)
        .await
        .map_err(Trouble::sync)?;
    println!(
        "sync stopped: applied up to {} ({} rows in {:.1} s, {} reconnects)",
        report.applied_lsn, report.rows, report.seconds, report.reconnects
    );
    Ok(Outcome::Clean)
}
