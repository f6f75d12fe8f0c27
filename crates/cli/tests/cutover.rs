//! `bluegreen cutover` and `rollback` against real PostgreSQL and PgBouncer: the plant workload
//! writes through the pooler the whole time; traffic moves to green and back with no failed
//! client transaction and no lost write; each injected failure leaves traffic on blue, sync
//! running, and nothing lost.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bluegreen, code, fixture_pair_at, spawn_bluegreen, stderr, stdout, Running};
use testkit::{Cluster, Pgbouncer};

const DB: &str = "factory_telemetry";

struct Rig {
    blue: Cluster,
    green: Cluster,
    pooler: Pgbouncer,
    s: String,
    t: String,
    pooled: String,
    pooler_arg: String,
    dir: tempfile::TempDir,
}

fn rig() -> Rig {
    rig_with("")
}

/// A rig whose blue runs `setup` (SQL) before the copy.
fn rig_with(setup: &str) -> Rig {
    let (blue, green) = fixture_pair_at(0.005);
    if !setup.is_empty() {
        blue.sql(DB, setup);
    }
    blue.sql(
        DB,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    let pooler = Pgbouncer::builder()
        .database(DB, "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let (s, t) = (blue.url(DB), green.url(DB));
    let o = bluegreen(&["copy", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The application's own role (not bluegreen's), connecting through PUBLIC's CONNECT.
    for pg in [&blue, &green] {
        pg.sql(DB, "CREATE ROLE app LOGIN PASSWORD 'app-secret'");
    }
    let pooled = pooler.url(DB, "postgres", blue.password());
    let pooler_arg = format!(
        "admin={},db={DB},file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    Rig {
        blue,
        green,
        pooler,
        s,
        t,
        pooled,
        pooler_arg,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Rig {
    fn sync(&self, reverse: bool, log: &str) -> Running {
        let mut args = vec!["sync", "--source", &self.s, "--target", &self.t];
        if reverse {
            args.push("--reverse");
        }
        spawn_bluegreen(&args, &self.dir.path().join(log))
    }

    fn flip(&self, verb: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            verb,
            "--source",
            &self.s,
            "--target",
            &self.t,
            "--pooler",
            &self.pooler_arg,
            "--no-verify-check",
        ];
        args.extend_from_slice(extra);
        bluegreen(&args)
    }

    /// The application role's direct connection to blue.
    fn app_url(&self) -> String {
        format!(
            "postgresql://app:app-secret@127.0.0.1:{}/{DB}?sslmode=disable",
            self.blue.port()
        )
    }

    /// Starts a cutover or rollback that stalls for `ms` after `step` (test hook).
    fn stalled_flip(&self, verb: &str, step: &str, ms: u64, log: &str) -> std::process::Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_bluegreen"))
            .args([
                verb,
                "--source",
                &self.s,
                "--target",
                &self.t,
                "--pooler",
                &self.pooler_arg,
                "--no-verify-check",
            ])
            .env("BLUEGREEN_TEST_STALL_AFTER", step)
            .env("BLUEGREEN_TEST_STALL_MS", ms.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits until the run's flip is recorded on green and the stalled step is reached:
    /// blue fenced and sync held (`drain`), or the flip past its commit point.
    fn wait_for(&self, what: &str, query: &str, log: &str) {
        let started = Instant::now();
        while self.green.sql(DB, query) != "t" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never reached {what}: {}",
                std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server port a new connection through the pooler lands on.
    fn pooled_port(&self) -> u16 {
        let out = Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-c", "SELECT inet_server_port()"])
            .arg(&self.pooled)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn sync_running(&self, run: &str) -> bool {
        self.green.sql(
            DB,
            &format!(
                "SELECT coalesce(bool_or(heartbeat > clock_timestamp() - interval '5 s'), false)
                   FROM bluegreen.apply WHERE run = '{run}'"
            ),
        ) == "t"
    }

    fn wait_sync_running(&self, run: &str) {
        let started = Instant::now();
        while !self.sync_running(run) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sync {run} did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Blue is where traffic goes, writable, and sync is running: the state every failed
    /// cutover must leave behind.
    fn assert_on_blue_and_syncing(&self) {
        assert_eq!(
            self.pooled_port(),
            self.blue.port(),
            "traffic is not on blue"
        );
        assert_eq!(
            self.blue.sql(DB, "SELECT coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()"),
            "",
            "blue is still fenced"
        );
        assert!(self.sync_running("main"), "sync stopped");
        assert_eq!(
            self.green
                .sql(DB, "SELECT phase FROM bluegreen.runs WHERE run = 'main'"),
            "copied"
        );
        assert_eq!(
            self.green
                .sql(DB, "SELECT count(*) FROM pg_replication_slots"),
            "0",
            "a reverse slot was left on green"
        );
    }
}

/// The plant workload through the pooler at 200 rows/s (its own seed per run).
fn workload(
    dsn: String,
    seconds: u64,
    ledger: PathBuf,
    seed: u64,
) -> std::thread::JoinHandle<fixtures::workload::WorkloadReport> {
    common::workload(dsn, seconds, 200.0, ledger, seed)
}

#[test]
fn cutover_and_rollback_under_load_lose_nothing() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let ledger = r.dir.path().join("ledger");
    let writer = workload(r.pooled.clone(), 16, ledger.clone(), 1);
    std::thread::sleep(Duration::from_secs(4));

    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("cut over: clients now reach green"), "{out}");
    let paused_ms: f64 = out
        .split("paused ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    eprintln!("cutover paused clients for {paused_ms} ms");
    assert!(paused_ms < 5000.0, "{out}");
    assert_eq!(
        r.pooled_port(),
        r.green.port(),
        "new connections land on green"
    );
    assert_eq!(
        r.green
            .sql(DB, "SELECT phase FROM bluegreen.runs WHERE run = 'main'"),
        "cut-over"
    );
    // Blue no longer takes writes from new sessions.
    let err = r
        .blue
        .psql(
            DB,
            "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('ZZ', 'z')",
        )
        .unwrap_err();
    assert!(err.contains("read-only"), "{err}");

    // Forward sync stops by itself; reverse sync carries green's writes to blue.
    let started = Instant::now();
    while r.sync_running("main") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "forward sync did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::stop_sync(fwd);
    let rev = r.sync(true, "reverse.log");
    r.wait_sync_running("main_reverse");
    let report = writer.join().unwrap();
    common::assert_no_failed_client_transaction(&report);
    // Every committed write (on blue before, on green after the flip) is on green, and
    // reverse sync has carried green's writes to blue.
    common::check_ledger(&r.t, &ledger);
    common::wait_caught_up(
        &r.green,
        "main_reverse",
        &r.green,
        Duration::from_secs(60),
        String::new,
    );
    common::check_ledger(&r.s, &ledger);

    // Writes on green reach blue, then traffic goes back.
    let ledger2 = r.dir.path().join("ledger2");
    let writer = workload(r.pooled.clone(), 8, ledger2.clone(), 2);
    std::thread::sleep(Duration::from_secs(3));
    common::wait_caught_up(
        &r.green,
        "main_reverse",
        &r.green,
        Duration::from_secs(60),
        String::new,
    );
    let o = r.flip("rollback", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("rolled back: clients now reach blue"),
        "{}",
        stdout(&o)
    );
    assert_eq!(r.pooled_port(), r.blue.port());
    let report = writer.join().unwrap();
    common::assert_no_failed_client_transaction(&report);
    common::stop_sync(rev);
    // Every write made on green (and before) is on blue; blue takes writes again.
    common::check_ledger(&r.s, &ledger2);
    r.blue.sql(
        DB,
        "INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('ZZ', 'z')",
    );
    assert_eq!(
        r.green
            .sql(DB, "SELECT phase FROM bluegreen.runs WHERE run = 'main'"),
        "copied"
    );
    assert_eq!(
        r.green.sql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "reverse slot left on green"
    );
    let audit = r.green.sql(DB, "SELECT string_agg(step, ',' ORDER BY id) FROM bluegreen.audit WHERE step IN ('cutover', 'rollback')");
    assert_eq!(audit, "cutover,rollback");

    // Back where the run was before the cutover: green is not fenced, forward sync (whose
    // state lives on green) follows blue again, and a second cutover sends clients to a
    // writable green.
    assert_eq!(
        r.green.sql(DB, "SELECT coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()"),
        "",
        "green is still fenced after rollback"
    );
    let fwd = r.sync(false, "forward2.log");
    r.wait_sync_running("main");
    common::wait_caught_up(
        &r.green,
        "main",
        &r.blue,
        Duration::from_secs(60),
        String::new,
    );
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(r.pooled_port(), r.green.port());
    let out = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('ZY', 'y')")
        .arg(&r.pooled)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a write through the pooler after the second cutover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::stop_sync(fwd);
}

/// A rollback before any cutover is refused, and says it is not rolling back.
#[test]
fn a_rollback_before_any_cutover_is_refused() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let o = r.flip("rollback", &[]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("not rolling back: run main is in phase copied"),
        "{}",
        stderr(&o)
    );
    r.assert_on_blue_and_syncing();
    common::stop_sync(fwd);
}

/// A pooler that cannot be reached: refused before anything is touched.
#[test]
fn an_unreachable_pooler_is_refused() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let dead = format!(
        "admin=postgresql://bgadmin:x@127.0.0.1:1/pgbouncer?connect_timeout=2,db={DB},file={}",
        r.pooler.databases_file().display()
    );
    let o = r.flip("cutover", &["--pooler", &r.pooler_arg, "--pooler", &dead]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("not cutting over"), "{}", stderr(&o));
    r.assert_on_blue_and_syncing();
    common::stop_sync(fwd);
}

/// A long transaction on blue (it would hold PAUSE): refused by the guardrail.
#[test]
fn a_long_transaction_on_blue_is_refused() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let mut long = Command::new(testkit::pg_bin("psql"))
        .args([
            "-X",
            "-q",
            "-c",
            "BEGIN; SELECT txid_current(); SELECT pg_sleep(8); COMMIT;",
        ])
        .arg(&r.s)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let o = r.flip("cutover", &["--max-xact-age", "1"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("has been open"), "{}", stderr(&o));
    long.wait().unwrap();
    r.assert_on_blue_and_syncing();
    common::stop_sync(fwd);
}

/// Another process (a verify) holds the applier: refused, and its hold stays.
#[test]
fn an_applier_held_by_another_process_is_refused() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let at: String = r.blue.sql(DB, "SELECT pg_current_wal_lsn()::text");
    r.green.sql(
        DB,
        &format!("UPDATE bluegreen.apply SET hold_lsn = '{at}' WHERE run = 'main'"),
    );
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("held by another process"),
        "{}",
        stderr(&o)
    );
    let hold: String = r.green.sql(
        DB,
        "SELECT hold_lsn::text FROM bluegreen.apply WHERE run = 'main'",
    );
    assert_eq!(hold, at);
    r.green.sql(
        DB,
        "UPDATE bluegreen.apply SET hold_lsn = NULL, held_lsn = NULL WHERE run = 'main'",
    );
    r.assert_on_blue_and_syncing();
    common::stop_sync(fwd);
}

/// PAUSE cannot finish (a client keeps a transaction open through the pooler): PAUSE times
/// out, every pooler resumes, everything is put back, and the plant workload through the
/// pooler loses nothing.
#[test]
fn a_pause_that_cannot_finish_is_undone() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let ledger = r.dir.path().join("ledger");
    let writer = workload(r.pooled.clone(), 8, ledger.clone(), 3);
    let mut holder = Command::new(testkit::pg_bin("psql"))
        .args([
            "-X",
            "-q",
            "-c",
            "BEGIN; SELECT 1; SELECT pg_sleep(60); COMMIT;",
        ])
        .arg(&r.pooled)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let o = r.flip(
        "cutover",
        &["--pause-timeout", "1", "--max-xact-age", "120"],
    );
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("pause failed"), "{}", stderr(&o));
    holder.kill().unwrap();
    holder.wait().unwrap();
    r.assert_on_blue_and_syncing();
    let report = writer.join().unwrap();
    common::assert_no_failed_client_transaction(&report);
    common::wait_caught_up(
        &r.green,
        "main",
        &r.blue,
        Duration::from_secs(60),
        String::new,
    );
    common::stop_sync(fwd);
    common::check_ledger(&r.t, &ledger);
    common::check_ledger(&r.s, &ledger);
}

/// Sync cannot catch up in time: green applies metric_hist rows slowly (an ALWAYS trigger
/// fires for applied rows too) while blue takes them faster, from before the cutover until
/// it returns (a single burst would not do: creating the reverse slot waits for the
/// applier's open transaction, and sync may catch up meanwhile). The drain times out before
/// anything is paused, all is undone, and sync then catches up.
#[test]
fn a_drain_that_times_out_is_undone() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    r.green.sql(
        DB,
        "CREATE FUNCTION public.bg_slow() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$;
         CREATE TRIGGER bg_slow BEFORE INSERT ON factory_telemetry.metric_hist
           FOR EACH ROW EXECUTE FUNCTION public.bg_slow();
         ALTER TABLE factory_telemetry.metric_hist ENABLE ALWAYS TRIGGER bg_slow;",
    );
    let writing = std::sync::atomic::AtomicBool::new(true);
    let o = std::thread::scope(|s| {
        s.spawn(|| {
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                r.blue.sql(
                    DB,
                    "INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
                       SELECT (SELECT min(id::text)::uuid FROM factory_telemetry.metric_def), now(), g
                         FROM generate_series(1, 200) g",
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        let o = r.flip("cutover", &["--drain-timeout", "0.2", "--max-lag", "60"]);
        writing.store(false, std::sync::atomic::Ordering::SeqCst);
        o
    });
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("drain failed"), "{}", stderr(&o));
    r.green.sql(
        DB,
        "DROP TRIGGER bg_slow ON factory_telemetry.metric_hist; DROP FUNCTION public.bg_slow()",
    );
    r.assert_on_blue_and_syncing();
    common::wait_caught_up(
        &r.green,
        "main",
        &r.blue,
        Duration::from_secs(60),
        String::new,
    );
    common::stop_sync(fwd);
}

/// Green is down: refused, blue keeps the traffic; sync recovers when green is back.
#[test]
fn a_green_that_is_down_is_refused() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    r.green.stop().unwrap();
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 2);
    assert_eq!(r.pooled_port(), r.blue.port());
    r.green.start_again().unwrap();
    r.wait_sync_running("main");
    r.assert_on_blue_and_syncing();
    common::stop_sync(fwd);
}

/// A failure injected at one step (test hook `BLUEGREEN_TEST_FAIL_AT`): the flip is undone
/// newest first and ends with traffic on blue, blue writable for the application's role,
/// sync running, the reverse slot gone from green, and a write made through the pooler
/// afterwards reaching green (nothing lost).
fn a_failure_at(point: &str) {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let o = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args([
            "cutover",
            "--source",
            &r.s,
            "--target",
            &r.t,
            "--pooler",
            &r.pooler_arg,
            "--no-verify-check",
        ])
        .env("BLUEGREEN_TEST_FAIL_AT", point)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{point}: {}{}", stdout(&o), stderr(&o));
    let step = point.split_once(':').unwrap().1;
    assert!(
        stderr(&o).contains(&format!(
            "{step} failed, rolled back to where it started: injected failure"
        )),
        "{point}: {}",
        stderr(&o)
    );
    r.assert_on_blue_and_syncing();
    let write = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("INSERT INTO factory_telemetry.production_lines (line_code, name) VALUES ('INJ', 'after the failure')")
        .arg(&r.pooled)
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{point}: {}",
        String::from_utf8_lossy(&write.stderr)
    );
    let o = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .arg(r.app_url())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{point}: the application's role cannot connect to blue: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    common::wait_caught_up(
        &r.green,
        "main",
        &r.blue,
        Duration::from_secs(60),
        String::new,
    );
    let lines = "SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM factory_telemetry.production_lines t";
    let started = Instant::now();
    while r.green.sql(DB, lines) != r.blue.sql(DB, lines) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{point}: green differs from blue: {} vs {}; apply row {}",
            r.green.sql(DB, lines),
            r.blue.sql(DB, lines),
            r.green.sql(
                DB,
                "SELECT row_to_json(a) FROM bluegreen.apply a WHERE run = 'main'"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::stop_sync(fwd);
}

macro_rules! failure_at {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            a_failure_at($point);
        }
    )*};
}

failure_at! {
    failure_after_guardrails_is_undone => "after:guardrails",
    failure_after_unfence_green_is_undone => "after:unfence green",
    failure_after_arm_rollback_is_undone => "after:arm rollback",
    failure_after_pre_sync_sequences_is_undone => "after:pre-sync sequences",
    failure_after_refresh_materialized_views_is_undone => "after:refresh materialized views",
    failure_after_pre_drain_is_undone => "after:pre-drain",
    failure_after_prepare_fence_is_undone => "after:prepare fence",
    failure_before_pause_is_undone => "before:pause",
    failure_after_pause_is_undone => "after:pause",
    failure_after_fence_is_undone => "after:fence",
    failure_after_drain_is_undone => "after:drain",
    failure_after_final_sequence_sync_is_undone => "after:final sequence sync",
    failure_after_flip_is_undone => "after:flip",
    failure_before_commit_point_is_undone => "before:commit point",
}

/// The fence's grants are read before the PAUSE (step `prepare fence`), so that raising it
/// in the pause takes one round trip. A CONNECT granted between that read and the fence is
/// caught by the fence's check of the ACL, read again and revoked too; rollback gives it back.
#[test]
fn a_grant_made_after_the_fence_was_prepared_is_fenced_too() {
    let r = rig();
    r.blue
        .sql(DB, "CREATE ROLE late LOGIN PASSWORD 'late-secret'");
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let mut flip = r.stalled_flip("cutover", "prepare fence", 3000, "cutover.log");
    let started = Instant::now();
    while r.green.sql(
        DB,
        "SELECT count(*) FROM bluegreen.fences WHERE run = 'main'",
    ) != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no fence record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    r.blue
        .sql(DB, &format!("GRANT CONNECT ON DATABASE {DB} TO late"));
    assert!(flip.wait().unwrap().success(), "the cutover failed");
    let can_connect = || {
        r.blue.sql(
            DB,
            &format!("SELECT has_database_privilege('late', '{DB}', 'CONNECT')"),
        )
    };
    assert_eq!(can_connect(), "f", "the late grant is not fenced");
    let rev = r.sync(true, "reverse.log");
    r.wait_sync_running("main_reverse");
    let o = r.flip("rollback", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        can_connect(),
        "t",
        "rollback did not give the late grant back"
    );
    common::stop_sync(rev);
    common::stop_sync(fwd);
}

#[test]
fn abort_after_cutover_leaves_nothing_on_either_side() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let status_json = || {
        let o = bluegreen(&["status", "--json", "--target", &r.t]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (code(&o), doc)
    };
    let (_, st) = status_json();
    assert_eq!(st["phase"], "syncing", "{st}");
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let st = bluegreen(&["status", "--target", &r.t]);
    assert!(stdout(&st).contains("last cutover"), "{}", stdout(&st));
    // After cutover the probe watches reverse sync, which has not started yet.
    assert_eq!(code(&st), 1);
    assert!(
        stdout(&st).contains("not healthy: reverse sync has never run"),
        "{}",
        stdout(&st)
    );
    let rev = r.sync(true, "reverse.log");
    r.wait_sync_running("main_reverse");
    let (exit, st) = status_json();
    assert_eq!(st["phase"], "cut-over", "{st}");
    assert_eq!(st["reverse_sync"]["running"], true, "{st}");
    assert_eq!(exit, 0, "reverse sync running: healthy: {st}");
    let o = bluegreen(&["abort", "--source", &r.s, "--target", &r.t]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    common::stop_sync(rev);
    common::stop_sync(fwd);
    for pg in [&r.blue, &r.green] {
        assert_eq!(
            pg.sql(
                DB,
                "SELECT (SELECT count(*) FROM pg_replication_slots) || ' ' || (SELECT count(*) FROM pg_publication)
                     || ' ' || (SELECT count(*) FROM pg_replication_origin)
                     || ' ' || (SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen')"
            ),
            "0 0 0 0"
        );
    }
}

/// A client's own transactions through the pooler: `UPDATE … SET n = n + 1 RETURNING n` as
/// fast as it goes, each value it was told in order. Values strictly one apart mean every
/// commit it saw before the flip was on green before its first transaction there.
fn counter_client(
    dsn: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<i64>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n: i64 = client
                    .simple_query("UPDATE factory_telemetry.bg_counter SET n = n + 1 WHERE id = 1 RETURNING n")
                    .await
                    .unwrap()
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
                        _ => None,
                    })
                    .unwrap();
                seen.push(n);
            }
            seen
        })
    })
}

/// Issue 22 B: under asynchronous commit a transaction that committed just before the fence
/// can end past blue's WAL write position; the drain must hold past it all the same.
#[test]
fn drain_covers_asynchronous_commits() {
    let r = rig_with(
        "CREATE TABLE factory_telemetry.bg_counter (id int PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO factory_telemetry.bg_counter VALUES (1, 0);",
    );
    // Every session on blue commits asynchronously, bluegreen's fence included: the write
    // position lags the commits by up to a WAL page (or wal_writer_delay).
    r.blue
        .restart_with(&[("synchronous_commit", "off"), ("wal_writer_delay", "1s")])
        .unwrap();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let stop_client = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = counter_client(r.pooled.clone(), stop_client.clone());
    std::thread::sleep(Duration::from_secs(2));
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    std::thread::sleep(Duration::from_millis(500));
    stop_client.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = client.join().unwrap();
    let gaps: Vec<_> = seen.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(
        gaps.is_empty(),
        "the client saw {gaps:?} around the flip ({} values): a commit made before the flip was not on green\n{}",
        seen.len(),
        stdout(&o)
    );
    common::stop_sync(fwd);
}

#[test]
fn pooler_spec_errors_are_clear() {
    for (spec, needle) in [
        ("db=x,file=/tmp/f", "needs admin"),
        ("admin=host=x,db=x", "needs file"),
        ("admin=host=x,db=x,file=/f,colour=blue", "unknown"),
        ("admin=host=x,db=x,file=/f,green=nohostport", "host:port"),
    ] {
        let o = bluegreen(&[
            "cutover", "--source", "host=x", "--target", "host=y", "--pooler", spec,
        ]);
        assert_eq!(code(&o), 2);
        assert!(stderr(&o).contains(needle), "{spec}: {}", stderr(&o));
    }
}

/// An UPDATE that finds no row on green is recorded as a divergence: status shows it as an
/// error and cutover refuses (even with --no-verify-check) until a verify started after it
/// is clean.
#[test]
fn divergence_blocks_cutover_until_a_later_verify_is_clean() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let row = "id = (SELECT min(id) FROM factory_telemetry.metric_hist)";
    r.green.sql(
        DB,
        &format!("DELETE FROM factory_telemetry.metric_hist WHERE {row}"),
    );
    r.blue.sql(
        DB,
        &format!("UPDATE factory_telemetry.metric_hist SET value_real = -1 WHERE {row}"),
    );
    let started = Instant::now();
    while r.green.sql(
        DB,
        "SELECT diverged_rows FROM bluegreen.apply WHERE run = 'main'",
    ) != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "divergence not recorded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = bluegreen(&["status", "--target", &r.t]);
    assert!(
        stdout(&st).contains("error: green diverged: 1 UPDATE(s)/DELETE(s)"),
        "{}",
        stdout(&st)
    );
    assert_eq!(code(&st), 1, "a diverged green fails the status probe");

    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("green diverged"), "{}", stderr(&o));
    r.assert_on_blue_and_syncing();

    // A verify that repairs, then one that finds it equal: cutover goes ahead.
    let v = bluegreen(&["verify", "--source", &r.s, "--target", &r.t, "--repair"]);
    assert_eq!(code(&v), 1, "{}{}", stdout(&v), stderr(&v));
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 2, "a repair is not yet a clean verify");
    assert!(stderr(&o).contains("green diverged"), "{}", stderr(&o));
    let v = bluegreen(&["verify", "--source", &r.s, "--target", &r.t]);
    assert_eq!(code(&v), 0, "{}{}", stdout(&v), stderr(&v));
    let st = bluegreen(&["status", "--target", &r.t]);
    assert!(
        !stdout(&st).contains("error: green diverged"),
        "{}",
        stdout(&st)
    );
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    common::stop_sync(fwd);
}

/// Sessions opened on blue before cutover, outside the pooler, are ended by the fence: one
/// that would write after its sleep and one inside an open transaction. Neither write lands
/// on blue after the flip (it did before, and never reached green).
#[test]
fn sessions_open_on_blue_cannot_write_after_cutover() {
    let r = rig();
    for pg in [&r.green, &r.blue] {
        pg.sql(
            DB,
            "CREATE TABLE public.probe (id int PRIMARY KEY, note text); GRANT ALL ON public.probe TO app",
        );
    }
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let session = |script: &str| {
        let mut c = r.blue.psql_command(DB);
        c.args(["-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child
    };
    let mut idle = session(
        "SELECT 1;\nSELECT pg_sleep(6);\nINSERT INTO public.probe VALUES (1, 'after sleeping');\n",
    );
    let mut open = session(
        "BEGIN;\nINSERT INTO public.probe VALUES (2, 'in an open transaction');\nSELECT pg_sleep(5);\nCOMMIT;\n",
    );
    std::thread::sleep(Duration::from_secs(2));
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ended after the fence"),
        "{}",
        stdout(&o)
    );
    assert!(!idle.wait().unwrap().success(), "the idle session went on");
    assert!(
        !open.wait().unwrap().success(),
        "the open transaction committed"
    );
    assert_eq!(r.blue.sql(DB, "SELECT count(*) FROM public.probe"), "0");
    assert_eq!(r.green.sql(DB, "SELECT count(*) FROM public.probe"), "0");
    // A new session of the application's role cannot even connect, so it cannot SET the
    // read-only default off (before: it could, and wrote on blue).
    let app = |sql: &str| {
        Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-c", "SET default_transaction_read_only = off", "-c", sql])
            .arg(r.app_url())
            .output()
            .unwrap()
    };
    let o = app("INSERT INTO public.probe VALUES (3, 'new session')");
    assert!(!o.status.success(), "the application's role wrote on blue");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied for database"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(r.blue.sql(DB, "SELECT count(*) FROM public.probe"), "0");
    common::stop_sync(fwd);
    // abort keeps blue fenced after a cutover and prints what opens it again; run that.
    let o = bluegreen(&["abort", "--source", &r.s, "--target", &r.t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("blue: stays fenced"), "{out}");
    let lift: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ") && l.ends_with(';'))
        .collect();
    assert!(lift.iter().any(|l| l.contains("GRANT CONNECT")), "{out}");
    // As an operator would paste them into psql: one statement at a time.
    let mut c = r.blue.psql_command(DB);
    c.args(["-v", "ON_ERROR_STOP=1"]).stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lift.join("\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let o = app("INSERT INTO public.probe VALUES (4, 'blue opened again')");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// kill -9 of a cutover while clients are paused, blue fenced and sync held: its watchdog
/// gives traffic back to blue within seconds (before: clients hung until PgBouncer's query
/// timeout, blue stayed fenced, sync held for 10 minutes), and the next cutover succeeds.
#[test]
fn a_cutover_killed_mid_pause_gives_traffic_back_to_blue() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let log = std::fs::File::create(r.dir.path().join("cutover.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args([
            "cutover",
            "--source",
            &r.s,
            "--target",
            &r.t,
            "--pooler",
            &r.pooler_arg,
            "--no-verify-check",
        ])
        .env("BLUEGREEN_TEST_STALL_AFTER", "drain")
        .env("BLUEGREEN_TEST_STALL_MS", "60000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Polls of blue carry a bluegreen application name, so the fence leaves them alone.
    let on_blue = |q: &str| {
        let out = r
            .blue
            .psql_command(DB)
            .env("PGAPPNAME", "bluegreen-test")
            .args(["-c", q])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let fenced = || {
        on_blue(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = current_database()",
        ) != "0"
    };
    let held = || {
        r.green.sql(
            DB,
            "SELECT count(*) FROM bluegreen.apply WHERE held_lsn IS NOT NULL",
        ) != "0"
    };
    let started = Instant::now();
    while !(fenced() && held()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cutover never reached its drain: {}",
            std::fs::read_to_string(r.dir.path().join("cutover.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let killed = Instant::now();
    while fenced() || held() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "nothing was put back: {}",
            std::fs::read_to_string(r.dir.path().join("cutover.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    r.assert_on_blue_and_syncing();
    assert!(
        r.green
            .sql(DB, "SELECT count(*) FROM bluegreen.audit WHERE step = 'cutover-aborted' AND detail->>'by' = 'watchdog'")
            != "0"
    );
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(r.pooled_port(), r.green.port());
    common::stop_sync(fwd);
}

/// Kills a flip's coordinator, and its watchdog too when `watchdog` says so (a child of the
/// coordinator in a process group of its own).
fn kill_flip(mut child: std::process::Child, watchdog: bool) {
    if watchdog {
        let parent = child.id().to_string();
        let mut killed = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: the fields after the last ')'.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            if fields.get(1) == Some(&parent.as_str()) {
                let pid: i32 = entry.file_name().to_string_lossy().parse().unwrap();
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed += 1;
            }
        }
        assert_eq!(killed, 1, "the watchdog was not found");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

const FLIP_AT_DRAIN: &str = "SELECT EXISTS (SELECT 1 FROM bluegreen.flips WHERE NOT committed)
    AND EXISTS (SELECT 1 FROM bluegreen.apply WHERE held_lsn IS NOT NULL)";
const FLIP_COMMITTED: &str = "SELECT EXISTS (SELECT 1 FROM bluegreen.flips WHERE committed)";

/// A flip killed after its commit point (files point at green, RESUME on its way): the
/// watchdog finishes it rather than undoing it, since clients may already write on green
/// (before: the run stayed in phase copied with traffic on green, or, killed before its
/// RESUME, the watchdog sent clients back to blue).
#[test]
fn a_flip_killed_after_its_commit_point_is_finished_by_its_watchdog() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let child = r.stalled_flip("cutover", "commit point", 60_000, "cutover.log");
    r.wait_for("the commit point", FLIP_COMMITTED, "cutover.log");
    kill_flip(child, false);
    let started = Instant::now();
    while r
        .green
        .sql(DB, "SELECT phase FROM bluegreen.runs WHERE run = 'main'")
        != "cut-over"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the watchdog did not finish the flip: {}",
            std::fs::read_to_string(r.dir.path().join("cutover.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(r.pooled_port(), r.green.port(), "traffic is not on green");
    assert_eq!(r.green.sql(DB, "SELECT count(*) FROM bluegreen.flips"), "0");
    assert!(
        r.blue.sql(DB, "SELECT count(*) FROM pg_db_role_setting") != "0",
        "blue is not fenced"
    );
    common::stop_sync(fwd);
}

/// Coordinator and watchdog both killed mid-pause: the pooler stays paused and blue fenced
/// until the next command. abort refuses without the poolers (it would drop the record of
/// what to put back); the next cutover undoes the dead flip first, then cuts over.
#[test]
fn a_flip_whose_watchdog_died_too_is_undone_by_the_next_command() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let child = r.stalled_flip("cutover", "drain", 60_000, "cutover.log");
    r.wait_for("the drain", FLIP_AT_DRAIN, "cutover.log");
    kill_flip(child, true);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(r.green.sql(DB, "SELECT count(*) FROM bluegreen.flips"), "1");
    let o = bluegreen(&["abort", "--source", &r.s, "--target", &r.t]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("died mid-flip"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--pooler"), "{}", stderr(&o));
    assert_eq!(
        r.green
            .sql(DB, "SELECT count(*) FROM bluegreen.runs WHERE run = 'main'"),
        "1",
        "the refused abort removed the run"
    );
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("was undone"), "{}", stderr(&o));
    assert_eq!(r.pooled_port(), r.green.port());
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT count(*) FROM bluegreen.audit WHERE step = 'cutover-aborted' AND detail->>'by' = 'the next flip'"
        ),
        "1"
    );
    common::stop_sync(fwd);
}

/// abort given the poolers after a flip died with its watchdog: the pooler is resumed on
/// blue, blue's fence lifted (the application's role connects again), sync stopped, and
/// the run removed.
#[test]
fn abort_after_a_dead_flip_resumes_the_pooler_and_lifts_the_fence() {
    let r = rig();
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    let child = r.stalled_flip("cutover", "drain", 60_000, "cutover.log");
    r.wait_for("the drain", FLIP_AT_DRAIN, "cutover.log");
    kill_flip(child, true);
    let o = bluegreen(&[
        "abort",
        "--source",
        &r.s,
        "--target",
        &r.t,
        "--pooler",
        &r.pooler_arg,
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("was undone"), "{}", stdout(&o));
    assert_eq!(r.pooled_port(), r.blue.port());
    let o = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .arg(r.app_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        r.blue.sql(DB, "SELECT count(*) FROM pg_db_role_setting"),
        "0",
        "blue is still fenced"
    );
    assert_eq!(
        r.green.sql(
            DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'bluegreen'"
        ),
        "0"
    );
    common::stop_sync(fwd);
}

/// Materialized views are not replicated: after days of sync green's would show copy-time
/// rows from the first second clients read them there. Cutover refreshes them on green
/// before the pause, each after the views it reads (a_kpi_lines reads mv_daily_line_kpis
/// through a plain view, and sorts first); verify shows the difference before it (without
/// counting it), status and plan say when bluegreen refreshed them.
#[test]
fn materialized_views_are_fresh_on_green_when_it_takes_traffic() {
    let r = rig_with(
        "CREATE VIEW factory_telemetry.v_kpi_days AS
             SELECT line_id, kpi_date FROM factory_telemetry.mv_daily_line_kpis;
         CREATE MATERIALIZED VIEW factory_telemetry.a_kpi_lines AS
             SELECT count(*) AS days FROM factory_telemetry.v_kpi_days;",
    );
    let fwd = r.sync(false, "forward.log");
    r.wait_sync_running("main");
    // The application adds a day of KPIs and refreshes its views on blue.
    r.blue.sql(
        DB,
        "INSERT INTO factory_telemetry.production_kpis (line_id, kpi_date, shift, oee)
             SELECT id, DATE '2031-01-01', 'A', 80 FROM factory_telemetry.production_lines;
         REFRESH MATERIALIZED VIEW factory_telemetry.mv_daily_line_kpis;
         REFRESH MATERIALIZED VIEW factory_telemetry.a_kpi_lines;",
    );
    common::wait_caught_up(
        &r.green,
        "main",
        &r.blue,
        Duration::from_secs(60),
        String::new,
    );
    let views = |pg: &Cluster| {
        pg.sql(
            DB,
            "SELECT (SELECT count(*) FROM factory_telemetry.mv_daily_line_kpis) || ' ' ||
                    (SELECT days FROM factory_telemetry.a_kpi_lines)",
        )
    };
    assert_ne!(
        views(&r.green),
        views(&r.blue),
        "green's views were already fresh"
    );
    let v = bluegreen(&["verify", "--source", &r.s, "--target", &r.t]);
    assert_eq!(code(&v), 0, "{}{}", stdout(&v), stderr(&v));
    assert!(
        stdout(&v).contains("materialized views: 0 of 2 hold the same rows"),
        "{}",
        stdout(&v)
    );
    // Verify put its watch trigger on green's tables; cutover takes it off (issue 18).
    let watched = || {
        r.green.sql(
            DB,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'bluegreen_watch'",
        )
    };
    assert_ne!(watched(), "0");
    let o = r.flip("cutover", &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        watched(),
        "0",
        "green took traffic with verify's watch trigger"
    );
    assert!(
        stdout(&o).contains("refresh materialized views"),
        "{}",
        stdout(&o)
    );
    assert_eq!(views(&r.green), views(&r.blue), "green's views are stale");
    let st = bluegreen(&["status", "--target", &r.t]);
    assert!(
        stdout(&st).contains("materialized views: 2 refreshed on green by cutover"),
        "{}",
        stdout(&st)
    );
    let p = bluegreen(&["plan", "--source", &r.s, "--target", &r.t]);
    assert!(
        stdout(&p).contains("last refreshed by bluegreen on green"),
        "{}",
        stdout(&p)
    );
    let order: String = r.green.sql(
        DB,
        "SELECT string_agg(v->>'view', ',' ORDER BY ord) FROM bluegreen.audit,
                jsonb_array_elements(detail->'views') WITH ORDINALITY AS x(v, ord)
          WHERE step = 'matviews-refreshed' AND detail->>'by' = 'cutover'",
    );
    assert_eq!(
        order,
        "factory_telemetry.mv_daily_line_kpis,factory_telemetry.a_kpi_lines"
    );
    common::stop_sync(fwd);
}
