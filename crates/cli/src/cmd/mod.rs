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
