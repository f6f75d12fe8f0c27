//! Cuts each table into key ranges of about `chunk_bytes`, from a sample of the source's
//! keys under the source snapshot. A table without a key is cut by its chunk column, each
//! chunk a multiset; without one either, it is one chunk.

use tokio_postgres::Client;

use crate::error::{sql, Error};
use crate::range::KeyRange;
use crate::table::VerifyTable;

/// Sampled keys per chunk wanted: enough that quantiles land near even sizes.
const SAMPLES_PER_CHUNK: f64 = 64.0;

/// How many chunks a table of `bytes` gets.
pub fn chunk_count(bytes: i64, chunk_bytes: i64) -> usize {
    if bytes <= chunk_bytes || chunk_bytes <= 0 {
        1
    } else {
        ((bytes + chunk_bytes - 1) / chunk_bytes) as usize
    }
}

/// The table's ranges in key order; together they cover every possible key.
pub async fn plan(
    source: &Client,
    t: &VerifyTable,
    chunk_bytes: i64,
) -> Result<Vec<KeyRange>, Error> {
    let n = chunk_count(t.bytes, chunk_bytes);
    if n <= 1 || t.range_key().is_none() {
        return Ok(vec![KeyRange::all()]);
    }
    let want = n as f64 * SAMPLES_PER_CHUNK;
    let rows = t.estimated_rows.unwrap_or(0).max(1) as f64;
    let percent = (100.0 * want / rows).clamp(0.001, 100.0);
    let mut keys = sample_keys(source, t, Some(percent)).await?;
    if keys.len() < n {
        // Too few blocks sampled (or no statistics): read every key once.
        keys = sample_keys(source, t, None).await?;
    }
    Ok(KeyRange::all().split_at(&quantiles(&keys, n)))
}

/// Sorted key tuples (text forms) from a block sample, or from the whole table.
async fn sample_keys(
    source: &Client,
    t: &VerifyTable,
    percent: Option<f64>,
) -> Result<Vec<Vec<String>>, Error> {
    let key = t.range_key().unwrap_or_default();
    // Aliased: ORDER BY must sort by the key itself, not by its text form.
    let cols: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text AS bluegreen_k{i}", k.ident))
        .collect();
    let sample = percent
        .map(|p| format!(" TABLESAMPLE SYSTEM ({p})"))
        .unwrap_or_default();
    let q = format!(
        "SELECT {} FROM {}{sample} ORDER BY {}",
        cols.join(", "),
        t.relation(),
        t.range_order()
    );
    let rows = source
        .query(&q, &[])
        .await
        .map_err(sql("source", format!("sample keys of {}", t.display())))?;
    Ok(rows
        .iter()
        .map(|r| (0..key.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect())
}

/// `n - 1` interior bounds at even positions of sorted `keys`, without repeats.
pub fn quantiles(keys: &[Vec<String>], n: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    if keys.is_empty() || n <= 1 {
        return out;
    }
    for i in 1..n {
        let k = &keys[(i * keys.len() / n).min(keys.len() - 1)];
        if out.last() != Some(k) {
            out.push(k.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        assert_eq!(chunk_count(10, 100), 1);
        assert_eq!(chunk_count(100, 100), 1);
        assert_eq!(chunk_count(101, 100), 2);
        assert_eq!(chunk_count(1000, 100), 10);
        let keys: Vec<Vec<String>> = (0..100).map(|i| vec![format!("{i:03}")]).collect();
        let q = quantiles(&keys, 4);
        assert_eq!(
            q,
            vec![
                vec!["025".to_string()],
                vec!["050".into()],
                vec!["075".into()]
            ]
        );
        let same: Vec<Vec<String>> = vec![vec!["a".into()]; 10];
        assert_eq!(quantiles(&same, 5), vec![vec!["a".to_string()]]);
        assert!(quantiles(&[], 5).is_empty());
    }
}
