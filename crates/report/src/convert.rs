//! The report's pieces from what the stages already produce, so `run` only collects.

use crate::model::{Note, Sample, Severity, TableCopy, TableVerdict, Verdict, Verify};

impl TableCopy {
    /// A table's copy figures from the state schema's chunk summary, with its size as
    /// plan reported it (what the estimate scales from).
    pub fn from_summary(s: &state::TableSummary, size_bytes: Option<i64>) -> TableCopy {
        TableCopy::new(
            &s.table_schema,
            &s.table_name,
            s.rows,
            s.bytes,
            size_bytes,
            s.seconds,
        )
    }
}

impl Sample {
    /// Sync's row in the state schema at `t` seconds since the run started.
    pub fn from_apply(a: &state::ApplyStatus, t: f64) -> Sample {
        Sample {
            t,
            applied_lsn: a.applied_lsn,
            lag_seconds: a.lag_seconds,
            lag_bytes: a.lag_bytes,
            rows_per_second: a.rows_per_second,
            behind_bytes: Some(a.behind_bytes),
            behind_seconds: Some(a.behind_seconds),
            // Asked to hold counts too: sync stops on the way to it.
            held: a.hold_lsn.is_some() || a.held_lsn.is_some(),
        }
    }
}

impl Verify {
    /// Verify's verdict per table.
    pub fn from_verify(r: &verify::report::Report) -> Verify {
        Verify {
            lsn: r.lsn,
            equal: r.equal,
            seconds: r.seconds,
            tables: r
                .tables
                .iter()
                .map(|t| TableVerdict {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                    verdict: if t.equal() {
                        Verdict::Equal
                    } else {
                        Verdict::Differ
                    },
                    chunks: t.chunks as u64,
                    source_rows: t.source_rows,
                    target_rows: t.target_rows,
                    mismatched_chunks: t.mismatched_chunks.len() as u64,
                    differences: t.differences.len() as u64,
                })
                .collect(),
        }
    }
}

impl Note {
    /// A plan finding, with its fix.
    pub fn from_finding(f: &catalog::Finding) -> Note {
        Note {
            severity: match f.severity {
                catalog::Severity::Blocker => Severity::Blocker,
                catalog::Severity::Warning => Severity::Warning,
            },
            code: Some(f.code.clone()),
            message: format!("{}: {} (fix: {})", f.subject, f.message, f.fix),
        }
    }

    pub fn warning(message: impl Into<String>) -> Note {
        Note {
            severity: Severity::Warning,
            code: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_outputs_map_onto_the_report() {
        let s = state::TableSummary {
            table_schema: "app".into(),
            table_name: "t".into(),
            chunks: 2,
            done: 2,
            rows: 100,
            bytes: 4000,
            seconds: 2.0,
            est_bytes: 8192,
        };
        let t = TableCopy::from_summary(&s, Some(8192));
        assert_eq!((t.rows, t.bytes, t.scale_bytes()), (100, 4000, 8192));
        assert_eq!(t.bytes_per_second, Some(2000.0));
        let f = catalog::Finding {
            severity: catalog::Severity::Blocker,
            code: "no-replica-identity".into(),
            subject: "app.t".into(),
            message: "has no key".into(),
            fix: "ALTER TABLE …".into(),
        };
        let n = Note::from_finding(&f);
        assert_eq!(n.severity, Severity::Blocker);
        assert_eq!(n.code.as_deref(), Some("no-replica-identity"));
        assert_eq!(n.message, "app.t: has no key (fix: ALTER TABLE …)");
    }
}
