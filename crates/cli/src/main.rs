//! `bluegreen`: moves a live PostgreSQL database to another server and flips PgBouncer.
//! Exit codes follow diff(1) for every command: 0 clean, 1 findings, 2 trouble.

mod cmd;
mod proctitle;
mod render;

use bluegreen::{args, config, logging, metrics, trouble};

use std::process::ExitCode;

use crate::trouble::Trouble;

/// What a command concluded, as diff(1) would say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report (exit 0).
    Clean,
    /// Blockers or differences found (exit 1).
    Findings,
}

fn main() -> ExitCode {
    let (cli, settings) = match config::load() {
        Ok(loaded) => loaded,
        Err(t) => return t.report(),
    };
    logging::init(settings.log_format);
    let mut secrets = settings.secrets();
    // Pooler admin passwords given on the command line, too.
    let poolers = match &cli.command {
        args::Command::Cutover(f) | args::Command::Rollback(f) => f.poolers.as_slice(),
        args::Command::Run(r) => r.poolers.as_slice(),
        _ => &[],
    };
    secrets.extend(poolers.iter().filter_map(|p| {
        let spec: cutover::PoolerSpec = p.parse().ok()?;
        conn::ConnSpec::parse(&spec.admin).ok()?.password
    }));
    proctitle::scrub(&secrets);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Trouble::new(format!("cannot start the runtime: {e}"), "").report(),
    };
    match runtime.block_on(cmd::run(cli.command, settings)) {
        Ok(Outcome::Clean) => ExitCode::from(0),
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(t) => t.report(),
    }
}
