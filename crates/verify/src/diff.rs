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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copybin::Format;
    use crate::table::{Column, KeyColumn};

    fn table(keyed: bool) -> VerifyTable {
        let col = |n: &str| Column {
            name: n.into(),
            ident: format!("\"{n}\""),
            needs_text: false,
            source_type: "integer".into(),
            generated: false,
        };
        VerifyTable {
            schema: "s".into(),
            name: "t".into(),
            qualified: "\"s\".\"t\"".into(),
            only: false,
            columns: vec![col("id"), col("v"), col("w")],
            key: keyed.then(|| {
                vec![KeyColumn {
                    name: "id".into(),
                    ident: "\"id\"".into(),
                    collatable: false,
                }]
            }),
            format: Format::Binary,
            bytes: 0,
            estimated_rows: None,
            journaled: true,
            chunk_column: None,
        }
    }

    fn rows(r: &[[Option<&str>; 3]]) -> FetchedRows {
        let v: Vec<Vec<Option<&str>>> = r.iter().map(|x| x.to_vec()).collect();
        FetchedRows::from_text(&["id", "v", "w"], &v)
    }

    #[test]
    fn keyed_rows_changed_missing_extra() {
        let t = table(true);
        let s = rows(&[
            [Some("1"), Some("a"), None],
            [Some("2"), Some("b"), Some("x")],
            [Some("3"), Some("c"), Some("y")],
        ]);
        let d = rows(&[
            [Some("3"), Some("c"), Some("y")],
            [Some("1"), Some("a"), Some("")],
            [Some("4"), Some("d"), None],
        ]);
        let diffs = compare(&t, &s, &d);
        assert_eq!(diffs.len(), 3, "{diffs:#?}");
        assert_eq!(
            diffs[0],
            RowDiff::Changed {
                key: vec![Named {
                    column: "id".into(),
                    value: Some("1".into())
                }],
                columns: vec![ColumnDiff {
                    column: "w".into(),
                    source: None,
                    target: Some(String::new())
                }],
            }
        );
        assert!(
            matches!(&diffs[1], RowDiff::OnlySource { key, .. } if key[0].value.as_deref() == Some("2"))
        );
        assert!(
            matches!(&diffs[2], RowDiff::OnlyTarget { key, .. } if key[0].value.as_deref() == Some("4"))
        );
        assert!(compare(&t, &s, &s).is_empty());
    }

    #[test]
    fn unkeyed_rows_are_a_multiset() {
        let t = table(false);
        let a = [Some("1"), Some("a"), None];
        let b = [Some("1"), Some("b"), None];
        // Source: a twice and b; target: a once and b: one a is missing.
        let diffs = compare(&t, &rows(&[a, a, b]), &rows(&[b, a]));
        assert_eq!(diffs.len(), 1, "{diffs:#?}");
        assert!(
            matches!(&diffs[0], RowDiff::OnlySource { key, row } if key.is_empty() && row[1].value.as_deref() == Some("a"))
        );
        // A changed row without a key: the old one on the source, the new one on the target.
        let diffs = compare(&t, &rows(&[a]), &rows(&[b]));
        assert_eq!(diffs.len(), 2);
        assert!(matches!(diffs[0], RowDiff::OnlySource { .. }));
        assert!(matches!(diffs[1], RowDiff::OnlyTarget { .. }));
    }
}
