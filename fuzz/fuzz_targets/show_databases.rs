//! PgBouncer's `SHOW DATABASES` reply as cutover reads it (cutover::pooler::db_target): any
//! shape of reply (columns missing or repeated, rows shorter or longer than the header, any
//! text) gives an endpoint or none, never a panic, and an endpoint only for a row that names
//! the database.
//! Input: the database name on the first line, then the reply as `psql -A` prints it: a
//! header line and one line per row, cells split by `|`, `\N` for NULL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let db = lines.next().unwrap_or_default();
    let columns: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    let rows: Vec<Vec<Option<&str>>> = lines
        .map(|l| {
            l.split('|')
                .map(|c| if c == "\\N" { None } else { Some(c) })
                .collect()
        })
        .collect();
    if let Some(found) = cutover::pooler::db_target(&columns, &rows, db) {
        let name = columns.iter().position(|c| *c == "name").unwrap();
        assert!(rows
            .iter()
            .any(|r| r.get(name).copied().flatten() == Some(db)));
        let _ = found.to_string();
    }
});
