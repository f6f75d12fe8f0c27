//! What a verify found, as JSON (`--json`, a stable shape: fields are only added) and as
//! text for people.

use std::fmt::Write;
use wire::Lsn;

use serde::Serialize;

use crate::bisect::Unlocated;
use crate::diff::{Named, RowDiff};
use crate::hash::Digest;
use crate::range::KeyRange;
use crate::snapshot::Consistency;

/// Version of the JSON shape; bumped only for incompatible changes.
pub const REPORT_FORMAT: u32 = 1;

/// Values longer than this many characters are cut in reports (around their first
/// difference when both sides have one).
pub const VALUE_CHARS: usize = 160;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: u32,
    pub run: String,
    /// Row id in `bluegreen.verify_runs`.
    pub verify_id: i64,
    /// Connections, passwords removed.
    pub source: String,
    pub target: String,
    /// The source snapshot's LSN: the instant compared.
    pub lsn: Lsn,
    /// The clean verify this one carried unchanged chunks forward from (None: every chunk
    /// was checked).
    pub incremental_from: Option<i64>,
    pub consistency: Consistency,
    /// What the comparison guarantees at this instant, in words.
    pub note: String,
    /// Every chunk matched.
    pub equal: bool,
    pub seconds: f64,
    /// Bytes hashed on both sides together.
    pub bytes: u64,
    pub tables: Vec<TableReport>,
    pub repair: Option<RepairReport>,
    /// Compared, but not counted in `equal`: each side refreshes its own materialized views
    /// (their rows are not replicated), and cutover refreshes the new primary's before its
    /// pause. A difference says green's were refreshed at another time than blue's.
    pub materialized_views: Vec<MatViewCheck>,
    /// TimescaleDB continuous aggregates' materialized rows, at the same snapshots: migrated
    /// and streamed, so counted in `equal`.
    pub continuous_aggregates: Vec<crate::aggregates::AggregateCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatViewCheck {
    pub schema: String,
    pub name: String,
    /// None: the view is missing, or not populated, on that side.
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    pub equal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub schema: String,
    pub name: String,
    /// Primary key columns (None: compared as a multiset of rows).
    pub key: Option<Vec<String>>,
    /// Chunks in all: checked now, and carried forward unchanged.
    pub chunks: usize,
    pub checked: usize,
    /// Of those checked, the chunks checked by the rows sync wrote in them alone (the rest
    /// of each unchanged since it was last found equal), not hashed whole.
    pub checked_by_keys: usize,
    pub carried: usize,
    /// The verifies that checked the carried chunks.
    pub carried_from: Vec<i64>,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Bytes hashed for this table, both sides (what its checked chunks cost).
    pub bytes: u64,
    pub mismatched_chunks: Vec<ChunkMismatch>,
    pub differences: Vec<RowDiff>,
    /// Differing ranges not narrowed down to rows.
    pub unlocated: Vec<Unlocated>,
}

impl TableReport {
    pub fn equal(&self) -> bool {
        self.mismatched_chunks.is_empty()
    }

    pub fn display(&self) -> String {
        conn::display_qualified(&self.schema, &self.name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkMismatch {
    pub chunk: usize,
    pub range: KeyRange,
    pub source: Digest,
    pub target: Digest,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The instant the repair copied from (a fresh source snapshot).
    pub lsn: Lsn,
    pub consistency: Consistency,
    pub ranges: Vec<RepairedRange>,
    pub rows_deleted: u64,
    pub rows_copied: u64,
    /// Every re-copied range verified equal afterwards.
    pub equal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairedRange {
    pub schema: String,
    pub name: String,
    pub range: KeyRange,
    /// Verified again after the repair, at the repair's instant.
    pub equal: bool,
}

/// `…` marks, `(N characters)` notes: a long value cut to `VALUE_CHARS`.
pub fn shorten(v: &str) -> String {
    let n = v.chars().count();
    if n <= VALUE_CHARS {
        return v.to_string();
    }
    let head: String = v.chars().take(VALUE_CHARS).collect();
    format!("{head}… ({n} characters)")
}

/// Both values cut to a window around their first difference.
pub fn shorten_pair(a: &str, b: &str) -> (String, String) {
    let (ac, bc): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if ac.len() <= VALUE_CHARS && bc.len() <= VALUE_CHARS {
        return (a.to_string(), b.to_string());
    }
    let first = ac
        .iter()
        .zip(&bc)
        .position(|(x, y)| x != y)
        .unwrap_or(ac.len().min(bc.len()));
    let start = first.saturating_sub(VALUE_CHARS / 4);
    let cut = |c: &[char]| {
        let end = (start + VALUE_CHARS).min(c.len());
        let body: String = c[start.min(c.len())..end].iter().collect();
        format!(
            "{}{body}{} ({} characters, first difference at character {first})",
            if start > 0 { "…" } else { "" },
            if end < c.len() { "…" } else { "" },
            c.len()
        )
    };
    (cut(&ac), cut(&bc))
}

fn show(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) => format!("{:?}", s),
    }
}

fn show_named(list: &[Named]) -> String {
    list.iter()
        .map(|n| format!("{}={}", n.column, show(&n.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn differing_tables(&self) -> impl Iterator<Item = &TableReport> {
        self.tables.iter().filter(|t| !t.equal())
    }

    /// The text report.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "verify of run {} at source LSN {}", self.run, self.lsn);
        let _ = writeln!(o, "  source: {}\n  target: {}", self.source, self.target);
        let _ = writeln!(o, "  {}", self.note);
        let chunks: usize = self.tables.iter().map(|t| t.chunks).sum();
        let (sr, tr): (u64, u64) = self
            .tables
            .iter()
            .fold((0, 0), |(a, b), t| (a + t.source_rows, b + t.target_rows));
        let _ = writeln!(
            o,
            "  {} tables, {chunks} chunks, {sr} rows on the source, {tr} on the target, {:.1} MB hashed in {:.1} s",
            self.tables.len(),
            self.bytes as f64 / 1e6,
            self.seconds
        );
        if let Some(base) = self.incremental_from {
            let checked: usize = self.tables.iter().map(|t| t.checked).sum();
            let _ = writeln!(
                o,
                "  incremental: {checked} chunk(s) checked, {} carried forward unchanged since verify {base} (`--full` checks every chunk)",
                chunks - checked
            );
            for t in &self.tables {
                let from = if t.carried_from.is_empty() {
                    String::new()
                } else {
                    let ids: Vec<String> = t.carried_from.iter().map(i64::to_string).collect();
                    format!(" from verify {}", ids.join(", "))
                };
                let by_keys = if t.checked_by_keys > 0 {
                    format!(" ({} by the rows written in them)", t.checked_by_keys)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "    {}: {} of {} chunk(s) checked{by_keys}, {} carried forward{from}",
                    t.display(),
                    t.checked,
                    t.chunks,
                    t.carried
                );
            }
        }
        if self.equal {
            let _ = writeln!(o, "\nEQUAL: every chunk of every table matches.");
        } else if self.differing_tables().next().is_none() {
            let _ = writeln!(
                o,
                "\nDIFFERENT: every table matches, but {} continuous aggregate(s) differ.",
                self.continuous_aggregates
                    .iter()
                    .filter(|a| !a.equal)
                    .count()
            );
        } else {
            let differing: Vec<&TableReport> = self.differing_tables().collect();
            let rows: usize = differing.iter().map(|t| t.differences.len()).sum();
            let _ = writeln!(
                o,
                "\nDIFFERENT: {} table(s) differ, {} chunk(s), {rows} row difference(s) located.",
                differing.len(),
                differing
                    .iter()
                    .map(|t| t.mismatched_chunks.len())
                    .sum::<usize>()
            );
            for t in differing {
                self.table_section(&mut o, t);
            }
        }
        if !self.continuous_aggregates.is_empty() {
            let same = self
                .continuous_aggregates
                .iter()
                .filter(|a| a.equal)
                .count();
            let _ = writeln!(
                o,
                "\ncontinuous aggregates: {same} of {} hold the same materialized rows on both sides",
                self.continuous_aggregates.len()
            );
            let rows = |n: Option<i64>| n.map_or("missing".into(), |n| format!("{n} rows"));
            for a in self.continuous_aggregates.iter().filter(|a| !a.equal) {
                let _ = writeln!(
                    o,
                    "  differs: {}.{} (source {}, target {})",
                    a.schema,
                    a.name,
                    rows(a.source_rows),
                    rows(a.target_rows)
                );
            }
        }
        if !self.materialized_views.is_empty() {
            let same = self.materialized_views.iter().filter(|m| m.equal).count();
            let _ = writeln!(
                o,
                "\nmaterialized views: {same} of {} hold the same rows on both sides (not counted in the verdict: each side refreshes its own; cutover refreshes the new primary's before its pause)",
                self.materialized_views.len()
            );
            let rows = |n: Option<i64>| {
                n.map_or("not populated or missing".into(), |n| format!("{n} rows"))
            };
            for m in self.materialized_views.iter().filter(|m| !m.equal) {
                let _ = writeln!(
                    o,
                    "  differs: {}.{} (source {}, target {})",
                    m.schema,
                    m.name,
                    rows(m.source_rows),
                    rows(m.target_rows)
                );
            }
        }
        if let Some(r) = &self.repair {
            let _ = writeln!(
                o,
                "\nrepair at source LSN {} ({}): {} range(s) re-copied, {} row(s) deleted, {} copied; verified again: {}",
                r.lsn,
                match r.consistency {
                    Consistency::Held => "applier held",
                    Consistency::Unheld { .. } => "no sync running",
                },
                r.ranges.len(),
                r.rows_deleted,
                r.rows_copied,
                if r.equal { "EQUAL" } else { "STILL DIFFERENT" }
            );
            for x in r.ranges.iter().filter(|x| !x.equal) {
                let _ = writeln!(
                    o,
                    "  still differs: {}.{} {}",
                    x.schema,
                    x.name,
                    x.range.describe()
                );
            }
        }
        o
    }

    fn table_section(&self, o: &mut String, t: &TableReport) {
        let key = match &t.key {
            Some(k) => format!("key ({})", k.join(", ")),
            None => "no primary key: compared as a multiset of rows".into(),
        };
        let _ = writeln!(
            o,
            "\n{}  [{key}; {} of {} chunk(s) differ; {} rows on the source, {} on the target]",
            t.display(),
            t.mismatched_chunks.len(),
            t.chunks,
            t.source_rows,
            t.target_rows
        );
        for d in &t.differences {
            match d {
                RowDiff::Changed { key, columns } => {
                    let _ = writeln!(o, "  changed         {}", show_named(key));
                    for c in columns {
                        let _ = writeln!(
                            o,
                            "      {}: source {}  target {}",
                            c.column,
                            show(&c.source),
                            show(&c.target)
                        );
                    }
                }
                RowDiff::OnlySource { key, row } => {
                    let _ = writeln!(o, "  only on source  {}", show_named(key));
                    let _ = writeln!(o, "      {}", show_named(row));
                }
                RowDiff::OnlyTarget { key, row } => {
                    let _ = writeln!(o, "  only on target  {}", show_named(key));
                    let _ = writeln!(o, "      {}", show_named(row));
                }
            }
        }
        for u in &t.unlocated {
            let _ = writeln!(
                o,
                "  range {} differs ({} vs {} rows), not listed row by row: {}",
                u.range.describe(),
                u.source.rows,
                u.target.rows,
                u.reason
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_around_the_difference() {
        let a = "x".repeat(1000) + "A" + &"y".repeat(1000);
        let b = "x".repeat(1000) + "B" + &"y".repeat(1000);
        let (sa, sb) = shorten_pair(&a, &b);
        assert!(sa.contains('A') && sb.contains('B'), "{sa}");
        assert!(sa.contains("first difference at character 1000"), "{sa}");
        assert!(sa.contains("2001 characters"));
        assert!(sa.len() < 300);
        assert_eq!(shorten_pair("a", "b"), ("a".into(), "b".into()));
        assert_eq!(shorten("short"), "short");
        assert!(shorten(&"z".repeat(500)).ends_with("(500 characters)"));
    }
}
