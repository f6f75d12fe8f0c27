//! Row-level differences between the two sides of a small range: rows matched by key and
//! compared column by column on their exact values; rows without a partner are listed
//! whole. Tables without a key are multisets: a row is "only on one side" as many times as
//! it occurs more often there.

use std::collections::HashMap;

use serde::Serialize;

use crate::report::{shorten, shorten_pair};
use crate::rows::FetchedRows;
use crate::table::VerifyTable;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    pub column: String,
    /// Text form (None: NULL).
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnDiff {
    pub column: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowDiff {
    /// Same key, different values.
    Changed {
        key: Vec<Named>,
        columns: Vec<ColumnDiff>,
    },
    /// On the source only (missing on the target).
    OnlySource { key: Vec<Named>, row: Vec<Named> },
    /// On the target only (extra there).
    OnlyTarget { key: Vec<Named>, row: Vec<Named> },
}

impl RowDiff {
    pub fn key(&self) -> &[Named] {
        match self {
            RowDiff::Changed { key, .. }
            | RowDiff::OnlySource { key, .. }
            | RowDiff::OnlyTarget { key, .. } => key,
        }
    }
}

fn named(t: &VerifyTable, rows: &FetchedRows, r: usize, cols: &[usize]) -> Vec<Named> {
    cols.iter()
        .map(|&c| Named {
            column: t.columns[c].name.clone(),
            value: rows.text_value(r, c).map(|v| shorten(&v)),
        })
        .collect()
}

/// Differences between the rows of one range on both sides.
pub fn compare(t: &VerifyTable, source: &FetchedRows, target: &FetchedRows) -> Vec<RowDiff> {
    let all: Vec<usize> = (0..t.columns.len()).collect();
    let key = t.key_positions();
    // Without a key, the whole row is the key (multiset).
    let key: &[usize] = if t.key.is_some() && !key.is_empty() {
        &key
    } else {
        &all
    };
    let mut by_key: HashMap<u128, Vec<usize>> = HashMap::new();
    for r in 0..target.len() {
        by_key.entry(target.hash_of(r, key)).or_default().push(r);
    }
    let mut out = Vec::new();
    for r in 0..source.len() {
        let k = source.hash_of(r, key);
        let partner = by_key.get_mut(&k).and_then(|v| v.pop());
        match partner {
            None => out.push(RowDiff::OnlySource {
                key: if t.key.is_some() {
                    named(t, source, r, key)
                } else {
                    Vec::new()
                },
                row: named(t, source, r, &all),
            }),
            Some(tr) => {
                let columns: Vec<ColumnDiff> = all
                    .iter()
                    .filter(|&&c| source.raw_value(r, c) != target.raw_value(tr, c))
                    .map(|&c| {
                        let (s, d) = match (source.text_value(r, c), target.text_value(tr, c)) {
                            (Some(s), Some(d)) => {
                                let (s, d) = shorten_pair(&s, &d);
                                (Some(s), Some(d))
                            }
                            (s, d) => (s.map(|v| shorten(&v)), d.map(|v| shorten(&v))),
                        };
                        ColumnDiff {
                            column: t.columns[c].name.clone(),
                            source: s,
                            target: d,
                        }
                    })
                    .collect();
                if !columns.is_empty() {
                    out.push(RowDiff::Changed {
                        key: named(t, source, r, key),
                        columns,
                    });
                }
            }
        }
    }
    let mut extra: Vec<usize> = by_key.into_values().flatten().collect();
    extra.sort_unstable();
    for r in extra {
        out.push(RowDiff::OnlyTarget {
            key: if t.key.is_some() {
                named(t, target, r, key)
            } else {
                Vec::new()
            },
            row: named(t, target, r, &all),
        });
    }
    out
}
