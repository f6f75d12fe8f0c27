use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{side}: {source}")]
    Conn {
        side: &'static str,
        #[source]
        source: conn::Error,
    },

    #[error("source stream: {0}")]
    Wire(#[from] wire::Error),

    #[error(transparent)]
    State(#[from] state::Error),

    #[error("{side}: {what}: {}", conn::pg_message(source))]
    Sql {
        side: &'static str,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The source has a table or column the target lacks. Apply waits for the DDL.
    #[error("{table}: {problem}")]
    SchemaMismatch {
        table: String,
        problem: String,
        ddl: String,
    },

    /// A change would touch a row that another apply session changed in the same group (it
    /// holds the row's lock until the group commits): the group is replayed over one session.
    #[error("{table}: a change touches a row another apply session changed in the same group")]
    Replay { table: String, lsn: wire::Lsn },

    /// The origin advanced between reading it and taking it (an ended session's commit
    /// finished meanwhile): the session starts again from it.
    #[error("the replication origin moved while the session started")]
    OriginMoved,

    /// A server gave no answer within the link timeout: the connection (or the path to the
    /// server) is taken for dead, and the session reconnects.
    #[error("{side}: no answer within {} s (--link-timeout): the link looks dead", .after.as_secs_f64())]
    LinkDead {
        side: &'static str,
        after: std::time::Duration,
    },

    /// Stopped before the transaction at hand could be finished (a second stop request, the
    /// grace period after the first, or a dead link while stopping).
    #[error("stopped without finishing: {why}; changes received after {applied} were not committed on the target, and the next sync resumes from the target's replication origin at {applied}")]
    Abandoned { why: String, applied: wire::Lsn },

    /// Nothing to sync from: no run, or its copy has not finished.
    #[error("{0}")]
    NotReady(String),

    /// A change bluegreen cannot mirror exactly; sync stops rather than go on without it.
    #[error("{what} is not mirrored")]
    Unsupported { what: String, fix: String },
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Conn { source, .. } => source.hint().into(),
            Error::SchemaMismatch { ddl, .. } => format!("run on the target: {ddl}"),
            Error::NotReady(_) => "run bluegreen copy for this run first".into(),
            Error::LinkDead { .. } => "check the network path to that server (firewall, NAT or load balancer timeouts); sync reconnects with backoff and resumes from the target's replication origin".into(),
            Error::Abandoned { .. } => "run bluegreen sync again: it resumes exactly where the last commit left off".into(),
            Error::Unsupported { fix, .. } => fix.clone(),
            _ => "sync reconnects and resumes from the target's replication origin; see bluegreen status".into(),
        }
    }

    /// Worth retrying after a pause: lost connections, a restarted server, a terminated
    /// walsender, a failed transaction (it is replayed whole from the origin), a schema
    /// change waiting for its DDL. Not: a missing run or slot, refused credentials.
    pub fn retryable(&self) -> bool {
        match self {
            Error::NotReady(_) | Error::Abandoned { .. } | Error::Unsupported { .. } => false,
            Error::Conn { source, .. } => matches!(
                source,
                conn::Error::Unreachable { .. } | conn::Error::Server { .. }
            ),
            Error::Wire(wire::Error::Auth(_)) => false,
            Error::Wire(e) => {
                // 42704: the slot or publication is gone (abort ran); 28xxx: credentials.
                !matches!(e.code(), Some(s) if s == wire::sqlstate::UNDEFINED_OBJECT || s.starts_with("28"))
            }
            _ => true,
        }
    }
}

pub(crate) fn sql(
    side: &'static str,
    what: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let what = what.into();
    move |source| Error::Sql { side, what, source }
}
