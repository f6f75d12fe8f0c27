//! Splits tables into block ranges of about `chunk_bytes` each, and TimescaleDB hypertables
//! into their time slices.

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
        let text_format = t.columns.iter().any(|c| c.needs_text);
        if let Some(column) = &t.time_column {
            out.extend(time_slices(source, t, column, text_format).await?);
            continue;
        }
        let blocks = blocks(t.oid);
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

/// A hypertable's copy chunks: one per time slice of its chunks, read under the run's
/// snapshot from TimescaleDB's catalog (dropped chunks left out). Each runs from its slice's
/// start to the next one's, the first unbounded below and the last above, so every row the
/// hypertable shows falls in exactly one, whatever its chunks' intervals were.
async fn time_slices(
    source: &Client,
    t: &catalog::Table,
    column: &str,
    text_format: bool,
) -> Result<Vec<NewChunk>, Error> {
    // Sizes: a relation dropped since the snapshot was taken has none (to_regclass is NULL).
    let rows = source
        .query(
            "SELECT s.range_start,
                    sum(coalesce(pg_total_relation_size(
                            to_regclass(format('%I.%I', c.schema_name, c.table_name))), 0)
                        + coalesce((SELECT pg_total_relation_size(
                                        to_regclass(format('%I.%I', z.schema_name, z.table_name)))
                                      FROM _timescaledb_catalog.chunk z
                                     WHERE z.id = c.compressed_chunk_id), 0))::bigint
               FROM _timescaledb_catalog.hypertable h
               JOIN _timescaledb_catalog.dimension d
                 ON d.hypertable_id = h.id AND d.column_name = $3
               JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id
               JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = c.id
               JOIN _timescaledb_catalog.dimension_slice s
                 ON s.id = cc.dimension_slice_id AND s.dimension_id = d.id
              WHERE h.schema_name = $1 AND h.table_name = $2
                AND NOT coalesce((to_jsonb(c) ->> 'dropped')::boolean, false)
              GROUP BY s.range_start
              ORDER BY s.range_start",
            &[&t.schema, &t.name, &column],
        )
        .await
        .map_err(sql(
            "source",
            format!("time slices of {}", t.display_name()),
        ))?;
    let slices: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(slice_chunks(&slices)
        .into_iter()
        .enumerate()
        .map(|(i, (lower, upper, est_bytes))| NewChunk {
            table_schema: t.schema.clone(),
            table_name: t.name.clone(),
            chunk: i as i32,
            kind: ChunkKind::Time,
            lower,
            upper,
            est_bytes,
            text_format,
        })
        .collect())
}

/// (lower, upper, bytes) of each copy chunk from the slices' (start, bytes), in start order:
/// contiguous, open at both ends; one open chunk when there is no slice.
fn slice_chunks(slices: &[(i64, i64)]) -> Vec<(Option<i64>, Option<i64>, i64)> {
    if slices.is_empty() {
        return vec![(None, None, 0)];
    }
    slices
        .iter()
        .enumerate()
        .map(|(i, &(start, bytes))| {
            let lower = (i > 0).then_some(start);
            let upper = slices.get(i + 1).map(|next| next.0);
            (lower, upper, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::slice_chunks;

    #[test]
    fn slices_cover_the_whole_line() {
        assert_eq!(slice_chunks(&[]), [(None, None, 0)]);
        assert_eq!(slice_chunks(&[(100, 7)]), [(None, None, 7)]);
        assert_eq!(
            slice_chunks(&[(100, 1), (200, 2), (250, 3)]),
            [
                (None, Some(200), 1),
                (Some(200), Some(250), 2),
                (Some(250), None, 3)
            ]
        );
    }
}
