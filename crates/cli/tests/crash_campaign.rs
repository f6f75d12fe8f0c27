//! Crash campaign: `bluegreen run` SIGKILLed at points drawn at random (seeded, printed)
//! from copy's data phase, its index builds, sync's catch-up, sync between a group's main
//! commit and the COMMIT PREPARED of its further sessions' parts, verify while it holds the
//! applier, every step of the cutover, and every step of a rollback after it (`bluegreen
//! rollback` killed, with reverse sync running), with writes between the kill and the
//! restart; then the same command again. Each point must end with the migration done and
//! checked independently of bluegreen: ordered per-table digests through psql equal on both
//! sides (row counts included, so nothing is doubled), no prepared transaction left on either
//! server, no replication slot or origin but the run's own, and traffic on green only.
//!
//! A rollback point ends with traffic on blue instead, blue open to everyone, the run back in
//! phase `copied` and no reverse slot left.
//!
//! `CRASH_POINTS` (default 5) points from `CRASH_SEED` (without it CI's fixed five: three drawn
//! from a fixed seed, one between the main commit and the prepared parts, one in rollback); the seed and every point's outcome are printed (`scripts/crash-campaign.sh` runs a
//! longer campaign from a new seed each time).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bluegreen, code, publishable_pair_at, stderr, stdout};
use testkit::{Cluster, Pgbouncer};

const DB: &str = "factory_telemetry";

/// Where a point kills `run`.
#[derive(Debug, Clone)]
enum Point {
    /// After this many chunks committed (1 MB chunks, one job).
    CopyData(u32),
    /// While the run is in copy's post-data phase (index builds).
    CopyPostData,
    /// This long after `run` restarted from `copied` with a backlog on blue.
    CatchUp(Duration),
    /// Restarted from `copied` with a backlog of updates (net changes over two sessions):
    /// stalled after a group's main commit, its further sessions' parts prepared.
    MainCommit,
    /// While verify holds the applier.
    Verify,
    /// Stalled right after this cutover step.
    Cutover(&'static str),
    /// After a completed run, `bluegreen rollback` stalled right after this step.
    Rollback(&'static str),
}

/// A small seeded generator (xorshift): the campaign replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn draw(rng: &mut Rng) -> Point {
    let steps: Vec<&'static str> = cutover::Step::ALL
        .iter()
        .map(|s| s.name())
        // Rollback's and the rehearsal's own steps do not run in a cutover.
        .filter(|s| !matches!(*s, "unfence" | "flip back" | "disarm rollback"))
        .collect();
    // Half the points in the flips, whose steps are many.
    match rng.below(10) {
        0 => Point::CopyData(1 + rng.below(8) as u32),
        1 => Point::CopyPostData,
        2 => Point::CatchUp(Duration::from_millis(100 + rng.below(1500))),
        3 => Point::Verify,
        4 => Point::MainCommit,
        5 | 6 => draw_rollback(rng),
        _ => Point::Cutover(steps[rng.below(steps.len() as u64) as usize]),
    }
}

/// A step of rollback: the cutover's but those only a cutover or a rehearsal runs.
fn draw_rollback(rng: &mut Rng) -> Point {
    let steps: Vec<&'static str> = cutover::Step::ALL
        .iter()
        .map(|s| s.name())
        .filter(|s| {
            !matches!(
                *s,
                "unfence green" | "arm rollback" | "flip back" | "disarm rollback"
            )
        })
        .collect();
    Point::Rollback(steps[rng.below(steps.len() as u64) as usize])
}

struct Rig {
    blue: Cluster,
    green: Cluster,
    pooler: Pgbouncer,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let (blue, green) = publishable_pair_at(0.02);
        let pooler = Pgbouncer::builder()
            .database(DB, "127.0.0.1", blue.port(), DB)
            .user("postgres", blue.password())
            .start()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "run".into(),
            "--source".into(),
            blue.url(DB),
            "--target".into(),
            green.url(DB),
            "--pooler".into(),
            format!(
                "admin={},db={DB},file={}",
                pooler.admin_url(),
                pooler.databases_file().display()
            ),
            "--report-dir".into(),
            dir.path().join("report").display().to_string(),
            "--max-lag".into(),
            "2".into(),
        ];
        Rig {
            blue,
            green,
            pooler,
            args,
            dir,
        }
    }

    fn run(&self, extra: &[&str], env: &[(&str, String)], log: &str) -> std::process::Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bluegreen"));
        cmd.args(&self.args)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// `query` on green (false while the state schema is not there yet).
    fn green_says(&self, query: &str) -> bool {
        self.green
            .psql(DB, query)
            .map(|s| s.trim() == "t")
            .unwrap_or(false)
    }

    fn write_on_blue(&self, tag: &str) {
        Self::write_on(&self.blue, tag);
    }

    fn write_on(pg: &Cluster, tag: &str) {
        pg.sql(
            DB,
            &format!(
                "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('{tag}', 'crash campaign');
                 UPDATE factory_telemetry.metric_latest SET value_real = value_real + 1
                  WHERE metric_def_id IN (SELECT metric_def_id FROM factory_telemetry.metric_latest LIMIT 50);
                 INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
                   SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
                     FROM generate_series(1, 20000) g"
            ),
        );
    }
}

/// Waits (at most 120 s) until `reached` holds, or the child has ended.
fn until(child: &mut std::process::Child, what: &str, mut reached: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if reached() {
            return true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what} not reached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn contents(pg: &Cluster) -> Vec<String> {
    fixtures::TABLES
        .iter()
        .map(|t| pg.sql(DB, &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")))
        .collect()
}

/// One point: kill there, write on blue, run again to the end, check. The outcome in words.
fn point(p: &Point) -> String {
    let r = Rig::new();
    let mut env = Vec::new();
    let mut extra: Vec<&str> = vec!["--until", "cutover"];
    if let Point::Rollback(step) = p {
        return rollback_point(&r, step);
    }
    if let Point::CatchUp(_) | Point::MainCommit = p {
        // The copy first, then a backlog for the catch-up to apply.
        let o = bluegreen(
            &r.args
                .iter()
                .map(String::as_str)
                .chain(["--until", "copied"])
                .collect::<Vec<_>>(),
        );
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        r.write_on_blue("BACKLOG");
    }
    if let Point::MainCommit = p {
        // Updates by key: net changes, split over the further session by key hash.
        r.blue.sql(
            DB,
            "UPDATE factory_telemetry.metric_hist SET value_int = coalesce(value_int, 0) + 1
              WHERE id % 5 = 0",
        );
        env.push(("BLUEGREEN_TEST_STALL_AFTER", "main commit".to_string()));
        env.push(("BLUEGREEN_TEST_STALL_MS", "60000".to_string()));
    }
    if let Point::CopyData(_) = p {
        extra.extend(["--chunk-mb", "1", "--jobs", "1"]);
    }
    if let Point::Cutover(step) = p {
        env.push(("BLUEGREEN_TEST_STALL_AFTER", step.to_string()));
        env.push(("BLUEGREEN_TEST_STALL_MS", "60000".to_string()));
    }
    let mut child = r.run(&extra, &env, "killed.log");
    let hit = match p {
        Point::CopyData(n) => until(&mut child, "chunks", || {
            r.green_says(&format!(
                "SELECT count(*) FILTER (WHERE state = 'done') >= {n} FROM bluegreen.chunks"
            ))
        }),
        Point::CopyPostData => until(&mut child, "post-data", || {
            r.green_says("SELECT phase = 'post-data' FROM bluegreen.runs WHERE run = 'main'")
        }),
        Point::CatchUp(after) => {
            std::thread::sleep(*after);
            child.try_wait().unwrap().is_none()
        }
        Point::MainCommit => until(&mut child, "main commit", || {
            r.log("killed.log")
                .contains("stalled after a group's main commit")
        }),
        Point::Rollback(_) => unreachable!(),
        Point::Verify => until(&mut child, "verify", || {
            r.green_says("SELECT count(*) > 0 FROM bluegreen.verify_runs WHERE result = 'running'")
        }),
        Point::Cutover(step) => until(&mut child, step, || {
            r.log("killed.log")
                .lines()
                .any(|l| l.contains("cutover step") && l.contains(&format!("\"{step}\"")))
        }),
    };
    let _ = child.kill();
    let _ = child.wait();
    if let Point::MainCommit = p {
        // Killed with the group's main part committed and its other parts prepared.
        assert!(hit, "{p:?}: not reached: {}", r.log("killed.log"));
        let prepared = r.green.sql(DB, "SELECT count(*) FROM pg_prepared_xacts");
        assert_ne!(prepared, "0", "{p:?}: no prepared part left by the kill");
    }
    // A killed flip's watchdog puts traffic back first; the next run refuses while it holds
    // the flip (as documented), so wait for it.
    assert!(
        wait_flip_settled(&r),
        "{p:?}: the killed run's watchdog did not settle its flip within 30 s: {}",
        r.log("killed.log")
    );
    // Writes while nothing runs, on blue while it takes them (a flip killed past its commit
    // point is finished by its watchdog: traffic is on green then, and blue is fenced).
    if r.blue.sql(DB, "SHOW default_transaction_read_only") == "off" {
        r.write_on_blue("BETWEEN");
    }

    let mut again = r.run(&["--until", "cutover"], &[], "again.log");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = again.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{p:?}: run again did not finish: {}",
            r.log("again.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{p:?}: run again failed: {}\nkilled run:\n{}",
        r.log("again.log"),
        r.log("killed.log")
    );

    // Independent checks.
    assert_eq!(
        contents(&r.green),
        contents(&r.blue),
        "{p:?}: contents differ"
    );
    no_leftovers(&r, p);
    let routed = std::fs::read_to_string(r.pooler.databases_file()).unwrap();
    assert!(
        routed.contains(&format!("port={}", r.green.port())),
        "{p:?}: traffic is not on green: {routed}"
    );
    assert_eq!(
        r.blue.sql(
            DB,
            "SELECT datallowconn AND has_database_privilege('public', current_database(), 'CONNECT') FROM pg_database WHERE datname = current_database()"
        ),
        "f",
        "{p:?}: blue still takes new connections from everyone"
    );
    format!(
        "{} then exact",
        if hit {
            "killed there"
        } else {
            "the run ended before the point (not killed)"
        }
    )
}

/// No prepared transaction on either side, no slot or origin but the run's.
fn no_leftovers(r: &Rig, p: &Point) {
    for (side, pg) in [("blue", &r.blue), ("green", &r.green)] {
        assert_eq!(
            pg.sql(DB, "SELECT count(*) FROM pg_prepared_xacts"),
            "0",
            "{p:?}: a prepared transaction is left on {side}"
        );
        let stray = pg.sql(
            DB,
            "SELECT coalesce(string_agg(name, ', '), '') FROM (
               SELECT slot_name::text AS name FROM pg_replication_slots
                WHERE slot_name NOT IN ('bluegreen_main', 'bluegreen_main_reverse') OR temporary
               UNION ALL
               SELECT roname FROM pg_replication_origin
                WHERE roname NOT IN ('bluegreen_main', 'bluegreen_main_reverse')) x",
        );
        assert_eq!(stray, "", "{p:?}: orphan slot or origin on {side}");
    }
}

/// Waits (at most 30 s) for a killed flip's watchdog to have put it right: whether its
/// record is gone.
fn wait_flip_settled(r: &Rig) -> bool {
    let started = Instant::now();
    while r.green_says("SELECT count(*) > 0 FROM bluegreen.flips") {
        if started.elapsed() > Duration::from_secs(30) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Waits for `child` to end (at most 300 s): whether it succeeded.
fn finish(mut child: std::process::Child, what: &str, log: impl Fn() -> String) -> bool {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{what} did not finish: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A rollback point: the run to its end, reverse sync started, writes on green, `bluegreen
/// rollback` killed after `step`; writes on green while the run is still cut over (the
/// watchdog undid the flip) and rollback again, or nothing more when the watchdog finished
/// it (killed past its commit point). Ends with traffic on blue, blue open, green and blue
/// equal, the run `copied`, no reverse slot, no prepared transaction or orphan.
fn rollback_point(r: &Rig, step: &'static str) -> String {
    let p = Point::Rollback(step);
    let o = bluegreen(
        &r.args
            .iter()
            .map(String::as_str)
            .chain(["--until", "cutover"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let (s, t) = (r.blue.url(DB), r.green.url(DB));
    let pooler = r.args[r.args.iter().position(|a| a == "--pooler").unwrap() + 1].clone();
    let reverse = common::spawn_bluegreen(
        &["sync", "--reverse", "--source", &s, "--target", &t],
        &r.dir.path().join("reverse.log"),
    );
    let running = "SELECT coalesce(bool_or(heartbeat > clock_timestamp() - interval '5 s'), false)
                     FROM bluegreen.apply WHERE run = 'main_reverse'";
    let started = Instant::now();
    while !r.green_says(running) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reverse sync did not start: {}",
            r.log("reverse.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Rig::write_on(&r.green, "GREEN1");
    let rollback = |env: &[(&str, &str)], log: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bluegreen"));
        cmd.args([
            "rollback",
            "--source",
            &s,
            "--target",
            &t,
            "--pooler",
            &pooler,
            "--no-verify-check",
            "--max-lag",
            "5",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(r.dir.path().join(log)).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let mut child = rollback(
        &[
            ("BLUEGREEN_TEST_STALL_AFTER", step),
            ("BLUEGREEN_TEST_STALL_MS", "60000"),
        ],
        "killed.log",
    );
    let hit = until(&mut child, step, || {
        r.log("killed.log")
            .lines()
            .any(|l| l.contains("cutover step") && l.contains(&format!("\"{step}\"")))
    });
    let _ = child.kill();
    let _ = child.wait();
    // The watchdog puts the dead flip right within seconds (traffic back where it was, or
    // the flip finished past its commit point), its record gone.
    assert!(
        wait_flip_settled(r),
        "{p:?}: the killed rollback's watchdog did not settle it within 30 s: {}",
        r.log("killed.log")
    );
    let phase = "SELECT phase FROM bluegreen.runs WHERE run = 'main'";
    if r.green.sql(DB, phase) == "cut-over" {
        Rig::write_on(&r.green, "GREEN2");
        let again = rollback(&[], "again.log");
        assert!(
            finish(again, "rollback again", || r.log("again.log")),
            "{p:?}: rollback again failed: {}\nkilled rollback:\n{}\nreverse sync:\n{}",
            r.log("again.log"),
            r.log("killed.log"),
            r.log("reverse.log")
        );
    }
    common::stop_sync(reverse);

    assert_eq!(r.green.sql(DB, phase), "copied", "{p:?}: not rolled back");
    assert_eq!(
        contents(&r.green),
        contents(&r.blue),
        "{p:?}: contents differ"
    );
    no_leftovers(r, &p);
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bluegreen_main_reverse'"
        ),
        "0",
        "{p:?}: the reverse slot is left on green"
    );
    let routed = std::fs::read_to_string(r.pooler.databases_file()).unwrap();
    assert!(
        routed.contains(&format!("port={}", r.blue.port())),
        "{p:?}: traffic is not on blue: {routed}"
    );
    assert_eq!(
        r.blue.sql(
            DB,
            "SELECT datallowconn AND has_database_privilege('public', current_database(), 'CONNECT')
                    AND current_setting('default_transaction_read_only') = 'off'
               FROM pg_database WHERE datname = current_database()"
        ),
        "t",
        "{p:?}: blue does not take traffic again"
    );
    format!(
        "{} then exact",
        if hit {
            "killed there"
        } else {
            "the rollback ended before the point (not killed)"
        }
    )
}

#[test]
fn run_killed_anywhere_ends_exact() {
    let points: usize = std::env::var("CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        // CI replays the same points; scripts/crash-campaign.sh draws a new seed each time.
        .unwrap_or(20_261_205);
    eprintln!("crash campaign: {points} point(s), CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let fixed = std::env::var("CRASH_SEED").is_err() && std::env::var("CRASH_POINTS").is_err();
    let drawn: Vec<Point> = if fixed {
        // CI: three drawn points and the two kinds a short draw may miss.
        let mut v: Vec<Point> = (0..3).map(|_| draw(&mut rng)).collect();
        v.push(Point::MainCommit);
        v.push(draw_rollback(&mut rng));
        v
    } else {
        (0..points).map(|_| draw(&mut rng)).collect()
    };
    // CRASH_ONLY=Rollback (say): only the points whose name starts so.
    let only = std::env::var("CRASH_ONLY").unwrap_or_default();
    let drawn: Vec<Point> = drawn
        .into_iter()
        .filter(|p| format!("{p:?}").starts_with(&only))
        .collect();
    for (i, p) in drawn.iter().enumerate() {
        let i = i + 1;
        eprintln!("point {i:>2}: {p:?} …");
        let started = Instant::now();
        let outcome = point(p);
        eprintln!(
            "point {i:>2}: {:<40} {outcome} ({:.0} s)",
            format!("{p:?}"),
            started.elapsed().as_secs_f64()
        );
    }
}
