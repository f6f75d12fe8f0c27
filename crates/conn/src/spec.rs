//! The resolved connection: every field libpq would have settled on, ready to dial.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::parse::{self, Params};
use crate::pgpass;
use crate::service;

/// Where the server listens.
#[derive(Clone, PartialEq, Eq)]
pub enum Host {
    /// Host name or IP address.
    Tcp(String),
    /// Directory holding the unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// libpq's sslmode values (`allow` is not offered: it only ever downgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Result<SslMode, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(Error::Invalid(
                    "sslmode \"allow\" is not supported: use disable, prefer, require, verify-ca or verify-full".into(),
                ))
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown sslmode \"{other}\": use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

/// TCP keepalives and the user timeout, so a dead link (a WAN path that silently drops
/// packets) fails a connection within a bound instead of hanging it for hours. `None` leaves
/// the system's value (libpq's 0). Unix sockets ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalives {
    /// `keepalives` (1 or 0).
    pub enabled: bool,
    /// `keepalives_idle`: quiet time before the first probe.
    pub idle: Option<Duration>,
    /// `keepalives_interval`: time between unanswered probes.
    pub interval: Option<Duration>,
    /// `keepalives_count`: unanswered probes before the connection is dropped.
    pub count: Option<u32>,
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged.
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for Keepalives {
    /// bluegreen's defaults (libpq leaves them to the system, whose 2 h idle time is far too
    /// long for a migration): a silent link is noticed within about 25 s when idle
    /// (10 s + 3 × 5 s) and 30 s when data is waiting for an acknowledgement.
    fn default() -> Self {
        Keepalives {
            enabled: true,
            idle: Some(Duration::from_secs(10)),
            interval: Some(Duration::from_secs(5)),
            count: Some(3),
            tcp_user_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl Keepalives {
    /// As libpq keys (0 = system default), for the connection string of libpq programs.
    pub fn libpq_pairs(&self) -> [(&'static str, String); 5] {
        let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs()).to_string();
        [
            ("keepalives", u8::from(self.enabled).to_string()),
            ("keepalives_idle", secs(self.idle)),
            ("keepalives_interval", secs(self.interval)),
            ("keepalives_count", self.count.unwrap_or(0).to_string()),
            (
                "tcp_user_timeout",
                self.tcp_user_timeout
                    .map_or(0, |d| d.as_millis())
                    .to_string(),
            ),
        ]
    }

    fn resolve(p: &Params) -> Result<Keepalives, Error> {
        let d = Keepalives::default();
        let num = |key: &str, unit: &str| -> Result<Option<Option<u32>>, Error> {
            let Some(v) = p.get(key) else {
                return Ok(None);
            };
            match v.trim().parse::<u32>() {
                Ok(0) => Ok(Some(None)),
                Ok(n) => Ok(Some(Some(n))),
                Err(_) => Err(Error::Invalid(format!(
                    "invalid {key} \"{v}\": give {unit} (0 = the system's default)"
                ))),
            }
        };
        let secs = |key| -> Result<Option<Option<Duration>>, Error> {
            Ok(num(key, "whole seconds")?.map(|n| n.map(|n| Duration::from_secs(n.into()))))
        };
        let enabled = match p.get("keepalives").map(str::trim) {
            None => d.enabled,
            Some("1") => true,
            Some("0") => false,
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "invalid keepalives \"{v}\": give 1 (on) or 0 (off)"
                )))
            }
        };
        Ok(Keepalives {
            enabled,
            idle: secs("keepalives_idle")?.unwrap_or(d.idle),
            interval: secs("keepalives_interval")?.unwrap_or(d.interval),
            count: num("keepalives_count", "a number of probes")?.unwrap_or(d.count),
            tcp_user_timeout: num("tcp_user_timeout", "milliseconds")?
                .map(|n| n.map(|ms| Duration::from_millis(ms.into())))
                .unwrap_or(d.tcp_user_timeout),
        })
    }
}

/// The process environment as parsing sees it; tests pass their own.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    fn os_user(&self) -> Option<String>;
}

struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
    fn os_user(&self) -> Option<String> {
        // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out at once.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            if pw.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_str()
                .ok()
                .map(str::to_owned)
        }
    }
}

/// A fully resolved connection. `Debug` and [`ConnSpec::redacted`] never show the password.
#[derive(Clone)]
pub struct ConnSpec {
    /// The `service` (or PGSERVICE) whose pg_service.conf section filled in keys; its values
    /// are already resolved into the fields below.
    pub service: Option<String>,
    pub host: Host,
    /// `hostaddr`: the address dialled instead of resolving `host` (which still names the
    /// server for TLS and ~/.pgpass).
    pub hostaddr: Option<String>,
    /// Only `hostaddr` was given: `host` holds that address (dialled over TCP, matched in
    /// ~/.pgpass, shown in messages), and there is no name for sslmode=verify-full to check.
    pub host_from_hostaddr: bool,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    /// `sslcert`: the client certificate (PEM) offered when the server asks for one.
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: its private key (PEM, unencrypted, private to the owner as libpq demands).
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// TCP keepalives and user timeout, for SQL and replication connections alike.
    pub keepalives: Keepalives,
    /// `options`: command-line options sent to the server at startup (e.g. `-c statement_timeout=0`).
    pub options: Option<String>,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl ConnSpec {
    /// Parses a libpq URI or key=value string; PG* variables, defaults and ~/.pgpass fill
    /// whatever it leaves out.
    pub fn parse(s: &str) -> Result<ConnSpec, Error> {
        Self::parse_with(s, &ProcessEnv)
    }

    pub fn parse_with(s: &str, env: &dyn Env) -> Result<ConnSpec, Error> {
        let p = parse::parse(s)?;
        Self::resolve(p, env)
    }

    fn resolve(mut p: Params, env: &dyn Env) -> Result<ConnSpec, Error> {
        // A service's keys lose to the string's but beat the PG* variables, as in libpq.
        let service = service::apply(&mut p, env)?;
        let get = |key: &str, var: &str| p.get(key).map(str::to_owned).or_else(|| env.var(var));

        let hostaddr = get("hostaddr", "PGHOSTADDR");
        if let Some(a) = &hostaddr {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::Invalid(format!(
                    "hostaddr \"{a}\" is not an IP address: give the server's numeric address (a name goes in host=)"
                )));
            }
        }
        let (host, host_from_hostaddr) = match (get("host", "PGHOST"), &hostaddr) {
            (Some(h), _) if h.contains(',') => {
                return Err(Error::Invalid(format!(
                    "several hosts (\"{h}\") are not supported: give the one server to migrate"
                )))
            }
            (Some(h), _) if !h.starts_with('/') => (Host::Tcp(h), false),
            // hostaddr alone (or beside a socket directory) means TCP to that address, as
            // in libpq; the address then also stands for the host in ~/.pgpass.
            (_, Some(a)) => (Host::Tcp(a.clone()), true),
            (Some(h), None) => (Host::Unix(PathBuf::from(h)), false),
            (None, None) if Path::new(DEFAULT_SOCKET_DIR).is_dir() => {
                (Host::Unix(DEFAULT_SOCKET_DIR.into()), false)
            }
            (None, None) => (Host::Tcp("localhost".into()), false),
        };
        let port = match get("port", "PGPORT") {
            None => 5432,
            Some(v) => v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::Invalid(format!(
                    "invalid port \"{v}\": give a number from 1 to 65535"
                ))
            })?,
        };
        let user = get("user", "PGUSER")
            .or_else(|| env.os_user())
            .ok_or_else(|| Error::Invalid("no user given: set user= or PGUSER".into()))?;
        let dbname = get("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
        let sslmode = match (p.get("sslmode"), env.var("PGSSLMODE")) {
            (Some(m), _) => SslMode::parse(m)?,
            // Say where a bad value came from: the string does not hold it.
            (None, Some(m)) => SslMode::parse(&m).map_err(|e| match e {
                Error::Invalid(why) => Error::Environment(format!("PGSSLMODE: {why}")),
                other => other,
            })?,
            (None, None) => SslMode::Prefer,
        };
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            None => None,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n <= 0 => None,
                // libpq treats 1 as 2 seconds: one second is too short to be meant.
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "invalid connect_timeout \"{v}\": give whole seconds"
                    )))
                }
            },
        };
        let sslrootcert = get("sslrootcert", "PGSSLROOTCERT")
            .map(PathBuf::from)
            .or_else(|| {
                env.home()
                    .map(|h| h.join(".postgresql/root.crt"))
                    .filter(|p| p.exists())
            });
        // libpq's defaults: ~/.postgresql/postgresql.crt when it exists, and its key beside
        // it. A certificate named explicitly must exist (checked when TLS is set up).
        let sslcert = get("sslcert", "PGSSLCERT").map(PathBuf::from).or_else(|| {
            env.home()
                .map(|h| h.join(".postgresql/postgresql.crt"))
                .filter(|p| p.exists())
        });
        let sslkey = get("sslkey", "PGSSLKEY").map(PathBuf::from).or_else(|| {
            sslcert
                .as_ref()
                .and(env.home())
                .map(|h| h.join(".postgresql/postgresql.key"))
        });
        let mut spec = ConnSpec {
            service,
            host,
            hostaddr,
            host_from_hostaddr,
            port,
            user,
            password: get("password", "PGPASSWORD"),
            dbname,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            application_name: get("application_name", "PGAPPNAME")
                .or_else(|| p.get("fallback_application_name").map(str::to_owned)),
            connect_timeout,
            keepalives: Keepalives::resolve(&p)?,
            options: get("options", "PGOPTIONS"),
        };
        if spec.password.is_none() {
            let file = get("passfile", "PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env.home().map(|h| h.join(".pgpass")));
            if let Some(file) = file {
                spec.password = pgpass::lookup(&file, &spec);
            }
        }
        Ok(spec)
    }

    /// The connection without its password, for logs, errors and reports.
    pub fn redacted(&self) -> String {
        let mut s = String::new();
        if !self.host_from_hostaddr {
            s.push_str(&format!("host={} ", self.host));
        }
        if let Some(a) = &self.hostaddr {
            s.push_str(&format!("hostaddr={a} "));
        }
        s.push_str(&format!(
            "port={} user={} dbname={} sslmode={}",
            self.port,
            self.user,
            self.dbname,
            self.sslmode.as_str()
        ));
        if let Some(name) = &self.service {
            s.push_str(&format!(" service={}", parse::quote_value(name)));
        }
        for (key, path) in [("sslcert", &self.sslcert), ("sslkey", &self.sslkey)] {
            if let Some(p) = path {
                s.push_str(&format!(
                    " {key}={}",
                    parse::quote_value(&p.display().to_string())
                ));
            }
        }
        // Keepalive settings only where they differ from bluegreen's defaults.
        let defaults = Keepalives::default().libpq_pairs();
        for (pair, default) in self.keepalives.libpq_pairs().into_iter().zip(defaults) {
            if pair != default {
                s.push_str(&format!(" {}={}", pair.0, pair.1));
            }
        }
        if self.password.is_some() {
            s.push_str(" password=***");
        }
        s
    }

    /// `host:port` (or the socket path) for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) => format!("{h}:{} (database \"{}\")", self.port, self.dbname),
            Host::Unix(d) => format!(
                "{}/.s.PGSQL.{} (database \"{}\")",
                d.display(),
                self.port,
                self.dbname
            ),
        }
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnSpec {
        ConnSpec {
            dbname: dbname.into(),
            ..self.clone()
        }
    }

    /// Environment for libpq programs we run (pg_dump, psql): the connection goes on the
    /// command line as a password-free string, the password only in PGPASSWORD, so it never
    /// shows in a process title.
    pub fn libpq_env(&self) -> (String, Vec<(&'static str, String)>) {
        let mut kv = Vec::new();
        if !self.host_from_hostaddr {
            kv.push((
                "host",
                match &self.host {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(d) => d.display().to_string(),
                },
            ));
        }
        if let Some(a) = &self.hostaddr {
            kv.push(("hostaddr", a.clone()));
        }
        kv.extend([
            ("port", self.port.to_string()),
            ("user", self.user.clone()),
            ("dbname", self.dbname.clone()),
            ("sslmode", self.sslmode.as_str().to_string()),
        ]);
        if let Some(r) = &self.sslrootcert {
            kv.push(("sslrootcert", r.display().to_string()));
        }
        if let Some(c) = &self.sslcert {
            kv.push(("sslcert", c.display().to_string()));
        }
        if let Some(k) = &self.sslkey {
            kv.push(("sslkey", k.display().to_string()));
        }
        kv.extend(self.keepalives.libpq_pairs());
        if let Some(t) = self.connect_timeout {
            kv.push(("connect_timeout", t.as_secs().to_string()));
        }
        let dsn = kv
            .iter()
            .map(|(k, v)| format!("{k}={}", parse::quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut env = Vec::new();
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.clone()));
        }
        (dsn, env)
    }
}

/// Debian's libpq default socket directory.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
