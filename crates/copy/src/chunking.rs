//! Splits tables into block ranges of about `chunk_bytes` each.

use catalog::Plan;
use state::{ChunkKind, NewChunk};
use tokio_postgres::Client;

use crate::error::{sql, Error};

/// Reads each table's current size in blocks and cuts it into chunks. The last chunk is
/// open-ended, so rows in blocks added since the size was read are still copied.
pub async fn plan_chunks(
    source: &Client,
    plan: &Plan,
    chunk_bytes: i64,
) -> Result<Vec<NewChunk>, Error> {
    let oids: Vec<u32> = plan.tables.iter().map(|t| t.oid).collect();
    let rows = source
        .query(
            "SELECT c.oid, pg_relation_size(c.oid) / current_setting('block_size')::bigint
               FROM pg_class c WHERE c.oid = ANY($1)",
            &[&oids],
        )
        .await
        .map_err(sql("source", "table sizes"))?;
    let blocks = |oid: u32| -> i64 {
        rows.iter()
            .find(|r| r.get::<_, u32>(0) == oid)
            .map(|r| r.get(1))
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for t in plan.tables.iter().filter(|t| t.kind == "table") {
        if t.copied_columns().next().is_none() {
            continue;
        }
        let blocks = blocks(t.oid);
        let text_format = t.columns.iter().any(|c| c.needs_text);
        let n = ((t.bytes + chunk_bytes - 1) / chunk_bytes).clamp(1, blocks.max(1));
        let base = |i: i64| NewChunk {
            table_schema: t.schema.clone(),
            table_name: t.name.clone(),
            chunk: i as i32,
            kind: ChunkKind::Whole,
            lower: None,
            upper: None,
            est_bytes: t.bytes / n,
            text_format,
        };
        if n == 1 {
            out.push(base(0));
            continue;
        }
        for i in 0..n {
            out.push(NewChunk {
                kind: ChunkKind::Ctid,
                lower: (i > 0).then(|| i * blocks / n),
                upper: (i < n - 1).then(|| (i + 1) * blocks / n),
                ..base(i)
            });
        }
    }
    Ok(out)
}
