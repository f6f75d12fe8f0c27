//! Connection service files (`pg_service.conf`) as libpq reads them: `[name]` sections of
//! `key=value` lines, looked up in PGSERVICEFILE (or ~/.pg_service.conf), then in
//! PGSYSCONFDIR/pg_service.conf; the first file that defines the service supplies it.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::parse::{self, Params};
use crate::spec::Env;

/// Debian's libpq default for PGSYSCONFDIR (`pg_config --sysconfdir`).
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// Fills `p` with the keys of the service it (or PGSERVICE) names; keys already in `p` win.
/// Returns the service's name, if one was asked for.
pub fn apply(p: &mut Params, env: &dyn Env) -> Result<Option<String>, Error> {
    let Some(name) = p
        .get("service")
        .map(str::to_owned)
        .or_else(|| env.var("PGSERVICE"))
    else {
        return Ok(None);
    };
    let files = files(env);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Service(format!(
                    "cannot read service file {}: {e}",
                    file.display()
                )))
            }
        };
        if let Some(entries) = section(&text, &name, file)? {
            for (key, value) in entries {
                p.set_default(&key, value);
            }
            return Ok(Some(name));
        }
    }
    let searched: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(Error::Service(format!(
        "service \"{name}\" is not defined in {}",
        searched.join(" or ")
    )))
}

fn files(env: &dyn Env) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = env
        .var("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".pg_service.conf")))
    {
        files.push(f);
    }
    let sys = env
        .var("PGSYSCONFDIR")
        .unwrap_or_else(|| DEFAULT_SYSCONFDIR.into());
    files.push(Path::new(&sys).join("pg_service.conf"));
    files
}

/// The key=value pairs of section `[name]` (the first one, as libpq), or None. Only that
/// section's lines are checked; errors name the file, line and key, never a value.
fn section(text: &str, name: &str, file: &Path) -> Result<Option<Vec<(String, String)>>, Error> {
    let mut found: Option<Vec<(String, String)>> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(group) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            if group.strip_suffix(']') == Some(name) {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some(entries) = found.as_mut() else {
            continue;
        };
        let at = || format!("service file {}, line {}", file.display(), i + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::Service(format!(
                "{}: expected key=value in [{name}]",
                at()
            )));
        };
        let key = key.trim();
        if key == "service" {
            return Err(Error::Service(format!(
                "{}: a service cannot name another service",
                at()
            )));
        }
        if !parse::known_keys().contains(&key) {
            return Err(Error::Service(format!(
                "{}: unknown option \"{key}\" (known: {})",
                at(),
                parse::known_keys().join(", ")
            )));
        }
        entries.push((key.to_string(), value.trim().to_string()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
stray=ignored
[other]
host=elsewhere
[prod]
  host = db.example
port=6543
dbname=factory telemetry

[prod]
host=second-definition-ignored
";

    #[test]
    fn first_matching_section_only() {
        let got = section(FILE, "prod", Path::new("f")).unwrap().unwrap();
        assert_eq!(
            got,
            [
                ("host".to_string(), "db.example".to_string()),
                ("port".into(), "6543".into()),
                ("dbname".into(), "factory telemetry".into()),
            ]
        );
        assert!(section(FILE, "missing", Path::new("f")).unwrap().is_none());
    }

    #[test]
    fn bad_lines_in_the_section_are_named() {
        let e = section("[s]\nhost=h\nsslmod=require\n", "s", Path::new("/x/f"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/x/f, line 3") && e.contains("\"sslmod\""),
            "{e}"
        );
        let e = section("[s]\nservice=t\n", "s", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another service"), "{e}");
        let e = section("[s]\npassword s3cret\n", "s", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key=value") && !e.contains("s3cret"), "{e}");
        // Lines of other sections are not checked, as in libpq.
        assert!(section("[t]\nbogus\n[s]\nport=1\n", "s", Path::new("f")).is_ok());
    }
}
