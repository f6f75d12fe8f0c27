//! The fence on the primary clients leave: from the pause on, no session but bluegreen's may
//! write there.
//!
//! `ALTER DATABASE … SET default_transaction_read_only = on` alone binds only sessions that
//! start later, and any of them can `SET default_transaction_read_only = off`. So the fence
//! also revokes CONNECT on the database from PUBLIC and from every role but bluegreen's own
//! (granting bluegreen's role CONNECT first when it had it only through PUBLIC): a session
//! that cannot be opened cannot turn read-only off. What stays open, and is reported: roles
//! that still connect (superusers, whom no grant binds; members of bluegreen's role; grants
//! made by a grantor other than the owner). Sessions already open are the caller's to end.
//! What was revoked is recorded in the state schema on green before the fence goes up, so
//! lifting gives back exactly that.

use std::time::{Duration, Instant};

use conn::quote_ident;
use lsn::Lsn;
use state::{FenceRecord, Grant, Side};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::ctx::Ctx;
use crate::error::sql;
use crate::{far, unreplicated, Error};

/// The role and database a fence is raised or lifted with.
struct Me {
    database: String,
    superuser: bool,
    /// bluegreen's role has a CONNECT grant of its own (not only through PUBLIC).
    direct_connect: bool,
}

async fn me(server: &Client) -> Result<Me, Error> {
    let r = far::row(
        server,
        "database",
        "who am I",
        "SELECT current_database()::text,
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                EXISTS (SELECT 1 FROM pg_database d,
                               aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                         WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'
                           AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = current_user))",
        &[],
    )
    .await?;
    Ok(Me {
        database: r.get(0),
        superuser: r.get(1),
        direct_connect: r.get(2),
    })
}

fn grantee(role: &Option<String>) -> String {
    role.as_deref()
        .map(quote_ident)
        .unwrap_or_else(|| "PUBLIC".into())
}

/// Gives a revoked CONNECT back as it was.
fn grant(db: &str, g: &Grant) -> String {
    format!(
        "GRANT CONNECT ON DATABASE {db} TO {}{}",
        grantee(&g.role),
        if g.grant_option {
            " WITH GRANT OPTION"
        } else {
            ""
        }
    )
}

/// Raises the fence on `server` (recording it on `state` first). Raising it again adds what
/// was granted meanwhile to the record. Returns the roles other than bluegreen's that can
/// still open sessions there.
pub async fn raise(
    server: &Client,
    state: &Client,
    run: &str,
    side: Side,
) -> Result<Vec<String>, Error> {
    // Grants changing under the fence are an operator's doing, and rare: a few tries.
    for _ in 0..3 {
        let fence = prepare(server, state, run, side).await?;
        if let Some(left) = fence.raise(server).await? {
            return Ok(left);
        }
    }
    Err(Error::Guardrail(
        "the CONNECT grants of the database kept changing while the fence went up: stop \
         granting or revoking CONNECT there, then run the flip again"
            .into(),
    ))
}

/// A fence read and recorded, not yet raised (see [`prepare`]).
pub struct Prepared {
    /// The statements that raise it, behind a check that the CONNECT grants are still
    /// the ones recorded.
    batch: String,
}

/// The message of the check's error (see [`Prepared::raise`]).
const GRANTS_CHANGED: &str = "bluegreen: the CONNECT grants changed";

/// What raising the fence needs of `server` (who bluegreen's role is, the CONNECT grants),
/// in one round trip, and the record of what it will revoke, written on `state`: a flip does
/// this before the PAUSE, so that raising the fence inside it takes one round trip. A
/// record without a fence is harmless (lifting it grants what is granted already).
pub async fn prepare(
    server: &Client,
    state: &Client,
    run: &str,
    side: Side,
) -> Result<Prepared, Error> {
    // Both questions in one round trip (see `far`). The grants come with the ACL they were
    // read from (one row per grant, or one with no grant), which the fence checks.
    let grants = far::rows(
        server,
        "database",
        "read CONNECT grants",
        "SELECT d.acl, g.role, g.grantable
           FROM (SELECT coalesce(datacl::text, '') AS acl,
                        coalesce(datacl, acldefault('d', datdba)) AS items
                   FROM pg_database WHERE datname = current_database()) d
           LEFT JOIN LATERAL (
                 SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE r.rolname::text END AS role,
                        a.is_grantable AS grantable
                   FROM aclexplode(d.items) a
                   LEFT JOIN pg_roles r ON r.oid = a.grantee
                  WHERE a.privilege_type = 'CONNECT'
                    AND (r.rolname IS NULL OR r.rolname <> current_user)) g ON true",
        &[],
    );
    let (me, rows) = futures_util::future::try_join(me(server), grants).await?;
    let acl: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
    let now: Vec<Grant> = rows
        .iter()
        .filter_map(|r| {
            r.get::<_, Option<bool>>(2).map(|grant_option| Grant {
                role: r.get(1),
                grant_option,
            })
        })
        .collect();
    let mut record = FenceRecord::get(state, run, side)
        .await?
        .unwrap_or_else(|| FenceRecord {
            database: me.database.clone(),
            ..FenceRecord::default()
        });
    for g in &now {
        if !record.revoked.iter().any(|r| r.role == g.role) {
            record.revoked.push(g.clone());
        }
    }
    let grant_self = !me.superuser && !me.direct_connect;
    record.self_granted |= grant_self;
    record.put(state, run, side).await?;

    let db = quote_ident(&me.database);
    // First, in the same implicit transaction: the ACL is still the one read here, or the
    // cast fails and nothing of the fence is done (a simple query is one transaction).
    let mut stmts = vec![format!(
        "SELECT (CASE WHEN (SELECT coalesce(datacl::text, '') FROM pg_database
                             WHERE datname = current_database()) = {}
                      THEN '0' ELSE {} END)::int",
        conn::quote_literal(&acl),
        conn::quote_literal(GRANTS_CHANGED)
    )];
    if grant_self {
        stmts.push(format!("GRANT CONNECT ON DATABASE {db} TO CURRENT_USER"));
    }
    let from: Vec<String> = now.iter().map(|g| grantee(&g.role)).collect();
    if !from.is_empty() {
        stmts.push(format!(
            "REVOKE CONNECT ON DATABASE {db} FROM {}",
            from.join(", ")
        ));
    }
    stmts.push(format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ));
    Ok(Prepared {
        batch: stmts.join("; "),
    })
}

impl Prepared {
    /// Raises the fence in one round trip: the roles other than bluegreen's that can still
    /// open sessions there, or None when the CONNECT grants changed since [`prepare`]
    /// (nothing was done: prepare again).
    pub async fn raise(&self, server: &Client) -> Result<Option<Vec<String>>, Error> {
        // One simple query: one implicit transaction, all of it or none. The roles left are
        // asked for right behind it, in the same round trip; the server answers in order, so
        // they are read with the fence up.
        let fence = async {
            match server.batch_execute(&self.batch).await {
                Ok(()) => Ok(true),
                Err(e)
                    if e.as_db_error()
                        .is_some_and(|d| d.message().contains(GRANTS_CHANGED)) =>
                {
                    Ok(false)
                }
                Err(e) => Err(sql("database", "fence")(e)),
            }
        };
        let (raised, left) = futures_util::future::try_join(fence, residual(server)).await?;
        Ok(raised.then_some(left))
    }
}

/// Roles other than bluegreen's that can open sessions on the server's database now.
async fn residual(server: &Client) -> Result<Vec<String>, Error> {
    let rows = far::rows(
        server,
        "database",
        "list roles that can connect",
        "SELECT rolname::text || CASE WHEN rolsuper THEN ' (superuser)' ELSE '' END
           FROM pg_roles
          WHERE rolcanlogin AND rolname <> current_user
            AND (rolsuper OR has_database_privilege(oid, current_database(), 'CONNECT'))
          ORDER BY 1",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The statements that lift a recorded fence by hand (for an abort that removes the record
/// while the fence stays).
pub fn lift_statements(record: &FenceRecord) -> Vec<String> {
    let db = quote_ident(&record.database);
    // The session's own default is read-only too: GRANT would be refused.
    let mut stmts = vec!["SET default_transaction_read_only = off".to_string()];
    stmts.extend(record.revoked.iter().map(|g| grant(&db, g)));
    stmts.push(format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ));
    stmts
}

/// Whether the server's database is fenced read-only.
pub async fn is_raised(server: &Client) -> Result<bool, Error> {
    Ok(far::row(
        server,
        "database",
        "look for a read-only fence",
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                         WHERE d.datname = current_database() AND s.setrole = 0
                           AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
        &[],
    )
    .await?
    .get(0))
}

/// Lifts the fence: CONNECT given back as recorded, read-only reset, the record removed.
/// Without `state` (abort given only the server) the read-only setting goes and the grants a
/// record names cannot be known. Says whether there was anything to lift.
pub async fn lift(
    server: &Client,
    state: Option<&Client>,
    run: &str,
    side: Side,
) -> Result<bool, Error> {
    let record = match state {
        Some(s) => FenceRecord::get(s, run, side).await?,
        None => None,
    };
    // Three questions in one round trip (see `far`): a rollback lifts blue's fence inside
    // its pause. Roles dropped since the fence are skipped: a GRANT to them would fail the
    // whole lift.
    let names: Vec<String> = record
        .iter()
        .flat_map(|r| r.revoked.iter().filter_map(|g| g.role.clone()))
        .collect();
    let params: [(&(dyn ToSql + Sync), Type); 1] = [(&names, Type::TEXT_ARRAY)];
    let existing = far::rows(
        server,
        "database",
        "look up roles",
        "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
        &params,
    );
    let (raised, me, existing) =
        futures_util::future::try_join3(is_raised(server), me(server), existing).await?;
    if record.is_none() && !raised {
        return Ok(false);
    }
    let existing: Vec<String> = existing.iter().map(|r| r.get(0)).collect();
    let db = quote_ident(&me.database);
    let mut stmts = Vec::new();
    if let Some(rec) = &record {
        for g in &rec.revoked {
            if g.role.as_ref().is_some_and(|r| !existing.contains(r)) {
                tracing::warn!(role = ?g.role, "role dropped since the fence; not granted again");
                continue;
            }
            stmts.push(grant(&db, g));
        }
        if rec.self_granted {
            stmts.push(format!("REVOKE CONNECT ON DATABASE {db} FROM CURRENT_USER"));
        }
    }
    stmts.push(format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ));
    server
        .batch_execute(&stmts.join("; "))
        .await
        .map_err(sql("database", "lift the fence"))?;
    if let (Some(s), Some(_)) = (state, &record) {
        FenceRecord::delete(s, run, side).await?;
    }
    Ok(true)
}

/// The old primary closed: only bluegreen's sessions left on it.
pub(crate) struct Closed {
    /// The sessions ended, described.
    pub ended: Vec<String>,
    /// The position of the drain message sent once they were gone: the drain's target.
    pub mark: Lsn,
    /// Its sequences' values then (final: no session is left to advance them).
    pub sequences: Vec<(String, i64)>,
}

/// Ends every session on the fenced old primary that is not bluegreen's and makes sure each
/// is gone: an idle session, or one inside a transaction, could otherwise commit there after
/// the drain position is taken, a write the new primary would never see (and a key the new
/// primary would hand out again). New sessions that come in meanwhile (roles the fence
/// cannot bind) are ended too. The sequences are read and the drain message is sent (see
/// `drain::hold_next_message`) in the same round trip, behind the statement that found no
/// session left. [`raise`] comes first (a cutover raises it while PAUSE waits for the
/// clients' transactions).
pub(crate) async fn close(cx: &Ctx<'_>) -> Result<Closed, Error> {
    let end_others = format!(
        "SELECT pid, usename::text, coalesce(client_addr::text, 'local'), application_name,
                state, pg_terminate_backend(pid)
           FROM pg_stat_activity WHERE {OTHERS}"
    );
    // A backend signalled leaves pg_stat_activity within a moment (its transaction already
    // aborted): wait on the server, 1 ms at a time and 100 ms at most, while one is still
    // listed, rather than pay another round trip to a far old primary (the poolers' server
    // connections that PAUSE just closed are still there while their Terminate travels).
    // pg_terminate_backend's own wait polls in 100 ms steps, and for the process, which
    // outlives its listing; the listing is read afresh each time (it is cached per
    // transaction otherwise).
    let settle_sql = format!(
        "DO $settle$ BEGIN
           FOR i IN 1..100 LOOP
             PERFORM pg_stat_clear_snapshot();
             EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE {OTHERS});
             PERFORM pg_sleep(0.001);
           END LOOP;
         END $settle$"
    );
    let count_others = format!("SELECT count(*) FROM pg_stat_activity WHERE {OTHERS}");
    let started = Instant::now();
    let mut ended: Vec<(i32, String)> = Vec::new();
    let mut rounds = 0;
    loop {
        // Five statements in one round trip (see `far`), answered in order, each in a
        // transaction of its own (pg_stat_activity is read once per transaction): end every
        // other session; give them a moment to go; count those left; the sequences; the
        // drain message. A message sent while a session was left is not the drain's: the
        // next round sends another.
        let terminate = far::rows(&cx.old, "old primary", "end sessions", &end_others, &[]);
        let settle = far::rows(&cx.old, "old primary", "let sessions go", &settle_sql, &[]);
        let left = far::row(
            &cx.old,
            "old primary",
            "count sessions left",
            &count_others,
            &[],
        );
        let sequences = unreplicated::read_sequences(&cx.old, &cx.schemas);
        let mark = async {
            state::emit_drain_message(&cx.old).await?.ok_or_else(|| {
                Error::Unexpected("old primary: no position for the drain message".into())
            })
        };
        let (rows, _, left, sequences, mark) =
            futures_util::future::try_join5(terminate, settle, left, sequences, mark).await?;
        for r in &rows {
            let pid: i32 = r.get(0);
            if !ended.iter().any(|(p, _)| *p == pid) {
                ended.push((
                    pid,
                    format!(
                        "pid {pid} user {} from {} app {:?} ({})",
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, String>(3),
                        r.get::<_, Option<String>>(4).unwrap_or_default()
                    ),
                ));
            }
        }
        let remaining: i64 = left.get(0);
        rounds += 1;
        if rounds > 1 || remaining > 0 {
            // Each round is a round trip paid by paused clients: say why there was another.
            tracing::info!(
                round = rounds,
                remaining,
                ended = rows.len(),
                "closing the old primary: sessions still there after ending them"
            );
        }
        if remaining == 0 {
            return Ok(Closed {
                ended: ended.into_iter().map(|(_, s)| s).collect(),
                mark,
                sequences,
            });
        }
        if started.elapsed() > cx.opts.pause_timeout {
            return Err(Error::Timeout(format!(
                "{remaining} session(s) on the old primary did not end within --pause-timeout {:?}",
                cx.opts.pause_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The sessions on the old primary that are not bluegreen's.
const OTHERS: &str = "datname = current_database() AND backend_type = 'client backend'
    AND pid <> pg_backend_pid() AND application_name NOT LIKE 'bluegreen%'";
