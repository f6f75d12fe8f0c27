//! libpq connection string syntax: `postgresql://` URIs and `key=value` lists.
//! Errors name the offending key, never echo a value (it could be a password).

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

use crate::error::Error;

/// Keys we accept. Others are refused by name, so a typo never silently falls back to a default.
const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "options",
    "passfile",
    "service",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Sets `key` unless the string already gave it (a service file's keys lose to the
    /// string's). `key` must be one of [`known_keys`].
    pub fn set_default(&mut self, key: &str, value: String) {
        if self.get(key).is_none() {
            self.0.insert(key.to_string(), value);
        }
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), Error> {
        if !KEYS.contains(&key) {
            return Err(Error::Invalid(format!(
                "unknown option \"{key}\" (known: {})",
                KEYS.join(", ")
            )));
        }
        self.0.insert(key.to_string(), value);
        Ok(())
    }
}

/// The keys a connection string (or a service file) may hold.
pub fn known_keys() -> &'static [&'static str] {
    KEYS
}

pub fn parse(s: &str) -> Result<Params, Error> {
    let s = s.trim();
    if let Some(rest) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        parse_uri(rest)
    } else if looks_like_other_scheme(s) {
        Err(Error::Invalid(
            "a URI must start with postgresql:// or postgres://".into(),
        ))
    } else {
        parse_key_value(s)
    }
}

/// `mysql://…` and the like: a scheme token before `://`. A `://` later in the string (inside
/// a quoted key=value password, say) does not make it a URI.
fn looks_like_other_scheme(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

fn decode(part: &str, what: &str) -> Result<String, Error> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::Invalid(format!(
                "the {what} is not valid UTF-8 after percent-decoding"
            ))
        })
}

fn parse_uri(rest: &str) -> Result<Params, Error> {
    let mut p = Params::default();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (main, None),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            match userinfo.split_once(':') {
                Some((u, pw)) => {
                    p.set("user", decode(u, "user name")?)?;
                    p.set("password", decode(pw, "password")?)?;
                }
                None => p.set("user", decode(userinfo, "user name")?)?,
            }
            hp
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(Error::Invalid(
            "several hosts are not supported: give the one server to migrate".into(),
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| Error::Invalid("unclosed [ in the IPv6 host".into()))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        p.set("host", decode(host, "host")?)?;
    }
    if let Some(port) = port.filter(|s| !s.is_empty()) {
        p.set("port", decode(port, "port")?)?;
    }
    if let Some(db) = path.filter(|s| !s.is_empty()) {
        p.set("dbname", decode(db, "database name")?)?;
    }
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "URI parameter \"{}\" has no value: write key=value",
                decode(pair, "parameter").unwrap_or_default()
            ))
        })?;
        let k = decode(k, "parameter name")?;
        p.set(&k, decode(v, "parameter value")?)?;
    }
    Ok(p)
}

fn parse_key_value(s: &str) -> Result<Params, Error> {
    let mut p = Params::default();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(p);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::Invalid(format!(
                "missing \"=\" after \"{key}\": write key=value pairs separated by spaces"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(Error::Invalid(format!(
                            "unterminated quoted value for \"{key}\""
                        )))
                    }
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(Error::Invalid(format!(
                                "unterminated quoted value for \"{key}\""
                            )))
                        }
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        p.set(&key, value)?;
    }
}

/// Quotes a value for a key=value string when it needs it.
pub fn quote_value(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_everything() {
        let p = parse("postgresql://ms5%40x:p%3Ass@db.example:6432/factory%20telemetry?sslmode=require&application_name=bg").unwrap();
        assert_eq!(p.get("user"), Some("ms5@x"));
        assert_eq!(p.get("password"), Some("p:ss"));
        assert_eq!(p.get("host"), Some("db.example"));
        assert_eq!(p.get("port"), Some("6432"));
        assert_eq!(p.get("dbname"), Some("factory telemetry"));
        assert_eq!(p.get("sslmode"), Some("require"));
        assert_eq!(p.get("application_name"), Some("bg"));
    }

    #[test]
    fn uri_ipv6_and_socket_dir() {
        let p = parse("postgres://[::1]:5433/db").unwrap();
        assert_eq!(p.get("host"), Some("::1"));
        assert_eq!(p.get("port"), Some("5433"));
        let p = parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(p.get("host"), Some("/var/run/postgresql"));
        let p = parse("postgresql:///db?host=/tmp").unwrap();
        assert_eq!(p.get("host"), Some("/tmp"));
    }

    #[test]
    fn key_value_with_quotes() {
        let p = parse(r"host=h port = 5 dbname='my db' password='it\'s \\ x'").unwrap();
        assert_eq!(p.get("dbname"), Some("my db"));
        assert_eq!(p.get("password"), Some(r"it's \ x"));
        assert_eq!(p.get("port"), Some("5"));
    }

    #[test]
    fn errors_name_the_key_not_the_value() {
        let e = parse("host=h sslmod=require").unwrap_err().to_string();
        assert!(e.contains("unknown option \"sslmod\""), "{e}");
        let e = parse("host=h password='s3cret").unwrap_err().to_string();
        assert!(e.contains("unterminated") && !e.contains("s3cret"), "{e}");
        let e = parse("host").unwrap_err().to_string();
        assert!(e.contains("missing \"=\""), "{e}");
        assert!(parse("mysql://x").is_err());
        // Found by the redaction property: a `://` inside a quoted password is a value.
        let p = parse("host=h password='://a00A!' dbname=d").unwrap();
        assert_eq!(p.0.get("password").map(String::as_str), Some("://a00A!"));
        assert!(parse("postgresql://a,b/db").is_err());
    }

    #[test]
    fn quote_value_round_trips() {
        for v in ["plain", "with space", r"it's", r"back\slash", ""] {
            let p = parse(&format!("dbname={}", quote_value(v))).unwrap();
            assert_eq!(p.0.get("dbname").map(String::as_str), Some(v));
        }
    }
}
