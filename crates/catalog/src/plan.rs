//! The Plan: everything later stages need to know about both servers, read once.
//! Its JSON form (`bluegreen plan --json`) is a stable interface: fields are only ever added.

use serde::Serialize;

/// Version of the JSON shape; bumped only for incompatible changes.
pub const PLAN_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format: u32,
    pub source: Server,
    pub target: Server,
    /// Schemas whose tables the run migrates.
    pub schemas: Vec<String>,
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
    pub materialized_views: Vec<String>,
    pub foreign_tables: Vec<String>,
    pub hypertables: Vec<Hypertable>,
    pub extensions: Vec<Extension>,
    pub large_objects: i64,
    pub findings: Vec<Finding>,
}

impl Plan {
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }

    pub fn has_blockers(&self) -> bool {
        self.blockers().next().is_some()
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.schema == schema && t.name == name)
    }
}

/// One server as seen through the role we connect as.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Connection, password removed.
    pub connection: String,
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub database_bytes: i64,
    pub role: String,
    pub superuser: bool,
    pub replication: bool,
    pub can_create: bool,
    pub wal_level: String,
    pub max_replication_slots: i32,
    pub used_replication_slots: i32,
    pub max_wal_senders: i32,
    pub used_wal_senders: i32,
    pub timescaledb: Option<String>,
    /// The database's `datcollate` and `datctype`: what text comparison, `lower()` and the
    /// like do with the default collation.
    pub collate: String,
    pub ctype: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// `table` or `partitioned`.
    pub kind: String,
    pub unlogged: bool,
    pub bytes: i64,
    /// From pg_class.reltuples; None when the table was never analyzed.
    pub estimated_rows: Option<i64>,
    pub primary_key: Option<Vec<String>>,
    /// `default`, `full`, `index` or `nothing`.
    pub replica_identity: String,
    /// Columns the source sends as the old key for UPDATE/DELETE (empty: none; every
    /// column for `full`).
    pub identity_columns: Vec<String>,
    pub columns: Vec<Column>,
    /// Parent, when this table is a partition (copied through its own name, published via root).
    pub partition_of: Option<String>,
    pub owner: String,
    pub selectable: bool,
    /// Present on the target already (in any state).
    pub on_target: bool,
}

impl Table {
    pub fn qualified(&self) -> String {
        conn::qualified(&self.schema, &self.name)
    }

    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Columns that carry data in COPY (generated columns are recomputed by the target).
    pub fn copied_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    /// As `format_type` prints it.
    pub type_name: String,
    pub type_oid: u32,
    pub not_null: bool,
    pub generated: bool,
    /// `always` or `by default` for identity columns.
    pub identity: Option<String>,
    /// Binary COPY would embed database-specific OIDs (arrays or composites of user-defined
    /// types, reg* values), so this column travels in text form.
    pub needs_text: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub last_value: Option<i64>,
    /// `schema.table.column` of an owning serial or identity column.
    pub owned_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hypertable {
    pub schema: String,
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub chunks: i64,
    pub compression: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dimension {
    pub column: String,
    pub kind: String,
    pub interval: Option<String>,
    pub partitions: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
    /// Installable on the target (in pg_available_extensions).
    pub available_on_target: bool,
    pub installed_on_target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The migration must not start until this is fixed.
    Blocker,
    /// The migration can run; the operator should know.
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code, e.g. `no-replica-identity`.
    pub code: String,
    /// `source`, `target`, or the object concerned.
    pub subject: String,
    pub message: String,
    /// The statement or step that fixes it.
    pub fix: String,
}
