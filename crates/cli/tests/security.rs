//! A canary password, on every connection of a whole migration (and the pooler's admin
//! password), never leaves the connection:
//! not in any command's output or logs (human or JSON), its errors, the report, /metrics,
//! the process's command line, the state schema or anything else in either database, the
//! pooler's databases file, or either server's log.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bluegreen, code, free_addr, http_get, publishable_pair_at, stderr, stdout};
use testkit::{Cluster, Pgbouncer};

const DB: &str = "factory_telemetry";
/// Only letters and digits: percent-encoding or quoting would leave it as it is.
const CANARY: &str = "Cnry5d81f0c2e7a94b36";

fn canary_url(pg: &Cluster, password: &str) -> String {
    format!(
        "postgresql://canary:{password}@127.0.0.1:{}/{DB}?sslmode=disable",
        pg.port()
    )
}

/// Everything a place showed, by name, to be searched for the canary.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    fn output(&mut self, what: &str, o: &std::process::Output) {
        self.add(format!("{what}: stdout"), stdout(o));
        self.add(format!("{what}: stderr"), stderr(o));
    }

    fn files(&mut self, dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                self.files(&path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                self.add(
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
    }

    fn database(&mut self, pg: &Cluster, name: &str) {
        let out = Command::new(testkit::pg_bin("pg_dump"))
            .args(["--data-only", "--no-password"])
            .arg(pg.url(DB))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.add(
            format!("{name}: pg_dump --data-only"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );
        self.add(format!("{name}: server log"), pg.log());
    }

    /// The places that show one of `secrets`.
    fn leaks(&self, secrets: &[&str]) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, text)| secrets.iter().any(|s| text.contains(s)))
            .map(|(place, _)| place.as_str())
            .collect()
    }
}

#[test]
fn a_canary_password_never_leaves_the_connection() {
    let (blue, green) = publishable_pair_at(0.005);
    for pg in [&blue, &green] {
        pg.sql(
            DB,
            &format!("CREATE ROLE canary LOGIN SUPERUSER REPLICATION PASSWORD '{CANARY}'"),
        );
    }
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let pooler_arg = format!(
        "admin={},db={DB},file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    let (s, t) = (canary_url(&blue, CANARY), canary_url(&green, CANARY));
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let mut seen = Seen::default();

    // The whole migration, logging JSON, with /metrics scraped while it runs.
    let addr = free_addr();
    let log = dir.path().join("run.log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args([
            "run",
            "--source",
            &s,
            "--target",
            &t,
            "--pooler",
            &pooler_arg,
        ])
        .args(["--until", "cutover", "--log-format", "json"])
        .args(["--metrics-addr", &addr, "--report-dir"])
        .arg(&report_dir)
        .stdout(std::fs::File::create(dir.path().join("run.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut scrapes = 0;
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "run did not finish: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        for path in ["/metrics", "/healthz", "/readyz"] {
            if let Some((_, body)) = http_get(&addr, path) {
                scrapes += 1;
                seen.add(format!("run: {path}"), body);
            }
        }
        // Once it serves metrics its flags are parsed and its command line scrubbed (until
        // then `ps` can show it, as the README says: prefer PGPASSWORD or ~/.pgpass).
        if scrapes > 0 {
            if let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", run.id())) {
                seen.add("run: /proc/PID/cmdline", String::from_utf8_lossy(&cmdline));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(scrapes > 0, "the metrics address never answered");
    seen.files(dir.path());
    seen.add(
        "pooler databases file",
        std::fs::read_to_string(pooler.databases_file()).unwrap(),
    );

    // The commands an operator runs around it.
    for (what, args) in [
        ("status", vec!["status", "--target", &t]),
        ("report", vec!["report", "--target", &t, "--report-dir"]),
        ("plan", vec!["plan", "--source", &s, "--target", &t]),
    ] {
        let mut args = args.clone();
        let again = dir.path().join("report-again");
        let again = again.to_str().unwrap();
        if what == "report" {
            args.push(again);
        }
        let o = bluegreen(&args);
        seen.output(what, &o);
    }
    seen.files(&dir.path().join("report-again"));

    // Errors: nothing listening, a wrong password (that starts with the canary), a URI and a
    // key=value string that do not parse, a config file with a bad key.
    let closed = free_addr();
    let closed_port = closed.rsplit_once(':').unwrap().1;
    let unreachable = format!("postgresql://canary:{CANARY}@127.0.0.1:{closed_port}/{DB}");
    let wrong = canary_url(&blue, &format!("{CANARY}x"));
    let bad_uri = format!("postgresql://canary:{CANARY}@127.0.0.1:99999999/{DB}");
    let bad_kv = format!("host=127.0.0.1 user=canary password='{CANARY}");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!("source = \"{s}\"\ntarget = \"{t}\"\n[verify]\nchunk_sise = 3\n"),
    )
    .unwrap();
    for (what, args) in [
        (
            "unreachable source",
            vec!["plan", "--source", &unreachable, "--target", &t],
        ),
        (
            "wrong password",
            vec!["verify", "--source", &wrong, "--target", &t],
        ),
        (
            "malformed URI",
            vec!["copy", "--source", &bad_uri, "--target", &t],
        ),
        (
            "malformed key=value",
            vec!["sync", "--source", &bad_kv, "--target", &t],
        ),
        (
            "bad config file",
            vec!["verify", "--config", config.to_str().unwrap()],
        ),
    ] {
        let o = bluegreen(&args);
        assert_ne!(code(&o), 0, "{what}: {}", stdout(&o));
        assert!(!stderr(&o).trim().is_empty(), "{what}: no error shown");
        seen.output(what, &o);
    }

    // What stays on the servers.
    seen.database(&blue, "blue");
    seen.database(&green, "green");

    // The search finds what is there (the connection strings given above hold them).
    let admin_password = pooler.admin_url();
    let admin_password = admin_password
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, password)| password)
        .unwrap();
    assert!(pooler_arg.contains(admin_password) && s.contains(CANARY));
    let leaks = seen.leaks(&[CANARY, admin_password]);
    assert!(leaks.is_empty(), "the password shows in: {leaks:#?}");
}

/// A source role that is not superuser (REPLICATION, CREATE on the database, owning the
/// planned tables) migrates them: plan warns that its publication lists the tables (tables
/// created later are not replicated) and blocks while it does not own one of them (naming
/// it) or may not create the publication; copy, sync and
/// verify then work with it, and the publication lists exactly the planned tables.
#[test]
fn a_source_role_that_is_not_superuser_migrates_the_tables_it_owns() {
    let (blue, green) = publishable_pair_at(0.002);
    blue.sql(
        DB,
        "CREATE ROLE mover LOGIN REPLICATION PASSWORD 'mover-pw';
         GRANT USAGE ON SCHEMA factory_telemetry TO mover;
         DO $$ DECLARE r record; BEGIN
           FOR r IN SELECT c.oid::regclass AS t FROM pg_class c
                      JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'factory_telemetry' AND c.relkind IN ('r', 'p', 'S')
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
           LOOP EXECUTE format('ALTER TABLE %s OWNER TO mover', r.t); END LOOP;
         END $$;
         ALTER TABLE factory_telemetry.production_lines OWNER TO postgres",
    );
    let s = format!(
        "postgresql://mover:mover-pw@127.0.0.1:{}/{DB}?sslmode=disable",
        blue.port()
    );
    let t = green.url(DB);

    let o = bluegreen(&["plan", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("source-publication-rights"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("factory_telemetry.production_lines"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("OWNER TO \"mover\""), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("source-create-rights"),
        "{}",
        stdout(&o)
    );

    blue.sql(
        DB,
        "ALTER TABLE factory_telemetry.production_lines OWNER TO mover;
         GRANT CREATE ON DATABASE factory_telemetry TO mover",
    );
    let o = bluegreen(&["plan", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("publication-lists-tables"),
        "{}",
        stdout(&o)
    );

    // The schema names mover as owner: refused before anything is made while green lacks it.
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the target has no role \"mover\"")
            && stderr(&o).contains("CREATE ROLE \"mover\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        blue.sql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(blue.sql(DB, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        green.sql(DB, "SELECT to_regnamespace('factory_telemetry') IS NULL"),
        "t"
    );
    green.sql(DB, "CREATE ROLE mover");

    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let planned = blue.sql(
        DB,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'factory_telemetry' AND c.relkind IN ('r', 'p')",
    );
    assert_eq!(
        blue.sql(
            DB,
            "SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = 'bluegreen_main'"
        ),
        planned
    );

    blue.sql(
        DB,
        "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('LP1', 'least privilege')",
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let sync = common::spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    common::wait_caught_up(&green, "main", &blue, Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(common::stop_sync(sync).success());
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        green.sql(
            DB,
            "SELECT count(*) FROM factory_telemetry.production_lines WHERE line_code = 'LP1'"
        ),
        "1"
    );
}

/// TLS with `sslmode=verify-full` end to end: source, target (their SQL and replication
/// connections: the role may not connect without TLS) and the pooler's admin console, through
/// a whole `run` to cutover; a certificate from another CA is refused, naming the problem.
#[test]
fn tls_verify_full_end_to_end() {
    let tls_only = || {
        Cluster::builder()
            .tls()
            .hba_line("hostnossl all tlsuser 127.0.0.1/32 reject")
            .hba_line("hostnossl replication tlsuser 127.0.0.1/32 reject")
            .start()
            .unwrap()
    };
    let (blue, green) = (tls_only(), tls_only());
    common::load_fixture_after(&blue, &green, 0.002, "");
    blue.sql(
        DB,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    for pg in [&blue, &green] {
        pg.sql(
            DB,
            "CREATE ROLE tlsuser LOGIN SUPERUSER REPLICATION PASSWORD 'tls-pw'",
        );
    }
    let ca = |pg: &Cluster| pg.ca_cert().unwrap().display().to_string();
    let url = |pg: &Cluster, ca: &str| {
        format!(
            "postgresql://tlsuser:tls-pw@localhost:{}/{DB}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
            pg.port()
        )
    };
    let certs = blue.ca_cert().unwrap().parent().unwrap().to_path_buf();
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .setting("client_tls_sslmode", "allow")
        .setting(
            "client_tls_cert_file",
            &certs.join("server.crt").display().to_string(),
        )
        .setting(
            "client_tls_key_file",
            &certs.join("server.key").display().to_string(),
        )
        .start()
        .unwrap();
    let admin = pooler
        .admin_url()
        .replace("@127.0.0.1:", "@localhost:")
        .replace(
            "sslmode=disable",
            &format!(
                "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
                ca(&blue)
            ),
        );
    let pooler_arg = format!(
        "admin={admin},db={DB},file={}",
        pooler.databases_file().display()
    );

    // Blue's certificate checked against green's CA: refused, nothing made.
    let o = bluegreen(&[
        "plan",
        "--source",
        &url(&blue, &ca(&green)),
        "--target",
        &url(&green, &ca(&green)),
    ]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let o = bluegreen(&[
        "run",
        "--source",
        &url(&blue, &ca(&blue)),
        "--target",
        &url(&green, &ca(&green)),
        "--pooler",
        &pooler_arg,
        "--until",
        "cutover",
        "--report-dir",
        report_dir.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        std::fs::read_to_string(pooler.databases_file())
            .unwrap()
            .contains(&format!("port={}", green.port())),
        "the pooler does not point at green"
    );
}
