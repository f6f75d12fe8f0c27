//! PgBouncer's included `[databases]` file: find one database's line, point it at another
//! server, write the file atomically (temporary file, then rename).

use std::path::Path;

use crate::Error;

/// Where a pooled database points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// The file's text with `db`'s line rewritten to `to`; other settings on the line
/// (user, pool_size, …) and every other line stay as they were.
pub fn rewrite(text: &str, db: &str, to: &Endpoint) -> Result<String, Error> {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        match split_line(line) {
            Some((name, conn)) if names(name, db) => {
                found = true;
                let mut pairs: Vec<(String, String)> = parse_pairs(conn)
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "host" | "port" | "dbname"))
                    .collect();
                pairs.insert(0, ("dbname".into(), to.dbname.clone()));
                pairs.insert(0, ("port".into(), to.port.to_string()));
                pairs.insert(0, ("host".into(), to.host.clone()));
                let conn: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote_value(v)))
                    .collect();
                out.push_str(&format!("{name} = {}\n", conn.join(" ")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !found {
        return Err(Error::Pooler(format!(
            "database {db} has no line in the databases file"
        )));
    }
    Ok(out)
}

/// Where `db` points now, per the file.
pub fn current(text: &str, db: &str) -> Option<Endpoint> {
    text.lines().find_map(|line| {
        let (name, conn) = split_line(line)?;
        if !names(name, db) {
            return None;
        }
        let pairs = parse_pairs(conn);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        Some(Endpoint {
            host: get("host")?,
            port: get("port").and_then(|p| p.parse().ok()).unwrap_or(5432),
            dbname: get("dbname").unwrap_or_else(|| db.to_string()),
        })
    })
}

/// Writes next to the file and renames over it, so PgBouncer never reads half a file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("bluegreen-tmp");
    let io = |e: std::io::Error| Error::Pooler(format!("{}: {e}", path.display()));
    let perms = std::fs::metadata(path).map_err(io)?.permissions();
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::set_permissions(&tmp, perms).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn split_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    if t.is_empty()
        || t.starts_with(';')
        || t.starts_with('#')
        || t.starts_with('[')
        || t.starts_with('%')
    {
        return None;
    }
    let (name, conn) = t.split_once('=')?;
    Some((name.trim(), conn.trim()))
}

/// Whether a line's name (as written: one with other characters than [0-9A-Za-z_.-] is in
/// double quotes) is `db`.
fn names(written: &str, db: &str) -> bool {
    let name = written
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(written);
    name == db
}

/// PgBouncer's connect string: `key=value` pairs apart by spaces; a value in single quotes
/// may hold spaces, `''` standing for one quote (no backslash escapes, unlike libpq).
fn parse_pairs(conn: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = conn.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim();
        if key.is_empty() || key.contains(' ') {
            break;
        }
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('\'') {
            Some(quoted) => {
                let mut value = String::new();
                let mut end = quoted.len();
                let mut chars = quoted.char_indices().peekable();
                while let Some((i, c)) = chars.next() {
                    // A quote ends the value unless another follows (then it is one quote).
                    if c == '\'' && chars.next_if(|(_, n)| *n == '\'').is_none() {
                        end = i + 1;
                        break;
                    }
                    value.push(c);
                }
                (value, &quoted[end..])
            }
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        pairs.push((key.to_string(), value));
        rest = next.trim_start();
    }
    pairs
}

/// A value as PgBouncer reads it back: quoted when it holds a space or a quote.
fn quote_value(v: &str) -> String {
    if v.is_empty() || v.contains([' ', '\'']) {
        format!("'{}'", v.replace('\'', "''"))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_and_names_read_and_write_back() {
        let text =
            "\"my db\" = host=blue port=5432 dbname='Fäbrik \"db\" it''s' application_name='a b'\n";
        let was = current(text, "my db").unwrap();
        assert_eq!(was.dbname, "Fäbrik \"db\" it's");
        let to = Endpoint {
            host: "green".into(),
            port: 6543,
            dbname: "new name".into(),
        };
        let out = rewrite(text, "my db", &to).unwrap();
        assert_eq!(
            out,
            "\"my db\" = host=green port=6543 dbname='new name' application_name='a b'\n"
        );
        assert_eq!(
            parse_pairs("dbname='x''' host=h"),
            vec![("dbname".into(), "x'".into()), ("host".into(), "h".into())]
        );
    }

    #[test]
    fn rewrites_only_that_database() {
        let text = "; comment\nfactory_telemetry = host=blue port=5432 dbname=factory_telemetry pool_size=20\nother = host=x port=1\n";
        let green = Endpoint {
            host: "green.svc".into(),
            port: 6543,
            dbname: "ft".into(),
        };
        let out = rewrite(text, "factory_telemetry", &green).unwrap();
        assert_eq!(
            out,
            "; comment\nfactory_telemetry = host=green.svc port=6543 dbname=ft pool_size=20\nother = host=x port=1\n"
        );
        assert_eq!(current(&out, "factory_telemetry"), Some(green));
        assert!(rewrite(
            text,
            "missing",
            &Endpoint {
                host: "h".into(),
                port: 1,
                dbname: "d".into()
            }
        )
        .is_err());
    }
}
