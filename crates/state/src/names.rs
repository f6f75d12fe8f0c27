//! Every name a run gives to what it creates, made here and nowhere else, so `abort`,
//! `status` and every stage find the same artifacts: the slot and publication on the source,
//! the replication origin on the target, temporary slots, and the reverse run after cutover.

/// The prefix of every artifact; also the prefix of the logical messages bluegreen writes
/// into the source's WAL (holds, heartbeats).
pub const PREFIX: &str = "bluegreen";

/// The run's permanent logical replication slot on the source.
pub fn slot(run: &str) -> String {
    format!("{PREFIX}_{run}")
}

/// The run's publication on the source.
pub fn publication(run: &str) -> String {
    format!("{PREFIX}_{run}")
}

/// The replication origin on the target that records what the run has applied.
pub fn origin(run: &str) -> String {
    format!("{PREFIX}_{run}")
}

/// A temporary slot that exports a fresh snapshot when a copy resumes after a crash.
pub fn resume_slot(run: &str) -> String {
    format!("{PREFIX}_{run}_resume")
}

/// The temporary slot a verify takes its source snapshot from (one per process).
pub fn verify_slot(run: &str, pid: u32) -> String {
    format!("{PREFIX}_{run}_v{pid}")
}

/// The reverse stream's run name: green's changes flow to blue under it after cutover.
pub fn reverse_run(run: &str) -> String {
    format!("{run}_reverse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_run() {
        assert_eq!(slot("main"), "bluegreen_main");
        assert_eq!(publication("main"), "bluegreen_main");
        assert_eq!(origin("main"), "bluegreen_main");
        assert_eq!(resume_slot("main"), "bluegreen_main_resume");
        assert_eq!(verify_slot("main", 7), "bluegreen_main_v7");
        assert_eq!(slot(&reverse_run("main")), "bluegreen_main_reverse");
    }
}
