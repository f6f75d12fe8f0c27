use std::path::PathBuf;

/// What went wrong reading or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not a bluegreen report: {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{side}: cannot read the WAL position: {}", conn::pg_message(source))]
    WalPosition {
        side: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target: {0}")]
    State(#[from] state::Error),
    #[error("{origin} is report format {found}; this bluegreen reads format {known}")]
    Format {
        origin: String,
        found: u64,
        known: u32,
    },
}

impl Error {
    /// What fixes it.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::Io { .. } => {
                "check that the directory exists and is writable (or give another --report-dir)"
            }
            Error::Json { .. } => {
                "give the report.json a bluegreen run wrote, or read the run's report from the target's state schema with --target"
            }
            Error::Format { .. } => "use the bluegreen version that wrote the report, or a newer one",
            Error::WalPosition { .. } => {
                "check that the server is reachable and the role may call pg_current_wal_lsn() (any role may)"
            }
            Error::State(e) => e
                .hint()
                .unwrap_or("check that the target is reachable and holds the run's state schema"),
        }
    }
}
