//! A throwaway PostgreSQL cluster: initdb (once per process, then copied), pg_ctl start on a
//! free port, stop and delete on drop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::process::{
    free_port, give_to_server_user, run, server_command, sh_quote, spawn_watchdog,
};
use crate::{pg_bin, Result};

/// Superuser of every test cluster.
pub const SUPERUSER: &str = "postgres";

/// Settings every cluster gets: logical decoding on, room for slots, no durability cost.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("wal_level", "logical"),
    ("max_replication_slots", "20"),
    ("max_wal_senders", "20"),
    ("max_connections", "100"),
    // Lets sync apply over two sessions (two-phase commit), as it does by default.
    ("max_prepared_transactions", "4"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("log_min_messages", "warning"),
    ("log_statement", "none"),
];

/// Configures a cluster before it starts.
#[derive(Debug, Clone, Default)]
pub struct ClusterBuilder {
    settings: Vec<(String, String)>,
    hba: Vec<String>,
    tls: bool,
    client_cert: bool,
}

impl ClusterBuilder {
    /// Sets a `postgresql.conf` parameter (value as it would be written in the file,
    /// quoted where the file needs quotes).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Adds a `pg_hba.conf` line in front of the defaults.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba.push(line.into());
        self
    }

    /// Serves TLS with a fresh self-signed certificate for `localhost` and `127.0.0.1`;
    /// `Cluster::ca_cert` gives the certificate to trust.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Like [`ClusterBuilder::tls`], and the same CA also signs a client certificate for the
    /// superuser (`Cluster::client_cert`); TCP logins, replication ones included, then need
    /// that certificate (`hostssl ... cert`) instead of a password.
    pub fn client_cert(mut self) -> Self {
        self.tls = true;
        self.client_cert = true;
        self.hba_line("hostssl all all 127.0.0.1/32 cert")
            .hba_line("hostssl replication all 127.0.0.1/32 cert")
    }

    /// Preloads TimescaleDB (check [`crate::timescaledb_available`] first).
    pub fn timescaledb(self) -> Self {
        self.setting("shared_preload_libraries", "'timescaledb'")
            .setting("timescaledb.telemetry_level", "off")
    }

    pub fn start(self) -> Result<Cluster> {
        Cluster::create(self)
    }
}

/// A running PostgreSQL 15 cluster owned by the test.
pub struct Cluster {
    dir: Option<TempDir>,
    port: u16,
    password: &'static str,
    tls: bool,
    client_cert: bool,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// A cluster with the default settings; panics with the reason when it cannot start.
    pub fn new() -> Cluster {
        ClusterBuilder::default()
            .start()
            .unwrap_or_else(|e| panic!("testkit: cannot start PostgreSQL: {e}"))
    }

    fn create(b: ClusterBuilder) -> Result<Cluster> {
        let template = template()?;
        let dir = tempfile::Builder::new()
            .prefix("bluegreen-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(template).arg(&data))?;
        fs::create_dir(dir.path().join("sock")).map_err(|e| e.to_string())?;

        let mut conf = String::from("\n# testkit\n");
        for (k, v) in BASE_SETTINGS {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            dir.path().join("sock").display()
        ));
        if b.tls {
            write_self_signed_cert(dir.path())?;
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
                dir.path().display()
            ));
        }
        if b.client_cert {
            write_client_cert(dir.path())?;
            conf.push_str(&format!(
                "ssl_ca_file = '{}/ca.crt'\n",
                dir.path().display()
            ));
        }
        for (k, v) in &b.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        if !b.hba.is_empty() {
            let old = fs::read_to_string(data.join("pg_hba.conf")).map_err(|e| e.to_string())?;
            let new = format!("{}\n{old}", b.hba.join("\n"));
            fs::write(data.join("pg_hba.conf"), new).map_err(|e| e.to_string())?;
        }
        give_to_server_user(dir.path())?;

        spawn_watchdog(&format!(
            "{} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            if crate::process::is_root() {
                format!("runuser -u postgres -- {}", pg_bin("pg_ctl").display())
            } else {
                pg_bin("pg_ctl").display().to_string()
            },
            sh_quote(&data.display().to_string()),
            sh_quote(&dir.path().display().to_string())
        ));

        let mut cluster = Cluster {
            dir: Some(dir),
            port: 0,
            password: password(),
            tls: b.tls,
            client_cert: b.client_cert,
        };
        let mut last = String::new();
        for _ in 0..8 {
            cluster.port = free_port()?;
            append(
                &data.join("postgresql.conf"),
                &format!("port = {}\n", cluster.port),
            )?;
            match cluster.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log")) {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(format!(
            "could not start after 8 tries: {last}\n{}",
            cluster.log()
        ))
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&str>) -> Result<()> {
        let mut cmd = server_command(&pg_bin("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(args);
        if let Some(log) = log {
            cmd.arg(self.dir().join(log));
        }
        run(&mut cmd).map(|_| ())
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The server log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password (the same for every cluster of this process).
    pub fn password(&self) -> &'static str {
        self.password
    }

    /// libpq URI with the superuser's password, for `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{}/{db}?sslmode=disable",
            self.password, self.port
        )
    }

    /// key=value connection string without a password (for PGPASSWORD / .pgpass tests).
    pub fn dsn_no_password(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={db} sslmode=disable",
            self.port
        )
    }

    /// PEM of the CA that signed the server certificate, when started with `tls()`.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir().join("ca.crt"))
    }

    /// The superuser's client certificate and key (mode 0600), when started with
    /// `client_cert()`.
    pub fn client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        self.client_cert
            .then(|| (self.dir().join("client.crt"), self.dir().join("client.key")))
    }

    /// Runs SQL through psql as the superuser and returns unaligned, tuples-only output.
    /// Stops at the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = run(self.psql_command(db).arg("-c").arg(sql))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Like [`Cluster::psql`] but panics with the error: for test setup.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.psql(db, sql)
            .unwrap_or_else(|e| panic!("testkit: psql on {db} failed: {e}"))
    }

    /// Runs an SQL file through psql.
    pub fn psql_file(&self, db: &str, file: &Path) -> Result<String> {
        let out = run(self.psql_command(db).arg("-f").arg(file))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// A psql command for `db` with connection settings and the password in its environment.
    pub fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", SUPERUSER, "-d", db])
        .env("PGPASSWORD", self.password)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    pub fn create_database(&self, name: &str) {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// Stops the server (fast shutdown), keeping its data: for "target down" tests.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-w", "-m", "fast"], None)
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log"))
    }

    /// A physical standby of this cluster (pg_basebackup, streaming), running on a port of
    /// its own; [`Cluster::promote`] makes it a primary.
    pub fn standby(&self) -> Result<Cluster> {
        self.standby_via(self.port)
    }

    /// Like [`Cluster::standby`], streaming through `port` (a [`crate::Proxy`] in front of
    /// this cluster, say, to cut the standby off).
    pub fn standby_via(&self, port: u16) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("bluegreen-pg-standby-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        fs::create_dir(dir.path().join("sock")).map_err(|e| e.to_string())?;
        give_to_server_user(dir.path())?;
        let data = dir.path().join("data");
        run(server_command(&pg_bin("pg_basebackup"))
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={port} user={SUPERUSER} password={} application_name=standby",
                self.password
            )))?;
        spawn_watchdog(&format!(
            "{} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            if crate::process::is_root() {
                format!("runuser -u postgres -- {}", pg_bin("pg_ctl").display())
            } else {
                pg_bin("pg_ctl").display().to_string()
            },
            sh_quote(&data.display().to_string()),
            sh_quote(&dir.path().display().to_string())
        ));
        append(
            &data.join("postgresql.conf"),
            &format!(
                "unix_socket_directories = '{}'\n",
                dir.path().join("sock").display()
            ),
        )?;
        let mut standby = Cluster {
            dir: Some(dir),
            port: 0,
            password: self.password,
            tls: false,
            client_cert: false,
        };
        let mut last = String::new();
        for _ in 0..8 {
            standby.port = free_port()?;
            append(
                &data.join("postgresql.conf"),
                &format!("port = {}\n", standby.port),
            )?;
            match standby.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log")) {
                Ok(()) => return Ok(standby),
                Err(e) => last = e,
            }
        }
        Err(format!(
            "standby could not start: {last}\n{}",
            standby.log()
        ))
    }

    /// Promotes a standby to primary (waits until it takes writes).
    pub fn promote(&self) -> Result<()> {
        self.pg_ctl(&["promote", "-w", "-t", "60"], None)
    }

    /// Stops the server at once, as a crash would (no checkpoint, clients cut off).
    pub fn crash(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-w", "-m", "immediate"], None)
    }

    /// Changes settings and restarts (for parameters that need a restart, like wal_level).
    pub fn restart_with(&self, settings: &[(&str, &str)]) -> Result<()> {
        let conf: String = settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        append(&self.data_dir().join("postgresql.conf"), &conf)?;
        self.pg_ctl(
            &["restart", "-w", "-t", "60", "-m", "fast", "-l"],
            Some("server.log"),
        )
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-w", "-m", "immediate"], None);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// One password per test process, distinctive enough to grep for in redaction tests.
fn password() -> &'static str {
    static PW: OnceLock<String> = OnceLock::new();
    PW.get_or_init(|| format!("tk-Pw-{}-{}", std::process::id(), nanos() % 1_000_000))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// initdb runs once per process; clusters copy its result (initdb costs seconds, cp milliseconds).
fn template() -> Result<&'static Path> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("bluegreen-initdb-")
                .tempdir()
                .map_err(|e| format!("tempdir: {e}"))?
                .keep();
            spawn_watchdog(&format!("rm -rf {}", sh_quote(&dir.display().to_string())));
            fs::write(dir.join("pw"), password()).map_err(|e| e.to_string())?;
            give_to_server_user(&dir)?;
            let data = dir.join("data");
            run(server_command(&pg_bin("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--auth-local=trust", "--auth-host=md5", "--no-sync"])
                .arg(format!("--pwfile={}", dir.join("pw").display())))?;
            Ok(data)
        })
        .as_ref()
        .map(|p| p.as_path())
        .map_err(Clone::clone)
}

/// A throwaway CA (`ca.crt`) and a server certificate it signed for localhost and 127.0.0.1,
/// made by the openssl CLI.
fn write_self_signed_cert(dir: &Path) -> Result<()> {
    let p = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=bluegreen testkit CA"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        .map_err(|e| e.to_string())?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.crt")))?;
    private(&p("server.key"))
}

/// A client certificate for the superuser (CN = user name, as `cert` authentication wants)
/// signed by the CA of [`write_self_signed_cert`].
fn write_client_cert(dir: &Path) -> Result<()> {
    let p = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", &format!("/CN={SUPERUSER}")])
        .arg("-keyout")
        .arg(p("client.key"))
        .arg("-out")
        .arg(p("client.csr")))?;
    // Extensions make it an X.509 v3 certificate; rustls refuses v1.
    fs::write(p("client.cnf"), "extendedKeyUsage=clientAuth\n").map_err(|e| e.to_string())?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("client.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("client.cnf"))
        .arg("-out")
        .arg(p("client.crt")))?;
    private(&p("client.key"))
}

fn private(path: &Path) -> Result<()> {
    let mut perms = fs::metadata(path).map_err(|e| e.to_string())?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(path, perms).map_err(|e| e.to_string())
}
