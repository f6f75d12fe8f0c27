use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Bad flags or settings (nothing was touched).
    #[error("{0}")]
    Usage(String),

    /// A guardrail says not now (nothing was touched).
    #[error("not cutting over: {0}")]
    Guardrail(String),

    /// A guardrail of a rollback says not now (nothing was touched).
    #[error("not rolling back: {0}")]
    RollbackGuardrail(String),

    #[error("{0}")]
    Pooler(String),

    #[error("{0}")]
    Timeout(String),

    /// A server answered what PostgreSQL would not (no row where one is always returned).
    #[error("{0}")]
    Unexpected(String),

    #[error("{side}: {source}")]
    Conn {
        side: &'static str,
        #[source]
        source: conn::Error,
    },

    #[error("{side}: {what}: {}", conn::pg_message(source))]
    Sql {
        side: &'static str,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(transparent)]
    State(#[from] state::Error),

    #[error("new primary: {0}")]
    Catalog(#[from] catalog::Error),

    #[error("replication connection: {0}")]
    Wire(#[from] wire::Error),

    /// A step failed and everything was put back: traffic on the old primary, sync running.
    #[error("{step} failed, rolled back to where it started: {cause}")]
    Aborted {
        step: crate::Step,
        cause: Box<Error>,
    },

    /// A test hook failed the flip at a step (`BLUEGREEN_TEST_FAIL_AT`).
    #[error("injected failure ({0})")]
    Injected(String),

    /// A cutover or rollback of the run is under way in a live process.
    #[error("{0}")]
    FlipUnderWay(String),

    /// A flip died mid-way and what it needs to be put right was not given.
    #[error("{0}")]
    FlipInDoubt(String),

    /// Something after RESUME failed: traffic already reaches the new primary.
    #[error("traffic has moved to the new primary, but finishing failed: {0}")]
    AfterResume(String),
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Usage(_) => "see bluegreen cutover --help".into(),
            Error::Guardrail(_) | Error::RollbackGuardrail(_) => {
                "fix what the guardrail names (or relax its limit with the matching flag), then try again".into()
            }
            Error::Aborted { .. } => {
                "nothing was lost: clients are back on the old primary and sync still runs; fix the cause and try again".into()
            }
            Error::AfterResume(_) => {
                "clients already use the new primary and nothing is undone: fix the cause, then run the same command again (or bluegreen abort): the flip is recorded as past its commit point, and the next cutover, rollback or abort finishes it".into()
            }
            Error::FlipUnderWay(_) => {
                "wait for it to end (bluegreen status shows the phase), or stop that process: its watchdog puts things right; then run the command again".into()
            }
            Error::FlipInDoubt(_) => {
                "give abort --source, --target and every --pooler (or [[pooler]] in the config): it puts traffic back first, then removes the run".into()
            }
            Error::Conn { source, .. } => source.hint().into(),
            _ => "check the named server or pooler and try again".into(),
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
