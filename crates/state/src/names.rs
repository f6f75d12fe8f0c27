//! Every name a run gives to what it creates, made here and nowhere else, so `abort`,
//! `status` and every stage find the same artifacts: the slot and publication on the source,
//! the replication origin on the target, temporary slots, the reverse run after cutover,
//! prepared parts of sync groups, and the prefixes of the logical messages bluegreen writes.

use lsn::Lsn;

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

/// The temporary slot `bluegreen peek` reads from when not given one (unique per process
/// and moment, so two peeks never collide).
pub fn peek_slot() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{PREFIX}_peek_{}_{nanos}", std::process::id())
}

/// Prefix of the logical message a hold requester emits on the source (the applier reads
/// the request at once when it sees one).
pub const HOLD_MESSAGE: &str = PREFIX;

/// Prefix of the logical message sync emits on the source every 200 ms, so lag is measured
/// even when the source is idle.
pub const HEARTBEAT_MESSAGE: &str = "bluegreen_heartbeat";

/// Name of the prepared part of a sync group on the target: the run's origin, the group's
/// end LSN, the apply session's number.
pub fn prepared_part(origin: &str, lsn: Lsn, session: usize) -> String {
    format!("{origin}@{lsn}#{session}")
}

/// The group end LSN in a prepared part's name, if the name is one of `origin`'s.
pub fn prepared_part_lsn(origin: &str, gid: &str) -> Option<Lsn> {
    let rest = gid.strip_prefix(origin)?.strip_prefix('@')?;
    rest.split_once('#')?.0.parse().ok()
}

/// The SQL pattern (for `starts_with`) every prepared part of `origin` matches.
pub fn prepared_part_prefix(origin: &str) -> String {
    format!("{origin}@")
}

/// The reverse stream's run name: green's changes flow to blue under it after cutover.
pub fn reverse_run(run: &str) -> String {
    format!("{run}_reverse")
}

/// The statement-level trigger verify puts on green's tables before cutover, so writes by
/// anyone but the applier are noticed (see `state::changes`); cutover and abort remove it.
pub const WATCH_TRIGGER: &str = "bluegreen_watch";

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
        assert!(peek_slot().starts_with("bluegreen_peek_"));
    }

    #[test]
    fn prepared_parts_are_named_by_origin_and_group_end() {
        let lsn: Lsn = "1A/2B3C".parse().unwrap();
        let gid = prepared_part("bluegreen_main", lsn, 1);
        assert_eq!(gid, "bluegreen_main@1A/2B3C#1");
        assert!(gid.starts_with(&prepared_part_prefix("bluegreen_main")));
        assert_eq!(prepared_part_lsn("bluegreen_main", &gid), Some(lsn));
        // Another run's origin that starts alike is not this one's.
        assert_eq!(
            prepared_part_lsn("bluegreen_main", "bluegreen_main2@1A/2B3C#1"),
            None
        );
        assert_eq!(
            prepared_part_lsn("bluegreen_main", "bluegreen_main@junk#1"),
            None
        );
    }
}
