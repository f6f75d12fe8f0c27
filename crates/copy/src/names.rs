//! A run's name, checked before it names anything (the names themselves are made in
//! `state::names`).

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

pub use state::names::{publication, resume_slot, slot};
