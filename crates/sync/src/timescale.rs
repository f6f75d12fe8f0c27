//! TimescaleDB in the stream, free of I/O. A hypertable's changes arrive under its chunks'
//! names (`_timescaledb_internal._hyper_N_M_chunk`) and land in the target's hypertable of
//! the same name as the chunk's parent; compressed chunks (`compress_hyper_*`), aggregates'
//! materialization chunks, TimescaleDB's own tables and hypertables outside the run are not
//! applied. Compressing or decompressing moves rows between a chunk and its compressed
//! chunk inside a pair of transactional logical messages: those moves are not changes (the
//! target holds the rows already), while the UPDATE or DELETE that follows a
//! decompression is real and applies.
//!
//! Dropping chunks (`drop_chunks`, a retention policy) writes no row change on the chunk: it
//! drops the table. What the stream does carry, once the publication holds
//! `_timescaledb_catalog.dimension_slice` (copy adds it), is the DELETE of the dropped
//! range's dimension slice, keyed by its id only. Compression and decompression never
//! touch slices, a new chunk inserts its slice. Until sync knows each slice's range in
//! stream order (see `SLICE_TABLE`), such a DELETE stops sync rather than let green keep
//! rows blue no longer has.

/// The schema TimescaleDB keeps chunks in.
pub const CHUNK_SCHEMA: &str = "_timescaledb_internal";

/// What a source relation is, from its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// An ordinary table: it maps to the target's table of the same name.
    Table,
    /// `_timescaledb_internal._hyper_*`: a chunk, of a hypertable or of an aggregate's
    /// materialization; its parent decides.
    Chunk,
    /// TimescaleDB's own: compressed chunks and hypertables, catalog, job statistics.
    Ignored,
}

pub fn by_name(namespace: &str, name: &str) -> Named {
    if namespace == CHUNK_SCHEMA {
        if name.starts_with("_hyper_") {
            Named::Chunk
        } else {
            Named::Ignored
        }
    } else if namespace.starts_with("_timescaledb_") || namespace.starts_with("timescaledb_") {
        Named::Ignored
    } else {
        Named::Table
    }
}

/// The hypertable a chunk's changes land in: its parent, when that is a table of one of
/// the run's schemas (not a materialization hypertable in `_timescaledb_internal`, nor a
/// hypertable the run leaves out). None: not applied.
pub fn chunk_target(
    parent: Option<(String, String)>,
    schemas: &[String],
) -> Option<(String, String)> {
    parent.filter(|(schema, _)| schemas.iter().any(|s| s == schema))
}

/// The hypertable id in a chunk's name, `_hyper_<id>_<n>_chunk`: how the parent is found
/// when the chunk itself is gone from the source (dropped since the change was written).
pub fn hypertable_id(chunk: &str) -> Option<i32> {
    let rest = chunk.strip_prefix("_hyper_")?.strip_suffix("_chunk")?;
    let (id, n) = rest.split_once('_')?;
    n.parse::<i64>().ok()?;
    id.parse().ok()
}

/// TimescaleDB's catalog table of dimension slices (one per chunk time range, shared by a
/// range's space partitions): the only published relation where dropping chunks shows.
pub const SLICE_TABLE: (&str, &str) = ("_timescaledb_catalog", "dimension_slice");

/// Whether a row change on a source relation means chunks were dropped on the source: a
/// DELETE of a dimension slice (TimescaleDB deletes a slice when the last chunk in it is
/// dropped, and at no other time).
pub fn drops_chunks(namespace: &str, name: &str, change: Change) -> bool {
    change == Change::Delete && (namespace, name) == SLICE_TABLE
}

const STARTS: [&str; 2] = [
    "::timescaledb-compression-start",
    "::timescaledb-decompression-start",
];
const ENDS: [&str; 2] = [
    "::timescaledb-compression-end",
    "::timescaledb-decompression-end",
];

/// Where a transaction stands between compression's WAL markers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Markers {
    moving: bool,
}

impl Markers {
    /// A logical message of the transaction; true when it is one of the markers.
    pub fn message(&mut self, transactional: bool, prefix: &str) -> bool {
        if !transactional {
            return false;
        }
        if STARTS.contains(&prefix) {
            self.moving = true;
        } else if ENDS.contains(&prefix) {
            self.moving = false;
        } else {
            return false;
        }
        true
    }

    /// Inside a marker pair: inserts and deletes on chunks move rows, they change nothing.
    pub fn moving(&self) -> bool {
        self.moving
    }

    /// Whether a row change on a chunk (`chunk`: the relation is a hypertable's chunk) is
    /// a move to skip. Updates always apply: compression moves rows by insert and delete.
    pub fn skips(&self, chunk: bool, change: Change) -> bool {
        self.moving && chunk && change != Change::Update
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Insert,
    Update,
    Delete,
    Truncate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_named_apart() {
        assert_eq!(by_name("app", "readings"), Named::Table);
        assert_eq!(by_name(CHUNK_SCHEMA, "_hyper_1_2_chunk"), Named::Chunk);
        for (ns, name) in [
            (CHUNK_SCHEMA, "compress_hyper_2_11_chunk"),
            (CHUNK_SCHEMA, "_compressed_hypertable_2"),
            (CHUNK_SCHEMA, "_materialized_hypertable_4"),
            (CHUNK_SCHEMA, "bgw_job_stat"),
            ("_timescaledb_catalog", "chunk"),
            ("_timescaledb_config", "bgw_job"),
        ] {
            assert_eq!(by_name(ns, name), Named::Ignored, "{ns}.{name}");
        }
    }

    #[test]
    fn chunks_land_in_planned_hypertables_only() {
        let schemas = vec!["app".to_string()];
        let p = |s: &str, n: &str| Some((s.to_string(), n.to_string()));
        assert_eq!(chunk_target(p("app", "r"), &schemas), p("app", "r"));
        assert_eq!(chunk_target(p("other", "r"), &schemas), None);
        assert_eq!(
            chunk_target(p(CHUNK_SCHEMA, "_materialized_hypertable_4"), &schemas),
            None
        );
        assert_eq!(chunk_target(None, &schemas), None);
        assert_eq!(hypertable_id("_hyper_12_345_chunk"), Some(12));
        assert_eq!(hypertable_id("compress_hyper_2_11_chunk"), None);
        assert_eq!(hypertable_id("_hyper_x_1_chunk"), None);
    }

    #[test]
    fn only_a_deleted_slice_drops_chunks() {
        let (ns, name) = SLICE_TABLE;
        assert!(drops_chunks(ns, name, Change::Delete));
        assert!(
            !drops_chunks(ns, name, Change::Insert),
            "a new chunk's slice"
        );
        assert!(!drops_chunks(ns, name, Change::Update));
        assert!(!drops_chunks(ns, "chunk", Change::Delete));
        assert!(!drops_chunks("app", name, Change::Delete));
        assert_eq!(by_name(ns, name), Named::Ignored, "never applied");
    }

    #[test]
    fn moves_between_markers_are_skipped_updates_are_not() {
        let mut m = Markers::default();
        assert!(!m.skips(true, Change::Insert));
        assert!(!m.message(true, "other"));
        assert!(!m.message(false, "::timescaledb-decompression-start"));
        assert!(m.message(true, "::timescaledb-decompression-start"));
        assert!(m.skips(true, Change::Insert));
        assert!(m.skips(true, Change::Delete));
        assert!(m.skips(true, Change::Truncate));
        assert!(!m.skips(true, Change::Update));
        assert!(!m.skips(false, Change::Insert), "plain tables always apply");
        assert!(m.message(true, "::timescaledb-decompression-end"));
        assert!(!m.skips(true, Change::Delete));
        m.message(true, "::timescaledb-compression-start");
        assert!(m.skips(true, Change::Delete));
        m.message(true, "::timescaledb-compression-end");
        assert!(!m.moving());
    }
}
