//! Roles the schema dump names: owners (unless --no-owner) and grantees (unless
//! --no-privileges) of what lies in the planned schemas. A role missing on the target would
//! fail the restore half-way through the pre-data; refused before anything is made instead.

use tokio_postgres::Client;

use crate::error::{sql, Error};

/// Owners of schemas, relations, types and functions in the planned schemas.
const OWNERS: &str = "
SELECT r.rolname::text FROM (
    SELECT nspowner AS oid FROM pg_namespace WHERE nspname = ANY($1)
    UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = ANY($1)
    UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = ANY($1)
    UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = ANY($1)
) o JOIN pg_roles r ON r.oid = o.oid";

/// Roles granted anything there (PUBLIC, grantee 0, has no row in pg_roles), and the roles
/// whose default privileges there pg_dump restores.
const GRANTEES: &str = "
SELECT r.rolname::text FROM (
    SELECT (aclexplode(nspacl)).grantee AS oid FROM pg_namespace
     WHERE nspname = ANY($1) AND nspacl IS NOT NULL
    UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND c.relacl IS NOT NULL
    UNION SELECT (aclexplode(a.attacl)).grantee FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND a.attacl IS NOT NULL
    UNION SELECT (aclexplode(t.typacl)).grantee FROM pg_type t
      JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = ANY($1) AND t.typacl IS NOT NULL
    UNION SELECT (aclexplode(p.proacl)).grantee FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY($1) AND p.proacl IS NOT NULL
    UNION SELECT d.defaclrole FROM pg_default_acl d
      JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = ANY($1)
    UNION SELECT (aclexplode(d.defaclacl)).grantee FROM pg_default_acl d
      JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = ANY($1)
) g JOIN pg_roles r ON r.oid = g.oid";

/// Refuses a copy whose schema restore would name a role the target does not have.
pub async fn refuse_missing(
    src: &Client,
    tgt: &Client,
    schemas: &[String],
    no_owner: bool,
    no_privileges: bool,
) -> Result<(), Error> {
    let mut named: Vec<String> = Vec::new();
    for (skip, query) in [(no_owner, OWNERS), (no_privileges, GRANTEES)] {
        if skip {
            continue;
        }
        let rows = src
            .query(query, &[&schemas])
            .await
            .map_err(sql("source", "list the roles the schema names"))?;
        named.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    named.sort();
    named.dedup();
    let present: Vec<String> = tgt
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&named],
        )
        .await
        .map_err(sql("target", "look up roles"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = named.iter().filter(|r| !present.contains(r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|r| conn::quote_ident(r)).collect();
    Err(Error::Refused {
        what: format!(
            "the target has no role {}, which owns or is granted objects in the planned schemas",
            list.join(", ")
        ),
        fix: format!(
            "create the role(s) on the target first (CREATE ROLE {};, or their definitions from pg_dumpall --roles-only on the source), or copy with --no-owner --no-privileges",
            list.join("; CREATE ROLE ")
        ),
    })
}
