//! `report.json` and `report.html` in a directory.

use std::path::{Path, PathBuf};

use crate::{Error, Report};

pub const JSON_FILE: &str = "report.json";
pub const HTML_FILE: &str = "report.html";

/// Where a report was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub json: PathBuf,
    pub html: PathBuf,
}

/// Writes both files into `dir` (created if missing). Each file is written beside its
/// final name and renamed over it, so a reader never sees half a report.
pub fn write_dir(report: &Report, dir: &Path) -> Result<Written, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "create report directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(report).expect("a report always serializes");
    let written = Written {
        json: dir.join(JSON_FILE),
        html: dir.join(HTML_FILE),
    };
    replace(&written.json, json.as_bytes())?;
    replace(&written.html, crate::html::render(report).as_bytes())?;
    Ok(written)
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let io = |what| {
        move |source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    std::fs::write(&tmp, bytes).map_err(io("write"))?;
    std::fs::rename(&tmp, path).map_err(io("write"))
}

/// Keeps the report in the target's state schema (replacing the run's previous one of
/// the same kind) and writes both files into `dir`: what `run` calls whenever a stage ends.
/// `c` is a connection to the target with the state schema migrated.
pub async fn save(
    c: &impl state::GenericClient,
    report: &Report,
    dir: &Path,
) -> Result<Written, Error> {
    state::reports::put(c, &report.run, report.kind.as_str(), &report.to_json()).await?;
    write_dir(report, dir)
}

/// The run's newest report from the target's state schema (None: there is none).
pub async fn load(c: &impl state::GenericClient, run: &str) -> Result<Option<Report>, Error> {
    match state::reports::get(c, run).await? {
        Some(json) => {
            Report::from_json(json, &format!("the target's report of run {run}")).map(Some)
        }
        None => Ok(None),
    }
}

/// `./bluegreen-report-<run>`, where a run writes its report unless told otherwise.
pub fn default_dir(run: &str) -> PathBuf {
    PathBuf::from(format!("bluegreen-report-{run}"))
}

/// Reads `dir/report.json`.
pub fn read_dir(dir: &Path) -> Result<Report, Error> {
    read_json(&dir.join(JSON_FILE))
}

/// Reads a report.json file.
pub fn read_json(path: &Path) -> Result<Report, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let value = serde_json::from_str(&text).map_err(|source| Error::Json {
        origin: origin.clone(),
        source,
    })?;
    Report::from_json(value, &origin)
}
