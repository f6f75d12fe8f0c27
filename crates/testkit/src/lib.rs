//! Throwaway PostgreSQL 15 clusters and PgBouncer processes on 127.0.0.1.
//!
//! Every server lives in its own temporary directory with its own port and unix socket
//! directory, so parallel tests never collide. Dropping the handle stops the server and
//! deletes the directory, also while a test panics; a watchdog process does the same if
//! the test process dies without unwinding (SIGKILL, abort).

mod cluster;
mod disk;
mod pgbouncer;
mod process;
mod proxy;

pub use cluster::{Cluster, ClusterBuilder};
pub use disk::SmallDisk;
pub use pgbouncer::{Pgbouncer, PgbouncerBuilder};
pub use proxy::{Mode as ProxyMode, Proxy};

/// Errors are plain strings: the test kit fails tests, it does not recover.
pub type Result<T> = std::result::Result<T, String>;

/// Directory holding `initdb`, `pg_ctl`, `postgres`, `psql`, `pg_dump`.
/// `BLUEGREEN_PG_BIN` overrides the Debian default.
pub fn pg_bin_dir() -> std::path::PathBuf {
    std::env::var_os("BLUEGREEN_PG_BIN")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into())
}

/// Path of one PostgreSQL program.
pub fn pg_bin(name: &str) -> std::path::PathBuf {
    pg_bin_dir().join(name)
}

/// True when PgBouncer is installed (tests that need it skip otherwise, with a message).
pub fn pgbouncer_available() -> bool {
    pgbouncer::binary().is_some()
}

/// True when the TimescaleDB extension is installed for these server binaries (its control
/// file in the share directory `pg_config` names) and `BLUEGREEN_NO_TIMESCALEDB` is unset
/// (which shows how the suite runs without it). Tests that need it call
/// [`skip_without_timescaledb`].
pub fn timescaledb_available() -> bool {
    if std::env::var_os("BLUEGREEN_NO_TIMESCALEDB").is_some() {
        return false;
    }
    let share = std::process::Command::new(pg_bin("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr/share/postgresql/15".into());
    std::path::Path::new(&share)
        .join("extension/timescaledb.control")
        .exists()
}

/// For a test that needs TimescaleDB: true (after printing one line saying so) when the
/// extension is not installed, so the test returns early.
pub fn skip_without_timescaledb(test: &str) -> bool {
    if timescaledb_available() {
        return false;
    }
    // Straight to the process's stderr: the test harness captures eprintln! of passing
    // tests, and a skip should be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: TimescaleDB is not installed for PostgreSQL 15 (README, \"TimescaleDB tests\")"
    );
    true
}
