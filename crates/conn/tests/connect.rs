//! Connection strings against real servers: every sslmode, each failure kind, PG* variables,
//! ~/.pgpass, and the password never showing in anything printable.

use std::collections::HashMap;
use std::path::PathBuf;

use conn::{ConnSpec, Env, Error, Host, SslMode};
use testkit::Cluster;

struct FakeEnv {
    vars: HashMap<&'static str, String>,
    home: Option<PathBuf>,
}

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn home(&self) -> Option<PathBuf> {
        self.home.clone()
    }
    fn os_user(&self) -> Option<String> {
        Some("osuser".into())
    }
}

fn env(vars: &[(&'static str, &str)]) -> FakeEnv {
    FakeEnv {
        vars: vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        home: None,
    }
}

async fn one(spec: &ConnSpec) -> Result<i32, Error> {
    let c = conn::connect(spec).await?;
    Ok(c.query_one("SELECT 1", &[]).await.unwrap().get(0))
}

#[test]
fn environment_fills_gaps_and_string_wins() {
    let e = env(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "6543"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "require"),
        ("PGPASSWORD", "envpw"),
    ]);
    let s = ConnSpec::parse_with("dbname=strdb", &e).unwrap();
    assert_eq!(s.host, Host::Tcp("envhost".into()));
    assert_eq!(
        (s.port, s.user.as_str(), s.dbname.as_str()),
        (6543, "envuser", "strdb")
    );
    assert_eq!(s.sslmode, SslMode::Require);
    assert_eq!(s.password.as_deref(), Some("envpw"));

    let s = ConnSpec::parse_with("host=/tmp/sock", &env(&[])).unwrap();
    assert_eq!(s.host, Host::Unix("/tmp/sock".into()));
    assert_eq!(
        (s.user.as_str(), s.dbname.as_str(), s.port),
        ("osuser", "osuser", 5432)
    );
    assert_eq!(s.sslmode, SslMode::Prefer);
}

#[test]
fn bad_values_are_named() {
    let e = env(&[]);
    for (input, needle) in [
        ("port=99999", "invalid port"),
        ("sslmode=allow", "allow"),
        ("sslmode=bogus", "unknown sslmode"),
        ("connect_timeout=soon", "connect_timeout"),
        ("host=a,b", "several hosts"),
        ("colour=blue", "unknown option \"colour\""),
    ] {
        let err = ConnSpec::parse_with(input, &e).unwrap_err().to_string();
        assert!(err.contains(needle), "{input}: {err}");
    }
}

#[test]
fn pgpass_is_used_only_when_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".pgpass");
    std::fs::write(
        &file,
        "# comment\nother:5432:*:u:wrong\ndb.example:5432:*:u:pa\\:ss\nlocalhost:*:*:*:sock\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = FakeEnv {
        vars: HashMap::new(),
        home: Some(home.path().into()),
    };
    let s = ConnSpec::parse_with("host=db.example user=u dbname=x", &e).unwrap();
    assert_eq!(s.password.as_deref(), Some("pa:ss"));
    let s = ConnSpec::parse_with("host=/run/pg user=any", &e).unwrap();
    assert_eq!(
        s.password.as_deref(),
        Some("sock"),
        "a socket matches localhost"
    );
    let s = ConnSpec::parse_with("host=db.example user=u password=given", &e).unwrap();
    assert_eq!(
        s.password.as_deref(),
        Some("given"),
        "explicit password wins"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = ConnSpec::parse_with("host=db.example user=u dbname=x", &e).unwrap();
    assert_eq!(s.password, None, "world-readable pgpass is ignored");
}

#[test]
fn password_never_printed() {
    let secret = "Sup3r-S3cret";
    for input in [
        format!("postgresql://u:{secret}@h/db"),
        format!("host=h user=u password='{secret}'"),
    ] {
        let s = ConnSpec::parse_with(&input, &env(&[])).unwrap();
        assert_eq!(s.password.as_deref(), Some(secret));
        for shown in [s.redacted(), format!("{s:?}"), s.target(), s.libpq_env().0] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(!conn::redact(&input).contains(secret));
    }
    let err = ConnSpec::parse_with(&format!("host=h password='{secret}"), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(!err.contains(secret), "{err}");
}

#[tokio::test]
async fn plain_connection_and_failure_kinds() {
    let pg = Cluster::new();
    let e = env(&[]);
    let good = ConnSpec::parse_with(&pg.url("postgres"), &e).unwrap();
    assert_eq!(one(&good).await.unwrap(), 1);

    let mut wrong = good.clone();
    wrong.password = Some("not-the-password".into());
    let err = one(&wrong).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    assert!(err.hint().contains("password"));

    let mut none = good.clone();
    none.password = None;
    assert!(matches!(one(&none).await.unwrap_err(), Error::Auth { .. }));

    let missing = good.with_dbname("no_such_db");
    let err = one(&missing).await.unwrap_err();
    assert!(matches!(err, Error::NoDatabase { .. }), "{err}");
    assert!(err.to_string().contains("no_such_db"));

    let closed = testkit_free_port();
    let s = ConnSpec::parse_with(
        &format!("host=127.0.0.1 port={closed} user=u password=p connect_timeout=2"),
        &e,
    )
    .unwrap();
    let err = one(&s).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&closed.to_string()));

    // TLS asked of a server without it.
    let s = ConnSpec::parse_with(&format!("{} sslmode=require", kv(&pg)), &e).unwrap();
    assert!(matches!(one(&s).await.unwrap_err(), Error::Tls { .. }));
    let s = ConnSpec::parse_with(&format!("{} sslmode=prefer", kv(&pg)), &e).unwrap();
    assert_eq!(one(&s).await.unwrap(), 1, "prefer falls back to plain");
}

#[tokio::test]
async fn tls_modes() {
    let pg = Cluster::builder().tls().start().unwrap();
    let ca = pg.ca_cert().unwrap();
    let e = env(&[]);
    let is_ssl = |spec: ConnSpec| async move {
        let c = conn::connect(&spec).await?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        Ok::<bool, Error>(row.get(0))
    };
    let base = kv(&pg);
    for mode in ["prefer", "require"] {
        let s = ConnSpec::parse_with(&format!("{base} sslmode={mode}"), &e).unwrap();
        assert!(is_ssl(s).await.unwrap(), "{mode}");
    }
    let full = format!("{base} sslmode=verify-full sslrootcert={}", ca.display());
    assert!(is_ssl(ConnSpec::parse_with(&full, &e).unwrap())
        .await
        .unwrap());

    // The certificate names localhost and 127.0.0.1, not this host: verify-ca accepts,
    // verify-full refuses.
    let other_name = format!(
        "host=wrong.example hostaddr=127.0.0.1 port={} user=postgres password={} dbname=postgres sslrootcert={}",
        pg.port(),
        pg.password(),
        ca.display()
    );
    let s = ConnSpec::parse_with(&format!("{other_name} sslmode=verify-ca"), &e).unwrap();
    assert!(is_ssl(s).await.unwrap());
    let s = ConnSpec::parse_with(&format!("{other_name} sslmode=verify-full"), &e).unwrap();
    let err = is_ssl(s).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");

    // verify-full without a CA says how to give one.
    let s = ConnSpec::parse_with(&format!("{base} sslmode=verify-full"), &e).unwrap();
    let err = is_ssl(s).await.unwrap_err();
    assert!(err.to_string().contains("sslrootcert"), "{err}");

    // A CA that did not sign the server's certificate.
    let stranger = Cluster::builder().tls().start().unwrap();
    let s = ConnSpec::parse_with(
        &format!(
            "{base} sslmode=verify-ca sslrootcert={}",
            stranger.ca_cert().unwrap().display()
        ),
        &e,
    )
    .unwrap();
    assert!(matches!(is_ssl(s).await.unwrap_err(), Error::Tls { .. }));
}

fn kv(pg: &Cluster) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres",
        pg.port(),
        pg.password()
    )
}

fn testkit_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn client_certificate_from_keys_environment_and_home() {
    let home = tempfile::tempdir().unwrap();
    let none = FakeEnv {
        vars: HashMap::new(),
        home: Some(home.path().into()),
    };
    let s = ConnSpec::parse_with("host=h", &none).unwrap();
    assert_eq!((s.sslcert, s.sslkey), (None, None), "no default files");

    let dir = home.path().join(".postgresql");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("postgresql.crt"), "x").unwrap();
    let s = ConnSpec::parse_with("host=h", &none).unwrap();
    assert_eq!(s.sslcert, Some(dir.join("postgresql.crt")));
    assert_eq!(
        s.sslkey,
        Some(dir.join("postgresql.key")),
        "libpq's default key"
    );

    let e = FakeEnv {
        vars: [
            ("PGSSLCERT", "/env/c.crt".into()),
            ("PGSSLKEY", "/env/c.key".into()),
        ]
        .into(),
        home: Some(home.path().into()),
    };
    let s = ConnSpec::parse_with("host=h", &e).unwrap();
    assert_eq!(s.sslcert, Some("/env/c.crt".into()));
    assert_eq!(s.sslkey, Some("/env/c.key".into()));
    let s = ConnSpec::parse_with("host=h sslcert=/s/c.crt sslkey=/s/c.key", &e).unwrap();
    assert_eq!(
        s.sslcert,
        Some("/s/c.crt".into()),
        "the string beats PGSSLCERT"
    );
    assert_eq!(s.sslkey, Some("/s/c.key".into()));
    let dsn = s.libpq_env().0;
    assert!(
        dsn.contains("sslcert=/s/c.crt") && dsn.contains("sslkey=/s/c.key"),
        "{dsn}"
    );
    assert!(
        s.redacted().contains("sslcert=/s/c.crt"),
        "{}",
        s.redacted()
    );
}

#[tokio::test]
async fn client_certificate_login() {
    use std::os::unix::fs::PermissionsExt;
    let pg = Cluster::builder().client_cert().start().unwrap();
    let (cert, key) = pg.client_cert().unwrap();
    let e = env(&[]);
    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        pg.port(),
        pg.ca_cert().unwrap().display()
    );
    let with_cert = format!("{base} sslcert={} sslkey={}", cert.display(), key.display());
    let c = conn::connect(&ConnSpec::parse_with(&with_cert, &e).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = c
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("/CN=postgres")
    );

    // Without the certificate the server refuses (the hba line wants one).
    let err = one(&ConnSpec::parse_with(&base, &e).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // A key others can read is refused before dialling, with the fix.
    let loose = tempfile::tempdir().unwrap();
    let loose_key = loose.path().join("client.key");
    std::fs::copy(&key, &loose_key).unwrap();
    std::fs::set_permissions(&loose_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = ConnSpec::parse_with(
        &format!(
            "{base} sslcert={} sslkey={}",
            cert.display(),
            loose_key.display()
        ),
        &e,
    )
    .unwrap();
    let err = one(&s).await.unwrap_err();
    assert!(matches!(err, Error::ClientCert { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("group or world access") && text.contains("chmod 0600"),
        "{text}"
    );

    // A named certificate that is not there is an error, not a silent password attempt.
    let s = ConnSpec::parse_with(&format!("{base} sslcert=/no/such.crt"), &e).unwrap();
    let err = one(&s).await.unwrap_err();
    assert!(matches!(err, Error::ClientCert { .. }), "{err}");
    assert!(err.to_string().contains("/no/such.crt"), "{err}");
}

#[test]
fn service_file_between_string_and_environment() {
    let home = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".pg_service.conf"),
        "[prod]\nhost=svc.example\nport=6000\ndbname=svcdb\nsslmode=require\n",
    )
    .unwrap();
    std::fs::write(
        sys.path().join("pg_service.conf"),
        "[prod]\nhost=never-used\n[sys]\nhost=sys.example\n",
    )
    .unwrap();
    let e = FakeEnv {
        vars: [
            ("PGSYSCONFDIR", sys.path().display().to_string()),
            ("PGPORT", "7000".into()),
            ("PGUSER", "envuser".into()),
        ]
        .into(),
        home: Some(home.path().into()),
    };
    let s = ConnSpec::parse_with("service=prod dbname=strdb", &e).unwrap();
    assert_eq!(s.host, Host::Tcp("svc.example".into()), "user file first");
    assert_eq!(s.port, 6000, "the service beats PGPORT");
    assert_eq!(s.dbname, "strdb", "the string beats the service");
    assert_eq!(s.user, "envuser", "the environment fills the rest");
    assert_eq!(s.sslmode, SslMode::Require);
    assert_eq!(s.service.as_deref(), Some("prod"));
    assert!(s.redacted().contains("service=prod"), "{}", s.redacted());
    let dsn = s.libpq_env().0;
    assert!(
        dsn.contains("host=svc.example") && dsn.contains("port=6000") && !dsn.contains("service"),
        "pg_dump gets the resolved keys: {dsn}"
    );

    let s = ConnSpec::parse_with("postgresql:///?service=sys", &e).unwrap();
    assert_eq!(s.host, Host::Tcp("sys.example".into()), "then PGSYSCONFDIR");

    let mut e = e;
    e.vars.insert("PGSERVICE", "sys".into());
    let s = ConnSpec::parse_with("", &e).unwrap();
    assert_eq!(s.host, Host::Tcp("sys.example".into()), "PGSERVICE");

    let err = ConnSpec::parse_with("service=nope", &e).unwrap_err();
    assert!(matches!(err, Error::Service(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"nope\"")
            && text.contains(&home.path().join(".pg_service.conf").display().to_string())
            && text.contains(&sys.path().join("pg_service.conf").display().to_string()),
        "names the files searched: {text}"
    );

    let other = home.path().join("other.conf");
    std::fs::write(&other, "[prod]\nport=6100\n").unwrap();
    e.vars.insert("PGSERVICEFILE", other.display().to_string());
    let s = ConnSpec::parse_with("service=prod", &e).unwrap();
    assert_eq!(s.port, 6100, "PGSERVICEFILE replaces ~/.pg_service.conf");
}

#[tokio::test]
async fn service_file_supplies_the_server() {
    let pg = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.conf");
    std::fs::write(
        &file,
        format!(
            "[migration source]\nhost=127.0.0.1\nport={}\ndbname=svc_db\nuser=postgres\nsslmode=disable\n",
            pg.port()
        ),
    )
    .unwrap();
    pg.create_database("svc_db");
    let e = env(&[
        ("PGSERVICEFILE", &file.display().to_string()),
        ("PGSYSCONFDIR", &dir.path().display().to_string()),
        ("PGPASSWORD", pg.password()),
    ]);
    let s = ConnSpec::parse_with("service='migration source'", &e).unwrap();
    let c = conn::connect(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "svc_db");
}

#[test]
fn keepalives_default_for_a_wan_and_keys_override() {
    use std::time::Duration;
    let e = env(&[]);
    let s = ConnSpec::parse_with("host=h", &e).unwrap();
    let k = s.keepalives;
    assert!(k.enabled);
    assert_eq!(
        (k.idle, k.interval, k.count, k.tcp_user_timeout),
        (
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(5)),
            Some(3),
            Some(Duration::from_secs(30))
        )
    );
    let cfg = conn::pg_config(&s).unwrap();
    assert!(cfg.get_keepalives());
    assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(10));
    assert_eq!(cfg.get_keepalives_interval(), Some(Duration::from_secs(5)));
    assert_eq!(cfg.get_keepalives_retries(), Some(3));
    assert_eq!(cfg.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
    let dsn = s.libpq_env().0;
    assert!(
        dsn.contains("keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=30000"),
        "pg_dump gets the same settings: {dsn}"
    );
    assert!(
        !s.redacted().contains("keepalives"),
        "defaults are not shown: {}",
        s.redacted()
    );

    let s = ConnSpec::parse_with(
        "postgresql://h/db?keepalives_idle=60&keepalives_interval=0&keepalives_count=9&tcp_user_timeout=1500",
        &e,
    )
    .unwrap();
    let k = s.keepalives;
    assert_eq!(
        (k.idle, k.interval, k.count, k.tcp_user_timeout),
        (
            Some(Duration::from_secs(60)),
            None,
            Some(9),
            Some(Duration::from_millis(1500))
        ),
        "0 leaves the system's value, as in libpq"
    );
    let cfg = conn::pg_config(&s).unwrap();
    assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(60));
    assert_eq!(cfg.get_keepalives_retries(), Some(9));
    assert_eq!(
        cfg.get_tcp_user_timeout(),
        Some(&Duration::from_millis(1500))
    );
    let shown = s.redacted();
    assert!(
        shown.contains("keepalives_idle=60")
            && shown.contains("keepalives_interval=0")
            && !shown.contains("keepalives=1"),
        "{shown}"
    );
    assert!(s.libpq_env().0.contains("keepalives_interval=0 "));

    let s = ConnSpec::parse_with("host=h keepalives=0", &e).unwrap();
    assert!(!s.keepalives.enabled);
    assert!(!conn::pg_config(&s).unwrap().get_keepalives());
    assert!(s.libpq_env().0.contains("keepalives=0"));

    for (input, needle) in [
        ("keepalives=yes", "invalid keepalives"),
        ("keepalives_idle=-1", "invalid keepalives_idle"),
        ("keepalives_count=x", "invalid keepalives_count"),
        ("tcp_user_timeout=1.5", "invalid tcp_user_timeout"),
    ] {
        let err = ConnSpec::parse_with(input, &e).unwrap_err().to_string();
        assert!(err.contains(needle), "{input}: {err}");
    }
}

#[test]
fn hostaddr_alone_means_tcp_to_it() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".pgpass");
    std::fs::write(
        &file,
        "localhost:*:*:*:socket-pw\n10.1.2.3:5432:*:u:addr-pw\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = FakeEnv {
        vars: HashMap::new(),
        home: Some(home.path().into()),
    };
    let s = ConnSpec::parse_with("hostaddr=10.1.2.3 user=u", &e).unwrap();
    assert_eq!(
        s.host,
        Host::Tcp("10.1.2.3".into()),
        "not the default socket directory"
    );
    assert!(s.host_from_hostaddr);
    assert_eq!(
        s.password.as_deref(),
        Some("addr-pw"),
        "pgpass matches the address"
    );
    let dsn = s.libpq_env().0;
    assert!(dsn.starts_with("hostaddr=10.1.2.3 port=5432"), "{dsn}");
    assert!(!s.redacted().contains("host="), "{}", s.redacted());

    // PGHOSTADDR too; a socket directory beside it does not win either (libpq dials hostaddr).
    let e2 = env(&[("PGHOSTADDR", "10.9.9.9")]);
    let s = ConnSpec::parse_with("host=/tmp", &e2).unwrap();
    assert_eq!(s.host, Host::Tcp("10.9.9.9".into()));

    // With a host name, the name is what pgpass, TLS and messages use.
    let s = ConnSpec::parse_with("host=db.example hostaddr=10.1.2.3 user=u", &e).unwrap();
    assert_eq!(s.host, Host::Tcp("db.example".into()));
    assert!(!s.host_from_hostaddr);
    assert_eq!(s.password, None);

    // verify-full has no name to check without host=; verify-ca does not need one.
    let ca = home.path().join("ca.crt");
    std::fs::write(&ca, "not used").unwrap();
    let s = ConnSpec::parse_with(
        &format!(
            "hostaddr=10.1.2.3 sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        &e,
    )
    .unwrap();
    let err = s.tls_config().unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("add host="), "{err}");

    let err = ConnSpec::parse_with("hostaddr=db.example", &e).unwrap_err();
    assert!(err.to_string().contains("not an IP address"), "{err}");
}

#[tokio::test]
async fn hostaddr_alone_connects_over_tcp() {
    let pg = Cluster::builder().tls().start().unwrap();
    let e = env(&[]);
    for mode in ["disable", "require"] {
        let s = ConnSpec::parse_with(
            &format!(
                "hostaddr=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode={mode}",
                pg.port(),
                pg.password()
            ),
            &e,
        )
        .unwrap();
        let c = conn::connect(&s)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let row = c
            .query_one(
                "SELECT host(client_addr), ssl FROM pg_stat_activity JOIN pg_stat_ssl USING (pid) WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(row.get::<_, bool>(1), mode == "require");
    }
}

#[test]
fn passwords_from_a_service_stay_hidden() {
    let secret = "Svc-S3cret";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.conf");
    std::fs::write(
        &file,
        format!("[s]\nhost=h\npassword={secret}\nsslcert=/c/client.crt\nsslkey=/c/client.key\nkeepalives_idle=17\nconnect_timeout=9\n"),
    )
    .unwrap();
    let e = env(&[("PGSERVICEFILE", &file.display().to_string())]);
    let s = ConnSpec::parse_with("service=s", &e).unwrap();
    assert_eq!(s.password.as_deref(), Some(secret));
    let (dsn, vars) = s.libpq_env();
    for shown in [s.redacted(), format!("{s:?}"), dsn.clone()] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(vars, vec![("PGPASSWORD", secret.to_string())]);
    for key in [
        "host=h",
        "sslcert=/c/client.crt",
        "sslkey=/c/client.key",
        "keepalives_idle=17",
        "connect_timeout=9",
    ] {
        assert!(dsn.contains(key), "{key} missing from {dsn}");
    }
    assert!(s.redacted().contains("password=***"), "{}", s.redacted());
}

/// pg_dump and psql get what bluegreen resolved (service, hostaddr, client certificate), so
/// they reach the same server the same way.
#[test]
fn libpq_programs_connect_the_same_way() {
    let pg = Cluster::builder().client_cert().start().unwrap();
    let (cert, key) = pg.client_cert().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.conf");
    std::fs::write(
        &file,
        format!(
            "[certs]\nhostaddr=127.0.0.1\nport={}\nuser=postgres\ndbname=postgres\nsslmode=verify-ca\nsslrootcert={}\nsslcert={}\nsslkey={}\n",
            pg.port(),
            pg.ca_cert().unwrap().display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let e = env(&[("PGSERVICEFILE", &file.display().to_string())]);
    let s = ConnSpec::parse_with("service=certs keepalives_idle=20", &e).unwrap();
    let (dsn, vars) = s.libpq_env();
    assert!(!dsn.contains("service"), "{dsn}");
    let out = std::process::Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c"])
        .arg("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .arg(&dsn)
        .envs(vars)
        .env_remove("PGSERVICE")
        .env_remove("PGSERVICEFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql with {dsn}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/CN=postgres");
}
