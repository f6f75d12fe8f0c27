//! The report of a `bluegreen run` or rehearsal (`run --dry-run`): each stage's times, copy
//! figures per table, apply rate and lag sampled over time, verify's verdicts, cutover's
//! steps and client pause, findings, and the window predicted for production.
//!
//! [`Report`] is the stable JSON (`format: 1`), [`estimate`] predicts the window from a
//! rehearsal's measured rates and production's sizes, [`html::render`] draws one
//! self-contained HTML file, [`write_dir`] / [`read_dir`] store both in a directory, and
//! [`save`] / [`load`] also keep the JSON in the target's state schema.
//!
//! How `run` uses it: [`Report::new`] at the start; [`Stage::start`] / [`Stage::end`] around
//! each stage (times from [`now`]); [`TableCopy::from_summary`], [`Sample::from_apply`] once a
//! second, [`Verify::from_verify`], [`Cutover`], [`Note::from_finding`] as stages finish;
//! for a rehearsal [`estimate`] from [`Measured::from_report`] and [`Production::from_plan`]
//! (with [`wal_rate`] of the production source); [`save`] whenever a stage ends.

mod convert;
mod error;
mod estimate;
pub mod html;
mod model;
mod store;
mod text;
mod wal;

pub use error::Error;
pub use estimate::{estimate, Measured, Production, TableSize};
pub use model::*;
pub use store::{
    default_dir, load, read_dir, read_json, save, write_dir, Written, HTML_FILE, JSON_FILE,
};
pub use text::{duration, size, summary, utc};
pub use wal::wal_rate;
