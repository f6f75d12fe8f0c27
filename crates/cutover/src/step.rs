//! The steps of a flip, as printed, timed into the audit log and named in errors; and the
//! test-only hooks that stop or fail a flip at a step.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// One step of a cutover or rollback, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is touched before these pass.
    Guardrails,
    /// Verify's watch trigger (see `state::changes`) leaves the new primary's tables before
    /// it takes traffic.
    Unwatch,
    /// Cutover: a fence an earlier rollback left on green is lifted.
    UnfenceGreen,
    /// Cutover: the reverse slot and publication on green.
    ArmRollback,
    PreSyncSequences,
    RefreshMaterializedViews,
    /// The applier catches up while clients still write.
    PreDrain,
    /// The old primary's CONNECT grants read and the fence's record written on green, so
    /// that raising the fence inside the pause takes one round trip.
    PrepareFence,
    /// PAUSE on every pooler; a cutover raises the old primary's fence meanwhile (a failure
    /// there is the fence's).
    Pause,
    /// The old primary's other sessions ended; its WAL position and sequences read.
    Fence,
    /// The applier held at that position.
    Drain,
    /// The new primary's sequences set to the values read at the fence.
    FinalSequenceSync,
    /// Rollback: blue takes writes again.
    Unfence,
    /// Every pooler's databases file points at the new primary, reloaded and checked.
    Flip,
    /// From here on a dead flip is finished, not undone.
    CommitPoint,
    Resume,
    /// A rehearsal: the staging pooler's file put back (PAUSE, RELOAD, RESUME).
    FlipBack,
    /// A rehearsal: the reverse slot and publication removed again.
    DisarmRollback,
}

impl Step {
    pub const ALL: [Step; 18] = [
        Step::Guardrails,
        Step::Unwatch,
        Step::UnfenceGreen,
        Step::ArmRollback,
        Step::PreSyncSequences,
        Step::RefreshMaterializedViews,
        Step::PreDrain,
        Step::PrepareFence,
        Step::Pause,
        Step::Fence,
        Step::Drain,
        Step::FinalSequenceSync,
        Step::Unfence,
        Step::Flip,
        Step::CommitPoint,
        Step::Resume,
        Step::FlipBack,
        Step::DisarmRollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Guardrails => "guardrails",
            Step::Unwatch => "unwatch",
            Step::UnfenceGreen => "unfence green",
            Step::ArmRollback => "arm rollback",
            Step::PreSyncSequences => "pre-sync sequences",
            Step::RefreshMaterializedViews => "refresh materialized views",
            Step::PreDrain => "pre-drain",
            Step::PrepareFence => "prepare fence",
            Step::Pause => "pause",
            Step::Fence => "fence",
            Step::Drain => "drain",
            Step::FinalSequenceSync => "final sequence sync",
            Step::Unfence => "unfence",
            Step::Flip => "flip",
            Step::CommitPoint => "commit point",
            Step::Resume => "resume",
            Step::FlipBack => "flip back",
            Step::DisarmRollback => "disarm rollback",
        }
    }

    fn named(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A step's failure: which step, and why.
pub(crate) type StepResult<T> = Result<T, (Step, Error)>;

pub(crate) fn at<T>(step: Step, r: Result<T, Error>) -> StepResult<T> {
    r.map_err(|e| (step, e))
}

/// Test-only hooks, unset in production (no effect then):
/// - `BLUEGREEN_TEST_FAIL_AT=before:<step>` or `after:<step>` fails the flip there, as a
///   failing step would (steps up to the commit point; later ones cannot be undone);
/// - `BLUEGREEN_TEST_STALL_AFTER=<step>` holds the coordinator that long
///   (`BLUEGREEN_TEST_STALL_MS`, default 10 s) after the step, so a test can kill it there.
pub(crate) mod inject {
    use super::*;

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        Before,
        After,
    }

    pub fn fail(point: Point, step: Step) -> StepResult<()> {
        let Ok(want) = std::env::var("BLUEGREEN_TEST_FAIL_AT") else {
            return Ok(());
        };
        let hit = match want.split_once(':') {
            Some(("before", s)) => point == Point::Before && Step::named(s) == Some(step),
            Some(("after", s)) => point == Point::After && Step::named(s) == Some(step),
            _ => false,
        };
        if hit {
            return Err((step, Error::Injected(want)));
        }
        Ok(())
    }

    pub fn stall(step: Step) {
        if std::env::var("BLUEGREEN_TEST_STALL_AFTER").is_ok_and(|s| s == step.name()) {
            let ms = std::env::var("BLUEGREEN_TEST_STALL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn every_step_is_found_by_its_name() {
        for s in Step::ALL {
            assert_eq!(Step::named(s.name()), Some(s));
        }
        assert_eq!(Step::named("no such step"), None);
    }
}
