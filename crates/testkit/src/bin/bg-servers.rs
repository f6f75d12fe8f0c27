//! Starts a local blue/green pair for the demo and benchmarks: a source and a target
//! PostgreSQL 15 (database `factory_telemetry` on each) and a PgBouncer routing
//! `factory_telemetry` to the source. Writes their connection strings as shell variables to
//! the file named on the command line, then waits; the servers go away when this process
//! ends (killed or not).
//!
//! Usage: bg-servers ENV_FILE [--subscriber] [setting=value ...]
//! (postgresql.conf settings for every server). `--subscriber` adds a second target with the
//! same settings (SUBSCRIBER_PORT), so that a benchmark's other applying consumer has a server
//! and a buffer pool of its own, as green would.

use std::io::Write;

use testkit::{Cluster, Pgbouncer};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(env_file) = args.next() else {
        eprintln!("usage: bg-servers ENV_FILE [--subscriber] [setting=value ...]");
        std::process::exit(2);
    };
    let mut subscriber = false;
    let mut settings: Vec<(String, String)> = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => settings.push((k.to_string(), v.to_string())),
            None if a == "--subscriber" => subscriber = true,
            None => {
                eprintln!("bg-servers: {a} is neither --subscriber nor setting=value");
                std::process::exit(2);
            }
        }
    }
    let start = |name: &str| {
        let mut b = Cluster::builder();
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
    let pooler = Pgbouncer::builder()
        .database(
            "factory_telemetry",
            source.host(),
            source.port(),
            "factory_telemetry",
        )
        .user(source.superuser(), source.password())
        .start()
        .unwrap_or_else(|e| {
            eprintln!("bg-servers: cannot start pgbouncer: {e}");
            std::process::exit(2);
        });
    let mut vars = vec![
        ("SOURCE_URL", source.url("factory_telemetry")),
        ("TARGET_URL", target.url("factory_telemetry")),
        ("SOURCE_PORT", source.port().to_string()),
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
    if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &env_file)) {
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
