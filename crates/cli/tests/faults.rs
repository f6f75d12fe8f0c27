//! Network faults between bluegreen and the servers (testkit::Proxy in front of each):
//! sync reconnects and resumes exactly after resets and black holes on either link, a stop
//! that cannot finish still ends, verify through a dead link fails within a bound, copy
//! through a reset link resumes when run again.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bluegreen, code, spawn_bluegreen, stderr, stdout, Running};
use testkit::{Cluster, Proxy};

const DB: &str = "factory_telemetry";

/// Source and target copied directly, with a proxy in front of each for what follows.
struct Pair {
    source: Cluster,
    target: Cluster,
    ps: Proxy,
    pt: Proxy,
    dir: tempfile::TempDir,
}

impl Pair {
    /// Connection strings through the proxies.
    fn via(&self) -> (String, String) {
        (self.ps.url(&self.source, DB), self.pt.url(&self.target, DB))
    }
}

fn copied_pair(scale: f64) -> Pair {
    let (source, target) = common::publishable_pair_at(scale);
    let o = bluegreen(&[
        "copy",
        "--source",
        &source.url(DB),
        "--target",
        &target.url(DB),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let ps = Proxy::to_port(source.port()).unwrap();
    let pt = Proxy::to_port(target.port()).unwrap();
    Pair {
        source,
        target,
        ps,
        pt,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Sync through both proxies with a 5 s link timeout unless `extra` names one (or a
/// config file).
fn start_sync(p: &Pair, log: &str, extra: &[&str]) -> Running {
    let (s, t) = p.via();
    let mut args = vec![
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--log-format",
        "json",
    ];
    if !extra.contains(&"--link-timeout") && !extra.contains(&"--config") {
        args.extend(["--link-timeout", "5s"]);
    }
    args.extend_from_slice(extra);
    spawn_bluegreen(&args, &p.dir.path().join(log))
}

fn log(p: &Pair, name: &str) -> String {
    std::fs::read_to_string(p.dir.path().join(name)).unwrap_or_default()
}

/// Waits for the child's exit, at most `limit`; the status and how long it took.
fn exit_within(
    child: &mut Running,
    limit: Duration,
    log: impl Fn() -> String,
) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, started.elapsed());
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("did not exit within {limit:?}:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The plant workload at 300 rows/s on the source (directly); the ledger once done.
fn workload(p: &Pair, seconds: u64) -> std::thread::JoinHandle<PathBuf> {
    let ledger = p.dir.path().join("ledger");
    let run = common::workload(p.source.url(DB), seconds, 300.0, ledger.clone(), 1);
    std::thread::spawn(move || {
        run.join().unwrap();
        ledger
    })
}

/// Waits until the applier has passed the source's current position (read directly).
fn wait_caught_up(p: &Pair, limit: Duration, log_name: &str) {
    common::wait_caught_up(&p.target, "main", &p.source, limit, || log(p, log_name));
}

fn assert_same(p: &Pair, ledger: Option<&Path>) {
    for table in fixtures::TABLES {
        let q = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let (a, b) = (p.source.sql(DB, &q), p.target.sql(DB, &q));
        assert!(
            a == b,
            "{table} differs: source {} bytes, target {} bytes",
            a.len(),
            b.len()
        );
    }
    if let Some(ledger) = ledger {
        common::check_ledger(&p.target.url(DB), ledger);
    }
}

#[test]
fn sync_resumes_exactly_after_resets_on_either_link() {
    let p = copied_pair(0.005);
    let writer = workload(&p, 9);
    let sync = start_sync(&p, "sync.log", &[]);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        p.ps.reset();
        std::thread::sleep(Duration::from_millis(1500));
        p.pt.reset();
    }
    let ledger = writer.join().unwrap();
    wait_caught_up(&p, Duration::from_secs(60), "sync.log");
    assert!(common::stop_sync(sync).success());
    assert_same(&p, Some(&ledger));
    let log = log(&p, "sync.log");
    assert!(log.contains("resuming from the origin"), "{log}");
}

/// A slow link (10 ms each way on both links, 2 MB/s from the source) is not a dead link,
/// even with a link timeout of 2 s: no session is cut, and the target is exact.
#[test]
fn a_slow_link_is_not_taken_for_a_dead_one() {
    let p = copied_pair(0.005);
    for proxy in [&p.ps, &p.pt] {
        proxy.latency(Duration::from_millis(10), Duration::from_millis(10));
    }
    p.ps.bandwidth(Some(2 << 20));
    let writer = workload(&p, 8);
    let sync = start_sync(&p, "sync.log", &["--link-timeout", "2s"]);
    let ledger = writer.join().unwrap();
    wait_caught_up(&p, Duration::from_secs(60), "sync.log");
    assert!(common::stop_sync(sync).success());
    assert_same(&p, Some(&ledger));
    let log = log(&p, "sync.log");
    assert!(!log.contains("resuming from the origin"), "{log}");
}

/// A black hole on one link while the plant writes: the link timeout (5 s) finds it, sync
/// reconnects once new connections pass again (after 8 s, the old flows staying dead), ends
/// what the dead session left on the servers, and resumes exactly.
fn black_hole_on(which: &str) {
    let p = copied_pair(0.005);
    let writer = workload(&p, 14);
    // The target's case takes the timeout from the config file's [sync] table.
    let config = p.dir.path().join("bluegreen.toml");
    std::fs::write(&config, "[sync]\nlink_timeout = \"5s\"\n").unwrap();
    let extra = match which {
        "source" => vec![],
        _ => vec!["--config", config.to_str().unwrap()],
    };
    let sync = start_sync(&p, "sync.log", &extra);
    std::thread::sleep(Duration::from_secs(3));
    let proxy = if which == "source" { &p.ps } else { &p.pt };
    proxy.black_hole(Some(Duration::from_secs(8)));
    let ledger = writer.join().unwrap();
    wait_caught_up(&p, Duration::from_secs(60), "sync.log");
    assert!(common::stop_sync(sync).success());
    assert_same(&p, Some(&ledger));
    let log = log(&p, "sync.log");
    assert!(
        log.contains("no answer within 5 s (--link-timeout): the link looks dead")
            || log.contains("no message from the server for 5 s"),
        "{log}"
    );
    assert!(log.contains("resuming from the origin"), "{log}");
}

#[test]
fn sync_resumes_exactly_after_a_black_hole_on_the_source_link() {
    black_hole_on("source");
}

#[test]
fn sync_resumes_exactly_after_a_black_hole_on_the_target_link() {
    black_hole_on("target");
}

/// A sync whose target went silent for good cannot finish the transaction at hand: a second
/// SIGINT ends it at once, and without one the stop grace does; either way exit 2, saying
/// what was not committed and where the next sync resumes, which it then does exactly.
#[test]
fn a_stop_that_cannot_finish_still_ends() {
    let p = copied_pair(0.005);
    // Writes all along: the black holes find apply with work at hand.
    let writer = workload(&p, 14);
    // Link timeout far off: only the stop handling can end it.
    let mut sync = start_sync(&p, "first.log", &["--link-timeout", "5min"]);
    std::thread::sleep(Duration::from_secs(2));
    p.pt.black_hole(None);
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(sync.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sync.try_wait().unwrap().is_none(),
        "exited on the first SIGINT: {}",
        log(&p, "first.log")
    );
    unsafe { libc::kill(sync.id() as i32, libc::SIGINT) };
    let (status, took) = exit_within(&mut sync, Duration::from_secs(10), || log(&p, "first.log"));
    assert_eq!(status.code(), Some(2), "{}", log(&p, "first.log"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let first = log(&p, "first.log");
    assert!(first.contains("a second stop request"), "{first}");
    assert!(
        first.contains("were not committed on the target"),
        "{first}"
    );
    assert!(
        first.contains("resumes from the target's replication origin"),
        "{first}"
    );

    // The grace period alone.
    p.pt.reset();
    p.pt.pass();
    let mut sync = start_sync(
        &p,
        "second.log",
        &["--link-timeout", "5min", "--stop-grace", "3s"],
    );
    std::thread::sleep(Duration::from_secs(3));
    p.pt.black_hole(None);
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(sync.id() as i32, libc::SIGTERM) };
    let (status, took) = exit_within(&mut sync, Duration::from_secs(15), || log(&p, "second.log"));
    assert_eq!(status.code(), Some(2), "{}", log(&p, "second.log"));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let second = log(&p, "second.log");
    assert!(second.contains("did not finish within 3 s"), "{second}");

    // The next sync ends what the dead ones left and resumes exactly.
    p.pt.reset();
    p.pt.pass();
    let ledger = writer.join().unwrap();
    let sync = start_sync(&p, "third.log", &[]);
    wait_caught_up(&p, Duration::from_secs(60), "third.log");
    assert!(common::stop_sync(sync).success());
    assert_same(&p, Some(&ledger));
}

/// Runs `bluegreen args…` in the background until it exits (at most `limit`); its exit
/// code, how long it took, and its stderr.
fn run_bounded(dir: &Path, name: &str, args: &[&str], limit: Duration) -> (i32, Duration, String) {
    let log_path = dir.join(name);
    let mut child = spawn_bluegreen(args, &log_path);
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (status, took) = exit_within(&mut child, limit, read);
    (status.code().unwrap_or(-1), took, read())
}

/// Verify through a dead link ends with exit 2 within its link timeout and says which side,
/// whether the link was dead before it started (a connection that is accepted and never
/// answered) or died while it compared.
#[test]
fn verify_through_a_black_hole_fails_within_the_link_timeout() {
    let p = copied_pair(0.005);
    let (s, t) = p.via();
    let args = [
        "verify",
        "--source",
        s.as_str(),
        "--target",
        t.as_str(),
        "--link-timeout",
        "3s",
    ];
    // Through healthy links it is clean.
    let (code, _, out) = run_bounded(p.dir.path(), "clean.log", &args, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");

    p.pt.black_hole(None);
    let (code, took, out) = run_bounded(p.dir.path(), "before.log", &args, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(
        out.contains("target: no answer within 3 s (--link-timeout): the link looks dead"),
        "{out}"
    );
    assert!(out.contains("hint:"), "{out}");

    // Dying while it compares: slowed down by latency, then the source link goes.
    p.pt.reset();
    p.pt.pass();
    p.ps.latency(Duration::from_millis(20), Duration::from_millis(20));
    let mut child = spawn_bluegreen(&args, &p.dir.path().join("during.log"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "verify finished before the fault: {}",
        log(&p, "during.log")
    );
    p.ps.black_hole(None);
    let (status, took) = exit_within(&mut child, Duration::from_secs(30), || {
        log(&p, "during.log")
    });
    let during = log(&p, "during.log");
    assert_eq!(status.code(), Some(2), "{during}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(
        during.contains("source: no answer within 3 s (--link-timeout)"),
        "{during}"
    );
}

/// A copy whose source link is reset while it copies data stops with exit 2; run again, it
/// resumes and the target is exact.
#[test]
fn copy_through_a_reset_link_resumes_when_run_again() {
    let (source, target) = common::publishable_pair_at(0.1);
    let ps = Proxy::to_port(source.port()).unwrap();
    let pt = Proxy::to_port(target.port()).unwrap();
    let (s, t) = (ps.url(&source, DB), pt.url(&target, DB));
    let dir = tempfile::tempdir().unwrap();
    // About 1 MB/s from the source: the data phase takes long enough to be cut.
    ps.bandwidth(Some(1 << 20));
    let args = [
        "copy",
        "--source",
        s.as_str(),
        "--target",
        t.as_str(),
        "--jobs",
        "1",
        "--chunk-mb",
        "1",
        "--link-timeout",
        "5s",
    ];
    let mut child = spawn_bluegreen(&args, &dir.path().join("first.log"));
    let started = Instant::now();
    loop {
        let done = target
            .psql(
                DB,
                "SELECT count(*) FILTER (WHERE state = 'done') FROM bluegreen.chunks",
            )
            .unwrap_or_default();
        if done.parse::<i64>().is_ok_and(|n| n >= 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none(),
            "the copy never reached its data phase ({done:?}, {:?}): {}",
            child.try_wait(),
            std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ps.reset();
    let first = || std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
    let (status, _) = exit_within(&mut child, Duration::from_secs(30), first);
    assert_eq!(status.code(), Some(2), "{}", first());
    assert_eq!(target.sql(DB, "SELECT phase FROM bluegreen.runs"), "data");

    ps.bandwidth(None);
    let (code, _, log) = run_bounded(dir.path(), "again.log", &args, Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    for table in fixtures::TABLES {
        let q = format!("SELECT t::text FROM {table} t ORDER BY 1");
        assert!(source.sql(DB, &q) == target.sql(DB, &q), "{table} differs");
    }
}
