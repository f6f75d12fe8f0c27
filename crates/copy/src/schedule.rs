//! Which task a free worker takes next, free of I/O (the pipeline runs them).
//!
//! Tasks: data chunks; post-data items (stage 1: keys and indexes, stage 2: foreign keys,
//! triggers and the rest, stage 3: materialized view refreshes, one at a time in dump
//! order); ANALYZE of each table. Rules:
//! - a table's stage-1 items may start as soon as its last chunk commits, while other
//!   tables still copy (an item whose table is unknown waits for all data);
//! - stage 2 waits for the data and stage-1 items of the tables it names (an item naming no
//!   plan table waits for the end of the data phase and every stage-1 item); stage 3 waits
//!   for everything before it;
//! - ANALYZE of a table follows its data, and its indexes when one of them is on an
//!   expression (whose statistics ANALYZE gathers from the index);
//! - a worker never takes a task that would wait for a lock another worker's task holds on
//!   the same table (CREATE INDEX takes SHARE; keys, foreign keys, triggers and ANALYZE
//!   conflict with it and with each other);
//! - among the tasks that may start, the one with the most work behind it goes first: its
//!   own estimated duration plus that of the items waiting for it (a table's chunks carry
//!   its keys, indexes and foreign keys; a key carries the foreign keys that need it). The
//!   big table's chunks and index builds start early, a small table that a big foreign key
//!   references is copied early, and the small tasks fill the gaps at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub type Key = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// Most items run as one statement; a plain key is built as a unique index beside the
/// table's other indexes, then attached as the constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Whole,
    BuildIndex,
    Attach,
}

#[derive(Clone, Debug)]
pub struct Item {
    pub item: i32,
    pub stage: i32,
    pub step: Step,
    pub mode: Mode,
    /// Plan tables it locks.
    pub tables: Vec<Key>,
    /// Every table it names is a plan table (and it names one).
    pub known: bool,
    pub cost: i64,
    /// Cost plus the work waiting for it.
    priority: i64,
    retry_at: Option<Instant>,
}

impl Item {
    /// A key built in two steps: the index under SHARE, then the constraint.
    pub fn split(mut self) -> Item {
        self.step = Step::BuildIndex;
        self.mode = Mode::Shared;
        self
    }

    pub fn new(
        item: i32,
        stage: i32,
        mode: Mode,
        tables: Vec<Key>,
        known: bool,
        cost: i64,
    ) -> Item {
        Item {
            item,
            stage,
            step: Step::Whole,
            mode,
            tables,
            known,
            cost,
            priority: cost,
            retry_at: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TableState {
    /// Chunks not yet committed.
    pub chunks_left: usize,
    /// Chunks not yet handed out, and the estimated cost of one.
    pub unclaimed: usize,
    pub chunk_cost: i64,
    /// Estimated work of the items that wait for this table's data.
    pub waiting: i64,
    /// Stage-1 items not yet built.
    pub stage1_left: usize,
    pub analyze_pending: bool,
    /// Not a plain table (partitioned): its data is its partitions', so it waits for all data.
    pub needs_all_data: bool,
    /// It has an index on an expression: ANALYZE waits for its indexes.
    pub expression_index: bool,
    pub analyze_cost: i64,
    /// Its pending chunks were all held by other processes: no claim before this.
    pub retry_at: Option<Instant>,
    /// Its ANALYZE was held by another process: not before this.
    pub analyze_retry_at: Option<Instant>,
}

/// How a chunk task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEnd {
    /// It committed a chunk.
    Copied,
    /// The table has no pending chunk left: other processes copied the rest.
    NoneLeft,
    /// Its pending chunks are all being copied by other processes (`copy --join` workers,
    /// or the leader): ask again a moment later, as a process that dies loses its claims.
    Busy,
}

#[derive(Debug)]
pub enum Task {
    /// Copy a chunk of this table.
    Chunk(Key),
    Item(Item),
    Analyze(Key),
    /// All chunks are in: sequences, and the phase moves on.
    FinishData,
}

#[derive(Debug)]
pub enum Next {
    Run(Task),
    /// Nothing may start now; ask again when a task ends (or after `RETRY`).
    Wait,
    Done,
}

/// How long an item that another process holds, or that lost a deadlock, sits out.
pub const RETRY: Duration = Duration::from_millis(100);

/// Bound on one read of the run's progress.
pub const REFRESH_BOUND: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Sched {
    pub tables: HashMap<Key, TableState>,
    chunks_left: usize,
    chunks_in_flight: usize,
    data_finished: bool,
    finishing: bool,
    /// A worker found the leader still in its data phase: not asked again before this.
    finish_retry_at: Option<Instant>,
    items: Vec<Item>,
    stage_left: HashMap<i32, usize>,
    locks: HashMap<Key, (usize, bool)>,
    serial_running: bool,
    running: usize,
    failed: bool,
}

impl Sched {
    /// `chunks`: (table, estimated cost) of every chunk not yet done; `items` in item order.
    pub fn new(
        tables: HashMap<Key, TableState>,
        chunks: Vec<(Key, i64)>,
        mut items: Vec<Item>,
        data_finished: bool,
    ) -> Sched {
        let mut s = Sched {
            tables,
            data_finished,
            ..Sched::default()
        };
        for (key, cost) in chunks {
            if let Some(t) = s.tables.get_mut(&key) {
                t.chunks_left += 1;
                t.unclaimed += 1;
                t.chunk_cost = t.chunk_cost.max(cost);
            }
            s.chunks_left += 1;
        }
        // What waits for each table: its items, and the foreign keys naming it.
        let mut keys_wait: HashMap<Key, i64> = HashMap::new();
        for it in &items {
            *s.stage_left.entry(it.stage).or_default() += 1;
            for t in &it.tables {
                if let Some(ts) = s.tables.get_mut(t) {
                    ts.waiting += it.cost;
                    if it.stage == 1 && it.known {
                        ts.stage1_left += 1;
                    }
                }
                if it.stage == 2 {
                    *keys_wait.entry(t.clone()).or_default() += it.cost;
                }
            }
        }
        for it in &mut items {
            if it.stage == 1 {
                it.priority = it.cost
                    + it.tables
                        .iter()
                        .map(|t| keys_wait.get(t).copied().unwrap_or(0))
                        .sum::<i64>();
            }
        }
        s.items = items;
        s
    }

    pub fn data_finished(&self) -> bool {
        self.data_finished
    }

    /// True while chunks may still be handed out.
    pub fn chunks_remain(&self) -> bool {
        self.tables.values().any(|t| t.unclaimed > 0)
    }

    pub fn next(&mut self, now: Instant) -> Next {
        if self.failed {
            return Next::Done;
        }
        if !self.data_finished
            && !self.finishing
            && self.chunks_in_flight == 0
            && !self.chunks_remain()
            && self.finish_retry_at.is_none_or(|at| at <= now)
        {
            self.finishing = true;
            self.running += 1;
            return Next::Run(Task::FinishData);
        }
        enum Pick {
            Chunk(Key),
            Item(usize),
            Analyze(Key),
        }
        let mut best: Option<(i64, Pick)> = None;
        for (k, t) in &self.tables {
            let priority = t.chunk_cost + t.waiting;
            if t.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            if t.unclaimed > 0 && best.as_ref().is_none_or(|(c, _)| priority > *c) {
                best = Some((priority, Pick::Chunk(k.clone())));
            }
        }
        for (i, it) in self.items.iter().enumerate() {
            if best.as_ref().is_some_and(|(c, _)| *c >= it.priority) {
                continue;
            }
            if self.item_ready(it, i, now) && self.lock_ok(&it.tables, it.mode) {
                best = Some((it.priority, Pick::Item(i)));
            }
        }
        for (k, t) in &self.tables {
            if !t.analyze_pending
                || t.analyze_retry_at.is_some_and(|at| at > now)
                || best.as_ref().is_some_and(|(c, _)| *c >= t.analyze_cost)
            {
                continue;
            }
            if self.analyze_ready(t) && self.lock_ok(std::slice::from_ref(k), Mode::Exclusive) {
                best = Some((t.analyze_cost, Pick::Analyze(k.clone())));
            }
        }
        let Some((_, pick)) = best else {
            return if self.all_done() {
                Next::Done
            } else {
                Next::Wait
            };
        };
        self.running += 1;
        Next::Run(match pick {
            Pick::Chunk(k) => {
                if let Some(t) = self.tables.get_mut(&k) {
                    t.unclaimed -= 1;
                }
                self.chunks_in_flight += 1;
                Task::Chunk(k)
            }
            Pick::Item(i) => {
                let it = self.items.remove(i);
                self.lock(&it.tables, it.mode);
                if it.stage >= 3 {
                    self.serial_running = true;
                }
                Task::Item(it)
            }
            Pick::Analyze(k) => {
                if let Some(t) = self.tables.get_mut(&k) {
                    t.analyze_pending = false;
                }
                self.lock(std::slice::from_ref(&k), Mode::Exclusive);
                Task::Analyze(k)
            }
        })
    }

    /// A chunk task for `table` ended (see [`ChunkEnd`]).
    pub fn chunk_ended(&mut self, table: &Key, end: ChunkEnd, now: Instant) {
        self.running -= 1;
        self.chunks_in_flight -= 1;
        let Some(t) = self.tables.get_mut(table) else {
            if end == ChunkEnd::Copied {
                self.chunks_left = self.chunks_left.saturating_sub(1);
            }
            return;
        };
        match end {
            ChunkEnd::Copied => {
                if t.chunks_left > 0 {
                    t.chunks_left -= 1;
                    self.chunks_left = self.chunks_left.saturating_sub(1);
                }
            }
            ChunkEnd::NoneLeft => {
                self.chunks_left = self.chunks_left.saturating_sub(t.chunks_left);
                t.chunks_left = 0;
                t.unclaimed = 0;
            }
            ChunkEnd::Busy => {
                t.unclaimed += 1;
                t.retry_at = Some(now + RETRY);
            }
        }
    }

    /// Sequences are set and the phase moved on: every chunk is done.
    pub fn finish_data_ended(&mut self) {
        self.running -= 1;
        self.data_finished = true;
        self.chunks_left = 0;
        for t in self.tables.values_mut() {
            t.chunks_left = 0;
        }
    }

    /// A `--join` worker's chunks are in but its leader has not ended the data phase: the
    /// job goes on with whatever else may start and asks again after `RETRY` (it must not
    /// sit waiting while indexes of the tables already copied could be built).
    pub fn finish_data_later(&mut self, now: Instant) {
        self.running -= 1;
        self.finishing = false;
        self.finish_retry_at = Some(now + RETRY);
    }

    /// The item is built (by this process or another).
    pub fn item_ended(&mut self, it: &Item) {
        self.running -= 1;
        self.unlock(&it.tables, it.mode);
        if it.stage >= 3 {
            self.serial_running = false;
        }
        if let Some(n) = self.stage_left.get_mut(&it.stage) {
            *n = n.saturating_sub(1);
        }
        if it.stage == 1 && it.known {
            for t in &it.tables {
                if let Some(ts) = self.tables.get_mut(t) {
                    ts.stage1_left = ts.stage1_left.saturating_sub(1);
                }
            }
        }
    }

    /// A split key's index is built: attaching it needs the table alone, briefly.
    pub fn index_built(&mut self, mut it: Item) {
        self.running -= 1;
        self.unlock(&it.tables, it.mode);
        it.step = Step::Attach;
        it.mode = Mode::Exclusive;
        // Attaching is quick, and the table's foreign keys and ANALYZE wait for it.
        it.priority = i64::MAX / 2;
        self.reinsert(it);
    }

    fn reinsert(&mut self, it: Item) {
        let at = self
            .items
            .iter()
            .position(|x| x.item > it.item)
            .unwrap_or(self.items.len());
        self.items.insert(at, it);
    }

    /// The item was not built (held elsewhere, or lost a deadlock): it sits out a moment.
    pub fn item_retry(&mut self, mut it: Item, now: Instant) {
        self.running -= 1;
        self.unlock(&it.tables, it.mode);
        if it.stage >= 3 {
            self.serial_running = false;
        }
        it.retry_at = Some(now + RETRY);
        self.reinsert(it);
    }

    pub fn analyze_ended(&mut self, k: &Key) {
        self.running -= 1;
        self.unlock(std::slice::from_ref(k), Mode::Exclusive);
    }

    /// The table's ANALYZE was not run here (another process holds it): it sits out a moment.
    pub fn analyze_retry(&mut self, k: &Key, now: Instant) {
        self.analyze_ended(k);
        if let Some(t) = self.tables.get_mut(k) {
            t.analyze_pending = true;
            t.analyze_retry_at = Some(now + RETRY);
        }
    }

    pub fn fail(&mut self) {
        self.failed = true;
    }

    fn all_done(&self) -> bool {
        self.data_finished
            && self.running == 0
            && self.items.is_empty()
            && self.tables.values().all(|t| !t.analyze_pending)
    }

    fn item_ready(&self, it: &Item, index: usize, now: Instant) -> bool {
        if it.retry_at.is_some_and(|t| t > now) {
            return false;
        }
        let all_data = self.chunks_left == 0 && self.chunks_in_flight == 0;
        let stage_done = |s: i32| self.stage_left.get(&s).copied().unwrap_or(0) == 0;
        match it.stage {
            s if s <= 1 => {
                if !it.known {
                    return all_data;
                }
                it.tables.iter().all(|k| match self.tables.get(k) {
                    Some(t) if t.needs_all_data => all_data,
                    Some(t) => t.chunks_left == 0,
                    None => all_data,
                })
            }
            // A foreign key or trigger needs its tables' data and keys, not the other tables'.
            2 if it.known => it.tables.iter().all(|k| match self.tables.get(k) {
                Some(t) if t.needs_all_data => self.data_finished && stage_done(1),
                Some(t) => t.chunks_left == 0 && t.stage1_left == 0,
                None => self.data_finished && stage_done(1),
            }),
            2 => self.data_finished && stage_done(1),
            s => {
                // One at a time, in dump order, after everything of the earlier stages.
                self.data_finished
                    && !self.serial_running
                    && (1..s).all(stage_done)
                    && !self.items[..index].iter().any(|x| x.stage == s)
            }
        }
    }

    fn analyze_ready(&self, t: &TableState) -> bool {
        let all_data = self.chunks_left == 0 && self.chunks_in_flight == 0;
        let data = if t.needs_all_data {
            all_data && self.stage_left.get(&1).copied().unwrap_or(0) == 0
        } else {
            t.chunks_left == 0
        };
        data && (!t.expression_index || t.stage1_left == 0)
    }

    fn lock_ok(&self, tables: &[Key], mode: Mode) -> bool {
        tables.iter().all(|k| match self.locks.get(k) {
            None => true,
            Some(&(shared, exclusive)) => !exclusive && (mode == Mode::Shared || shared == 0),
        })
    }

    fn lock(&mut self, tables: &[Key], mode: Mode) {
        for k in tables {
            let l = self.locks.entry(k.clone()).or_default();
            match mode {
                Mode::Shared => l.0 += 1,
                Mode::Exclusive => l.1 = true,
            }
        }
    }

    fn unlock(&mut self, tables: &[Key], mode: Mode) {
        for k in tables {
            if let Some(l) = self.locks.get_mut(k) {
                match mode {
                    Mode::Shared => l.0 = l.0.saturating_sub(1),
                    Mode::Exclusive => l.1 = false,
                }
                if *l == (0, false) {
                    self.locks.remove(k);
                }
            }
        }
    }
}

/// The tables a post-data statement locks, as pg_dump writes them (always schema-qualified):
/// `ALTER TABLE [ONLY] t`, `CREATE [UNIQUE] INDEX i ON [ONLY] t`, `CREATE [CONSTRAINT]
/// TRIGGER x … ON t`, `REFERENCES t`. Empty when it names none of these.
pub fn tables_named(sql: &str) -> Vec<Key> {
    let toks = tokens(sql);
    let word =
        |i: usize, w: &str| matches!(toks.get(i), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w));
    let mut out: Vec<Key> = Vec::new();
    let push = |k: Option<Key>, out: &mut Vec<Key>| {
        if let Some(k) = k {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    let mut i = 0;
    while i < toks.len() {
        if word(i, "ALTER") && word(i + 1, "TABLE") {
            let mut j = i + 2;
            if word(j, "ONLY") {
                j += 1;
            }
            push(qualified_at(&toks, j), &mut out);
        } else if word(i, "CREATE")
            && (word(i + 1, "INDEX") || word(i + 1, "UNIQUE") && word(i + 2, "INDEX"))
        {
            // CREATE [UNIQUE] INDEX name ON [ONLY] table
            if let Some(on) = (i + 2..toks.len().min(i + 12)).find(|&j| word(j, "ON")) {
                let j = if word(on + 1, "ONLY") { on + 2 } else { on + 1 };
                push(qualified_at(&toks, j), &mut out);
            }
        } else if word(i, "CREATE")
            && (word(i + 1, "TRIGGER") || word(i + 1, "CONSTRAINT") && word(i + 2, "TRIGGER"))
        {
            if let Some(on) = (i + 2..toks.len()).find(|&j| word(j, "ON")) {
                push(qualified_at(&toks, on + 1), &mut out);
            }
        } else if word(i, "REFERENCES") {
            push(qualified_at(&toks, i + 1), &mut out);
        }
        i += 1;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Tok {
    /// A bare word (keyword or unquoted identifier, as written).
    Word(String),
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    Other(char),
}

fn tokens(sql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = sql.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {}
            '-' if it.peek() == Some(&'-') => {
                for c in it.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                // A string literal: skipped ('' inside is an escaped quote).
                while let Some(c) = it.next() {
                    if c == '\'' {
                        if it.peek() == Some(&'\'') {
                            it.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push(Tok::Other('\''));
            }
            '"' => {
                let mut s = String::new();
                while let Some(c) = it.next() {
                    if c == '"' {
                        if it.peek() == Some(&'"') {
                            it.next();
                            s.push('"');
                        } else {
                            break;
                        }
                    } else {
                        s.push(c);
                    }
                }
                out.push(Tok::Quoted(s));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut s = String::from(c);
                while let Some(&c) = it.peek() {
                    if c.is_alphanumeric() || c == '_' || c == '$' {
                        s.push(c);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(s));
            }
            c => out.push(Tok::Other(c)),
        }
    }
    out
}

/// `schema.name` starting at token `i` (bare words fold to lower case, as the server does).
fn qualified_at(toks: &[Tok], i: usize) -> Option<Key> {
    let ident = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) => Some(w.to_lowercase()),
        Some(Tok::Quoted(q)) => Some(q.clone()),
        _ => None,
    };
    let schema = ident(toks.get(i))?;
    if toks.get(i + 1) != Some(&Tok::Other('.')) {
        return None;
    }
    let name = ident(toks.get(i + 2))?;
    Some((schema, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str, n: &str) -> Key {
        (s.to_string(), n.to_string())
    }

    #[test]
    fn finds_the_tables_pg_dump_names() {
        assert_eq!(
            tables_named("--\n\nALTER TABLE ONLY factory_telemetry.metric_hist\n    ADD CONSTRAINT metric_hist_pkey PRIMARY KEY (id);\n"),
            [k("factory_telemetry", "metric_hist")]
        );
        assert_eq!(
            tables_named("CREATE UNIQUE INDEX users_email_lower_key ON factory_telemetry.users USING btree (lower(email));"),
            [k("factory_telemetry", "users")]
        );
        assert_eq!(
            tables_named("CREATE INDEX \"Shift Notes_line_date_idx\" ON ONLY s.\"Shift Notes\" USING btree (\"LineId\");"),
            [k("s", "Shift Notes")]
        );
        assert_eq!(
            tables_named("ALTER TABLE ONLY factory_telemetry.\"Shift Notes\"\n    ADD CONSTRAINT \"Shift Notes_LineId_fkey\" FOREIGN KEY (\"LineId\") REFERENCES factory_telemetry.production_lines(id);"),
            [k("factory_telemetry", "Shift Notes"), k("factory_telemetry", "production_lines")]
        );
        assert_eq!(
            tables_named("CREATE TRIGGER document_downloads_count AFTER INSERT OR UPDATE OF \"on\" ON factory_telemetry.document_downloads FOR EACH ROW EXECUTE FUNCTION factory_telemetry.bump();"),
            [k("factory_telemetry", "document_downloads")]
        );
        assert_eq!(
            tables_named(
                "ALTER TABLE ONLY a.\"we\"\"ird\" ADD CONSTRAINT c CHECK (x <> 'ALTER TABLE b.c');"
            ),
            [k("a", "we\"ird")]
        );
        assert!(tables_named("REFRESH MATERIALIZED VIEW s.mv;").is_empty());
        assert!(tables_named("ALTER INDEX s.p_pkey ATTACH PARTITION s.c_pkey;").is_empty());
        assert!(tables_named("COMMENT ON INDEX s.i IS 'x';").is_empty());
    }

    fn table(chunks_left: usize) -> TableState {
        TableState {
            chunks_left,
            analyze_pending: true,
            analyze_cost: 1,
            ..TableState::default()
        }
    }

    fn run(s: &mut Sched) -> Task {
        match s.next(Instant::now()) {
            Next::Run(t) => t,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    #[test]
    fn an_analyze_another_process_holds_is_asked_again_and_the_run_waits_for_it() {
        let t = k("s", "t");
        let mut s = Sched::new(HashMap::from([(t.clone(), table(0))]), vec![], vec![], true);
        let Task::Analyze(an) = run(&mut s) else {
            panic!()
        };
        let held_at = Instant::now();
        s.analyze_retry(&an, held_at);
        // Not done while the other process may still fail it, and not asked again at once.
        assert!(matches!(s.next(held_at), Next::Wait));
        let Next::Run(Task::Analyze(again)) = s.next(held_at + RETRY) else {
            panic!("asked again after RETRY")
        };
        s.analyze_ended(&again);
        assert!(matches!(s.next(held_at + RETRY), Next::Done));
    }

    #[test]
    fn indexes_of_a_copied_table_start_while_others_copy() {
        let (big, small) = (k("s", "big"), k("s", "small"));
        let tables = HashMap::from([(big.clone(), table(0)), (small.clone(), table(0))]);
        let chunks = vec![(big.clone(), 100), (small.clone(), 10), (small.clone(), 10)];
        let items = vec![
            Item::new(0, 1, Mode::Exclusive, vec![big.clone()], true, 300),
            Item::new(1, 1, Mode::Shared, vec![big.clone()], true, 500),
            Item::new(2, 1, Mode::Shared, vec![big.clone()], true, 200),
            Item::new(
                3,
                2,
                Mode::Exclusive,
                vec![big.clone(), small.clone()],
                true,
                50,
            ),
        ];
        let mut s = Sched::new(tables, chunks, items, false);
        assert!(matches!(run(&mut s), Task::Chunk(_))); // the big chunk first
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        s.chunk_ended(&big, ChunkEnd::Copied, Instant::now());
        // Big table copied: its largest index, ahead of the small table's last chunk.
        let Task::Item(a) = run(&mut s) else { panic!() };
        assert_eq!(a.item, 1);
        // The key needs the table alone; the other shared index may run beside the first.
        let Task::Item(b) = run(&mut s) else { panic!() };
        assert_eq!(b.item, 2);
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.item_ended(&a);
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // b still holds SHARE
        s.item_ended(&b);
        let Task::Item(c) = run(&mut s) else { panic!() };
        assert_eq!(c.item, 0);
        s.chunk_ended(&small, ChunkEnd::Copied, Instant::now());
        s.chunk_ended(&small, ChunkEnd::Copied, Instant::now());
        // The foreign key waits for the end of the data phase.
        assert!(matches!(run(&mut s), Task::FinishData));
        let Task::Analyze(an) = run(&mut s) else {
            panic!()
        };
        assert_eq!(an, small); // big is locked by its key
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.finish_data_ended();
        s.analyze_ended(&an);
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // FK: big's key still building
        s.item_ended(&c);
        let Task::Item(fk) = run(&mut s) else {
            panic!()
        };
        assert_eq!(fk.item, 3);
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.item_ended(&fk);
        let Task::Analyze(an) = run(&mut s) else {
            panic!()
        };
        assert_eq!(an, big);
        s.analyze_ended(&an);
        assert!(matches!(s.next(Instant::now()), Next::Done));
    }

    #[test]
    fn a_small_table_that_a_big_foreign_key_needs_is_copied_early() {
        let (big, referenced, other) = (k("s", "big"), k("s", "ref"), k("s", "other"));
        let tables = HashMap::from([
            (big.clone(), table(0)),
            (referenced.clone(), table(0)),
            (other.clone(), table(0)),
        ]);
        let chunks = vec![
            (big.clone(), 100),
            (big.clone(), 100),
            (referenced.clone(), 1),
            (other.clone(), 20),
        ];
        let items = vec![
            Item::new(0, 1, Mode::Exclusive, vec![referenced.clone()], true, 1),
            Item::new(
                1,
                2,
                Mode::Exclusive,
                vec![big.clone(), referenced.clone()],
                true,
                500,
            ),
        ];
        let mut s = Sched::new(tables, chunks, items, false);
        let order: Vec<Key> = (0..4)
            .map(|_| match run(&mut s) {
                Task::Chunk(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [big.clone(), big.clone(), referenced.clone(), other.clone()]
        );
        s.chunk_ended(&referenced, ChunkEnd::Copied, Instant::now());
        // Its key carries the foreign key: ahead of everything but that key's own data.
        let Task::Item(key) = run(&mut s) else {
            panic!()
        };
        assert_eq!(key.item, 0);
    }

    #[test]
    fn a_split_key_builds_beside_the_other_indexes_then_attaches_alone() {
        let t = k("s", "t");
        let tables = HashMap::from([(t.clone(), table(0))]);
        let items = vec![
            Item::new(0, 1, Mode::Exclusive, vec![t.clone()], true, 300).split(),
            Item::new(1, 1, Mode::Shared, vec![t.clone()], true, 500),
        ];
        let mut s = Sched::new(tables, vec![], items, true);
        let Task::Item(a) = run(&mut s) else { panic!() };
        let Task::Item(key) = run(&mut s) else {
            panic!()
        };
        assert_eq!((a.item, key.item, key.step), (1, 0, Step::BuildIndex));
        s.index_built(key);
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // attach waits for the other build
        s.item_ended(&a);
        let Task::Item(attach) = run(&mut s) else {
            panic!()
        };
        assert_eq!((attach.item, attach.step), (0, Step::Attach));
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // ANALYZE waits for the attach
        s.item_ended(&attach);
        assert!(matches!(run(&mut s), Task::Analyze(_)));
    }

    #[test]
    fn a_foreign_key_between_copied_tables_starts_while_others_copy() {
        let (a, b, c) = (k("s", "a"), k("s", "b"), k("s", "c"));
        let quiet = |n| TableState {
            analyze_pending: false,
            ..table(n)
        };
        let tables = HashMap::from([
            (a.clone(), quiet(0)),
            (b.clone(), quiet(0)),
            (c.clone(), quiet(0)),
        ]);
        let chunks = vec![(c.clone(), 100), (a.clone(), 10), (b.clone(), 10)];
        let items = vec![
            Item::new(0, 2, Mode::Exclusive, vec![a.clone(), b.clone()], true, 5),
            Item::new(1, 2, Mode::Exclusive, vec![], false, 50),
        ];
        let mut s = Sched::new(tables, chunks, items, false);
        for _ in 0..3 {
            assert!(matches!(run(&mut s), Task::Chunk(_)));
        }
        s.chunk_ended(&a, ChunkEnd::Copied, Instant::now());
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.chunk_ended(&b, ChunkEnd::Copied, Instant::now());
        let Task::Item(fk) = run(&mut s) else {
            panic!()
        };
        assert_eq!(fk.item, 0); // c still copies; the unknown item waits for it
        s.item_ended(&fk);
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.chunk_ended(&c, ChunkEnd::Copied, Instant::now());
        assert!(matches!(run(&mut s), Task::FinishData));
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.finish_data_ended();
        let Task::Item(x) = run(&mut s) else { panic!() };
        assert_eq!(x.item, 1);
        s.item_ended(&x);
        assert!(matches!(s.next(Instant::now()), Next::Done));
    }

    #[test]
    fn unknown_items_wait_and_stage_three_runs_alone_in_order() {
        let t = k("s", "t");
        let tables = HashMap::from([(
            t.clone(),
            TableState {
                analyze_pending: false,
                ..table(0)
            },
        )]);
        let items = vec![
            Item::new(0, 1, Mode::Shared, vec![], false, 5),
            Item::new(1, 2, Mode::Exclusive, vec![], false, 5),
            Item::new(2, 3, Mode::Exclusive, vec![], false, 1),
            Item::new(3, 3, Mode::Exclusive, vec![], false, 9),
        ];
        let mut s = Sched::new(tables, vec![(t.clone(), 1)], items, false);
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // unknown table: all data first
        s.chunk_ended(&t, ChunkEnd::Copied, Instant::now());
        assert!(matches!(run(&mut s), Task::FinishData));
        let Task::Item(a) = run(&mut s) else { panic!() };
        assert_eq!(a.item, 0);
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.finish_data_ended();
        assert!(matches!(s.next(Instant::now()), Next::Wait)); // stage 2 after stage 1
        s.item_ended(&a);
        let Task::Item(b) = run(&mut s) else { panic!() };
        assert_eq!(b.item, 1);
        s.item_retry(b, Instant::now()); // lost a deadlock
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        let Next::Run(Task::Item(b)) = s.next(Instant::now() + RETRY * 2) else {
            panic!()
        };
        s.item_ended(&b);
        let Task::Item(c) = run(&mut s) else { panic!() };
        assert_eq!(c.item, 2); // dump order, not cost
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.item_ended(&c);
        let Task::Item(d) = run(&mut s) else { panic!() };
        s.item_ended(&d);
        assert!(matches!(s.next(Instant::now()), Next::Done));
    }

    #[test]
    fn a_worker_builds_ready_indexes_while_its_leader_ends_the_data_phase() {
        let (a, b) = (k("s", "a"), k("s", "b"));
        let tables = HashMap::from([(a.clone(), table(0)), (b.clone(), table(0))]);
        let items = vec![
            Item::new(0, 1, Mode::Shared, vec![a.clone()], true, 5),
            Item::new(1, 2, Mode::Exclusive, vec![], false, 5),
        ];
        let mut s = Sched::new(tables, vec![(a.clone(), 1)], items, false);
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        s.chunk_ended(&a, ChunkEnd::Copied, Instant::now());
        let at = Instant::now();
        assert!(matches!(s.next(at), Next::Run(Task::FinishData)));
        s.finish_data_later(at); // the leader still copies
        let Next::Run(Task::Item(index)) = s.next(at) else {
            panic!("the ready index, not another look at the leader")
        };
        assert_eq!(index.item, 0);
        s.item_ended(&index);
        // The analyzes may run too; then only the leader's end is left, asked after RETRY.
        while let Next::Run(Task::Analyze(t)) = s.next(at) {
            s.analyze_ended(&t);
        }
        assert!(matches!(s.next(at), Next::Wait));
        assert!(matches!(s.next(at + RETRY), Next::Run(Task::FinishData)));
        s.finish_data_ended();
        let Task::Item(rest) = run(&mut s) else {
            panic!()
        };
        s.item_ended(&rest);
        assert!(matches!(s.next(Instant::now()), Next::Done));
    }

    #[test]
    fn a_chunk_held_elsewhere_is_asked_for_again_until_none_is_left() {
        let t = k("s", "t");
        let tables = HashMap::from([(
            t.clone(),
            TableState {
                analyze_pending: false,
                ..table(0)
            },
        )]);
        let mut s = Sched::new(tables, vec![(t.clone(), 1), (t.clone(), 1)], vec![], false);
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        assert!(matches!(run(&mut s), Task::Chunk(_)));
        s.chunk_ended(&t, ChunkEnd::Busy, Instant::now()); // another process holds the second
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        let Next::Run(Task::Chunk(_)) = s.next(Instant::now() + RETRY * 2) else {
            panic!()
        };
        s.chunk_ended(&t, ChunkEnd::NoneLeft, Instant::now()); // and committed it
        assert!(matches!(s.next(Instant::now()), Next::Wait));
        s.chunk_ended(&t, ChunkEnd::Copied, Instant::now());
        assert!(matches!(run(&mut s), Task::FinishData));
        s.finish_data_ended();
        assert!(matches!(s.next(Instant::now()), Next::Done));
    }
}
