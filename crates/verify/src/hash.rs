//! Row hashes and the order-independent fold that makes a chunk's checksum.
//!
//! Each row's COPY bytes are hashed with xxh3-128; a chunk's digest is the wrapping sum of
//! its row hashes plus the row count. The sum does not depend on row order (no ORDER BY
//! needed, rows can be hashed on any thread) and treats a chunk as a multiset: a duplicated
//! row counts twice, so tables without a key compare exactly too.

use rayon::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use crate::copybin::RowBatch;

/// Rows per rayon task: below this, splitting costs more than hashing.
const MIN_ROWS_PER_TASK: usize = 512;

/// The fold of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Wrapping sum of the rows' xxh3-128 hashes.
    #[serde(serialize_with = "hex128")]
    pub sum: u128,
    pub rows: u64,
    /// Bytes hashed (statistics only; equal sums and counts already imply equal rows).
    pub bytes: u64,
}

impl Digest {
    pub fn of_row(row: &[u8]) -> Digest {
        Digest {
            sum: row_hash(row),
            rows: 1,
            bytes: row.len() as u64,
        }
    }

    pub fn merge(self, other: Digest) -> Digest {
        Digest {
            sum: self.sum.wrapping_add(other.sum),
            rows: self.rows + other.rows,
            bytes: self.bytes + other.bytes,
        }
    }

    /// Same rows (as a multiset) on both sides.
    pub fn matches(&self, other: &Digest) -> bool {
        self.sum == other.sum && self.rows == other.rows
    }

    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

fn hex128<S: serde::Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:032x}"))
}

pub fn row_hash(row: &[u8]) -> u128 {
    xxh3_128(row)
}

/// Digest of a batch, hashing rows in parallel on rayon's pool.
pub fn digest_batch(batch: &RowBatch) -> Digest {
    batch
        .rows
        .par_iter()
        .with_min_len(MIN_ROWS_PER_TASK)
        .map(|r| Digest::of_row(r))
        .reduce(Digest::default, Digest::merge)
}

/// Hash of a row given as separate values (leaf rows fetched by query, not by COPY): each
/// value framed by its length so `("ab","c")` and `("a","bc")` differ and NULL differs
/// from empty.
pub fn values_hash<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> u128 {
    let mut buf = Vec::new();
    for v in values {
        match v {
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                buf.extend_from_slice(b);
            }
        }
    }
    xxh3_128(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(rows: &[&[u8]]) -> RowBatch {
        RowBatch {
            rows: rows.iter().map(|r| Bytes::copy_from_slice(r)).collect(),
        }
    }

    #[test]
    fn order_does_not_matter_content_does() {
        let many: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let fwd: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let mut rev = fwd.clone();
        rev.reverse();
        let a = digest_batch(&batch(&fwd));
        let b = digest_batch(&batch(&rev));
        assert!(a.matches(&b));
        assert_eq!(a.rows, 5000);

        let mut changed = fwd.clone();
        changed[17] = b"other";
        assert!(!a.matches(&digest_batch(&batch(&changed))));
        // A duplicate is not the same as a single row.
        let mut dup = fwd.clone();
        dup.push(fwd[0]);
        assert!(!a.matches(&digest_batch(&batch(&dup))));
        // Splitting into batches and merging is the same as one batch.
        let (x, y) = fwd.split_at(1234);
        assert!(a.matches(&digest_batch(&batch(x)).merge(digest_batch(&batch(y)))));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(digest_batch(&batch(&[])), Digest::default());
    }

    #[test]
    fn value_framing() {
        assert_ne!(
            values_hash([Some(&b"ab"[..]), Some(b"c")]),
            values_hash([Some(&b"a"[..]), Some(b"bc")])
        );
        assert_ne!(values_hash([None]), values_hash([Some(&b""[..])]));
        assert_eq!(
            values_hash([None, Some(&b"x"[..])]),
            values_hash([None, Some(&b"x"[..])])
        );
    }
}
