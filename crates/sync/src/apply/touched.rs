//! The keys a group wrote, per table, kept in memory while the group runs and recorded in
//! its own transaction at commit (`state::changes`), so the next verify checks only the
//! chunks they fall in. A table without a usable key (none, or REPLICA IDENTITY FULL) has
//! its chunk column's values recorded instead: an insert's new row and a FULL identity's
//! old row carry every column. Where neither can say which rows changed (a TRUNCATE, no
//! chunk column, a value that is not plain text, more than `MAX_KEYS`), the table is
//! recorded as touched whole.

use super::*;

/// Distinct keys kept per table and group; past this the table counts as touched whole
/// (the record stays small, and verify checks that table in full).
pub(super) const MAX_KEYS: usize = 20_000;

#[derive(Debug, Default)]
pub struct Touched {
    tables: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    schema: String,
    name: String,
    columns: Vec<String>,
    /// Where in a tuple `columns` are.
    positions: Vec<usize>,
    keys: HashSet<Vec<Bytes>>,
    whole: bool,
}

impl Touched {
    fn entry(&mut self, rel: &TargetRel) -> &mut Entry {
        if !self.tables.contains_key(&rel.qualified) {
            let (columns, positions) = if !rel.full_identity && !rel.key.is_empty() {
                (rel.key_names.clone(), rel.key.clone())
            } else {
                rel.chunk_column
                    .iter()
                    .cloned()
                    .map(|(i, n)| (n, i))
                    .unzip()
            };
            self.tables.insert(
                rel.qualified.clone(),
                Entry {
                    schema: rel.schema.clone(),
                    name: rel.name.clone(),
                    whole: positions.is_empty(),
                    columns,
                    positions,
                    keys: HashSet::new(),
                },
            );
        }
        // Just inserted when missing.
        self.tables.get_mut(&rel.qualified).expect("entry present")
    }

    /// A row of `rel` with this tuple's key (or chunk column value) was written.
    pub(super) fn row(&mut self, rel: &TargetRel, tuple: &Tuple) {
        let e = self.entry(rel);
        if e.whole {
            return;
        }
        match net::values_at(&e.positions, tuple) {
            Some(k) if e.keys.len() < MAX_KEYS => {
                e.keys.insert(k);
            }
            Some(k) if e.keys.contains(&k) => {}
            _ => {
                e.whole = true;
                e.keys.clear();
            }
        }
    }

    /// Any row of `rel` may have been written.
    pub(super) fn whole(&mut self, rel: &TargetRel) {
        let e = self.entry(rel);
        e.whole = true;
        e.keys.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The record, as `state::changes` stores it.
    pub(super) fn to_json(&self) -> serde_json::Value {
        let tables: Vec<serde_json::Value> = self
            .tables
            .values()
            .map(|e| {
                let keys: Option<Vec<Vec<String>>> = e
                    .keys
                    .iter()
                    .map(|k| {
                        k.iter()
                            .map(|b| String::from_utf8(b.to_vec()).ok())
                            .collect()
                    })
                    .collect();
                let whole = e.whole || keys.is_none();
                state::changes::TouchedTable {
                    schema: e.schema.clone(),
                    name: e.name.clone(),
                    columns: e.columns.clone(),
                    keys: if whole {
                        Vec::new()
                    } else {
                        keys.unwrap_or_default()
                    },
                    whole,
                }
                .to_json()
            })
            .collect();
        serde_json::Value::Array(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(full_identity: bool) -> TargetRel {
        TargetRel {
            qualified: "\"s\".\"t\"".into(),
            display: "s.t".into(),
            schema: "s".into(),
            name: "t".into(),
            key_names: vec!["id".into()],
            columns: vec!["\"id\"".into(), "\"v\"".into()],
            types: vec!["bigint".into(), "text".into()],
            always_identity: vec![false; 2],
            key: vec![0],
            full_identity,
            applies_from: Lsn(0),
            copy_binary: None,
            batchable: true,
            insert_order: None,
            chunk_column: None,
        }
    }

    fn row(id: &str) -> Tuple {
        vec![
            Value::Text(Bytes::from(id.to_string())),
            Value::Text(Bytes::from_static(b"x")),
        ]
    }

    fn entries(t: &Touched) -> Vec<state::changes::TouchedTable> {
        t.to_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| state::changes::TouchedTable::from_json(v).unwrap())
            .collect()
    }

    #[test]
    fn keys_are_kept_once_and_a_table_turns_whole_when_keys_cannot_say() {
        let r = rel(false);
        let mut t = Touched::default();
        assert!(t.is_empty());
        t.row(&r, &row("7"));
        t.row(&r, &row("7"));
        t.row(&r, &row("9"));
        let e = entries(&t);
        assert_eq!(e.len(), 1);
        assert!(!e[0].whole);
        assert_eq!(e[0].columns, vec!["id".to_string()]);
        let mut keys = e[0].keys.clone();
        keys.sort();
        assert_eq!(keys, vec![vec!["7".to_string()], vec!["9".to_string()]]);
        // A key that is not a plain value (an unchanged TOAST value): whole table.
        t.row(&r, &vec![Value::UnchangedToast, Value::Null]);
        let e = entries(&t);
        assert!(e[0].whole && e[0].keys.is_empty());
        // TRUNCATE, and REPLICA IDENTITY FULL without a chunk column: whole.
        let mut t = Touched::default();
        t.whole(&r);
        assert!(entries(&t)[0].whole);
        let mut t = Touched::default();
        t.row(&rel(true), &row("1"));
        assert!(entries(&t)[0].whole);
        // No key (or FULL) with a chunk column: its values, under its name; a NULL there
        // cannot say which chunk: whole.
        for keyless in [
            TargetRel {
                key: vec![],
                key_names: vec![],
                chunk_column: Some((1, "v".into())),
                ..rel(false)
            },
            TargetRel {
                chunk_column: Some((1, "v".into())),
                ..rel(true)
            },
        ] {
            let mut t = Touched::default();
            t.row(&keyless, &row("1"));
            t.row(&keyless, &row("2"));
            let e = entries(&t);
            assert!(!e[0].whole);
            assert_eq!(e[0].columns, vec!["v".to_string()]);
            assert_eq!(e[0].keys, vec![vec!["x".to_string()]]);
            t.row(
                &keyless,
                &vec![Value::Text(Bytes::from_static(b"3")), Value::Null],
            );
            assert!(entries(&t)[0].whole);
        }
        // Past MAX_KEYS distinct keys: whole; a repeated key below it is no new key.
        let mut t = Touched::default();
        for i in 0..MAX_KEYS {
            t.row(&r, &row(&i.to_string()));
        }
        t.row(&r, &row("0"));
        assert!(!entries(&t)[0].whole);
        t.row(&r, &row("new"));
        assert!(entries(&t)[0].whole);
    }
}
