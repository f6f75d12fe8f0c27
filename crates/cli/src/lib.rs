//! The parts of the `bluegreen` binary that need no command at hand: its flags, the
//! `--config` file, logging, metrics and trouble. A library so the fuzz targets (fuzz/) can
//! reach the config parser; the commands themselves stay in the binary.

pub mod args;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod trouble;
pub mod units;
