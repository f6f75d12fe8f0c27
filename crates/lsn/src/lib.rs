//! WAL positions (`pg_lsn`) in PostgreSQL's `X/Y` text form: the one LSN type of the walsender
//! client, the state schema and every stage. Read and written as `pg_lsn` (binary) or as
//! text, so a query may hand it over either way; serialized as its text form.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A WAL position. Ordered like the server orders them; `Lsn::ZERO` means "none yet"
/// (the server treats 0/0 in a status update as "no position", which is why feedback
/// starts there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(l: Lsn) -> Self {
        l.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers of at most 8 digits as X/Y")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| {
            // from_str_radix accepts a leading '+', the server does not.
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ToSql for Lsn {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::PG_LSN {
            out.put_u64(self.0);
        } else {
            out.put_slice(self.to_string().as_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::PG_LSN | Type::TEXT | Type::VARCHAR)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Lsn {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::PG_LSN {
            let bytes: [u8; 8] = raw
                .try_into()
                .map_err(|_| format!("a pg_lsn of {} bytes", raw.len()))?;
            return Ok(Lsn(u64::from_be_bytes(bytes)));
        }
        Ok(std::str::from_utf8(raw)?.parse()?)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::PG_LSN | Type::TEXT | Type::VARCHAR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_server_form() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x1_6B37_4D48).to_string(), "1/6B374D48");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parse_round_trips_and_accepts_lowercase() {
        for v in [0, 1, 0x1_6B37_4D48, u64::MAX, 0xFFFF_FFFF, 1 << 32] {
            assert_eq!(Lsn(v).to_string().parse::<Lsn>(), Ok(Lsn(v)));
        }
        assert_eq!("16/b374d848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "+1/2",
            "g/0",
            "123456789/0",
            " 1/2",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn sql_forms_round_trip() {
        let l = Lsn(0x1_6B37_4D48);
        for ty in [Type::PG_LSN, Type::TEXT] {
            let mut buf = BytesMut::new();
            l.to_sql(&ty, &mut buf).unwrap();
            assert_eq!(Lsn::from_sql(&ty, &buf).unwrap(), l);
        }
        assert!(Lsn::from_sql(&Type::PG_LSN, &[1, 2]).is_err());
        assert!(Lsn::from_sql(&Type::TEXT, b"nonsense").is_err());
    }

    #[test]
    fn ordering_follows_the_wal() {
        assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
    }
}
