//! Key ranges `(lower, upper]` in primary key order, bounds held as the key columns' text
//! forms and written into SQL as literals (COPY takes no parameters); PostgreSQL resolves
//! each literal to its column's type. An open bound is unbounded, so the first and last
//! ranges of a table also catch rows beyond anything the source had when it was cut.

use conn::quote_literal;
use serde::Serialize;

use crate::table::VerifyTable;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KeyRange {
    /// Exclusive lower bound (None: unbounded).
    pub lower: Option<Vec<String>>,
    /// Inclusive upper bound (None: unbounded).
    pub upper: Option<Vec<String>>,
}

impl KeyRange {
    /// The whole table.
    pub fn all() -> KeyRange {
        KeyRange::default()
    }

    pub fn is_all(&self) -> bool {
        self.lower.is_none() && self.upper.is_none()
    }

    /// `WHERE …` for this range (empty for the whole table). A chunk column is NOT NULL on
    /// the source, but the target's may hold NULLs: the first range takes them, so every row
    /// falls in exactly one range.
    pub fn where_clause(&self, t: &VerifyTable) -> String {
        let Some(key) = t.range_key() else {
            return String::new();
        };
        let lhs = tuple(key.iter().map(|k| k.expr()));
        let mut parts = Vec::new();
        if let Some(lo) = &self.lower {
            parts.push(format!("{lhs} > {}", literals(lo)));
        }
        if let Some(hi) = &self.upper {
            if t.key.is_none() && self.lower.is_none() {
                parts.push(format!("({lhs} <= {} OR {lhs} IS NULL)", literals(hi)));
            } else {
                parts.push(format!("{lhs} <= {}", literals(hi)));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    }

    /// Cuts this range at sorted interior bounds: `(lo, b1], (b1, b2], …, (bn, hi]`.
    pub fn split_at(&self, bounds: &[Vec<String>]) -> Vec<KeyRange> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut lower = self.lower.clone();
        for b in bounds {
            out.push(KeyRange {
                lower: lower.take(),
                upper: Some(b.clone()),
            });
            lower = Some(b.clone());
        }
        out.push(KeyRange {
            lower,
            upper: self.upper.clone(),
        });
        out
    }

    /// `(a, b]` as an operator reads it.
    pub fn describe(&self) -> String {
        if self.is_all() {
            return "whole table".into();
        }
        let show = |b: &Option<Vec<String>>, open: &str| match b {
            None => open.to_string(),
            Some(v) if v.len() == 1 => v[0].clone(),
            Some(v) => format!("({})", v.join(", ")),
        };
        format!(
            "({}, {}]",
            show(&self.lower, "-inf"),
            show(&self.upper, "+inf")
        )
    }
}

fn tuple(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("({})", items.join(", "))
    }
}

fn literals(values: &[String]) -> String {
    tuple(values.iter().map(|v| quote_literal(v)))
}

/// `SELECT cols FROM t WHERE range` as a COPY statement, of every compared column.
pub fn copy_out_sql(t: &VerifyTable, range: &KeyRange) -> String {
    copy_out_of(t, range, &t.column_list())
}

/// Like [`copy_out_sql`], of the columns a COPY writes (for repair).
pub fn copy_out_stored(t: &VerifyTable, range: &KeyRange) -> String {
    copy_out_of(t, range, &t.stored_column_list())
}

fn copy_out_of(t: &VerifyTable, range: &KeyRange, columns: &str) -> String {
    format!(
        "COPY (SELECT {columns} FROM {}{}) TO STDOUT (FORMAT {})",
        t.relation(),
        range.where_clause(t),
        t.format.sql()
    )
}

/// Rebuilds a range (e.g. from the state schema).
pub fn from_bounds(lower: Option<Vec<String>>, upper: Option<Vec<String>>) -> KeyRange {
    KeyRange { lower, upper }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copybin::Format;
    use crate::table::{Column, KeyColumn};

    fn table(key: &[(&str, bool)]) -> VerifyTable {
        VerifyTable {
            schema: "s".into(),
            name: "t".into(),
            qualified: "\"s\".\"t\"".into(),
            only: false,
            columns: vec![Column {
                name: "v".into(),
                ident: "\"v\"".into(),
                needs_text: false,
                source_type: "integer".into(),
                generated: false,
            }],
            key: Some(
                key.iter()
                    .map(|(n, c)| KeyColumn {
                        name: n.to_string(),
                        ident: format!("\"{n}\""),
                        collatable: *c,
                    })
                    .collect(),
            ),
            format: Format::Binary,
            bytes: 0,
            estimated_rows: None,
            journaled: true,
            chunk_column: None,
        }
    }

    #[test]
    fn predicates() {
        let t = table(&[("id", false)]);
        assert_eq!(KeyRange::all().where_clause(&t), "");
        let r = KeyRange {
            lower: Some(vec!["10".into()]),
            upper: Some(vec!["20".into()]),
        };
        assert_eq!(
            r.where_clause(&t),
            " WHERE \"id\" > '10' AND \"id\" <= '20'"
        );
        assert_eq!(r.describe(), "(10, 20]");
        let t2 = table(&[("a", true), ("b", false)]);
        let r = KeyRange {
            lower: None,
            upper: Some(vec!["it's".into(), "2".into()]),
        };
        assert_eq!(
            r.where_clause(&t2),
            " WHERE (\"a\" COLLATE \"C\", \"b\") <= ('it''s', '2')"
        );
        assert_eq!(r.describe(), "(-inf, (it's, 2)]");
        assert_eq!(
            copy_out_sql(&t, &KeyRange::all()),
            "COPY (SELECT \"v\" FROM \"s\".\"t\") TO STDOUT (FORMAT binary)"
        );
        let only = VerifyTable { only: true, ..t };
        assert_eq!(
            copy_out_sql(&only, &KeyRange::all()),
            "COPY (SELECT \"v\" FROM ONLY \"s\".\"t\") TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn a_keyless_tables_first_range_takes_its_nulls() {
        let t = VerifyTable {
            key: None,
            chunk_column: Some(KeyColumn {
                name: "n".into(),
                ident: "\"n\"".into(),
                collatable: false,
            }),
            ..table(&[])
        };
        let parts = KeyRange::all().split_at(&[vec!["5".into()]]);
        assert_eq!(
            parts[0].where_clause(&t),
            " WHERE (\"n\" <= '5' OR \"n\" IS NULL)"
        );
        assert_eq!(parts[1].where_clause(&t), " WHERE \"n\" > '5'");
        let none = VerifyTable {
            chunk_column: None,
            ..t
        };
        assert_eq!(parts[0].where_clause(&none), "");
    }

    #[test]
    fn split_covers_the_range() {
        let r = KeyRange {
            lower: Some(vec!["0".into()]),
            upper: None,
        };
        let parts = r.split_at(&[vec!["5".into()], vec!["9".into()]]);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].lower, r.lower);
        assert_eq!(parts[0].upper, Some(vec!["5".to_string()]));
        assert_eq!(parts[1].lower, Some(vec!["5".to_string()]));
        assert_eq!(parts[2].lower, Some(vec!["9".to_string()]));
        assert_eq!(parts[2].upper, None);
        assert_eq!(r.split_at(&[]), vec![r.clone()]);
    }
}
