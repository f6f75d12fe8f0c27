//! The report's data: what `report.json` holds (format 1) and the state schema keeps.
//!
//! Times are seconds since the Unix epoch (UTC, fractional) so the JSON needs no date
//! library to read; samples carry seconds since the run started.

use lsn::Lsn;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The JSON shape this build writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: u32,
    pub run: String,
    pub kind: RunKind,
    /// bluegreen version that wrote it.
    pub bluegreen: String,
    /// Connections with their passwords removed (`conn::ConnSpec::redacted`).
    pub source: String,
    pub target: String,
    pub started_at: f64,
    /// None while the run goes on (a report written mid-run).
    pub ended_at: Option<f64>,
    pub stages: Vec<Stage>,
    pub tables: Vec<TableCopy>,
    /// How a fresh copy's time split (None: resumed, or no copy in this run).
    #[serde(default)]
    pub copy_steps: Option<CopySteps>,
    /// Sync's position, lag and apply rate, one sample a second.
    pub samples: Vec<Sample>,
    pub verify: Option<Verify>,
    pub cutover: Option<Cutover>,
    pub findings: Vec<Note>,
    /// The production window predicted from this run's rates (rehearsals).
    pub estimate: Option<Estimate>,
}

/// Which command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `bluegreen run`: the migration itself.
    Run,
    /// `bluegreen run --dry-run`: a rehearsal against staging.
    DryRun,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Run => "run",
            RunKind::DryRun => "dry-run",
        }
    }

    /// How the report names it to a reader.
    pub fn title(self) -> &'static str {
        match self {
            RunKind::Run => "migration run",
            RunKind::DryRun => "dry run (rehearsal)",
        }
    }
}

/// A stage of the run, in the order `run` chains them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageName {
    Plan,
    Copy,
    /// Sync from the copy's snapshot until lag is under `--max-lag`.
    CatchUp,
    Verify,
    Cutover,
    /// A rehearsal's flip back (staging pooler) or its drain.
    Rollback,
    ReverseSync,
    /// A rehearsal removing its source artifacts.
    Cleanup,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Plan => "plan",
            StageName::Copy => "copy",
            StageName::CatchUp => "catch-up",
            StageName::Verify => "verify",
            StageName::Cutover => "cutover",
            StageName::Rollback => "rollback",
            StageName::ReverseSync => "reverse sync",
            StageName::Cleanup => "cleanup",
        }
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageOutcome {
    /// Still going when the report was written.
    Running,
    Done,
    /// Ended with findings (blockers, differences): exit 1.
    Findings,
    /// Ended with trouble: exit 2.
    Failed,
    /// Not run (`--until`, or an earlier stage stopped the run).
    Skipped,
}

impl StageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Running => "running",
            StageOutcome::Done => "done",
            StageOutcome::Findings => "findings",
            StageOutcome::Failed => "failed",
            StageOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: StageName,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    /// `ended_at - started_at`, for readers of the JSON.
    pub seconds: Option<f64>,
    pub outcome: StageOutcome,
    /// One line on how it ended (the error, the blocker), if there is something to say.
    pub detail: Option<String>,
}

impl Stage {
    /// A stage that started at `at` and is still running.
    pub fn start(name: StageName, at: f64) -> Stage {
        Stage {
            name,
            started_at: at,
            ended_at: None,
            seconds: None,
            outcome: StageOutcome::Running,
            detail: None,
        }
    }

    /// Marks it ended at `at` with `outcome`.
    pub fn end(&mut self, at: f64, outcome: StageOutcome, detail: Option<String>) {
        self.ended_at = Some(at);
        self.seconds = Some((at - self.started_at).max(0.0));
        self.outcome = outcome;
        self.detail = detail;
    }
}

/// What copy did for one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCopy {
    pub schema: String,
    pub name: String,
    pub rows: i64,
    /// Bytes copy moved (COPY data).
    pub bytes: i64,
    /// The table's size on the source as plan reports it (what production's plan gives
    /// too, so the estimate scales like with like). None: not known, `bytes` is used.
    pub size_bytes: Option<i64>,
    /// Seconds of worker time spent on its chunks (chunks run in parallel).
    pub seconds: f64,
    /// `bytes / seconds` (None when it took no measurable time).
    pub bytes_per_second: Option<f64>,
    pub rows_per_second: Option<f64>,
}

impl TableCopy {
    pub fn new(
        schema: impl Into<String>,
        name: impl Into<String>,
        rows: i64,
        bytes: i64,
        size_bytes: Option<i64>,
        seconds: f64,
    ) -> TableCopy {
        let per = |n: i64| (seconds > 0.0).then(|| n as f64 / seconds);
        TableCopy {
            schema: schema.into(),
            name: name.into(),
            rows,
            bytes,
            size_bytes,
            seconds,
            bytes_per_second: per(bytes),
            rows_per_second: per(rows),
        }
    }

    /// The size the estimate scales from.
    pub fn scale_bytes(&self) -> i64 {
        self.size_bytes.unwrap_or(self.bytes)
    }
}

/// A fresh copy's wall time by step: the rest of the copy stage (connecting, slot, schema
/// dump and restore) does not grow with the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CopySteps {
    /// Table data in parallel, with the indexes built while other tables still copied.
    pub data_seconds: f64,
    /// Indexes, constraints and ANALYZE after the last table's data.
    pub post_data_seconds: f64,
}

/// Sync at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// The target's applied source position (`X/Y`).
    pub applied_lsn: Option<Lsn>,
    pub lag_seconds: Option<f64>,
    /// Source WAL not yet applied.
    pub lag_bytes: Option<i64>,
    pub rows_per_second: Option<f64>,
    /// Sync's apply capacity so far: WAL applied by groups that started behind, and their
    /// seconds (cumulative for one sync process; a restart starts them at zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_seconds: Option<f64>,
    /// Sync was held, or asked to hold, (by verify or cutover) at this instant.
    #[serde(default)]
    pub held: bool,
}

/// Verify's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verify {
    /// The source LSN both sides were compared at.
    pub lsn: Lsn,
    pub equal: bool,
    pub seconds: f64,
    pub tables: Vec<TableVerdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Equal,
    Differ,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableVerdict {
    pub schema: String,
    pub name: String,
    pub verdict: Verdict,
    pub chunks: u64,
    pub source_rows: u64,
    pub target_rows: u64,
    pub mismatched_chunks: u64,
    /// Rows that differ (listed ones; verify caps the list).
    pub differences: u64,
}

/// Cutover (or a rehearsal's flip and flip back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cutover {
    /// A rehearsal: a staging pooler's flip, or only the steps that touch no traffic.
    pub rehearsed: bool,
    pub steps: Vec<CutoverStep>,
    /// Clients held: PAUSE to RESUME (None: no pooler was paused).
    pub pause_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverStep {
    /// The step as cutover names it (guardrails, pause, fence, drain, …).
    pub step: String,
    pub seconds: f64,
    /// Clients were paused during this step.
    pub paused: bool,
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Blocker,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocker => "blocker",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A finding or warning (from plan, a stage, or the estimate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub severity: Severity,
    /// Stable code where the source has one (plan's finding codes).
    pub code: Option<String>,
    pub message: String,
}

/// The predicted production window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The production source the sizes came from (redacted).
    pub production: String,
    pub production_bytes: i64,
    pub production_rows: i64,
    pub production_tables: usize,
    /// Production's WAL rate used for catch-up (None: unknown).
    pub wal_bytes_per_second: Option<f64>,
    /// None: the rehearsal measured no copy.
    pub copy_seconds: Option<f64>,
    pub catch_up: CatchUp,
    pub verify_seconds: Option<f64>,
    /// Clients held at cutover (the rehearsal's pause).
    pub pause_seconds: Option<f64>,
    /// copy + catch-up + verify + pause (None when copy or catch-up is unknown, or catch-up
    /// never ends; a verify or pause not measured counts as zero, said in `assumptions`).
    pub window_seconds: Option<f64>,
    /// The rates used, as measured in the rehearsal.
    pub rates: Rates,
    /// How each figure was reached and what it takes for granted, in words.
    pub assumptions: Vec<String>,
    /// Tables predicted to take longest (qualified name, predicted worker seconds).
    pub slowest_tables: Vec<(String, f64)>,
}

/// Catch-up after the copy: applying the WAL production writes meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CatchUp {
    Seconds {
        seconds: f64,
        backlog_bytes: f64,
    },
    /// Apply is not faster than production writes WAL: lag only grows.
    Never {
        apply_bytes_per_second: f64,
        wal_bytes_per_second: f64,
    },
    /// No apply rate or WAL rate measured.
    Unknown {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub copy_bytes_per_second: Option<f64>,
    pub apply_bytes_per_second: Option<f64>,
    pub apply_rows_per_second: Option<f64>,
    pub verify_bytes_per_second: Option<f64>,
}

impl Report {
    /// An empty report of a run that starts at `at`.
    pub fn new(
        run: impl Into<String>,
        kind: RunKind,
        source: impl Into<String>,
        target: impl Into<String>,
        at: f64,
    ) -> Report {
        Report {
            format: FORMAT,
            run: run.into(),
            kind,
            bluegreen: env!("CARGO_PKG_VERSION").into(),
            source: source.into(),
            target: target.into(),
            started_at: at,
            ended_at: None,
            stages: Vec::new(),
            tables: Vec::new(),
            copy_steps: None,
            samples: Vec::new(),
            verify: None,
            cutover: None,
            findings: Vec::new(),
            estimate: None,
        }
    }

    /// The stage most recently started under `name`.
    pub fn stage(&self, name: StageName) -> Option<&Stage> {
        self.stages.iter().rev().find(|s| s.name == name)
    }

    pub fn stage_mut(&mut self, name: StageName) -> Option<&mut Stage> {
        self.stages.iter_mut().rev().find(|s| s.name == name)
    }

    /// The report as JSON (what `report.json` and the state schema hold).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report always serializes")
    }

    /// Reads a report; `origin` names where it came from for errors.
    pub fn from_json(value: serde_json::Value, origin: &str) -> Result<Report, Error> {
        let found = value.get("format").and_then(|f| f.as_u64());
        match found {
            Some(f) if f == FORMAT as u64 => {}
            Some(found) => {
                return Err(Error::Format {
                    origin: origin.into(),
                    found,
                    known: FORMAT,
                })
            }
            None => {}
        }
        serde_json::from_value(value).map_err(|source| Error::Json {
            origin: origin.into(),
            source,
        })
    }
}

/// Seconds since the Unix epoch now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_refuses_other_formats() {
        let mut r = Report::new("main", RunKind::DryRun, "host=a", "host=b", 1.0e9);
        let mut s = Stage::start(StageName::Copy, 1.0e9);
        s.end(1.0e9 + 12.5, StageOutcome::Done, None);
        r.stages.push(s);
        r.tables
            .push(TableCopy::new("public", "t", 10, 1000, Some(8192), 2.0));
        let v = r.to_json();
        assert_eq!(v["format"], 1);
        assert_eq!(v["kind"], "dry-run");
        assert_eq!(v["stages"][0]["seconds"], 12.5);
        assert_eq!(Report::from_json(v.clone(), "x").unwrap(), r);
        let mut newer = v;
        newer["format"] = 2.into();
        assert!(matches!(
            Report::from_json(newer, "x"),
            Err(Error::Format { found: 2, .. })
        ));
    }
}
