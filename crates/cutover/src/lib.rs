//! Cutover and rollback: move client traffic between blue and green by flipping every
//! PgBouncer at once, with a pause clients hardly notice and no write lost.
//!
//! The steps ([`Step`], each timed into the audit log): guardrails → (cutover: a fence a
//! rollback left on green lifted, then the reverse slot and publication armed, so rollback
//! works before green takes a write) → sequences pre-synced → materialized views refreshed
//! on the new primary → pre-drain (the applier catches up with the old primary while clients
//! still write) → PAUSE on every pooler, the old primary fenced meanwhile → its other
//! sessions ended, its WAL insert position and sequences read in one round trip → the
//! applier holds exactly at that position → final sequence sync → (rollback: blue unfenced) →
//! databases files rewritten, RELOAD, each pooler checked → commit point → RESUME → the old
//! direction's sync stops. Each step pushes its undo; a failure before the commit point
//! unwinds them newest first (traffic stays on the old primary, its sync keeps running), and
//! a flip whose process dies is undone or finished by its watchdog or the next command.
//! Nothing in the pause waits without a bound: each step from PAUSE to the commit point has
//! a deadline (`flip::within`), a failed flip's silent sessions are replaced by fresh ones
//! before its undo (`Ctx::revive`), and each undo is bounded (`undo::undo_limit`). The steps
//! before the PAUSE and after the commit point fail when a probe finds a link dead
//! (`links`).
//!
//! Layout: `flip` runs the steps, `guardrails` checks before anything is touched, `links`
//! probes both servers, `undo`
//! holds the undo stack, `fence` closes the old primary, `drain` holds the applier,
//! `unreplicated` carries sequences and materialized views, `reverse` arms and removes the
//! reverse stream, `recover` and `watchdog` deal with a dead flip, `pooler` and `dbfile`
//! talk to PgBouncer.

mod ctx;
pub mod dbfile;
mod drain;
mod error;
mod far;
mod fence;
mod flip;
mod guardrails;
mod links;
pub mod pooler;
mod recover;
mod rehearse;
mod reverse;
mod step;
mod undo;
mod unreplicated;
pub mod watchdog;

use std::time::Duration;

use conn::ConnSpec;
use state::Side;
use tokio_postgres::Client;

pub use crate::error::Error;
use crate::flip::flip;
pub use crate::pooler::PoolerSpec;
pub use crate::recover::{before_abort, recover, BeforeAbort, Recovery};
pub use crate::rehearse::rehearse;
pub use crate::reverse::remove_reverse;
pub use crate::step::Step;

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
    /// A server that answers no probe this long fails the step at hand where the step has
    /// no bound of its own (before the PAUSE, after the commit point); zero: the default.
    pub link_timeout: Duration,
}

/// What a flip reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// From the first PAUSE sent to the last RESUME answered.
    pub paused: Duration,
    pub steps: Vec<(String, f64)>,
    /// The old primary's LSN the new one was caught up to.
    pub drained_at: lsn::Lsn,
    /// Sessions on the old primary that did not come from bluegreen, ended at fencing time.
    pub other_sessions: Vec<String>,
    /// Roles other than bluegreen's that the fence cannot keep out of the old primary
    /// (superusers, members of bluegreen's role).
    pub unbound_roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Blue to green.
    Cutover,
    /// Green back to blue.
    Rollback,
}

pub use state::names::reverse_run;

impl Direction {
    /// Which server clients leave and which they go to.
    fn sides(self) -> (Side, Side) {
        match self {
            Direction::Cutover => (Side::Blue, Side::Green),
            Direction::Rollback => (Side::Green, Side::Blue),
        }
    }
}

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

/// A session to `side`, bounded as a whole by [`conn::DEFAULT_LINK_TIMEOUT`]: a server (or
/// something in front of it) that accepts the connection and never answers would hold the
/// startup for good, and tokio-postgres' connect timeout bounds only the TCP connect.
async fn connect(spec: &ConnSpec, side: &'static str) -> Result<Client, Error> {
    let limit = conn::DEFAULT_LINK_TIMEOUT;
    match tokio::time::timeout(limit, conn::connect(spec)).await {
        Ok(r) => r.map_err(|source| Error::Conn { side, source }),
        Err(_) => Err(Error::Timeout(format!(
            "{side}: {} gave no answer to the connection within {limit:?}",
            spec.target()
        ))),
    }
}
