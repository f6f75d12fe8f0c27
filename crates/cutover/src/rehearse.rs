//! A rehearsed cutover for `run --dry-run`: every step that touches no production traffic.
//! The guardrails, rollback armed and disarmed on green, sequences and materialized views
//! brought to green, the pre-drain rounds and a drain (sync held exactly at blue's position,
//! then released). Blue is never fenced. With staging poolers (never production's), a real
//! flip there: PAUSE, their databases files pointed at green, RELOAD, RESUME, measured as
//! the client pause; then flipped back the same way.

use std::time::Duration;

use conn::ConnSpec;
use futures_util::future::join_all;

use crate::ctx::open;
use crate::flip::{pause, point_poolers_at_new, prepare};
use crate::step::{at, Step, StepResult};
use crate::undo::{Undo, UndoStack};
use crate::{dbfile, drain, guardrails, reverse, Direction, Error, Options, Report};

/// Rehearses a cutover of `opts.run`; `opts.poolers` must be staging poolers, or none.
pub async fn rehearse(blue: &ConnSpec, green: &ConnSpec, opts: &Options) -> Result<Report, Error> {
    let (mut cx, _) = open(Direction::Cutover, blue, green, opts).await?;
    cx.enter(Step::Guardrails).map_err(|(_, e)| e)?;
    guardrails::check(&mut cx).await?;
    let mut undo = UndoStack::default();
    let steps = async {
        cx.leave(Step::Guardrails)?;
        steps(&mut cx, &mut undo).await
    }
    .await;
    match steps {
        Ok(report) => Ok(report),
        Err((step, cause)) => {
            tracing::warn!(step = step.name(), error = %cause, "rehearsal step failed; putting everything back");
            undo.unwind(&cx).await;
            Err(Error::Aborted {
                step,
                cause: Box::new(cause),
            })
        }
    }
}

async fn steps(cx: &mut crate::ctx::Ctx<'_>, undo: &mut UndoStack) -> StepResult<Report> {
    prepare(cx, undo).await?;

    // The drain as cutover takes it, without a pause or a fence: held, then released.
    cx.enter(Step::Drain)?;
    let drained_at = at(Step::Drain, drain::drain(cx, undo).await)?;
    at(
        Step::Drain,
        state::release(&cx.state, &cx.apply_run)
            .await
            .map_err(Error::from),
    )?;
    undo.forget(&Undo::ReleaseHold);
    cx.leave(Step::Drain)?;

    let mut paused = Duration::ZERO;
    if !cx.admins.is_empty() {
        let limit = cx.opts.pause_timeout;
        let paused_at = pause(cx, undo).await?;
        let originals = point_poolers_at_new(cx, undo).await?;
        cx.enter(Step::Resume)?;
        let mut resumed = Vec::new();
        for r in join_all(cx.admins.iter().map(|a| a.resume(limit))).await {
            resumed.push(at(Step::Resume, r)?);
        }
        paused = paused_at.elapsed();
        join_all(resumed.into_iter().map(|r| r.restore(limit))).await;
        cx.leave(Step::Resume)?;

        // And back, the same way (the staging clients pause once more).
        cx.enter(Step::FlipBack)?;
        for r in join_all(cx.admins.iter().map(|a| a.pause(limit))).await {
            at(Step::FlipBack, r)?;
        }
        for (i, text) in originals.iter().enumerate() {
            let admin = &cx.admins[i];
            at(
                Step::FlipBack,
                dbfile::write_atomically(&admin.spec.file, text),
            )?;
            at(Step::FlipBack, admin.reload(limit).await)?;
        }
        let mut resumed = Vec::new();
        for r in join_all(cx.admins.iter().map(|a| a.resume(limit))).await {
            resumed.push(at(Step::FlipBack, r)?);
        }
        join_all(resumed.into_iter().map(|r| r.restore(limit))).await;
        cx.leave(Step::FlipBack)?;
    }

    cx.enter(Step::DisarmRollback)?;
    at(Step::DisarmRollback, reverse::disarm(cx).await)?;
    undo.forget(&Undo::DisarmReverse);
    cx.leave(Step::DisarmRollback)?;
    Ok(Report {
        paused,
        steps: cx.steps.clone(),
        drained_at,
        other_sessions: Vec::new(),
        unbound_roles: Vec::new(),
    })
}
