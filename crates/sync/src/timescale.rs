//! TimescaleDB in the stream, free of I/O. A hypertable's changes arrive under its chunks'
//! names (`_timescaledb_internal._hyper_N_M_chunk`) and land in the target's hypertable of
//! the same name as the chunk's parent; a continuous aggregate's materialization chunks
//! (its refreshes) land in the target's materialization of the same aggregate;
//! compressed chunks (`compress_hyper_*`), TimescaleDB's own tables and hypertables outside
//! the run are not applied. Compressing or decompressing moves rows between a chunk and its compressed
//! chunk inside a pair of transactional logical messages: those moves are not changes (the
//! target holds the rows already), while the UPDATE or DELETE that follows a
//! decompression is real and applies.
//!
//! Dropping chunks (`drop_chunks`, a retention policy) writes no row change on the chunk: it
//! drops the table. What the stream does carry, once the publication holds
//! `_timescaledb_catalog.dimension_slice` (copy adds it), is the DELETE of each dropped
//! chunk's slices (2.28 keeps one slice per chunk and dimension), keyed by slice id only.
//! Compression and decompression never touch slices; a new chunk inserts its slices, whole.
//! `Slices` knows every slice's chunk and range (the source's catalog when the session
//! starts, then the stream's inserts): once all of a chunk's slices are deleted, the target
//! deletes the rows in that chunk's ranges of the hypertable, in stream order. A slice it
//! does not know (dropped before the session started) stops sync.

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

/// A continuous aggregate's materialization hypertable: its chunks' changes are the
/// aggregate's refreshes, applied to the target's materialization of the same aggregate.
pub fn is_materialization(schema: &str, name: &str) -> bool {
    schema == CHUNK_SCHEMA && name.starts_with("_materialized_hypertable_")
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
/// DELETE of a dimension slice (TimescaleDB deletes a chunk's slices with the chunk, and at
/// no other time).
pub fn drops_chunks(namespace: &str, name: &str, change: Change) -> bool {
    change == Change::Delete && (namespace, name) == SLICE_TABLE
}

/// A hypertable's dimension, as the source's catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    /// The hypertable (schema, name).
    pub hypertable: (String, String),
    pub column: String,
    /// The column's type as regtype prints it.
    pub column_type: String,
    /// A space (hash) dimension rather than a time (range) one.
    pub space: bool,
    /// A custom partitioning function (schema, name).
    pub func: Option<(String, String)>,
}

/// One chunk's extent in one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub chunk: i32,
    pub dimension: i32,
    pub start: i64,
    pub end: i64,
}

/// What the DELETE of a slice means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// More of the chunk's slices are still to go (or none of the run's: another
    /// schema's hypertable, an aggregate's materialization).
    Nothing,
    /// All of a chunk's slices are gone: delete `filter`'s rows from the hypertable, then
    /// drop the target's chunks lying inside `time` that are left empty.
    Rows {
        hypertable: (String, String),
        filter: String,
        time: Option<TimeRange>,
    },
    /// A slice or dimension sync does not know: it cannot say which rows went.
    Unknown(String),
}

/// A dropped chunk's time range as `drop_chunks` takes it: `newer_than` its start,
/// `older_than` its end (SQL of the column's type; None for an open end, at least one set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    pub newer_than: Option<String>,
    pub older_than: Option<String>,
}

impl TimeRange {
    /// The named arguments of `show_chunks`/`drop_chunks` for this range.
    pub fn args(&self) -> String {
        let mut out = Vec::new();
        if let Some(e) = &self.older_than {
            out.push(format!("older_than => {e}"));
        }
        if let Some(s) = &self.newer_than {
            out.push(format!("newer_than => {s}"));
        }
        out.join(", ")
    }
}

/// Every known slice of the source, by id, and the dimensions they measure.
#[derive(Debug, Default)]
pub struct Slices {
    dimensions: std::collections::HashMap<i32, Dimension>,
    known: std::collections::HashMap<i32, Slice>,
    /// Deleted slices by chunk, until all of the chunk's are.
    going: std::collections::HashMap<i32, Vec<Slice>>,
}

/// TimescaleDB's sentinels for an open end of a slice.
const OPEN_START: i64 = i64::MIN;
const OPEN_END: i64 = i64::MAX;

impl Slices {
    pub fn dimension(&mut self, id: i32, d: Dimension) {
        self.dimensions.insert(id, d);
    }

    pub fn knows_dimension(&self, id: i32) -> bool {
        self.dimensions.contains_key(&id)
    }

    /// A slice of the catalog, or one the stream inserted.
    pub fn inserted(&mut self, id: i32, s: Slice) {
        self.known.insert(id, s);
    }

    /// A slice the stream deleted; `schemas`: the run's.
    pub fn deleted(&mut self, id: i32, schemas: &[String]) -> Dropped {
        let Some(slice) = self.known.remove(&id) else {
            return Dropped::Unknown(format!("dimension slice {id}"));
        };
        let Some(d) = self.dimensions.get(&slice.dimension) else {
            return Dropped::Unknown(format!("dimension {}", slice.dimension));
        };
        let hypertable = d.hypertable.clone();
        if !schemas.contains(&hypertable.0) {
            return Dropped::Nothing;
        }
        let going = self.going.entry(slice.chunk).or_default();
        going.push(slice);
        let all = self
            .dimensions
            .values()
            .filter(|d| d.hypertable == hypertable)
            .count();
        if going.len() < all {
            return Dropped::Nothing;
        }
        let mut going = self.going.remove(&slice.chunk).unwrap_or_default();
        going.sort_by_key(|s| s.dimension);
        let mut parts = Vec::new();
        let mut time = None;
        for s in &going {
            let Some(d) = self.dimensions.get(&s.dimension) else {
                return Dropped::Unknown(format!("dimension {}", s.dimension));
            };
            if !d.space && (s.start != OPEN_START || s.end != OPEN_END) {
                time = time_range(d, s);
            }
            match bounds(d, s) {
                Some(b) => parts.extend(b),
                None => {
                    return Dropped::Unknown(format!(
                        "how to compare {}.{}.{} ({}{}) with a slice's range",
                        d.hypertable.0,
                        d.hypertable.1,
                        d.column,
                        d.column_type,
                        if d.func.is_some() {
                            ", custom partitioning function"
                        } else {
                            ""
                        }
                    ))
                }
            }
        }
        Dropped::Rows {
            hypertable,
            // Every slice open at both ends: the whole table.
            filter: if parts.is_empty() {
                "true".into()
            } else {
                parts.join(" AND ")
            },
            time,
        }
    }
}

/// The time slice's range as `drop_chunks` arguments (None: not a time dimension it reads).
fn time_range(d: &Dimension, s: &Slice) -> Option<TimeRange> {
    let value = time_value(d)?;
    Some(TimeRange {
        newer_than: (s.start != OPEN_START).then(|| value(s.start)),
        older_than: (s.end != OPEN_END).then(|| value(s.end)),
    })
}

/// A time dimension's internal values as SQL of the column's type, by TimescaleDB's own
/// functions. None for a type or a partitioning function it cannot compare.
fn time_value(d: &Dimension) -> Option<fn(i64) -> String> {
    if d.func.is_some() {
        return None;
    }
    Some(match d.column_type.as_str() {
        "timestamp with time zone" => |v| format!("_timescaledb_functions.to_timestamp({v})"),
        "timestamp without time zone" => {
            |v| format!("_timescaledb_functions.to_timestamp_without_timezone({v})")
        }
        "date" => |v| format!("_timescaledb_functions.to_date({v})"),
        "smallint" | "integer" | "bigint" => |v| v.to_string(),
        _ => return None,
    })
}

/// `expr >= start AND expr < end` for one slice (open ends left out), with the range's
/// internal values turned into the column's type by TimescaleDB's own functions, so the
/// target's chunk exclusion applies. None for a column type or function it cannot compare.
fn bounds(d: &Dimension, s: &Slice) -> Option<Vec<String>> {
    let col = conn::quote_ident(&d.column);
    let (expr, value): (String, fn(i64) -> String) = if d.space {
        let f = match &d.func {
            Some((schema, name)) => conn::qualified(schema, name),
            None => "_timescaledb_functions.get_partition_hash".into(),
        };
        (format!("{f}({col})"), |v| v.to_string())
    } else {
        (col, time_value(d)?)
    };
    let mut out = Vec::new();
    if s.start != OPEN_START {
        out.push(format!("{expr} >= {}", value(s.start)));
    }
    if s.end != OPEN_END {
        out.push(format!("{expr} < {}", value(s.end)));
    }
    Some(out)
}

/// A slice from a row of `dimension_slice` (`columns`: the relation's column names):
/// its id and extent. None when a column is missing or not a number.
pub fn slice_row(columns: &[String], row: &wire::pgoutput::Tuple) -> Option<(i32, Slice)> {
    let get = |name: &str| -> Option<i64> {
        let i = columns.iter().position(|c| c == name)?;
        match row.get(i)? {
            wire::pgoutput::Value::Text(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    };
    Some((
        i32::try_from(get("id")?).ok()?,
        Slice {
            chunk: i32::try_from(get("chunk_id")?).ok()?,
            dimension: i32::try_from(get("dimension_id")?).ok()?,
            start: get("range_start")?,
            end: get("range_end")?,
        },
    ))
}

/// The id of a deleted `dimension_slice` row (its key).
pub fn slice_id(columns: &[String], key: &wire::pgoutput::Tuple) -> Option<i32> {
    let i = columns.iter().position(|c| c == "id")?;
    match key.get(i)? {
        wire::pgoutput::Value::Text(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
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
        assert!(is_materialization(
            CHUNK_SCHEMA,
            "_materialized_hypertable_4"
        ));
        assert!(!is_materialization(CHUNK_SCHEMA, "_hyper_4_1_chunk"));
        assert!(!is_materialization("app", "_materialized_hypertable_4"));
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

    fn dims() -> Slices {
        let mut s = Slices::default();
        let ht = || ("app".to_string(), "r".to_string());
        s.dimension(
            1,
            Dimension {
                hypertable: ht(),
                column: "ts".into(),
                column_type: "timestamp with time zone".into(),
                space: false,
                func: None,
            },
        );
        s.dimension(
            2,
            Dimension {
                hypertable: ht(),
                column: "dev".into(),
                column_type: "integer".into(),
                space: true,
                func: None,
            },
        );
        s.dimension(
            3,
            Dimension {
                hypertable: ("other".into(), "o".into()),
                column: "n".into(),
                column_type: "bigint".into(),
                space: false,
                func: None,
            },
        );
        s
    }

    #[test]
    fn a_chunk_goes_once_all_its_slices_are_deleted() {
        let run = vec!["app".to_string()];
        let mut s = dims();
        let sl = |chunk, dimension, start, end| Slice {
            chunk,
            dimension,
            start,
            end,
        };
        s.inserted(10, sl(7, 1, 1767225600000000, 1767312000000000));
        s.inserted(11, sl(7, 2, OPEN_START, 1073741823));
        s.inserted(12, sl(8, 3, 100, 200));
        assert_eq!(s.deleted(11, &run), Dropped::Nothing);
        assert_eq!(
            s.deleted(10, &run),
            Dropped::Rows {
                hypertable: ("app".into(), "r".into()),
                filter: "\"ts\" >= _timescaledb_functions.to_timestamp(1767225600000000) AND \"ts\" < _timescaledb_functions.to_timestamp(1767312000000000) AND _timescaledb_functions.get_partition_hash(\"dev\") < 1073741823".into(),
                time: Some(TimeRange {
                    newer_than: Some("_timescaledb_functions.to_timestamp(1767225600000000)".into()),
                    older_than: Some("_timescaledb_functions.to_timestamp(1767312000000000)".into()),
                }),
            }
        );
        let open = TimeRange {
            newer_than: None,
            older_than: Some("5".into()),
        };
        assert_eq!(open.args(), "older_than => 5");
        assert_eq!(s.deleted(12, &run), Dropped::Nothing, "not the run's");
        assert_eq!(
            s.deleted(10, &run),
            Dropped::Unknown("dimension slice 10".into()),
            "deleted twice: gone"
        );
        s.inserted(13, sl(9, 4, 0, 1));
        assert_eq!(s.deleted(13, &run), Dropped::Unknown("dimension 4".into()));
    }

    #[test]
    fn slice_bounds_follow_the_column_type() {
        let d = |t: &str, func| Dimension {
            hypertable: ("a".into(), "b".into()),
            column: "t".into(),
            column_type: t.into(),
            space: false,
            func,
        };
        let s = Slice {
            chunk: 1,
            dimension: 1,
            start: 5,
            end: OPEN_END,
        };
        assert_eq!(
            bounds(&d("bigint", None), &s),
            Some(vec!["\"t\" >= 5".into()])
        );
        assert_eq!(
            bounds(&d("date", None), &s),
            Some(vec!["\"t\" >= _timescaledb_functions.to_date(5)".into()])
        );
        assert_eq!(bounds(&d("text", None), &s), None);
        assert_eq!(
            bounds(&d("bigint", Some(("f".into(), "g".into()))), &s),
            None
        );
    }

    #[test]
    fn slice_rows_are_read_by_column_name() {
        let cols: Vec<String> = ["id", "chunk_id", "dimension_id", "range_start", "range_end"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let t = |v: &str| wire::pgoutput::Value::Text(v.as_bytes().to_vec().into());
        let row = vec![t("6"), t("7"), t("1"), t("-9223372036854775808"), t("10")];
        assert_eq!(
            slice_row(&cols, &row),
            Some((
                6,
                Slice {
                    chunk: 7,
                    dimension: 1,
                    start: OPEN_START,
                    end: 10
                }
            ))
        );
        let key = vec![
            t("3"),
            wire::pgoutput::Value::Null,
            wire::pgoutput::Value::Null,
            wire::pgoutput::Value::Null,
            wire::pgoutput::Value::Null,
        ];
        assert_eq!(slice_id(&cols, &key), Some(3));
        assert_eq!(slice_row(&cols, &key), None);
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
