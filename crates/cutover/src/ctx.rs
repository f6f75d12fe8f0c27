//! What one flip works with: its three sessions (green's state, the old and the new
//! primary), the poolers, and the steps' timing.

use std::time::Instant;

use conn::ConnSpec;
use state::{Run, Side};
use tokio_postgres::Client;

use crate::error::sql;
use crate::pooler::Admin;
use crate::step::{inject, Step, StepResult};
use crate::{connect, reverse_run, watchdog, Direction, Error, Options};

pub(crate) struct Ctx<'a> {
    pub dir: Direction,
    pub opts: &'a Options,
    /// Where the run's state lives: green, in both directions.
    pub state: Client,
    pub old: Client,
    pub new: Client,
    pub new_spec: &'a ConnSpec,
    pub admins: Vec<Admin>,
    /// The applier that must catch up: forward sync for cutover, reverse for rollback.
    pub apply_run: String,
    pub schemas: Vec<String>,
    pub steps: Vec<(String, f64)>,
    clock: Instant,
    pub watchdog: Option<watchdog::Watchdog>,
}

impl Ctx<'_> {
    /// A step begins (a test may fail the flip here).
    pub fn enter(&self, step: Step) -> StepResult<()> {
        inject::fail(inject::Point::Before, step)
    }

    /// A step is done: timed and logged (a test may stall or fail the flip here).
    pub fn leave(&mut self, step: Step) -> StepResult<()> {
        self.timed(step);
        inject::fail(inject::Point::After, step)
    }

    /// A step past the commit point is done: timed and logged (a test may stall it; nothing
    /// after the commit point fails the flip).
    pub fn timed(&mut self, step: Step) {
        let t = self.clock.elapsed().as_secs_f64();
        tracing::info!(step = step.name(), seconds = t, "cutover step");
        self.steps.push((step.name().to_string(), t));
        inject::stall(step);
        self.clock = Instant::now();
    }

    /// The old primary's side (`true`) or the new one's.
    pub fn side(&self, old: bool) -> Side {
        let (o, n) = self.dir.sides();
        if old {
            o
        } else {
            n
        }
    }

    /// Dismisses the watchdog: the flip is over, done or undone.
    pub async fn dismiss_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.finish().await;
        }
    }

    /// Leaves the flip to its watchdog and waits for it (see `Watchdog::hand_over`).
    pub async fn hand_over_to_watchdog(&mut self, limit: std::time::Duration) {
        if let Some(w) = self.watchdog.take() {
            w.hand_over(limit).await;
        }
    }
}

/// Connects to green (the run's state), the old and the new primary for one direction.
pub(crate) async fn open<'a>(
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
