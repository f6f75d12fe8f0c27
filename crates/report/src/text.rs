//! Figures as a person reads them, and the short text summary `bluegreen report` prints.

use crate::model::{CatchUp, Report, Verdict};

/// `1 h 02 min`, `3 min 05 s`, `12.3 s`, `250 ms`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "—".into();
    }
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    if s < 3600 {
        return format!("{} min {:02} s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{} h {:02} min", s / 3600, (s % 3600) / 60);
    }
    format!("{} d {:02} h", s / 86_400, (s % 86_400) / 3600)
}

/// `1.2 GB` (powers of 1024, as PostgreSQL's pg_size_pretty).
pub fn size(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `12.5 MB/s`.
pub fn rate(bytes_per_second: f64) -> String {
    format!("{}/s", size(bytes_per_second))
}

/// `1,234,567`.
pub(crate) fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// `schema.name` for reading (not SQL: names are shown as they are).
pub fn qualified(schema: &str, name: &str) -> String {
    conn::display_qualified(schema, name)
}

/// Seconds since the epoch as `2026-12-04 20:53:47 UTC`.
pub fn utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A few lines on the report for the terminal.
pub fn summary(r: &Report) -> String {
    let mut out = format!(
        "Report of {} {} ({} → {})\n",
        r.kind.title(),
        r.run,
        r.source,
        r.target
    );
    out.push_str(&format!("  started {}", utc(r.started_at)));
    if let Some(end) = r.ended_at {
        out.push_str(&format!(", took {}", duration(end - r.started_at)));
    }
    out.push('\n');
    for s in &r.stages {
        let took = s.seconds.map(duration).unwrap_or_else(|| "—".into());
        out.push_str(&format!(
            "  {:<13} {:<9} {took}\n",
            s.name.as_str(),
            s.outcome.as_str()
        ));
    }
    if !r.tables.is_empty() {
        let bytes: i64 = r.tables.iter().map(|t| t.bytes).sum();
        let rows: i64 = r.tables.iter().map(|t| t.rows).sum();
        out.push_str(&format!(
            "  copied {} tables, {} rows, {}\n",
            r.tables.len(),
            count(rows),
            size(bytes as f64)
        ));
    }
    if let Some(v) = &r.verify {
        let differ = v
            .tables
            .iter()
            .filter(|t| t.verdict == Verdict::Differ)
            .count();
        out.push_str(&if v.equal {
            format!("  verify at {}: equal ({} tables)\n", v.lsn, v.tables.len())
        } else {
            format!(
                "  verify at {}: {differ} of {} tables differ\n",
                v.lsn,
                v.tables.len()
            )
        });
    }
    if let Some(p) = r.cutover.as_ref().and_then(|c| c.pause_seconds) {
        out.push_str(&format!("  client pause {}\n", duration(p)));
    }
    let blockers = r
        .findings
        .iter()
        .filter(|f| f.severity == crate::Severity::Blocker)
        .count();
    let warnings = r
        .findings
        .iter()
        .filter(|f| f.severity == crate::Severity::Warning)
        .count();
    if blockers + warnings > 0 {
        out.push_str(&format!("  {blockers} blockers, {warnings} warnings\n"));
    }
    if let Some(e) = &r.estimate {
        out.push_str(&format!(
            "  estimate for {} ({}):\n",
            e.production,
            size(e.production_bytes as f64)
        ));
        let or_dash = |v: Option<f64>| v.map(duration).unwrap_or_else(|| "not known".into());
        out.push_str(&format!("    copy      {}\n", or_dash(e.copy_seconds)));
        out.push_str(&format!("    catch-up  {}\n", catch_up(&e.catch_up)));
        out.push_str(&format!("    verify    {}\n", or_dash(e.verify_seconds)));
        out.push_str(&format!("    pause     {}\n", or_dash(e.pause_seconds)));
        let window = match (&e.catch_up, e.window_seconds) {
            (CatchUp::Never { .. }, _) => "no end: sync never catches up".into(),
            (_, w) => or_dash(w),
        };
        out.push_str(&format!("    window    {window}\n"));
    }
    out
}

/// The catch-up prediction in words.
pub fn catch_up(c: &CatchUp) -> String {
    match c {
        CatchUp::Seconds { seconds, .. } => duration(*seconds),
        CatchUp::Never { .. } => "never catches up".into(),
        CatchUp::Unknown { .. } => "not known".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(1536.0 * 1024.0), "1.5 MB");
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_417_627.9), "2026-12-04 20:53:47 UTC");
    }

    #[test]
    fn the_summary_says_when_there_is_no_window() {
        let mut r = Report::new("main", crate::RunKind::DryRun, "a", "b", 0.0);
        let m = crate::Measured {
            tables: vec![crate::TableCopy::new("s", "t", 1, 1 << 30, None, 10.0)],
            copy_wall_seconds: Some(10.0),
            apply_bytes_per_second: Some(1e6),
            apply_saturated: true,
            ..Default::default()
        };
        let p = crate::Production {
            description: "prod".into(),
            tables: vec![crate::TableSize {
                schema: "s".into(),
                name: "t".into(),
                bytes: 1 << 30,
                rows: None,
            }],
            wal_bytes_per_second: Some(2e6),
        };
        r.estimate = Some(crate::estimate(&m, &p));
        let text = summary(&r);
        assert!(text.contains("catch-up  never catches up"), "{text}");
        assert!(
            text.contains("window    no end: sync never catches up"),
            "{text}"
        );
    }
}
