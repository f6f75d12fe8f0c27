//! The Kubernetes files under scripts/deploy/k8s against bluegreen itself: the ConfigMap's
//! TOML goes through bluegreen's own config parser (every table, whichever command runs, and
//! the connection strings and [[pooler]] specs the commands parse before connecting), and the
//! copy Job's arguments are ones bluegreen takes (no server needed: the hosts in the file do
//! not resolve here, so every command must get as far as connecting and fail there); the
//! PgBouncer pod's pgbouncer.ini runs on the real PgBouncer and takes a flip of the file the
//! bluegreen config names. Schema validation of the manifests is scripts/deploy/check-k8s.sh
//! (run by scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};

use common::bluegreen_env;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/deploy/k8s")
}

/// The text of a `key: |` block scalar in a YAML file, dedented (the ConfigMap's one entry;
/// no YAML crate for this one shape).
fn block_scalar(yaml: &str, key: &str) -> String {
    let head = format!("{key}: |");
    let mut lines = yaml.lines().skip_while(|l| l.trim() != head);
    let head_line = lines.next().unwrap_or_else(|| panic!("no `{head}` block"));
    let head_indent = head_line.len() - head_line.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > head_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("an empty block");
    body.iter()
        .map(|l| l.get(indent..).unwrap_or("").to_string() + "\n")
        .collect()
}

/// The `args: [...]` of the first container that has them (written as a JSON list).
fn container_args(yaml: &str) -> Vec<String> {
    let line = yaml
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("args: ["))
        .expect("an args: [...] line");
    serde_json::from_str(line.trim_start_matches("args: ")).expect("args as a JSON list")
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    toml: String,
}

/// The ConfigMap's TOML in a temporary file; the Secret's mount directory (the CA certificate
/// the connection strings name) points at a temporary one holding a real certificate, so
/// connecting gets past TLS setup to the host lookup.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(k8s_dir().join("configmap.yaml")).unwrap();
    let toml = block_scalar(&yaml, "bluegreen.toml");
    assert!(toml.contains("/etc/bluegreen/secret/ca.crt"), "{toml}");
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=bluegreen k8s test CA", "-keyout"])
        .arg(secret.join("ca.key"))
        .arg("-out")
        .arg(secret.join("ca.crt"))
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let toml = toml.replace("/etc/bluegreen/secret/", &format!("{}/", secret.display()));
    let config = dir.path().join("bluegreen.toml");
    std::fs::write(&config, &toml).unwrap();
    Setup {
        _dir: dir,
        config,
        toml,
    }
}

/// Runs bluegreen with the config; returns its exit code and the closing error message.
fn run(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = bluegreen_env(&all, &[("PGPASSFILE", "/nonexistent")]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // log_format = "json" in the file: the last line is the error object.
    let last = stderr.lines().last().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(last)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| stderr.clone());
    (out.status.code(), message)
}

/// Accepted: the command got to connecting and failed at the host lookup.
fn assert_connecting(config: &Path, args: &[&str]) {
    let (code, message) = run(config, args);
    assert_eq!(code, Some(2), "{args:?}: {message}");
    assert!(
        !message.contains("config file") && message.contains("cannot reach"),
        "{args:?} did not get as far as connecting: {message}"
    );
}

#[test]
fn configmap_toml_loads_through_bluegreens_config_parser() {
    let s = setup();
    // cutover and rollback parse the [[pooler]] specs before connecting; copy, sync and verify
    // their own tables; every command checks every table.
    for cmd in ["copy", "sync", "verify", "cutover", "rollback", "status"] {
        assert_connecting(&s.config, &[cmd]);
    }

    // The test itself can fail: an unknown key anywhere, or a bad value, is refused as a
    // config error before any connection.
    for (what, bad) in [
        (
            "unknown key in [copy]",
            s.toml.replace("[copy]\n", "[copy]\nbogus = 1\n"),
        ),
        ("unknown top-level key", format!("bogus = 1\n{}", s.toml)),
        (
            "bad value",
            s.toml.replace("max_lag = \"2s\"", "max_lag = \"soon\""),
        ),
        (
            "unknown [[pooler]] key",
            s.toml
                .replace("[[pooler]]\n", "[[pooler]]\nbogus = \"x\"\n"),
        ),
    ] {
        assert_ne!(bad, s.toml, "{what}: the replacement did not apply");
        std::fs::write(&s.config, &bad).unwrap();
        let (code, message) = run(&s.config, &["copy"]);
        assert_eq!(code, Some(2), "{what}: {message}");
        assert!(message.contains("config file"), "{what}: {message}");
    }
}

#[test]
fn job_and_deployment_args_are_ones_bluegreen_takes() {
    let s = setup();
    let with_file = |args: Vec<String>| -> Vec<String> {
        let mut args = args;
        let at = args.iter().position(|a| a == "--config");
        assert_eq!(at, Some(0), "--config first: {args:?}");
        let at = 0;
        args[at + 1] = s.config.display().to_string();
        args
    };
    let job = std::fs::read_to_string(k8s_dir().join("copy-job.yaml")).unwrap();
    let args = with_file(container_args(&job));
    assert_eq!(args.last().map(String::as_str), Some("copy"), "{args:?}");
    assert_connecting(Path::new(&args[1]), &refs(&args[2..]));
    let workers = std::fs::read_to_string(k8s_dir().join("copy-workers-job.yaml")).unwrap();
    let args = with_file(container_args(&workers));
    assert_eq!(&args[2..], ["copy", "--join"], "{args:?}");
    assert_connecting(Path::new(&args[1]), &refs(&args[2..]));

    // The sync Deployment's probes need --metrics-addr (issue 17 item 1); until bluegreen has
    // it, its arguments cannot be checked here.
    let help = bluegreen_env(&["sync", "--help"], &[]);
    if !String::from_utf8_lossy(&help.stdout).contains("--metrics-addr") {
        eprintln!("sync has no --metrics-addr yet: sync-deployment.yaml's args not checked");
        return;
    }
    let deployment = std::fs::read_to_string(k8s_dir().join("sync-deployment.yaml")).unwrap();
    let mut args = with_file(container_args(&deployment));
    assert!(args.contains(&"sync".to_string()), "{args:?}");
    // The pod's port, free in a pod, may not be here.
    let at = args
        .iter()
        .position(|a| a == "0.0.0.0:9187")
        .expect("{args:?}");
    args[at] = format!("127.0.0.1:{}", free_port());
    assert_connecting(Path::new(&args[1]), &refs(&args[2..]));
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A PgBouncer started from pgbouncer.yaml's own pgbouncer.ini and databases seed (paths moved
/// into a temporary directory, listening on 127.0.0.1), stopped when dropped.
struct Pooler {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Pooler {
    fn drop(&mut self) {
        // Its own process group: runuser and the PgBouncer under it go together.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Pooler {
    fn admin(&self, command: &str) -> Result<String, String> {
        let out = std::process::Command::new(testkit::pg_bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "bgadmin", "-d", "pgbouncer", "-c", command])
            .env("PGPASSWORD", "bgadmin-pw")
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_pooler(ini: &str, seed: &str) -> Pooler {
    use std::os::unix::process::CommandExt;
    let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("pgbouncer is not installed (scripts/setup.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["conf", "db", "users", "tls"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let port = free_port();
    let ini = ini
        .replace("/etc/pgbouncer/", &format!("{}/", d.display()))
        .replace("listen_addr = 0.0.0.0", "listen_addr = 127.0.0.1")
        .replace("listen_port = 6432", &format!("listen_port = {port}"));
    std::fs::write(d.join("conf/pgbouncer.ini"), ini).unwrap();
    std::fs::write(d.join("db/databases.ini"), seed).unwrap();
    std::fs::write(d.join("users/userlist.txt"), "\"bgadmin\" \"bgadmin-pw\"\n").unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=bluegreen k8s test CA", "-keyout"])
        .arg(d.join("tls/ca.key"))
        .arg("-out")
        .arg(d.join("tls/ca.crt"))
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    let mut cmd = if root {
        // PgBouncer refuses to run as root, as in the pod it runs as a plain user.
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(d)
            .status()
            .unwrap();
        assert!(chown.success());
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", bin]);
        c
    } else {
        std::process::Command::new(bin)
    };
    let log = std::fs::File::create(d.join("pgbouncer.log")).unwrap();
    let child = cmd
        .arg(d.join("conf/pgbouncer.ini"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start pgbouncer");
    let pooler = Pooler { child, dir, port };
    let start = std::time::Instant::now();
    while pooler.admin("SHOW VERSION").is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "pgbouncer did not come up:\n{}",
            pooler.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    pooler
}

/// The row of `db` in SHOW DATABASES, as its host.
fn pooled_host(pooler: &Pooler, db: &str) -> String {
    let rows = pooler.admin("SHOW DATABASES").unwrap();
    let row = rows
        .lines()
        .find(|l| l.starts_with(&format!("{db}|")))
        .unwrap_or_else(|| panic!("{db} not in SHOW DATABASES:\n{rows}"));
    row.split('|').nth(1).unwrap_or_default().to_string()
}

#[test]
fn pgbouncer_config_runs_and_takes_the_flip_the_bluegreen_config_asks_for() {
    let yaml = std::fs::read_to_string(k8s_dir().join("pgbouncer.yaml")).unwrap();
    let ini = block_scalar(&yaml, "pgbouncer.ini");
    let seed = block_scalar(&yaml, "databases.ini");
    let cm = std::fs::read_to_string(k8s_dir().join("configmap.yaml")).unwrap();
    let config: toml::Table = block_scalar(&cm, "bluegreen.toml").parse().unwrap();

    // bluegreen's [[pooler]] names what this PgBouncer has: the included file, the admin
    // console on the loopback at its port, the pooled database, and blue as the seed's host.
    let pooler = &config["pooler"].as_array().unwrap()[0];
    let text = |k: &str| pooler[k].as_str().unwrap().to_string();
    assert!(
        ini.contains(&format!("%include {}\n", text("file"))),
        "{ini}"
    );
    assert!(text("admin").contains("host=127.0.0.1 port=6432 user=bgadmin dbname=pgbouncer"));
    assert!(ini.contains("listen_port = 6432\n") && ini.contains("admin_users = bgadmin\n"));
    let db = text("db");
    let blue = cutover::pooler::parse_endpoint(&text("blue")).unwrap();
    let green = cutover::pooler::parse_endpoint(&text("green")).unwrap();
    assert_eq!(
        cutover::dbfile::current(&seed, &db).map(|e| e.host),
        Some(blue.host)
    );

    // PgBouncer 1.18 takes the file as shipped (no unix socket, log and pid file, SCRAM, TLS
    // to the servers) and the admin console answers bgadmin.
    let p = start_pooler(&ini, &seed);
    assert_eq!(pooled_host(&p, &db), "blue-pg.factory.internal");

    // The flip as cutover does it: the included file rewritten in place, RELOAD.
    let file = p.dir.path().join("db/databases.ini");
    let text = std::fs::read_to_string(&file).unwrap();
    let to = cutover::dbfile::Endpoint {
        dbname: db.clone(),
        ..green
    };
    let new = cutover::dbfile::rewrite(&text, &db, &to).unwrap();
    cutover::dbfile::write_atomically(&file, &new).unwrap();
    p.admin("RELOAD").unwrap();
    assert_eq!(pooled_host(&p, &db), to.host, "{}", p.log());
}
