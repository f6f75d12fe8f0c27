//! Running the real `bluegreen` binary against testkit servers.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

use testkit::Cluster;

pub fn bluegreen(args: &[&str]) -> Output {
    bluegreen_env(args, &[])
}

pub fn bluegreen_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("PGPASSWORD")
        .env_remove("PGHOST")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env(
            "HOME",
            std::env::temp_dir().join("bluegreen-test-empty-home"),
        )
        .output()
        .expect("run bluegreen")
}

/// A long-running `bluegreen` (sync) child, killed when dropped unless it has already been
/// waited for: a failing test must not leave it retrying against servers that are gone.
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `bluegreen args…` in the background with its stderr (the log) in `log`.
pub fn spawn_bluegreen(args: &[&str], log: &std::path::Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Running(
        Command::new(env!("CARGO_BIN_EXE_bluegreen"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A source cluster holding the factory_telemetry fixture at a tiny scale, and an empty target.
pub fn fixture_pair() -> (Cluster, Cluster) {
    fixture_pair_at(0.002)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The fixture's schema without data, as an operator would have created it on a target.
pub fn create_fixture_schema(pg: &Cluster) {
    runtime().block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&pg.url("factory_telemetry"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        fixtures::create_schema(&client).await.unwrap();
    });
}

/// Like [`fixture_pair`] at a given scale (1 ≈ 100 MB).
pub fn fixture_pair_at(scale: f64) -> (Cluster, Cluster) {
    let (source, target) = (Cluster::new(), Cluster::new());
    load_fixture_after(&source, &target, scale, "");
    (source, target)
}

/// [`fixture_pair_at`] with the fixture's keyless table given REPLICA IDENTITY FULL, so
/// the whole schema can be published.
pub fn publishable_pair_at(scale: f64) -> (Cluster, Cluster) {
    let (source, target) = fixture_pair_at(scale);
    source.sql(
        "factory_telemetry",
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    (source, target)
}

/// `bluegreen copy` from `source` to `target` in 1 MB chunks over one job (slow enough to be
/// interrupted), returned once it has committed its first chunk.
pub fn copy_with_a_chunk_in(source: &Cluster, target: &Cluster, log: &std::path::Path) -> Running {
    const DB: &str = "factory_telemetry";
    let (s, t) = (source.url(DB), target.url(DB));
    let copy = spawn_bluegreen(
        &[
            "copy",
            "--source",
            &s,
            "--target",
            &t,
            "--chunk-mb",
            "1",
            "--jobs",
            "1",
        ],
        log,
    );
    let started = std::time::Instant::now();
    while target
        .psql(
            DB,
            "SELECT count(*) FILTER (WHERE state = 'done') > 0 FROM bluegreen.chunks",
        )
        .map(|v| v.trim() != "t")
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no chunk copied: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    copy
}

/// A port free a moment ago on 127.0.0.1, as host:port.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// HTTP GET `path` from `addr`: the status code and body, or None when nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// Creates the factory_telemetry database on both and loads the fixture at `scale` into
/// the source (where `before` has run first, e.g. to create an extension).
pub fn load_fixture_after(source: &Cluster, target: &Cluster, scale: f64, before: &str) {
    source.create_database("factory_telemetry");
    target.create_database("factory_telemetry");
    if !before.is_empty() {
        source.sql("factory_telemetry", before);
    }
    runtime().block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&source.url("factory_telemetry"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        fixtures::load(&client, scale).await.unwrap();
    });
    source.sql("factory_telemetry", "ANALYZE");
}

/// The plant workload against `dsn` in a background thread, at `rate` rows/s, recording
/// every commit in `ledger`. A ledger holds only while nothing else writes its keys: give
/// each concurrent run its own `seed`.
pub fn workload(
    dsn: String,
    seconds: u64,
    rate: f64,
    ledger: std::path::PathBuf,
    seed: u64,
) -> std::thread::JoinHandle<fixtures::workload::WorkloadReport> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = fixtures::workload::WorkloadConfig::new(
            &dsn,
            std::time::Duration::from_secs(seconds),
            rate,
            &ledger,
        );
        cfg.seed = seed;
        let report = rt.block_on(fixtures::workload::run(&cfg)).unwrap();
        assert!(
            report.summary.committed > 0,
            "the workload committed nothing"
        );
        report
    })
}

/// Every write the ledger says was committed is on `dsn`.
pub fn check_ledger(dsn: &str, ledger: &std::path::Path) {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let report = fixtures::check(&client, ledger).await.unwrap();
        assert!(report.is_ok(), "committed writes missing: {report}");
    });
}

/// No client transaction failed for any reason but the workload's own deliberate domain
/// violations (23514), and none ended with an unknown outcome.
pub fn assert_no_failed_client_transaction(report: &fixtures::workload::WorkloadReport) {
    let s = &report.summary;
    let unexpected: Vec<_> = s
        .failures
        .iter()
        .filter(|(k, _)| k.as_str() != "23514")
        .collect();
    assert!(
        unexpected.is_empty(),
        "client transactions failed: {unexpected:?}"
    );
    assert_eq!(s.unknown, 0, "commits with unknown outcome");
    assert!(s.committed > 0);
}

/// Stops a running `bluegreen` (SIGTERM: sync finishes the transaction at hand and commits)
/// and waits for it, at most 30 s (then kills it); its exit status.
pub fn stop_sync(mut child: Running) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("bluegreen did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until the applier of `run` (its row on `applied_on`) has applied everything
/// `source` had written when this was called, at most `limit`; `why` says more on failure
/// (a log, say).
pub fn wait_caught_up(
    applied_on: &Cluster,
    run: &str,
    source: &Cluster,
    limit: std::time::Duration,
    why: impl Fn() -> String,
) {
    const DB: &str = "factory_telemetry";
    // The insert position: with synchronous_commit off (testkit's setting) the write
    // position can still lag a commit that has returned.
    let want = source.sql(DB, "SELECT pg_current_wal_insert_lsn()");
    let started = std::time::Instant::now();
    loop {
        // No row yet while a just-started sync registers itself.
        let applied = applied_on.sql(
            DB,
            &format!("SELECT coalesce((SELECT applied_lsn::text FROM bluegreen.apply WHERE run = '{run}'), '0/0')"),
        );
        if source.sql(
            DB,
            &format!("SELECT '{applied}'::pg_lsn >= '{want}'::pg_lsn"),
        ) == "t"
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{run} not caught up within {limit:?}: applied {applied}, want {want}\n{}",
            why()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
