//! The test kit's own promises: servers start isolated, answer, and vanish when their
//! handle drops, during a panic, and when the whole test process is killed.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{Cluster, Pgbouncer};

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn gone_within(port: u16, dir: &std::path::Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !accepts(port) && !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn cluster_is_logical_and_answers() {
    let pg = Cluster::new();
    assert_eq!(pg.sql("postgres", "SHOW wal_level"), "logical");
    assert!(pg
        .sql("postgres", "SELECT version()")
        .contains("PostgreSQL 15"));
    pg.create_database("Fancy \"db\"");
    assert_eq!(pg.sql("Fancy \"db\"", "SELECT 1"), "1");
}

#[test]
fn two_clusters_do_not_collide() {
    let a = Cluster::new();
    let b = Cluster::builder()
        .setting("work_mem", "'7MB'")
        .start()
        .unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(b.sql("postgres", "SHOW work_mem"), "7MB");
    assert_eq!(a.sql("postgres", "SHOW work_mem"), "4MB");
}

#[test]
fn cluster_is_removed_after_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel::<(u16, PathBuf)>();
    let result = std::thread::spawn(move || {
        let pg = Cluster::new();
        tx.send((pg.port(), pg.data_dir())).unwrap();
        panic!("test failure while the cluster runs");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (port, data) = rx.recv().unwrap();
    assert!(
        gone_within(port, &data, Duration::from_secs(10)),
        "server on {port} or {} still there after the panic",
        data.display()
    );
}

/// Runs in a child process that the parent kills with SIGKILL.
#[test]
#[ignore = "helper for cluster_is_removed_after_sigkill"]
fn child_holds_a_cluster() {
    let pg = Cluster::new();
    println!("READY {} {}", pg.port(), pg.data_dir().display());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn cluster_is_removed_after_sigkill() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_cluster",
            "--ignored",
            "--nocapture",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.starts_with("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    let mut parts = line.split_whitespace().skip(1);
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let data = PathBuf::from(parts.next().unwrap());
    assert!(accepts(port));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        gone_within(port, &data, Duration::from_secs(20)),
        "watchdog did not clean up after SIGKILL"
    );
}

#[test]
fn pgbouncer_pools_and_reroutes() {
    if !testkit::pgbouncer_available() {
        eprintln!("SKIP: pgbouncer is not installed");
        return;
    }
    let blue = Cluster::new();
    let green = Cluster::new();
    let pb = Pgbouncer::builder()
        .database("app", "127.0.0.1", blue.port(), "postgres")
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let port_via_pooler = || {
        let out = Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT inet_server_port()"])
            .arg(pb.url("app", "postgres", blue.password()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(port_via_pooler(), blue.port());
    assert!(pb.admin("SHOW DATABASES").unwrap().contains("app"));
    pb.reroute("app", "127.0.0.1", green.port(), "postgres")
        .unwrap();
    assert_eq!(port_via_pooler(), green.port());
    let (port, dir) = (
        pb.port(),
        pb.databases_file().parent().unwrap().to_path_buf(),
    );
    drop(pb);
    assert!(gone_within(port, &dir, Duration::from_secs(10)));
}

/// The helper binaries parse their arguments: `--help` prints usage and starts nothing (it
/// once took `--help` as its env file and wrote the servers' passwords into it).
#[test]
fn bg_servers_help_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bg-servers"))
        .arg("--help")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: bg-servers"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let o = Command::new(env!("CARGO_BIN_EXE_bg-servers"))
        .args(["env", "not-a-setting"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
