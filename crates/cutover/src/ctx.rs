//! What one flip works with: its three sessions (green's state, the old and the new
//! primary), the poolers, and the steps' timing; and, after a failed step, those sessions
//! checked and the silent ones replaced ([`Ctx::revive`]).

use std::time::{Duration, Instant};

use conn::ConnSpec;
use state::{Run, Side};
use tokio_postgres::Client;

use crate::error::sql;
use crate::links::Links;
use crate::pooler::Admin;
use crate::step::{inject, Step, StepResult};
use crate::undo::undo_limit;
use crate::{connect, reverse_run, watchdog, Direction, Error, Options};

pub(crate) struct Ctx<'a> {
    pub dir: Direction,
    pub opts: &'a Options,
    /// Where the run's state lives: green, in both directions.
    pub state: Client,
    pub old: Client,
    pub new: Client,
    pub new_spec: &'a ConnSpec,
    old_spec: &'a ConnSpec,
    state_spec: &'a ConnSpec,
    /// Which backend serves each session (state, old, new): one that stops answering is
    /// ended from a fresh session, so nothing it was sent runs late.
    backends: [Backend; 3],
    pub admins: Vec<Admin>,
    /// The applier that must catch up: forward sync for cutover, reverse for rollback.
    pub apply_run: String,
    pub schemas: Vec<String>,
    pub steps: Vec<(String, f64)>,
    clock: Instant,
    pub watchdog: Option<watchdog::Watchdog>,
    /// Probes of both servers for the steps without a deadline of their own.
    pub links: Links,
}

impl Ctx<'_> {
    /// The backend of the session that holds the flip's lock (the watchdog ends it should
    /// the coordinator leave it behind).
    pub fn lock_holder(&self) -> &Backend {
        &self.backends[0]
    }

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
    let state_backend = session(&state).await?;
    let run = Run::get(&state, &opts.run)
        .await?
        .ok_or_else(|| Error::Guardrail(format!("no run {} on green", opts.run)))?;
    let apply_run = match dir {
        Direction::Cutover => opts.run.clone(),
        Direction::Rollback => reverse_run(&opts.run),
    };
    let old = connect(old_spec, "old primary").await?;
    let new = connect(new_spec, "new primary").await?;
    let backends = [state_backend, session(&old).await?, session(&new).await?];
    let cx = Ctx {
        dir,
        opts,
        state,
        old,
        new,
        new_spec,
        old_spec,
        state_spec: green,
        backends,
        admins: Vec::new(),
        apply_run,
        schemas: run.schemas.clone(),
        steps: Vec::new(),
        clock: Instant::now(),
        watchdog: None,
        links: Links::watch(blue, green, opts.link_timeout),
    };
    Ok((cx, run))
}

/// A session's backend: its pid and start time (the pair names it even after the pid is
/// reused).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Backend {
    pid: i32,
    started: String,
}

/// Readies one of the flip's sessions and says which backend serves it. Our own sessions
/// write (sequences, marks) even on a database fenced read-only.
async fn session(c: &Client) -> Result<Backend, Error> {
    let rows = c
        .simple_query(
            "SET default_transaction_read_only = off;
             SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .await
        .map_err(sql("database", "session settings"))?;
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    Ok(Backend {
        pid: row
            .and_then(|r| r.get(0))
            .and_then(|p| p.parse().ok())
            .unwrap_or_default(),
        started: row
            .and_then(|r| r.get(1))
            .map(str::to_string)
            .unwrap_or_default(),
    })
}

impl Ctx<'_> {
    /// After a failed step, before its undo: every session of the flip answers within
    /// --pause-timeout (clients are still paused; 1 s at least), or it is given up (a link that went silent leaves its session waiting
    /// for good: TCP notices nothing while something on the path still acknowledges) and
    /// replaced by a fresh one (each attempt bounded the same way), tried until
    /// [`REVIVE_LIMIT`]; the silent session's backend is
    /// then ended from the fresh one, so nothing it was sent can still run after the undo,
    /// and the flip's lock on green, which that backend held, is taken again. Says whether
    /// every session answers now.
    pub async fn revive(&mut self) -> bool {
        let limit = self
            .opts
            .pause_timeout
            .clamp(Duration::from_secs(1), undo_limit(self.opts));
        let (state_ok, old_ok, new_ok) = tokio::join!(
            answers(&self.state, limit),
            answers(&self.old, limit),
            answers(&self.new, limit)
        );
        let sides: [(bool, &ConnSpec, &'static str); 3] = [
            (state_ok, self.state_spec, "green"),
            (old_ok, self.old_spec, "old primary"),
            (new_ok, self.new_spec, "new primary"),
        ];
        let fresh =
            futures_util::future::join_all(sides.iter().map(|&(ok, spec, side)| async move {
                if ok {
                    return None;
                }
                tracing::warn!(
                    side,
                    "a session of the flip gives no answer; putting things back on a fresh one"
                );
                Some(reconnect(spec, side, limit).await)
            }))
            .await;
        let mut all = true;
        for (i, f) in fresh.into_iter().enumerate() {
            let Some(f) = f else { continue };
            let Some((client, backend)) = f else {
                all = false;
                continue;
            };
            let stale = std::mem::replace(&mut self.backends[i], backend);
            end_backend(&client, &stale, limit).await;
            match i {
                0 => {
                    self.state = client;
                    if !relock(&self.state, &self.opts.run, limit).await {
                        tracing::warn!("could not take the flip's lock again on the fresh session");
                    }
                    if let Some(w) = self.watchdog.as_mut() {
                        w.holder(&self.backends[0]).await;
                    }
                }
                1 => self.old = client,
                _ => self.new = client,
            }
        }
        all
    }
}

/// Whether a session is open and answers a `SELECT 1` within `limit`.
async fn answers(c: &Client, limit: Duration) -> bool {
    !c.is_closed()
        && matches!(
            tokio::time::timeout(limit, c.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
}

/// How long [`Ctx::revive`] tries to open a fresh session to a server that went silent.
pub(crate) const REVIVE_LIMIT: Duration = Duration::from_secs(30);

/// A fresh session to `spec`, each attempt bounded by `limit` (a connection accepted and
/// never answered waits otherwise), tried until [`REVIVE_LIMIT`].
async fn reconnect(
    spec: &ConnSpec,
    side: &'static str,
    limit: Duration,
) -> Option<(Client, Backend)> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let c = connect(spec, side).await?;
            let b = session(&c).await?;
            Ok::<_, Error>((c, b))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(fresh)) => return Some(fresh),
            Ok(Err(e)) => tracing::debug!(side, error = %e, "fresh session failed"),
            Err(_) => tracing::debug!(side, "fresh session got no answer"),
        }
        if started.elapsed() > REVIVE_LIMIT {
            tracing::error!(side, "no fresh session within {REVIVE_LIMIT:?}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ends the backend of a session given up, if it is still there (same pid, same start);
/// says whether it is gone (ended now, or not there).
pub(crate) async fn end_backend(c: &Client, b: &Backend, limit: Duration) -> bool {
    if b.pid == 0 {
        return true;
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&b.pid, &b.started];
    let end = c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid = $1 AND backend_start::text = $2",
        &params,
    );
    match tokio::time::timeout(limit, end).await {
        Ok(Ok(n)) => {
            if n > 0 {
                tracing::info!(pid = b.pid, "the silent session's backend ended");
            }
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(pid = b.pid, error = %e, "could not end the silent session's backend");
            false
        }
        Err(_) => {
            tracing::warn!(
                pid = b.pid,
                "could not end the silent session's backend in time"
            );
            false
        }
    }
}

/// Takes the flip's lock on a fresh state session once the silent one's backend let it go.
async fn relock(c: &Client, run: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        match tokio::time::timeout(limit, state::flips::take_lock(c, run)).await {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => return false,
        }
    }
    false
}
