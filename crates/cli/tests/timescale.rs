//! TimescaleDB sources against real servers with the extension preloaded: what plan reports
//! of hypertables, compression, jobs and continuous aggregates, and what blocks. Each test
//! skips with one line when TimescaleDB is not installed (README, "TimescaleDB tests").

mod common;

use common::{bluegreen, code, stderr, stdout};
use serde_json::Value;
use testkit::Cluster;

const DB: &str = "plant";

/// Blue with a compressed hypertable, policies and a continuous aggregate; green empty with
/// the extension available.
fn timescale_pair() -> (Cluster, Cluster) {
    let start = || Cluster::builder().timescaledb().start().unwrap();
    let (blue, green) = (start(), start());
    blue.create_database(DB);
    green.create_database(DB);
    blue.sql(
        DB,
        "CREATE EXTENSION timescaledb;
         CREATE SCHEMA app;
         CREATE TABLE app.readings (id bigint, ts timestamptz NOT NULL, device int, v float8,
                                    PRIMARY KEY (id, ts));
         SELECT create_hypertable('app.readings', by_range('ts', interval '1 day'));
         INSERT INTO app.readings
           SELECT g, date_trunc('day', now()) - interval '20 days' + g * interval '10 min', g % 7, g
             FROM generate_series(1, 2000) g;
         ALTER TABLE app.readings SET (timescaledb.compress,
             timescaledb.compress_segmentby = 'device', timescaledb.compress_orderby = 'ts DESC');
         SELECT compress_chunk(c)
           FROM show_chunks('app.readings', older_than => now() - interval '15 days') c;
         SELECT add_compression_policy('app.readings', interval '7 days');
         SELECT add_retention_policy('app.readings', interval '90 days');
         CREATE MATERIALIZED VIEW app.readings_hourly WITH (timescaledb.continuous) AS
           SELECT time_bucket('1 hour', ts) AS bucket, device, avg(v) AS v
             FROM app.readings GROUP BY 1, 2 WITH NO DATA;
         SELECT add_continuous_aggregate_policy('app.readings_hourly',
             start_offset => interval '3 days', end_offset => interval '1 hour',
             schedule_interval => interval '1 hour');",
    );
    blue.sql(
        DB,
        "CALL refresh_continuous_aggregate('app.readings_hourly', NULL, date_trunc('day', now()) - interval '10 days')",
    );
    (blue, green)
}

fn plan_json(blue: &Cluster, green: &Cluster) -> (i32, Value) {
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&[
        "plan", "--json", "--schema", "app", "--source", &s, "--target", &t,
    ]);
    let doc = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(&o), stderr(&o)));
    (code(&o), doc)
}

fn codes(plan: &Value) -> Vec<&str> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect()
}

/// A green that offers TimescaleDB without preloading it blocks a hypertable source, also
/// when the target role may not read `shared_preload_libraries` (neither superuser nor
/// pg_read_all_settings): then whether TimescaleDB's settings are defined tells.
#[test]
fn a_target_without_timescaledb_preloaded_blocks_for_any_role() {
    if testkit::skip_without_timescaledb(
        "a_target_without_timescaledb_preloaded_blocks_for_any_role",
    ) {
        return;
    }
    let (blue, preloaded) = timescale_pair();
    drop(preloaded);
    let green = Cluster::new();
    green.create_database(DB);
    green.sql(DB, "CREATE ROLE green LOGIN PASSWORD 'green-pw'");
    let plain = format!(
        "postgresql://green:green-pw@127.0.0.1:{}/{DB}?sslmode=disable",
        green.port()
    );
    for target in [green.url(DB), plain] {
        let o = bluegreen(&[
            "plan",
            "--json",
            "--schema",
            "app",
            "--source",
            &blue.url(DB),
            "--target",
            &target,
        ]);
        let plan: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(&o), stderr(&o)));
        assert_eq!(code(&o), 1, "{plan:#}");
        assert_eq!(plan["target"]["preloads_timescaledb"], false, "{plan:#}");
        let f = plan["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "timescaledb-target")
            .unwrap_or_else(|| panic!("{plan:#}"));
        assert!(
            f["message"].as_str().unwrap().contains("not preloaded"),
            "{plan:#}"
        );
    }
}

#[test]
fn plan_reports_hypertables_compression_jobs_and_aggregates() {
    if testkit::skip_without_timescaledb("plan_reports_hypertables_compression_jobs_and_aggregates")
    {
        return;
    }
    let (blue, green) = timescale_pair();
    let (_, plan) = plan_json(&blue, &green);
    assert_eq!(plan["schemas"], serde_json::json!(["app"]), "{plan:#}");
    let hts = plan["hypertables"].as_array().unwrap();
    assert_eq!(
        hts.len(),
        1,
        "only the planned schema's hypertables: {hts:#?}"
    );
    let h = &hts[0];
    assert_eq!(h["name"], "readings");
    assert_eq!(h["dimensions"][0]["column"], "ts");
    assert_eq!(h["dimensions"][0]["interval"], "1 day");
    let chunks = h["chunks"].as_i64().unwrap();
    let compressed = h["compressed_chunks"].as_i64().unwrap();
    assert!(
        chunks >= 14 && compressed >= 4 && compressed < chunks,
        "{h:#}"
    );
    assert_eq!(h["compression_settings"]["segment_by"], "device");
    assert_eq!(h["compression_settings"]["order_by"], "ts DESC");
    let kinds: Vec<&str> = h["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["compression", "retention", "refresh"], "{h:#}");
    let refresh = &h["jobs"][2];
    assert_eq!(refresh["on"], "app.readings_hourly");
    assert_eq!(refresh["config"]["start_offset"], "3 days");

    let a = &plan["continuous_aggregates"][0];
    assert_eq!(a["name"], "readings_hourly");
    assert_eq!(a["hypertable"], "app.readings");
    assert!(
        a["definition"].as_str().unwrap().contains("time_bucket"),
        "{a:#}"
    );
    assert!(
        a["materialization"]
            .as_str()
            .unwrap()
            .starts_with("_timescaledb_internal._materialized_hypertable_"),
        "{a:#}"
    );
    assert!(
        a["watermark"].is_string(),
        "a refreshed aggregate has a watermark: {a:#}"
    );
    assert_eq!(plan["compression_markers"], true);
    // The hypertable and its aggregate migrate; its scheduled retention policy blocks
    // (a chunk dropped while sync is stopped could not be placed).
    let codes = codes(&plan);
    assert!(!codes.contains(&"hypertable"), "{plan:#}");
    assert!(!codes.contains(&"continuous-aggregate"), "{plan:#}");
    assert!(codes.contains(&"retention-policy"), "{plan:#}");

    // The human form says the same.
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["plan", "--schema", "app", "--source", &s, "--target", &t]);
    let text = stdout(&o);
    assert!(
        text.contains("compression: segment by device, order by ts DESC"),
        "{text}"
    );
    assert!(
        text.contains("continuous aggregate app.readings_hourly over app.readings"),
        "{text}"
    );
}

#[test]
fn markers_off_on_the_source_block() {
    if testkit::skip_without_timescaledb("markers_off_on_the_source_block") {
        return;
    }
    let (blue, green) = timescale_pair();
    blue.sql(
        DB,
        "ALTER SYSTEM SET timescaledb.enable_compression_wal_markers = off",
    );
    blue.sql(DB, "SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (exit, plan) = plan_json(&blue, &green);
    assert_eq!(exit, 1);
    assert_eq!(plan["compression_markers"], false);
    let f = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "timescaledb-markers")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .contains("enable_compression_wal_markers = on"));
}

fn profile_path() -> String {
    format!(
        "{}/../../fixtures/ms5-profile.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Blue as MS5's (the extension installed, the fixture's plain tables) at `scale`, copied to
/// green by `fixtures/ms5-profile.toml`.
fn copied_by_the_ms5_profile(scale: f64) -> (Cluster, Cluster) {
    const FT: &str = "factory_telemetry";
    let start = || Cluster::builder().timescaledb().start().unwrap();
    let (blue, green) = (start(), start());
    common::load_fixture_after(&blue, &green, scale, "CREATE EXTENSION timescaledb");
    blue.sql(
        FT,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    let (s, t) = (blue.url(FT), green.url(FT));
    let profile = profile_path();
    let o = bluegreen(&[
        "copy",
        "--schema",
        FT,
        "--profile",
        &profile,
        "--source",
        &s,
        "--target",
        &t,
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    (blue, green)
}

/// MS5's case: a plain source (the extension installed, no hypertables) whose time-series
/// tables become hypertables on green by `fixtures/ms5-profile.toml`; then sync under the
/// plant workload and verify.
#[test]
fn the_fixture_becomes_hypertables_by_the_ms5_profile() {
    if testkit::skip_without_timescaledb("the_fixture_becomes_hypertables_by_the_ms5_profile") {
        return;
    }
    const FT: &str = "factory_telemetry";
    let (blue, green) = copied_by_the_ms5_profile(0.01);
    let (s, t) = (blue.url(FT), green.url(FT));

    let intervals = green.sql(
        FT,
        "SELECT string_agg(hypertable_name || ' ' || time_interval, ', ' ORDER BY hypertable_name)
           FROM timescaledb_information.dimensions WHERE hypertable_schema = 'factory_telemetry'",
    );
    assert_eq!(
        intervals,
        "energy_consumption 1 day, metric_hist 01:00:00, oee_calculations 1 day, \
         production_context_history 1 day, production_kpis 1 day"
    );
    let key = green.sql(
        FT,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = 'factory_telemetry.metric_hist'::regclass AND contype = 'p'",
    );
    assert_eq!(key, "PRIMARY KEY (id, ts)");
    // The small tables' keys were built on the empty hypertables, before the data (adding
    // one to thousands of chunks afterwards costs seconds).
    let early = green.sql(
        FT,
        "SELECT detail -> 'keys_before_data' FROM bluegreen.audit WHERE step = 'schema'",
    );
    assert!(early.contains("production_kpis_pkey"), "{early}");
    let kpis_key = green.sql(
        FT,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = 'factory_telemetry.production_kpis'::regclass AND contype = 'p'",
    );
    assert_eq!(kpis_key, "PRIMARY KEY (id, kpi_date)");
    // Compression and retention for five tables, refresh for two aggregates: all paused.
    let jobs = green.sql(
        FT,
        "SELECT count(*) || ' ' || count(*) FILTER (WHERE scheduled)
           FROM timescaledb_information.jobs WHERE job_id >= 1000",
    );
    assert_eq!(jobs, "12 0", "policies present and paused");
    // No policy ran before it was paused: green still holds every row, however old (the
    // fixture's telemetry is older than the 90-day retention).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let count = "SELECT count(*) FROM factory_telemetry.metric_hist";
    assert_eq!(green.sql(FT, count), blue.sql(FT, count));
    let runs = green.sql(
        FT,
        "SELECT count(*) FROM timescaledb_information.job_stats WHERE job_id >= 1000 AND total_runs > 0",
    );
    assert_eq!(runs, "0", "a policy ran on green before cutover");
    let st = bluegreen(&["status", "--json", "--target", &t]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        st["timescaledb_policies"],
        serde_json::json!({"started": 0, "paused": 12})
    );
    // The aggregates hold what their query computes on blue.
    let hourly =
        "SELECT bucket, line_id, round(oee, 6) FROM factory_telemetry.oee_hourly ORDER BY 1, 2";
    let on_blue =
        "SELECT time_bucket('1 hour', calculation_time) AS bucket, line_id, round(avg(oee), 6)
                     FROM factory_telemetry.oee_calculations GROUP BY 1, 2 ORDER BY 1, 2";
    let rows = green.sql(FT, hourly);
    assert!(!rows.is_empty());
    assert_eq!(rows, blue.sql(FT, on_blue));

    // Sync under the plant workload into the hypertables, then verify through their parents.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let sync = common::spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    let ledger = dir.path().join("ledger");
    common::workload(s.clone(), 6, 300.0, ledger.clone(), 1)
        .join()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
        if code(&o) == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}{}",
            stdout(&o),
            stderr(&o)
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    drop(sync);
    common::check_ledger(&t, &ledger);

    // abort --drop-data takes the hypertables with what TimescaleDB made for them (chunks,
    // compressed chunks, the aggregates and their materializations), the schema and the
    // extension the run created.
    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        green.sql(
            FT,
            "SELECT to_regnamespace('factory_telemetry') IS NULL,
                    to_regnamespace('_timescaledb_internal') IS NULL"
        ),
        "t|t"
    );
}

/// A profile that names what does not exist, or an interval PostgreSQL cannot read, is
/// refused before anything is touched, naming its line.
#[test]
fn bad_profiles_are_refused_naming_the_line() {
    const FT: &str = "factory_telemetry";
    let (blue, green) = common::fixture_pair();
    let (s, t) = (blue.url(FT), green.url(FT));
    let dir = tempfile::tempdir().unwrap();
    let head = "# ms5\n\n[[hypertable]]\n";
    for (body, line, cause) in [
        ("table = \"factory_telemetry.nope\"\ntime_column = \"ts\"\nchunk_interval = \"1 hour\"\n", 4, "not among the planned tables"),
        ("table = \"factory_telemetry.metric_hist\"\ntime_column = \"tz\"\nchunk_interval = \"1 hour\"\n", 5, "has no column tz"),
        ("table = \"factory_telemetry.metric_hist\"\ntime_column = \"ts\"\nchunk_interval = \"1 fortnight\"\nprimary_key = [\"id\", \"ts\"]\n", 6, "is not an interval"),
        ("table = \"factory_telemetry.metric_hist\"\ntime_column = \"ts\"\nchunk_interval = \"1 hour\"\n", 4, "lacks the time column"),
        ("table = \"factory_telemetry.metric_hist\"\ntime_column = \"ts\"\nchunk_interval = \"1 hour\"\nprimary_key = [\"ts\"]\n", 7, "must hold the source's key"),
        ("table = \"factory_telemetry.metric_hist\"\ntime_colum = \"ts\"\n", 5, "unknown field"),
    ] {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, format!("{head}{body}")).unwrap();
        let profile = path.to_str().unwrap();
        for cmd in ["plan", "copy"] {
            let o = bluegreen(&[cmd, "--profile", profile, "--source", &s, "--target", &t]);
            let err = stderr(&o);
            assert_eq!(code(&o), 2, "{body}: {err}");
            assert!(err.contains(&format!("line {line}:")), "{body}: {err}");
            assert!(err.contains(cause), "{body}: {err}");
            assert!(err.lines().any(|l| l.starts_with("hint:")), "{err}");
        }
    }
    // Nothing was touched on either side.
    assert_eq!(
        blue.sql(FT, "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(blue.sql(FT, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        green.sql(FT, "SELECT count(*) FROM pg_namespace WHERE nspname <> 'public' AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"),
        "0"
    );
}

/// Green's paused policies start when cutover hands it the traffic and pause again when
/// rollback takes it back.
#[test]
fn cutover_starts_green_policies_and_rollback_pauses_them() {
    if testkit::skip_without_timescaledb("cutover_starts_green_policies_and_rollback_pauses_them")
        || !testkit::pgbouncer_available()
    {
        return;
    }
    const FT: &str = "factory_telemetry";
    let (blue, green) = copied_by_the_ms5_profile(0.005);
    let (s, t) = (blue.url(FT), green.url(FT));
    let pooler = testkit::Pgbouncer::builder()
        .database(FT, "127.0.0.1", blue.port(), FT)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let pooler_arg = format!(
        "admin={},db={FT},file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let started = || {
        green.sql(
            FT,
            "SELECT count(*) FILTER (WHERE scheduled) || '/' || count(*)
               FROM timescaledb_information.jobs WHERE job_id >= 1000",
        )
    };
    assert_eq!(started(), "0/12");
    let fwd = common::spawn_bluegreen(
        &["sync", "--source", &s, "--target", &t],
        &dir.path().join("fwd.log"),
    );
    let flip = |verb: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let o = bluegreen(&[
                verb,
                "--source",
                &s,
                "--target",
                &t,
                "--pooler",
                &pooler_arg,
                "--no-verify-check",
            ]);
            // Until the applier has registered and caught up, the guardrails refuse.
            if code(&o) == 0 || std::time::Instant::now() > deadline {
                return o;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    };
    let o = flip("cutover");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(started(), "12/12", "cutover starts green's policies");
    let rev = common::spawn_bluegreen(
        &["sync", "--reverse", "--source", &s, "--target", &t],
        &dir.path().join("rev.log"),
    );
    // Green's writes to its hypertables (under chunk names) reach blue, and refreshing an
    // aggregate on green (deletes from its materialization's chunks) still works.
    green.sql(
        FT,
        "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_int)
         SELECT metric_def_id, now(), 424242 FROM factory_telemetry.metric_hist LIMIT 1;
         DELETE FROM factory_telemetry.oee_calculations
          WHERE id = (SELECT min(id) FROM factory_telemetry.oee_calculations)",
    );
    green.sql(
        FT,
        "CALL refresh_continuous_aggregate('factory_telemetry.oee_hourly', NULL, NULL)",
    );
    let reached = "SELECT count(*) FILTER (WHERE value_int = 424242)
                     FROM factory_telemetry.metric_hist";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blue.sql(FT, reached) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "green's hypertable row never reached blue: {}",
            std::fs::read_to_string(dir.path().join("rev.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let oee = "SELECT count(*) FROM factory_telemetry.oee_calculations";
    assert_eq!(blue.sql(FT, oee), green.sql(FT, oee));
    // Green drops its oldest metric_hist chunk: blue (plain) loses the same rows.
    let bound = green.sql(
        FT,
        "SELECT min(range_end) FROM timescaledb_information.chunks
          WHERE hypertable_schema = 'factory_telemetry' AND hypertable_name = 'metric_hist'",
    );
    let older = format!(
        "SELECT count(*) FROM factory_telemetry.metric_hist WHERE ts < '{bound}'::timestamptz"
    );
    assert_ne!(blue.sql(FT, &older), "0", "rows to drop");
    green.sql(
        FT,
        &format!("SELECT count(*) FROM drop_chunks('factory_telemetry.metric_hist', older_than => '{bound}'::timestamptz)"),
    );
    let all = "SELECT count(*) FROM factory_telemetry.metric_hist";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blue.sql(FT, &older) != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "green's dropped chunk never reached blue: {}",
            std::fs::read_to_string(dir.path().join("rev.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(blue.sql(FT, all), green.sql(FT, all));
    let o = flip("rollback");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(started(), "0/12", "rollback pauses them again");
    drop(rev);
    drop(fwd);
}
