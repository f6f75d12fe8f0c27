//! Narrows a mismatched range down to rows: cut it at key quantiles of the side with more
//! rows, checksum the parts on both sides, go on with the parts that differ; once a part
//! holds few rows, fetch them from both sides and compare row by row. Tables without a key
//! are located through their row hashes as multisets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;
use tokio_postgres::Client;

use crate::checksum::digest;
use crate::diff::{compare, RowDiff};
use crate::error::{sql, Error};
use crate::hash::Digest;
use crate::range::KeyRange;
use crate::rows::{fetch, row_hashes};
use crate::table::VerifyTable;

/// A range with at most this many rows on either side is fetched and compared row by row.
pub const LEAF_ROWS: u64 = 64;
/// Parts per cut.
const FANOUT: u64 = 8;
/// Cuts before giving up on narrowing further (never reached with unique keys).
const MAX_DEPTH: usize = 24;

/// A range that still differs but was not narrowed to rows.
#[derive(Debug, Clone, Serialize)]
pub struct Unlocated {
    pub range: KeyRange,
    pub source: Digest,
    pub target: Digest,
    pub reason: String,
}

/// What locating one mismatched range found.
#[derive(Debug, Clone, Default)]
pub struct Located {
    /// Ranges holding the differences found (what a repair re-copies).
    pub ranges: Vec<KeyRange>,
    pub diffs: Vec<RowDiff>,
    pub unlocated: Vec<Unlocated>,
}

/// Both sides' connections at one instant.
pub struct Pair<'a> {
    pub source: &'a Client,
    pub target: &'a Client,
}

impl Pair<'_> {
    pub async fn digests(&self, t: &VerifyTable, r: &KeyRange) -> Result<(Digest, Digest), Error> {
        tokio::try_join!(
            digest(self.source, "source", t, r),
            digest(self.target, "target", t, r)
        )
    }
}

/// Locates the differences of a keyed range whose digests differ. `budget` is the number of
/// differing rows still worth listing for this table (shared by all its chunks).
pub async fn locate(
    pair: &Pair<'_>,
    t: &VerifyTable,
    range: KeyRange,
    source: Digest,
    target: Digest,
    budget: &AtomicI64,
) -> Result<Located, Error> {
    if t.key.is_none() {
        return locate_multiset(pair, t, range, source, target, budget).await;
    }
    let mut out = Located::default();
    let mut stack = vec![(range, source, target, 0usize)];
    while let Some((r, s, d, depth)) = stack.pop() {
        if budget.load(Ordering::Relaxed) <= 0 {
            out.unlocated.push(Unlocated {
                range: r,
                source: s,
                target: d,
                reason: "row limit for this table's report reached".into(),
            });
            continue;
        }
        let rows = s.rows.max(d.rows);
        let bounds = if rows <= LEAF_ROWS || depth >= MAX_DEPTH {
            Vec::new()
        } else {
            let (client, side) = if s.rows >= d.rows {
                (pair.source, "source")
            } else {
                (pair.target, "target")
            };
            cut_points(client, side, t, &r, rows).await?
        };
        if bounds.is_empty() {
            let (src_rows, tgt_rows) = tokio::try_join!(
                fetch(pair.source, "source", t, &r, None),
                fetch(pair.target, "target", t, &r, None)
            )?;
            let diffs = compare(t, &src_rows, &tgt_rows);
            if diffs.is_empty() {
                out.unlocated.push(Unlocated {
                    range: r,
                    source: s,
                    target: d,
                    reason: "checksums differ but the fetched rows compare equal".into(),
                });
                continue;
            }
            budget.fetch_sub(diffs.len() as i64, Ordering::Relaxed);
            out.ranges.push(r);
            out.diffs.extend(diffs);
            continue;
        }
        for part in r.split_at(&bounds) {
            let (ps, pd) = pair.digests(t, &part).await?;
            if !ps.matches(&pd) {
                stack.push((part, ps, pd, depth + 1));
            }
        }
    }
    Ok(out)
}

/// Key tuples that cut `r` into about [`FANOUT`] parts of equal row counts on one side.
async fn cut_points(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    r: &KeyRange,
    rows: u64,
) -> Result<Vec<Vec<String>>, Error> {
    let key = t.key.as_deref().unwrap_or_default();
    let step = rows.div_ceil(FANOUT).max(1) as i64;
    let inner: Vec<&str> = key.iter().map(|k| k.ident.as_str()).collect();
    let outer: Vec<String> = key.iter().map(|k| format!("{}::text", k.ident)).collect();
    let q = format!(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS bluegreen_rn
                           FROM {}{}) s
          WHERE bluegreen_rn % {step} = 0 ORDER BY bluegreen_rn",
        outer.join(", "),
        inner.join(", "),
        t.key_order(),
        t.relation(),
        r.where_clause(t)
    );
    let found = client
        .query(&q, &[])
        .await
        .map_err(sql(side, format!("cut {} {}", t.display(), r.describe())))?;
    Ok(found
        .iter()
        .map(|row| (0..key.len()).map(|i| row.get::<_, String>(i)).collect())
        .collect())
}

/// A table without a key: row hashes of both sides as multisets, then the rows whose
/// hashes occur more often on one side, fetched and listed.
async fn locate_multiset(
    pair: &Pair<'_>,
    t: &VerifyTable,
    range: KeyRange,
    source: Digest,
    target: Digest,
    budget: &AtomicI64,
) -> Result<Located, Error> {
    let (hs, ht) = tokio::try_join!(
        row_hashes(pair.source, "source", t, &range),
        row_hashes(pair.target, "target", t, &range)
    )?;
    let mut count: HashMap<u128, i64> = HashMap::with_capacity(hs.len());
    for h in hs {
        *count.entry(h).or_default() += 1;
    }
    for h in ht {
        *count.entry(h).or_default() -= 1;
    }
    let mut differing: Vec<(u128, i64)> = count.into_iter().filter(|(_, n)| *n != 0).collect();
    differing.sort_unstable();
    let limit = budget.load(Ordering::Relaxed).max(0) as usize;
    let total: i64 = differing.iter().map(|(_, n)| n.abs()).sum();
    let mut out = Located {
        ranges: vec![range.clone()],
        ..Located::default()
    };
    if differing.len() > limit {
        out.unlocated.push(Unlocated {
            range: range.clone(),
            source,
            target,
            reason: format!(
                "{} of {total} differing rows listed (row limit for this table's report)",
                limit
            ),
        });
        differing.truncate(limit);
    }
    let wanted: HashSet<u128> = differing.iter().map(|(h, _)| *h).collect();
    let keep = |h: u128| wanted.contains(&h);
    let (src_rows, tgt_rows) = tokio::try_join!(
        fetch(pair.source, "source", t, &range, Some(&keep)),
        fetch(pair.target, "target", t, &range, Some(&keep))
    )?;
    out.diffs = compare(t, &src_rows, &tgt_rows);
    budget.fetch_sub(out.diffs.len() as i64, Ordering::Relaxed);
    if out.diffs.is_empty() && !source.matches(&target) {
        out.unlocated.push(Unlocated {
            range,
            source,
            target,
            reason: "checksums differ but the rows compare equal".into(),
        });
    }
    Ok(out)
}
