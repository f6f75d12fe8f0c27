//! Incremental verify: after a clean verify at LSN X (the base), a verify at Y checks only
//! the chunks that may have changed since X and carries the others' verdicts forward.
//!
//! A chunk may have changed when the applier wrote a key in it (sync records each group's
//! keys, `state::changes`); a table is checked in full when anything else may have touched
//! it: a write on green by another session (the watch trigger), a resumed copy, a change of
//! its shape (columns, types, key), a missing or disabled watch trigger, a TRUNCATE, keys
//! that do not map onto its chunks, changes journaled under another name (a partition, a
//! table read with its children; see `VerifyTable::journaled`). A repair makes a verdict other than "equal", and
//! the base must be the run's latest verify, so a repair since X means a full verify.
//! Keys are mapped onto the base's chunks by the target, by type: chunks cover every key
//! (the first and last are open), so no key falls outside them.

use std::collections::BTreeMap;

use state::changes::Journal;
use state::verify::{Base, ChunkResult};
use tokio_postgres::Client;

use crate::hash::Digest;
use crate::range::KeyRange;
use crate::table::VerifyTable;

/// What a table's shape is, for telling whether its chunks and checksums still apply.
pub fn shape(t: &VerifyTable) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            format!(
                "{}:{}:{}:{}",
                c.name, c.source_type, c.needs_text, c.generated
            )
        })
        .collect();
    let key: Vec<String> = t
        .key
        .iter()
        .flatten()
        .map(|k| format!("{}:{}", k.name, k.collatable))
        .collect();
    // Appended only where there is one: older records of keyed tables stay comparable.
    let chunk_column = t
        .chunk_column
        .as_ref()
        .map(|k| format!(" chunk_column={}:{}", k.name, k.collatable))
        .unwrap_or_default();
    format!(
        "only={} format={} columns=[{}] key=[{}]{chunk_column}",
        t.only,
        t.format.sql(),
        cols.join(","),
        key.join(",")
    )
}

/// The base verify and, per table (by position), its chunks when they may be carried
/// forward (None: the table is checked in full).
#[derive(Debug)]
pub struct Prior {
    pub id: i64,
    pub tables: Vec<Option<Vec<ChunkResult>>>,
}

impl Prior {
    /// Which of `tables` may carry chunks from `base`: same shape, watched by the trigger
    /// since before the base (it is put on by every verify before its snapshot), no copy
    /// since, and chunks that cover every key in order.
    pub fn new(base: Base, tables: &[VerifyTable], watched: &[(String, String)]) -> Prior {
        let per_table = tables
            .iter()
            .map(|t| {
                let name = (t.schema.clone(), t.name.clone());
                if !t.journaled || !watched.contains(&name) || base.copied_since.contains(&name) {
                    return None;
                }
                let b = base
                    .tables
                    .iter()
                    .find(|b| b.schema == t.schema && b.name == t.name)?;
                (b.shape == shape(t) && covers(&b.chunks)).then(|| b.chunks.clone())
            })
            .collect();
        Prior {
            id: base.id,
            tables: per_table,
        }
    }
}

/// Chunks 0..n in order, each starting where the one before ended, the first and last open.
fn covers(chunks: &[ChunkResult]) -> bool {
    let Some(first) = chunks.first() else {
        return false;
    };
    first.lower.is_none()
        && chunks.last().is_some_and(|c| c.upper.is_none())
        && chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.chunk == i as i32 && c.equal)
        && chunks
            .windows(2)
            .all(|w| w[0].upper == w[1].lower && w[0].upper.is_some())
}

/// What to do with one table.
#[derive(Debug)]
pub enum TablePlan {
    /// Plan chunks afresh and check them all.
    Full,
    /// Check these of the base's chunks, carry the rest.
    Chunks {
        check: Vec<Recheck>,
        base: Vec<ChunkResult>,
    },
}

/// A base chunk sync wrote since, and how to check it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Recheck {
    pub chunk: usize,
    /// The keys written, when few enough to check their rows alone (see [`by_keys`]);
    /// None: hash the whole chunk.
    pub keys: Option<Vec<Vec<String>>>,
}

/// Keys past which a chunk is hashed whole rather than checked by its written rows.
const MAX_KEYS_PER_CHUNK: usize = 1_000;

/// Whether a chunk whose rows were `rows` at its last check and that sync wrote `keys` in
/// may be checked by those keys' rows alone. It may whenever nothing but the applier wrote
/// it (the table would be checked in full otherwise): every other row is as it was when
/// the chunk was found equal, on both sides. Past half of the chunk's rows, or
/// [`MAX_KEYS_PER_CHUNK`], reading it whole is about as cheap as looking keys up.
pub fn by_keys(keys: usize, rows: i64) -> bool {
    keys <= MAX_KEYS_PER_CHUNK && (keys as i64) * 2 <= rows
}

/// Per table, from what the target snapshot's journal shows changed since the base.
/// `reader` reads at the target snapshot (it maps keys onto chunks, typed).
pub async fn plan(
    reader: &Client,
    prior: &Prior,
    journal: &Journal,
    tables: &[VerifyTable],
) -> Vec<TablePlan> {
    let mut out = Vec::with_capacity(tables.len());
    for (t, base) in tables.iter().zip(&prior.tables) {
        let Some(base) = base else {
            out.push(TablePlan::Full);
            continue;
        };
        let name = (t.schema.clone(), t.name.clone());
        if journal.written.contains(&name) {
            tracing::info!(table = %t.display(), "written on green by another session since the last verify: checked in full");
            out.push(TablePlan::Full);
            continue;
        }
        let key_names: Vec<String> = t
            .range_key()
            .unwrap_or_default()
            .iter()
            .map(|k| k.name.clone())
            .collect();
        let mut keys: Vec<&Vec<String>> = Vec::new();
        let mut whole = false;
        for e in journal
            .touched
            .iter()
            .filter(|e| e.schema == t.schema && e.name == t.name)
        {
            if e.whole || e.columns != key_names || key_names.is_empty() {
                whole = true;
                break;
            }
            keys.extend(e.keys.iter());
        }
        if whole {
            out.push(TablePlan::Full);
            continue;
        }
        let check = if keys.is_empty() {
            Vec::new()
        } else {
            match rechecks(reader, t, &keys, base).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(table = %t.display(), error = %e, "could not map changed keys onto chunks: checked in full");
                    out.push(TablePlan::Full);
                    continue;
                }
            }
        };
        out.push(TablePlan::Chunks {
            check,
            base: base.clone(),
        });
    }
    out
}

/// The chunks `keys` fall in, with their keys, mapped by the key columns' types on the
/// target: keys and the chunks' upper bounds sorted together, each key's chunk being the
/// number of bounds below it (a bound is the inclusive end of its chunk).
async fn rechecks(
    reader: &Client,
    t: &VerifyTable,
    keys: &[&Vec<String>],
    base: &[ChunkResult],
) -> Result<Vec<Recheck>, tokio_postgres::Error> {
    let casts = t.range_key_from_json("k");
    let q = format!(
        "SELECT c, n FROM (
           SELECT tag, n, sum(tag) OVER (ORDER BY {order}, tag ROWS UNBOUNDED PRECEDING) AS c
             FROM (SELECT 0 AS tag, n, {casts} FROM jsonb_array_elements($1) WITH ORDINALITY e(k, n)
                   UNION ALL
                   SELECT 1, 0, {casts} FROM jsonb_array_elements($2) k) u) w
          WHERE tag = 0",
        order = t.range_order()
    );
    let bounds: Vec<&Vec<String>> = base.iter().filter_map(|c| c.upper.as_ref()).collect();
    let keys_json = serde_json::to_value(keys).unwrap_or_default();
    let bounds = serde_json::to_value(bounds).unwrap_or_default();
    // A key that does not read as its type aborts the query, not the snapshot's transaction.
    reader.batch_execute("SAVEPOINT bluegreen_keys").await?;
    match reader.query(&q, &[&keys_json, &bounds]).await {
        Ok(rows) => {
            reader
                .batch_execute("RELEASE SAVEPOINT bluegreen_keys")
                .await?;
            let mut per_chunk: BTreeMap<usize, Vec<Vec<String>>> = BTreeMap::new();
            for r in rows {
                let (c, n) = (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize);
                if let (true, Some(k)) =
                    (c < base.len(), n.checked_sub(1).and_then(|i| keys.get(i)))
                {
                    per_chunk.entry(c).or_default().push((*k).clone());
                }
            }
            Ok(per_chunk
                .into_iter()
                .map(|(chunk, mut keys)| Recheck {
                    chunk,
                    // Sorted and deduplicated first: groups may write a key again.
                    keys: {
                        keys.sort_unstable();
                        keys.dedup();
                        by_keys(keys.len(), base[chunk].source_rows).then_some(keys)
                    },
                })
                .collect())
        }
        Err(e) => {
            reader
                .batch_execute("ROLLBACK TO SAVEPOINT bluegreen_keys")
                .await?;
            Err(e)
        }
    }
}

/// A carried chunk's range and digests, rebuilt from its recorded row.
pub fn carried(c: &ChunkResult) -> (KeyRange, Digest, Digest) {
    let digest = |hex: &str, rows: i64| Digest {
        sum: u128::from_str_radix(hex, 16).unwrap_or_default(),
        rows: rows as u64,
        bytes: 0,
    };
    (
        KeyRange {
            lower: c.lower.clone(),
            upper: c.upper.clone(),
        },
        digest(&c.source_checksum, c.source_rows),
        digest(&c.target_checksum, c.target_rows),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: i32, lower: Option<&str>, upper: Option<&str>) -> ChunkResult {
        ChunkResult {
            pass: "check",
            table_schema: "s".into(),
            table_name: "t".into(),
            chunk: i,
            lower: lower.map(|l| vec![l.to_string()]),
            upper: upper.map(|u| vec![u.to_string()]),
            lsn: wire::Lsn(0),
            source_checksum: format!("{:032x}", 7u128),
            target_checksum: format!("{:032x}", 7u128),
            source_rows: 3,
            target_rows: 3,
            equal: true,
            seconds: 0.0,
            carried_from: None,
        }
    }

    #[test]
    fn chunks_must_cover_every_key_in_order() {
        let ok = vec![
            chunk(0, None, Some("5")),
            chunk(1, Some("5"), Some("9")),
            chunk(2, Some("9"), None),
        ];
        assert!(covers(&ok));
        assert!(covers(&[chunk(0, None, None)]));
        assert!(!covers(&[]));
        assert!(!covers(&ok[1..]));
        let gap = vec![chunk(0, None, Some("5")), chunk(1, Some("6"), None)];
        assert!(!covers(&gap));
        let (r, s, t) = carried(&ok[1]);
        assert_eq!(r.describe(), "(5, 9]");
        assert!(s.matches(&t));
        assert_eq!(s.sum, 7);
    }
}
