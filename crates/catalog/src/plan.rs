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
    pub continuous_aggregates: Vec<ContinuousAggregate>,
    /// TimescaleDB background jobs that work on no hypertable (user jobs).
    pub timescaledb_jobs: Vec<Job>,
    /// `timescaledb.enable_compression_wal_markers` on the source (None without TimescaleDB).
    pub compression_markers: Option<bool>,
    /// `_timescaledb_catalog.dimension_slice` has REPLICA IDENTITY FULL on the source: chunks
    /// dropped while sync is stopped stream with their ranges (None without TimescaleDB).
    pub slice_ranges: Option<bool>,
    /// Hypertables outside the planned schemas (and aggregates' materializations) whose
    /// chunks have no replica identity: publishing `_timescaledb_internal` for the planned
    /// hypertables would make their UPDATE and DELETE fail on the source.
    pub unkeyed_hypertables: Vec<UnkeyedHypertable>,
    /// `--profile`: plain tables that become hypertables on the target, aggregates to create.
    pub profile: crate::Profile,
    pub extensions: Vec<Extension>,
    pub large_objects: i64,
    /// Transactions prepared on the source (`PREPARE TRANSACTION`) and not yet finished, as
    /// `gid (owner, database, since)`: the run's slot cannot reach a consistent point while
    /// one is open.
    pub prepared_transactions: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Plan {
    /// The profile's conversion of a table, when it becomes a hypertable on the target.
    pub fn conversion(&self, schema: &str, name: &str) -> Option<&crate::Conversion> {
        self.profile
            .hypertables
            .iter()
            .find(|c| c.schema == schema && c.name == name)
    }

    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }

    pub fn has_blockers(&self) -> bool {
        self.blockers().next().is_some()
    }

    /// The source hypertable of this name, when the run migrates it as one.
    pub fn hypertable(&self, schema: &str, name: &str) -> Option<&Hypertable> {
        self.hypertables
            .iter()
            .find(|h| h.schema == schema && h.name == name)
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
    /// `shared_preload_libraries` includes timescaledb (TimescaleDB cannot load otherwise);
    /// for a role that may not read the setting, whether TimescaleDB's settings are defined.
    pub preloads_timescaledb: Option<bool>,
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
    /// Without a primary key: the column verify cuts it into chunks by and sync records
    /// written values of (`state::changes::CHUNK_COLUMN_SQL`).
    pub chunk_column: Option<String>,
    /// `default`, `full`, `index` or `nothing`.
    pub replica_identity: String,
    /// The same as `replica_identity_columns`, under the name plan --json format 1 first
    /// gave it (it is not about identity columns: those have `Column::identity`).
    pub identity_columns: Vec<String>,
    /// Columns the source sends as the old key for UPDATE/DELETE, its replica identity
    /// (empty: none; every column for `full`).
    pub replica_identity_columns: Vec<String>,
    pub columns: Vec<Column>,
    /// Parent, when this table is a partition (copied through its own name, published via root).
    pub partition_of: Option<String>,
    /// Tables that inherit from this one at any depth (partitions, inheritance children,
    /// TimescaleDB chunks) in schemas outside the plan: a plain SELECT of this table sees
    /// their rows, but copy does not read them.
    pub children_outside: Vec<RelName>,
    /// How many tables inheriting from this one are planned tables themselves (each read
    /// on its own).
    pub children_planned: usize,
    pub owner: String,
    pub selectable: bool,
    /// The connecting role has its owner's rights (a member of the owning role): what
    /// listing it in a publication takes.
    pub owned: bool,
    /// Present on the target already (in any state).
    pub on_target: bool,
    /// A TimescaleDB hypertable on the source: the column of its first (time) dimension,
    /// by whose ranges copy reads it.
    pub time_column: Option<String>,
}

impl Table {
    pub fn qualified(&self) -> String {
        conn::qualified(&self.schema, &self.name)
    }

    pub fn display_name(&self) -> String {
        conn::display_qualified(&self.schema, &self.name)
    }

    /// Columns that carry data in COPY (generated columns are recomputed by the target).
    pub fn copied_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

/// A relation named by schema and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelName {
    pub schema: String,
    pub name: String,
}

impl RelName {
    pub fn display(&self) -> String {
        conn::display_qualified(&self.schema, &self.name)
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
    /// What nextval last returned (as `pg_sequences` shows it): None when nextval was not
    /// called since the sequence was created or set with `setval(…, false)`, or when the
    /// role may not read it.
    pub last_value: Option<i64>,
    /// The sequence's own `last_value` field, whatever `is_called` says: with `is_called`
    /// false, the value the next nextval returns. None when the role may not read it.
    pub sequence_last_value: Option<i64>,
    pub is_called: Option<bool>,
    /// `schema.table.column` of an owning serial or identity column.
    pub owned_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hypertable {
    pub schema: String,
    pub name: String,
    pub dimensions: Vec<Dimension>,
    pub chunks: i64,
    /// Compression (the columnstore) is enabled.
    pub compression: bool,
    pub compressed_chunks: i64,
    /// `segmentby` and `orderby` as TimescaleDB reports them.
    pub compression_settings: Option<CompressionSettings>,
    /// Policies and user jobs on this hypertable (or on its continuous aggregates).
    pub jobs: Vec<Job>,
    /// Schemas its chunks live in (`_timescaledb_internal` unless made otherwise).
    pub chunk_schemas: Vec<String>,
}

/// A hypertable (any schema) whose chunks have no replica identity.
#[derive(Debug, Clone, Serialize)]
pub struct UnkeyedHypertable {
    pub schema: String,
    pub name: String,
    /// `schema.name` of the continuous aggregate it materializes, if it does.
    pub aggregate: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompressionSettings {
    pub segment_by: Option<String>,
    pub order_by: Option<String>,
}

/// A TimescaleDB background job: a policy (compression, retention, reorder, continuous
/// aggregate refresh) or a user job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i32,
    /// `compression`, `retention`, `reorder`, `refresh` or `user`.
    pub kind: String,
    /// `schema.function` it runs.
    pub proc: String,
    pub schedule_interval: String,
    pub scheduled: bool,
    pub config: Option<serde_json::Value>,
    /// The hypertable or continuous aggregate it works on (`schema.name`).
    pub on: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContinuousAggregate {
    pub schema: String,
    pub name: String,
    /// The hypertable it aggregates (`schema.name`).
    pub hypertable: String,
    pub definition: String,
    pub materialized_only: bool,
    /// `schema.name` of the hypertable holding its rows.
    pub materialization: String,
    /// Everything before this instant (as text) is materialized.
    pub watermark: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dimension {
    pub column: String,
    /// `Time` (ranges) or `Space` (hash partitions).
    pub kind: String,
    /// As `format_type` prints the column's type.
    pub column_type: String,
    /// Interval (time types) or integer length of each range.
    pub interval: Option<String>,
    pub partitions: Option<i32>,
    /// A partitioning function other than TimescaleDB's own (`schema.function`, quoted).
    pub partitioning_func: Option<String>,
    /// For integer time: the function that says what "now" is (`schema.function`, quoted).
    pub integer_now_func: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
    /// Installable on the target (in pg_available_extensions).
    pub available_on_target: bool,
    pub installed_on_target: Option<String>,
    /// The version `CREATE EXTENSION` would install on the target.
    pub default_on_target: Option<String>,
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
