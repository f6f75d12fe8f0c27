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

    /// Nothing to sync from: no run, or its copy has not finished.
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Conn { source, .. } => source.hint().into(),
            Error::SchemaMismatch { ddl, .. } => format!("run on the target: {ddl}"),
            Error::NotReady(_) => "run bluegreen copy for this run first".into(),
            _ => "sync reconnects and resumes from the target's replication origin; see bluegreen status".into(),
        }
    }

    /// Worth retrying after a pause: lost connections, a restarted server, a terminated
    /// walsender, a failed transaction (it is replayed whole from the origin), a schema
    /// change waiting for its DDL. Not: a missing run or slot, refused credentials.
    pub fn retryable(&self) -> bool {
        match self {
            Error::NotReady(_) => false,
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
