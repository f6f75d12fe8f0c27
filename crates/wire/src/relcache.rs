//! Relation cache and the stateful decoder: pgoutput sends a relation's columns once (and
//! again after DDL); row changes only carry the relation id.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::pgoutput::{self, DecodeError, LogicalMessage, Relation, Tuple, TypeInfo};

/// Relations and types seen so far in one stream, keyed by OID.
#[derive(Debug, Default, Clone)]
pub struct RelationCache {
    relations: HashMap<u32, Arc<Relation>>,
    types: HashMap<u32, TypeInfo>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records Relation and Type messages; other messages leave the cache alone.
    pub fn update(&mut self, msg: &LogicalMessage) {
        match msg {
            LogicalMessage::Relation(r) => {
                self.relations.insert(r.id, Arc::clone(r));
            }
            LogicalMessage::Type(t) => {
                self.types.insert(t.oid, t.clone());
            }
            _ => {}
        }
    }

    pub fn relation(&self, id: u32) -> Result<&Arc<Relation>, DecodeError> {
        self.relations
            .get(&id)
            .ok_or(DecodeError::UnknownRelation(id))
    }

    /// A user-defined type announced by a Type message (built-in types are never announced).
    pub fn type_info(&self, oid: u32) -> Option<&TypeInfo> {
        self.types.get(&oid)
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

/// A decoded message with the relation(s) it refers to, as they were described when the
/// message was sent (an `Arc`, so later DDL does not change what a buffered change means).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub message: LogicalMessage,
    /// One relation for Insert/Update/Delete (and Relation itself), every truncated relation
    /// for Truncate, none otherwise.
    pub relations: Vec<Arc<Relation>>,
}

impl Decoded {
    /// The relation of a row change or Relation message.
    pub fn relation(&self) -> Option<&Arc<Relation>> {
        self.relations.first()
    }
}

/// Decodes a stream of pgoutput messages in order, keeping the relation cache current.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    cache: RelationCache,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cache(&self) -> &RelationCache {
        &self.cache
    }

    /// Decodes one message. Row changes for an unknown relation, or whose column count
    /// differs from the relation's, are errors: applying them would misplace values.
    pub fn decode(&mut self, buf: &Bytes) -> Result<Decoded, DecodeError> {
        let message = pgoutput::decode(buf)?;
        self.cache.update(&message);
        let relations = match &message {
            LogicalMessage::Relation(r) => vec![Arc::clone(r)],
            LogicalMessage::Insert(i) => vec![self.checked(i.relation_id, &[&i.new])?],
            LogicalMessage::Update(u) => {
                let old = u.old.as_ref().map(|o| o.tuple());
                let tuples: Vec<&Tuple> = old.into_iter().chain([&u.new]).collect();
                vec![self.checked(u.relation_id, &tuples)?]
            }
            LogicalMessage::Delete(d) => vec![self.checked(d.relation_id, &[d.old.tuple()])?],
            LogicalMessage::Truncate(t) => t
                .relation_ids
                .iter()
                .map(|id| self.cache.relation(*id).cloned())
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Decoded { message, relations })
    }

    fn checked(&self, id: u32, tuples: &[&Tuple]) -> Result<Arc<Relation>, DecodeError> {
        let rel = self.cache.relation(id)?;
        for t in tuples {
            if t.len() != rel.columns.len() {
                return Err(DecodeError::ColumnCount {
                    relation: id,
                    expected: rel.columns.len(),
                    got: t.len(),
                });
            }
        }
        Ok(Arc::clone(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::Value;

    fn relation(id: u32, cols: &[&str]) -> Bytes {
        let mut b = vec![b'R'];
        b.extend(id.to_be_bytes());
        b.extend(b"public\0t\0d");
        b.extend((cols.len() as i16).to_be_bytes());
        for c in cols {
            b.push(0);
            b.extend(c.as_bytes());
            b.push(0);
            b.extend(25u32.to_be_bytes());
            b.extend((-1i32).to_be_bytes());
        }
        b.into()
    }

    fn insert(id: u32, vals: &[&str]) -> Bytes {
        let mut b = vec![b'I'];
        b.extend(id.to_be_bytes());
        b.push(b'N');
        b.extend((vals.len() as i16).to_be_bytes());
        for v in vals {
            b.push(b't');
            b.extend((v.len() as i32).to_be_bytes());
            b.extend(v.as_bytes());
        }
        b.into()
    }

    #[test]
    fn changes_carry_the_relation_as_it_was_then() {
        let mut d = Decoder::new();
        d.decode(&relation(7, &["a"])).unwrap();
        let first = d.decode(&insert(7, &["1"])).unwrap();
        d.decode(&relation(7, &["a", "b"])).unwrap();
        let second = d.decode(&insert(7, &["1", "2"])).unwrap();
        assert_eq!(first.relation().unwrap().columns.len(), 1);
        assert_eq!(second.relation().unwrap().columns.len(), 2);
        let LogicalMessage::Insert(i) = second.message else {
            panic!()
        };
        assert_eq!(i.new[1], Value::Text("2".into()));
    }

    #[test]
    fn unknown_relation_and_wrong_width_are_errors() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&insert(9, &["1"])).unwrap_err(),
            DecodeError::UnknownRelation(9)
        );
        d.decode(&relation(9, &["a", "b"])).unwrap();
        assert!(matches!(
            d.decode(&insert(9, &["1"])).unwrap_err(),
            DecodeError::ColumnCount {
                expected: 2,
                got: 1,
                ..
            }
        ));
    }
}
