//! Cutover and rollback: move client traffic between blue and green by flipping every
//! PgBouncer at once, with a pause clients hardly notice and no write lost.
//!
//! The sequence, each step timed into the audit log: guardrails → (cutover: reverse slot and
//! publication on green, so rollback is armed before green takes a write) → sequences
//! pre-synced → pre-drain (the applier catches up with the old primary while clients still
//! write) → PAUSE on every pooler → old primary fenced → the applier holds exactly at the
//! old primary's current LSN (everything committed before it is applied) → final sequence
//! sync → databases files rewritten, RELOAD, each pooler checked → RESUME → the old direction's
//! sync stops (after a rollback green's fence is lifted again: forward sync writes there, and
//! the next cutover sends clients to it). Any failure before the final RESUME puts everything
//! back: files, fence, hold, pause — traffic stays on the old primary and its sync keeps
//! running.

pub mod dbfile;
mod error;
pub mod pooler;
pub mod watchdog;

use std::time::{Duration, Instant};

use conn::{qualified, quote_ident, ConnSpec, Host};
use state::{ApplyStatus, Phase, Run};
use tokio_postgres::Client;

use crate::dbfile::Endpoint;
use crate::error::sql;
pub use crate::error::Error;
use crate::pooler::Admin;
pub use crate::pooler::PoolerSpec;
use futures_util::future::join_all;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub run: String,
    pub poolers: Vec<PoolerSpec>,
    /// Guardrail: the applier's lag must be below this.
    pub max_lag: Duration,
    /// Guardrail: a clean verify no older than this (None: not required).
    pub verify_max_age: Option<Duration>,
    /// Guardrail: no transaction on the old primary open longer than this.
    pub max_xact_age: Duration,
    /// Client-side limit on each pooler's PAUSE.
    pub pause_timeout: Duration,
    /// Limit on waiting for the applier to reach the old primary's position.
    pub drain_timeout: Duration,
}

/// What a flip reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// From the first PAUSE sent to the last RESUME answered.
    pub paused: Duration,
    pub steps: Vec<(String, f64)>,
    /// The old primary's LSN the new one was caught up to.
    pub drained_at: String,
    /// Sessions on the old primary that did not come from bluegreen, ended at fencing time.
    pub other_sessions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Blue to green.
    Cutover,
    /// Green back to blue.
    Rollback,
}

pub use state::names::reverse_run;

/// Moves traffic from blue to green. `blue`/`green` are bluegreen's own connections.
pub async fn cutover(blue: &ConnSpec, green: &ConnSpec, opts: &Options) -> Result<Report, Error> {
    flip(Direction::Cutover, blue, green, opts).await
}

/// Moves traffic back from green to blue (after `cutover`, with `sync --reverse` running).
pub async fn rollback(blue: &ConnSpec, green: &ConnSpec, opts: &Options) -> Result<Report, Error> {
    flip(Direction::Rollback, blue, green, opts)
        .await
        .map_err(|e| match e {
            Error::Guardrail(why) => Error::RollbackGuardrail(why),
            other => other,
        })
}

/// What has been done so far, so a failure can undo exactly that (the coordinator itself,
/// or its watchdog if the coordinator dies).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Done {
    reverse_armed: bool,
    paused: Vec<usize>,
    fenced: bool,
    unfenced_new: bool,
    hold: bool,
    files: Vec<(usize, String)>,
}

struct Ctx<'a> {
    dir: Direction,
    opts: &'a Options,
    /// Where the run's state lives: green, in both directions.
    state: Client,
    old: Client,
    new: Client,
    new_spec: &'a ConnSpec,
    admins: Vec<Admin>,
    /// The applier that must catch up: forward sync for cutover, reverse for rollback.
    apply_run: String,
    schemas: Vec<String>,
    steps: Vec<(String, f64)>,
    clock: Instant,
    watchdog: Option<watchdog::Watchdog>,
}

impl Ctx<'_> {
    fn step(&mut self, name: &str) {
        let t = self.clock.elapsed().as_secs_f64();
        tracing::info!(step = name, seconds = t, "cutover step");
        self.steps.push((name.to_string(), t));
        stall_for_tests(name);
        self.clock = Instant::now();
    }

    /// A step that changed what an undo must put back: the watchdog hears of it at once.
    async fn mark(&mut self, name: &str, done: &Done) {
        self.tell(done).await;
        self.step(name);
    }

    async fn tell(&mut self, done: &Done) {
        if let Some(w) = self.watchdog.as_mut() {
            if let Err(e) = w.report(done).await {
                tracing::warn!(error = %e, "the cutover watchdog could not be told; going on without it");
                self.watchdog = None;
            }
        }
    }

    /// Dismisses the watchdog: RESUME was answered, or the undo has run.
    async fn dismiss_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.finish().await;
        }
    }
}

/// Test hook: `BLUEGREEN_TEST_STALL_AFTER=<step>` holds the coordinator that long
/// (`BLUEGREEN_TEST_STALL_MS`, default 10 s) after that step, so a test can kill it there.
fn stall_for_tests(step: &str) {
    if std::env::var("BLUEGREEN_TEST_STALL_AFTER").is_ok_and(|s| s == step) {
        let ms = std::env::var("BLUEGREEN_TEST_STALL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        std::thread::sleep(Duration::from_millis(ms));
    }
}

async fn connect(spec: &ConnSpec, side: &'static str) -> Result<Client, Error> {
    conn::connect(spec)
        .await
        .map_err(|source| Error::Conn { side, source })
}

async fn flip(
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
    guardrails(&mut cx).await?;
    cx.step("guardrails");
    // From here on a dead coordinator would strand what it did: its watchdog puts it back.
    cx.watchdog = Some(watchdog::Watchdog::start(dir, blue, green, opts).await?);

    let mut done = Done::default();
    match sequence(&mut cx, &mut done).await {
        Ok(report) => {
            finish(&cx, &report)
                .await
                .map_err(|e| Error::AfterResume(e.to_string()))?;
            Ok(report)
        }
        Err((step, cause)) => {
            tracing::warn!(step, error = %cause, "cutover step failed; putting everything back");
            undo(&cx, &done).await;
            cx.dismiss_watchdog().await;
            let _ = state::audit(
                &cx.state,
                &opts.run,
                "cutover-aborted",
                None,
                serde_json::json!({ "step": step, "error": cause.to_string() }),
            )
            .await;
            Err(Error::Aborted {
                step: step.to_string(),
                cause: Box::new(cause),
            })
        }
    }
}

/// Connects to green (the run's state), the old and the new primary for one direction.
async fn open<'a>(
    dir: Direction,
    blue: &'a ConnSpec,
    green: &'a ConnSpec,
    opts: &'a Options,
) -> Result<(Ctx<'a>, Run), Error> {
    let (old_spec, new_spec) = match dir {
        Direction::Cutover => (blue, green),
        Direction::Rollback => (green, blue),
    };
    let state = connect(green, "green").await?;
    let run = Run::get(&state, &opts.run)
        .await?
        .ok_or_else(|| Error::Guardrail(format!("no run {} on green", opts.run)))?;
    let apply_run = match dir {
        Direction::Cutover => opts.run.clone(),
        Direction::Rollback => reverse_run(&opts.run),
    };
    let old = connect(old_spec, "old primary").await?;
    let new = connect(new_spec, "new primary").await?;
    // Our own sessions write (sequences, marks) even on a database fenced read-only.
    for c in [&old, &new, &state] {
        c.batch_execute("SET default_transaction_read_only = off")
            .await
            .map_err(sql("database", "session settings"))?;
    }
    let cx = Ctx {
        dir,
        opts,
        state,
        old,
        new,
        new_spec,
        admins: Vec::new(),
        apply_run,
        schemas: run.schemas.clone(),
        steps: Vec::new(),
        clock: Instant::now(),
        watchdog: None,
    };
    Ok((cx, run))
}

/// The watchdog's undo of a flip whose coordinator died (see [`watchdog`]): what `done`
/// records is put back as the coordinator would have, and the audit log says so.
async fn undo_for(
    dir: Direction,
    blue: &ConnSpec,
    green: &ConnSpec,
    opts: &Options,
    done: &Done,
) -> Result<(), Error> {
    let (mut cx, _) = open(dir, blue, green, opts).await?;
    for spec in &opts.poolers {
        cx.admins
            .push(Admin::connect(spec, opts.pause_timeout).await?);
    }
    undo(&cx, done).await;
    state::audit(
        &cx.state,
        &opts.run,
        "cutover-aborted",
        None,
        serde_json::json!({ "by": "watchdog", "error": "the coordinator died mid-flip" }),
    )
    .await?;
    Ok(())
}

async fn guardrails(cx: &mut Ctx<'_>) -> Result<(), Error> {
    let apply = ApplyStatus::get(&cx.state, &cx.apply_run).await?;
    let which = match cx.dir {
        Direction::Cutover => "bluegreen sync",
        Direction::Rollback => "bluegreen sync --reverse",
    };
    let Some(apply) = apply.filter(|a| a.running()) else {
        return Err(Error::Guardrail(format!(
            "{which} is not running for run {}",
            cx.opts.run
        )));
    };
    if let Some(e) = &apply.last_error {
        return Err(Error::Guardrail(format!("{which} reports an error: {e}")));
    }
    // Whatever --no-verify-check says: green is known to differ until a verify says otherwise.
    if matches!(cx.dir, Direction::Cutover) && apply.diverged() {
        return Err(Error::Guardrail(format!(
            "green diverged: {} UPDATE(s)/DELETE(s) found no row on green (latest at {}, source LSN {}): run bluegreen verify --repair; cutover needs a clean verify started after that",
            apply.diverged_rows,
            apply.diverged_at.as_deref().unwrap_or("-"),
            apply.diverged_lsn.as_deref().unwrap_or("-"),
        )));
    }
    if apply.hold_lsn.is_some() {
        return Err(held_by_another(cx));
    }
    let lag = apply.lag_seconds.unwrap_or(f64::INFINITY);
    if lag > cx.opts.max_lag.as_secs_f64() {
        return Err(Error::Guardrail(format!(
            "{which} lags {lag:.1} s, more than --max-lag {:?}",
            cx.opts.max_lag
        )));
    }
    if let (Direction::Cutover, Some(max)) = (cx.dir, cx.opts.verify_max_age) {
        match state::verify::last_clean(&cx.state, &cx.opts.run).await? {
            Some((_, age)) if age <= max.as_secs_f64() => {}
            Some((lsn, age)) => {
                return Err(Error::Guardrail(format!(
                    "the last clean verify (at {lsn}) is {age:.0} s old, more than --verify-max-age {max:?}: run bluegreen verify"
                )))
            }
            None => {
                return Err(Error::Guardrail(
                    "no clean verify yet: run bluegreen verify (or pass --no-verify-check)".into(),
                ))
            }
        }
    }
    let long = cx
        .old
        .query(
            "SELECT pid, usename::text, application_name,
                    extract(epoch FROM clock_timestamp() - xact_start)::float8
               FROM pg_stat_activity
              WHERE datname = current_database() AND backend_type = 'client backend'
                AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
                AND clock_timestamp() - xact_start > make_interval(secs => $1)
              ORDER BY xact_start LIMIT 3",
            &[&cx.opts.max_xact_age.as_secs_f64()],
        )
        .await
        .map_err(sql("old primary", "look for long transactions"))?;
    if let Some(r) = long.first() {
        return Err(Error::Guardrail(format!(
            "a transaction on the old primary has been open {:.0} s (pid {}, user {}, application {:?}), more than --max-xact-age {:?}: it would hold PAUSE",
            r.get::<_, f64>(3),
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            cx.opts.max_xact_age
        )));
    }
    for spec in &cx.opts.poolers {
        let admin = Admin::connect(spec, cx.opts.pause_timeout)
            .await
            .map_err(|e| Error::Guardrail(e.to_string()))?;
        if admin.target_of_db(cx.opts.pause_timeout).await?.is_none() {
            return Err(Error::Guardrail(format!(
                "pooler {} has no database {}",
                admin.name(),
                spec.db
            )));
        }
        let text = std::fs::read_to_string(&spec.file).map_err(|e| {
            Error::Guardrail(format!("databases file {}: {e}", spec.file.display()))
        })?;
        if dbfile::current(&text, &spec.db).is_none() {
            return Err(Error::Guardrail(format!(
                "databases file {} has no line for {}",
                spec.file.display(),
                spec.db
            )));
        }
        cx.admins.push(admin);
    }
    Ok(())
}

type StepResult<T> = Result<T, (&'static str, Error)>;

fn at<T>(step: &'static str, r: Result<T, Error>) -> StepResult<T> {
    r.map_err(|e| (step, e))
}

async fn sequence(cx: &mut Ctx<'_>, done: &mut Done) -> StepResult<Report> {
    if cx.dir == Direction::Cutover {
        // Green takes the writes from RESUME on: a fence an earlier rollback left on it (or an
        // interrupted one) would turn every client write into an error.
        at("unfence green", lift_fence(&cx.new).await)?;
        at("arm rollback", arm_reverse(cx).await)?;
        done.reverse_armed = true;
        cx.mark("arm rollback", done).await;
    }
    at("pre-sync sequences", sync_sequences(cx).await)?;
    cx.step("pre-sync sequences");

    // The applier catches up while clients still write, so the drain inside the pause has
    // only the last moments to apply (not however far behind the applier happens to be).
    at("pre-drain", pre_drain(cx, done).await)?;
    cx.step("pre-drain");

    // PAUSE on every pooler at once.
    let paused_at = Instant::now();
    let results = join_all(cx.admins.iter().map(|a| a.pause(cx.opts.pause_timeout))).await;
    for (i, r) in results.into_iter().enumerate() {
        // Counted as paused either way: a PAUSE that timed out may still take effect.
        done.paused.push(i);
        at("pause", r)?;
    }
    cx.mark("pause", done).await;

    done.fenced = true;
    let others = at("fence", fence(cx).await)?;
    cx.mark("fence", done).await;

    let drained_at = at("drain", drain(cx, done).await)?;
    cx.mark("drain", done).await;

    at("final sequence sync", sync_sequences(cx).await)?;
    cx.step("final sequence sync");

    if cx.dir == Direction::Rollback {
        // Blue was fenced read-only at cutover; it takes writes again from RESUME on.
        at("unfence", set_read_only(&cx.new, false).await)?;
        done.unfenced_new = true;
        cx.mark("unfence", done).await;
    }
    for i in 0..cx.admins.len() {
        let admin = &cx.admins[i];
        let to = endpoint_for(cx, admin);
        let text = at(
            "flip",
            std::fs::read_to_string(&admin.spec.file)
                .map_err(|e| Error::Pooler(format!("{}: {e}", admin.spec.file.display()))),
        )?;
        let new_text = at("flip", dbfile::rewrite(&text, &admin.spec.db, &to))?;
        at(
            "flip",
            dbfile::write_atomically(&admin.spec.file, &new_text),
        )?;
        done.files.push((i, text));
        cx.tell(done).await;
        let admin = &cx.admins[i];
        at("flip", admin.reload(cx.opts.pause_timeout).await)?;
        let now = at("flip", admin.target_of_db(cx.opts.pause_timeout).await)?;
        if now.as_ref().map(|e| (&e.host, e.port)) != Some((&to.host, to.port)) {
            return Err((
                "flip",
                Error::Pooler(format!(
                    "pooler {} still points {} at {} after RELOAD",
                    admin.name(),
                    admin.spec.db,
                    now.map(|e| e.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )),
            ));
        }
    }
    cx.step("flip");

    let results = join_all(cx.admins.iter().map(|a| a.resume(cx.opts.pause_timeout))).await;
    let paused = paused_at.elapsed();
    // Traffic is on the new primary: nothing for the watchdog to put back.
    cx.dismiss_watchdog().await;
    for r in results {
        // Traffic already points at the new primary: a pooler that will not resume is an
        // operator's emergency, not a reason to flip back.
        if let Err(e) = r {
            tracing::error!(error = %e, "RESUME failed; resume that pooler by hand");
        }
    }
    cx.step("resume");
    Ok(Report {
        paused,
        steps: cx.steps.clone(),
        drained_at,
        other_sessions: others,
    })
}

/// After RESUME: the old direction's applier stops and the run moves on. After a rollback
/// the reverse stream is retired (its slot on green would otherwise hold WAL forever) and the
/// run is back in `copied`: forward sync may follow blue again.
async fn finish(cx: &Ctx<'_>, report: &Report) -> Result<(), Error> {
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
        set_read_only(&cx.old, false).await?;
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
        disarm_reverse(cx).await?;
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

/// Creates green's publication and slot for the reverse stream, and its run row, before green
/// takes a write: every write green takes after the flip is in the slot. Changes the forward
/// applier made on green carry its replication origin and are skipped by the reverse applier.
async fn arm_reverse(cx: &Ctx<'_>) -> Result<(), Error> {
    let name = state::names::slot(&reverse_run(&cx.opts.run));
    let mut list: Vec<String> = cx.schemas.iter().map(|s| quote_ident(s)).collect();
    // Green's hypertables change under their chunks' names, in TimescaleDB's schema.
    if state::policies::has_hypertables(&cx.state, &cx.schemas).await? {
        list.push(quote_ident("_timescaledb_internal"));
    }
    cx.state
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {0}; CREATE PUBLICATION {0} FOR TABLES IN SCHEMA {1}",
            quote_ident(&name),
            list.join(", ")
        ))
        .await
        .map_err(sql("green", "create the reverse publication"))?;
    let exists = cx
        .state
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(sql("green", "look up the reverse slot"))?
        .is_some();
    if exists {
        cx.state
            .execute("SELECT pg_drop_replication_slot($1)", &[&name])
            .await
            .map_err(sql("green", "drop an old reverse slot"))?;
    }
    // A checkpoint logs the running transactions, which a new slot otherwise waits for
    // (up to 15 s); without the right to run it, the slot just takes longer.
    if let Err(e) = cx.state.batch_execute("CHECKPOINT").await {
        tracing::debug!(error = %e, "CHECKPOINT before creating the reverse slot");
    }
    let mut repl = wire::ReplicationConnection::connect(cx.new_spec).await?;
    let slot = repl
        .create_slot(&name, false, wire::SnapshotAction::NoExport)
        .await?;
    repl.close().await;
    let rev = reverse_run(&cx.opts.run);
    Run::delete(&cx.state, &rev).await?;
    Run::insert(
        &cx.state,
        &state::NewRun {
            run: &rev,
            source: &cx.new_spec.redacted(),
            slot_name: &name,
            publication: &name,
            schemas: &cx.schemas,
        },
    )
    .await?;
    Run::set_snapshot(&cx.state, &rev, &slot.consistent_point.to_string(), "").await?;
    Run::set_phase(&cx.state, &rev, Phase::Copied).await?;
    Ok(())
}

async fn disarm_reverse(cx: &Ctx<'_>) -> Result<(), Error> {
    drop_reverse_on_green(&cx.state, &cx.opts.run).await
}

/// Removes what cutover created for the reverse stream: on green its slot (ending the
/// stream), publication and run row; on blue the reverse applier's session and replication
/// origin. For `bluegreen abort`; safe to run when none of it exists.
pub async fn remove_reverse(
    run: &str,
    blue: Option<&ConnSpec>,
    green: Option<&ConnSpec>,
) -> Result<(), Error> {
    let rev = reverse_run(run);
    let mut apply_pid = None;
    if let Some(green) = green {
        let state = connect(green, "green").await?;
        if state::exists(&state).await? {
            if let Some(a) = ApplyStatus::get(&state, &rev).await? {
                state::request_stop(&state, &rev).await?;
                apply_pid = a.pid;
            }
            drop_reverse_on_green(&state, run).await?;
        }
    }
    if let Some(blue) = blue {
        let c = connect(blue, "blue").await?;
        c.batch_execute("SET default_transaction_read_only = off")
            .await
            .map_err(sql("blue", "session settings"))?;
        if let Some(pid) = apply_pid {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(sql("blue", "end the reverse applier"))?;
        }
        let origin = state::names::origin(&rev);
        for _ in 0..50 {
            match c
                .execute(
                    "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
                    &[&origin],
                )
                .await
            {
                Ok(_) => {
                    state::rollback_prepared(&c, &origin).await?;
                    break;
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(sql("blue", "drop the reverse origin")(e)),
            }
        }
    }
    Ok(())
}

async fn drop_reverse_on_green(state: &Client, run: &str) -> Result<(), Error> {
    let name = state::names::slot(&reverse_run(run));
    for _ in 0..50 {
        let row = state
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(sql("green", "look up the reverse slot"))?;
        match row.map(|r| r.get::<_, Option<i32>>(0)) {
            None => break,
            Some(Some(pid)) => {
                state
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(sql("green", "end the reverse stream"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(None) => {
                state
                    .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                    .await
                    .map_err(sql("green", "drop the reverse slot"))?;
                break;
            }
        }
    }
    state
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&name)
        ))
        .await
        .map_err(sql("green", "drop the reverse publication"))?;
    Run::delete(state, &reverse_run(run)).await?;
    Ok(())
}

/// Every sequence of the run's schemas on the new primary set to the old primary's value.
async fn sync_sequences(cx: &Ctx<'_>) -> Result<(), Error> {
    let rows = cx
        .old
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
              WHERE schemaname = ANY($1) AND last_value IS NOT NULL",
            &[&cx.schemas],
        )
        .await
        .map_err(sql("old primary", "read sequences"))?;
    for r in rows {
        let name = qualified(r.get(0), r.get(1));
        let value: i64 = r.get(2);
        cx.new
            .execute(
                "SELECT setval($1::text::regclass, $2, true)",
                &[&name, &value],
            )
            .await
            .map_err(sql("new primary", format!("set sequence {name}")))?;
    }
    Ok(())
}

/// Fences the old primary read-only for new sessions, then ends every session on it that is
/// not bluegreen's and waits until each is gone: an idle session, or one inside a
/// transaction, could otherwise commit there after the drain position is taken, a write the
/// new primary would never see (and a key the new primary would hand out again). New
/// sessions that come in meanwhile are ended too; the drain position is taken only after.
async fn fence(cx: &Ctx<'_>) -> Result<Vec<String>, Error> {
    set_read_only(&cx.old, true).await?;
    let started = Instant::now();
    let mut ended: Vec<(i32, String)> = Vec::new();
    loop {
        let rows = cx
            .old
            .query(
                "SELECT pid, usename::text, coalesce(client_addr::text, 'local'), application_name, state
                   FROM pg_stat_activity
                  WHERE datname = current_database() AND backend_type = 'client backend'
                    AND pid <> pg_backend_pid() AND application_name NOT LIKE 'bluegreen%'",
                &[],
            )
            .await
            .map_err(sql("old primary", "list sessions"))?;
        if rows.is_empty() {
            return Ok(ended.into_iter().map(|(_, s)| s).collect());
        }
        for r in &rows {
            let pid: i32 = r.get(0);
            if !ended.iter().any(|(p, _)| *p == pid) {
                ended.push((
                    pid,
                    format!(
                        "pid {pid} user {} from {} app {:?} ({})",
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, String>(3),
                        r.get::<_, Option<String>>(4).unwrap_or_default()
                    ),
                ));
            }
            cx.old
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .map_err(sql("old primary", "end a session"))?;
        }
        if started.elapsed() > cx.opts.pause_timeout {
            return Err(Error::Timeout(format!(
                "{} session(s) on the old primary did not end within --pause-timeout {:?}",
                rows.len(),
                cx.opts.pause_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lifts a read-only fence from the database, if one is set; says whether it was.
async fn lift_fence(c: &Client) -> Result<bool, Error> {
    let fenced: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                             WHERE d.datname = current_database() AND s.setrole = 0
                               AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
            &[],
        )
        .await
        .map_err(sql("database", "look for a read-only fence"))?
        .get(0);
    if fenced {
        tracing::warn!("the new primary was fenced read-only (left by a rollback); lifting it");
        set_read_only(c, false).await?;
    }
    Ok(fenced)
}

async fn set_read_only(c: &Client, on: bool) -> Result<(), Error> {
    let db: String = c
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(sql("database", "name"))?
        .get(0);
    let stmt = if on {
        format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            quote_ident(&db)
        )
    } else {
        format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            quote_ident(&db)
        )
    };
    c.batch_execute(&stmt)
        .await
        .map_err(sql("database", "set read-only"))
}

/// A pre-drain round that took less than this leaves little for the drain in the pause.
const PRE_DRAIN_CLOSE: Duration = Duration::from_millis(100);
/// At most this many pre-drain rounds, and this long in all: clients are not paused
/// meanwhile, and while the applier applies faster than clients write, each round is
/// shorter than the last.
const PRE_DRAIN_ROUNDS: usize = 30;
const PRE_DRAIN_BUDGET: Duration = Duration::from_secs(30);
/// Rounds in a row that are not 10% shorter than the best one so far: the applier barely
/// keeps up with the writes, and more rounds would not help.
const PRE_DRAIN_STALE: usize = 3;

/// Before PAUSE: holds the applier at the old primary's current position and releases it at
/// once, round after round, until a round takes less than [`PRE_DRAIN_CLOSE`]: each round
/// leaves only the writes made during it, so the applier ends up at most about that far
/// behind. Clients are not paused meanwhile. A round that cannot finish within
/// --drain-timeout fails the cutover (nothing is paused yet). When the rounds stop getting
/// shorter, or after [`PRE_DRAIN_ROUNDS`] rounds or [`PRE_DRAIN_BUDGET`], the pause follows
/// anyway, and its drain takes about as long as the last round.
async fn pre_drain(cx: &mut Ctx<'_>, done: &mut Done) -> Result<(), Error> {
    let begun = Instant::now();
    let (mut best, mut stale) = (Duration::MAX, 0);
    for round in 1..=PRE_DRAIN_ROUNDS {
        let started = Instant::now();
        let lsn = drain(cx, done).await?;
        state::release(&cx.state, &cx.apply_run).await?;
        done.hold = false;
        cx.tell(done).await;
        let took = started.elapsed();
        tracing::debug!(
            round,
            lsn,
            ms = took.as_secs_f64() * 1000.0,
            "pre-drain round"
        );
        if took < PRE_DRAIN_CLOSE || begun.elapsed() > PRE_DRAIN_BUDGET {
            break;
        }
        if took.as_secs_f64() < best.as_secs_f64() * 0.9 {
            (best, stale) = (took, 0);
        } else {
            stale += 1;
            if stale >= PRE_DRAIN_STALE {
                tracing::warn!(
                    ms = took.as_secs_f64() * 1000.0,
                    "sync barely keeps up with the writes: the drain in the pause will take about as long"
                );
                break;
            }
        }
    }
    Ok(())
}

/// The applier is held by another process (a verify checking its snapshot); cutting over
/// would move or release that process's hold.
fn held_by_another(cx: &Ctx<'_>) -> Error {
    Error::Guardrail(format!(
        "the applier of run {} is held by another process (a verify?): cut over when it \
         is released (bluegreen status shows the hold; the applier drops a hold nobody \
         releases after 10 minutes)",
        cx.apply_run
    ))
}

/// Asks the applier to stop exactly at the old primary's current position and waits until
/// it has: then the new primary holds every write the old one committed. The position is
/// WAL's insert position, past every record inserted so far: under asynchronous commit a
/// transaction that committed before the fence may not be written yet, and the write
/// position (`pg_current_wal_lsn`) could fall short of its commit record.
async fn drain(cx: &mut Ctx<'_>, done: &mut Done) -> Result<String, Error> {
    let lsn: String = cx
        .old
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(sql("old primary", "current WAL position"))?
        .get(0);
    if !state::take_hold(&cx.state, &cx.apply_run, &lsn).await? {
        return Err(held_by_another(cx));
    }
    done.hold = true;
    cx.tell(done).await;
    // A message after the position tells the applier the stream has passed it.
    state::emit_hold_message(&cx.old).await?;
    let started = Instant::now();
    loop {
        let held = ApplyStatus::get(&cx.state, &cx.apply_run)
            .await?
            .and_then(|a| a.held_lsn);
        if held.as_deref() == Some(lsn.as_str()) {
            return Ok(lsn);
        }
        if started.elapsed() > cx.opts.drain_timeout {
            return Err(Error::Timeout(format!(
                "the applier did not reach {lsn} within --drain-timeout {:?}",
                cx.opts.drain_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Puts back whatever `done` records, newest first. Best effort: each step is tried even if
/// an earlier one fails, and failures are logged for the operator.
async fn undo(cx: &Ctx<'_>, done: &Done) {
    for (i, text) in done.files.iter().rev() {
        let admin = &cx.admins[*i];
        if let Err(e) = dbfile::write_atomically(&admin.spec.file, text) {
            tracing::error!(error = %e, "could not restore the databases file");
        }
        if let Err(e) = admin.reload(cx.opts.pause_timeout).await {
            tracing::error!(error = %e, "RELOAD after restoring failed");
        }
    }
    if done.unfenced_new {
        if let Err(e) = set_read_only(&cx.new, true).await {
            tracing::error!(error = %e, "could not fence blue again");
        }
    }
    if done.hold {
        if let Err(e) = state::release(&cx.state, &cx.apply_run).await {
            tracing::error!(error = %e, "could not release the applier's hold");
        }
    }
    if done.fenced {
        if let Err(e) = set_read_only(&cx.old, false).await {
            tracing::error!(error = %e, "could not unfence the old primary");
        }
    }
    let resumes = join_all(
        done.paused
            .iter()
            .map(|&i| cx.admins[i].resume(cx.opts.pause_timeout)),
    )
    .await;
    for r in resumes {
        if let Err(e) = r {
            tracing::error!(error = %e, "RESUME failed: resume that pooler by hand");
        }
    }
    if done.reverse_armed {
        if let Err(e) = disarm_reverse(cx).await {
            tracing::error!(error = %e, "could not remove the reverse slot");
        }
    }
}
