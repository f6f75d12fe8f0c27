//! Runs of inserts into one table, buffered as one `COPY … FROM STDIN` (binary where every
//! column reads as binary) and sent as they fill.

use super::*;

/// Insert rows are sent as one COPY once this much text is buffered. (A COPY kept open
/// across pieces was tried: no faster, and the walsender and client then spend more CPU on
/// smaller reads and writes.)
pub(super) const COPY_BATCH_BYTES: usize = 1 << 20;

pub(super) struct CopyBatch {
    pub(super) rel: Arc<TargetRel>,
    pub(super) buf: BytesMut,
    /// Binary COPY fields (see `binary`), else COPY text.
    pub(super) binary: bool,
    /// Where each row starts in `buf`, with a hash of its value of the table's
    /// `insert_order` column (a hash, not the value: holding the value would keep the
    /// stream's read buffers alive until the batch goes out).
    pub(super) rows: Vec<(Option<u64>, usize)>,
}

/// What a batch's rows are grouped by: a hash of the `insert_order` column's value (None
/// for NULL, which sorts first).
pub(super) fn order_key(value: Option<&Value>) -> Option<u64> {
    match value {
        Some(Value::Text(b)) => Some(xxhash_rust::xxh3::xxh3_64(b)),
        _ => None,
    }
}

impl CopyBatch {
    /// Rows that share a value of the table's `insert_order` column go out next to each
    /// other (in arrival order among themselves), so the target inserts them into the same
    /// index pages one after another rather than all over the index. (By hand: 500,000
    /// metric_hist rows arriving interleaved across 280 metrics, COPY into a 3M-row table
    /// took 3.2-3.7 s as they came, 2.3-2.4 s grouped in 10,000-row batches.)
    pub(super) fn group_rows(&mut self) {
        if self.rows.windows(2).all(|w| w[0].0 <= w[1].0) {
            return;
        }
        let end = self.buf.len();
        let mut spans: Vec<(Option<u64>, std::ops::Range<usize>)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (key, start))| (*key, *start..self.rows.get(i + 1).map_or(end, |r| r.1)))
            .collect();
        spans.sort_by_key(|s| s.0);
        let mut buf = BytesMut::with_capacity(self.buf.capacity());
        buf.extend_from_slice(&self.buf[..self.rows[0].1]);
        for (_, span) in spans {
            buf.extend_from_slice(&self.buf[span]);
        }
        self.buf = buf;
    }
}

impl Applier {
    /// Sends the batch as one COPY. While the stream is backlogged (the target is what
    /// holds apply back) the COPY runs in a task of its own and the next rows are decoded
    /// meanwhile (the batch after it waits for it); otherwise it is waited for, and the
    /// stream gathers in the socket meanwhile: a reader that never waits for the target makes
    /// the walsender and this process spend up to twice the CPU on a read per message.
    /// (bench/sync.sh --mixes a,b --rows 300000, against always waiting: 100-row
    /// transactions 92k vs 78k rows/s, 1-row transactions 65k vs 60k; always in flight had
    /// cost 1-row transactions 35k vs 55k.)
    pub(super) async fn flush_copy(&mut self) -> Result<(), Error> {
        let Some(mut batch) = self.copy.take() else {
            return Ok(());
        };
        self.begin().await?;
        batch.group_rows();
        if batch.binary {
            binary::trailer(&mut batch.buf);
        }
        let stmt = format!(
            "COPY {} ({}) FROM STDIN{}",
            batch.rel.qualified,
            batch.rel.columns.join(", "),
            if batch.binary { " (FORMAT binary)" } else { "" }
        );
        let what = format!("apply inserts into {}", batch.rel.display);
        self.run(
            Work::Copy {
                statement: stmt,
                data: batch.buf.freeze(),
                what,
            },
            None,
        );
        if !self.stream_backlogged {
            self.settle().await?;
        }
        Ok(())
    }
}

/// Roughly what a row holds, for the group's size limit.
pub(super) fn tuple_bytes(t: &Tuple) -> u64 {
    t.iter()
        .map(|v| match v {
            Value::Text(b) | Value::Binary(b) => b.len() as u64,
            _ => 0,
        })
        .sum()
}

/// One row of binary COPY fields; false when a value cannot go that way.
pub(super) fn encode_binary_row(buf: &mut BytesMut, tuple: &Tuple, convs: &[binary::Conv]) -> bool {
    if tuple.len() != convs.len() {
        return false;
    }
    buf.put_i16(convs.len() as i16);
    tuple.iter().zip(convs).all(|(v, c)| match v {
        Value::Null => {
            buf.put_i32(-1);
            true
        }
        Value::Text(b) => c.encode(b, buf),
        Value::UnchangedToast | Value::Binary(_) => false,
    })
}

/// One row in COPY text format.
pub(super) fn encode_copy_row(buf: &mut BytesMut, tuple: &Tuple, table: &str) -> Result<(), Error> {
    for (i, v) in tuple.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        match v {
            Value::Null => buf.put_slice(b"\\N"),
            Value::Text(b) => {
                for &c in b.iter() {
                    match c {
                        b'\\' => buf.put_slice(b"\\\\"),
                        b'\n' => buf.put_slice(b"\\n"),
                        b'\r' => buf.put_slice(b"\\r"),
                        b'\t' => buf.put_slice(b"\\t"),
                        c => buf.put_u8(c),
                    }
                }
            }
            Value::UnchangedToast | Value::Binary(_) => {
                return Err(Error::Protocol(format!(
                    "{table}: an INSERT carried an unchanged-TOAST or binary value"
                )))
            }
        }
    }
    buf.put_u8(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_batches_group_rows_by_the_order_column_keeping_arrival_order_within() {
        let rel = Arc::new(TargetRel {
            qualified: "\"s\".\"t\"".into(),
            display: "s.t".into(),
            schema: "s".into(),
            name: "t".into(),
            key_names: vec![],
            columns: vec!["\"m\"".into(), "\"v\"".into()],
            types: vec!["text".into(), "text".into()],
            always_identity: vec![false, false],
            key: vec![],
            full_identity: true,
            applies_from: Lsn(0),
            copy_binary: None,
            batchable: false,
            insert_order: Some(0),
            chunk_column: None,
        });
        let mut batch = CopyBatch {
            rel,
            buf: BytesMut::from(&b"HEAD"[..]),
            binary: false,
            rows: Vec::new(),
        };
        for (m, v) in [("b", "1"), ("a", "2"), (r"\N", "3"), ("b", "4"), ("a", "5")] {
            let row = vec![
                if m == r"\N" {
                    Value::Null
                } else {
                    Value::Text(Bytes::from(m))
                },
                Value::Text(Bytes::from(v)),
            ];
            batch.rows.push((order_key(row.first()), batch.buf.len()));
            encode_copy_row(&mut batch.buf, &row, "s.t").unwrap();
        }
        batch.group_rows();
        // NULLs first, then each value's rows in arrival order (values in hash order).
        let key = |v: &'static str| order_key(Some(&Value::Text(Bytes::from(v))));
        let (a, b) = (key("a"), key("b"));
        let expected: &[u8] = if a < b {
            b"HEAD\\N\t3\na\t2\na\t5\nb\t1\nb\t4\n"
        } else {
            b"HEAD\\N\t3\nb\t1\nb\t4\na\t2\na\t5\n"
        };
        assert_eq!(&batch.buf[..], expected);
    }

    #[test]
    fn copy_text_escapes() {
        let mut buf = BytesMut::new();
        let row = vec![
            Value::Text(Bytes::from_static(b"a\tb\\c\nd\re")),
            Value::Null,
            Value::Text(Bytes::from_static(b"\\N")),
        ];
        encode_copy_row(&mut buf, &row, "t").unwrap();
        assert_eq!(&buf[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\\\\N\n");
    }
}
