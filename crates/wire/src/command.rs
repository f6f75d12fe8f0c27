//! Text of the replication commands, with names validated and quoted.

use crate::error::Error;
use crate::lsn::Lsn;

/// Slot names as the server allows them: lowercase letters, digits, underscore, 1 to 63.
pub fn validate_slot_name(name: &str) -> Result<(), Error> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "slot name {name:?} must be 1 to 63 characters of [a-z0-9_]"
        )))
    }
}

/// `"ident"` with embedded quotes doubled. NUL cannot travel in the protocol at all.
pub fn quote_ident(s: &str) -> Result<String, Error> {
    reject_nul(s)?;
    Ok(format!("\"{}\"", s.replace('"', "\"\"")))
}

/// `'literal'` with embedded quotes doubled. The replication grammar has no E'' strings
/// and backslashes are literal under standard_conforming_strings, so doubling is all.
pub fn quote_literal(s: &str) -> Result<String, Error> {
    reject_nul(s)?;
    Ok(format!("'{}'", s.replace('\'', "''")))
}

fn reject_nul(s: &str) -> Result<(), Error> {
    if s.contains('\0') {
        return Err(Error::InvalidArgument(format!("{s:?} contains a NUL byte")));
    }
    Ok(())
}

pub const IDENTIFY_SYSTEM: &str = "IDENTIFY_SYSTEM";

/// What CREATE_REPLICATION_SLOT does with the snapshot at the consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it for `SET TRANSACTION SNAPSHOT` (valid until the next command on the
    /// connection that created the slot).
    Export,
    NoExport,
    /// Make it the snapshot of the current transaction (needs an open transaction; of little
    /// use on a replication connection, listed for completeness).
    Use,
}

pub fn create_replication_slot(
    slot: &str,
    temporary: bool,
    snapshot: SnapshotAction,
) -> Result<String, Error> {
    validate_slot_name(slot)?;
    let snapshot = match snapshot {
        SnapshotAction::Export => "export",
        SnapshotAction::NoExport => "nothing",
        SnapshotAction::Use => "use",
    };
    Ok(format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput (SNAPSHOT '{snapshot}')",
        quote_ident(slot)?,
        if temporary { " TEMPORARY" } else { "" },
    ))
}

pub fn drop_replication_slot(slot: &str) -> Result<String, Error> {
    validate_slot_name(slot)?;
    Ok(format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(slot)?))
}

/// pgoutput options of START_REPLICATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOutputOptions {
    /// 1 or 2 (2 adds streaming support we do not request; the message layout is the same).
    pub proto_version: u8,
    pub publications: Vec<String>,
    /// Ask for `pg_logical_emit_message` messages.
    pub messages: bool,
    /// Binary send form for column values instead of text.
    pub binary: bool,
}

impl PgOutputOptions {
    /// proto_version 1, text values, logical messages on.
    pub fn new(publications: impl IntoIterator<Item = impl Into<String>>) -> Self {
        PgOutputOptions {
            proto_version: 1,
            publications: publications.into_iter().map(Into::into).collect(),
            messages: true,
            binary: false,
        }
    }
}

pub fn start_replication(slot: &str, start: Lsn, o: &PgOutputOptions) -> Result<String, Error> {
    validate_slot_name(slot)?;
    if !(1..=2).contains(&o.proto_version) {
        return Err(Error::InvalidArgument(format!(
            "proto_version {} (this client speaks 1 and 2)",
            o.proto_version
        )));
    }
    if o.publications.is_empty() {
        return Err(Error::InvalidArgument("no publication given".into()));
    }
    // publication_names is a list of identifiers inside one string literal.
    let names = o
        .publications
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    let mut opts = vec![
        format!("proto_version '{}'", o.proto_version),
        format!("publication_names {}", quote_literal(&names)?),
    ];
    if o.messages {
        opts.push("messages 'true'".into());
    }
    if o.binary {
        opts.push("binary 'true'".into());
    }
    Ok(format!(
        "START_REPLICATION SLOT {} LOGICAL {start} ({})",
        quote_ident(slot)?,
        opts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        for ok in ["a", "bluegreen_run_1", &"x".repeat(63)] {
            assert!(validate_slot_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a-b", "a b", "é", &"x".repeat(64), "a\"b"] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_quote_everything() {
        assert_eq!(
            create_replication_slot("s1", true, SnapshotAction::Export).unwrap(),
            "CREATE_REPLICATION_SLOT \"s1\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            drop_replication_slot("s1").unwrap(),
            "DROP_REPLICATION_SLOT \"s1\" WAIT"
        );
        let mut o = PgOutputOptions::new(["pub", "we'ird \"one\""]);
        o.binary = true;
        assert_eq!(
            start_replication("s1", Lsn(0x1_0000_0002), &o).unwrap(),
            "START_REPLICATION SLOT \"s1\" LOGICAL 1/2 (proto_version '1', \
             publication_names '\"pub\",\"we''ird \"\"one\"\"\"', messages 'true', binary 'true')"
        );
        assert!(
            start_replication("s1", Lsn(0), &PgOutputOptions::new(Vec::<String>::new())).is_err()
        );
        assert!(start_replication("S1", Lsn(0), &o).is_err());
        assert!(quote_literal("a\0b").is_err());
    }
}
