//! PgBouncer's admin console (simple query protocol only): PAUSE with a client-side timeout,
//! RESUME, RELOAD, SHOW DATABASES.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use conn::ConnSpec;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::dbfile::Endpoint;
use crate::Error;

/// One pooler as the operator names it:
/// `admin=CONN,db=NAME,file=PATH[,green=HOST:PORT[/DB]][,blue=HOST:PORT[/DB]]`.
/// `green`/`blue` are the servers as the pooler reaches them, when that differs from how
/// bluegreen reaches them (e.g. a Kubernetes service name).
#[derive(Debug, Clone)]
pub struct PoolerSpec {
    /// The spec as given (the watchdog gets it through its pipe).
    pub text: String,
    pub admin: String,
    pub db: String,
    pub file: PathBuf,
    pub green: Option<Endpoint>,
    pub blue: Option<Endpoint>,
}

impl FromStr for PoolerSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (mut admin, mut db, mut file, mut green, mut blue) = (None, None, None, None, None);
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "--pooler part {:?} is not key=value",
                    conn::redact(part)
                ))
            })?;
            match k.trim() {
                "admin" => admin = Some(v.to_string()),
                "db" => db = Some(v.to_string()),
                "file" => file = Some(PathBuf::from(v)),
                "green" => green = Some(parse_endpoint(v)?),
                "blue" => blue = Some(parse_endpoint(v)?),
                other => {
                    return Err(Error::Usage(format!(
                        "--pooler key {other:?} is unknown (admin, db, file, green, blue)"
                    )))
                }
            }
        }
        let need = |what: &str| Error::Usage(format!("--pooler needs {what}=…"));
        Ok(PoolerSpec {
            text: s.to_string(),
            admin: admin.ok_or_else(|| need("admin"))?,
            db: db.ok_or_else(|| need("db"))?,
            file: file.ok_or_else(|| need("file"))?,
            green,
            blue,
        })
    }
}

/// `host:port[/dbname]`.
pub fn parse_endpoint(v: &str) -> Result<Endpoint, Error> {
    let (hostport, dbname) = match v.split_once('/') {
        Some((hp, d)) => (hp, Some(d.to_string())),
        None => (v, None),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| Error::Usage(format!("endpoint {v:?} is not host:port[/dbname]")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Usage(format!("endpoint {v:?} has no valid port")))?;
    Ok(Endpoint {
        host: host.to_string(),
        port,
        dbname: dbname.unwrap_or_default(),
    })
}

/// A connection to one pooler's admin console.
pub struct Admin {
    pub spec: PoolerSpec,
    conn: ConnSpec,
    client: Client,
}

impl Admin {
    pub async fn connect(spec: &PoolerSpec, timeout: Duration) -> Result<Admin, Error> {
        let mut conn = ConnSpec::parse(&spec.admin)
            .map_err(|e| Error::Pooler(format!("pooler admin connection: {e}")))?;
        conn.connect_timeout = Some(conn.connect_timeout.unwrap_or(timeout).min(timeout));
        let client = Self::open(&conn).await?;
        Ok(Admin {
            spec: spec.clone(),
            conn,
            client,
        })
    }

    /// A connection to the admin console, bounded as a whole by the spec's connect timeout
    /// (tokio-postgres bounds only the TCP connect: a console that accepts and never answers
    /// would hold the startup for good).
    async fn open(conn: &ConnSpec) -> Result<Client, Error> {
        let limit = conn.connect_timeout.unwrap_or(conn::DEFAULT_LINK_TIMEOUT);
        match tokio::time::timeout(limit, conn::connect_plain(conn)).await {
            Ok(r) => r.map_err(|e| Error::Pooler(format!("pooler {}: {e}", conn.target()))),
            Err(_) => Err(Error::Timeout(format!(
                "pooler {}: no answer to the connection within {limit:?}",
                conn.target()
            ))),
        }
    }

    pub fn name(&self) -> String {
        self.conn.target()
    }

    async fn command(
        &self,
        client: &Client,
        sql: &str,
        limit: Duration,
    ) -> Result<Vec<SimpleQueryMessage>, Error> {
        command(client, &self.name(), sql, limit).await
    }

    /// PAUSE waits for every server connection of the database to be released (in
    /// transaction pooling: in-flight transactions to end). PgBouncer has no timeout of its
    /// own, so we give up after `limit`; the caller then RESUMEs through a fresh connection
    /// (a RESUME on the connection whose PAUSE still waits can hang: pgbouncer issue 715).
    pub async fn pause(&self, limit: Duration) -> Result<(), Error> {
        let sql = format!("PAUSE {}", self.spec.db);
        self.command(&self.client, &sql, limit).await.map(|_| ())
    }

    /// RESUME on a fresh admin connection ("not paused" counts as done), with
    /// `server_login_retry` lifted for it: PgBouncer's PAUSE closes a server connection that
    /// is still logging in and counts that as a failed login, after which the pool opens no
    /// connection for `server_login_retry` (15 s by default) while every client waits. The
    /// value read here (the file's, after a RELOAD) goes back with [`Resumed::restore`].
    pub async fn resume(&self, limit: Duration) -> Result<Resumed, Error> {
        let client = Self::open(&self.conn).await?;
        let lifted = self.lift_login_retry(&client, limit).await;
        let resumed = Resumed {
            name: self.name(),
            db: self.spec.db.clone(),
            client,
            lifted,
        };
        match self
            .command(&resumed.client, &format!("RESUME {}", self.spec.db), limit)
            .await
        {
            Err(Error::Pooler(m)) if m.contains("not paused") => Ok(resumed),
            Ok(_) => Ok(resumed),
            Err(e) => {
                resumed.put_back(limit).await;
                Err(e)
            }
        }
    }

    /// Sets `server_login_retry` to 0 on `client`; returns the value it had, if it was more.
    async fn lift_login_retry(&self, client: &Client, limit: Duration) -> Option<String> {
        let name = self.name();
        let lift = async {
            let was = setting(client, &name, LOGIN_RETRY, limit).await?;
            let Some(was) = was.filter(|v| v.parse::<f64>().map_or(true, |s| s > 0.0)) else {
                return Ok(None);
            };
            set(client, &name, LOGIN_RETRY, "0", limit).await?;
            Ok::<_, Error>(Some(was))
        };
        lift.await
            .inspect_err(|e| tracing::warn!(pooler = self.name(), error = %e, "cannot lift {LOGIN_RETRY} for the RESUME"))
            .ok()
            .flatten()
    }

    /// RELOAD on a fresh admin connection (for an undo: the flip's own may be the one that
    /// went silent).
    pub async fn reload_fresh(&self, limit: Duration) -> Result<(), Error> {
        let client = Self::open(&self.conn).await?;
        self.command(&client, "RELOAD", limit).await.map(|_| ())
    }

    pub async fn reload(&self, limit: Duration) -> Result<(), Error> {
        self.command(&self.client, "RELOAD", limit)
            .await
            .map(|_| ())
    }

    /// Where the pooler says the database points now.
    pub async fn target_of_db(&self, limit: Duration) -> Result<Option<Endpoint>, Error> {
        let messages = self.command(&self.client, "SHOW DATABASES", limit).await?;
        let (columns, rows) = table(&messages);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        Ok(db_target(&columns, &rows, &self.spec.db))
    }
}

/// `sql` on an admin console session, within `limit`.
async fn command(
    client: &Client,
    name: &str,
    sql: &str,
    limit: Duration,
) -> Result<Vec<SimpleQueryMessage>, Error> {
    match tokio::time::timeout(limit, client.simple_query(sql)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(Error::Pooler(format!(
            "pooler {name}: {sql}: {}",
            conn::pg_message(&e)
        ))),
        Err(_) => Err(Error::Timeout(format!(
            "pooler {name}: {sql} did not finish within {limit:?}"
        ))),
    }
}

/// A setting's value as `SHOW CONFIG` gives it.
async fn setting(
    client: &Client,
    name: &str,
    key: &str,
    limit: Duration,
) -> Result<Option<String>, Error> {
    let messages = command(client, name, "SHOW CONFIG", limit).await?;
    let (columns, rows) = table(&messages);
    let at = |c: &str| columns.iter().position(|x| x == c);
    let (Some(k), Some(v)) = (at("key"), at("value")) else {
        return Ok(None);
    };
    Ok(rows
        .iter()
        .find(|r| r.get(k).copied().flatten() == Some(key))
        .and_then(|r| r.get(v).copied().flatten())
        .map(str::to_string))
}

/// `SET key = 'value'` on the admin console: in force until the next RELOAD.
async fn set(
    client: &Client,
    name: &str,
    key: &str,
    value: &str,
    limit: Duration,
) -> Result<(), Error> {
    let sql = format!("SET {key} = {}", conn::quote_literal(value));
    command(client, name, &sql, limit).await.map(|_| ())
}

/// The PgBouncer setting that holds a pool's connection attempts after one failed.
const LOGIN_RETRY: &str = "server_login_retry";

/// How long after RESUME a pooler may open connections without its retry wait.
const LOGIN_RETRY_HOLD: Duration = Duration::from_secs(1);

/// A pooler resumed with `server_login_retry` lifted (see [`Admin::resume`]).
pub struct Resumed {
    name: String,
    db: String,
    client: Client,
    lifted: Option<String>,
}

impl Resumed {
    /// Puts `server_login_retry` back once the pool has a server connection (a second at
    /// most): until then a login the PAUSE cut short cannot hold the pool's clients.
    pub async fn restore(self, limit: Duration) {
        if self.lifted.is_none() {
            return;
        }
        let started = std::time::Instant::now();
        while started.elapsed() < LOGIN_RETRY_HOLD && !self.pool_connected(limit).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.put_back(limit).await;
    }

    /// Whether the pool has a server connection past its login (`SHOW POOLS`); an
    /// unreadable answer counts as yes.
    async fn pool_connected(&self, limit: Duration) -> bool {
        match command(&self.client, &self.name, "SHOW POOLS", limit).await {
            Ok(messages) => {
                let (columns, rows) = table(&messages);
                let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
                pool_connected(&columns, &rows, &self.db)
            }
            Err(_) => true,
        }
    }

    async fn put_back(&self, limit: Duration) {
        let Some(was) = &self.lifted else { return };
        if let Err(e) = set(&self.client, &self.name, LOGIN_RETRY, was, limit).await {
            tracing::error!(pooler = self.name, error = %e, "{LOGIN_RETRY} is 0 until the pooler's next RELOAD: RELOAD it");
        }
    }
}

/// An admin console reply as column names and rows of text (`None` for NULL).
fn table(messages: &[SimpleQueryMessage]) -> (Vec<String>, Vec<Vec<Option<&str>>>) {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Option<&str>>> = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                columns = d.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if columns.is_empty() {
                    columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push((0..r.len()).map(|i| r.try_get(i).ok().flatten()).collect());
            }
            _ => {}
        }
    }
    (columns, rows)
}

/// Whether `SHOW POOLS` lists a server connection of database `db` that is logged in
/// (active, idle, used or tested), from the reply's columns and rows as text.
pub fn pool_connected(columns: &[&str], rows: &[Vec<Option<&str>>], db: &str) -> bool {
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let Some(database) = at("database") else {
        return false;
    };
    let counts: Vec<usize> = ["sv_active", "sv_idle", "sv_used", "sv_tested"]
        .iter()
        .filter_map(|c| at(c))
        .collect();
    rows.iter()
        .filter(|r| r.get(database).copied().flatten() == Some(db))
        .any(|r| {
            counts.iter().any(|&i| {
                r.get(i)
                    .copied()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
}

/// The endpoint `SHOW DATABASES` gives for database `db`, from the reply's column names and
/// rows as text (`None` for NULL). Free of I/O so it can be fuzzed: a reply of any shape
/// (columns missing, rows shorter than the header, a port that is no number) gives `None`
/// or an endpoint, never a panic. Columns are found by name (PgBouncer adds columns between
/// versions); a port that does not parse reads as 0, which matches no server.
pub fn db_target(columns: &[&str], rows: &[Vec<Option<&str>>], db: &str) -> Option<Endpoint> {
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let name = at("name")?;
    let (host, port, database) = (at("host"), at("port"), at("database"));
    let cell = |row: &[Option<&str>], i: Option<usize>| -> Option<String> {
        row.get(i?).copied().flatten().map(str::to_string)
    };
    rows.iter()
        .find(|row| row.get(name).copied().flatten() == Some(db))
        .map(|row| Endpoint {
            host: cell(row, host).unwrap_or_default(),
            port: cell(row, port).and_then(|p| p.parse().ok()).unwrap_or(0),
            dbname: cell(row, database).unwrap_or_default(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed of fuzz/fuzz_targets/show_databases.rs: the database name, then the reply as
    /// `psql -A` prints it (`\N` for NULL).
    fn seed(text: &str) -> Option<Endpoint> {
        let mut lines = text.split('\n');
        let db = lines.next().unwrap_or_default();
        let columns: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
        let rows: Vec<Vec<Option<&str>>> = lines
            .map(|l| {
                l.split('|')
                    .map(|c| if c == "\\N" { None } else { Some(c) })
                    .collect()
            })
            .collect();
        db_target(&columns, &rows, db)
    }

    fn at(host: &str, port: u16, dbname: &str) -> Option<Endpoint> {
        Some(Endpoint {
            host: host.into(),
            port,
            dbname: dbname.into(),
        })
    }

    /// The fuzz seeds (real PgBouncer 1.18 replies and odd shapes) replayed on every test run:
    /// the CI smoke of the show_databases fuzz target. A reply without a `host` column, or
    /// with rows shorter than its header, made the old reader (tokio-postgres'
    /// `SimpleQueryRow::get` by name) panic.
    #[test]
    fn fuzz_seeds_read_as_pgbouncer_means_them() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/seeds/show_databases"
        );
        let expected = [
            (
                "pgbouncer-1.18-factory_telemetry",
                at("127.0.0.1", 5432, "factory_telemetry"),
            ),
            (
                "pgbouncer-1.18-paused-app",
                at("blue-pg.factory.internal", 5433, "app_prod"),
            ),
            (
                "pgbouncer-1.18-admin-db-null-host",
                at("", 16499, "pgbouncer"),
            ),
            ("pgbouncer-1.18-db-absent", None),
            ("short-rows", at("blue", 5432, "")),
            ("no-host-column-port-too-big", at("", 0, "")),
        ];
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let got = seed(&std::fs::read_to_string(&path).unwrap());
            if let Some((_, want)) = expected.iter().find(|(n, _)| *n == name) {
                assert_eq!(got, *want, "{name}");
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len(), "seeds missing from {dir}");
    }

    #[test]
    fn odd_replies_give_no_target() {
        assert_eq!(db_target(&[], &[], "app"), None);
        assert_eq!(db_target(&["host"], &[vec![Some("app")]], "app"), None);
        assert_eq!(db_target(&["name"], &[vec![], vec![None]], "app"), None);
        assert_eq!(
            db_target(&["name", "port"], &[vec![Some("app"), Some("-1")]], "app"),
            at("", 0, "")
        );
    }

    /// `SHOW POOLS` as PgBouncer 1.18 answers it: a pool counts as connected by a server
    /// past its login, not by one still logging in (sv_login) or by another database's.
    #[test]
    fn a_pool_is_connected_by_a_logged_in_server_of_its_database() {
        let cols = [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
        ];
        let row = |db, counts: [&'static str; 5]| {
            let mut r = vec![Some(db), Some("postgres"), Some("0"), Some("12")];
            r.extend(counts.map(Some));
            r.push(Some("3"));
            r
        };
        let logging_in = row("app", ["0", "0", "0", "0", "1"]);
        assert!(!pool_connected(
            &cols,
            std::slice::from_ref(&logging_in),
            "app"
        ));
        let other = row("other", ["1", "2", "0", "0", "0"]);
        assert!(!pool_connected(&cols, &[logging_in, other], "app"));
        assert!(pool_connected(
            &cols,
            &[row("app", ["0", "1", "0", "0", "1"])],
            "app"
        ));
        assert!(!pool_connected(&["user"], &[vec![Some("app")]], "app"));
        assert!(!pool_connected(&cols, &[vec![Some("app"), None]], "app"));
    }
}
