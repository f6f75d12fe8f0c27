//! Settings from the `--config` TOML file and the flags; flags win.

use std::path::Path;

use serde::Deserialize;

use crate::args::{Cli, LogFormat};
use crate::trouble::Trouble;

/// The file's shape. Unknown keys are refused so a typo never falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: Option<String>,
    target: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    schemas: Vec<String>,
    #[serde(default)]
    pooler: Vec<PoolerEntry>,
}

/// A `[[pooler]]` table: the same keys as `--pooler`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolerEntry {
    admin: String,
    db: String,
    file: String,
    green: Option<String>,
    blue: Option<String>,
}

impl PoolerEntry {
    fn spec(&self) -> String {
        let mut s = format!("admin={},db={},file={}", self.admin, self.db, self.file);
        if let Some(g) = &self.green {
            s.push_str(&format!(",green={g}"));
        }
        if let Some(b) = &self.blue {
            s.push_str(&format!(",blue={b}"));
        }
        s
    }
}

/// Settings every command sees.
#[derive(Debug)]
pub struct Settings {
    pub source: Option<String>,
    pub target: Option<String>,
    pub log_format: LogFormat,
    /// Schemas from the file; a command's own `--schema` flags replace them.
    pub schemas: Vec<String>,
    /// `[[pooler]]` entries from the file, as `--pooler` specs; `--pooler` flags replace them.
    pub poolers: Vec<String>,
}

impl Settings {
    pub fn resolve(cli: &Cli) -> Result<Settings, Trouble> {
        let file = match &cli.global.config {
            Some(path) => read(path)?,
            None => File::default(),
        };
        Ok(Settings {
            source: cli.global.source.clone().or(file.source),
            target: cli.global.target.clone().or(file.target),
            log_format: cli
                .global
                .log_format
                .or(file.log_format)
                .unwrap_or_default(),
            schemas: file.schemas,
            poolers: file.pooler.iter().map(PoolerEntry::spec).collect(),
        })
    }

    /// Passwords given in connection strings, to keep out of the process title.
    pub fn secrets(&self) -> Vec<String> {
        [&self.source, &self.target]
            .into_iter()
            .flatten()
            .filter_map(|s| conn::ConnSpec::parse(s).ok()?.password)
            .collect()
    }

    /// The parsed connection for one side, or trouble naming what is missing.
    pub fn spec(&self, side: &str) -> Result<conn::ConnSpec, Trouble> {
        let given = if side == "source" {
            &self.source
        } else {
            &self.target
        };
        let Some(s) = given else {
            return Err(Trouble::new(
                format!("no {side} connection given"),
                format!("pass --{side} CONN or set {side} = \"…\" in the --config file"),
            ));
        };
        conn::ConnSpec::parse(s).map_err(|e| Trouble::conn(&format!("--{side}"), e))
    }
}

fn read(path: &Path) -> Result<File, Trouble> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Trouble::new(
            format!("cannot read config file {}: {e}", path.display()),
            "check the --config path",
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        Trouble::new(
            format!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            ),
            "the file takes source, target, log_format, schemas and [[pooler]] tables (see README)",
        )
    })
}
