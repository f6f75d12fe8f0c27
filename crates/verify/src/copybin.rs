//! Splits a `COPY … TO STDOUT` byte stream into rows without decoding values.
//!
//! Binary format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature
//! `PGCOPY\n\377\r\n\0`, an int32 flags field, an int32 header-extension length and that many
//! bytes; then per row an int16 field count followed by, per field, an int32 length and that
//! many bytes (length -1 is NULL, with no bytes); a field count of -1 is the trailer.
//! Text format: one row per line; a newline inside a value is escaped (`\n`), so every
//! newline byte ends a row.
//!
//! The stream arrives in CopyData messages whose boundaries need not match rows; the
//! splitter buffers until a row is complete and hands out batches of whole rows.

use bytes::{Bytes, BytesMut};

/// The binary COPY signature.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Bits of the flags field that a reader must understand (bit 16: OIDs included).
const FLAGS_CRITICAL: u32 = 0xffff_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    Text,
}

impl Format {
    pub fn sql(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Text => "text",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("binary COPY stream does not start with the PGCOPY signature")]
    Signature,
    #[error("binary COPY header has unknown critical flags {0:#x}")]
    Flags(u32),
    #[error("binary COPY row has a negative field count {0}")]
    FieldCount(i16),
    #[error("binary COPY field has an invalid length {0}")]
    FieldLength(i32),
    #[error("binary COPY stream has data after its trailer")]
    AfterTrailer,
    #[error("COPY stream ended inside a row ({0} bytes left over)")]
    Truncated(usize),
    #[error("binary COPY stream ended without its trailer")]
    NoTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Rows,
    Done,
}

/// Whole rows, each a cheap slice of the message it arrived in.
#[derive(Debug, Clone, Default)]
pub struct RowBatch {
    pub rows: Vec<Bytes>,
}

impl RowBatch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, i: usize) -> &[u8] {
        &self.rows[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.rows.iter().map(|r| &r[..])
    }
}

/// Incremental row splitter for one COPY stream. PostgreSQL sends each row in one CopyData
/// message, so rows are normally slices of the messages themselves (no copy); bytes of a
/// row cut across messages (and the binary header) are gathered in a buffer first.
#[derive(Debug)]
pub struct RowSplitter {
    format: Format,
    stage: Stage,
    /// Bytes of an incomplete header or row.
    partial: BytesMut,
    rows: Vec<Bytes>,
    /// Bytes of the rows waiting to be taken.
    pending: usize,
}

impl RowSplitter {
    pub fn new(format: Format) -> RowSplitter {
        RowSplitter {
            format,
            stage: match format {
                Format::Binary => Stage::Header,
                Format::Text => Stage::Rows,
            },
            partial: BytesMut::new(),
            rows: Vec::new(),
            pending: 0,
        }
    }

    /// Takes stream bytes and finds the rows they complete.
    pub fn push(&mut self, data: Bytes) -> Result<(), CopyError> {
        if self.stage == Stage::Done {
            return if data.is_empty() {
                Ok(())
            } else {
                Err(CopyError::AfterTrailer)
            };
        }
        if self.partial.is_empty() && self.stage == Stage::Rows {
            return self.scan(data);
        }
        self.partial.extend_from_slice(&data);
        if !self.partial_completes()? {
            return Ok(());
        }
        let buf = self.partial.split().freeze();
        self.scan(buf)
    }

    /// Bytes of complete rows waiting to be taken.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Takes the complete rows found so far; a partial row stays buffered.
    pub fn take(&mut self) -> RowBatch {
        self.pending = 0;
        RowBatch {
            rows: std::mem::take(&mut self.rows),
        }
    }

    /// Checks that the stream ended cleanly and returns the last rows.
    pub fn finish(mut self) -> Result<RowBatch, CopyError> {
        if !self.partial.is_empty() {
            if self.stage == Stage::Header {
                header_len(&self.partial)?;
            }
            return Err(CopyError::Truncated(self.partial.len()));
        }
        if self.format == Format::Binary && self.stage != Stage::Done {
            return Err(CopyError::NoTrailer);
        }
        Ok(self.take())
    }

    /// Whether the buffered bytes hold at least a whole header, row or trailer.
    fn partial_completes(&self) -> Result<bool, CopyError> {
        let b = &self.partial[..];
        Ok(match (self.stage, self.format) {
            (Stage::Header, _) => header_len(b)?.is_some(),
            (_, Format::Text) => memchr(b'\n', b).is_some(),
            (_, Format::Binary) => {
                b.len() >= 2 && {
                    let count = i16::from_be_bytes([b[0], b[1]]);
                    count == -1 || row_len(b, count)?.is_some()
                }
            }
        })
    }

    /// Finds the rows in `buf`; an incomplete tail goes to `partial`.
    fn scan(&mut self, buf: Bytes) -> Result<(), CopyError> {
        let mut pos = 0usize;
        if self.stage == Stage::Header {
            match header_len(&buf)? {
                Some(len) => {
                    pos = len;
                    self.stage = Stage::Rows;
                }
                None => {
                    self.partial.extend_from_slice(&buf);
                    return Ok(());
                }
            }
        }
        match self.format {
            Format::Text => {
                while let Some(nl) = memchr(b'\n', &buf[pos..]) {
                    let end = pos + nl + 1;
                    self.rows.push(buf.slice(pos..end));
                    self.pending += end - pos;
                    pos = end;
                }
            }
            Format::Binary => loop {
                let rest = &buf[pos..];
                if rest.len() < 2 {
                    break;
                }
                let count = i16::from_be_bytes([rest[0], rest[1]]);
                if count == -1 {
                    // The trailer: the stream must end here.
                    if rest.len() > 2 {
                        return Err(CopyError::AfterTrailer);
                    }
                    self.stage = Stage::Done;
                    return Ok(());
                }
                let Some(len) = row_len(rest, count)? else {
                    break;
                };
                self.rows.push(buf.slice(pos..pos + len));
                self.pending += len;
                pos += len;
            },
        }
        self.partial.extend_from_slice(&buf[pos..]);
        Ok(())
    }
}

/// Length of a complete binary header at the start of `b`, or None while it is incomplete.
fn header_len(b: &[u8]) -> Result<Option<usize>, CopyError> {
    if b.len() < SIGNATURE.len() {
        return if SIGNATURE.starts_with(b) {
            Ok(None)
        } else {
            Err(CopyError::Signature)
        };
    }
    if &b[..SIGNATURE.len()] != SIGNATURE {
        return Err(CopyError::Signature);
    }
    if b.len() < 19 {
        return Ok(None);
    }
    let flags = u32::from_be_bytes([b[11], b[12], b[13], b[14]]);
    if flags & FLAGS_CRITICAL != 0 {
        return Err(CopyError::Flags(flags));
    }
    let ext = i32::from_be_bytes([b[15], b[16], b[17], b[18]]);
    if ext < 0 {
        return Err(CopyError::FieldLength(ext));
    }
    let total = 19 + ext as usize;
    Ok((b.len() >= total).then_some(total))
}

/// Length of the complete row at the start of `b` (field count included), or None while
/// it is incomplete.
fn row_len(b: &[u8], count: i16) -> Result<Option<usize>, CopyError> {
    if count < 0 {
        return Err(CopyError::FieldCount(count));
    }
    let mut pos = 2usize;
    for _ in 0..count {
        if b.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
        pos += 4;
        match len {
            -1 => {}
            n if n >= 0 => pos += n as usize,
            n => return Err(CopyError::FieldLength(n)),
        }
        if b.len() < pos {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

/// The fields of one binary row (as [`RowBatch::row`] gives it): None for NULL.
pub fn binary_fields(row: &[u8]) -> Result<Vec<Option<&[u8]>>, CopyError> {
    if row.len() < 2 {
        return Err(CopyError::Truncated(row.len()));
    }
    let count = i16::from_be_bytes([row[0], row[1]]);
    if count < 0 {
        return Err(CopyError::FieldCount(count));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut pos = 2usize;
    for _ in 0..count {
        let b = row
            .get(pos..pos + 4)
            .ok_or(CopyError::Truncated(row.len()))?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        pos += 4;
        if len == -1 {
            out.push(None);
            continue;
        }
        if len < 0 {
            return Err(CopyError::FieldLength(len));
        }
        let v = row
            .get(pos..pos + len as usize)
            .ok_or(CopyError::Truncated(row.len()))?;
        out.push(Some(v));
        pos += len as usize;
    }
    if pos != row.len() {
        return Err(CopyError::Truncated(row.len() - pos));
    }
    Ok(out)
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v
    }

    fn row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    fn stream(rows: &[Vec<u8>]) -> Vec<u8> {
        let mut v = header();
        for r in rows {
            v.extend_from_slice(r);
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    fn split_all(bytes: &[u8], piece: usize, format: Format) -> Result<Vec<Vec<u8>>, CopyError> {
        let mut s = RowSplitter::new(format);
        let mut out = Vec::new();
        for p in bytes.chunks(piece.max(1)) {
            s.push(Bytes::copy_from_slice(p))?;
            out.extend(s.take().iter().map(<[u8]>::to_vec));
        }
        out.extend(s.finish()?.iter().map(<[u8]>::to_vec));
        Ok(out)
    }

    #[test]
    fn binary_rows_null_and_empty_are_distinct() {
        let rows = vec![
            row(&[Some(b"1"), None]),
            row(&[Some(b"2"), Some(b"")]),
            row(&[]),
        ];
        let bytes = stream(&rows);
        for piece in [1, 2, 3, 7, 19, 20, 1000] {
            assert_eq!(split_all(&bytes, piece, Format::Binary).unwrap(), rows);
        }
        let f = binary_fields(&rows[0]).unwrap();
        assert_eq!(f, vec![Some(&b"1"[..]), None]);
        let f = binary_fields(&rows[1]).unwrap();
        assert_eq!(f, vec![Some(&b"2"[..]), Some(&b""[..])]);
    }

    #[test]
    fn header_extension_is_skipped() {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&3i32.to_be_bytes());
        v.extend_from_slice(b"abc");
        let r = row(&[Some(b"x")]);
        v.extend_from_slice(&r);
        v.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(split_all(&v, 4, Format::Binary).unwrap(), vec![r]);
    }

    #[test]
    fn malformed_streams_are_errors() {
        assert_eq!(
            split_all(b"PGCOPX\n", 100, Format::Binary),
            Err(CopyError::Signature)
        );
        let mut bad_flags = SIGNATURE.to_vec();
        bad_flags.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        bad_flags.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            split_all(&bad_flags, 100, Format::Binary),
            Err(CopyError::Flags(0x0001_0000))
        );
        // No trailer.
        let mut v = header();
        v.extend_from_slice(&row(&[Some(b"1")]));
        assert_eq!(split_all(&v, 5, Format::Binary), Err(CopyError::NoTrailer));
        // Cut inside a row.
        let mut v = header();
        v.extend_from_slice(&row(&[Some(b"12345")])[..6]);
        assert_eq!(
            split_all(&v, 5, Format::Binary),
            Err(CopyError::Truncated(6))
        );
        // Data after the trailer.
        let mut v = stream(&[row(&[None])]);
        v.push(0);
        assert_eq!(
            split_all(&v, 100, Format::Binary),
            Err(CopyError::AfterTrailer)
        );
        // A negative length other than -1.
        let mut v = header();
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            split_all(&v, 100, Format::Binary),
            Err(CopyError::FieldLength(-2))
        );
    }

    #[test]
    fn text_rows_split_on_newlines() {
        let text = b"1\t\\N\n2\t\n3\ta\\nb\n";
        for piece in [1, 2, 5, 100] {
            assert_eq!(
                split_all(text, piece, Format::Text).unwrap(),
                vec![
                    b"1\t\\N\n".to_vec(),
                    b"2\t\n".to_vec(),
                    b"3\ta\\nb\n".to_vec()
                ]
            );
        }
        assert_eq!(
            split_all(b"1\t2", 100, Format::Text),
            Err(CopyError::Truncated(3))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_rows_any_split(
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::option::of(proptest::collection::vec(0u8..=255, 0..40)), 0..6),
                0..20),
            piece in 1usize..64,
        ) {
            let encoded: Vec<Vec<u8>> = rows
                .iter()
                .map(|r| {
                    let fields: Vec<Option<&[u8]>> = r.iter().map(|f| f.as_deref()).collect();
                    row(&fields)
                })
                .collect();
            let got = split_all(&stream(&encoded), piece, Format::Binary).unwrap();
            proptest::prop_assert_eq!(&got, &encoded);
            for (bytes, fields) in got.iter().zip(&rows) {
                let parsed: Vec<Option<Vec<u8>>> = binary_fields(bytes)
                    .unwrap()
                    .into_iter()
                    .map(|f| f.map(<[u8]>::to_vec))
                    .collect();
                proptest::prop_assert_eq!(&parsed, fields);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(0u8..=255, 0..200), piece in 1usize..32) {
            let mut v = header();
            v.extend_from_slice(&bytes);
            let _ = split_all(&v, piece, Format::Binary);
        }
    }
}
