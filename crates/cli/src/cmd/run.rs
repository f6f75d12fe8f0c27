//! `bluegreen run`: the one-shot migration. Plan and copy (resumed where a copy stopped),
//! sync as a task of this process until it has caught up, verify at one LSN, cutover, then
//! reverse sync until SIGINT/SIGTERM. Where to start comes from the run's recorded phase, so
//! the same command continues a run that stopped; a report is saved after every stage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catalog::{Plan, PlanOptions};
use conn::ConnSpec;
use copy::{CopyOptions, Counters, TargetSchema};
use report::{Note, Report, RunKind, Sample, Stage, StageName, StageOutcome, TableCopy};
use state::{ApplyStatus, Phase, Run};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::{RunArgs, Until};
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::{render, Outcome};

/// How a stage ended, when it stops the run.
enum Stop {
    /// Blockers or differences: exit 1.
    Findings(String),
    /// Trouble: exit 2.
    Trouble(Trouble),
}

impl From<Trouble> for Stop {
    fn from(t: Trouble) -> Stop {
        Stop::Trouble(t)
    }
}

/// The run at hand: its report, saved after every stage, and what stops it.
struct Ctx {
    args: RunArgs,
    source: ConnSpec,
    target: ConnSpec,
    state: tokio_postgres::Client,
    report: Arc<Mutex<Report>>,
    dir: PathBuf,
    /// Turns true at the first SIGINT/SIGTERM.
    interrupted: watch::Receiver<bool>,
}

impl Ctx {
    fn begin(&self, name: StageName) {
        tracing::info!(stage = name.as_str(), "stage begins");
        if let Ok(mut r) = self.report.lock() {
            r.stages.push(Stage::start(name, report::now()));
        }
    }

    /// Ends the stage and saves the report (a killed run still leaves one).
    async fn end(&self, name: StageName, outcome: StageOutcome, detail: Option<String>) {
        let snapshot = match self.report.lock() {
            Ok(mut r) => {
                if let Some(s) = r.stage_mut(name) {
                    s.end(report::now(), outcome, detail);
                }
                r.clone()
            }
            Err(_) => return,
        };
        if let Err(e) = report::save(&self.state, &snapshot, &self.dir).await {
            tracing::warn!(error = %e, "could not save the run's report");
        }
    }

    fn interrupted(&self) -> bool {
        *self.interrupted.borrow()
    }
}

pub async fn run(args: RunArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    copy::names::validate_run(&args.run).map_err(Trouble::copy)?;
    let poolers = super::cutover::poolers(&args.poolers, settings)?;
    if poolers.is_empty() && !args.dry_run && args.until.is_none_or(|u| u >= Until::Cutover) {
        return Err(Trouble::new(
            "run needs the poolers to cut over",
            "pass --pooler admin=…,db=…,file=… (or [[pooler]] in the config), or stop earlier with --until verified",
        ));
    }
    let ((source, _), (target, mut state)) = super::connect_both(settings).await?;
    // The report lives in the state schema too: make sure it is there.
    state::migrate(&mut state)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| report::default_dir(&args.run));
    let report = Report::new(
        &args.run,
        if args.dry_run {
            RunKind::DryRun
        } else {
            RunKind::Run
        },
        source.redacted(),
        target.redacted(),
        report::now(),
    );
    let (stop_tx, interrupted) = watch::channel(false);
    tokio::spawn(async move {
        super::sync::next_stop_signal().await;
        tracing::info!(
            "stop requested: ending the stage at hand (the run resumes from its recorded phase)"
        );
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    });
    let cx = Ctx {
        args,
        source,
        target,
        state,
        report: Arc::new(Mutex::new(report)),
        dir,
        interrupted,
    };
    let mut result = stages(&cx, poolers).await;
    if cx.args.dry_run {
        // Whatever happened, a rehearsal leaves nothing on the source.
        let end = rehearsal_end(&cx).await;
        result = result.and(end);
    }
    let snapshot = cx.report.lock().map(|mut r| {
        r.ended_at = Some(report::now());
        r.clone()
    });
    if let Ok(r) = snapshot {
        // With --drop-data the rehearsal's state is gone: the files are the report.
        let saved = if cx.args.dry_run && cx.args.drop_data {
            report::write_dir(&r, &cx.dir)
        } else {
            report::save(&cx.state, &r, &cx.dir).await
        };
        print!("\n{}", report::summary(&r));
        match saved {
            Ok(w) => println!("report: {}", w.html.display()),
            Err(e) => tracing::warn!(error = %e, "could not save the run's report"),
        }
    }
    match result {
        Ok(()) => Ok(Outcome::Clean),
        Err(Stop::Findings(why)) => {
            println!(
                "run stopped: {why}; traffic stays on blue; fix it and run the same command again"
            );
            Ok(Outcome::Findings)
        }
        Err(Stop::Trouble(t)) => Err(t),
    }
}

async fn stages(cx: &Ctx, poolers: Vec<cutover::PoolerSpec>) -> Result<(), Stop> {
    let until = cx.args.until;
    let phase = match state::exists(&cx.state).await {
        Ok(true) => Run::get(&cx.state, &cx.args.run)
            .await
            .map_err(|e| Trouble::state("target", e))?
            .map(|r| r.phase),
        _ => None,
    };
    let plan = plan(cx).await?;
    if phase == Some(Phase::CutOver) && cx.args.dry_run {
        return Err(Stop::Trouble(Trouble::new(
            format!(
                "run {} is cut over: there is nothing to rehearse",
                cx.args.run
            ),
            "rehearse under another --run name against a staging target",
        )));
    }
    if phase == Some(Phase::CutOver) {
        println!("run {} is already cut over: clients use green", cx.args.run);
        if until.is_some() {
            return Ok(());
        }
        return reverse_sync(cx).await;
    }
    if phase != Some(Phase::Copied) {
        copy(cx, &plan).await?;
    } else {
        println!("run {} is already copied: going on with sync", cx.args.run);
    }
    if until == Some(Until::Copied) {
        return Ok(());
    }
    let ended = AtomicBool::new(false);
    let chain = async {
        catch_up(cx, &ended).await?;
        if until == Some(Until::Synced) {
            return Ok(false);
        }
        verify(cx, &plan).await?;
        if until == Some(Until::Verified) {
            return Ok(false);
        }
        flip(cx, poolers, cx.args.dry_run).await?;
        Ok(!cx.args.dry_run)
    };
    let (synced, result) = with_forward_sync(cx, &ended, chain).await;
    // Sync's own end says why first: a stage that saw it end only knows that it did.
    synced?;
    let cut_over = result?;
    if !cut_over {
        return Ok(());
    }
    if until == Some(Until::Cutover) {
        println!(
            "next: bluegreen sync --reverse --run {} (carries green's writes to blue, so rollback stays possible)",
            cx.args.run
        );
        return Ok(());
    }
    reverse_sync(cx).await
}

async fn plan(cx: &Ctx) -> Result<Plan, Stop> {
    cx.begin(StageName::Plan);
    let profile = super::read_profile(cx.args.profile.as_deref())?;
    let (s, t) = tokio::join!(conn::connect(&cx.source), conn::connect(&cx.target));
    let (s, t) = (
        s.map_err(|e| Trouble::conn("source", e))?,
        t.map_err(|e| Trouble::conn("target", e))?,
    );
    let plan = catalog::build_plan(
        &s,
        cx.source.redacted(),
        &t,
        cx.target.redacted(),
        &PlanOptions {
            schemas: cx.args.schemas.clone(),
            profile,
        },
    )
    .await
    .map_err(|e| Trouble::catalog("plan", e))?;
    if let Ok(mut r) = cx.report.lock() {
        r.findings
            .extend(plan.findings.iter().map(Note::from_finding));
    }
    cx.end(StageName::Plan, StageOutcome::Done, None).await;
    Ok(plan)
}

/// How the copy that just finished split its time, from its audit records (for the
/// estimate; None when they cannot be read within 10 s).
async fn copy_steps(cx: &Ctx) -> Option<report::CopySteps> {
    let read = async {
        let tgt = conn::connect(&cx.target).await.ok()?;
        let mut seconds = [0.0; 2];
        for (step, s) in ["data", "post-data"].into_iter().zip(&mut seconds) {
            let (_, _, at, _) = state::last_audit(&tgt, &cx.args.run, &[step])
                .await
                .ok()??;
            *s = at?;
        }
        Some(report::CopySteps {
            data_seconds: seconds[0],
            post_data_seconds: seconds[1],
        })
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

async fn copy(cx: &Ctx, plan: &Plan) -> Result<(), Stop> {
    cx.begin(StageName::Copy);
    let opts = CopyOptions {
        run: cx.args.run.clone(),
        jobs: cx
            .args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1),
        chunk_bytes: cx.args.chunk_mb.max(1) * 1024 * 1024,
        target_schema: TargetSchema::Dump,
        no_owner: false,
        no_privileges: false,
    };
    let counters = Arc::new(Counters::default());
    let bar =
        (std::io::stderr().is_terminal() && !crate::logging::json()).then(super::copy::new_bar);
    let ticker = tokio::spawn(super::copy::show_progress(counters.clone(), bar.clone()));
    let result = tokio::select! {
        r = copy::copy(plan, &cx.source, &cx.target, &opts, counters) => Some(r),
        _ = wait_interrupt(cx) => None,
    };
    ticker.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        None => {
            cx.end(
                StageName::Copy,
                StageOutcome::Failed,
                Some("interrupted".into()),
            )
            .await;
            Err(interrupted("copy"))
        }
        Some(Ok(summary)) => {
            print!("{}", render::copy_summary(&summary));
            let steps = match summary.start {
                copy::Start::Fresh => copy_steps(cx).await,
                _ => None,
            };
            let sizes: std::collections::HashMap<(&str, &str), i64> = plan
                .tables
                .iter()
                .map(|t| ((t.schema.as_str(), t.name.as_str()), t.bytes))
                .collect();
            if let Ok(mut r) = cx.report.lock() {
                r.tables = summary
                    .tables
                    .iter()
                    .map(|s| {
                        let size = sizes
                            .get(&(s.table_schema.as_str(), s.table_name.as_str()))
                            .copied();
                        TableCopy::from_summary(s, size)
                    })
                    .collect();
                r.copy_steps = steps;
            }
            cx.end(StageName::Copy, StageOutcome::Done, None).await;
            Ok(())
        }
        Some(Err(copy::Error::Blocked(blockers))) => {
            println!("copy refused: nothing was touched on either server.");
            print!("{}", render::findings(&blockers));
            cx.end(
                StageName::Copy,
                StageOutcome::Findings,
                Some("blockers".into()),
            )
            .await;
            Err(Stop::Findings("copy: the plan has blockers".into()))
        }
        Some(Err(e)) => {
            cx.end(StageName::Copy, StageOutcome::Failed, Some(e.to_string()))
                .await;
            Err(in_stage("copy", Trouble::copy(e)))
        }
    }
}

/// Runs forward sync in this task next to `chain` (the stages that need it), with a sampler
/// writing its position, lag and apply rate into the report once a second. When `chain`
/// ends, sync is stopped (finishing the transaction at hand within --stop-grace, then
/// without it); `ended` tells `chain` that sync ended by itself (after a cutover it is asked
/// to stop through the state schema; or an error).
async fn with_forward_sync(
    cx: &Ctx,
    ended: &AtomicBool,
    chain: impl std::future::Future<Output = Result<bool, Stop>>,
) -> (Result<(), Stop>, Result<bool, Stop>) {
    let (ends, opts) = super::sync::options(
        &cx.source,
        &cx.target,
        &cx.args.run,
        false,
        super::sync::Tuning {
            sessions: usize::from(cx.args.apply_sessions),
            link_timeout: cx.args.link_timeout,
            stop_grace: cx.args.stop_grace,
            ..super::sync::Tuning::default()
        },
    );
    let (stop, stop_rx) = watch::channel(false);
    let (force, force_rx) = watch::channel(false);
    let sampler = sample(cx, cx.args.run.clone());
    let sync = async {
        let r = sync::sync(&ends, &opts, stop_rx, force_rx).await;
        ended.store(true, Ordering::SeqCst);
        r
    };
    let work = async {
        let r = chain.await;
        let _ = stop.send(true);
        let grace = Instant::now() + cx.args.stop_grace;
        while !ended.load(Ordering::SeqCst) {
            if Instant::now() > grace {
                let _ = force.send(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    };
    let (synced, result) = tokio::join!(sync, work);
    sampler.abort();
    (
        synced
            .map(|_| ())
            .map_err(|e| in_stage("sync", Trouble::sync(e))),
        result,
    )
}

/// Samples the applier's row of `run` into the report once a second.
fn sample(cx: &Ctx, run: String) -> JoinHandle<()> {
    let report = cx.report.clone();
    let target = cx.target.clone();
    tokio::spawn(async move {
        let Ok(c) = conn::connect(&target).await else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(Some(a)) = ApplyStatus::get(&c, &run).await else {
                continue;
            };
            if let Ok(mut r) = report.lock() {
                let t = report::now() - r.started_at;
                r.samples.push(Sample::from_apply(&a, t));
            }
        }
    })
}

/// Waits until forward sync runs with its lag under --max-lag (bounded by --catch-up-timeout).
async fn catch_up(cx: &Ctx, sync_ended: &AtomicBool) -> Result<(), Stop> {
    cx.begin(StageName::CatchUp);
    let started = Instant::now();
    let mut said = Instant::now();
    let max_lag = cx.args.max_lag;
    loop {
        if cx.interrupted() {
            cx.end(
                StageName::CatchUp,
                StageOutcome::Failed,
                Some("interrupted".into()),
            )
            .await;
            return Err(interrupted("catch-up"));
        }
        if sync_ended.load(Ordering::SeqCst) {
            // Its own error is what the run reports (stopping it takes that first).
            cx.end(
                StageName::CatchUp,
                StageOutcome::Failed,
                Some("sync ended".into()),
            )
            .await;
            return Err(in_stage(
                "catch-up",
                Trouble::new("sync ended", "see bluegreen status for its last error"),
            ));
        }
        let a = ApplyStatus::get(&cx.state, &cx.args.run)
            .await
            .map_err(|e| Trouble::state("target", e))?;
        if let Some(a) = a.filter(ApplyStatus::running) {
            let lag = a.lag_seconds.unwrap_or(f64::INFINITY);
            if lag <= max_lag && a.last_error.is_none() {
                println!("caught up: lag {lag:.1} s");
                cx.end(StageName::CatchUp, StageOutcome::Done, None).await;
                return Ok(());
            }
            if said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                tracing::info!(
                    lag_seconds = lag,
                    lag_bytes = a.lag_bytes.unwrap_or(0),
                    rows_per_second = a.rows_per_second.unwrap_or(0.0),
                    "catching up"
                );
            }
        }
        if started.elapsed() > cx.args.catch_up_timeout {
            let why = format!(
                "sync did not catch up within --catch-up-timeout {:?}",
                cx.args.catch_up_timeout
            );
            cx.end(StageName::CatchUp, StageOutcome::Failed, Some(why.clone()))
                .await;
            return Err(in_stage(
                "catch-up",
                Trouble::new(
                    why,
                    "see bluegreen status (lag, apply rate); run the same command again to go on",
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn verify(cx: &Ctx, plan: &Plan) -> Result<(), Stop> {
    cx.begin(StageName::Verify);
    let opts = verify::VerifyOptions {
        run: cx.args.run.clone(),
        schemas: Vec::new(),
        chunk_bytes: 8 * 1024 * 1024,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        repair: false,
        // Incremental after an earlier clean verify of the run (as exact; see verify).
        full: false,
        hold_timeout: Duration::from_secs(120),
        max_rows_per_table: 1000,
    };
    let result = tokio::select! {
        r = verify::verify(plan, &cx.source, &cx.target, &opts) => Some(r),
        _ = wait_interrupt(cx) => None,
    };
    match result {
        None => {
            if verify::snapshot::holding() {
                let _ = state::release(&cx.state, &cx.args.run).await;
            }
            cx.end(
                StageName::Verify,
                StageOutcome::Failed,
                Some("interrupted".into()),
            )
            .await;
            Err(interrupted("verify"))
        }
        Some(Ok(v)) => {
            if let Ok(mut r) = cx.report.lock() {
                r.verify = Some(report::Verify::from_verify(&v));
            }
            if v.equal {
                println!("verify: EQUAL at source LSN {}", v.lsn);
                cx.end(StageName::Verify, StageOutcome::Done, None).await;
                Ok(())
            } else {
                print!("{}", v.human());
                cx.end(
                    StageName::Verify,
                    StageOutcome::Findings,
                    Some("differences".into()),
                )
                .await;
                Err(Stop::Findings(
                    "verify found differences (listed above; bluegreen verify --repair re-copies them)".into(),
                ))
            }
        }
        Some(Err(e)) => {
            cx.end(StageName::Verify, StageOutcome::Failed, Some(e.to_string()))
                .await;
            let hint = e.hint();
            Err(in_stage("verify", Trouble::new(e.to_string(), hint)))
        }
    }
}

/// The cutover, or for a dry run the rehearsed one (`cutover::rehearse`: nothing production
/// sees), with its steps and client pause into the report.
async fn flip(cx: &Ctx, poolers: Vec<cutover::PoolerSpec>, rehearsed: bool) -> Result<(), Stop> {
    cx.begin(StageName::Cutover);
    let opts = cutover::Options {
        run: cx.args.run.clone(),
        poolers,
        max_lag: Duration::from_secs_f64(cx.args.max_lag.max(0.0)),
        // The verify just before is the one the guardrail asks for.
        verify_max_age: Some(Duration::from_secs(3600)),
        max_xact_age: Duration::from_secs_f64(cx.args.max_xact_age.max(0.0)),
        pause_timeout: Duration::from_secs_f64(cx.args.pause_timeout.max(0.0)),
        drain_timeout: Duration::from_secs_f64(cx.args.drain_timeout.max(0.0)),
        link_timeout: cx.args.link_timeout,
    };
    let result = if rehearsed {
        cutover::rehearse(&cx.source, &cx.target, &opts).await
    } else {
        cutover::cutover(&cx.source, &cx.target, &opts).await
    };
    match result {
        Ok(rep) => {
            if rehearsed {
                println!(
                    "rehearsed cutover: {} steps, staging pause {:.0} ms, drained to {}",
                    rep.steps.len(),
                    rep.paused.as_secs_f64() * 1000.0,
                    rep.drained_at
                );
                for (step, s) in &rep.steps {
                    println!("  {step:<26} {:>8.1} ms", s * 1000.0);
                }
            } else {
                super::cutover::print_report(&rep, false);
            }
            // Clients wait from the step after PAUSE to RESUME.
            let mut paused = false;
            let steps = rep
                .steps
                .iter()
                .map(|(step, seconds)| {
                    let during = paused;
                    match step.as_str() {
                        "pause" => paused = true,
                        "resume" => paused = false,
                        _ => {}
                    }
                    report::CutoverStep {
                        step: step.clone(),
                        seconds: *seconds,
                        paused: during || step == "resume",
                        ok: true,
                    }
                })
                .collect();
            if let Ok(mut r) = cx.report.lock() {
                r.cutover = Some(report::Cutover {
                    rehearsed,
                    steps,
                    pause_seconds: (!rep.paused.is_zero()).then_some(rep.paused.as_secs_f64()),
                });
            }
            cx.end(StageName::Cutover, StageOutcome::Done, None).await;
            Ok(())
        }
        Err(e) => {
            let findings = matches!(e, cutover::Error::Guardrail(_));
            cx.end(
                StageName::Cutover,
                if findings {
                    StageOutcome::Findings
                } else {
                    StageOutcome::Failed
                },
                Some(e.to_string()),
            )
            .await;
            let stage = if rehearsed {
                "rehearsed cutover"
            } else {
                "cutover"
            };
            Err(in_stage(stage, Trouble::cutover(e)))
        }
    }
}

/// The end of a rehearsal: the production window estimated from what was measured, then
/// the run's slot and publication removed from the source (with --drop-data also what the
/// copy created on the staging target, and the run's state there).
async fn rehearsal_end(cx: &Ctx) -> Result<(), Stop> {
    cx.begin(StageName::Cleanup);
    if let Err(e) = estimate(cx).await {
        tracing::warn!(error = %e.cause, "no window estimate");
        if let Ok(mut r) = cx.report.lock() {
            r.findings
                .push(Note::warning(format!("no window estimate: {}", e.cause)));
        }
    }
    // Saved before the state may go with --drop-data.
    cx.end(StageName::Cleanup, StageOutcome::Running, None)
        .await;
    let removed = copy::abort(&cx.args.run, Some(&cx.source), None, false)
        .await
        .map_err(|e| in_stage("cleanup", Trouble::copy(e)))?;
    println!(
        "cleanup: source slot and publication bluegreen_{}: {}",
        cx.args.run,
        if removed.slot || removed.publication {
            "removed"
        } else {
            "none found"
        }
    );
    if cx.args.drop_data {
        let removed = copy::abort(&cx.args.run, None, Some(&cx.target), true)
            .await
            .map_err(|e| in_stage("cleanup", Trouble::copy(e)))?;
        println!(
            "cleanup: staging target: run state {}, copied data {}",
            if removed.state {
                "removed"
            } else {
                "none found"
            },
            if matches!(removed.data, copy::DropData::Dropped(_)) {
                "dropped"
            } else {
                "kept (see bluegreen abort --drop-data)"
            }
        );
    } else {
        println!(
            "cleanup: the staging target keeps the copied data and the run's state (bluegreen report renders it again; bluegreen abort --target --drop-data removes them)"
        );
    }
    if let Ok(mut r) = cx.report.lock() {
        if let Some(s) = r.stage_mut(StageName::Cleanup) {
            s.end(report::now(), StageOutcome::Done, None);
        }
    }
    Ok(())
}

/// The production window from this rehearsal's rates and the production source's sizes and
/// WAL rate (`--estimate-for`, default the source), into the report.
async fn estimate(cx: &Ctx) -> Result<(), Trouble> {
    let prod = match &cx.args.estimate_for {
        Some(text) => ConnSpec::parse(text).map_err(|e| Trouble::conn("estimate-for", e))?,
        None => cx.source.clone(),
    };
    let (p, t) = tokio::join!(conn::connect(&prod), conn::connect(&cx.target));
    let p = p.map_err(|e| Trouble::conn("estimate-for", e))?;
    let t = t.map_err(|e| Trouble::conn("target", e))?;
    let plan = catalog::build_plan(
        &p,
        prod.redacted(),
        &t,
        cx.target.redacted(),
        &PlanOptions {
            schemas: cx.args.schemas.clone(),
            profile: None,
        },
    )
    .await
    .map_err(|e| Trouble::catalog("estimate-for", e))?;
    let wal = report::wal_rate(&p, "estimate-for", Duration::from_secs(5))
        .await
        .map_err(Trouble::from_report)?;
    if let Ok(mut r) = cx.report.lock() {
        let production = report::Production::from_plan(&plan, prod.redacted(), Some(wal));
        let mut measured = report::Measured::from_report(&r);
        measured.max_lag_seconds = Some(cx.args.max_lag);
        let e = report::estimate(&measured, &production);
        r.estimate = Some(e);
    }
    Ok(())
}

/// Reverse sync until SIGINT/SIGTERM: green's writes reach blue, so rollback loses nothing.
async fn reverse_sync(cx: &Ctx) -> Result<(), Stop> {
    cx.begin(StageName::ReverseSync);
    let (ends, opts) = super::sync::options(
        &cx.source,
        &cx.target,
        &cx.args.run,
        true,
        super::sync::Tuning {
            sessions: usize::from(cx.args.apply_sessions),
            link_timeout: cx.args.link_timeout,
            stop_grace: cx.args.stop_grace,
            ..super::sync::Tuning::default()
        },
    );
    println!(
        "reverse sync: green's writes flow to blue until SIGINT/SIGTERM (bluegreen rollback --run {} works meanwhile)",
        cx.args.run
    );
    // A report mid-way: the reverse-sync stage shows as running.
    if let Ok(r) = cx.report.lock().map(|r| r.clone()) {
        let _ = report::save(&cx.state, &r, &cx.dir).await;
    }
    let mut interrupted = cx.interrupted.clone();
    let (stop, stop_rx) = watch::channel(false);
    let (_force, force_rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = interrupted.wait_for(|i| *i).await;
        let _ = stop.send(true);
    });
    let result = sync::sync(&ends, &opts, stop_rx, force_rx).await;
    match result {
        Ok(rep) => {
            println!("reverse sync stopped: applied up to {}", rep.applied_lsn);
            cx.end(StageName::ReverseSync, StageOutcome::Done, None)
                .await;
            Ok(())
        }
        Err(e) => {
            cx.end(
                StageName::ReverseSync,
                StageOutcome::Failed,
                Some(e.to_string()),
            )
            .await;
            Err(in_stage("reverse sync", Trouble::sync(e)))
        }
    }
}

async fn wait_interrupt(cx: &Ctx) {
    let mut rx = cx.interrupted.clone();
    let _ = rx.wait_for(|i| *i).await;
}

fn interrupted(stage: &str) -> Stop {
    Stop::Trouble(Trouble::new(
        format!("run interrupted during {stage}"),
        "traffic stays on blue; run the same command again to continue from the run's recorded phase",
    ))
}

/// Trouble in a stage: the message names it.
fn in_stage(stage: &str, t: Trouble) -> Stop {
    Stop::Trouble(Trouble::new(
        format!("run stopped in {stage}: {}", t.cause),
        t.hint,
    ))
}
