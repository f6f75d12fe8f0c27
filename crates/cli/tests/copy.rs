//! `bluegreen copy` and `abort` against real servers: exact contents, sequences, indexes and
//! constraints; SIGKILL and resume; bad input refused with nothing touched.

mod common;

use std::time::{Duration, Instant};

use common::{bluegreen, code, fixture_pair_at, stderr, stdout};
use testkit::Cluster;

const DB: &str = "factory_telemetry";

fn copy_args<'a>(source: &'a str, target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["copy", "--source", source, "--target", target];
    v.extend_from_slice(extra);
    v
}

/// Every table's rows as sorted text (the row's whole text form, generated columns included).
fn contents(pg: &Cluster, table: &str) -> String {
    pg.sql(DB, &format!("SELECT t::text FROM {table} t ORDER BY 1"))
}

fn assert_same_everything(source: &Cluster, target: &Cluster) {
    for table in fixtures::TABLES {
        let (s, t) = (contents(source, table), contents(target, table));
        assert!(!s.is_empty(), "{table} is empty on the source");
        assert!(s == t, "{table} differs: {} vs {} bytes", s.len(), t.len());
    }
    let seqs = "SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'unused'), ',' ORDER BY sequencename)
                  FROM pg_sequences WHERE schemaname = 'factory_telemetry'";
    assert_eq!(source.sql(DB, seqs), target.sql(DB, seqs), "sequences");
    for list in [
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'factory_telemetry'",
        "SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
           FROM pg_constraint WHERE connamespace = 'factory_telemetry'::regnamespace",
        // Not the state schema's own (the audit log's append-only triggers).
        "SELECT tgrelid::regclass || ' ' || tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE NOT tgisinternal AND c.relnamespace::regnamespace::text <> 'bluegreen'",
        "SELECT matviewname || ' ' || ispopulated FROM pg_matviews",
    ] {
        let catalog_query = format!("SELECT string_agg(x, E'\\n' ORDER BY x) FROM ({list}) s(x)");
        let (s, t) = (
            source.sql(DB, &catalog_query),
            target.sql(DB, &catalog_query),
        );
        assert!(!s.is_empty(), "{catalog_query}");
        assert_eq!(s, t, "{catalog_query}");
    }
}

fn source_artifacts(source: &Cluster) -> String {
    source.sql(
        DB,
        "SELECT (SELECT count(*) FROM pg_replication_slots) || ' slots, '
             || (SELECT count(*) FROM pg_publication) || ' publications'",
    )
}

fn target_artifacts(target: &Cluster) -> String {
    target.sql(
        DB,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ('bluegreen', 'factory_telemetry'))
             || ' schemas, ' || (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) || ' public relations'",
    )
}

#[test]
fn copy_is_exact_and_abort_removes_the_run() {
    let (source, target) = common::publishable_pair_at(0.02);
    let (s, t) = (source.url(DB), target.url(DB));

    let o = bluegreen(&copy_args(&s, &t, &["--jobs", "2", "--chunk-mb", "1"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("factory_telemetry.metric_hist"),
        "{}",
        stdout(&o)
    );
    assert_same_everything(&source, &target);

    // The run is recorded, its slot sits at the consistent point, the chunks are all done.
    assert_eq!(
        target.sql(DB, "SELECT phase FROM bluegreen.runs WHERE run = 'main'"),
        "copied"
    );
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FILTER (WHERE state <> 'done') FROM bluegreen.chunks"
        ),
        "0"
    );
    assert!(
        target.sql(
            DB,
            "SELECT count(*) > 1 FROM bluegreen.chunks WHERE table_name = 'metric_hist'"
        ) == "t",
        "metric_hist split into block ranges"
    );
    assert_eq!(
        source.sql(
            DB,
            "SELECT slot_name || ' ' || plugin FROM pg_replication_slots"
        ),
        "bluegreen_main pgoutput"
    );
    assert_eq!(
        source.sql(DB, "SELECT pubname FROM pg_publication"),
        "bluegreen_main"
    );

    // A second copy of a finished run changes nothing.
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_same_everything(&source, &target);

    // Abort removes slot, publication and state; the data stays; twice is fine.
    for _ in 0..2 {
        let o = bluegreen(&["abort", "--source", &s, "--target", &t]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
        assert_eq!(
            target.sql(
                DB,
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
            ),
            "0"
        );
    }
    assert_same_everything(&source, &target);
    // The record of what the run created went with its state: nothing to drop by.
    let o = bluegreen(&["abort", "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_same_everything(&source, &target);
}

#[test]
fn sigkill_during_data_then_rerun_is_exact() {
    let (source, target) = common::publishable_pair_at(0.3);
    let (s, t) = (source.url(DB), target.url(DB));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args(copy_args(&s, &t, &["--jobs", "1", "--chunk-mb", "1"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(60) {
        let counts = target
            .psql(
                DB,
                "SELECT count(*) FILTER (WHERE state = 'done') || ' ' || count(*) FILTER (WHERE state = 'pending')
                   FROM bluegreen.chunks",
            )
            .unwrap_or_default();
        let n: Vec<i64> = counts
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if n.len() == 2 && n[0] >= 2 && n[1] >= 2 {
            child.kill().unwrap();
            killed_at = Some(counts);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait().unwrap();
    let killed_at = killed_at.expect("the copy reached its data phase");
    eprintln!("killed with done/pending chunks {killed_at}");
    assert_eq!(
        target.sql(DB, "SELECT phase FROM bluegreen.runs"),
        "data",
        "killed in the data phase"
    );

    let o = bluegreen(&copy_args(&s, &t, &["--jobs", "2"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("(resumed)"), "{}", stdout(&o));
    assert_same_everything(&source, &target);
    // Run once more: it was copied, so nothing is done and it says so. The summary ends
    // with the largest table, next to the total.
    let summary = stdout(&o);
    let last_table = summary.lines().rev().nth(1).unwrap_or_default();
    assert!(last_table.ends_with("metric_hist"), "{summary}");
    let o = bluegreen(&copy_args(&s, &t, &["--jobs", "2"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("already copied at LSN"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("(resumed)"), "{}", stdout(&o));
    // Tables the first process finished keep its snapshot; the rest were read at the
    // resume snapshot: every table has exactly one.
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM (SELECT table_name FROM bluegreen.chunks
                GROUP BY 1 HAVING count(DISTINCT snapshot_lsn) <> 1) x"
        ),
        "0"
    );
    let o = bluegreen(&["abort", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0);
    assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
}

#[test]
fn bad_input_is_refused_with_nothing_touched() {
    let (source, target) = fixture_pair_at(0.002);
    let (s, t) = (source.url(DB), target.url(DB));
    let untouched = |what: &str| {
        assert_eq!(
            source_artifacts(&source),
            "0 slots, 0 publications",
            "{what}"
        );
        assert_eq!(
            target_artifacts(&target),
            "0 schemas, 0 public relations",
            "{what}"
        );
    };

    // A table plan marks as blocking: exit 1 with the fix.
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("REPLICA IDENTITY FULL"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("nothing was touched"));
    untouched("blocking table");
    source.sql(
        DB,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );

    // --target-schema existing without the schema on the target.
    let o = bluegreen(&copy_args(&s, &t, &["--target-schema", "existing"]));
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("schema factory_telemetry is missing on the target"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("hint: create the target's schema first"),
        "{}",
        stderr(&o)
    );
    untouched("missing schema");

    // A bad run name.
    let o = bluegreen(&copy_args(&s, &t, &["--run", "Bad-Name"]));
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("run name"), "{}", stderr(&o));
    untouched("bad run name");

    // The target already has a conflicting object: pre-data fails after the slot exists;
    // the slot, publication and state are removed again.
    target.sql(
        DB,
        "CREATE SCHEMA factory_telemetry; CREATE TYPE factory_telemetry.clash AS (a int);",
    );
    source.sql(DB, "CREATE TYPE factory_telemetry.clash AS (a int)");
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
    target.sql(DB, "DROP SCHEMA factory_telemetry CASCADE");

    // A non-empty target table (schema created by the operator).
    common::create_fixture_schema(&target);
    target.sql(
        DB,
        "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('X', 'x')",
    );
    let o = bluegreen(&copy_args(&s, &t, &["--target-schema", "existing"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("already has rows"), "{}", stderr(&o));
    assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
}

#[test]
fn source_without_logical_wal_is_refused() {
    let source = Cluster::builder()
        .setting("wal_level", "replica")
        .start()
        .unwrap();
    let target = Cluster::new();
    source.create_database(DB);
    target.create_database(DB);
    source.sql(DB, "CREATE TABLE t (id int PRIMARY KEY)");
    let o = bluegreen(&copy_args(&source.url(DB), &target.url(DB), &[]));
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("wal_level = logical"), "{}", stdout(&o));
    assert_eq!(source.sql(DB, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
}

/// `abort --drop-data` drops what the run's copy created and nothing else: an operator's
/// table in `public` (which existed before the copy) stays, a schema the run created stays
/// while an operator's table is in it, and a view an operator made over a copied table
/// refuses the drop with nothing removed.
#[test]
fn drop_data_drops_only_what_the_run_created() {
    let (source, target) = common::publishable_pair_at(0.002);
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    target.sql(
        DB,
        "CREATE TABLE public.mine (x int); INSERT INTO public.mine VALUES (1);
         CREATE TABLE factory_telemetry.operator_notes (x int);
         CREATE VIEW public.hist_ids AS SELECT id FROM factory_telemetry.metric_hist",
    );

    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("view hist_ids"), "{}", stdout(&o));
    assert!(stdout(&o).contains("nothing was removed"), "{}", stdout(&o));
    assert_eq!(source_artifacts(&source), "1 slots, 1 publications");
    assert_eq!(
        target.sql(
            DB,
            "SELECT to_regclass('factory_telemetry.metric_hist') IS NOT NULL"
        ),
        "t"
    );
    assert_eq!(target.sql(DB, "SELECT count(*) FROM bluegreen.runs"), "1");

    target.sql(DB, "DROP VIEW public.hist_ids");
    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("schema public: kept"), "{out}");
    assert!(out.contains("schema factory_telemetry: kept"), "{out}");
    assert!(
        out.contains("table factory_telemetry.operator_notes"),
        "{out}"
    );
    assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
    assert_eq!(target.sql(DB, "SELECT count(*) FROM public.mine"), "1");
    // Of the copied schema only the operator's table is left: no table, view, sequence,
    // function or type of the copy.
    assert_eq!(
        target.sql(
            DB,
            "SELECT (SELECT string_agg(relname, ',') FROM pg_class
                      WHERE relnamespace = 'factory_telemetry'::regnamespace)
                 || ' ' || (SELECT count(*) FROM pg_proc
                      WHERE pronamespace = 'factory_telemetry'::regnamespace)
                 || ' ' || (SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen')"
        ),
        "operator_notes 0 0"
    );
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_type WHERE typnamespace = 'factory_telemetry'::regnamespace
                AND typrelid = 0 AND typelem = 0"
        ),
        "0"
    );
}

/// After a plain abort the run's record is gone: plain abort says what stays, and a later
/// `--drop-data` says it found no record and exits 1 instead of "none found", 0.
#[test]
fn drop_data_after_plain_abort_says_the_data_stays() {
    let source = Cluster::new();
    let target = Cluster::new();
    source.create_database(DB);
    target.create_database(DB);
    source.sql(
        DB,
        "CREATE SCHEMA app; CREATE TABLE app.t (id serial PRIMARY KEY, v text);
         INSERT INTO app.t (v) VALUES ('a'), ('b');",
    );
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&copy_args(&s, &t, &["--schema", "app"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = bluegreen(&["abort", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("kept (1 schema, 1 sequence, 1 table"),
        "{}",
        stdout(&o)
    );
    let o = bluegreen(&["abort", "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("no record of what run main created"),
        "{}",
        stdout(&o)
    );
    assert_eq!(target.sql(DB, "SELECT count(*) FROM app.t"), "2");
}

/// Another migration from the same source (to another target) holds bluegreen_main: a copy
/// to this target refuses (exit 1) and leaves that slot and publication alone; plan reports
/// it as a blocker; another --run name works.
#[test]
fn slot_of_the_same_name_unknown_to_the_target_is_never_dropped() {
    let source = Cluster::new();
    let target = Cluster::new();
    source.create_database(DB);
    target.create_database("green_a");
    target.create_database("green_b");
    source.sql(
        DB,
        "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    );
    let s = source.url(DB);
    let (a, b) = (target.url("green_a"), target.url("green_b"));
    let o = bluegreen(&copy_args(&s, &a, &["--schema", "app"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let slot = "SELECT slot_name || ' ' || restart_lsn FROM pg_replication_slots";
    let before = source.sql(DB, slot);

    let o = bluegreen(&["plan", "--source", &s, "--target", &b, "--schema", "app"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("run-name-in-use") || stdout(&o).contains("another migration"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("--run NAME"), "{}", stdout(&o));
    // The target that knows the run is not blocked by its own slot.
    let o = bluegreen(&["plan", "--source", &s, "--target", &a, "--schema", "app"]);
    assert!(!stdout(&o).contains("another migration"), "{}", stdout(&o));

    let o = bluegreen(&copy_args(&s, &b, &["--schema", "app"]));
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("another migration"), "{}", stdout(&o));
    assert_eq!(
        source.sql(DB, slot),
        before,
        "the other migration's slot is untouched"
    );
    assert_eq!(source_artifacts(&source), "1 slots, 1 publications");
    assert_eq!(
        target.sql(
            "green_b",
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('bluegreen', 'app')"
        ),
        "0"
    );

    let o = bluegreen(&copy_args(&s, &b, &["--schema", "app", "--run", "b"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(source_artifacts(&source), "2 slots, 2 publications");
}

/// A run copied by a bluegreen from before the record (state schema version 3): status and
/// abort still read it; --drop-data refuses (exit 1, nothing removed) rather than guess.
#[test]
fn run_without_a_record_is_never_guessed_from() {
    let source = Cluster::new();
    let target = Cluster::new();
    source.create_database(DB);
    target.create_database(DB);
    source.sql(
        DB,
        "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    );
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&copy_args(&s, &t, &["--schema", "app"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // What the state schema looked like at version 3 (a sync had registered its row).
    target.sql(
        DB,
        "INSERT INTO bluegreen.apply (run, origin) VALUES ('main', 'bluegreen_main');
         DROP TABLE bluegreen.created; ALTER TABLE bluegreen.runs DROP COLUMN created_recorded;
         ALTER TABLE bluegreen.apply DROP COLUMN diverged_rows, DROP COLUMN diverged_at,
             DROP COLUMN diverged_lsn;
         DROP TABLE bluegreen.fences, bluegreen.flips;
         DELETE FROM bluegreen.schema_version WHERE version > 3",
    );
    // status reads the older schema (exit 1 only because sync is not running).
    let o = bluegreen(&["status", "--target", &t]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("not healthy: sync is not running"),
        "{}",
        stdout(&o)
    );
    let o = bluegreen(&["abort", "--source", &s, "--target", &t, "--drop-data"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("kept no record"), "{}", stdout(&o));
    assert_eq!(source_artifacts(&source), "1 slots, 1 publications");
    assert_eq!(target.sql(DB, "SELECT count(*) FROM app.t"), "1");
    let o = bluegreen(&["abort", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(source_artifacts(&source), "0 slots, 0 publications");
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
}

/// The audit log is append-only from bluegreen's side (issue 20): aborting a run keeps its
/// audit entries (the schema stays while another run is left), the state schema refuses
/// UPDATE, DELETE and TRUNCATE on them, and a new run of the same name reads only its own
/// entries (status shows no flip of the aborted run).
#[test]
fn abort_keeps_the_audit_log_and_nothing_rewrites_it() {
    let (source, target) = common::publishable_pair_at(0.02);
    let (s, t) = (source.url(DB), target.url(DB));
    source.sql(
        DB,
        "CREATE SCHEMA extra; CREATE TABLE extra.t (id int PRIMARY KEY, v text);
         INSERT INTO extra.t SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    let o = bluegreen(&copy_args(&s, &t, &["--run", "side", "--schema", "extra"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let main = ["--run", "main", "--schema", "factory_telemetry"];
    let o = bluegreen(&copy_args(&s, &t, &main));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let entries = "SELECT count(*) || ' ' || coalesce(string_agg(step, ',' ORDER BY id), '')
                     FROM bluegreen.audit WHERE run = 'main'";
    let before = target.sql(DB, entries);
    assert!(!before.starts_with("0 "), "{before}");

    let o = bluegreen(&[
        "abort",
        "--run",
        "main",
        "--drop-data",
        "--source",
        &s,
        "--target",
        &t,
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        target.sql(DB, "SELECT count(*) FROM bluegreen.runs WHERE run = 'main'"),
        "0"
    );
    assert_eq!(
        target.sql(DB, entries),
        before,
        "abort kept main's audit log"
    );

    // Nothing rewrites it, whoever asks (bluegreen's own statements included).
    for statement in [
        "UPDATE bluegreen.audit SET step = 'x'",
        "DELETE FROM bluegreen.audit WHERE run = 'main'",
        "TRUNCATE bluegreen.audit",
    ] {
        let e = target.psql(DB, statement).expect_err(statement).to_string();
        assert!(
            e.contains("bluegreen.audit is append-only"),
            "{statement}: {e}"
        );
    }
    assert_eq!(target.sql(DB, entries), before);

    // The aborted run had flipped (an entry as cutover writes it): a new run of the same name
    // does not show that flip as its own.
    target.sql(
        DB,
        "INSERT INTO bluegreen.audit (run, step, seconds, detail)
         VALUES ('main', 'cutover', 0.25, '{}')",
    );
    std::thread::sleep(Duration::from_millis(50));
    let o = bluegreen(&copy_args(&s, &t, &main));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = bluegreen(&["status", "--run", "main", "--target", &t]);
    // 1: no sync running yet.
    assert!(code(&o) < 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("copied"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("last cutover"), "{}", stdout(&o));

    // Abort of the last run drops the whole state schema, audit log included (the one
    // removal left, and deliberate: nothing of bluegreen stays on the target).
    for run in ["main", "side"] {
        let o = bluegreen(&["abort", "--run", run, "--source", &s, "--target", &t]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    }
    assert_eq!(
        target.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
}
