//! A throwaway PgBouncer: transaction pooling, an admin user, `[databases]` through an
//! included file (the file the cutover coordinator rewrites).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{
    free_port, give_to_server_user, run, server_command, sh_quote, spawn_watchdog,
};
use crate::{pg_bin, Result};

pub const ADMIN_USER: &str = "bgadmin";
pub const ADMIN_PASSWORD: &str = "bgadmin-pw";

pub(crate) fn binary() -> Option<PathBuf> {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[derive(Debug, Clone)]
struct Route {
    name: String,
    host: String,
    port: u16,
    dbname: String,
}

/// Configures a PgBouncer before it starts.
#[derive(Debug, Clone)]
pub struct PgbouncerBuilder {
    routes: Vec<Route>,
    users: Vec<(String, String)>,
    pool_mode: String,
    extra: Vec<(String, String)>,
}

impl Default for PgbouncerBuilder {
    fn default() -> Self {
        PgbouncerBuilder {
            routes: Vec::new(),
            users: Vec::new(),
            pool_mode: "transaction".into(),
            extra: Vec::new(),
        }
    }
}

impl PgbouncerBuilder {
    /// Routes pooled database `name` to `dbname` on `host:port`.
    pub fn database(mut self, name: &str, host: &str, port: u16, dbname: &str) -> Self {
        self.routes.push(Route {
            name: name.into(),
            host: host.into(),
            port,
            dbname: dbname.into(),
        });
        self
    }

    /// A client login (also used by PgBouncer to log in to the server).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    pub fn pool_mode(mut self, mode: &str) -> Self {
        self.pool_mode = mode.into();
        self
    }

    /// Any other `[pgbouncer]` setting.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    pub fn start(self) -> Result<Pgbouncer> {
        Pgbouncer::create(self)
    }
}

/// A running PgBouncer owned by the test.
pub struct Pgbouncer {
    dir: Option<TempDir>,
    port: u16,
}

impl Pgbouncer {
    pub fn builder() -> PgbouncerBuilder {
        PgbouncerBuilder::default()
    }

    fn create(b: PgbouncerBuilder) -> Result<Pgbouncer> {
        let bin = binary().ok_or("pgbouncer is not installed (apt-get install -y pgbouncer)")?;
        let dir = tempfile::Builder::new()
            .prefix("bluegreen-pgbouncer-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path().to_path_buf();
        let routes: String = b
            .routes
            .iter()
            .map(|r| format!("{} = {}\n", r.name, route_line(&r.host, r.port, &r.dbname)))
            .collect();
        fs::write(d.join("databases.ini"), routes).map_err(|e| e.to_string())?;
        let mut users = b.users.clone();
        users.push((ADMIN_USER.into(), ADMIN_PASSWORD.into()));
        let userlist: String = users
            .iter()
            .map(|(u, p)| format!("\"{u}\" \"{p}\"\n"))
            .collect();
        fs::write(d.join("userlist.txt"), userlist).map_err(|e| e.to_string())?;
        give_to_server_user(&d)?;
        spawn_watchdog(&format!(
            "kill -TERM $(cat {pid}) 2>/dev/null; sleep 1; rm -rf {dir}",
            pid = sh_quote(&d.join("pgbouncer.pid").display().to_string()),
            dir = sh_quote(&d.display().to_string())
        ));

        let mut pb = Pgbouncer {
            dir: Some(dir),
            port: 0,
        };
        let mut last = String::new();
        for _ in 0..8 {
            pb.port = free_port()?;
            let mut ini = format!(
                "[databases]\n%include {dir}/databases.ini\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
                 auth_type = md5\nauth_file = {dir}/userlist.txt\nadmin_users = {ADMIN_USER}\n\
                 pool_mode = {mode}\nmax_client_conn = 2000\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = d.display(),
                port = pb.port,
                mode = b.pool_mode,
            );
            if !b.extra.iter().any(|(k, _)| k == "default_pool_size") {
                ini.push_str("default_pool_size = 20\n");
            }
            for (k, v) in &b.extra {
                ini.push_str(&format!("{k} = {v}\n"));
            }
            fs::write(d.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
            give_to_server_user(&d)?;
            let _ = fs::remove_file(d.join("pgbouncer.pid"));
            match run(server_command(&bin).arg("-d").arg(d.join("pgbouncer.ini"))) {
                Ok(_) if pb.wait_ready(Duration::from_secs(10)) => return Ok(pb),
                Ok(_) => last = format!("did not come up:\n{}", pb.log()),
                Err(e) => last = e,
            }
        }
        Err(format!("pgbouncer could not start after 8 tries: {last}"))
    }

    fn wait_ready(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.admin("SHOW VERSION").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("pgbouncer directory").path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("pgbouncer.log")).unwrap_or_default()
    }

    /// The included `[databases]` file.
    pub fn databases_file(&self) -> PathBuf {
        self.dir().join("databases.ini")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir().join("pgbouncer.ini")
    }

    /// libpq URI of a pooled database for `user`.
    pub fn url(&self, db: &str, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// libpq URI of the admin console.
    pub fn admin_url(&self) -> String {
        self.url("pgbouncer", ADMIN_USER, ADMIN_PASSWORD)
    }

    /// Runs a command on the admin console (simple query protocol only) through psql.
    pub fn admin(&self, command: &str) -> Result<String> {
        let out = run(Command::new(pg_bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", ADMIN_USER, "-d", "pgbouncer", "-c", command])
            .env("PGPASSWORD", ADMIN_PASSWORD)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "5"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Points pooled database `name` at another server (rewrites the included file,
    /// then RELOAD): the flip a cutover performs, for tests that set up state by hand.
    pub fn reroute(&self, name: &str, host: &str, port: u16, dbname: &str) -> Result<()> {
        let path = self.databases_file();
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let mut out = String::new();
        for line in text.lines() {
            if line.split('=').next().map(str::trim) == Some(name) {
                out.push_str(&format!("{name} = {}\n", route_line(host, port, dbname)));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        fs::write(&path, out).map_err(|e| e.to_string())?;
        self.admin("RELOAD").map(|_| ())
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.dir().join("pgbouncer.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: plain signal to a pid we started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let start = Instant::now();
                // SAFETY: signal 0 only checks that the process exists.
                while unsafe { libc::kill(pid, 0) } == 0 && start.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn route_line(host: &str, port: u16, dbname: &str) -> String {
    // PgBouncer's quoting: single quotes, '' for a quote.
    let dbname = if dbname.contains([' ', '\'']) {
        format!("'{}'", dbname.replace('\'', "''"))
    } else {
        dbname.to_string()
    };
    format!("host={host} port={port} dbname={dbname}")
}
