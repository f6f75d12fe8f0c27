//! Errors of the replication client. Server errors keep every field the server sent, so
//! callers can branch on the SQLSTATE instead of matching message text.

use std::fmt;
use std::time::Duration;

use crate::pgoutput::DecodeError;

/// An ErrorResponse or NoticeResponse from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// ERROR, FATAL, PANIC, or WARNING/NOTICE/... for notices (localized field `S`;
    /// the non-localized `V` is preferred when present).
    pub severity: String,
    /// SQLSTATE, e.g. `42704`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub position: Option<String>,
    pub where_: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub constraint: Option<String>,
    pub routine: Option<String>,
}

impl DbError {
    /// Builds from the (field type, value) pairs of an ErrorResponse/NoticeResponse.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (u8, &'a [u8])>) -> DbError {
        let mut e = DbError::default();
        let mut localized_severity = None;
        for (ty, value) in fields {
            let v = String::from_utf8_lossy(value).into_owned();
            match ty {
                b'S' => localized_severity = Some(v),
                b'V' => e.severity = v,
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                b'H' => e.hint = Some(v),
                b'P' => e.position = Some(v),
                b'W' => e.where_ = Some(v),
                b's' => e.schema = Some(v),
                b't' => e.table = Some(v),
                b'c' => e.column = Some(v),
                b'n' => e.constraint = Some(v),
                b'R' => e.routine = Some(v),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_default();
        }
        e
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an ErrorResponse.
    #[error("server error: {0}")]
    Db(Box<DbError>),
    /// Connection settings or TLS setup (from crate `conn`).
    #[error(transparent)]
    Conn(#[from] conn::Error),
    #[error("cannot reach {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("pgoutput: {0}")]
    Decode(#[from] DecodeError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("could not connect within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the server closed the connection unexpectedly")]
    Closed,
    /// The server left CopyBoth on its own (shutdown, or a second START_REPLICATION on one
    /// connection, which PostgreSQL 15 ends at once), not at our request.
    #[error("the server ended the replication stream without being asked to")]
    StreamEndedByServer,
    /// Nothing came from the server for this long although a reply was asked for: the link
    /// is taken for dead (see [`crate::StreamConfig::silence_timeout`]).
    #[error("no message from the server for {} s although a reply was asked for: the link looks dead", .0.as_secs_f64())]
    Silent(Duration),
    /// The stream's background task is gone (it failed earlier or was shut down).
    #[error("the replication stream is no longer running")]
    StreamGone,
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Db(Box::new(e))
    }
}

impl Error {
    /// The server's error, when this is one.
    pub fn db(&self) -> Option<&DbError> {
        match self {
            Error::Db(e) => Some(e),
            _ => None,
        }
    }

    /// SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Db(e) => Some(e.code.as_str()),
            Error::Conn(e) => e.sqlstate(),
            _ => None,
        }
    }
}

/// SQLSTATEs the replication client's callers branch on.
pub mod sqlstate {
    /// Unknown slot or publication.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// Slot already exists.
    pub const DUPLICATE_OBJECT: &str = "42710";
    /// Role lacks REPLICATION.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// Wrong password.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// No pg_hba entry / authentication failed in another way.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// Slot is active for another process.
    pub const OBJECT_IN_USE: &str = "55006";
    /// pg_terminate_backend and shutdown.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_map_and_nonlocalized_severity_wins() {
        let e = DbError::from_fields([
            (b'S', &b"FEHLER"[..]),
            (b'V', b"ERROR"),
            (b'C', b"42704"),
            (b'M', b"replication slot \"x\" does not exist"),
            (b'D', b"d"),
            (b'H', b"h"),
            (b'Z', b"ignored"),
        ]);
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42704");
        assert_eq!(
            e.to_string(),
            "ERROR 42704: replication slot \"x\" does not exist; DETAIL: d; HINT: h"
        );
        assert_eq!(Error::from(e).code(), Some("42704"));
    }
}
