//! Finishing a flip whose process died: its watchdog does this within seconds of the death,
//! and the next `bluegreen cutover`, `rollback` or `abort` does it if the watchdog died too.
//!
//! A flip is recorded on green ([`state::Flip`]) before it touches anything, with each
//! databases file as it was, under a lock its session holds. Before its commit point (the
//! files point at the new primary, the final RESUME is on its way) it is undone like a failed
//! step would be, every step of it (each is harmless where its step had not happened): files
//! back and RELOAD, the new primary fenced again after a rollback, the hold released, the old
//! primary's fence lifted, every pooler resumed, the reverse slot removed. After the commit
//! point it is finished: every pooler resumed, then what a flip does after RESUME.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use state::{Flip, Found};

use crate::ctx::open;
use crate::flip::finish;
use crate::pooler::Admin;
use crate::undo::{Undo, UndoStack};
use crate::{connect, dbfile, Direction, Error, Options, Report};

/// What a recovery found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No flip was under way.
    Nothing,
    /// A flip is under way and its process is alive.
    Live { direction: Direction },
    /// A dead flip was undone: traffic is on the primary it was leaving.
    Undone(Direction),
    /// A dead flip that had passed its commit point was finished.
    Finished(Direction),
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Cutover => "cutover",
            Direction::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Nothing => write!(f, "no flip was under way"),
            Recovery::Live { direction } => {
                write!(
                    f,
                    "a {} is under way in another process",
                    direction.as_str()
                )
            }
            Recovery::Undone(d) => write!(
                f,
                "a {} whose process died mid-flip was undone: traffic stays where it was",
                d.as_str()
            ),
            Recovery::Finished(d) => write!(
                f,
                "a {} whose process died after its commit point was finished",
                d.as_str()
            ),
        }
    }
}

/// Finishes or undoes the run's flip if its process is gone, waiting up to `wait` for a
/// live one to go (the watchdog knows its coordinator is dead; its session may take a
/// moment to end). `by` names who recovers, for the audit log.
pub async fn recover(
    blue: &ConnSpec,
    green: &ConnSpec,
    opts: &Options,
    by: &'static str,
    wait: Duration,
) -> Result<Recovery, Error> {
    // This session holds the dead flip's lock until the recovery is over.
    let lock = connect(green, "green").await?;
    // A rollback that died after fencing green left it read-only for new sessions, this one
    // included: it removes the flip record at the end.
    lock.batch_execute("SET default_transaction_read_only = off")
        .await
        .map_err(crate::error::sql("green", "session settings"))?;
    if !state::exists(&lock).await? || !state::flips::recorded(&lock).await? {
        return Ok(Recovery::Nothing);
    }
    let started = Instant::now();
    let flip = loop {
        match Flip::find(&lock, &opts.run).await? {
            Found::None => return Ok(Recovery::Nothing),
            Found::Dead(flip) => break flip,
            Found::Live { rollback } if started.elapsed() >= wait => {
                return Ok(Recovery::Live {
                    direction: direction(rollback),
                })
            }
            Found::Live { .. } => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let dir = direction(flip.rollback);
    tracing::warn!(
        run = opts.run,
        direction = dir.as_str(),
        committed = flip.committed,
        by,
        "a flip's process died mid-way; {}",
        if flip.committed {
            "finishing it"
        } else {
            "undoing it"
        }
    );
    let (mut cx, _) = open(dir, blue, green, opts).await?;
    for spec in &opts.poolers {
        cx.admins
            .push(Admin::connect(spec, opts.pause_timeout).await?);
    }
    let outcome = if flip.committed {
        for admin in &cx.admins {
            match admin.resume(opts.pause_timeout).await {
                Ok(r) => r.restore(opts.pause_timeout).await,
                Err(e) => tracing::error!(error = %e, "RESUME failed: resume that pooler by hand"),
            }
        }
        let report = Report {
            paused: Duration::ZERO,
            steps: vec![(format!("finished by {by}"), 0.0)],
            drained_at: lsn::Lsn::ZERO,
            other_sessions: Vec::new(),
            unbound_roles: Vec::new(),
        };
        finish(&cx, &report).await?;
        Recovery::Finished(dir)
    } else {
        let mut undo = UndoStack::everything(dir, cx.admins.len());
        for (path, text) in flip.files {
            match cx
                .admins
                .iter()
                .position(|a| a.spec.file == Path::new(&path))
            {
                Some(pooler) => undo.push(Undo::RestoreFile { pooler, text }),
                None => {
                    tracing::error!(file = path, "no --pooler given for this databases file: written back as it was before the flip; RELOAD and RESUME that pooler by hand");
                    if let Err(e) = dbfile::write_atomically(Path::new(&path), &text) {
                        tracing::error!(error = %e, "could not restore the databases file");
                    }
                }
            }
        }
        undo.unwind(&cx).await;
        state::audit(
            &cx.state,
            &opts.run,
            "cutover-aborted",
            None,
            serde_json::json!({ "by": by, "error": "the flip's process died mid-way" }),
        )
        .await?;
        Recovery::Undone(dir)
    };
    Flip::end(&lock, &opts.run).await?;
    Ok(outcome)
}

fn direction(rollback: bool) -> Direction {
    if rollback {
        Direction::Rollback
    } else {
        Direction::Cutover
    }
}

/// What `bluegreen abort` put right before removing the run.
#[derive(Debug, Default)]
pub struct BeforeAbort {
    pub recovery: Option<Recovery>,
    /// Fences lifted (CONNECT given back, read-only reset).
    pub lifted: Vec<state::Side>,
    /// Fences that stay, each with the statements that lift it by hand (the record of what
    /// was revoked goes with the run's state).
    pub kept: Vec<(state::Side, Vec<String>)>,
}

/// For `bluegreen abort` given the target: a flip whose process died is put right first
/// (that needs both servers and the poolers; refused otherwise, and refused while a flip is
/// alive), then every fence the run raised is lifted, except blue's after a completed
/// cutover (clients are on green: blue must stay closed to them), whose lifting statements
/// are returned instead.
pub async fn before_abort(
    run: &str,
    blue: Option<&ConnSpec>,
    green: &ConnSpec,
    poolers: Vec<crate::PoolerSpec>,
    pause_timeout: Duration,
) -> Result<BeforeAbort, Error> {
    use state::{FenceRecord, Phase, Run, Side};
    let mut out = BeforeAbort::default();
    {
        let c = connect(green, "green").await?;
        if !state::exists(&c).await? || !state::flips::recorded(&c).await? {
            return Ok(out);
        }
        match Flip::find(&c, run).await? {
            Found::None => {}
            Found::Live { rollback } => {
                return Err(Error::FlipUnderWay(format!(
                    "a {} of run {run} is under way in another process",
                    direction(rollback).as_str()
                )))
            }
            Found::Dead(flip) if blue.is_none() || poolers.is_empty() => {
                return Err(Error::FlipInDoubt(format!(
                    "a {} of run {run} died mid-flip and is not put right yet (poolers may be paused, a server fenced)",
                    direction(flip.rollback).as_str()
                )))
            }
            // This session's lock goes with it; the recovery below takes it again.
            Found::Dead(_) => {}
        }
    }
    if let Some(blue) = blue.filter(|_| !poolers.is_empty()) {
        let opts = Options {
            run: run.to_string(),
            poolers,
            pause_timeout,
            ..Options::default()
        };
        let r = recover(blue, green, &opts, "abort", Duration::from_secs(5)).await?;
        if r != Recovery::Nothing {
            out.recovery = Some(r);
        }
    }
    let state = connect(green, "green").await?;
    let phase = Run::get(&state, run).await?.map(|r| r.phase);
    for side in [Side::Blue, Side::Green] {
        let Some(record) = FenceRecord::get(&state, run, side).await? else {
            continue;
        };
        let server = match side {
            Side::Blue => blue,
            Side::Green => Some(green),
        };
        match server {
            Some(spec) if !(side == Side::Blue && phase == Some(Phase::CutOver)) => {
                let c = connect(spec, side.as_str()).await?;
                crate::fence::lift(&c, Some(&state), run, side).await?;
                out.lifted.push(side);
            }
            _ => out
                .kept
                .push((side, crate::fence::lift_statements(&record))),
        }
    }
    Ok(out)
}
