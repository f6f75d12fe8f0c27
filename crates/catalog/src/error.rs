use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading {what}: {}", conn::pg_message(source))]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("schema \"{0}\" does not exist on the source")]
    NoSuchSchema(String),

    #[error("profile {file}, line {line}: {message}")]
    Profile {
        file: String,
        line: usize,
        message: String,
        fix: String,
    },
}

impl Error {
    pub fn hint(&self) -> String {
        match self {
            Error::Profile { fix, .. } => fix.clone(),
            Error::Query { .. } => {
                "check that the role may read the system catalogs and the server is healthy".into()
            }
            Error::NoSuchSchema(_) => {
                "list the source's schemas with \\dn in psql and pass existing ones to --schema"
                    .into()
            }
        }
    }
}
