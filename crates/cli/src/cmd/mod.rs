//! One module per command; each returns an [`Outcome`] or [`Trouble`].

mod abort;
mod copy;
mod cutover;
mod peek;
mod plan;
mod status;
mod sync;
mod verify;

use crate::args::Command;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(command: Command, settings: Settings) -> Result<Outcome, Trouble> {
    match command {
        Command::Plan(args) => plan::run(args, &settings).await,
        Command::Copy(args) => copy::run(args, &settings).await,
        Command::Abort(args) => abort::run(args, &settings).await,
        Command::Cutover(args) => cutover::run(args, &settings, false).await,
        Command::Rollback(args) => cutover::run(args, &settings, true).await,
        Command::Peek(args) => peek::run(args, &settings).await,
        Command::Sync(args) => sync::run(args, &settings).await,
        Command::Status(args) => status::run(args, &settings).await,
        Command::Verify(args) => verify::run(args, &settings).await,
    }
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
