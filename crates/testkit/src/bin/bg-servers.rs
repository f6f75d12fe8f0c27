//! Starts a local blue/green pair for the demo and benchmarks: a source and a target
//! PostgreSQL 15 (database `factory_telemetry` on each) and a PgBouncer routing
//! `factory_telemetry` to the source. Writes their connection strings as shell variables to
//! the file named on the command line, then waits; the servers go away when this process
//! ends (killed or not).
//!
//! Usage: bg-servers ENV_FILE [--subscriber] [--timescaledb] [setting=value ...]
//! (postgresql.conf settings for every server). `--subscriber` adds a second target with the
//! same settings (SUBSCRIBER_PORT), so that a benchmark's other applying consumer has a server
//! and a buffer pool of its own, as green would. `--timescaledb` preloads TimescaleDB.
//! `--source-rtt-ms N` (and `--source-bandwidth BYTES_PER_S`) puts the source behind a TCP
//! proxy adding that round trip (and cap), as a plant-floor blue seen from AKS: SOURCE_PORT,
//! SOURCE_URL and the pooler's route lead through it; SOURCE_DIRECT_PORT reaches the source
//! itself (for loading and checking). `--pool-size N` sets the pooler's server connections
//! per database and user (default 20).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use testkit::{Cluster, Pgbouncer};

/// Starts a local source, target and PgBouncer and writes how to reach them to ENV_FILE
/// (shell variables, passwords included: keep the file private); holds them until stdin
/// closes.
#[derive(Parser)]
#[command(name = "bg-servers")]
struct Args {
    /// File to write the servers' variables to (SOURCE_PORT, TARGET_PORT, POOLER_PORT, …).
    env_file: PathBuf,
    /// Also start a second target (SUBSCRIBER_PORT) with the same settings.
    #[arg(long)]
    subscriber: bool,
    /// Preload TimescaleDB on every server (it must be installed).
    #[arg(long)]
    timescaledb: bool,
    /// Reach the source through a proxy adding this round trip, in milliseconds.
    #[arg(long, value_name = "MS")]
    source_rtt_ms: Option<u64>,
    /// Cap the proxied source link at this many bytes per second each way.
    #[arg(long, value_name = "BYTES_PER_S")]
    source_bandwidth: Option<u64>,
    /// Server connections the pooler keeps per database and user (default 20): a client
    /// load over a far source needs as many as transactions it has on the wire at once.
    #[arg(long, value_name = "N")]
    pool_size: Option<u32>,
    /// postgresql.conf settings for every server, as name=value.
    #[arg(value_name = "SETTING=VALUE", value_parser = setting)]
    settings: Vec<(String, String)>,
}

fn setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s} is not setting=value"))
}

fn main() {
    let Args {
        env_file,
        subscriber,
        timescaledb,
        source_rtt_ms,
        source_bandwidth,
        pool_size,
        settings,
    } = Args::parse();
    if timescaledb && !testkit::timescaledb_available() {
        eprintln!("bg-servers: --timescaledb, but TimescaleDB is not installed for PostgreSQL 15");
        std::process::exit(2);
    }
    let env_file = env_file.display().to_string();
    let start = |name: &str| {
        let mut b = Cluster::builder();
        if timescaledb {
            b = b.timescaledb();
        }
        for (k, v) in &settings {
            b = b.setting(k, v);
        }
        let c = b.start().unwrap_or_else(|e| {
            eprintln!("bg-servers: cannot start the {name}: {e}");
            std::process::exit(2);
        });
        c.create_database("factory_telemetry");
        c
    };
    let source = start("source");
    let target = start("target");
    let second = subscriber.then(|| start("subscriber"));
    // Kept for as long as the servers: dropping it closes the link.
    let wan = (source_rtt_ms.is_some() || source_bandwidth.is_some()).then(|| {
        let p = testkit::Proxy::to_port(source.port()).unwrap_or_else(|e| {
            eprintln!("bg-servers: cannot start the proxy to the source: {e}");
            std::process::exit(2);
        });
        let half = Duration::from_micros(source_rtt_ms.unwrap_or(0) * 500);
        p.latency(half, half);
        p.bandwidth(source_bandwidth);
        p
    });
    let source_port = wan.as_ref().map_or(source.port(), |p| p.port());
    let mut pooler = Pgbouncer::builder();
    if let Some(n) = pool_size {
        pooler = pooler.setting("default_pool_size", &n.to_string());
    }
    let pooler = pooler
        .database(
            "factory_telemetry",
            source.host(),
            source_port,
            "factory_telemetry",
        )
        .user(source.superuser(), source.password())
        .start()
        .unwrap_or_else(|e| {
            eprintln!("bg-servers: cannot start pgbouncer: {e}");
            std::process::exit(2);
        });
    let mut vars = vec![
        (
            "SOURCE_URL",
            match &wan {
                Some(p) => p.url(&source, "factory_telemetry"),
                None => source.url("factory_telemetry"),
            },
        ),
        ("TARGET_URL", target.url("factory_telemetry")),
        ("SOURCE_PORT", source_port.to_string()),
        ("SOURCE_DIRECT_PORT", source.port().to_string()),
        ("TARGET_PORT", target.port().to_string()),
        ("DB_PASSWORD", source.password().to_string()),
        ("POOLER_PORT", pooler.port().to_string()),
        (
            "POOLER_URL",
            pooler.url("factory_telemetry", source.superuser(), source.password()),
        ),
        ("POOLER_ADMIN_URL", pooler.admin_url()),
        (
            "POOLER_DATABASES_FILE",
            pooler.databases_file().display().to_string(),
        ),
        (
            "SOURCE_LOG",
            source
                .data_dir()
                .join("../server.log")
                .display()
                .to_string(),
        ),
    ];
    if let Some(s) = &second {
        vars.push(("SUBSCRIBER_PORT", s.port().to_string()));
    }
    let text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    let tmp = format!("{env_file}.tmp");
    // It holds the servers' password: readable by its owner only.
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(text.as_bytes())?;
        std::fs::rename(&tmp, &env_file)
    };
    if let Err(e) = write() {
        eprintln!("bg-servers: cannot write {env_file}: {e}");
        std::process::exit(2);
    }
    let _ = std::io::stdout().flush();
    // Hold the servers until stdin closes (or we are killed; the watchdogs clean up then).
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
}
