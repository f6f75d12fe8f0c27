//! What a flip has done that a failure must put back, as a stack: each step pushes its undo
//! once it has (or may have) taken effect, and a failure unwinds it newest first. Best
//! effort: every undo is tried even if an earlier one fails, and failures are logged for the
//! operator. Bounded: each undo gets [`undo_limit`], so a session that went silent fails
//! its undo instead of holding it (and the paused clients) for good.

use std::time::Duration;

use futures_util::future::join_all;

use crate::ctx::Ctx;
use crate::{dbfile, fence, reverse, Direction, Options};

/// How long one undo may take (and one probe of a session before the undo): twice
/// --pause-timeout, 10 s at least (an undo opens a fresh connection and makes a few round
/// trips).
pub(crate) fn undo_limit(opts: &Options) -> Duration {
    opts.pause_timeout.max(Duration::from_secs(5)) * 2
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Remove the reverse slot, publication and run row on green.
    DisarmReverse,
    /// RESUME these poolers (by index; "not paused" counts as done).
    Resume(Vec<usize>),
    /// Lift the old primary's fence.
    LiftFence,
    /// Release the applier's hold.
    ReleaseHold,
    /// Fence the new primary again (a rollback had unfenced blue).
    FenceNew,
    /// Put a pooler's databases file back and RELOAD it.
    RestoreFile { pooler: usize, text: String },
}

#[derive(Debug, Default)]
pub(crate) struct UndoStack(Vec<Undo>);

impl UndoStack {
    pub fn push(&mut self, u: Undo) {
        self.0.push(u);
    }

    /// Forgets an undo that is no longer needed (a pre-drain round released its hold).
    pub fn forget(&mut self, u: &Undo) {
        if let Some(i) = self.0.iter().rposition(|x| x == u) {
            self.0.remove(i);
        }
    }

    /// Everything a flip in `dir` may have done, files aside (for a flip whose process died:
    /// each undo is harmless where its step had not happened).
    pub fn everything(dir: Direction, poolers: usize) -> UndoStack {
        let mut s = UndoStack::default();
        if dir == Direction::Cutover {
            s.push(Undo::DisarmReverse);
        }
        s.push(Undo::Resume((0..poolers).collect()));
        s.push(Undo::LiftFence);
        s.push(Undo::ReleaseHold);
        if dir == Direction::Rollback {
            s.push(Undo::FenceNew);
        }
        s
    }

    /// Unwinds the stack, newest first.
    /// Whether every undo succeeded (each failure is logged).
    pub async fn unwind(self, cx: &Ctx<'_>) -> bool {
        let mut clean = true;
        for u in self.0.into_iter().rev() {
            clean &= undo(cx, u).await;
        }
        clean
    }
}

/// Whether the undo succeeded within [`undo_limit`].
async fn undo(cx: &Ctx<'_>, u: Undo) -> bool {
    let limit = undo_limit(cx.opts);
    let what = format!("{u:?}");
    match tokio::time::timeout(limit, undo_one(cx, u)).await {
        Ok(clean) => clean,
        Err(_) => {
            tracing::error!(undo = what, "undo got no answer within {limit:?}");
            false
        }
    }
}

async fn undo_one(cx: &Ctx<'_>, u: Undo) -> bool {
    let limit = cx.opts.pause_timeout;
    let mut clean = true;
    match u {
        Undo::RestoreFile { pooler, text } => {
            let admin = &cx.admins[pooler];
            if let Err(e) = dbfile::write_atomically(&admin.spec.file, &text) {
                tracing::error!(error = %e, "could not restore the databases file");
                clean = false;
            }
            // On a fresh connection: the flip's own may be the one that went silent.
            if let Err(e) = admin.reload_fresh(limit).await {
                tracing::error!(error = %e, "RELOAD after restoring failed");
                clean = false;
            }
        }
        Undo::FenceNew => {
            if let Err(e) = fence::raise(&cx.new, &cx.state, &cx.opts.run, cx.side(false)).await {
                tracing::error!(error = %e, "could not fence blue again");
                clean = false;
            }
        }
        Undo::ReleaseHold => {
            if let Err(e) = state::release(&cx.state, &cx.apply_run).await {
                tracing::error!(error = %e, "could not release the applier's hold");
                clean = false;
            }
        }
        Undo::LiftFence => {
            if let Err(e) = fence::lift(&cx.old, Some(&cx.state), &cx.opts.run, cx.side(true)).await
            {
                tracing::error!(error = %e, "could not unfence the old primary");
                clean = false;
            }
        }
        Undo::Resume(poolers) => {
            let resumes = join_all(poolers.iter().map(|&i| async move {
                let r = cx.admins[i].resume(limit).await?;
                r.restore(limit).await;
                Ok::<_, crate::Error>(())
            }))
            .await;
            for r in resumes {
                if let Err(e) = r {
                    tracing::error!(error = %e, "RESUME failed: resume that pooler by hand");
                    clean = false;
                }
            }
        }
        Undo::DisarmReverse => {
            if let Err(e) = reverse::disarm(cx).await {
                tracing::error!(error = %e, "could not remove the reverse slot");
                clean = false;
            }
        }
    }
    clean
}
