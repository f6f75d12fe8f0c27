//! tracing on stderr: readable lines by default, JSON objects with `--log-format json`.
//! RUST_LOG overrides the level (default: info). Colours only on a terminal, and never
//! with NO_COLOR set (https://no-color.org), so files and log collectors get plain text.
//! Lines written outside tracing (the final error and hint, peek's summary) follow the
//! same format, so under `--log-format json` every line on stderr is one JSON object.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Whether stderr lines are JSON; known from argv before the flags are parsed (so argument
/// errors follow it), then from the parsed settings (which include the config file).
static JSON: AtomicBool = AtomicBool::new(false);

pub fn init(format: LogFormat) {
    set_json(format == LogFormat::Json);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Reads `--log-format json` (or `=json`) from the raw arguments, before clap has parsed
/// them: an argument error must already be reported in the format asked for.
pub fn from_argv(argv: &[OsString]) {
    let mut json = false;
    let mut words = argv.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(w) = words.next() {
        if w == "--" {
            break;
        }
        if w == "--log-format" {
            json = words.next().is_some_and(|v| v == "json");
        } else if let Some(v) = w.strip_prefix("--log-format=") {
            json = v == "json";
        }
    }
    set_json(json);
}

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::SeqCst);
}

pub fn json() -> bool {
    JSON.load(Ordering::SeqCst)
}

/// One line on stderr outside tracing: as given in human format, or a JSON object with
/// tracing's timestamp, the level, the message and any further fields.
pub fn line(level: &str, human: &str, message: &str, fields: &[(&str, serde_json::Value)]) {
    if !json() {
        eprintln!("{human}");
        return;
    }
    let mut timestamp = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    let mut doc = serde_json::Map::new();
    doc.insert("timestamp".into(), timestamp.into());
    doc.insert("level".into(), level.into());
    doc.insert("message".into(), message.into());
    for (k, v) in fields {
        doc.insert((*k).into(), v.clone());
    }
    eprintln!("{}", serde_json::Value::Object(doc));
}

fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
