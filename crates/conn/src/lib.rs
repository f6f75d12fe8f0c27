//! Connections as an operator gives them: libpq URIs or key=value strings, with the PG*
//! environment variables and `~/.pgpass` filling the gaps, TLS through rustls with libpq's
//! sslmode rules, and passwords kept out of everything that can be printed.
//!
//! Both the SQL client (tokio-postgres) and the walsender client (crate `wire`) start from
//! one [`ConnSpec`], so a connection string means the same thing to every stage.

mod connect;
mod error;
mod ident;
mod link;
mod parse;
mod pgpass;
mod redact;
mod service;
mod spec;
mod tls;

pub use connect::{
    connect, connect_plain, out_of_disk, pg_config, pg_message, startup_options, OUTPUT_SETTINGS,
};
pub use error::Error;
pub use ident::{display_ident, display_qualified, qualified, quote_ident, quote_literal};
pub use link::{watch_link, DEFAULT_LINK_TIMEOUT};
pub use redact::redact;
pub use spec::{ConnSpec, Env, Host, Keepalives, SslMode};
