//! Network faults at each cutover step (issue 20 item 2): `bluegreen cutover` reaches blue,
//! green and the pooler's admin console through TCP proxies (testkit::Proxy); the test holds
//! it after a step (test hook), resets every connection of one link there, and checks that
//! the flip ends either done (traffic on green) or, far more often, failed (exit 2) with
//! nothing half-done: within bounded time traffic is on blue, blue is not fenced, the pooler
//! is not paused, sync still runs, no flip record or reverse slot is left.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout, Running};
use testkit::{Cluster, Pgbouncer, Proxy};

const DB: &str = "factory_telemetry";

struct Rig {
    blue: Cluster,
    green: Cluster,
    pooler: Pgbouncer,
    proxies: [Proxy; 3],
    dir: tempfile::TempDir,
    _sync: Running,
}

const LINKS: [&str; 3] = ["blue", "green", "pooler"];

fn rig() -> Rig {
    let (blue, green) = common::publishable_pair_at(0.005);
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    // Sync itself on direct links: the faults are the cutover's.
    let sync = spawn_bluegreen(
        &["sync", "--source", &s, "--target", &t],
        &dir.path().join("sync.log"),
    );
    let proxies = [
        Proxy::to_port(blue.port()).unwrap(),
        Proxy::to_port(green.port()).unwrap(),
        Proxy::to_port(pooler.port()).unwrap(),
    ];
    let r = Rig {
        blue,
        green,
        pooler,
        proxies,
        dir,
        _sync: sync,
    };
    let started = Instant::now();
    while !r.sync_running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    r
}

impl Rig {
    fn sync_running(&self) -> bool {
        self.green.sql(
            DB,
            "SELECT coalesce(bool_or(heartbeat > clock_timestamp() - interval '5 s'), false)
               FROM bluegreen.apply WHERE run = 'main'",
        ) == "t"
    }

    /// Forward sync caught up (see the free [`wait_caught_up`]).
    fn wait_caught_up(&self) {
        wait_caught_up(&self.green, "main");
    }

    /// A cutover through the proxies, held 2 s after `step`.
    fn cutover(&self, step: &str, log: &str) -> std::process::Child {
        self.flip("cutover", step, log)
    }

    /// `bluegreen <command>` (cutover or rollback) through the proxies, held 2 s after `step`.
    fn flip(&self, command: &str, step: &str, log: &str) -> std::process::Child {
        let [b, g, p] = &self.proxies;
        let admin = self.pooler.admin_url().replace(
            &format!(":{}/", self.pooler.port()),
            &format!(":{}/", p.port()),
        );
        let pooler = format!(
            "admin={admin},db={DB},file={},blue=127.0.0.1:{}/{DB},green=127.0.0.1:{}/{DB}",
            self.pooler.databases_file().display(),
            self.blue.port(),
            self.green.port()
        );
        Command::new(env!("CARGO_BIN_EXE_bluegreen"))
            .args([
                command,
                "--source",
                &b.url(&self.blue, DB),
                "--target",
                &g.url(&self.green, DB),
                "--pooler",
                &pooler,
                "--no-verify-check",
                "--pause-timeout",
                "5",
                "--link-timeout",
                "5",
            ])
            .env("BLUEGREEN_TEST_STALL_AFTER", step)
            .env("BLUEGREEN_TEST_STALL_MS", "2000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until the flip logging to `log` has finished `step` (60 s at most).
    fn wait_step(&self, log: &str, step: &str) {
        let started = Instant::now();
        let done = format!("\"{step}\"");
        while !self
            .log(log)
            .lines()
            .any(|l| l.contains("cutover step") && l.contains(&done))
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{step} not reached: {}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The flip's exit status, within `limit`.
    fn wait_exit(&self, child: &mut std::process::Child, log: &str, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < limit,
                "the flip did not end within {limit:?}: {}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pooled_port(&self) -> Option<u16> {
        let out = Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT inet_server_port()"])
            .arg(self.pooler.url(DB, "postgres", self.blue.password()))
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Traffic reaches `side` (named `name`) through an unpaused pooler, and it is not fenced.
    fn served_by(&self, side: &Cluster, name: &str) -> Result<(), String> {
        if self.pooled_port() != Some(side.port()) {
            return Err(format!("pooler answers from {:?}", self.pooled_port()));
        }
        let fenced = side.sql(DB, "SELECT coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()");
        if !fenced.is_empty() {
            return Err(format!("{name} is fenced: {fenced}"));
        }
        Ok(())
    }

    /// What a failed rollback leaves: traffic on green (through an unpaused pooler), green
    /// unfenced, reverse sync running, the run `cut-over`, no flip record.
    fn on_green(&self) -> Result<(), String> {
        self.served_by(&self.green, "green")?;
        let left = self.green.sql(
            DB,
            "SELECT (SELECT phase FROM bluegreen.runs WHERE run = 'main') || ' '
                 || (SELECT count(*) FROM bluegreen.flips) || ' '
                 || (SELECT coalesce(bool_or(heartbeat > clock_timestamp() - interval '5 s'), false)
                       FROM bluegreen.apply WHERE run = 'main_reverse')",
        );
        if left != "cut-over 0 true" {
            return Err(format!("phase, flip records, reverse sync running: {left}"));
        }
        Ok(())
    }

    /// Traffic on blue (through an unpaused pooler), blue unfenced, sync running, the run
    /// `copied`, no flip record or reverse slot: what a failed cutover leaves.
    fn on_blue(&self) -> Result<(), String> {
        self.served_by(&self.blue, "blue")?;
        let left = self.green.sql(
            DB,
            "SELECT (SELECT phase FROM bluegreen.runs WHERE run = 'main') || ' '
                 || (SELECT count(*) FROM bluegreen.flips) || ' '
                 || (SELECT count(*) FROM pg_replication_slots)",
        );
        if left != "copied 0 0" {
            return Err(format!("phase, flip records, slots on green: {left}"));
        }
        if !self.sync_running() {
            return Err("sync is not running".into());
        }
        Ok(())
    }
}

/// A rollback's pause has the same bounds: blue's, green's or the pooler's link silent right
/// after `pause` or `drain` ends the rollback in exit 2 with traffic still on green, green
/// unfenced, the pooler resumed, reverse sync running and the run still `cut-over`.
#[test]
fn a_black_hole_while_a_rollback_holds_clients_leaves_traffic_on_green() {
    let mut r = rig();
    r.wait_caught_up();
    let mut first = r.cutover("none", "cutover.log");
    assert_eq!(
        first.wait().unwrap().code(),
        Some(0),
        "{}",
        r.log("cutover.log")
    );
    let (s, t) = (r.blue.url(DB), r.green.url(DB));
    // The forward sync ends by itself after a cutover; the reverse one follows green.
    r._sync = spawn_bluegreen(
        &["sync", "--reverse", "--source", &s, "--target", &t],
        &r.dir.path().join("reverse.log"),
    );
    for step in ["pause", "drain"] {
        for (i, link) in LINKS.iter().enumerate() {
            let log = format!("rollback-{step}-{link}.log");
            wait_caught_up(&r.green, "main_reverse");
            let mut child = r.flip("rollback", step, &log);
            let started = Instant::now();
            r.wait_step(&log, step);
            r.proxies[i].black_hole(Some(Duration::from_secs(5)));
            let exit = r.wait_exit(&mut child, &log, Duration::from_secs(60));
            assert_eq!(exit, 2, "{step}/{link}: {}", r.log(&log));
            let settled = Instant::now();
            loop {
                match r.on_green() {
                    Ok(()) => break,
                    Err(e) if settled.elapsed() > Duration::from_secs(20) => panic!(
                        "{step}/{link}: not back on green 20 s after the exit: {e}\n{}",
                        r.log(&log)
                    ),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            eprintln!(
                "{step}/{link}: exit 2 in {:?}, on green {:?} later",
                started.elapsed() - settled.elapsed(),
                settled.elapsed()
            );
        }
    }
}

/// The applier of `run` alive and less than a second behind: a case that held it for
/// seconds (a silent link after the drain) leaves a lag the next flip's guardrail would
/// refuse until it has caught up again.
fn wait_caught_up(green: &Cluster, run: &str) {
    let started = Instant::now();
    while green.sql(
        DB,
        &format!(
            "SELECT coalesce(bool_and(lag_seconds < 1 AND heartbeat > clock_timestamp() - interval '5 s'), false)
               FROM bluegreen.apply WHERE run = '{run}'"
        ),
    ) != "t"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{run}: sync did not catch up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every step before the commit point, a reset of each link right after it.
#[test]
fn a_reset_link_at_any_cutover_step_leaves_traffic_on_blue() {
    faults_at_each_step(&ALL_STEPS, false);
}

/// The link goes silent instead (a black hole healing after 5 s for new connections: packets
/// of the open flows dropped, no reset) at the steps that hold clients. TCP notices nothing
/// through the loopback proxy (its kernel acknowledges everything), so only the flip's own
/// bounds end the wait: the step fails within its bound (raising the fence and closing blue
/// each --pause-timeout, drain --drain-timeout + --pause-timeout, the rest --pause-timeout),
/// the silent session is given up for a fresh one (its backend ended, the flip lock taken
/// again) and everything is put back. Before those bounds the flip waited on blue's dead socket for over 240 s with the
/// pooler paused (in `fence::raise`, its first statement to blue after PAUSE).
/// `FAULT_STEPS=pause` (comma-separated) runs only those steps.
#[test]
fn a_black_hole_while_clients_are_paused_leaves_traffic_on_blue() {
    let only = std::env::var("FAULT_STEPS").unwrap_or_else(|_| "pause,fence,drain".into());
    let steps: Vec<&str> = only.split(',').collect();
    faults_at_each_step(&steps, true);
}

/// The link goes silent before the PAUSE, where steps have no deadline of their own (a
/// large materialized view may take minutes to refresh): the probe of each server's link
/// (`--link-timeout 5`) fails the step at hand, and everything is put back. Before, the
/// next step waited on the dead socket for good (the loopback proxy's kernel acknowledges
/// everything, so TCP's own timeouts never fire).
#[test]
fn a_black_hole_before_the_pause_fails_the_step_within_the_link_timeout() {
    faults_at_each_step(
        &["unwatch", "arm rollback", "refresh materialized views"],
        true,
    );
}

/// Green goes silent right after RESUME, while the coordinator finishes the flip there: its
/// probe of green fails the finishing within `--link-timeout` (exit 2, traffic already on
/// green), and the watchdog finishes the flip from its record once green answers again.
#[test]
fn a_black_hole_after_the_commit_point_is_finished_by_the_watchdog() {
    let r = rig();
    r.wait_caught_up();
    let log = "cutover-after-resume.log";
    let mut child = r.cutover("resume", log);
    r.wait_step(log, "resume");
    r.proxies[1].black_hole(Some(Duration::from_secs(5)));
    let exit = r.wait_exit(&mut child, log, Duration::from_secs(60));
    assert_eq!(exit, 2, "{}", r.log(log));
    assert!(
        r.log(log).contains("(--link-timeout)"),
        "not the probe: {}",
        r.log(log)
    );
    let settled = Instant::now();
    loop {
        let done = r.green.sql(
            DB,
            "SELECT (SELECT phase FROM bluegreen.runs WHERE run = 'main') || ' '
                 || (SELECT count(*) FROM bluegreen.flips)",
        );
        if done == "cut-over 0" && r.pooled_port() == Some(r.green.port()) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "not finished 60 s after the exit ({done}, pooler at {:?}): {}",
            r.pooled_port(),
            r.log(log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

const ALL_STEPS: [&str; 12] = [
    "guardrails",
    "unwatch",
    "unfence green",
    "arm rollback",
    "pre-sync sequences",
    "refresh materialized views",
    "pre-drain",
    "pause",
    "fence",
    "drain",
    "final sequence sync",
    "flip",
];

fn faults_at_each_step(steps: &[&str], black_hole: bool) {
    let mut r = rig();
    let mut outcomes = Vec::new();
    for &step in steps {
        for (i, link) in LINKS.iter().enumerate() {
            let log = format!("cutover-{step}-{link}.log").replace(' ', "_");
            r.wait_caught_up();
            let mut child = r.cutover(step, &log);
            let started = Instant::now();
            let mut reset = false;
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if !reset
                    && r.log(&log)
                        .lines()
                        .any(|l| l.contains("cutover step") && l.contains(&format!("\"{step}\"")))
                {
                    if black_hole {
                        r.proxies[i].black_hole(Some(Duration::from_secs(5)));
                    } else {
                        r.proxies[i].reset();
                    }
                    reset = true;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{step}/{link}: cutover did not end within 60 s: {}",
                    r.log(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let took = started.elapsed();
            assert!(reset, "{step}/{link}: step not reached: {}", r.log(&log));
            let exit = status.code().unwrap_or(-1);
            if exit == 0 {
                // The flip did not need that link again: done, traffic on green. A fresh
                // rig for the rest.
                assert_eq!(r.pooled_port(), Some(r.green.port()), "{step}/{link}");
                outcomes.push(format!("{step}/{link}: done (exit 0) in {took:?}"));
                drop(r);
                r = rig();
                continue;
            }
            assert_eq!(exit, 2, "{step}/{link}: {}", r.log(&log));
            // Put right by the coordinator, or by its watchdog within seconds.
            let settled = Instant::now();
            loop {
                match r.on_blue() {
                    Ok(()) => break,
                    Err(e) if settled.elapsed() > Duration::from_secs(20) => panic!(
                        "{step}/{link}: not back on blue 20 s after the exit: {e}\n{}",
                        r.log(&log)
                    ),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            outcomes.push(format!(
                "{step}/{link}: exit 2 in {took:?}, on blue {:?} later",
                settled.elapsed()
            ));
        }
    }
    for o in &outcomes {
        eprintln!("{o}");
    }
}

/// Green goes silent right after the drain and stays out of reach past the coordinator's
/// own attempts to reopen it (30 s): the coordinator hands the flip to its watchdog and
/// exits 2. Green's backend of the coordinator's dead session lives on and holds the flip's
/// lock; the watchdog, which knows that backend, ends it once green answers again and
/// undoes the flip: the flip record gone and the applier's hold released (before, the
/// watchdog gave up after 15 s, leaving the record, and sync held for 10 minutes).
#[test]
fn a_green_silent_past_the_coordinators_retries_is_put_right_by_the_watchdog() {
    let r = rig();
    r.wait_caught_up();
    let log = "cutover-green-silent.log";
    let mut child = r.cutover("drain", log);
    r.wait_step(log, "drain");
    r.proxies[1].black_hole(Some(Duration::from_secs(40)));
    let exit = r.wait_exit(&mut child, log, Duration::from_secs(180));
    assert_eq!(exit, 2, "{}", r.log(log));
    let settled = Instant::now();
    loop {
        match r.on_blue() {
            Ok(()) => break,
            Err(e) if settled.elapsed() > Duration::from_secs(90) => {
                panic!("not back on blue 90 s after the exit: {e}\n{}", r.log(log))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT coalesce(hold_lsn::text, 'released') FROM bluegreen.apply WHERE run = 'main'"
        ),
        "released"
    );
}

/// PgBouncer's PAUSE closes a server connection that is still logging in, and counts that
/// as a failed login: after RESUME its pool would open no connection for
/// `server_login_retry` (15 s by default) while every client waits. The pooler here reaches
/// blue through 200 ms of round trip (each login ~0.4 s) and twelve clients make it open
/// twelve, one after another, when the cutover PAUSEs; after it a client reaches green
/// within seconds (about 13 s later before the cutover lifted the retry wait for its RESUME).
#[test]
fn a_pause_during_a_pooler_login_does_not_hold_clients_for_the_login_retry() {
    let (blue, green) = common::publishable_pair_at(0.005);
    let far = Proxy::to_port(blue.port()).unwrap();
    far.latency(Duration::from_millis(100), Duration::from_millis(100));
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", far.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let _sync = spawn_bluegreen(
        &["sync", "--source", &s, "--target", &t],
        &dir.path().join("sync.log"),
    );
    wait_caught_up(&green, "main");
    let through_pooler = |sql: &str| {
        Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-c", sql])
            .arg(pooler.url(DB, "postgres", blue.password()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let clients: Vec<_> = (0..12)
        .map(|_| through_pooler("SELECT pg_sleep(2)"))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let pooler_spec = format!(
        "admin={},db={DB},file={},blue=127.0.0.1:{}/{DB},green=127.0.0.1:{}/{DB}",
        pooler.admin_url(),
        pooler.databases_file().display(),
        far.port(),
        green.port()
    );
    let o = bluegreen(&[
        "cutover",
        "--source",
        &s,
        "--target",
        &t,
        "--pooler",
        &pooler_spec,
        "--no-verify-check",
        "--pause-timeout",
        "30",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let resumed = Instant::now();
    let probe = through_pooler("SELECT inet_server_port()")
        .wait_with_output()
        .unwrap();
    let waited = resumed.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        green.port().to_string()
    );
    assert!(
        waited < Duration::from_secs(5),
        "a client waited {waited:?} for green after RESUME (PgBouncer's login retry wait)"
    );
    for c in clients {
        let _ = c.wait_with_output();
    }
    // The lift lasted only until the pool had a connection: the default is back.
    let config = pooler.admin("SHOW CONFIG").unwrap();
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("server_login_retry|15|")),
        "server_login_retry not put back: {config}"
    );
    eprintln!("a client reached green {waited:?} after the cutover");
}
