use thiserror::Error;

use crate::copybin::CopyError;

#[derive(Debug, Error)]
pub enum Error {
    /// Bad input found before anything was compared.
    #[error("{what}")]
    Refused { what: String, fix: String },

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

    /// Reading the materialized views to compare.
    #[error(transparent)]
    Catalog(#[from] catalog::Error),

    #[error("{side}: {what}: {}", conn::pg_message(source))]
    Sql {
        side: &'static str,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{side}: {what}: {source}")]
    Copy {
        side: &'static str,
        what: String,
        #[source]
        source: CopyError,
    },

    /// The sync applier did not stop at the snapshot's LSN in time.
    #[error(
        "the sync applier of run {run} did not hold at LSN {lsn} within {seconds} s ({detail})"
    )]
    Hold {
        run: String,
        lsn: String,
        seconds: u64,
        detail: String,
    },

    #[error("worker failed: {0}")]
    Worker(String),

    /// The run's copy stopped before it finished (its phase is still `phase`): equal rows
    /// would not make green a copy of blue (indexes, constraints or data are missing).
    #[error("run {run}'s copy is incomplete (it stopped in phase {phase}): nothing was compared")]
    Incomplete { run: String, phase: &'static str },
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Refused { fix, .. } => fix.clone(),
            Error::Conn { source, .. } => source.hint().into(),
            Error::Wire(_) => "verify takes its source snapshot through a temporary logical slot: the source role needs REPLICATION, and max_wal_senders/max_replication_slots need one free each".into(),
            Error::State(_)
            | Error::Catalog(_)
            | Error::Sql { .. }
            | Error::Copy { .. }
            | Error::Worker(_) => {
                "fix the cause above and run verify again; it changes nothing on either server unless --repair is given".into()
            }
            Error::Incomplete { .. } => "run the same `bluegreen copy` again to finish it (it resumes where it stopped), then verify".into(),
            Error::Hold { .. } => "check `bluegreen status` for the applier's lag and errors; verify again once it keeps up, or give a longer --hold-timeout".into(),
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

pub(crate) fn conn_err(side: &'static str) -> impl FnOnce(conn::Error) -> Error {
    move |source| Error::Conn { side, source }
}
