//! Durations and sizes with units (`5s`, `500ms`, `2min`, `1h`; `64MB`, `1GB`), as flag and
//! config values. A plain number keeps the unit the flag always had, so old command lines
//! and scripts mean what they meant.

/// `ms`, `s`, `min`, `h`, `d` (and their long forms) in seconds.
const TIME_UNITS: &[(&[&str], f64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 0.001),
    (&["s", "sec", "secs", "second", "seconds"], 1.0),
    (&["min", "mins", "minute", "minutes"], 60.0),
    (&["h", "hour", "hours"], 3600.0),
    (&["d", "day", "days"], 86400.0),
];

/// Byte units as PostgreSQL reads them (powers of 1024), in MB.
const SIZE_UNITS: &[(&[&str], f64)] = &[
    (&["kb", "k"], 1.0 / 1024.0),
    (&["mb", "m"], 1.0),
    (&["gb", "g"], 1024.0),
    (&["tb", "t"], 1024.0 * 1024.0),
];

/// Splits `12.5 min` into 12.5 and `min`.
fn number_and_unit(s: &str) -> Result<(f64, String), String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("\"{s}\" is not a number with an optional unit"))?;
    if !n.is_finite() {
        return Err(format!("\"{s}\" is not a finite number"));
    }
    Ok((n, unit.trim().to_ascii_lowercase()))
}

fn scaled(s: &str, plain: f64, units: &[(&[&str], f64)], kinds: &str) -> Result<f64, String> {
    let (n, unit) = number_and_unit(s)?;
    if unit.is_empty() {
        return Ok(n * plain);
    }
    units
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, factor)| n * factor)
        .ok_or_else(|| format!("unknown unit \"{unit}\" in \"{s}\" (use {kinds})"))
}

const TIME_KINDS: &str = "ms, s, min, h or d";

/// A duration in seconds; a plain number is seconds.
pub fn seconds(s: &str) -> Result<f64, String> {
    scaled(s, 1.0, TIME_UNITS, TIME_KINDS)
}

/// A duration in whole seconds (rounded up); a plain number is seconds.
pub fn whole_seconds(s: &str) -> Result<u64, String> {
    seconds(s).map(|v| v.ceil() as u64)
}

/// A positive duration; a plain number is seconds.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let v = seconds(s)?;
    if !(v > 0.0 && v < 1e9) {
        return Err(format!("\"{s}\" is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// A duration in whole milliseconds (rounded up); a plain number is milliseconds.
pub fn millis(s: &str) -> Result<u64, String> {
    scaled(s, 0.001, TIME_UNITS, TIME_KINDS).map(|v| (v * 1000.0).round().max(0.0) as u64)
}

/// A size in whole MB (rounded up, at least 1); a plain number is MB.
pub fn megabytes(s: &str) -> Result<i64, String> {
    let mb = scaled(s, 1.0, SIZE_UNITS, "kB, MB, GB or TB")?;
    if mb <= 0.0 {
        return Err(format!("\"{s}\" must be more than zero"));
    }
    Ok(mb.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_keep_their_unit() {
        assert_eq!(seconds("5"), Ok(5.0));
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert_eq!(millis("500"), Ok(500));
        assert_eq!(whole_seconds("120"), Ok(120));
        assert_eq!(megabytes("64"), Ok(64));
    }

    #[test]
    fn units_convert() {
        assert_eq!(seconds("500ms"), Ok(0.5));
        assert_eq!(seconds("2min"), Ok(120.0));
        assert_eq!(seconds("1h"), Ok(3600.0));
        assert_eq!(seconds("1 d"), Ok(86400.0));
        assert_eq!(millis("2s"), Ok(2000));
        assert_eq!(millis("1.5s"), Ok(1500));
        assert_eq!(whole_seconds("1500ms"), Ok(2));
        assert_eq!(megabytes("1GB"), Ok(1024));
        assert_eq!(megabytes("64MB"), Ok(64));
        assert_eq!(megabytes("512kB"), Ok(1));
    }

    #[test]
    fn nonsense_is_refused_with_the_units() {
        assert!(seconds("5 parsecs")
            .unwrap_err()
            .contains("ms, s, min, h or d"));
        assert!(seconds("abc").is_err());
        assert!(seconds("-1s").is_err());
        assert!(megabytes("0").is_err());
        assert!(megabytes("1PB").unwrap_err().contains("kB, MB, GB or TB"));
    }
}
