//! A run's name and the source-side artifacts named after it, so `abort` can always find
//! them, even with the target's state gone.

use crate::Error;

/// Run names become slot and publication names: lowercase letters, digits, underscore.
pub fn validate_run(run: &str) -> Result<(), Error> {
    let ok = (1..=40).contains(&run.len())
        && run
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Refused {
            what: format!("run name {run:?} is not valid"),
            fix: "use 1 to 40 characters of a-z, 0-9 and _ (it names the replication slot and publication)".into(),
        })
    }
}

/// The run's permanent logical replication slot on the source.
pub fn slot(run: &str) -> String {
    format!("bluegreen_{run}")
}

/// The run's publication on the source.
pub fn publication(run: &str) -> String {
    format!("bluegreen_{run}")
}

/// A temporary slot that exports a fresh snapshot when a run resumes after a crash.
pub fn resume_slot(run: &str) -> String {
    format!("bluegreen_{run}_resume")
}
