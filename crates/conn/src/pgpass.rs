//! `~/.pgpass` lookup with libpq's rules: `host:port:db:user:password`, `*` matches anything,
//! `\` escapes `:` and `\`, a unix socket matches `localhost`, and a file that others can read
//! is ignored.

use std::path::Path;

use crate::spec::{ConnSpec, Host};

pub fn lookup(file: &Path, spec: &ConnSpec) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Every connection looks the file up; once per process is enough to say it.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                file = %file.display(),
                "password file has group or world access and is ignored; chmod 0600 it"
            )
        });
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match &spec.host {
        Host::Tcp(h) => h.as_str(),
        Host::Unix(_) => "localhost",
    };
    let port = spec.port.to_string();
    let want = [
        host,
        port.as_str(),
        spec.dbname.as_str(),
        spec.user.as_str(),
    ];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4..].join(":"))
        })
}

fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_wildcards() {
        assert_eq!(
            split(r"h:5432:*:u:pa\:ss\\"),
            vec!["h", "5432", "*", "u", r"pa:ss\"]
        );
    }
}
