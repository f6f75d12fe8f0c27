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

    async fn open(conn: &ConnSpec) -> Result<Client, Error> {
        conn::connect_plain(conn)
            .await
            .map_err(|e| Error::Pooler(format!("pooler {}: {e}", conn.target())))
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
        match tokio::time::timeout(limit, client.simple_query(sql)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(Error::Pooler(format!(
                "pooler {}: {sql}: {}",
                self.name(),
                conn::pg_message(&e)
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "pooler {}: {sql} did not finish within {limit:?}",
                self.name()
            ))),
        }
    }

    /// PAUSE waits for every server connection of the database to be released (in
    /// transaction pooling: in-flight transactions to end). PgBouncer has no timeout of its
    /// own, so we give up after `limit`; the caller then RESUMEs through a fresh connection
    /// (a RESUME on the connection whose PAUSE still waits can hang: pgbouncer issue 715).
    pub async fn pause(&self, limit: Duration) -> Result<(), Error> {
        let sql = format!("PAUSE {}", self.spec.db);
        self.command(&self.client, &sql, limit).await.map(|_| ())
    }

    /// RESUME on a fresh admin connection; "not paused" counts as done.
    pub async fn resume(&self, limit: Duration) -> Result<(), Error> {
        let client = Self::open(&self.conn).await?;
        match self
            .command(&client, &format!("RESUME {}", self.spec.db), limit)
            .await
        {
            Err(Error::Pooler(m)) if m.contains("not paused") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub async fn reload(&self, limit: Duration) -> Result<(), Error> {
        self.command(&self.client, "RELOAD", limit)
            .await
            .map(|_| ())
    }

    /// Where the pooler says the database points now.
    pub async fn target_of_db(&self, limit: Duration) -> Result<Option<Endpoint>, Error> {
        let rows = self.command(&self.client, "SHOW DATABASES", limit).await?;
        Ok(rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("name") == Some(self.spec.db.as_str()) => {
                Some(Endpoint {
                    host: r.get("host").unwrap_or_default().to_string(),
                    port: r.get("port").and_then(|p| p.parse().ok()).unwrap_or(0),
                    dbname: r.get("database").unwrap_or_default().to_string(),
                })
            }
            _ => None,
        }))
    }
}
