//! The production window, predicted from a rehearsal's measured rates and production's
//! sizes. Pure arithmetic: the caller measures, this scales and says what it assumed.

use crate::model::{CatchUp, CopySteps, Estimate, Rates, Report, StageName, TableCopy};
use crate::text::{duration, rate, size};

/// A table on production: what plan says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSize {
    pub schema: String,
    pub name: String,
    pub bytes: i64,
    /// None: never analyzed.
    pub rows: Option<i64>,
}

/// The production source the window is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Production {
    /// The connection, redacted.
    pub description: String,
    pub tables: Vec<TableSize>,
    /// How fast production writes WAL (bytes/s), measured over an interval on it.
    pub wal_bytes_per_second: Option<f64>,
}

impl Production {
    /// The sizes of a plan of the production source (`--estimate-for CONN`). Partitioned
    /// parents hold no rows of their own (their partitions are listed and copied).
    pub fn from_plan(
        plan: &catalog::Plan,
        description: impl Into<String>,
        wal_bytes_per_second: Option<f64>,
    ) -> Production {
        Production {
            description: description.into(),
            tables: plan
                .tables
                .iter()
                .filter(|t| t.kind != "partitioned")
                .map(|t| TableSize {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                    bytes: t.bytes.max(0),
                    rows: t.estimated_rows,
                })
                .collect(),
            wal_bytes_per_second,
        }
    }
}

/// What the rehearsal measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    pub tables: Vec<TableCopy>,
    /// The copy stage from start to end (schema, data, indexes).
    pub copy_wall_seconds: Option<f64>,
    /// How that time split (a fresh copy only).
    pub copy_steps: Option<CopySteps>,
    /// The rehearsal's catch-up stage: sync's start and the rehearsal's own backlog.
    pub catch_up_seconds: Option<f64>,
    /// Source WAL the applier got through per second.
    pub apply_bytes_per_second: Option<f64>,
    pub apply_rows_per_second: Option<f64>,
    /// The apply rate was measured while sync had a backlog (its capacity); false: only
    /// while caught up, so it is what the source wrote, a lower bound of the capacity.
    pub apply_saturated: bool,
    /// Bytes verify compared and the seconds it took.
    pub verify_bytes: Option<i64>,
    pub verify_seconds: Option<f64>,
    pub pause_seconds: Option<f64>,
    /// `--max-lag`: catch-up ends when lag is under it, not when the backlog is gone.
    pub max_lag_seconds: Option<f64>,
}

/// Sync counts as behind (working at full speed) while more WAL than this waits.
const BACKLOG_BYTES: i64 = 1 << 20;
/// Sync's own capacity figures are used once they cover this much WAL and time.
const CAPACITY_MIN_BYTES: i64 = 1 << 20;
const CAPACITY_MIN_SECONDS: f64 = 0.1;
/// A table's own copy rate is trusted when it took at least this long and this much;
/// smaller ones are mostly fixed cost and use the rehearsal's overall rate.
const TABLE_MIN_SECONDS: f64 = 0.5;
const TABLE_MIN_BYTES: i64 = 1 << 20;

impl Measured {
    /// Reads the rates off a rehearsal's report.
    pub fn from_report(r: &Report) -> Measured {
        let before = |stage| {
            r.stage(stage)
                .map(|s| s.started_at - r.started_at)
                .unwrap_or(f64::INFINITY)
        };
        let samples = |until: f64| -> Vec<crate::Sample> {
            r.samples.iter().filter(|s| s.t < until).cloned().collect()
        };
        // Forward sync only: after cutover samples follow reverse sync, another server's
        // LSNs. Sync's own capacity figures are immune to the cutover's hold and drain, so
        // they count until reverse sync starts.
        let (mut apply_bytes, apply_rows, mut saturated) =
            apply_rate(&samples(before(StageName::Cutover)));
        if let Some(c) = capacity(&samples(before(StageName::ReverseSync))) {
            (apply_bytes, saturated) = (Some(c), true);
        }
        let verify_seconds = r
            .verify
            .as_ref()
            .map(|v| v.seconds)
            .or_else(|| r.stage(StageName::Verify).and_then(|s| s.seconds));
        Measured {
            tables: r.tables.clone(),
            copy_wall_seconds: r.stage(StageName::Copy).and_then(|s| s.seconds),
            copy_steps: r.copy_steps,
            catch_up_seconds: r.stage(StageName::CatchUp).and_then(|s| s.seconds),
            apply_bytes_per_second: apply_bytes,
            apply_rows_per_second: apply_rows,
            apply_saturated: saturated,
            verify_bytes: verify_seconds.map(|_| r.tables.iter().map(|t| t.scale_bytes()).sum()),
            verify_seconds,
            pause_seconds: r.cutover.as_ref().and_then(|c| c.pause_seconds),
            max_lag_seconds: None,
        }
    }
}

/// Sync's own capacity figures (groups that started behind, see `sync::progress::Capacity`)
/// over the samples, when they cover enough WAL and time to go by.
fn capacity(samples: &[crate::Sample]) -> Option<f64> {
    let (mut bytes, mut seconds) = (0i64, 0f64);
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (Some(ab), Some(asec), Some(bb), Some(bsec)) = (
            a.behind_bytes,
            a.behind_seconds,
            b.behind_bytes,
            b.behind_seconds,
        ) else {
            continue;
        };
        // Counters of one process; lower than before: a new process started at zero.
        let (db, ds) = if bb >= ab && bsec >= asec {
            (bb - ab, bsec - asec)
        } else {
            (bb, bsec)
        };
        bytes += db;
        seconds += ds;
    }
    (bytes >= CAPACITY_MIN_BYTES && seconds >= CAPACITY_MIN_SECONDS).then(|| bytes as f64 / seconds)
}

/// Apply rate from samples: the applied position's advance over time while sync had a
/// backlog (capacity), else over all samples (a lower bound). Intervals where sync was held
/// or the LSN goes back are skipped.
fn apply_rate(samples: &[crate::Sample]) -> (Option<f64>, Option<f64>, bool) {
    let mut backlog = (0.0, 0.0, 0.0, 0usize);
    let mut all = (0.0, 0.0, 0.0, 0usize);
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = b.t - a.t;
        let Some((la, lb)) = a.applied_lsn.map(|l| l.0).zip(b.applied_lsn.map(|l| l.0)) else {
            continue;
        };
        if dt <= 0.0 || lb < la || a.held || b.held {
            continue;
        }
        let rows = b.rows_per_second.unwrap_or(0.0);
        let add = |acc: &mut (f64, f64, f64, usize)| {
            acc.0 += (lb - la) as f64;
            acc.1 += dt;
            acc.2 += rows;
            acc.3 += 1;
        };
        add(&mut all);
        if a.lag_bytes.unwrap_or(0) > BACKLOG_BYTES {
            add(&mut backlog);
        }
    }
    let (acc, saturated) = if backlog.3 > 0 {
        (backlog, true)
    } else {
        (all, false)
    };
    if acc.3 == 0 {
        return (None, None, false);
    }
    (Some(acc.0 / acc.1), Some(acc.2 / acc.3 as f64), saturated)
}

/// Predicts production's window: copy, catch-up, verify and client pause.
pub fn estimate(m: &Measured, p: &Production) -> Estimate {
    let mut assumptions = Vec::new();
    let production_bytes: i64 = p.tables.iter().map(|t| t.bytes).sum();
    let production_rows: i64 = p.tables.iter().filter_map(|t| t.rows).sum();

    // Copy: worker seconds per production table at the rate the same table copied at in
    // the rehearsal (the rehearsal's overall worker rate for tables too small or not
    // there), divided by the parallelism the rehearsal reached.
    let measured: Vec<&TableCopy> = m.tables.iter().filter(|t| t.seconds > 0.0).collect();
    let worker_seconds: f64 = measured.iter().map(|t| t.seconds).sum();
    let worker_bytes: i64 = measured.iter().map(|t| t.scale_bytes()).sum();
    let overall =
        (worker_seconds > 0.0 && worker_bytes > 0).then(|| worker_bytes as f64 / worker_seconds);
    let mut slowest = Vec::new();
    let copy_seconds = overall.map(|overall| {
        let mut own = 0;
        let mut total = 0.0;
        for t in &p.tables {
            let same = measured.iter().find(|c| c.schema == t.schema && c.name == t.name);
            let rate = match same {
                Some(c) if c.seconds >= TABLE_MIN_SECONDS && c.scale_bytes() >= TABLE_MIN_BYTES => {
                    own += 1;
                    c.scale_bytes() as f64 / c.seconds
                }
                _ => overall,
            };
            let s = t.bytes as f64 / rate;
            total += s;
            slowest.push((crate::text::qualified(&t.schema, &t.name), s));
        }
        let growth = production_bytes as f64 / worker_bytes as f64;
        // With the steps known, only data and index builds scale; the rest is fixed cost.
        let (parallelism, fixed, post_data, steps_note) = match (m.copy_wall_seconds, m.copy_steps) {
            (Some(wall), Some(st)) if st.data_seconds > 0.0 => {
                let fixed = (wall - st.data_seconds - st.post_data_seconds).max(0.0);
                (
                    (worker_seconds / st.data_seconds).max(f64::MIN_POSITIVE),
                    fixed,
                    st.post_data_seconds * growth,
                    format!(
                        "the data phase's parallelism in the rehearsal; the index builds after the data ({}) grow with the data ({growth:.1}×); the rest of the rehearsal's copy ({}: slot, schema dump and restore) is taken as fixed",
                        duration(st.post_data_seconds),
                        duration(fixed)
                    ),
                )
            }
            (Some(wall), _) if wall > 0.0 => (
                (worker_seconds / wall).max(f64::MIN_POSITIVE),
                0.0,
                0.0,
                "the parallelism the rehearsal's whole copy reached (its steps were not recorded: a resumed copy); schema and index builds scale with the data".to_string(),
            ),
            _ => {
                assumptions.push(
                    "The rehearsal's copy duration is unknown: copy time is the sum of worker time, as if one worker copied everything (an upper bound)."
                        .to_string(),
                );
                (1.0, 0.0, 0.0, "one worker".to_string())
            }
        };
        assumptions.push(format!(
            "Copy: {} of production tables ({}) at the rates the same tables copied at in the rehearsal ({} of {} tables measured long enough to have a rate of their own; the others at the rehearsal's overall {} per worker), {parallelism:.1} workers busy on average ({steps_note}).",
            size(production_bytes as f64),
            p.tables.len(),
            own,
            p.tables.len(),
            rate(overall),
        ));
        fixed + total / parallelism + post_data
    });
    if copy_seconds.is_none() {
        assumptions.push(
            "Copy: the rehearsal measured no table copy, so no copy time is predicted.".to_string(),
        );
    }
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(5);

    let catch_up = catch_up(m, p, copy_seconds, &mut assumptions);

    let verify_rate = match (m.verify_bytes, m.verify_seconds) {
        (Some(b), Some(s)) if b > 0 && s > 0.0 => Some(b as f64 / s),
        _ => None,
    };
    let verify_seconds = verify_rate.map(|r| production_bytes as f64 / r);
    match verify_rate {
        Some(r) => assumptions.push(format!(
            "Verify: production's {} compared at the rehearsal's {} (both sides read at once, at the rehearsal's --jobs).",
            size(production_bytes as f64),
            rate(r)
        )),
        None => assumptions.push("Verify: not measured in the rehearsal; counted as zero in the window.".to_string()),
    }
    match m.pause_seconds {
        Some(s) => assumptions.push(format!(
            "Cutover pause: the rehearsal's {} (it depends on lag at the flip and the number of poolers, not on data size).",
            duration(s)
        )),
        None => assumptions.push("Cutover pause: no pooler was paused in the rehearsal; counted as zero in the window.".to_string()),
    }
    let window_seconds = match (copy_seconds, &catch_up) {
        (Some(c), CatchUp::Seconds { seconds, .. }) => {
            Some(c + seconds + verify_seconds.unwrap_or(0.0) + m.pause_seconds.unwrap_or(0.0))
        }
        _ => None,
    };
    assumptions.push(
        "Production's hardware, network and load are taken to match the rehearsal's: the figures scale the rehearsal's rates by production's sizes and nothing else."
            .to_string(),
    );
    Estimate {
        production: p.description.clone(),
        production_bytes,
        production_rows,
        production_tables: p.tables.len(),
        wal_bytes_per_second: p.wal_bytes_per_second,
        copy_seconds,
        catch_up,
        verify_seconds,
        pause_seconds: m.pause_seconds,
        window_seconds,
        rates: Rates {
            copy_bytes_per_second: match m.copy_wall_seconds {
                Some(w) if w > 0.0 && worker_bytes > 0 => Some(worker_bytes as f64 / w),
                _ => None,
            },
            apply_bytes_per_second: m.apply_bytes_per_second,
            apply_rows_per_second: m.apply_rows_per_second,
            verify_bytes_per_second: verify_rate,
        },
        assumptions,
        slowest_tables: slowest,
    }
}

/// Production keeps writing WAL while copy runs; the slot keeps it and sync applies it
/// afterwards, gaining only what apply outpaces new WAL by.
fn catch_up(
    m: &Measured,
    p: &Production,
    copy_seconds: Option<f64>,
    assumptions: &mut Vec<String>,
) -> CatchUp {
    if let (None, Some(t), Some(copy)) =
        (m.apply_bytes_per_second, m.catch_up_seconds, copy_seconds)
    {
        // Caught up before a second's sample: no rate, but a duration to go by.
        let backlog = p.wal_bytes_per_second.unwrap_or(0.0) * copy;
        assumptions.push(format!(
            "Catch-up: the rehearsal's {} (sync caught up before its apply rate could be sampled), taken to be production's too ({} of WAL behind after the copy).",
            duration(t),
            size(backlog)
        ));
        return CatchUp::Seconds {
            seconds: t,
            backlog_bytes: backlog,
        };
    }
    let (Some(apply), Some(wal)) = (m.apply_bytes_per_second, p.wal_bytes_per_second) else {
        let reason = match m.apply_bytes_per_second {
            None => "the rehearsal measured no apply rate (no sync samples)",
            Some(_) => "production's WAL rate is not known",
        };
        assumptions.push(format!("Catch-up: not predicted: {reason}."));
        return CatchUp::Unknown {
            reason: reason.into(),
        };
    };
    let Some(copy) = copy_seconds else {
        let reason = "the copy time is not known, so neither is the WAL it leaves behind";
        assumptions.push(format!("Catch-up: not predicted: {reason}."));
        return CatchUp::Unknown {
            reason: reason.into(),
        };
    };
    if apply <= wal {
        if !m.apply_saturated {
            let reason = format!(
                "sync never had a backlog in the rehearsal, so its apply capacity is unknown (it kept up with {}); production writes {}",
                rate(apply),
                rate(wal)
            );
            assumptions.push(format!("Catch-up: not predicted: {reason}."));
            return CatchUp::Unknown { reason };
        }
        assumptions.push(format!(
            "Catch-up: never catches up: sync applied {} with a backlog in the rehearsal, production writes {} of WAL, so lag only grows.",
            rate(apply),
            rate(wal)
        ));
        return CatchUp::Never {
            apply_bytes_per_second: apply,
            wal_bytes_per_second: wal,
        };
    }
    let backlog = wal * copy;
    // The stage ends once lag is under --max-lag: sync at position p lags by the age of the
    // WAL at p, so what may still wait then is --max-lag's worth of production's WAL.
    let allowed = wal * m.max_lag_seconds.unwrap_or(0.0);
    // Never shorter than the rehearsal's catch-up: sync's start is a fixed cost.
    let start = m.catch_up_seconds.unwrap_or(0.0);
    let seconds = ((backlog - allowed).max(0.0) / (apply - wal)).max(start);
    let measured = if m.apply_saturated {
        "with a backlog (its capacity)"
    } else {
        "while caught up only (a lower bound of its capacity, so this time is an upper bound)"
    };
    assumptions.push(format!(
        "Catch-up: production writes {} of WAL during the copy ({} behind at its end), applied at the rehearsal's {} measured {measured} less the {} production keeps writing, until no more than --max-lag's worth ({}) waits; never less than the rehearsal's catch-up ({}: sync's start).",
        rate(wal),
        size(backlog),
        rate(apply),
        rate(wal),
        size(allowed),
        duration(start)
    ));
    CatchUp::Seconds {
        seconds,
        backlog_bytes: backlog,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    const MB: i64 = 1 << 20;

    fn table(name: &str, bytes: i64, seconds: f64) -> TableCopy {
        TableCopy::new("public", name, bytes / 100, bytes, Some(bytes), seconds)
    }

    fn prod(tables: &[(&str, i64)], wal: Option<f64>) -> Production {
        Production {
            description: "host=prod".into(),
            tables: tables
                .iter()
                .map(|(n, b)| TableSize {
                    schema: "public".into(),
                    name: n.to_string(),
                    bytes: *b,
                    rows: Some(b / 100),
                })
                .collect(),
            wal_bytes_per_second: wal,
        }
    }

    fn rehearsal() -> Measured {
        // Two tables, 20 worker seconds in 10 s of copy: two workers busy.
        Measured {
            tables: vec![table("a", 100 * MB, 10.0), table("b", 50 * MB, 10.0)],
            copy_wall_seconds: Some(10.0),
            copy_steps: None,
            catch_up_seconds: None,
            apply_bytes_per_second: Some(10.0 * MB as f64),
            apply_rows_per_second: Some(5000.0),
            apply_saturated: true,
            verify_bytes: Some(150 * MB),
            verify_seconds: Some(5.0),
            pause_seconds: Some(0.4),
            max_lag_seconds: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn four_times_the_data_takes_four_times_the_copy() {
        let e = estimate(
            &rehearsal(),
            &prod(&[("a", 400 * MB), ("b", 200 * MB)], Some(0.0)),
        );
        assert!(close(e.copy_seconds.unwrap(), 40.0), "{e:?}");
        assert_eq!(e.production_bytes, 600 * MB);
        assert!(close(e.verify_seconds.unwrap(), 20.0));
        assert_eq!(e.pause_seconds, Some(0.4));
        // No WAL written: nothing to catch up.
        assert_eq!(
            e.catch_up,
            CatchUp::Seconds {
                seconds: 0.0,
                backlog_bytes: 0.0
            }
        );
        assert!(close(e.window_seconds.unwrap(), 60.4));
        assert!(close(
            e.rates.copy_bytes_per_second.unwrap(),
            15.0 * MB as f64
        ));
        assert_eq!(e.slowest_tables[0].0, "public.a");
    }

    #[test]
    fn with_the_steps_known_only_data_and_index_builds_grow() {
        // The 10 s copy: 2 s fixed (slot, schema), 7 s of data with 20 worker seconds
        // (2.9 workers), 1 s of index builds after it.
        let mut m = rehearsal();
        m.copy_steps = Some(CopySteps {
            data_seconds: 7.0,
            post_data_seconds: 1.0,
        });
        let e = estimate(&m, &prod(&[("a", 400 * MB), ("b", 200 * MB)], Some(0.0)));
        // 80 worker seconds / (20 / 7) + 2 s fixed + 4 × 1 s of index builds.
        assert!(close(e.copy_seconds.unwrap(), 28.0 + 2.0 + 4.0), "{e:?}");
        assert!(
            e.assumptions[0].contains("taken as fixed"),
            "{:?}",
            e.assumptions
        );
    }

    #[test]
    fn catch_up_is_never_shorter_than_the_rehearsals() {
        let mut m = rehearsal();
        m.catch_up_seconds = Some(3.0);
        // 80 MB behind at 8 MB/s gained: 10 s, above the rehearsal's 3 s.
        let p = prod(&[("a", 400 * MB), ("b", 200 * MB)], Some(2.0 * MB as f64));
        assert!(
            matches!(estimate(&m, &p).catch_up, CatchUp::Seconds { seconds, .. } if close(seconds, 10.0))
        );
        // Nothing written: sync's start remains.
        let p = prod(&[("a", 400 * MB)], Some(0.0));
        assert!(
            matches!(estimate(&m, &p).catch_up, CatchUp::Seconds { seconds, .. } if close(seconds, 3.0))
        );
        // Caught up before the first sample: the rehearsal's duration, with a window.
        m.apply_bytes_per_second = None;
        let e = estimate(&m, &p);
        assert!(
            matches!(e.catch_up, CatchUp::Seconds { seconds, .. } if close(seconds, 3.0)),
            "{e:?}"
        );
        assert!(e.window_seconds.is_some());
    }

    #[test]
    fn each_table_copies_at_its_own_rate() {
        // b copied at half a's rate per byte: production heavy in b takes longer.
        let e = estimate(&rehearsal(), &prod(&[("b", 500 * MB)], Some(0.0)));
        // 500 MB at 5 MB/s = 100 worker s, two workers: 50 s.
        assert!(close(e.copy_seconds.unwrap(), 50.0), "{e:?}");
        let e = estimate(&rehearsal(), &prod(&[("a", 500 * MB)], Some(0.0)));
        assert!(close(e.copy_seconds.unwrap(), 25.0), "{e:?}");
    }

    #[test]
    fn unmeasured_and_tiny_tables_use_the_overall_rate() {
        let mut m = rehearsal();
        // A tiny table copied very fast: its rate is not trusted.
        m.tables.push(table("tiny", 1000, 0.001));
        m.copy_wall_seconds = Some(10.0005);
        let overall = (150 * MB + 1000) as f64 / 20.001;
        let e = estimate(
            &m,
            &prod(&[("tiny", 100 * MB), ("new", 100 * MB)], Some(0.0)),
        );
        let parallelism = 20.001 / 10.0005;
        let want = 200.0 * MB as f64 / overall / parallelism;
        assert!(
            close(e.copy_seconds.unwrap(), want),
            "{} vs {want}",
            e.copy_seconds.unwrap()
        );
    }

    #[test]
    fn catch_up_is_the_backlog_over_what_apply_gains() {
        // Copy 40 s while production writes 2 MB/s: 80 MB behind; apply gains 8 MB/s.
        let e = estimate(
            &rehearsal(),
            &prod(&[("a", 400 * MB), ("b", 200 * MB)], Some(2.0 * MB as f64)),
        );
        match e.catch_up {
            CatchUp::Seconds {
                seconds,
                backlog_bytes,
            } => {
                assert!(close(backlog_bytes, 80.0 * MB as f64));
                assert!(close(seconds, 10.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(close(e.window_seconds.unwrap(), 40.0 + 10.0 + 20.0 + 0.4));
    }

    #[test]
    fn catch_up_ends_once_lag_is_under_max_lag() {
        // 80 MB behind, 2 MB/s of WAL: with --max-lag 5 s, 10 MB may still wait when the
        // stage ends, so 70 MB at 8 MB/s gained.
        let mut m = rehearsal();
        m.max_lag_seconds = Some(5.0);
        let e = estimate(
            &m,
            &prod(&[("a", 400 * MB), ("b", 200 * MB)], Some(2.0 * MB as f64)),
        );
        assert!(
            matches!(e.catch_up, CatchUp::Seconds { seconds, .. } if close(seconds, 70.0 / 8.0)),
            "{:?}",
            e.catch_up
        );
        // A backlog under --max-lag's worth: nothing to wait for.
        m.max_lag_seconds = Some(60.0);
        let e = estimate(&m, &prod(&[("a", 400 * MB)], Some(2.0 * MB as f64)));
        assert!(matches!(e.catch_up, CatchUp::Seconds { seconds, .. } if seconds == 0.0));
    }

    #[test]
    fn apply_no_faster_than_wal_never_catches_up() {
        let p = prod(&[("a", 400 * MB)], Some(10.0 * MB as f64));
        let e = estimate(&rehearsal(), &p);
        assert!(
            matches!(e.catch_up, CatchUp::Never { .. }),
            "{:?}",
            e.catch_up
        );
        assert_eq!(e.window_seconds, None);
        assert!(e.assumptions.iter().any(|a| a.contains("never catches up")));
        // Measured only while caught up: the capacity is unknown, not "never".
        let mut m = rehearsal();
        m.apply_saturated = false;
        let e = estimate(&m, &p);
        assert!(
            matches!(e.catch_up, CatchUp::Unknown { .. }),
            "{:?}",
            e.catch_up
        );
    }

    #[test]
    fn missing_measurements_are_said_not_guessed() {
        let e = estimate(&Measured::default(), &prod(&[("a", MB)], None));
        assert_eq!(e.copy_seconds, None);
        assert_eq!(e.verify_seconds, None);
        assert!(matches!(e.catch_up, CatchUp::Unknown { .. }));
        assert_eq!(e.window_seconds, None);
        assert!(e.assumptions.iter().any(|a| a.contains("no table copy")));
        // No WAL rate: catch-up unknown, copy still predicted.
        let e = estimate(&rehearsal(), &prod(&[("a", MB)], None));
        assert!(e.copy_seconds.is_some());
        assert!(matches!(e.catch_up, CatchUp::Unknown { .. }));
    }

    fn sample(t: f64, lsn: u64, lag: i64, rows: f64) -> Sample {
        Sample {
            t,
            applied_lsn: Some(lsn::Lsn(lsn)),
            lag_seconds: Some(0.0),
            lag_bytes: Some(lag),
            rows_per_second: Some(rows),
            behind_bytes: None,
            behind_seconds: None,
            held: false,
        }
    }

    #[test]
    fn samples_after_cutover_do_not_count() {
        let mut r = Report::new("r", crate::RunKind::Run, "a", "b", 100.0);
        r.samples = vec![
            sample(0.0, 0, 100 * MB, 9000.0),
            sample(1.0, 10 * MB as u64, 90 * MB, 9000.0),
            // Reverse sync after the cutover: green's far higher LSNs.
            sample(3.0, 1 << 40, 10 * MB, 100.0),
            sample(4.0, (1 << 40) + 1, 10 * MB, 100.0),
        ];
        let mut c = crate::Stage::start(StageName::Cutover, 102.0);
        c.end(103.0, crate::StageOutcome::Done, None);
        r.stages.push(c);
        let m = Measured::from_report(&r);
        assert!(close(m.apply_bytes_per_second.unwrap(), 10.0 * MB as f64));
    }

    #[test]
    fn apply_rate_counts_backlog_seconds_only() {
        let samples = vec![
            sample(0.0, 0, 100 * MB, 9000.0),
            sample(1.0, 20 * MB as u64, 80 * MB, 9000.0),
            sample(2.0, 40 * MB as u64, 60 * MB, 11000.0),
            // Caught up: slower, and not counted.
            sample(3.0, 41 * MB as u64, 0, 100.0),
            sample(4.0, 42 * MB as u64, 0, 100.0),
        ];
        let (bytes, rows, saturated) = apply_rate(&samples);
        assert!(saturated);
        // Intervals from samples 0→1, 1→2 and 2→3 start with a backlog.
        assert!(close(bytes.unwrap(), 41.0 * MB as f64 / 3.0));
        assert!(close(rows.unwrap(), (9000.0 + 11000.0 + 100.0) / 3.0));
        let idle: Vec<Sample> = samples[3..].to_vec();
        let (bytes, _, saturated) = apply_rate(&idle);
        assert!(!saturated);
        assert!(close(bytes.unwrap(), MB as f64));
    }

    #[test]
    fn held_seconds_do_not_count() {
        // Held for 2 s in the middle: the applied position stands still, the WAL waits.
        let mut samples = vec![
            sample(0.0, 0, 0, 100.0),
            sample(1.0, MB as u64, 0, 100.0),
            sample(2.0, MB as u64, 3 * MB, 0.0),
            sample(3.0, MB as u64, 5 * MB, 0.0),
            sample(4.0, 2 * MB as u64, 0, 100.0),
        ];
        samples[2].held = true;
        samples[3].held = true;
        let (bytes, _, saturated) = apply_rate(&samples);
        assert!(!saturated);
        assert!(close(bytes.unwrap(), MB as f64), "{bytes:?}");
    }

    #[test]
    fn syncs_own_capacity_wins_and_survives_a_restart() {
        // Caught up the whole time by the samples' 1 s view, but sync applied 6 MB in
        // 0.4 s of groups that started behind (4 MB in 0.25 s, then a new process 2 MB in
        // 0.15 s): 15 MB/s.
        let mut samples = vec![
            sample(0.0, 0, 0, 100.0),
            sample(1.0, MB as u64, 0, 100.0),
            sample(2.0, 2 * MB as u64, 0, 100.0),
            sample(3.0, 3 * MB as u64, 0, 100.0),
        ];
        let behind = [(0, 0.0), (4 * MB, 0.25), (4 * MB, 0.25), (2 * MB, 0.15)];
        for (s, (b, sec)) in samples.iter_mut().zip(behind) {
            s.behind_bytes = Some(b);
            s.behind_seconds = Some(sec);
        }
        let c = capacity(&samples);
        assert!(close(c.unwrap(), 15.0 * MB as f64), "{c:?}");
        // After a cutover (held, drained) the figures still count; reverse sync's do not.
        let mut r = Report::new("r", crate::RunKind::Run, "a", "b", 100.0);
        r.samples = samples.clone();
        let mut c = crate::Stage::start(StageName::Cutover, 101.5);
        c.end(101.8, crate::StageOutcome::Done, None);
        r.stages.push(c);
        let m = Measured::from_report(&r);
        assert!(m.apply_saturated);
        assert!(close(m.apply_bytes_per_second.unwrap(), 15.0 * MB as f64));
        r.stages
            .push(crate::Stage::start(StageName::ReverseSync, 102.5));
        let m = Measured::from_report(&r);
        assert!(close(m.apply_bytes_per_second.unwrap(), 16.0 * MB as f64));
        // Too little to trust: the samples' view (a lower bound).
        for s in &mut samples {
            s.behind_bytes = Some(1000);
            s.behind_seconds = Some(0.001);
        }
        assert_eq!(capacity(&samples), None);
    }
}
