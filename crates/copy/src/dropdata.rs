//! `abort --drop-data`: drops exactly what the run's pre-data created on the target (as
//! recorded in `bluegreen.created`), never an object someone else made.
//!
//! Anything outside the record that depends on a recorded object (a view an operator made
//! over a copied table, a foreign key into one) would go with it under CASCADE, so its
//! presence refuses the whole drop: the operator decides about their own objects. A schema
//! the run created is dropped only when nothing else is left in it.

use state::created::{self, CreatedObject};
use state::GenericClient;

use crate::error::sql;
use crate::Error;

/// The kinds of object pre-data creates, as `pg_identify_object` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // Declared in drop order: dependents before what they depend on.
    View,
    MaterializedView,
    ForeignTable,
    Table,
    Sequence,
    Aggregate,
    Function,
    Procedure,
    Operator,
    OperatorClass,
    OperatorFamily,
    Cast,
    TextSearchConfiguration,
    TextSearchDictionary,
    Conversion,
    Collation,
    Type,
    Extension,
    Schema,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "view" => Kind::View,
            "materialized view" => Kind::MaterializedView,
            "foreign table" => Kind::ForeignTable,
            "table" => Kind::Table,
            "sequence" => Kind::Sequence,
            "aggregate" => Kind::Aggregate,
            "function" => Kind::Function,
            "procedure" => Kind::Procedure,
            "operator" => Kind::Operator,
            "operator class" => Kind::OperatorClass,
            "operator family" => Kind::OperatorFamily,
            "cast" => Kind::Cast,
            "text search configuration" => Kind::TextSearchConfiguration,
            "text search dictionary" => Kind::TextSearchDictionary,
            "conversion" => Kind::Conversion,
            "collation" => Kind::Collation,
            "type" | "composite type" => Kind::Type,
            "extension" => Kind::Extension,
            "schema" => Kind::Schema,
            _ => return None,
        })
    }

    fn keyword(self) -> &'static str {
        match self {
            Kind::View => "VIEW",
            Kind::MaterializedView => "MATERIALIZED VIEW",
            Kind::ForeignTable => "FOREIGN TABLE",
            Kind::Table => "TABLE",
            Kind::Sequence => "SEQUENCE",
            Kind::Aggregate => "AGGREGATE",
            Kind::Function => "FUNCTION",
            Kind::Procedure => "PROCEDURE",
            Kind::Operator => "OPERATOR",
            Kind::OperatorClass => "OPERATOR CLASS",
            Kind::OperatorFamily => "OPERATOR FAMILY",
            Kind::Cast => "CAST",
            Kind::TextSearchConfiguration => "TEXT SEARCH CONFIGURATION",
            Kind::TextSearchDictionary => "TEXT SEARCH DICTIONARY",
            Kind::Conversion => "CONVERSION",
            Kind::Collation => "COLLATION",
            Kind::Type => "TYPE",
            Kind::Extension => "EXTENSION",
            Kind::Schema => "SCHEMA",
        }
    }
}

/// What `--drop-data` did on the target.
#[derive(Debug, Default)]
pub struct Dropped {
    /// (kind, identity) of each object dropped, schemas included.
    pub objects: Vec<(String, String)>,
    /// Schemas the run created that stay, with what else is in them.
    pub kept_schemas: Vec<(String, Vec<String>)>,
    /// Recorded objects no longer there (dropped by hand since).
    pub gone: Vec<String>,
    /// Recorded objects of a kind this build cannot drop: left alone.
    pub unknown: Vec<String>,
}

/// Drops the run's recorded objects in `tx` (the caller commits), or returns the objects
/// outside the record that depend on them, having dropped nothing.
pub async fn drop_created(
    tx: &impl GenericClient,
    run: &str,
) -> Result<Result<Dropped, Vec<(String, String)>>, Error> {
    let blockers = created::foreign_dependents(tx, run).await?;
    if !blockers.is_empty() {
        return Ok(Err(blockers));
    }
    let mut out = Dropped::default();
    let mut objects: Vec<(Kind, CreatedObject)> = Vec::new();
    for o in CreatedObject::list(tx, run).await? {
        if !o.present {
            out.gone.push(format!("{} {}", o.kind, o.identity));
            continue;
        }
        match Kind::parse(&o.kind) {
            Some(k) => objects.push((k, o)),
            None => out.unknown.push(format!("{} {}", o.kind, o.identity)),
        }
    }
    objects.sort_by_key(|(k, _)| *k);
    for (kind, o) in objects {
        // The identity is pg_identify_object's: qualified and quoted by the server itself.
        if kind == Kind::Schema {
            let contents = created::schema_contents(tx, o.objid).await?;
            if !contents.is_empty() {
                out.kept_schemas.push((o.identity, contents));
                continue;
            }
            tx.batch_execute(&format!("DROP SCHEMA {}", o.identity))
                .await
                .map_err(sql("target", format!("drop schema {}", o.identity)))?;
        } else {
            // CASCADE takes only the run's own objects and their parts: anything else that
            // depends on them was refused above. IF EXISTS: an earlier CASCADE may have
            // taken this one already (a view over a dropped table).
            tx.batch_execute(&format!(
                "DROP {} IF EXISTS {} CASCADE",
                kind.keyword(),
                o.identity
            ))
            .await
            .map_err(sql("target", format!("drop {} {}", o.kind, o.identity)))?;
        }
        out.objects.push((o.kind, o.identity));
    }
    Ok(Ok(out))
}
