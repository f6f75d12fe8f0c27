//! One flip, cutover or rollback: guardrails, the recorded flip and its watchdog, the steps
//! with their undo stack, and what follows RESUME.

use std::time::{Duration, Instant};

use conn::{ConnSpec, Host};
use futures_util::future::join_all;
use state::{ApplyStatus, Flip, Phase, Run, Side};

use crate::ctx::{open, Ctx};
use crate::dbfile::{self, Endpoint};
use crate::pooler::Admin;
use crate::step::{at, Step, StepResult};
use crate::undo::{undo_limit, Undo, UndoStack};
use crate::{
    drain, fence, guardrails, recover, reverse, unreplicated, watchdog, Direction, Error, Options,
    Recovery, Report,
};

pub(crate) async fn flip(
    dir: Direction,
    blue: &ConnSpec,
    green: &ConnSpec,
    opts: &Options,
) -> Result<Report, Error> {
    if opts.poolers.is_empty() {
        return Err(Error::Usage(
            "no pooler given: pass --pooler admin=…,db=…,file=… (or [[pooler]] in the config)"
                .into(),
        ));
    }
    // A flip whose process died (and its watchdog too) is finished or undone first.
    match recover(blue, green, opts, "the next flip", Duration::ZERO).await? {
        Recovery::Live { direction } => {
            return Err(Error::Guardrail(format!(
                "a {} of run {} is under way in another process (it holds the flip lock on green)",
                direction.as_str(),
                opts.run
            )))
        }
        Recovery::Nothing => {}
        r => tracing::warn!("{r}"),
    }
    let (mut cx, run) = open(dir, blue, green, opts).await?;
    let want = match dir {
        Direction::Cutover => Phase::Copied,
        Direction::Rollback => Phase::CutOver,
    };
    if run.phase != want {
        return Err(Error::Guardrail(format!(
            "run {} is in phase {}, not {}",
            opts.run,
            run.phase.as_str(),
            want.as_str()
        )));
    }
    // Until the PAUSE and after the commit point the steps have no deadline of their own:
    // a probe of each link fails the step at hand when a server stops answering.
    let links = cx.links.clone();
    cx.enter(Step::Guardrails).map_err(|(_, e)| e)?;
    links
        .guard(Step::Guardrails, guardrails::check(&mut cx))
        .await
        .map_err(|(_, e)| e)?;
    // From here on a dead coordinator would strand what it did: the flip is recorded (with
    // each databases file as it is now) under a lock this session holds, and a watchdog
    // finishes or undoes it should this process die.
    let mut files = Vec::new();
    for admin in &cx.admins {
        let text = std::fs::read_to_string(&admin.spec.file).map_err(|e| {
            Error::Guardrail(format!("databases file {}: {e}", admin.spec.file.display()))
        })?;
        files.push((admin.spec.file.display().to_string(), text));
    }
    let record = Flip {
        rollback: dir == Direction::Rollback,
        files,
        committed: false,
    };
    let begun = links
        .guard(Step::Guardrails, async {
            record
                .begin(&cx.state, &opts.run)
                .await
                .map_err(Error::from)
        })
        .await
        .map_err(|(_, e)| e)?;
    if !begun {
        return Err(Error::Guardrail(format!(
            "another cutover or rollback of run {} is under way",
            opts.run
        )));
    }
    cx.watchdog = Some(watchdog::Watchdog::start(blue, green, opts, cx.lock_holder()).await?);

    let mut undo = UndoStack::default();
    let steps = match cx.leave(Step::Guardrails) {
        Ok(()) => sequence(&mut cx, &mut undo).await,
        Err(e) => Err(e),
    };
    match steps {
        Ok(report) => {
            // Should this fail or this process die, the watchdog (or the next command) finishes
            // it from the record: the flip is past its commit point.
            let after_resume = |(_, e): (Step, Error)| Error::AfterResume(e.to_string());
            links
                .guard_green(Step::Resume, finish(&cx, &report))
                .await
                .map_err(after_resume)?;
            links
                .guard_green(Step::Resume, async {
                    Flip::end(&cx.state, &opts.run).await.map_err(Error::from)
                })
                .await
                .map_err(after_resume)?;
            cx.dismiss_watchdog().await;
            Ok(report)
        }
        Err((step, cause)) => {
            tracing::warn!(step = step.name(), error = %cause, "cutover step failed; putting everything back");
            let limit = undo_limit(cx.opts);
            // A session that went silent is given up and replaced first: the undo runs on
            // sessions that answer.
            let revived = cx.revive().await;
            // A commit mark that got no answer may have been written: marked undone again
            // (the silent session's backend is gone by now), or the flip is left to the
            // watchdog, which finishes or undoes it by what the record says.
            let record_sure = step != Step::CommitPoint
                || bound(limit, Flip::uncommit(&cx.state, &opts.run))
                    .await
                    .is_ok();
            let clean = if record_sure {
                undo.unwind(&cx).await
            } else {
                false
            };
            let ended = if clean && revived {
                bound(limit, Flip::end(&cx.state, &opts.run)).await
            } else {
                Err("an undo failed".to_string())
            };
            match ended {
                Ok(()) => cx.dismiss_watchdog().await,
                Err(e) => {
                    // A link died under the flip (its sessions are gone): the watchdog
                    // undoes everything again on fresh connections (each undo harmless
                    // where its step had not happened), as for a dead coordinator.
                    tracing::warn!(error = %e, "could not put everything back here; the watchdog does it again on fresh connections");
                    let _ = bound(limit, Flip::release(&cx.state, &opts.run)).await;
                    cx.hand_over_to_watchdog(HAND_OVER_LIMIT).await;
                }
            }
            let _ = bound(
                limit,
                state::audit(
                    &cx.state,
                    &opts.run,
                    "cutover-aborted",
                    None,
                    serde_json::json!({ "step": step.name(), "error": cause.to_string() }),
                ),
            )
            .await;
            Err(Error::Aborted {
                step,
                cause: Box::new(cause),
            })
        }
    }
}

/// `fut` within `limit`, its error as text.
async fn bound<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// A step inside the pause, bounded by `limit`: every statement it sends may meet a link
/// that went silent (packets dropped, no reset), where TCP notices nothing for minutes or,
/// when something on the path still acknowledges, never. The flip then fails at that step
/// and is put back on fresh sessions.
pub(crate) async fn within<T>(
    step: Step,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> StepResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => at(step, r),
        Err(_) => Err((
            step,
            Error::Timeout(format!(
                "{step} got no answer within {limit:?} (a server or pooler stopped answering while clients were paused)"
            )),
        )),
    }
}

/// How long a coordinator that handed its failed flip to the watchdog waits for it.
const HAND_OVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The steps from the guardrails to RESUME. Each pushes its undo once it has (or may have)
/// taken effect; an error before the commit point returns the step, and the caller unwinds.
async fn sequence(cx: &mut Ctx<'_>, undo: &mut UndoStack) -> StepResult<Report> {
    // Verify's watch trigger writes a row per statement: not on a primary. Not undone: a
    // verify after an unwound flip puts it back, and checks the tables in full meanwhile.
    let links = cx.links.clone();
    cx.enter(Step::Unwatch)?;
    let removed = links
        .guard(Step::Unwatch, async {
            state::changes::unwatch(&cx.new, &[])
                .await
                .map_err(Error::from)
        })
        .await?;
    if removed > 0 {
        tracing::info!(
            tables = removed,
            "verify's watch trigger removed from the new primary"
        );
    }
    cx.leave(Step::Unwatch)?;
    if cx.dir == Direction::Cutover {
        // Green takes the writes from RESUME on: a fence an earlier rollback left on it (or an
        // interrupted one) would turn every client write into an error.
        cx.enter(Step::UnfenceGreen)?;
        let lifted = links
            .guard(
                Step::UnfenceGreen,
                fence::lift(&cx.new, Some(&cx.state), &cx.opts.run, Side::Green),
            )
            .await?;
        if lifted {
            tracing::warn!("green was fenced read-only (left by a rollback); lifted");
        }
        cx.leave(Step::UnfenceGreen)?;
    }
    prepare(cx, undo).await?;

    // What the fence needs to ask the old primary is asked now, before the PAUSE: raising
    // it in the pause then costs clients one round trip to a far old primary, not two.
    cx.enter(Step::PrepareFence)?;
    undo.push(Undo::LiftFence);
    let fence_plan = links
        .guard(
            Step::PrepareFence,
            fence::prepare(&cx.old, &cx.state, &cx.opts.run, cx.side(true)),
        )
        .await?;
    cx.leave(Step::PrepareFence)?;

    // From the PAUSE to the commit point every step is bounded (see `within`): raising the
    // fence and closing the old primary each by --pause-timeout (closing waits for other
    // sessions to end), the drain by --drain-timeout plus --pause-timeout, the others by
    // --pause-timeout (the flip's pooler commands each have it already).
    let pt = cx.opts.pause_timeout;
    // The fence goes up while PAUSE waits for the clients' transactions to end: it binds
    // only sessions that start later (and none start: the poolers hold their clients), so
    // the transactions under way finish as they would have, and its round trips to a far
    // old primary are not paid by paused clients.
    cx.enter(Step::Pause)?;
    let paused_at = Instant::now();
    // Lifted before clients resume, should the flip be undone.
    undo.forget(&Undo::LiftFence);
    undo.push(Undo::Resume((0..cx.admins.len()).collect()));
    undo.push(Undo::LiftFence);
    let raise = async {
        match fence_plan.raise(&cx.old).await? {
            Some(left) => Ok(left),
            // The grants changed since they were read: read them again.
            None => fence::raise(&cx.old, &cx.state, &cx.opts.run, cx.side(true)).await,
        }
    };
    let (paused, raised) = tokio::join!(pause_all(cx), within(Step::Fence, pt, raise));
    paused?;
    let unbound_roles = raised?;
    cx.leave(Step::Pause)?;

    // The applier is asked first to hold at the next drain message: closing the old primary
    // sends it in the same round trip, once no other session is left there.
    cx.enter(Step::Fence)?;
    within(Step::Fence, pt, drain::hold_next_message(cx, undo)).await?;
    let closed = within(Step::Fence, pt, fence::close(cx)).await?;
    cx.leave(Step::Fence)?;

    cx.enter(Step::Drain)?;
    let drain_limit = cx.opts.drain_timeout + pt;
    within(
        Step::Drain,
        drain_limit,
        drain::wait_held(cx, closed.mark, drain::IN_PAUSE),
    )
    .await?;
    let drained_at = closed.mark;
    cx.leave(Step::Drain)?;

    // The values were read as the old primary closed (no session left to move them).
    cx.enter(Step::FinalSequenceSync)?;
    within(
        Step::FinalSequenceSync,
        pt,
        unreplicated::set_sequences(&cx.new, &closed.sequences),
    )
    .await?;
    cx.leave(Step::FinalSequenceSync)?;

    if cx.dir == Direction::Rollback {
        // Blue was fenced read-only at cutover; it takes writes again from RESUME on.
        cx.enter(Step::Unfence)?;
        undo.push(Undo::FenceNew);
        within(
            Step::Unfence,
            pt,
            fence::lift(&cx.new, Some(&cx.state), &cx.opts.run, Side::Blue),
        )
        .await?;
        cx.leave(Step::Unfence)?;
    }

    point_poolers_at_new(cx, undo).await?;

    // The commit point: should this process die from here on, the flip is finished, not
    // undone (clients may already write on the new primary). Nothing after it is undone.
    cx.enter(Step::CommitPoint)?;
    within(Step::CommitPoint, pt, async {
        Flip::commit(&cx.state, &cx.opts.run)
            .await
            .map_err(Error::from)
    })
    .await?;
    cx.timed(Step::CommitPoint);

    let results = join_all(cx.admins.iter().map(|a| a.resume(cx.opts.pause_timeout))).await;
    let paused = paused_at.elapsed();
    let mut resumed = Vec::new();
    for r in results {
        // Traffic already points at the new primary: a pooler that will not resume is an
        // operator's emergency, not a reason to flip back.
        match r {
            Ok(r) => resumed.push(r),
            Err(e) => tracing::error!(error = %e, "RESUME failed; resume that pooler by hand"),
        }
    }
    cx.timed(Step::Resume);
    join_all(
        resumed
            .into_iter()
            .map(|r| r.restore(cx.opts.pause_timeout)),
    )
    .await;
    Ok(Report {
        paused,
        steps: cx.steps.clone(),
        drained_at,
        other_sessions: closed.ended,
        unbound_roles,
    })
}

/// What comes before the pause (a rehearsal's too): rollback armed (a cutover's), sequences
/// and materialized views brought to the new primary, the pre-drain rounds.
pub(crate) async fn prepare(cx: &mut Ctx<'_>, undo: &mut UndoStack) -> StepResult<()> {
    let links = cx.links.clone();
    if cx.dir == Direction::Cutover {
        cx.enter(Step::ArmRollback)?;
        undo.push(Undo::DisarmReverse);
        links.guard(Step::ArmRollback, reverse::arm(cx)).await?;
        cx.leave(Step::ArmRollback)?;
    }
    cx.enter(Step::PreSyncSequences)?;
    links
        .guard(Step::PreSyncSequences, unreplicated::sync_sequences(cx))
        .await?;
    cx.leave(Step::PreSyncSequences)?;

    // Materialized views are not replicated: the new primary's would show what they held
    // when copied (or at the last flip) from the first second clients read them there.
    cx.enter(Step::RefreshMaterializedViews)?;
    links
        .guard(
            Step::RefreshMaterializedViews,
            unreplicated::refresh_matviews(cx),
        )
        .await?;
    cx.leave(Step::RefreshMaterializedViews)?;

    // The applier catches up while clients still write, so the drain inside the pause has
    // only the last moments to apply (not however far behind the applier happens to be).
    cx.enter(Step::PreDrain)?;
    links
        .guard(Step::PreDrain, drain::pre_drain(cx, undo))
        .await?;
    cx.leave(Step::PreDrain)
}

/// PAUSE on every pooler at once; returns when the pause began. Counted as paused either
/// way: a PAUSE that timed out may still take effect.
pub(crate) async fn pause(cx: &mut Ctx<'_>, undo: &mut UndoStack) -> StepResult<Instant> {
    cx.enter(Step::Pause)?;
    let paused_at = Instant::now();
    undo.push(Undo::Resume((0..cx.admins.len()).collect()));
    pause_all(cx).await?;
    cx.leave(Step::Pause)?;
    Ok(paused_at)
}

/// PAUSE on every pooler at once, each within --pause-timeout.
async fn pause_all(cx: &Ctx<'_>) -> StepResult<()> {
    let results = join_all(cx.admins.iter().map(|a| a.pause(cx.opts.pause_timeout))).await;
    for r in results {
        at(Step::Pause, r)?;
    }
    Ok(())
}

/// Points every pooler's databases file at the new primary and RELOADs it (checked); returns
/// the files as they were.
pub(crate) async fn point_poolers_at_new(
    cx: &mut Ctx<'_>,
    undo: &mut UndoStack,
) -> StepResult<Vec<String>> {
    cx.enter(Step::Flip)?;
    let mut originals = Vec::new();
    for i in 0..cx.admins.len() {
        let text = at(Step::Flip, point_at_new(cx, i).await)?;
        undo.push(Undo::RestoreFile {
            pooler: i,
            text: text.clone(),
        });
        originals.push(text);
        at(Step::Flip, check_points_at_new(cx, i).await)?;
    }
    cx.leave(Step::Flip)?;
    Ok(originals)
}

/// Rewrites pooler `i`'s databases file to the new primary and RELOADs it; returns the file
/// as it was.
pub(crate) async fn point_at_new(cx: &Ctx<'_>, i: usize) -> Result<String, Error> {
    let admin = &cx.admins[i];
    let to = endpoint_for(cx, admin);
    let text = std::fs::read_to_string(&admin.spec.file)
        .map_err(|e| Error::Pooler(format!("{}: {e}", admin.spec.file.display())))?;
    let new_text = dbfile::rewrite(&text, &admin.spec.db, &to)?;
    dbfile::write_atomically(&admin.spec.file, &new_text)?;
    Ok(text)
}

/// RELOADs pooler `i` and checks that it now points its database at the new primary.
pub(crate) async fn check_points_at_new(cx: &Ctx<'_>, i: usize) -> Result<(), Error> {
    let admin = &cx.admins[i];
    let to = endpoint_for(cx, admin);
    admin.reload(cx.opts.pause_timeout).await?;
    let now = admin.target_of_db(cx.opts.pause_timeout).await?;
    if now.as_ref().map(|e| (&e.host, e.port)) != Some((&to.host, to.port)) {
        return Err(Error::Pooler(format!(
            "pooler {} still points {} at {} after RELOAD",
            admin.name(),
            admin.spec.db,
            now.map(|e| e.to_string())
                .unwrap_or_else(|| "nothing".into())
        )));
    }
    Ok(())
}

/// After RESUME: the old direction's applier stops and the run moves on. After a rollback
/// the reverse stream is retired (its slot on green would otherwise hold WAL forever) and the
/// run is back in `copied`: forward sync may follow blue again.
pub(crate) async fn finish(cx: &Ctx<'_>, report: &Report) -> Result<(), Error> {
    state::request_stop(&cx.state, &cx.apply_run).await?;
    state::release(&cx.state, &cx.apply_run).await?;
    let phase = match cx.dir {
        Direction::Cutover => Phase::CutOver,
        Direction::Rollback => Phase::Copied,
    };
    Run::set_phase(&cx.state, &cx.opts.run, phase).await?;
    // Green's TimescaleDB policies (compression, retention, refresh) were paused so green
    // kept every row blue has; they run while green takes the traffic, and pause again when
    // it gives it back.
    let green = match cx.dir {
        Direction::Cutover => &cx.new,
        Direction::Rollback => &cx.old,
    };
    let policies =
        state::policies::set_paused(green, &cx.schemas, cx.dir == Direction::Rollback).await?;
    let step = match cx.dir {
        Direction::Cutover => "cutover",
        Direction::Rollback => "rollback",
    };
    state::audit(
        &cx.state,
        &cx.opts.run,
        step,
        Some(report.paused.as_secs_f64()),
        serde_json::json!({
            "paused_ms": report.paused.as_secs_f64() * 1000.0,
            "drained_at": report.drained_at,
            "timescaledb_policies_changed": policies,
            "steps": report.steps.iter().map(|(s, t)| serde_json::json!({"step": s, "seconds": t})).collect::<Vec<_>>(),
        }),
    )
    .await?;
    if cx.dir == Direction::Rollback {
        // Green was fenced for the flip; clients now reach blue. Back to the state before the
        // cutover: forward sync keeps its state on green and writes there, and the next
        // cutover sends clients to it.
        fence::lift(&cx.old, Some(&cx.state), &cx.opts.run, Side::Green).await?;
        // Give the reverse applier a moment to see its stop request, then remove its slot.
        for _ in 0..50 {
            if !ApplyStatus::get(&cx.state, &cx.apply_run)
                .await?
                .is_some_and(|a| a.running())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reverse::disarm(cx).await?;
    }
    Ok(())
}

fn endpoint_for(cx: &Ctx<'_>, admin: &Admin) -> Endpoint {
    let given = match cx.dir {
        Direction::Cutover => admin.spec.green.clone(),
        Direction::Rollback => admin.spec.blue.clone(),
    };
    let spec = cx.new_spec;
    let mut e = given.unwrap_or_else(|| Endpoint {
        host: match (&spec.hostaddr, &spec.host) {
            (Some(a), _) => a.clone(),
            (None, Host::Tcp(h)) => h.clone(),
            (None, Host::Unix(d)) => d.display().to_string(),
        },
        port: spec.port,
        dbname: String::new(),
    });
    if e.dbname.is_empty() {
        e.dbname = spec.dbname.clone();
    }
    e
}
