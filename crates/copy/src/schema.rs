//! Schema through pg_dump at the run's snapshot: pre-data applied in one transaction,
//! post-data split into items that are built in parallel stages.

use std::path::PathBuf;
use std::process::Stdio;

use conn::{quote_ident, ConnSpec};
use state::NewItem;

use crate::Error;

/// Which pg_dump section to produce.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    PreData,
    PostData,
}

/// What pg_dump is asked to include.
#[derive(Debug, Clone, Default)]
pub struct DumpScope {
    pub schemas: Vec<String>,
    pub extensions: Vec<String>,
    pub no_owner: bool,
    pub no_privileges: bool,
}

/// pg_dump of the source's major version: `BLUEGREEN_PG_BIN`, else Debian's directory for
/// that version, else whatever `pg_dump` is on PATH.
fn pg_dump_binary(source_version_num: i32) -> PathBuf {
    if let Some(dir) = std::env::var_os("BLUEGREEN_PG_BIN") {
        return PathBuf::from(dir).join("pg_dump");
    }
    let debian = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin/pg_dump",
        source_version_num / 10000
    ));
    if debian.exists() {
        debian
    } else {
        PathBuf::from("pg_dump")
    }
}

/// Runs pg_dump for one section at `snapshot`. The password travels in PGPASSWORD only.
pub async fn dump(
    source: &ConnSpec,
    source_version_num: i32,
    snapshot: &str,
    scope: &DumpScope,
    section: Section,
) -> Result<String, Error> {
    let (dsn, env) = source.libpq_env();
    let mut cmd = tokio::process::Command::new(pg_dump_binary(source_version_num));
    cmd.arg(match section {
        Section::PreData => "--section=pre-data",
        Section::PostData => "--section=post-data",
    })
    .arg(format!("--snapshot={snapshot}"))
    .arg("--no-sync");
    for s in &scope.schemas {
        cmd.arg(format!("--schema={}", quote_ident(s)));
    }
    for e in &scope.extensions {
        cmd.arg(format!("--extension={}", quote_ident(e)));
    }
    if scope.no_owner {
        cmd.arg("--no-owner");
    }
    if scope.no_privileges {
        cmd.arg("--no-privileges");
    }
    cmd.arg("--dbname")
        .arg(dsn)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::PgDump(format!("cannot run pg_dump: {e}")))?;
    if !out.status.success() {
        return Err(Error::PgDump(conn::redact(
            String::from_utf8_lossy(&out.stderr).trim(),
        )));
    }
    let text =
        String::from_utf8(out.stdout).map_err(|_| Error::PgDump("output is not UTF-8".into()))?;
    without_meta_commands(&text)
}

/// Drops pg_dump's `\restrict`/`\unrestrict` lines (they guard psql, which we do not use);
/// any other psql meta-command would not run through the server, so it is an error.
/// `CREATE SCHEMA x;` becomes `CREATE SCHEMA IF NOT EXISTS x;`: every database has `public`,
/// and an operator may have created an empty schema ahead of the copy.
fn without_meta_commands(script: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(script.len());
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("CREATE SCHEMA ") {
            if rest.ends_with(';') && !rest.contains(' ') {
                out.push_str("CREATE SCHEMA IF NOT EXISTS ");
                out.push_str(rest);
                out.push('\n');
                continue;
            }
        }
        if line.starts_with("\\restrict") || line.starts_with("\\unrestrict") {
            continue;
        }
        if line.starts_with('\\') {
            return Err(Error::PgDump(format!(
                "unexpected psql meta-command in the dump: {}",
                line.split_whitespace().next().unwrap_or(line)
            )));
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// A post-data script split into items, with the session settings that precede them.
pub struct PostData {
    pub preamble: String,
    pub items: Vec<NewItem>,
}

/// Splits at pg_dump's `-- Name: …; Type: …; Schema: …` headers. Stage 1 builds keys and
/// indexes, stage 2 foreign keys, triggers and the rest (they need stage 1's keys), stage 3
/// refreshes materialized views in dump order.
pub fn split_post_data(script: &str) -> PostData {
    let mut preamble = String::new();
    let mut items: Vec<NewItem> = Vec::new();
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("-- Name: ") {
            let (name, rest) = rest.split_once("; Type: ").unwrap_or((rest, ""));
            let kind = rest.split("; ").next().unwrap_or("").to_string();
            let stage = match kind.as_str() {
                "INDEX" | "CONSTRAINT" => 1,
                "MATERIALIZED VIEW DATA" => 3,
                _ => 2,
            };
            items.push(NewItem {
                stage,
                kind,
                name: name.to_string(),
                sql: String::new(),
            });
            continue;
        }
        let target = match items.last_mut() {
            Some(item) => &mut item.sql,
            None => &mut preamble,
        };
        target.push_str(line);
        target.push('\n');
    }
    items.retain(|i| {
        i.sql
            .lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
    });
    PostData { preamble, items }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: s; Owner: postgres\n--\n\nALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n--\n-- Name: t_v_idx; Type: INDEX; Schema: s; Owner: postgres\n--\n\nCREATE INDEX t_v_idx ON s.t USING btree (v);\n\n\n--\n-- Name: u u_t_fkey; Type: FK CONSTRAINT; Schema: s; Owner: postgres\n--\n\nALTER TABLE ONLY s.u\n    ADD CONSTRAINT u_t_fkey FOREIGN KEY (t) REFERENCES s.t(id);\n\n\n--\n-- Name: mv; Type: MATERIALIZED VIEW DATA; Schema: s; Owner: postgres\n--\n\nREFRESH MATERIALIZED VIEW s.mv;\n\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";

    #[test]
    fn splits_into_staged_items() {
        let clean = without_meta_commands(SAMPLE).unwrap();
        let pd = split_post_data(&clean);
        assert!(pd.preamble.contains("set_config('search_path'"));
        let got: Vec<(i32, &str, &str)> = pd
            .items
            .iter()
            .map(|i| (i.stage, i.kind.as_str(), i.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "CONSTRAINT", "t t_pkey"),
                (1, "INDEX", "t_v_idx"),
                (2, "FK CONSTRAINT", "u u_t_fkey"),
                (3, "MATERIALIZED VIEW DATA", "mv"),
            ]
        );
        assert!(pd.items[0].sql.contains("PRIMARY KEY (id)"));
        assert!(pd.items[3].sql.contains("REFRESH MATERIALIZED VIEW s.mv;"));
        assert!(!pd.items[3].sql.contains("\\unrestrict"));
    }

    #[test]
    fn other_meta_commands_are_refused() {
        assert!(without_meta_commands("SELECT 1;\n\\connect other\n").is_err());
    }
}
