//! A tokio-postgres client from a [`ConnSpec`], with failures sorted into the kinds an
//! operator can act on.

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::Error;
use crate::spec::{ConnSpec, Host, SslMode};

/// The output settings every bluegreen session relies on, whatever the database's or role's
/// defaults (`ALTER DATABASE … SET datestyle = 'SQL, DMY'` would turn 2020-04-05 into
/// 2020-05-04 through a text copy, `extra_float_digits = 0` round floats): values print as
/// the other side reads them, and as verify compares them. TimeZone is left alone: text
/// timestamptz values carry their offset.
pub const OUTPUT_SETTINGS: [(&str, &str); 5] = [
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
];

/// [`OUTPUT_SETTINGS`] as `-c` switches for a startup packet's `options` (the walsender
/// prints values with them), after the operator's own options so they win.
pub fn startup_options(operator: Option<&str>) -> String {
    let ours = OUTPUT_SETTINGS
        .iter()
        .map(|(n, v)| format!("-c {n}={}", v.replace(' ', "\\ ")))
        .collect::<Vec<_>>()
        .join(" ");
    match operator {
        Some(o) if !o.trim().is_empty() => format!("{o} {ours}"),
        _ => ours,
    }
}

/// Opens a client with [`OUTPUT_SETTINGS`] set, and drives its connection on the tokio
/// runtime.
pub async fn connect(spec: &ConnSpec) -> Result<Client, Error> {
    let client = connect_plain(spec).await?;
    let set: String = OUTPUT_SETTINGS
        .iter()
        .map(|(n, v)| format!("SET {n} = {};", crate::quote_literal(v)))
        .collect();
    client
        .batch_execute(&set)
        .await
        .map_err(|e| classify(spec, e))?;
    Ok(client)
}

/// Opens a client as the server's defaults have it: for PgBouncer's admin console, which
/// takes no SET of server settings.
pub async fn connect_plain(spec: &ConnSpec) -> Result<Client, Error> {
    let cfg = pg_config(spec)?;
    let client = match spec.tls_config()? {
        None => {
            let (client, conn) = cfg.connect(NoTls).await.map_err(|e| classify(spec, e))?;
            tokio::spawn(conn);
            client
        }
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, conn) = cfg.connect(tls).await.map_err(|e| classify(spec, e))?;
            tokio::spawn(conn);
            client
        }
    };
    Ok(client)
}

/// The tokio-postgres configuration [`connect`] uses (TLS aside).
pub fn pg_config(spec: &ConnSpec) -> Result<Config, Error> {
    let mut cfg = Config::new();
    match &spec.host {
        Host::Tcp(h) => cfg.host(h),
        Host::Unix(d) => cfg.host_path(d),
    };
    if let Some(addr) = &spec.hostaddr {
        let ip = addr
            .parse()
            .map_err(|_| Error::Invalid(format!("hostaddr \"{addr}\" is not an IP address")))?;
        cfg.hostaddr(ip);
    }
    cfg.port(spec.port)
        .user(&spec.user)
        .dbname(&spec.dbname)
        .application_name(spec.application_name.as_deref().unwrap_or("bluegreen"));
    if let Some(pw) = &spec.password {
        cfg.password(pw);
    }
    if let Some(t) = spec.connect_timeout {
        cfg.connect_timeout(t);
    }
    if let Some(o) = &spec.options {
        cfg.options(o);
    }
    cfg.ssl_mode(match spec.sslmode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    let k = &spec.keepalives;
    cfg.keepalives(k.enabled);
    if let Some(d) = k.idle {
        cfg.keepalives_idle(d);
    }
    if let Some(d) = k.interval {
        cfg.keepalives_interval(d);
    }
    if let Some(n) = k.count {
        cfg.keepalives_retries(n);
    }
    if let Some(d) = k.tcp_user_timeout {
        cfg.tcp_user_timeout(d);
    }
    Ok(cfg)
}

/// Sorts a connect failure by what the operator must fix.
pub fn classify(spec: &ConnSpec, e: tokio_postgres::Error) -> Error {
    let target = spec.target();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return Error::Auth {
                user: spec.user.clone(),
                target,
                cause: db.message().to_string(),
            };
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return Error::NoDatabase {
                dbname: spec.dbname.clone(),
                target,
            };
        }
        return Error::Server {
            target,
            sqlstate: code.code().to_string(),
            message: db.message().to_string(),
        };
    }
    let text = crate::redact(&e.to_string());
    let source = std::error::Error::source(&e)
        .map(|s| crate::redact(&s.to_string()))
        .unwrap_or_default();
    let cause = if source.is_empty() || text.contains(&source) {
        text.clone()
    } else {
        format!("{text}: {source}")
    };
    let lower = cause.to_lowercase();
    if lower.contains("password missing") || lower.contains("password authentication") {
        return Error::Auth {
            user: spec.user.clone(),
            target,
            cause: "the server asked for a password and none was given".into(),
        };
    }
    if lower.contains("tls") || lower.contains("ssl") || lower.contains("certificate") {
        return Error::Tls { target, cause };
    }
    Error::Unreachable { target, cause }
}

/// The server's own message (with its detail) for a failed statement; for anything else the
/// error's text with passwords removed. Better for operators than tokio-postgres' "db error".
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => return crate::redact(&e.to_string()),
    };
    if out_of_disk(e) {
        format!("out of disk space: {text}")
    } else {
        text
    }
}

/// The server ran out of disk (SQLSTATE 53100). Said in words by [`pg_message`] because
/// PostgreSQL's own text varies with how the write failed ("No space left on device", or
/// "wrote only 4096 of 8192 bytes" after a short write).
pub fn out_of_disk(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::DISK_FULL)
}

#[cfg(test)]
mod tests {
    use super::startup_options;

    #[test]
    fn startup_options_escape_spaces_and_come_after_the_operators() {
        let o = startup_options(Some("-c search_path=app"));
        assert!(
            o.starts_with("-c search_path=app -c DateStyle=ISO,\\ YMD "),
            "{o}"
        );
        assert!(o.ends_with("-c lc_monetary=C"), "{o}");
        assert!(startup_options(None).starts_with("-c DateStyle"));
    }
}
