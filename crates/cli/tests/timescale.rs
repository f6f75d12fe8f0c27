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
    assert!(codes(&plan).contains(&"hypertable"), "{plan:#}");

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
