//! Settings from the `--config` TOML file and the flags; flags win.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::args::{Cli, LogFormat};
use crate::trouble::Trouble;

/// The file's shape. Unknown keys are refused so a typo never falls back to a default.
/// Besides the settings every command shares, one table per command holds that command's
/// flags by their long names (`chunk_mb = "256MB"` under `[copy]`).
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
    plan: Option<toml::Table>,
    copy: Option<toml::Table>,
    sync: Option<toml::Table>,
    status: Option<toml::Table>,
    verify: Option<toml::Table>,
    cutover: Option<toml::Table>,
    rollback: Option<toml::Table>,
    abort: Option<toml::Table>,
    peek: Option<toml::Table>,
    run: Option<toml::Table>,
    report: Option<toml::Table>,
}

impl File {
    /// The command tables, by command name.
    fn sections(&self) -> Vec<(&'static str, &toml::Table)> {
        [
            ("plan", &self.plan),
            ("copy", &self.copy),
            ("sync", &self.sync),
            ("status", &self.status),
            ("verify", &self.verify),
            ("cutover", &self.cutover),
            ("rollback", &self.rollback),
            ("abort", &self.abort),
            ("peek", &self.peek),
            ("run", &self.run),
            ("report", &self.report),
        ]
        .into_iter()
        .filter_map(|(name, t)| t.as_ref().map(|t| (name, t)))
        .collect()
    }
}

/// Parses the command line; with `--config`, the file's table for the command fills in every
/// flag the command line does not give (flags and BLUEGREEN_* variables win). --help and
/// --version end the process as clap does; usage errors are trouble (error and hint lines,
/// JSON with `--log-format json`).
pub fn load() -> Result<(Cli, Settings), Trouble> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    crate::logging::from_argv(&argv);
    load_with(argv, |path| std::fs::read_to_string(path))
}

/// [`load`] on the words `argv` (program name first), with `read_text` giving the
/// `--config` file's text: the fuzz target (fuzz/fuzz_targets/config.rs) feeds it any text.
pub fn load_with(
    argv: Vec<OsString>,
    read_text: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<(Cli, Settings), Trouble> {
    let command = Cli::command();
    let usage = |e| usage(e, &command, &argv);
    let matches = command.clone().try_get_matches_from(&argv).map_err(usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(usage)?;
    let Some(path) = cli.global.config.clone() else {
        let settings = Settings::resolve(&cli, File::default());
        return Ok((cli, settings));
    };
    let path = path.as_path();
    let file = read(path, read_text)?;
    // The file's log format counts from here on (a flag beats it), for its own errors too.
    if cli.global.log_format.is_none() {
        if let Some(f) = file.log_format {
            crate::logging::set_json(f == LogFormat::Json);
        }
    }
    let mut extra: Vec<OsString> = Vec::new();
    for (name, table) in file.sections() {
        let Some(sub) = command.find_subcommand(name) else {
            continue;
        };
        let given = matches
            .subcommand()
            .filter(|(used, _)| *used == name)
            .map(|(_, m)| m);
        for (key, value) in table {
            let arg = flag(sub, key).ok_or_else(|| {
                let known: Vec<String> = sub
                    .get_arguments()
                    .filter_map(|a| Some(a.get_long()?.replace('-', "_")))
                    .filter(|k| k != "help")
                    .filter(|k| flag(sub, k).is_some())
                    .collect();
                Trouble::new(
                    format!(
                        "config file {}: [{name}] has no setting `{key}`",
                        path.display()
                    ),
                    format!(
                        "[{name}] takes {} (the command's flags, - written as _)",
                        known.join(", ")
                    ),
                )
            })?;
            let flags = as_flags(arg, value).map_err(|e| {
                Trouble::new(
                    format!("config file {}: [{name}] {key}: {e}", path.display()),
                    "see README, \"--config\"",
                )
            })?;
            // Every table is checked, not only the one of the command at hand, so a
            // mistake under [cutover] shows at the first plan, not at the cutover.
            let mut alone = vec![argv[0].clone(), name.into()];
            alone.extend(flags.iter().cloned());
            with_flags(alone, Vec::new(), path)?;
            let Some(given) = given else { continue };
            if matches!(
                given.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            extra.extend(flags);
        }
    }
    let cli = if extra.is_empty() {
        cli
    } else {
        with_flags(argv, extra, path)?
    };
    let settings = Settings::resolve(&cli, file);
    Ok((cli, settings))
}

/// A clap error as trouble; help and version (and help shown for a missing command, in
/// human format) are printed by clap, which ends the process.
fn usage(e: clap::Error, command: &clap::Command, argv: &[OsString]) -> Trouble {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand if !crate::logging::json() => {
            e.exit()
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Trouble::new(
            "no command given",
            "give one: plan, copy, sync, status, verify, cutover, rollback, abort, peek, report, run (bluegreen --help)",
        ),
        _ => {
            // The command the words name, for the hint (clap's message may not say it).
            let sub = argv.iter().skip(1).find_map(|w| {
                let w = w.to_str()?;
                command.find_subcommand(w).map(|c| c.get_name().to_string())
            });
            Trouble::usage(&e, sub.as_deref())
        }
    }
}

/// Parses again with the file's settings appended after the command's own arguments, so
/// clap checks them as if typed.
fn with_flags(mut argv: Vec<OsString>, extra: Vec<OsString>, path: &Path) -> Result<Cli, Trouble> {
    argv.extend(extra);
    Cli::try_parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        Trouble::new(
            format!("config file {}: {first}", path.display()),
            "fix that setting in the file (values as the flag takes them)",
        )
    })
}

/// A command's flag by its config key (its long name with `_` for `-`); global flags belong
/// at the top of the file, not in a command's table.
fn flag<'a>(sub: &'a clap::Command, key: &str) -> Option<&'a clap::Arg> {
    sub.get_arguments().find(|a| {
        !a.is_global_set()
            && a.get_long()
                .is_some_and(|l| l != "help" && l.replace('-', "_") == key)
    })
}

/// One setting as command-line words: `--flag=value` per value, or `--flag` for `true`.
fn as_flags(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    let takes_value = arg.get_action().takes_values();
    let one = |v: &toml::Value| -> Result<Option<String>, String> {
        match (v, takes_value) {
            (toml::Value::Boolean(true), false) => Ok(Some(format!("--{long}"))),
            (toml::Value::Boolean(false), false) => Ok(None),
            (_, false) => Err("takes true or false".into()),
            (toml::Value::String(s), true) => Ok(Some(format!("--{long}={s}"))),
            (toml::Value::Integer(n), true) => Ok(Some(format!("--{long}={n}"))),
            (toml::Value::Float(n), true) => Ok(Some(format!("--{long}={n}"))),
            (toml::Value::Boolean(b), true) => Ok(Some(format!("--{long}={b}"))),
            _ => Err("takes a string, a number or a list of them".into()),
        }
    };
    let values: Vec<&toml::Value> = match value {
        toml::Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut out = Vec::new();
    for v in values {
        out.extend(one(v)?.map(OsString::from));
    }
    Ok(out)
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
    fn resolve(cli: &Cli, file: File) -> Settings {
        Settings {
            source: cli.global.source.clone().or(file.source),
            target: cli.global.target.clone().or(file.target),
            log_format: cli
                .global
                .log_format
                .or(file.log_format)
                .unwrap_or_default(),
            schemas: file.schemas,
            poolers: file.pooler.iter().map(PoolerEntry::spec).collect(),
        }
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

fn read(
    path: &Path,
    read_text: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<File, Trouble> {
    let text = read_text(path).map_err(|e| {
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
            "the file takes source, target, log_format, schemas, [[pooler]] tables, and a table per command ([copy], [sync], [verify], [cutover], …) holding its flags (see README)",
        )
    })
}
