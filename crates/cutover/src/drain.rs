//! Holding the applier at the old primary's position: the pre-drain rounds before the pause,
//! and the drain inside it.

use std::time::{Duration, Instant};

use lsn::Lsn;
use state::ApplyStatus;

use crate::ctx::Ctx;
use crate::undo::{Undo, UndoStack};
use crate::{far, Error};

/// How often the drain looks whether the applier holds: before the pause (pre-drain rounds,
/// which may last seconds), and in it, where clients wait (a read of green's state each
/// millisecond costs it little; 5 ms steps added up to 5 ms to every pause).
const BEFORE_PAUSE: Duration = Duration::from_millis(5);
pub(crate) const IN_PAUSE: Duration = Duration::from_millis(1);
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
pub(crate) async fn pre_drain(cx: &mut Ctx<'_>, undo: &mut UndoStack) -> Result<(), Error> {
    let begun = Instant::now();
    let (mut best, mut stale) = (Duration::MAX, 0);
    for round in 1..=PRE_DRAIN_ROUNDS {
        let started = Instant::now();
        let lsn = drain(cx, undo).await?;
        state::release(&cx.state, &cx.apply_run).await?;
        undo.forget(&Undo::ReleaseHold);
        let took = started.elapsed();
        tracing::debug!(
            round,
            lsn = %lsn,
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
pub(crate) fn held_by_another(cx: &Ctx<'_>) -> Error {
    Error::Guardrail(format!(
        "the applier of run {} is held by another process (a verify?): cut over when it \
         is released (bluegreen status shows the hold; the applier drops a hold its \
         requester abandoned after sync's --hold-expiry, 10 minutes by default)",
        cx.apply_run
    ))
}

/// Asks the applier to stop exactly at the old primary's current position and waits until
/// it has: then the new primary holds every write the old one committed. The position is
/// WAL's insert position, past every record inserted so far: under asynchronous commit a
/// transaction that committed before the fence may not be written yet, and the write
/// position (`pg_current_wal_lsn`) could fall short of its commit record.
pub(crate) async fn drain(cx: &mut Ctx<'_>, undo: &mut UndoStack) -> Result<Lsn, Error> {
    let lsn: Lsn = far::row(
        &cx.old,
        "old primary",
        "current WAL position",
        "SELECT pg_current_wal_insert_lsn()",
        &[],
    )
    .await?
    .get(0);
    hold_at(cx, undo, lsn).await
}

/// Holds the applier at `lsn`, a position already taken on the old primary, and waits until
/// it is there.
async fn hold_at(cx: &Ctx<'_>, undo: &mut UndoStack, lsn: Lsn) -> Result<Lsn, Error> {
    if !state::take_hold(&cx.state, &cx.apply_run, lsn).await? {
        return Err(held_by_another(cx));
    }
    undo.push(Undo::ReleaseHold);
    // A message after the position tells the applier the stream has passed it. The wait
    // starts as it is sent: the applier sees it once the old primary has flushed it, about
    // when its answer comes back, so waiting for the answer first costs a round trip.
    let emit = async { Ok(state::emit_hold_message(&cx.old).await?) };
    futures_util::future::try_join(emit, wait_held(cx, lsn, BEFORE_PAUSE)).await?;
    Ok(lsn)
}

/// Inside the pause: holds the applier at the next drain message, which `fence::close` sends
/// in its own round trip, so the drain costs none of its own.
pub(crate) async fn hold_next_message(cx: &Ctx<'_>, undo: &mut UndoStack) -> Result<(), Error> {
    if !state::take_hold(&cx.state, &cx.apply_run, state::apply::AT_NEXT_MESSAGE).await? {
        return Err(held_by_another(cx));
    }
    undo.push(Undo::ReleaseHold);
    Ok(())
}

fn drain_timeout(cx: &Ctx<'_>, lsn: Lsn) -> Error {
    Error::Timeout(format!(
        "the applier did not reach {lsn} within --drain-timeout {:?}",
        cx.opts.drain_timeout
    ))
}

/// Until the applier reports itself held at `lsn`, --drain-timeout at most. Held anywhere
/// else (at a drain message `fence::close` sent before its last one, while sessions were
/// still being ended, or one left from an earlier attempt), the hold is moved to `lsn`.
/// Looks every `poll`: [`IN_PAUSE`] while clients are paused.
pub(crate) async fn wait_held(cx: &Ctx<'_>, lsn: Lsn, poll: Duration) -> Result<(), Error> {
    let started = Instant::now();
    let mut moved_from = None;
    loop {
        let held = ApplyStatus::get(&cx.state, &cx.apply_run)
            .await?
            .and_then(|a| a.held_lsn);
        match held {
            Some(h) if h == lsn => return Ok(()),
            Some(h) if moved_from != Some(h) => {
                tracing::debug!(held = %h, %lsn, "applier held at an earlier drain message; moving it");
                state::request_hold(&cx.state, &cx.apply_run, lsn).await?;
                moved_from = Some(h);
            }
            _ => {}
        }
        if started.elapsed() > cx.opts.drain_timeout {
            return Err(drain_timeout(cx, lsn));
        }
        tokio::time::sleep(poll).await;
    }
}
