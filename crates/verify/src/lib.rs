//! The verify stage: proves the target equal to the source at one LSN while the source keeps
//! taking writes, locates every difference down to rows and columns, and optionally repairs.
//!
//! - [`copybin`]: splits COPY streams into rows; [`hash`]: xxh3-128 per row, summed per chunk;
//!   [`checksum`]: a key range's digest on one side.
//! - [`snapshot`]: the one instant on both sides (temporary slot on the source, applier held).
//! - [`table`], [`range`], [`chunks`]: what is compared and how tables are cut.
//! - [`bisect`], [`rows`], [`diff`]: from a mismatched chunk to rows, decoded into arrow
//!   arrays and compared column by column.
//! - [`incremental`]: what an earlier clean verify lets this one carry forward.
//! - [`repair`]: re-copies mismatched ranges; [`report`]: JSON and text.
//! - [`run`]: the whole verify, recorded in the target's `bluegreen` schema.

pub mod aggregates;
pub mod bisect;
pub mod checksum;
pub mod chunks;
pub mod copybin;
pub mod diff;
mod error;
pub mod hash;
pub mod incremental;
pub mod range;
pub mod repair;
pub mod report;
pub mod rows;
mod run;
pub mod snapshot;
pub mod table;

pub use error::Error;
pub use report::Report;
pub use run::{verify, VerifyOptions};
