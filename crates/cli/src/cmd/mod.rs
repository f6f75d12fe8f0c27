//! One module per command; each returns an [`Outcome`] or [`Trouble`].

mod abort;
pub mod copy;
pub mod cutover;
mod peek;
mod plan;
pub mod report;
mod run;
mod status;
pub mod sync;
pub mod verify;

use crate::args::Command;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(command: Command, settings: Settings) -> Result<Outcome, Trouble> {
    // Every JSON log line of the command carries its run and stage.
    if let Some((run, stage)) = labels(&command) {
        crate::logging::set_run(&run, stage);
    }
    if let Some(e) = exporter(&command, &settings)? {
        crate::metrics::start(e).await?;
    }
    dispatch(command, settings).await
}

/// The run and stage a command works on, for log fields.
fn labels(command: &Command) -> Option<(String, &'static str)> {
    Some(match command {
        Command::Plan(a) => (a.run.clone(), "plan"),
        Command::Copy(a) => (a.run.clone(), "copy"),
        Command::Abort(a) => (a.run.clone(), "abort"),
        Command::Cutover(a) => (a.run.clone(), "cutover"),
        Command::Rollback(a) => (a.run.clone(), "rollback"),
        Command::Peek(a) => (a.run.clone(), "peek"),
        Command::Sync(a) => (a.run.clone(), "sync"),
        Command::Status(a) => (a.run.clone(), "status"),
        Command::Report(a) => (a.run.clone(), "report"),
        Command::Verify(a) => (a.run.clone(), "verify"),
        Command::Run(a) => (a.run.clone(), "run"),
        Command::CutoverWatchdog => return None,
    })
}

/// `--metrics-addr` of the commands that take it: what the exporter needs.
fn exporter(
    command: &Command,
    settings: &Settings,
) -> Result<Option<crate::metrics::Exporter>, Trouble> {
    use crate::metrics::Stage;
    let (m, run, stage, limit) = match command {
        Command::Copy(a) => (&a.metrics, a.run.clone(), Stage::Copy, a.link_timeout),
        Command::Sync(a) => (&a.metrics, a.run.clone(), Stage::Sync, a.link_timeout),
        Command::Verify(a) => (&a.metrics, a.run.clone(), Stage::Verify, a.link_timeout),
        Command::Cutover(a) => (&a.metrics, a.run.clone(), Stage::Cutover, LIMIT),
        Command::Rollback(a) => (&a.metrics, a.run.clone(), Stage::Rollback, LIMIT),
        // A run is ready as its sync is: streaming, no error, lag within --max-lag.
        Command::Run(a) => (&a.metrics, a.run.clone(), Stage::Sync, a.link_timeout),
        _ => return Ok(None),
    };
    let Some(addr) = m.metrics_addr.clone() else {
        return Ok(None);
    };
    let target = settings.spec("target")?;
    let (mut run, mut applied_to, mut max_lag) = (run, target.clone(), 0.0);
    if let Command::Run(a) = command {
        max_lag = a.max_lag;
    }
    if let Command::Sync(a) = command {
        max_lag = a.max_lag;
        if a.reverse {
            // Reverse sync applies to blue; its state stays on green.
            run = ::cutover::reverse_run(&run);
            applied_to = settings.spec("source")?;
        }
    }
    Ok(Some(crate::metrics::Exporter {
        addr,
        run,
        stage,
        max_lag: std::time::Duration::try_from_secs_f64(max_lag).unwrap_or_default(),
        target,
        applied_to,
        link_timeout: limit,
    }))
}

/// How long the metrics poller waits on a server, where the command has no --link-timeout.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn dispatch(command: Command, settings: Settings) -> Result<Outcome, Trouble> {
    match command {
        Command::Plan(args) => plan::run(args, &settings).await,
        Command::Copy(args) => {
            let limit = args.link_timeout;
            watched(&settings, limit, copy::run(args, &settings)).await
        }
        Command::Abort(args) => abort::run(args, &settings).await,
        Command::Cutover(args) => cutover::run(args, &settings, false).await,
        Command::Rollback(args) => cutover::run(args, &settings, true).await,
        Command::Peek(args) => peek::run(args, &settings).await,
        Command::Sync(args) => sync::run(args, &settings).await,
        Command::Status(args) => status::run(args, &settings).await,
        Command::Report(args) => report::run(args, &settings).await,
        Command::Run(args) => run::run(args, &settings).await,
        Command::Verify(args) => {
            let limit = args.link_timeout;
            watched(&settings, limit, verify::run(args, &settings)).await
        }
        Command::CutoverWatchdog => ::cutover::watchdog::serve()
            .await
            .map(|()| Outcome::Clean)
            .map_err(Trouble::cutover),
    }
}

/// Runs `work` while probing both servers (see [`conn::watch_link`]): a server that gives
/// no answer within `limit` ends it with trouble naming the side, rather than a wait on a
/// dead socket with no end.
async fn watched(
    settings: &Settings,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = Result<Outcome, Trouble>>,
) -> Result<Outcome, Trouble> {
    let (source, target) = (settings.spec("source")?, settings.spec("target")?);
    let side = tokio::select! {
        r = work => return r,
        _ = conn::watch_link(source, limit) => "source",
        _ = conn::watch_link(target, limit) => "target",
    };
    Err(Trouble::new(
        format!(
            "{side}: no answer within {} s (--link-timeout): the link looks dead",
            limit.as_secs_f64()
        ),
        "check the network path to that server (firewall, NAT or load balancer timeouts), then run the command again: copy resumes where it stopped, verify starts over",
    ))
}

/// Connects to both sides at once; trouble names the side that failed.
pub async fn connect_both(
    settings: &Settings,
) -> Result<
    (
        (conn::ConnSpec, tokio_postgres::Client),
        (conn::ConnSpec, tokio_postgres::Client),
    ),
    Trouble,
> {
    let source = settings.spec("source")?;
    let target = settings.spec("target")?;
    let (s, t) = tokio::join!(conn::connect(&source), conn::connect(&target));
    let s = s.map_err(|e| Trouble::conn("source", e))?;
    let t = t.map_err(|e| Trouble::conn("target", e))?;
    Ok(((source, s), (target, t)))
}

/// The `--profile` file's text, read before anything connects.
pub fn read_profile(
    path: Option<&std::path::Path>,
) -> Result<Option<catalog::ProfileText>, Trouble> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Trouble::new(
            format!("cannot read profile {}: {e}", path.display()),
            "check the --profile path (a TOML file; fixtures/ms5-profile.toml is an example)",
        )
    })?;
    Ok(Some(catalog::ProfileText {
        name: path.display().to_string(),
        text,
    }))
}
