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

    /// The run's logical slot is not on the server sync streams from (`abort --source`
    /// removed it, or someone dropped it): the changes since the copy are lost to the run.
    #[error("replication slot {slot} is gone from the {side}")]
    SlotMissing { side: &'static str, slot: String },

    /// The run's publication is not on the server sync streams from.
    #[error("publication {publication} is gone from the {side}")]
    PublicationMissing {
        side: &'static str,
        publication: String,
    },

    /// `abort` removed the run's state while sync was starting a session.
    #[error("run {0} was removed (abort)")]
    RunRemoved(String),

    /// The stream broke pgoutput's rules (a change outside a transaction, a relation used
    /// before its description, a value in a form not asked for).
    #[error("unexpected stream from the source: {0}")]
    Protocol(String),

    /// bluegreen broke its own rule (a bug): the applier stops rather than guess.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Conn { source, .. } => source.hint().into(),
            Error::SchemaMismatch { ddl, .. } => format!("run on the target: {ddl}"),
            Error::NotReady(_) => "run bluegreen copy for this run first".into(),
            Error::SlotMissing { .. } => "the changes since the copy can no longer be streamed, so the run must start over: remove it with bluegreen abort --target (add --drop-data to drop what its copy created), then run bluegreen copy again".into(),
            Error::PublicationMissing { publication, .. } => format!(
                "recreate it as copy made it (CREATE PUBLICATION {publication} FOR TABLES IN SCHEMA <the run's schemas>) and run sync again, or start over with bluegreen abort and copy"
            ),
            Error::RunRemoved(_) => "nothing is left to sync; run bluegreen copy to start a new run".into(),
            Error::Internal(_) => "sync stopped rather than guess: run it again (it resumes from the target's replication origin; a group cut short was rolled back), and please report this with the log".into(),
            Error::Protocol(_) => "run sync again (it resumes from the target's replication origin); if this repeats, report it with the log and the source's version".into(),
            Error::LinkDead { .. } => "check the network path to that server (firewall, NAT or load balancer timeouts); sync reconnects with backoff and resumes from the target's replication origin".into(),
            Error::Abandoned { .. } => "run bluegreen sync again: it resumes exactly where the last commit left off".into(),
            Error::Unsupported { fix, .. } => fix.clone(),
            Error::Sql { side, source, .. } if conn::out_of_disk(source) => format!("free space on the {side} (grow its volume, or move what fills it): sync retries with backoff and goes on by itself, from the target's replication origin"),
            _ => "sync reconnects and resumes from the target's replication origin; see bluegreen status".into(),
        }
    }

    /// Worth retrying after a pause: lost connections, a restarted server, a terminated
    /// walsender, a failed transaction (it is replayed whole from the origin), a schema
    /// change waiting for its DDL. Not: a missing run or slot, refused credentials.
    pub fn retryable(&self) -> bool {
        match self {
            Error::NotReady(_)
            | Error::Abandoned { .. }
            | Error::Unsupported { .. }
            | Error::SlotMissing { .. }
            | Error::PublicationMissing { .. }
            | Error::RunRemoved(_)
            | Error::Protocol(_)
            | Error::Internal(_) => false,
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
