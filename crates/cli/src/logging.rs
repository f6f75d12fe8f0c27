//! tracing on stderr: readable lines by default, JSON objects with `--log-format json`.
//! RUST_LOG overrides the level (default: info). Colours only on a terminal, and never
//! with NO_COLOR set (https://no-color.org), so files and log collectors get plain text.
//! Lines written outside tracing (the final error and hint, peek's summary) follow the
//! same format, so under `--log-format json` every line on stderr is one JSON object.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::args::LogFormat;

/// Whether stderr lines are JSON; known from argv before the flags are parsed (so argument
/// errors follow it), then from the parsed settings (which include the config file).
static JSON: AtomicBool = AtomicBool::new(false);

pub fn init(format: LogFormat) {
    set_json(format == LogFormat::Json);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour());
    // The metrics see the stages' info and warnings whatever RUST_LOG says.
    let registry =
        tracing_subscriber::registry().with(crate::metrics::Layer.with_filter(LevelFilter::INFO));
    let _ = match format {
        LogFormat::Human => registry.with(fmt.with_filter(filter)).try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .map_event_format(|inner| WithRun { inner })
                    .with_filter(filter),
            )
            .try_init(),
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

/// The run and stage of the command at hand, once known: a field of every JSON line, from
/// whichever task it comes (spawned tasks do not carry a span along).
static RUN: OnceLock<(String, &'static str)> = OnceLock::new();

pub fn set_run(run: &str, stage: &'static str) {
    let _ = RUN.set((run.to_string(), stage));
}

/// Tracing's JSON lines with `run` and `stage` added at the top level.
struct WithRun<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithRun<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line);
        match (RUN.get(), parsed) {
            (Some((run, stage)), Ok(mut doc)) => {
                doc.entry("run").or_insert_with(|| run.clone().into());
                doc.entry("stage").or_insert_with(|| (*stage).into());
                writeln!(writer, "{}", serde_json::Value::Object(doc))
            }
            _ => writer.write_str(&line),
        }
    }
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
    if let Some((run, stage)) = RUN.get() {
        doc.entry("run").or_insert_with(|| run.clone().into());
        doc.entry("stage").or_insert_with(|| (*stage).into());
    }
    eprintln!("{}", serde_json::Value::Object(doc));
}

fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
