//! Replication connections against real PostgreSQL 15: authentication methods, TLS modes,
//! unix sockets, and typed errors for refused logins.

mod common;

use conn::ConnSpec;
use testkit::Cluster;
use wire::{sqlstate, Error, Lsn, ReplicationConnection};

async fn try_connect(dsn: &str) -> Result<ReplicationConnection, Error> {
    ReplicationConnection::connect(&ConnSpec::parse(dsn).expect("dsn")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_system_and_sql_on_a_walsender_session() {
    let pg = Cluster::new();
    let mut c = common::connect(&pg, "postgres").await;
    let id = c.identify_system().await.unwrap();
    assert_eq!(id.timeline, 1);
    assert_eq!(id.dbname.as_deref(), Some("postgres"));
    assert!(id.xlogpos > Lsn::ZERO);
    assert!(c.parameter("server_version").unwrap().starts_with("15"));
    let r = c
        .simple_query("SELECT 1 AS one, NULL AS nothing")
        .await
        .unwrap();
    assert_eq!(r[0].columns, ["one", "nothing"]);
    assert_eq!(r[0].rows, vec![vec![Some("1".to_string()), None]]);
    let kind = pg.sql(
        "postgres",
        &format!(
            "SELECT backend_type || ' ' || application_name FROM pg_stat_activity WHERE pid = {}",
            c.backend_pid()
        ),
    );
    assert_eq!(kind, "walsender wire-test");
    // A failed statement leaves the session usable.
    let err = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"), "{err}");
    assert_eq!(c.identify_system().await.unwrap().system_id, id.system_id);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_md5_passwords() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'sc''ram pw'",
    );
    pg.sql(
        "postgres",
        "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5 pw'",
    );
    let stored = pg.sql(
        "postgres",
        "SELECT rolname || ':' || left(rolpassword, 6) FROM pg_authid \
         WHERE rolname IN ('scram_user', 'md5_user') ORDER BY 1",
    );
    assert!(
        stored.contains("md5_user:md5") && stored.contains("scram_user:SCRAM-"),
        "{stored}"
    );

    for (user, pw) in [("scram_user", "sc'ram pw"), ("md5_user", "md5 pw")] {
        let mut c = try_connect(&common::dsn_as(&pg, "postgres", user, pw, ""))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(c.identify_system().await.is_ok());
        c.close().await;

        let err = try_connect(&common::dsn_as(&pg, "postgres", user, "wrong", ""))
            .await
            .err()
            .expect("wrong password must fail");
        assert_eq!(
            err.code(),
            Some(sqlstate::INVALID_PASSWORD),
            "{user}: {err}"
        );
        let db = err.db().unwrap();
        assert_eq!(db.severity, "FATAL");
        assert!(
            db.message.contains("password authentication failed"),
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_without_replication_is_refused_with_its_sqlstate() {
    let pg = Cluster::new();
    pg.sql("postgres", "CREATE ROLE plain_user LOGIN PASSWORD 'pw'");
    let err = try_connect(&common::dsn_as(&pg, "postgres", "plain_user", "pw", ""))
        .await
        .err()
        .expect("a role without REPLICATION cannot start a walsender");
    assert_eq!(err.code(), Some(sqlstate::INSUFFICIENT_PRIVILEGE), "{err}");
    assert!(err.to_string().contains("replication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket() {
    let pg = Cluster::new();
    let sock = pg.data_dir().parent().unwrap().join("sock");
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres",
        sock.display(),
        pg.port()
    );
    let mut c = try_connect(&dsn).await.unwrap();
    assert!(!c.is_tls());
    assert_eq!(
        c.identify_system().await.unwrap().dbname.as_deref(),
        Some("postgres")
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full() {
    let pg = Cluster::builder().tls().start().unwrap();
    let ca = pg.ca_cert().unwrap();
    // SCRAM over TLS: the server then also offers SCRAM-SHA-256-PLUS; we answer without
    // channel binding, which the server must accept.
    pg.sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE tls_user LOGIN REPLICATION PASSWORD 'tls pw'",
    );
    let base = |extra: &str| {
        format!(
            "port={} user=tls_user password='tls pw' dbname=postgres {extra}",
            pg.port()
        )
    };
    for extra in [
        "host=127.0.0.1 sslmode=require".to_string(),
        "host=127.0.0.1 sslmode=prefer".to_string(),
        format!(
            "host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        format!(
            "host=127.0.0.1 sslmode=verify-ca sslrootcert={}",
            ca.display()
        ),
    ] {
        let mut c = try_connect(&base(&extra))
            .await
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(c.is_tls(), "{extra}");
        let ssl = c
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(ssl[0].first("ssl"), Some("t"), "{extra}");
        c.close().await;
    }

    // A certificate from another CA fails verification.
    let stranger = Cluster::builder().tls().start().unwrap();
    let err = try_connect(&base(&format!(
        "host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={}",
        stranger.ca_cert().unwrap().display()
    )))
    .await
    .err()
    .expect("foreign CA must be refused");
    assert!(matches!(err, Error::Tls(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_against_a_server_without_tls() {
    let pg = Cluster::new();
    let dsn = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode={mode}",
            pg.port(),
            pg.password()
        )
    };
    let c = try_connect(&dsn("prefer")).await.unwrap();
    assert!(
        !c.is_tls(),
        "prefer falls back to plain when the server says N"
    );
    c.close().await;
    let err = try_connect(&dsn("require"))
        .await
        .err()
        .expect("require must fail");
    assert!(
        matches!(err, Error::Tls(ref m) if m.contains("does not accept TLS")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_names_the_target() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = try_connect(&format!(
        "host=127.0.0.1 port={port} user=postgres password=x dbname=postgres sslmode=disable"
    ))
    .await
    .err()
    .expect("nothing listens there");
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_login() {
    let pg = Cluster::builder().client_cert().start().unwrap();
    let (cert, key) = pg.client_cert().unwrap();
    let base = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        pg.port(),
        pg.ca_cert().unwrap().display()
    );
    let mut c = try_connect(&format!(
        "{base} sslcert={} sslkey={}",
        cert.display(),
        key.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.is_tls());
    assert_eq!(
        c.identify_system().await.unwrap().dbname.as_deref(),
        Some("postgres")
    );
    let dn = c
        .simple_query("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(dn[0].first("client_dn"), Some("/CN=postgres"));
    c.close().await;

    let err = try_connect(&base)
        .await
        .err()
        .expect("the hba line wants a certificate");
    assert_eq!(
        err.code(),
        Some(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_settings_reach_the_socket() {
    use std::time::Duration;
    let pg = Cluster::new();
    let opts = |extra: &str| {
        let dsn = common::dsn(&pg, "postgres", extra);
        async move {
            let c = try_connect(&dsn).await.unwrap_or_else(|e| panic!("{e}"));
            let o = c.tcp_options().expect("a TCP socket").unwrap();
            c.close().await;
            o
        }
    };
    let o = opts("").await;
    assert_eq!(
        o,
        wire::TcpOptions {
            keepalive: true,
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(5),
            count: 3,
            user_timeout: Duration::from_secs(30),
        },
        "bluegreen's defaults"
    );
    let o =
        opts("keepalives_idle=42 keepalives_interval=7 keepalives_count=4 tcp_user_timeout=12000")
            .await;
    assert_eq!(
        (o.keepalive, o.idle, o.interval, o.count, o.user_timeout),
        (
            true,
            Duration::from_secs(42),
            Duration::from_secs(7),
            4,
            Duration::from_secs(12)
        )
    );
    let o = opts("keepalives=0 tcp_user_timeout=0").await;
    assert!(!o.keepalive);
    assert_eq!(o.user_timeout, Duration::ZERO);

    // TLS too: the options sit on the TCP socket under it.
    let tls = Cluster::builder().tls().start().unwrap();
    let c = try_connect(&format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode=require keepalives_idle=11",
        tls.port(),
        tls.password()
    ))
    .await
    .unwrap();
    assert!(c.is_tls());
    assert_eq!(
        c.tcp_options().unwrap().unwrap().idle,
        Duration::from_secs(11)
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostaddr_alone_dials_tcp() {
    let pg = Cluster::builder().tls().start().unwrap();
    for extra in [
        "sslmode=disable".to_string(),
        format!(
            "sslmode=verify-ca sslrootcert={}",
            pg.ca_cert().unwrap().display()
        ),
    ] {
        let mut c = try_connect(&format!(
            "hostaddr=127.0.0.1 port={} user=postgres password={} dbname=postgres {extra}",
            pg.port(),
            pg.password()
        ))
        .await
        .unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(c.tcp_options().is_some(), "a TCP socket");
        assert_eq!(c.is_tls(), extra.contains("verify-ca"));
        let r = c
            .simple_query(
                "SELECT host(client_addr) AS a FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            )
            .await
            .unwrap();
        assert_eq!(r[0].first("a"), Some("127.0.0.1"), "{extra}");
        assert!(c.identify_system().await.is_ok());
        c.close().await;
    }
}
