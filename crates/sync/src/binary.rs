//! Insert rows as binary COPY fields, read from the text pgoutput sent: the target then skips
//! its input functions (about a fifth of a COPY's CPU for metric_hist's uuid, timestamptz
//! and real). Only for column types whose text form is simple to read exactly, and only
//! for text in exactly the form PostgreSQL prints; anything else makes the caller send the
//! row as text, so a value is never read differently than the target would read it.

use bytes::{BufMut, BytesMut};

/// How one column's text turns into its binary COPY field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Uuid,
    /// text, varchar: the bytes as they are (both are sent in the client encoding).
    Text,
    /// jsonb: version 1, then the text.
    Jsonb,
    Date,
    Timestamp,
    Timestamptz,
}

impl Conv {
    /// The conversion for a target type as `format_type` prints it (domains, arrays and
    /// everything else: none).
    pub fn for_type(ty: &str) -> Option<Conv> {
        Some(match ty {
            "smallint" => Conv::Int2,
            "integer" => Conv::Int4,
            "bigint" => Conv::Int8,
            "real" => Conv::Float4,
            "double precision" => Conv::Float8,
            "boolean" => Conv::Bool,
            "uuid" => Conv::Uuid,
            "text" => Conv::Text,
            t if t == "character varying" || t.starts_with("character varying(") => Conv::Text,
            "jsonb" => Conv::Jsonb,
            "date" => Conv::Date,
            "timestamp without time zone" => Conv::Timestamp,
            "timestamp with time zone" => Conv::Timestamptz,
            _ => return None,
        })
    }

    /// Dates and timestamps are read only in the ISO form (DateStyle ISO).
    pub fn needs_iso(self) -> bool {
        matches!(self, Conv::Date | Conv::Timestamp | Conv::Timestamptz)
    }

    /// Appends the field (length, then bytes); false, with `out` untouched, when the text
    /// is not in the form this reads.
    pub fn encode(self, text: &[u8], out: &mut BytesMut) -> bool {
        let start = out.len();
        out.put_i32(0);
        let ok = self.value(text, out);
        if ok {
            let len = (out.len() - start - 4) as i32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        } else {
            out.truncate(start);
        }
        ok
    }

    fn value(self, text: &[u8], out: &mut BytesMut) -> bool {
        let Ok(s) = std::str::from_utf8(text) else {
            return false;
        };
        match self {
            Conv::Int2 => int(s).map(|v: i16| out.put_i16(v)).is_some(),
            Conv::Int4 => int(s).map(|v: i32| out.put_i32(v)).is_some(),
            Conv::Int8 => int(s).map(|v: i64| out.put_i64(v)).is_some(),
            Conv::Float4 => float::<f32>(s).map(|v| out.put_u32(v.to_bits())).is_some(),
            Conv::Float8 => float::<f64>(s).map(|v| out.put_u64(v.to_bits())).is_some(),
            Conv::Bool => match s {
                "t" => {
                    out.put_u8(1);
                    true
                }
                "f" => {
                    out.put_u8(0);
                    true
                }
                _ => false,
            },
            Conv::Uuid => uuid(s).map(|b| out.put_slice(&b)).is_some(),
            Conv::Text => {
                out.put_slice(text);
                true
            }
            Conv::Jsonb => {
                out.put_u8(1);
                out.put_slice(text);
                true
            }
            Conv::Date => match s {
                "infinity" => Some(i32::MAX),
                "-infinity" => Some(i32::MIN),
                _ => date(s).and_then(|d| i32::try_from(d).ok()),
            }
            .map(|d| out.put_i32(d))
            .is_some(),
            Conv::Timestamp => timestamp(s, false).map(|t| out.put_i64(t)).is_some(),
            Conv::Timestamptz => timestamp(s, true).map(|t| out.put_i64(t)).is_some(),
        }
    }
}

/// A decimal integer as int2/4/8out print it: optional '-', digits, no leading '+'.
fn int<T: std::str::FromStr>(s: &str) -> Option<T> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// float4/8out's forms: digits with '.', 'e+NN'/'e-NN', "NaN", "Infinity", "-Infinity".
/// Rust and the target's strtof/strtod both round a decimal to the nearest value; a value
/// out of the type's range (text of a wider source type) is left to the target, which
/// refuses it where Rust would give infinity or zero.
fn float<F: std::str::FromStr + Into<f64> + Copy>(s: &str) -> Option<F> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return s.parse().ok();
    }
    let numeric = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e'))
        && s.bytes().any(|b| b.is_ascii_digit());
    let v: F = s.parse().ok().filter(|_| numeric)?;
    let mantissa = s.split('e').next().unwrap_or(s);
    let underflow = v.into() == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    (v.into().is_finite() && !underflow).then_some(v)
}

/// uuid_out's form: 8-4-4-4-12 lowercase hex digits.
fn uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(out)
}

/// Days from 2000-01-01 of "YYYY-MM-DD" (years 1 to 9999: no BC, no five-digit years).
fn date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if y < 1 || d < 1 || d > days_in {
        return None;
    }
    Some(days_from_civil(y, m, d) - days_from_civil(2000, 1, 1))
}

/// Microseconds from 2000-01-01 00:00 (UTC for timestamptz) of ISO output:
/// "YYYY-MM-DD HH:MM:SS[.ffffff]" and, with `tz`, an offset "+HH[:MM[:SS]]" (required with
/// `tz`, refused without: timestamp input would ignore it).
fn timestamp(s: &str, tz: bool) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let b = s.as_bytes();
    if b.len() < 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = date(s.get(..10)?)?;
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return None;
        }
        micros = num(&frac[..n])? * 10i64.pow(6 - n as u32);
        rest = &frac[n..];
    }
    let offset = if tz {
        let (sign, o) = match rest.first()? {
            b'+' => (1, &rest[1..]),
            b'-' => (-1, &rest[1..]),
            _ => return None,
        };
        let parts: Vec<&[u8]> = o.split(|&c| c == b':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        let mut secs = 0;
        for (p, unit) in parts.iter().zip([3600, 60, 1]) {
            secs += num(p)? * unit;
        }
        sign * secs
    } else if rest.is_empty() {
        0
    } else {
        return None;
    };
    let local = ((days * 24 + h) * 60 + mi) * 60 + sec;
    Some((local - offset) * 1_000_000 + micros)
}

fn num(b: &[u8]) -> Option<i64> {
    (!b.is_empty() && b.iter().all(u8::is_ascii_digit))
        .then(|| b.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The binary COPY header (signature, flags, header extension length).
pub fn header(out: &mut BytesMut) {
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
}

/// The binary COPY trailer.
pub fn trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(c: Conv, s: &str) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        c.encode(s.as_bytes(), &mut out).then(|| out[4..].to_vec())
    }

    #[test]
    fn integers_and_floats() {
        assert_eq!(field(Conv::Int2, "-32768"), Some(vec![0x80, 0]));
        assert_eq!(field(Conv::Int2, "32768"), None);
        assert_eq!(field(Conv::Int8, "+1"), None);
        assert_eq!(field(Conv::Int4, " 1"), None);
        assert_eq!(
            field(Conv::Float8, "-0"),
            Some((-0.0f64).to_bits().to_be_bytes().to_vec())
        );
        assert_eq!(
            field(Conv::Float8, "1e+300"),
            Some(1e300f64.to_bits().to_be_bytes().to_vec())
        );
        assert_eq!(
            field(Conv::Float4, "Infinity"),
            Some(f32::INFINITY.to_bits().to_be_bytes().to_vec())
        );
        assert_eq!(
            field(Conv::Float4, "0.1"),
            Some(0.1f32.to_bits().to_be_bytes().to_vec())
        );
        assert_eq!(field(Conv::Float8, "inf"), None);
        // Out of range for the type: the target's own error, not infinity or zero.
        assert_eq!(field(Conv::Float4, "1e+300"), None);
        assert_eq!(field(Conv::Float4, "1e-300"), None);
        assert_eq!(field(Conv::Float8, "1e+400"), None);
        assert_eq!(field(Conv::Float4, "0e-300"), Some(vec![0; 4]));
        assert_eq!(field(Conv::Float8, "0x10"), None);
    }

    #[test]
    fn uuids_and_booleans() {
        assert_eq!(
            field(Conv::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()[..3],
            [0xa0, 0xee, 0xbc]
        );
        assert_eq!(
            field(Conv::Uuid, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            None
        );
        assert_eq!(field(Conv::Uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11"), None);
        assert_eq!(field(Conv::Bool, "t"), Some(vec![1]));
        assert_eq!(field(Conv::Bool, "true"), None);
    }

    #[test]
    fn dates_and_timestamps() {
        let us = |v: i64| Some(v.to_be_bytes().to_vec());
        assert_eq!(
            field(Conv::Date, "2000-01-01"),
            Some(0i32.to_be_bytes().to_vec())
        );
        assert_eq!(
            field(Conv::Date, "1999-12-31"),
            Some((-1i32).to_be_bytes().to_vec())
        );
        assert_eq!(
            field(Conv::Date, "2024-02-29"),
            Some(8825i32.to_be_bytes().to_vec())
        );
        assert_eq!(field(Conv::Date, "2023-02-29"), None);
        assert_eq!(field(Conv::Date, "0044-03-15 BC"), None);
        assert_eq!(
            field(Conv::Timestamp, "2000-01-01 00:00:01.5"),
            us(1_500_000)
        );
        assert_eq!(field(Conv::Timestamp, "2000-01-01 00:00:00+00"), None);
        assert_eq!(field(Conv::Timestamptz, "2000-01-01 00:00:00"), None);
        assert_eq!(field(Conv::Timestamptz, "2000-01-01 01:00:00+01"), us(0));
        assert_eq!(
            field(Conv::Timestamptz, "1999-12-31 18:29:59.000001-05:30:01"),
            us(1)
        );
        assert_eq!(
            field(Conv::Timestamptz, "2026-11-28 07:27:49.123456+00"),
            us(849_166_069_123_456)
        );
        assert_eq!(field(Conv::Timestamptz, "infinity"), us(i64::MAX));
        assert_eq!(
            field(Conv::Timestamptz, "2026-11-28 07:27:49.1234567+00"),
            None
        );
    }
}
