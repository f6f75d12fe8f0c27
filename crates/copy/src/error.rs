use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Bad input found before anything was touched on either server.
    #[error("{what}")]
    Refused { what: String, fix: String },

    /// The plan has blockers; nothing was touched.
    #[error("{} blocker(s) stop the copy", .0.len())]
    Blocked(Vec<catalog::Finding>),

    #[error("{side}: {source}")]
    Conn {
        side: &'static str,
        #[source]
        source: conn::Error,
    },

    #[error("source replication connection: {0}")]
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

    #[error("pg_dump: {0}")]
    PgDump(String),

    #[error("worker failed: {0}")]
    Worker(String),

    /// `copy --join` found no copy of the run to join.
    #[error("no copy of run {run} is running to join")]
    NotRunning { run: String },

    /// The copy a `--join` worker helped stopped during the data phase (its snapshot went
    /// with it), or another `copy` of the run leads it now.
    #[error("the copy of run {run} that this worker joined stopped (its snapshot is gone)")]
    LeaderGone { run: String },

    /// A second leading `copy` of a run that one is copying already (`pid`: the target
    /// backend of its session).
    #[error("a copy of run {run} is running already (another process leads it: target session pid {pid})")]
    AlreadyRunning { run: String, pid: i32 },
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Refused { fix, .. } => fix.clone(),
            Error::Blocked(_) => "fix each blocker as shown (bluegreen plan lists them), then run copy again".into(),
            Error::Conn { source, .. } => source.hint().into(),
            Error::Wire(_) => "check that the source role has REPLICATION and that max_wal_senders/max_replication_slots have room; then run copy again to resume".into(),
            Error::State(e) if e.hint().is_some() => e.hint().unwrap_or_default().into(),
            Error::Sql { side, source, .. } if conn::out_of_disk(source) => format!("free space on the {side} (grow its volume, or move what fills it), then run the same copy again: committed chunks are kept, the rest is redone"),
            Error::State(_) | Error::Sql { .. } => "fix the cause above and run the same copy again: committed chunks are kept, the rest is redone".into(),
            Error::PgDump(_) => "check that pg_dump of the source's major version is installed (BLUEGREEN_PG_BIN points at its directory)".into(),
            Error::Worker(_) => "run the same copy again to resume".into(),
            Error::NotRunning { run } => format!("start the copy first (bluegreen copy --run {run}, without --join), then start the workers; a worker only helps a copy that is running"),
            Error::LeaderGone { run } => format!("run bluegreen copy --run {run} again (it resumes: tables copied in part start over from a new snapshot), then start the workers again; what they committed is kept"),
            Error::AlreadyRunning { run, pid } => format!("let it finish, or help it with bluegreen copy --run {run} --join; if that process is gone (a broken link can leave its session on the target until TCP keepalive notices), end the session on the target with SELECT pg_terminate_backend({pid}) and run copy again"),
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
