//! A walsender client for logical replication and an I/O-free pgoutput decoder.
//!
//! Layers, bottom up: [`lsn`], [`pgoutput`] and [`relcache`] decode bytes; [`codec`],
//! [`command`], [`startup`] and [`feedback`] are the protocol without I/O;
//! [`connection`] and [`stream`] put them on a socket; [`peek`] prints a slot's changes.

pub mod codec;
pub mod command;
pub mod connection;
pub mod error;
pub mod feedback;
/// The LSN type lives in its own crate, shared with the state schema and every stage.
pub use lsn;
pub mod peek;
pub mod pgoutput;
pub mod relcache;
mod sockopt;
pub mod startup;
pub mod stream;
mod transport;

pub use command::{PgOutputOptions, SnapshotAction};
pub use connection::{
    CreatedSlot, ExportedSnapshot, QueryResult, ReplicationConnection, SystemIdentity,
};
pub use error::{sqlstate, DbError, Error};
pub use lsn::Lsn;
pub use peek::{PeekOptions, PeekSlot, PeekSummary};
pub use pgoutput::{DecodeError, LogicalMessage};
pub use relcache::{Decoded, Decoder, RelationCache};
pub use sockopt::TcpOptions;
pub use stream::{Event, FeedbackHandle, ReplicationStream, StreamConfig};
