//! `bluegreen plan` against real servers: the fixture, every blocker kind, every trouble kind,
//! and passwords kept out of all output.

mod common;

use std::collections::BTreeSet;

use common::{bluegreen, bluegreen_env, code, fixture_pair, stderr, stdout};
use serde_json::Value;
use testkit::Cluster;

fn plan_json(source: &str, target: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["plan", "--json", "--source", source, "--target", target];
    args.extend_from_slice(extra);
    let o = bluegreen(&args);
    let json = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&o), stderr(&o)));
    (code(&o), json, stderr(&o))
}

fn codes(plan: &Value, severity: &str) -> BTreeSet<String> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fixture_plan_lists_every_table_and_blocks_only_on_the_no_pk_table() {
    let (source, target) = fixture_pair();
    let (exit, plan, err) = plan_json(
        &source.url("factory_telemetry"),
        &target.url("factory_telemetry"),
        &[],
    );
    assert_eq!(exit, 1, "blockers mean exit 1: {err}");
    assert_eq!(plan["format"], 1);
    assert_eq!(
        plan["schemas"],
        serde_json::json!(["factory_telemetry", "public"])
    );

    let tables = plan["tables"].as_array().unwrap();
    let listed: BTreeSet<String> = tables
        .iter()
        .map(|t| {
            let (s, n) = (t["schema"].as_str().unwrap(), t["name"].as_str().unwrap());
            if n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                format!("{s}.{n}")
            } else {
                format!("{s}.\"{n}\"")
            }
        })
        .collect();
    let expected: BTreeSet<String> = fixtures::TABLES.iter().map(|t| t.to_string()).collect();
    assert_eq!(listed, expected);
    for t in tables {
        assert!(t["bytes"].as_i64().unwrap() > 0, "{t}");
        let has_pk = t["primary_key"].is_array();
        let is_no_pk = format!(
            "{}.{}",
            t["schema"].as_str().unwrap(),
            t["name"].as_str().unwrap()
        ) == fixtures::NO_PK_TABLE;
        assert_eq!(has_pk, !is_no_pk, "{}", t["name"]);
    }
    let hist = tables.iter().find(|t| t["name"] == "metric_hist").unwrap();
    assert_eq!(hist["primary_key"], serde_json::json!(["id"]));
    assert!(hist["estimated_rows"].as_i64().unwrap() > 0);

    // Exactly one finding: the no-PK table, with the statement that fixes it.
    let findings = plan["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["code"], "no-replica-identity");
    assert_eq!(findings[0]["subject"], fixtures::NO_PK_TABLE);
    let fix = findings[0]["fix"].as_str().unwrap().to_string();
    assert_eq!(
        fix,
        "ALTER TABLE \"factory_telemetry\".\"sensor_raw_log\" REPLICA IDENTITY FULL;"
    );

    // Sequences of the BIGSERIAL/identity columns are listed.
    assert!(plan["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "metric_hist_id_seq"));
    assert!(!plan["materialized_views"].as_array().unwrap().is_empty());

    // Running the fix clears the plan: exit 0, and the human report says so.
    source.sql("factory_telemetry", &fix);
    let o = bluegreen(&[
        "plan",
        "--source",
        &source.url("factory_telemetry"),
        "--target",
        &target.url("factory_telemetry"),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("result: nothing blocks this migration"),
        "{text}"
    );
    assert!(text.contains("factory_telemetry.metric_hist"), "{text}");
    assert!(text.contains("primary key (id)"), "{text}");
}

#[test]
fn every_blocker_kind_is_found() {
    let source = Cluster::builder()
        .setting("wal_level", "replica")
        .setting("max_replication_slots", "1")
        .setting("max_wal_senders", "1")
        .start()
        .unwrap();
    let target = Cluster::new();
    source.create_database("app");
    target.create_database("app");
    source.sql(
        "app",
        "CREATE ROLE mover LOGIN PASSWORD 'mover-pw';
         CREATE SCHEMA s AUTHORIZATION mover;
         CREATE TABLE s.keyed (id int PRIMARY KEY, v text);
         CREATE TABLE s.nokey (v text);
         CREATE TABLE s.nothing (id int PRIMARY KEY); ALTER TABLE s.nothing REPLICA IDENTITY NOTHING;
         CREATE UNLOGGED TABLE s.scratch (id int PRIMARY KEY);
         CREATE TABLE s.secret (id int PRIMARY KEY);
         ALTER TABLE s.keyed OWNER TO mover; ALTER TABLE s.nokey OWNER TO mover;
         ALTER TABLE s.nothing OWNER TO mover; ALTER TABLE s.scratch OWNER TO mover;
         SELECT lo_create(4242);
         CREATE EXTENSION postgres_fdw;
         CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw;
         CREATE FOREIGN TABLE s.remote_t (id int) SERVER remote;
         GRANT SELECT ON s.remote_t TO mover;",
    );
    target.sql(
        "app",
        "CREATE ROLE green LOGIN PASSWORD 'green-pw';
         REVOKE CREATE ON DATABASE app FROM PUBLIC;
         CREATE SCHEMA s; CREATE TABLE s.keyed (id int PRIMARY KEY);",
    );
    let src = format!(
        "postgresql://mover:mover-pw@127.0.0.1:{}/app?sslmode=disable",
        source.port()
    );
    let tgt = format!(
        "postgresql://green:green-pw@127.0.0.1:{}/app?sslmode=disable",
        target.port()
    );
    let (exit, plan, err) = plan_json(&src, &tgt, &[]);
    assert_eq!(exit, 1, "{err}");
    let expected: BTreeSet<String> = [
        "wal-level",
        "replication-slots",
        "wal-senders",
        "source-replication-role",
        "source-publication-rights",
        "source-create-rights",
        "source-select",
        "target-create-rights",
        "target-apply-rights",
        "target-not-empty",
        "no-replica-identity",
        "unlogged-table",
        "large-objects",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(codes(&plan, "blocker"), expected, "{plan:#}");
    assert_eq!(
        codes(&plan, "warning"),
        BTreeSet::from(["foreign-table".to_string()])
    );
    let no_ri: Vec<&str> = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "no-replica-identity")
        .map(|f| f["subject"].as_str().unwrap())
        .collect();
    assert_eq!(no_ri, ["s.nokey", "s.nothing"]);
    let ext = &plan["extensions"][0];
    assert_eq!(
        (ext["name"].as_str(), ext["available_on_target"].as_bool()),
        (Some("postgres_fdw"), Some(true))
    );

    // Migrating a database onto itself is refused.
    let (exit, plan, _) = plan_json(&source.url("app"), &source.url("app"), &[]);
    assert_eq!(exit, 1);
    assert!(codes(&plan, "blocker").contains("same-database"));
}

#[test]
fn trouble_exits_2_with_cause_and_hint() {
    let pg = Cluster::new();
    let good = pg.url("postgres");
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!(
        "host=127.0.0.1 port={dead_port} user=x password=Dead-Secret dbname=x connect_timeout=2"
    );
    let wrong_pw = good.replace(pg.password(), "Wrong-Secret");
    let no_db = pg.url("no_such_db");
    let cfg_dir = tempfile::tempdir().unwrap();
    let bad_key = cfg_dir.path().join("bad_key.toml");
    std::fs::write(&bad_key, "sourse = \"host=x\"\n").unwrap();
    let bad_toml = cfg_dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "source = \n").unwrap();
    let missing = cfg_dir.path().join("missing.toml");

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["plan", "--source", &dead, "--target", &good],
            "source: cannot reach",
            "listens",
        ),
        (
            vec!["plan", "--source", &good, "--target", &wrong_pw],
            "target: authentication failed",
            "password",
        ),
        (
            vec!["plan", "--source", &no_db, "--target", &good],
            "database \"no_such_db\" does not exist",
            "create the database",
        ),
        (
            vec!["plan", "--target", &good],
            "no source connection given",
            "--source",
        ),
        (
            vec![
                "plan",
                "--source",
                "host=x sslmode=sometimes",
                "--target",
                &good,
            ],
            "unknown sslmode",
            "libpq URI",
        ),
        (
            vec!["plan", "--config", bad_key.to_str().unwrap()],
            "unknown field `sourse`",
            "source, target",
        ),
        (
            vec!["plan", "--config", bad_toml.to_str().unwrap()],
            "config file",
            "source, target",
        ),
        (
            vec!["plan", "--config", missing.to_str().unwrap()],
            "cannot read config file",
            "--config",
        ),
        (
            vec![
                "plan", "--source", &good, "--target", &good, "--schema", "nope",
            ],
            "schema \"nope\" does not exist",
            "--schema",
        ),
    ];
    for (args, cause, hint) in cases {
        let o = bluegreen(&args);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("error:") || l.starts_with("hint:"))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "{args:?}: one cause line and one hint line: {err}"
        );
        assert!(lines[0].contains(cause), "{args:?}: {err}");
        assert!(lines[1].contains(hint), "{args:?}: {err}");
        for secret in [pg.password(), "Dead-Secret", "Wrong-Secret"] {
            assert!(
                !err.contains(secret) && !stdout(&o).contains(secret),
                "{args:?} leaked: {err}"
            );
        }
    }
    // Usage errors are trouble too.
    assert_eq!(code(&bluegreen(&["plan", "--no-such-flag"])), 2);
}

#[test]
fn config_file_holds_settings_and_flags_win() {
    let (source, target) = (Cluster::new(), Cluster::new());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bluegreen.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\nlog_format = \"json\"\nschemas = [\"public\"]\n",
            source.url("postgres"),
            "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=2"
        ),
    )
    .unwrap();
    // The file's target is unreachable: trouble, as a JSON log line and the report.
    let o = bluegreen(&["plan", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("target: cannot reach"));
    // A flag beats the file.
    let o = bluegreen(&[
        "plan",
        "--config",
        cfg.to_str().unwrap(),
        "--target",
        &target.url("postgres"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("schemas: public"), "{}", stdout(&o));
}

#[test]
fn passwords_stay_out_of_output_logs_and_process_title() {
    let (source, target) = (Cluster::new(), Cluster::new());
    for args in [
        vec!["plan", "--json"],
        vec!["plan"],
        vec!["plan", "--log-format", "json"],
    ] {
        let mut a = args.clone();
        let (s, t) = (source.url("postgres"), target.url("postgres"));
        a.extend(["--source", &s, "--target", &t]);
        let o = common::bluegreen_env(&a, &[("RUST_LOG", "debug")]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!all.contains(source.password()), "{all}");
        assert!(all.contains("password=***"), "{all}");
    }

    // A listener that accepts and never answers keeps bluegreen waiting while we read its
    // command line from /proc.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let secret = "Title-Secret-42";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args([
            "plan",
            "--source",
            &format!("postgresql://u:{secret}@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=10"),
            "--target",
            &format!("host=127.0.0.1 port={port} user=u password={secret} dbname=db sslmode=disable connect_timeout=10"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_conn, _) = hang.accept().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("127.0.0.1"), "{cmdline}");
    assert!(
        !cmdline.contains(secret),
        "password visible in the process title: {cmdline}"
    );
    // A fixed mask: the title does not tell the password's length.
    assert!(cmdline.contains("u:***@127.0.0.1"), "{cmdline}");
    assert!(cmdline.contains("password=*** dbname"), "{cmdline}");
}

#[test]
fn help_documents_exit_codes() {
    for args in [vec!["--help"], vec!["plan", "--help"]] {
        let o = bluegreen(&args);
        assert_eq!(code(&o), 0);
        let text = stdout(&o);
        assert!(
            text.contains("Exit codes") && text.contains("2  trouble"),
            "{text}"
        );
    }
}

/// BLUEGREEN_SOURCE and BLUEGREEN_TARGET stand in for the flags (never shown by --help),
/// and logs written to a pipe carry no colour escapes.
#[test]
fn connections_from_the_environment_and_plain_logs() {
    let (source, target) = fixture_pair();
    let (s, t) = (
        source.url("factory_telemetry"),
        target.url("factory_telemetry"),
    );
    let env = [
        ("BLUEGREEN_SOURCE", s.as_str()),
        ("BLUEGREEN_TARGET", t.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let o = bluegreen_env(&["plan", "--json"], &env);
    assert_eq!(code(&o), 1, "the fixture's one blocker: {}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["source"]["database"], "factory_telemetry");
    let logs = stderr(&o);
    assert!(!logs.is_empty(), "debug logs expected");
    assert!(
        !logs.contains('\x1b'),
        "colour escapes in piped logs: {logs:?}"
    );

    let o = bluegreen_env(&["plan", "--help"], &env);
    let help = stdout(&o);
    assert!(help.contains("BLUEGREEN_SOURCE"), "{help}");
    assert!(!help.contains(source.password()), "{help}");
}

/// A command's table in the config file holds its flags (units allowed); flags win, and
/// unknown keys or bad values are trouble naming the setting.
#[test]
fn config_file_tables_hold_every_command_flag() {
    let (source, target) = (Cluster::new(), Cluster::new());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "source = \"{}\"\ntarget = \"{}\"\n{body}",
                source.url("postgres"),
                target.url("postgres")
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let cfg = write(
        "good.toml",
        "[plan]\njson = true\nschema = [\"nope\"]\n[copy]\nchunk_mb = \"1GB\"\n[cutover]\nmax_lag = \"500ms\"\n",
    );
    // [plan] json = true prints JSON; the file's schema does not exist (trouble) ...
    let o = bluegreen(&["plan", "--config", &cfg]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("schema \"nope\""), "{}", stderr(&o));
    // ... and a --schema flag beats it.
    let o = bluegreen(&["plan", "--config", &cfg, "--schema", "public"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).expect("[plan] json = true");
    assert_eq!(plan["schemas"], serde_json::json!(["public"]));

    for (body, cause, hint) in [
        (
            "[copy]\nchunk_size = 5\n",
            "[copy] has no setting `chunk_size`",
            "chunk_mb",
        ),
        (
            "[cutover]\nmax_lag = \"5 parsecs\"\n",
            "unknown unit",
            "fix that setting",
        ),
        (
            "[plan]\njson = \"yes\"\n",
            "[plan] json: takes true or false",
            "README",
        ),
        (
            "[plan]\nsource = \"x\"\n",
            "[plan] has no setting `source`",
            "json",
        ),
    ] {
        let cfg = write("bad.toml", body);
        let o = bluegreen(&["plan", "--config", &cfg]);
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "{body}: {err}");
        assert!(err.contains(cause), "{body}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("hint:") && l.contains(hint)),
            "{body}: {err}"
        );
    }
    // Units on the command line too.
    let o = bluegreen(&["verify", "--chunk-mb", "5 parsecs"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("kB, MB, GB or TB"), "{}", stderr(&o));
}

/// A transaction prepared on the source keeps the run's slot from being created (copy would
/// wait on it with no word): plan names it as a blocker with the fix.
#[test]
fn prepared_transactions_on_the_source_block() {
    let (source, target) = (Cluster::new(), Cluster::new());
    source.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'stuck';",
    );
    let (s, t) = (source.url("postgres"), target.url("postgres"));
    let (exit, plan, err) = plan_json(&s, &t, &[]);
    assert_eq!(exit, 1, "{err}");
    let f = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "prepared-transactions")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert!(f["message"].as_str().unwrap().contains("stuck"), "{f}");
    assert!(
        f["fix"].as_str().unwrap().contains("ROLLBACK PREPARED"),
        "{f}"
    );
    source.sql("postgres", "ROLLBACK PREPARED 'stuck'");
    let (exit, _, err) = plan_json(&s, &t, &[]);
    assert_eq!(exit, 0, "{err}");
}

/// Either/or flags are refused together, and a bad PGSSLMODE is blamed on the variable, not
/// on the connection string.
#[test]
fn contradictions_and_environment_mistakes_are_named() {
    let o = bluegreen(&[
        "cutover",
        "--verify-max-age",
        "10",
        "--no-verify-check",
        "--pooler",
        "admin=x,db=y,file=z",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));

    let o = bluegreen_env(
        &[
            "plan",
            "--source",
            "host=127.0.0.1 port=1 dbname=x",
            "--target",
            "host=127.0.0.1 port=1 dbname=x",
        ],
        &[("PGSSLMODE", "allow")],
    );
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(err.contains("environment variable PGSSLMODE"), "{err}");
    assert!(!err.contains("invalid connection string"), "{err}");
    assert!(err.contains("disable, prefer"), "{err}");
    assert!(err.contains("unset that variable"), "{err}");
}

/// A password file others can read is ignored, and said once per run, not per connection.
#[test]
fn an_open_password_file_is_reported_once() {
    use std::os::unix::fs::PermissionsExt;
    let (source, target) = (Cluster::new(), Cluster::new());
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pgpass");
    std::fs::write(&pass, "*:*:*:*:nothing\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = bluegreen_env(
        &[
            "plan",
            "--source",
            &source.dsn_no_password("postgres"),
            "--target",
            &target.dsn_no_password("postgres"),
        ],
        &[("PGPASSFILE", pass.to_str().unwrap())],
    );
    // Without a password the login fails (exit 2); the file was looked at for each side.
    let err = stderr(&o);
    assert_eq!(
        err.matches("password file has group or world access")
            .count(),
        1,
        "{err}"
    );
}
