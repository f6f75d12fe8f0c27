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
    let source = Cluster::new();
    let target = Cluster::new();
    source.create_database("factory_telemetry");
    target.create_database("factory_telemetry");
    runtime().block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&source.url("factory_telemetry"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        fixtures::load(&client, scale).await.unwrap();
    });
    source.sql("factory_telemetry", "ANALYZE");
    (source, target)
}
