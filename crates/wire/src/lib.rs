//! A walsender client for logical replication and an I/O-free pgoutput decoder.
//!
//! Layers, bottom up: [`lsn`], [`pgoutput`] and [`relcache`] decode bytes; [`codec`],
//! [`command`], [`startup`] and [`feedback`] are the protocol without I/O; the connection
//! and the CopyBoth stream put them on a socket.

pub mod codec;
pub mod command;
pub mod error;
pub mod feedback;
pub mod lsn;
pub mod pgoutput;
pub mod relcache;
pub mod startup;

pub use error::{DbError, Error};
pub use lsn::Lsn;
pub use pgoutput::{DecodeError, LogicalMessage};
pub use relcache::{Decoded, Decoder, RelationCache};
