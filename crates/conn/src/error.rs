use thiserror::Error;

/// Why a connection could not be made. Messages never contain a password; each kind has a
/// hint that names the fix.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid connection string: {0}")]
    Invalid(String),

    /// A PG* variable filled in a value that cannot be used.
    #[error("environment variable {0}")]
    Environment(String),

    /// `service=` / PGSERVICE names a service no file defines, or its definition is bad.
    #[error("connection service: {0}")]
    Service(String),

    #[error("cannot reach {target}: {cause}")]
    Unreachable { target: String, cause: String },

    #[error("authentication failed for user \"{user}\" on {target}: {cause}")]
    Auth {
        user: String,
        target: String,
        cause: String,
    },

    #[error("database \"{dbname}\" does not exist on {target}")]
    NoDatabase { dbname: String, target: String },

    #[error("TLS with {target}: {cause}")]
    Tls { target: String, cause: String },

    /// The client certificate or its key cannot be used.
    #[error("client certificate for {target}: {cause}")]
    ClientCert { target: String, cause: String },

    #[error("{target}: {message}")]
    Server {
        target: String,
        sqlstate: String,
        message: String,
    },
}

impl Error {
    /// One line telling the operator what to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::Invalid(_) => {
                "write a libpq URI (postgresql://user@host:5432/db?sslmode=require) or key=value pairs (host=… port=… dbname=…)"
            }
            Error::Environment(_) => {
                "fix or unset that variable: it fills in what the connection string leaves out"
            }
            Error::Service(_) => {
                "define the service as a [name] section of key=value lines in ~/.pg_service.conf (or the file PGSERVICEFILE names, or PGSYSCONFDIR/pg_service.conf), or correct the service name"
            }
            Error::Unreachable { .. } => {
                "check host and port, that the server is running and listens on that address (listen_addresses), and any firewall between"
            }
            Error::Auth { .. } => {
                "check the user and password (PGPASSWORD, ~/.pgpass, or password= in the connection string) and the server's pg_hba.conf"
            }
            Error::NoDatabase { .. } => "check dbname, or create the database first",
            Error::Tls { .. } => {
                "check sslmode and sslrootcert (verify-ca/verify-full need the CA certificate that signed the server's), or use sslmode=prefer"
            }
            Error::ClientCert { .. } => {
                "give sslcert= and sslkey= (or PGSSLCERT/PGSSLKEY, or ~/.postgresql/postgresql.crt and .key) as PEM files: a certificate signed by a CA the server trusts and its unencrypted key, readable only by you (chmod 0600)"
            }
            Error::Server { .. } => "see the server's message above",
        }
    }

    /// SQLSTATE, when the server gave one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Server { sqlstate, .. } => Some(sqlstate),
            Error::Auth { .. } => Some("28P01"),
            Error::NoDatabase { .. } => Some("3D000"),
            _ => None,
        }
    }
}
