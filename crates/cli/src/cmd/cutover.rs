//! `bluegreen cutover` and `bluegreen rollback`: flip every pooler, report the pause.

use std::time::Duration;

use crate::args::FlipArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: FlipArgs, settings: &Settings, back: bool) -> Result<Outcome, Trouble> {
    let blue = settings.spec("source")?;
    let green = settings.spec("target")?;
    let poolers = poolers(&args.poolers, settings)?;
    let secs = |v: f64, flag: &str| {
        if v.is_finite() && v >= 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(Trouble::new(
                format!("--{flag} must be a number of seconds ≥ 0"),
                "e.g. --max-lag 5",
            ))
        }
    };
    let opts = cutover::Options {
        run: args.run.clone(),
        poolers,
        max_lag: secs(args.max_lag, "max-lag")?,
        verify_max_age: if args.no_verify_check {
            None
        } else {
            Some(secs(args.verify_max_age, "verify-max-age")?)
        },
        max_xact_age: secs(args.max_xact_age, "max-xact-age")?,
        pause_timeout: secs(args.pause_timeout, "pause-timeout")?,
        drain_timeout: secs(args.drain_timeout, "drain-timeout")?,
        link_timeout: args.link_timeout,
    };
    let report = if back {
        cutover::rollback(&blue, &green, &opts).await
    } else {
        cutover::cutover(&blue, &green, &opts).await
    }
    .map_err(|e| {
        if let Some(m) = crate::metrics::global() {
            m.cutover_phase.set(-1);
        }
        Trouble::cutover(e)
    })?;
    if let Some(m) = crate::metrics::global() {
        m.cutover_pause_seconds.set(report.paused.as_secs_f64());
    }
    print_report(&report, back);
    Ok(Outcome::Clean)
}

/// `--pooler` flags, or the config's `[[pooler]]` tables when none is given.
pub fn poolers(flags: &[String], settings: &Settings) -> Result<Vec<cutover::PoolerSpec>, Trouble> {
    let specs = if flags.is_empty() {
        &settings.poolers
    } else {
        flags
    };
    specs
        .iter()
        .map(|s| s.parse::<cutover::PoolerSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Trouble::cutover)
}

/// What a flip prints: where clients go, the pause, each step, sessions ended, roles the
/// fence cannot bind, and what to run next.
pub fn print_report(report: &cutover::Report, back: bool) {
    let (verb, to) = if back {
        ("rolled back", "blue")
    } else {
        ("cut over", "green")
    };
    println!(
        "{verb}: clients now reach {to}; paused {:.0} ms; caught up to {}",
        report.paused.as_secs_f64() * 1000.0,
        report.drained_at
    );
    for (step, s) in &report.steps {
        println!("  {step:<22} {:>8.1} ms", s * 1000.0);
    }
    if !report.other_sessions.is_empty() {
        println!("sessions on the old primary not from bluegreen, ended after the fence:");
        for s in &report.other_sessions {
            println!("  {s}");
        }
    }
    if !report.unbound_roles.is_empty() {
        println!(
            "{} stays fenced read-only with CONNECT revoked, but these roles can still connect to it (no grant binds them): {}",
            if back { "green" } else { "blue" },
            report.unbound_roles.join(", ")
        );
    }
    if back {
        println!("next: run bluegreen sync to follow blue again (it skips what reverse sync wrote), and cut over when ready");
    } else {
        println!("next: run bluegreen sync --reverse to carry green's writes to blue, so rollback stays possible");
    }
}
