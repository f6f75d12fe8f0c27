//! A source that already has TimescaleDB hypertables (compressed and uncompressed chunks, a
//! space dimension, integer time, policies) migrates as hypertables: green gets the same
//! dimensions before the data, the chunks compressed on blue compressed, the policies paused,
//! its continuous aggregate with blue's rows (some whose raw rows blue dropped) and
//! watermark; sync routes chunk changes to their hypertable, skips rows that compression
//! moves, applies blue's aggregate refreshes to green's aggregate and drops what blue drops.
//! Each test skips with one line when TimescaleDB is not installed.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, stderr, stdout};
use serde_json::Value;
use testkit::Cluster;

const DB: &str = "plant";

/// Blue: app.readings (time by day, 3 hash partitions on device, compressed before the last
/// week, NaN and infinities), app.counters (integer time with its now function, compressed
/// without segment by), app.notes (plain); compression,
/// reorder and retention policies, retention paused; side.log, a hypertable outside the run
/// without a key. Green: empty.
fn hypertable_pair() -> (Cluster, Cluster) {
    let start = || Cluster::builder().timescaledb().start().unwrap();
    let (blue, green) = (start(), start());
    blue.create_database(DB);
    green.create_database(DB);
    blue.sql(
        DB,
        "CREATE EXTENSION timescaledb;
         CREATE SCHEMA app;
         CREATE TABLE app.readings (id bigint NOT NULL, ts timestamptz NOT NULL, device int NOT NULL,
                                    v float8, r real, n numeric, note text,
                                    PRIMARY KEY (id, ts, device));
         SELECT create_hypertable('app.readings', by_range('ts', interval '1 day'));
         SELECT add_dimension('app.readings', by_hash('device', 3));
         CREATE INDEX readings_device_ts ON app.readings (device, ts DESC);
         INSERT INTO app.readings
           SELECT g, date_trunc('day', now()) - interval '20 days' + g * interval '10 min', g % 7,
                  CASE g % 50 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' ELSE g / 3.0 END,
                  CASE g % 60 WHEN 0 THEN 'NaN' WHEN 1 THEN '-Infinity' ELSE g / 7.0 END,
                  CASE g % 70 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' ELSE g / 9.0 END,
                  'row ' || g
             FROM generate_series(1, 2800) g;
         ALTER TABLE app.readings SET (timescaledb.compress,
             timescaledb.compress_segmentby = 'device', timescaledb.compress_orderby = 'ts DESC');
         SELECT compress_chunk(c)
           FROM show_chunks('app.readings', older_than => date_trunc('day', now()) - interval '12 days') c;
         SELECT add_compression_policy('app.readings', interval '7 days');
         SELECT add_reorder_policy('app.readings', 'readings_device_ts');
         SELECT alter_job(add_retention_policy('app.readings', interval '90 days'), scheduled => false);
         CREATE MATERIALIZED VIEW app.readings_daily WITH (timescaledb.continuous) AS
           SELECT time_bucket('1 day', ts) AS day, device, count(*) AS n, sum(v) AS v
             FROM app.readings GROUP BY 1, 2 WITH NO DATA;
         SELECT add_continuous_aggregate_policy('app.readings_daily', start_offset => NULL,
                  end_offset => interval '1 day', schedule_interval => interval '1 hour');
         CREATE TABLE app.counters (tick bigint NOT NULL, k int NOT NULL, v numeric,
                                    PRIMARY KEY (k, tick));
         SELECT create_hypertable('app.counters', by_range('tick', 1000));
         INSERT INTO app.counters SELECT g * 7, g % 5, g FROM generate_series(1, 1500) g;
         CREATE FUNCTION app.counters_now() RETURNS bigint LANGUAGE sql STABLE
           AS 'SELECT coalesce(max(tick), 0) FROM app.counters';
         SELECT set_integer_now_func('app.counters', 'app.counters_now');
         ALTER TABLE app.counters SET (timescaledb.compress);
         SELECT add_compression_policy('app.counters', compress_after => 5000::bigint);
         SELECT compress_chunk(c) FROM show_chunks('app.counters', older_than => 3000::bigint) c;
         CREATE TABLE app.notes (id int PRIMARY KEY, body text);
         INSERT INTO app.notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;
         CREATE SCHEMA side;
         CREATE TABLE side.log (ts timestamptz NOT NULL, msg text);
         SELECT create_hypertable('side.log', by_range('ts'));
         INSERT INTO side.log SELECT now() - g * interval '1 day', 'log ' || g
           FROM generate_series(1, 30) g;",
    );
    // Policies run on their own otherwise; the test compresses and refreshes by hand.
    blue.sql(
        DB,
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
          WHERE job_id >= 1000
            AND proc_name IN ('policy_compression', 'policy_refresh_continuous_aggregate')",
    );
    // The aggregate's refresh deletes from its materialization, which the run publishes
    // (plan's chunk-replica-identity blocker); then it is refreshed, and the oldest raw
    // day dropped: its aggregate rows stay on blue, and must reach green as they are.
    blue.sql(
        DB,
        "DO $$DECLARE m text; BEGIN
           SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
             INTO m FROM timescaledb_information.continuous_aggregates WHERE view_name = 'readings_daily';
           EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', m);
         END$$;",
    );
    blue.sql(
        DB,
        "CALL refresh_continuous_aggregate('app.readings_daily', NULL,
                                           date_trunc('day', now()) - interval '10 days')",
    );
    blue.sql(
        DB,
        "SELECT drop_chunks('app.readings', older_than => date_trunc('day', now()) - interval '19 days')",
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

fn finding<'a>(plan: &'a Value, code: &str) -> Option<&'a Value> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
}

/// The same query's text on both servers.
fn same(blue: &Cluster, green: &Cluster, query: &str) -> String {
    let b = blue.sql(DB, query);
    assert_eq!(b, green.sql(DB, query), "{query}");
    b
}

const DIMENSIONS: &str = "SELECT string_agg(concat_ws(' ', hypertable_name, dimension_number, column_name,
                              column_type, dimension_type, time_interval, integer_interval,
                              integer_now_func, num_partitions),
                              ', ' ORDER BY hypertable_name, dimension_number)
                            FROM timescaledb_information.dimensions WHERE hypertable_schema = 'app'";

/// Chunks by time range and whether compressed (space slices match when dimensions do).
const CHUNKS: &str =
    "SELECT string_agg(concat_ws(' ', hypertable_name, range_start, range_start_integer,
                              is_compressed), ', '
                                         ORDER BY hypertable_name, range_start, range_start_integer,
                                                  is_compressed)
                        FROM timescaledb_information.chunks WHERE hypertable_schema = 'app'";

/// Chunk ranges per hypertable, compressed or not (green compresses on its own schedule).
const RANGES: &str = "SELECT string_agg(concat_ws(' ', hypertable_name, range_start, range_end,
                                            range_start_integer, range_end_integer), ', '
                                  ORDER BY hypertable_name, range_start, range_start_integer)
                        FROM timescaledb_information.chunks WHERE hypertable_schema = 'app'";

const WATERMARK: &str = "SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id))
                           FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = 'readings_daily'";

const JOBS: &str = "SELECT string_agg(concat_ws(' ', hypertable_name, proc_name, schedule_interval,
                           config - 'hypertable_id'), ', ' ORDER BY hypertable_name, proc_name)
                      FROM timescaledb_information.jobs WHERE job_id >= 1000
                       AND proc_name <> 'policy_refresh_continuous_aggregate'";

/// The aggregate's refresh policy, its materialization's id aside.
const REFRESH_JOB: &str = "SELECT schedule_interval, config - 'mat_hypertable_id'
                             FROM timescaledb_information.jobs
                            WHERE proc_name = 'policy_refresh_continuous_aggregate'";

const ORDERED: [&str; 4] = [
    "SELECT * FROM app.readings ORDER BY id, ts, device",
    "SELECT * FROM app.readings_daily ORDER BY day, device",
    "SELECT * FROM app.counters ORDER BY k, tick",
    "SELECT * FROM app.notes ORDER BY id",
];

/// Verify until EQUAL; the sync log (`log`) is shown if it never is.
fn verify_equal_within(s: &str, t: &str, limit: Duration, log: &std::path::Path) {
    let deadline = Instant::now() + limit;
    loop {
        let o = bluegreen(&["verify", "--source", s, "--target", t]);
        if code(&o) == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}{}\nsync log:\n{}",
            stdout(&o),
            stderr(&o),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Transaction `i` of the load: inserts (recent, into compressed chunks, into a new chunk),
/// updates and deletes of rows in compressed and uncompressed chunks (NaN and infinities
/// among the values), integer-time rows, some in one multi-statement transaction.
fn load_step(blue: &Cluster, i: u32) {
    let base = "date_trunc('day', now()) - interval '20 days'";
    let sql = match i % 9 {
        0 => format!(
            "INSERT INTO app.readings VALUES ({id}, {base} + interval '15 days' + {i} * interval '1 min',
                                              {i} % 7, 'NaN', '-Infinity', 'Infinity', 'new')",
            id = 10_000 + i
        ),
        1 => format!(
            "INSERT INTO app.readings VALUES ({id}, {base} + interval '2 days' + {i} * interval '1 min',
                                              {i} % 7, {i}, {i}, {i}, 'into compressed')",
            id = 20_000 + i
        ),
        2 => format!(
            "UPDATE app.readings SET v = v + 1, note = 'updated compressed' WHERE id = {}",
            (i * 13) % 1100 + 1
        ),
        3 => format!(
            "UPDATE app.readings SET v = 'Infinity', r = 'NaN', n = '-Infinity' WHERE id = {}",
            1500 + i
        ),
        4 => format!("DELETE FROM app.readings WHERE id = {}", 300 + i * 3),
        5 => format!("DELETE FROM app.readings WHERE id = {}", 2000 + i),
        6 => format!(
            "INSERT INTO app.counters VALUES ({tick}, {k}, 'NaN');
             UPDATE app.counters SET v = v * 2 WHERE tick = {upd};
             DELETE FROM app.counters WHERE tick = {del}",
            tick = 20_000 + i,
            k = i % 5,
            upd = 7 * (i + 1),
            del = 7 * (i + 500)
        ),
        7 => format!(
            "BEGIN;
             INSERT INTO app.readings VALUES ({id}, {base} + interval '25 days' + {i} * interval '1 s',
                                              1, 1, 1, 1, 'new chunk');
             UPDATE app.readings SET note = 'in a transaction' WHERE id = {upd};
             DELETE FROM app.readings WHERE id = {del};
             UPDATE app.notes SET body = 'changed' WHERE id = {note};
             COMMIT;",
            id = 30_000 + i,
            upd = (i * 7) % 1100 + 2,
            del = (i * 11) % 1100 + 3,
            note = i % 100 + 1
        ),
        _ => format!(
            "UPDATE app.readings SET v = -v WHERE id = {};
             DELETE FROM side.log WHERE msg = 'log {}'",
            2500 + i,
            i / 9
        ),
    };
    blue.sql(DB, &sql);
}

#[test]
fn a_hypertable_source_copies_and_streams_exactly() {
    if testkit::skip_without_timescaledb("a_hypertable_source_copies_and_streams_exactly") {
        return;
    }
    let (blue, green) = hypertable_pair();
    let (s, t) = (blue.url(DB), green.url(DB));

    // A scheduled retention policy blocks: a chunk dropped while sync is stopped could not
    // be dropped on green, unless dropped slices stream with their ranges.
    let retention = blue.sql(
        DB,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'",
    );
    blue.sql(
        DB,
        &format!("SELECT alter_job({retention}, scheduled => true)"),
    );
    let (exit, plan) = plan_json(&blue, &green);
    assert_eq!(exit, 1, "{plan:#}");
    let f = finding(&plan, "retention-policy").unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(f["subject"], "app.readings");
    assert_eq!(
        f["fix"],
        format!("let dropped chunks stream with their ranges: ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY FULL; or pause it for the migration: SELECT alter_job({retention}, scheduled => false);")
    );
    blue.sql(
        DB,
        "ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY FULL",
    );
    let (_, plan) = plan_json(&blue, &green);
    assert!(finding(&plan, "retention-policy").is_none(), "{plan:#}");
    assert_eq!(plan["slice_ranges"], true);
    blue.sql(
        DB,
        "ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY DEFAULT",
    );
    // Publishing the chunk schema would make DELETE on side.log's chunks fail on blue.
    let f = finding(&plan, "chunk-replica-identity").unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(f["subject"], "side.log");
    assert_eq!(
        f["fix"],
        "ALTER TABLE \"side\".\"log\" REPLICA IDENTITY FULL; (TimescaleDB sets it on every chunk)"
    );
    blue.sql(
        DB,
        &format!("SELECT alter_job({retention}, scheduled => false)"),
    );
    blue.sql(DB, "ALTER TABLE \"side\".\"log\" REPLICA IDENTITY FULL;");
    let (exit, plan) = plan_json(&blue, &green);
    assert_eq!(exit, 0, "hypertables no longer block: {plan:#}");
    assert!(finding(&plan, "hypertable").is_none());
    let readings = plan["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "readings")
        .unwrap();
    assert_eq!(readings["time_column"], "ts");

    let o = bluegreen(&["copy", "--schema", "app", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // One copy chunk per time slice, read through the hypertable.
    let slices = green.sql(
        DB,
        "SELECT count(*) FILTER (WHERE kind = 'time') > 20, count(*) FILTER (WHERE kind <> 'time')
           FROM bluegreen.chunks WHERE table_name <> 'notes'",
    );
    assert_eq!(slices, "t|0");

    let dims = same(&blue, &green, DIMENSIONS);
    assert!(dims.contains("readings 2 device integer Space 3"), "{dims}");
    assert!(
        dims.contains("counters 1 tick bigint Time 1000 counters_now"),
        "{dims}"
    );
    let chunks = same(&blue, &green, CHUNKS);
    assert!(
        chunks.contains("+00 t,") && chunks.contains("+00 f,"),
        "{chunks}"
    );
    same(
        &blue,
        &green,
        "SELECT string_agg(concat_ws(' ', hypertable, segmentby, orderby), ', '
                           ORDER BY hypertable::text)
           FROM timescaledb_information.hypertable_compression_settings
          WHERE hypertable::text LIKE 'app.%'",
    );
    let jobs = same(&blue, &green, JOBS);
    assert!(jobs.contains("policy_reorder"), "{jobs}");
    assert_eq!(
        green.sql(
            DB,
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE scheduled)
               FROM timescaledb_information.jobs WHERE job_id >= 1000"
        ),
        "5 0",
        "policies present and paused"
    );
    // Green's catalog was made by TimescaleDB, not restored: chunk tables are its own.
    assert_eq!(
        green.sql(
            DB,
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'app.readings'::regclass
                AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk k
                                 WHERE k.table_name = c.relname)"
        ),
        "0"
    );
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for q in ORDERED {
        same(&blue, &green, q);
    }
    // The aggregate as blue has it: its rows (the dropped day's among them, whose raw rows
    // are gone), its watermark, its refresh policy (paused on green).
    let first_day = same(
        &blue,
        &green,
        "SELECT count(*) FILTER (WHERE day < date_trunc('day', now()) - interval '19 days') > 0,
                count(*) > 10
           FROM app.readings_daily",
    );
    assert_eq!(first_day, "t|t");
    same(&blue, &green, WATERMARK);
    // verify compares the aggregate's materialized rows too, and counts them.
    let bump = |delta: i32| {
        green.sql(
            DB,
            &format!(
                "DO $$DECLARE m text; BEGIN
                   SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
                     INTO m FROM timescaledb_information.continuous_aggregates WHERE view_name = 'readings_daily';
                   EXECUTE format('UPDATE %s SET n = n + ({delta}) WHERE device = 3', m);
                 END$$;"
            ),
        )
    };
    bump(1);
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("DIFFERENT: every table matches, but 1 continuous aggregate(s) differ")
            && stdout(&o).contains("differs: app.readings_daily"),
        "{}",
        stdout(&o)
    );
    bump(-1);
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("continuous aggregates: 1 of 1 hold the same materialized rows"),
        "{}",
        stdout(&o)
    );
    assert!(same(&blue, &green, REFRESH_JOB).contains("1 day"));

    // Sync under a load of inserts, updates and deletes, some on compressed chunks; chunks
    // compressed (a partial one again, a fresh one) and decompressed while it runs.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sync.log");
    let sync = common::spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    let older = |days: u32| {
        format!(
            "SELECT c FROM show_chunks('app.readings',
                 older_than => date_trunc('day', now()) - interval '{days} days') c"
        )
    };
    for i in 0..180 {
        load_step(&blue, i);
        match i {
            60 => {
                // Rows were inserted into compressed chunks: compress those again.
                blue.sql(
                    DB,
                    &format!(
                        "SELECT compress_chunk(c, if_not_compressed => true) FROM ({}) x",
                        older(12)
                    ),
                );
            }
            80 | 170 => {
                // The compression policies run (as their scheduler would): chunks that
                // took inserts and updates since they were compressed are recompressed,
                // and readings' chunks past 7 days compressed.
                let partial = "SELECT count(*) FROM _timescaledb_catalog.chunk c
                                 JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
                                WHERE h.schema_name = 'app' AND c.status & 8 <> 0";
                assert_ne!(blue.sql(DB, partial), "0", "partial chunks to recompress");
                blue.sql(
                    DB,
                    "DO $$DECLARE j int; BEGIN
                       FOR j IN SELECT job_id FROM timescaledb_information.jobs
                                 WHERE proc_name = 'policy_compression' AND hypertable_schema = 'app'
                                 ORDER BY job_id LOOP
                         CALL run_job(j);
                       END LOOP;
                     END$$;",
                );
                assert_eq!(blue.sql(DB, partial), "0", "recompressed");
            }
            100 => {
                // Fresh chunks, and one decompressed.
                blue.sql(
                    DB,
                    &format!(
                        "SELECT compress_chunk(c, if_not_compressed => true) FROM ({}) x",
                        older(9)
                    ),
                );
                blue.sql(
                    DB,
                    &format!("SELECT decompress_chunk(c) FROM ({} LIMIT 1) x", older(12)),
                );
            }
            120 => {
                // Blue refreshes its aggregate: the refresh's deletes and inserts in the
                // materialization reach green's.
                blue.sql(
                    DB,
                    "CALL refresh_continuous_aggregate('app.readings_daily', NULL,
                                                       date_trunc('day', now()) - interval '1 day')",
                );
            }
            140 => {
                // Chunks dropped while sync runs (compressed ones, three hash partitions
                // each; integer time; a hypertable outside the run): green deletes the same
                // ranges' rows in stream order.
                blue.sql(
                    DB,
                    &format!(
                        "SELECT drop_chunks('app.readings', older_than => {base} + interval '3 days');
                         SELECT drop_chunks('app.counters', older_than => 2000::bigint);
                         SELECT drop_chunks('side.log', older_than => now() - interval '20 days');",
                        base = "date_trunc('day', now()) - interval '20 days'"
                    ),
                );
            }
            _ => {}
        }
    }
    verify_equal_within(&s, &t, Duration::from_secs(60), &log);
    for q in ORDERED {
        same(&blue, &green, q);
    }
    // Green dropped the same chunks, not just their rows.
    same(&blue, &green, RANGES);
    let log = std::fs::read_to_string(&log).unwrap();
    drop(sync);
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
    // The drops reached green: none of the copied rows in the dropped ranges is left (the
    // load inserts into them again afterwards).
    assert_eq!(
        green.sql(
            DB,
            "SELECT (SELECT count(*) FROM app.readings
                      WHERE ts < date_trunc('day', now()) - interval '17 days' AND id <= 2800),
                    (SELECT count(*) FROM app.counters WHERE tick < 2000)"
        ),
        "0|0"
    );
    // The load reached compressed rows and the special values.
    assert_eq!(
        green.sql(
            DB,
            "SELECT count(*) FILTER (WHERE note = 'updated compressed') > 0,
                    count(*) FILTER (WHERE note = 'into compressed') > 0,
                    count(*) FILTER (WHERE note = 'new chunk') > 0,
                    count(*) FILTER (WHERE v = 'Infinity' AND r = 'NaN' AND n = '-Infinity') >= 20
               FROM app.readings"
        ),
        "t|t|t|t"
    );

    // Chunks dropped while sync is stopped: with dimension_slice's old rows whole, sync
    // places them when it comes back.
    blue.sql(
        DB,
        "ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY FULL;
         SELECT drop_chunks('app.readings',
                            older_than => date_trunc('day', now()) - interval '15 days');",
    );
    let log = dir.path().join("sync2.log");
    let sync = common::spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    load_step(&blue, 181);
    verify_equal_within(&s, &t, Duration::from_secs(60), &log);
    drop(sync);
    same(&blue, &green, RANGES);
    // Without them, a drop sync did not see happen stops it (exit 2) rather than leave
    // green with rows blue dropped.
    blue.sql(
        DB,
        "ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY DEFAULT;
         SELECT drop_chunks('app.counters', older_than => 4000::bigint);",
    );
    let log = dir.path().join("sync3.log");
    let mut sync = common::spawn_bluegreen(&["sync", "--source", &s, "--target", &t], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = sync.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sync goes on: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("chunks dropped on the source") && text.contains("REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert_ne!(
        green.sql(DB, "SELECT count(*) FROM app.counters WHERE tick < 4000"),
        "0",
        "nothing applied past the drop"
    );

    // abort --drop-data takes the hypertables copy made, chunks and all.
    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The run created the extension too: it goes, and TimescaleDB's schemas with it.
    assert_eq!(
        green.sql(
            DB,
            "SELECT to_regclass('app.readings') IS NULL,
                    to_regnamespace('_timescaledb_internal') IS NULL"
        ),
        "t|t"
    );
}
