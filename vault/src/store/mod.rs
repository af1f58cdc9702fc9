//! The store: source records as departments sent them (sealed), the links that join them into
//! unified entities, a change sequence, batch receipts, quarantined records and wrapped keys —
//! in one embedded redb file (the default, [`Store::open`]) or in a PostgreSQL database shared
//! by several brokers ([`Store::connect`]).
//!
//! Guarantees, the same on both engines:
//! - A write batch is one transaction: when [`Store::write`] returns `Ok`, the batch is
//!   durable (redb: fsync; PostgreSQL: its commit, with the synchronous replication the
//!   server is configured for); when it returns `Err` (or the process dies first), none of it
//!   is visible. Write transactions take turns, on PostgreSQL across brokers too.
//! - The change sequence is gap-free and in commit order: a follower that read up to `n` never
//!   later finds a change numbered `n` or below that it did not see.
//! - Link entries are always exactly those of the current version of each source record:
//!   [`StoreWriter::put_source`] swaps the old record's links in the same transaction. Links
//!   of [`ROW_ONLY_LINK_PREFIXES`] stay in the row and get no entry.
//! - The store carries a format version and refuses to open a newer one.
//! - Personal fields reach this module only sealed; nothing here sees plaintext, and nothing
//!   else reaches PostgreSQL: keys (the master key) stay with the brokers.

mod backend;
mod compact;
mod embedded;
mod postgres;
mod primary;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::record::Version;
use model::{Department, RecordKind};

pub use backend::Table;
use backend::{Engine, Members, Snapshot, Transaction};
pub use compact::{compact, compact_with_progress, Compaction};
use embedded::Embedded;
use postgres::Postgres;
pub use postgres::PostgresOptions;

/// Bumped when the on-disk layout changes so that an older broker could not read it: 2 writes
/// source rows in the binary encoding of [`crate::row`], 3 in its second, shorter layout (a
/// store of an older format is upgraded on open; its rows stay readable and are rewritten as
/// they change, or all at once by [`compact`]).
pub const STORE_FORMAT_VERSION: u32 = 3;
/// Page cache of the store unless configured (`store.cache_mb`). redb's own default, 1 GiB,
/// was most of the broker's resident memory at 200,000 residents (peak 2.0 GB against 0.9 GB
/// with 256 MiB, BENCHMARKS.md); leaf pages not cached here stay in the OS page cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

const META_FORMAT: &str = "format_version";
const META_CHANGE_SEQ: &str = "change_seq";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database: {0}")]
    Database(#[from] redb::Error),
    /// The PostgreSQL server refused or failed a statement, or could not be reached.
    #[error("store database (PostgreSQL): {0}")]
    Postgres(#[from] sqlx::Error),
    /// No connection to the PostgreSQL store became free in time, or the server is down.
    #[error("the store's database is unavailable: {0}")]
    Unavailable(String),
    #[error("store format version {found} is newer than this broker supports ({supported}); upgrade SafeGrid")]
    NewerFormat { found: u32, supported: u32 },
    #[error("store record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// One department's record, as stored: identity and non-personal fields in clear, personal
/// fields sealed one by one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSource {
    pub kind: RecordKind,
    pub department: Department,
    pub source_id: String,
    pub version: Version,
    pub deleted: bool,
    /// A resident record that carries an ID number (its entity is the ID's). Rows stored
    /// before this flag existed say so by a `blind:id_number:` link instead (see
    /// [`crate::row::decode`]).
    #[serde(default)]
    pub identified: bool,
    /// The unified entity this record is part of.
    pub entity: String,
    /// Grid code of the record (a division code, not personal).
    pub grid: Option<String>,
    pub received_at: DateTime<Utc>,
    pub batch_id: String,
    /// Keyed digest of the record's content, to tell a true re-delivery from a conflicting one.
    #[serde(with = "b64")]
    pub digest: Vec<u8>,
    /// Non-personal fields (event type and status, house usage, references).
    #[serde(default)]
    pub clear: BTreeMap<String, Value>,
    /// Personal fields, each sealed under the department's data key.
    #[serde(default, with = "b64_map")]
    pub sealed: BTreeMap<String, Vec<u8>>,
    /// Index keys this record is reachable by (see [`LINKS`]).
    #[serde(default)]
    pub links: Vec<String>,
}

impl StoredSource {
    pub fn row_key(department: Department, kind: RecordKind, source_id: &str) -> String {
        format!("{}/{}/{}", department.code(), kind.as_str(), source_id)
    }

    pub fn key(&self) -> String {
        StoredSource::row_key(self.department, self.kind, &self.source_id)
    }

    /// Points the record at another entity; its `entity:` link follows.
    pub fn move_to(&mut self, entity: &str) {
        let old = format!("entity:{}", self.entity);
        self.links.retain(|l| *l != old);
        self.links.push(format!("entity:{entity}"));
        self.entity = entity.to_owned();
    }
}

/// Prefixes of links a row carries for its own reading that are never looked up in the link
/// table, so they get no entry there (each entry costs an insert per record and space):
/// `addrc:`, the compound of a standard address, which only an officer's whole-compound
/// grid assignment uses, found from the row's own copy of the link.
pub const ROW_ONLY_LINK_PREFIXES: &[&str] = &["addrc:"];

/// Whether `link` gets an entry in the link table (see [`ROW_ONLY_LINK_PREFIXES`]).
pub fn is_indexed_link(link: &str) -> bool {
    !ROW_ONLY_LINK_PREFIXES.iter().any(|p| link.starts_with(p))
}

/// A record a department sent that was not stored, kept with its reason so the department
/// can see it, fix it and send it again. The record itself is sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: String,
    pub department: Department,
    pub batch_id: String,
    /// File, table or page the record came from (connectors), if not a pushed batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    pub line: usize,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The record or source row as received, sealed under the department's data key.
    #[serde(with = "b64")]
    pub sealed_raw: Vec<u8>,
    /// Why the entry is closed: `reingested` (a good version arrived) or `dismissed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// The division codes the publishing token was bounded to (empty: unbounded), so a
    /// record released later stays inside them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

impl QuarantineEntry {
    /// The row identity its sealed content is bound to.
    pub fn seal_row(department: Department, id: &str) -> String {
        format!("quarantine/{}/{id}", department.code())
    }
}

/// The store: the embedded file or a PostgreSQL database, the same guarantees on both.
pub struct Store {
    engine: Box<dyn Engine>,
    /// Called after every committed transaction that appended to the change sequence.
    observer: OnceLock<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("observed", &self.observer.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates the embedded store file, checking the format version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of at most `cache_bytes` (redb's own default is 1 GiB).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        Store::with_engine(Box::new(Embedded::open(path, cache_bytes)?))
    }

    /// Connects to the PostgreSQL store described by `options`, creating its schema and
    /// tables if they do not exist and checking the format version.
    pub fn connect(options: &PostgresOptions) -> Result<Store, StoreError> {
        Store::with_engine(Box::new(Postgres::connect(options)?))
    }

    fn with_engine(engine: Box<dyn Engine>) -> Result<Store, StoreError> {
        let store = Store {
            engine,
            observer: OnceLock::new(),
        };
        store.write(|w| {
            let found = w.meta(META_FORMAT)?.map(|v| decode_u32(&v)).transpose()?;
            match found {
                Some(found) if found > STORE_FORMAT_VERSION => Err(StoreError::NewerFormat {
                    found,
                    supported: STORE_FORMAT_VERSION,
                }),
                Some(found) if found == STORE_FORMAT_VERSION => Ok(()),
                // Older formats upgrade in place: every difference is read as it is.
                Some(_) | None => w.put_meta(META_FORMAT, &STORE_FORMAT_VERSION.to_be_bytes()),
            }
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction and commits it durably if `f` returns `Ok`.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut StoreWriter) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = self.engine.begin_write()?;
        let mut writer = StoreWriter {
            tx,
            changed: false,
            change_seq: None,
            change_seq_unsaved: false,
        };
        let result = f(&mut writer)?;
        let changed = writer.changed;
        if let (true, Some(seq)) = (writer.change_seq_unsaved, writer.change_seq) {
            writer
                .tx
                .put(Table::Meta, META_CHANGE_SEQ, &seq.to_be_bytes())?;
        }
        writer.tx.commit()?;
        if changed {
            if let Some(observer) = self.observer.get() {
                observer();
            }
        }
        Ok(result)
    }

    /// Sets the one observer told of every transaction that appended to the change sequence:
    /// this process's (after the commit, on the writing thread) and, on PostgreSQL, other
    /// brokers' (on a notification, from the engine's runtime) — to wake followers instead of
    /// polling. Returns false if one was set already. It must be quick and must not write.
    pub fn observe_commits(&self, observer: impl Fn() + Send + Sync + 'static) -> bool {
        let observer: std::sync::Arc<dyn Fn() + Send + Sync> = std::sync::Arc::new(observer);
        if self.observer.set(observer.clone()).is_err() {
            return false;
        }
        self.engine.watch_remote_commits(observer);
        true
    }

    pub fn read(&self) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            snapshot: self.engine.begin_read()?,
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read()?.snapshot.get(Table::Meta, key)
    }

    /// The store is the embedded file (not a shared database): file backups and compaction
    /// apply to it.
    pub fn is_embedded(&self) -> bool {
        self.engine.name() == "embedded"
    }

    /// Whether this store keeps an access log that several brokers share (PostgreSQL).
    pub fn has_shared_log(&self) -> bool {
        self.engine.shared_log().is_some()
    }

    fn log(&self) -> Result<&dyn backend::SharedLogEngine, StoreError> {
        self.engine.shared_log().ok_or_else(|| {
            StoreError::Unavailable("the embedded store keeps no shared access log".to_owned())
        })
    }

    /// Shared access log: under the log head's lock, asks `encode` for the entries given the
    /// first free position, stores them from there and commits. Returns that position.
    pub fn log_append(
        &self,
        encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        self.log()?.append(encode)
    }

    /// Shared access log: entries from position `from`, at most `limit`, in order.
    pub fn log_read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.log()?.read(from, limit)
    }

    /// Shared access log: its number of entries.
    pub fn log_len(&self) -> Result<u64, StoreError> {
        self.log()?.len()
    }

    /// Shared access log: keeps a signed checkpoint note (the first for a size stays).
    pub fn log_put_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        self.log()?.put_checkpoint(size, note)
    }

    /// Shared access log: checkpoints over more than `size` entries, smallest first.
    pub fn log_checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, StoreError> {
        self.log()?.checkpoints_after(size)
    }

    /// Shared access log: takes or renews the checkpoint-signing lease for `holder`.
    pub fn log_lead(&self, holder: &str, seconds: u32) -> Result<bool, StoreError> {
        self.log()?.lead(holder, seconds)
    }

    /// Shared access log: gives the signing lease up, if `holder` has it.
    pub fn log_release(&self, holder: &str) -> Result<(), StoreError> {
        self.log()?.release(holder)
    }
}

/// For the tests of the crates above the vault (feature `testing`): the embedded store at
/// `path`, or — with `SAFEGRID_TEST_STORE=postgres` — a schema of the PostgreSQL server of
/// `SAFEGRID_TEST_PG_URL` named after `path`, so that a test reopening the same path reopens
/// the same store. `bash scripts/test.sh` runs the storage-facing tests both ways.
#[cfg(any(test, feature = "testing"))]
pub fn open_for_tests(path: &Path) -> Result<Store, StoreError> {
    if std::env::var("SAFEGRID_TEST_STORE").is_ok_and(|v| v == "postgres") {
        let url = std::env::var("SAFEGRID_TEST_PG_URL").map_err(|_| {
            StoreError::Unavailable(
                "SAFEGRID_TEST_STORE=postgres needs SAFEGRID_TEST_PG_URL (bash scripts/test.sh)"
                    .to_owned(),
            )
        })?;
        let digest =
            ring::digest::digest(&ring::digest::SHA256, path.as_os_str().as_encoded_bytes());
        let schema = format!("t_path_{}", hex::encode(&digest.as_ref()[..12]));
        return Store::connect(&PostgresOptions::new(url).schema(schema));
    }
    Store::open(path)
}

/// Entries read per round trip by the walks over a whole table.
const SCAN_PAGE: usize = 1024;

/// A write transaction.
pub struct StoreWriter {
    tx: Box<dyn Transaction>,
    /// The transaction appended to the change sequence.
    changed: bool,
    /// The change counter as this transaction left it, once read (a read per change would
    /// cost a round trip each on PostgreSQL).
    change_seq: Option<u64>,
    /// Changes were appended since the counter was last stored: it is stored once, before
    /// the commit, not once per change.
    change_seq_unsaved: bool,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreWriter")
    }
}

impl StoreWriter {
    pub fn source(&self, row: &str) -> Result<Option<StoredSource>, StoreError> {
        self.tx
            .get(Table::Sources, row)?
            .map(|bytes| decode_source(row, &bytes))
            .transpose()
    }

    /// Whether the row `row` is deleted, and its grid, without decoding the rest of it;
    /// `None` if there is no such row.
    pub fn source_grid(&self, row: &str) -> Result<Option<(bool, Option<String>)>, StoreError> {
        self.tx
            .get(Table::Sources, row)?
            .map(|bytes| crate::row::decode_head(row, &bytes))
            .transpose()
    }

    /// Stores `source` (replacing `previous`, which the caller read in this transaction),
    /// replaces its links and appends the affected entities to the change sequence.
    pub fn put_source(
        &mut self,
        source: &StoredSource,
        previous: Option<&StoredSource>,
    ) -> Result<(), StoreError> {
        self.write_row(source, previous.map_or(&[], |p| p.links.as_slice()))?;
        let mut changed = vec![source.entity.as_str()];
        if let Some(previous) = previous {
            if previous.entity != source.entity {
                changed.push(previous.entity.as_str());
            }
        }
        for entity in changed {
            self.append_change(entity)?;
        }
        Ok(())
    }

    /// Replaces the links of a stored row (read in this transaction) without touching its
    /// fields or the change sequence: only lookup keys change (blind-index re-computation),
    /// so nothing derived from the row's content needs to be rebuilt.
    pub fn replace_links(
        &mut self,
        previous: &StoredSource,
        links: Vec<String>,
    ) -> Result<(), StoreError> {
        let updated = StoredSource {
            links,
            ..previous.clone()
        };
        self.write_row(&updated, &previous.links)
    }

    /// Writes `source`'s row and swaps `previous_links` for its links in the link table.
    fn write_row(
        &mut self,
        source: &StoredSource,
        previous_links: &[String],
    ) -> Result<(), StoreError> {
        let row = source.key();
        // A row-only link of the previous version is removed too: a store written before
        // such links stayed out of the table may still hold its entry.
        let removed: Vec<&str> = previous_links
            .iter()
            .filter(|link| !is_indexed_link(link) || !source.links.contains(link))
            .map(String::as_str)
            .collect();
        let added: Vec<&str> = source
            .links
            .iter()
            .filter(|link| is_indexed_link(link) && !previous_links.contains(link))
            .map(String::as_str)
            .collect();
        self.tx
            .swap_member(Members::Links, &row, &removed, &added)?;
        self.tx
            .put(Table::Sources, &row, &crate::row::encode(source))
    }

    /// The highest change sequence number written so far (this transaction's included).
    pub fn change_seq(&self) -> Result<u64, StoreError> {
        match self.change_seq {
            Some(seq) => Ok(seq),
            None => change_seq(self.tx.as_ref()),
        }
    }

    fn append_change(&mut self, entity: &str) -> Result<(), StoreError> {
        let next = self.change_seq()? + 1;
        self.tx.put_change(next, entity)?;
        self.change_seq = Some(next);
        self.change_seq_unsaved = true;
        self.changed = true;
        Ok(())
    }

    pub fn put_receipt(&mut self, batch_id: &str, receipt: &[u8]) -> Result<(), StoreError> {
        self.tx.put(Table::Receipts, batch_id, receipt)
    }

    /// Row keys reachable by one link key, as of this transaction.
    pub fn linked_rows(&self, link: &str) -> Result<Vec<String>, StoreError> {
        self.tx.members(Members::Links, link)
    }

    /// Keeps a rejected record (replacing an entry with the same id).
    pub fn put_quarantine(&mut self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let key = format!("{}/{}", entry.department.code(), entry.id);
        let bytes = serde_json::to_vec(entry).map_err(|err| StoreError::Corrupt {
            key: key.clone(),
            reason: err.to_string(),
        })?;
        self.tx.put(Table::Quarantine, &key, &bytes)?;
        if let Some(source_id) = &entry.source_id {
            let by_source = format!("{}/{source_id}", entry.department.code());
            self.tx
                .add_member(Members::QuarantineBySource, &by_source, &entry.id)?;
        }
        Ok(())
    }

    /// Marks every open entry of (`department`, `source_id`) resolved with `reason`.
    pub fn resolve_quarantine(
        &mut self,
        department: Department,
        source_id: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let by_source = format!("{}/{source_id}", department.code());
        let ids = self.tx.members(Members::QuarantineBySource, &by_source)?;
        let mut resolved = 0;
        for id in ids {
            if self.close_quarantine(department, &id, reason)? {
                resolved += 1;
            }
        }
        Ok(resolved)
    }

    /// Closes one entry; false if it does not exist or is already closed.
    pub fn close_quarantine(
        &mut self,
        department: Department,
        id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let key = format!("{}/{id}", department.code());
        let Some(bytes) = self.tx.get(Table::Quarantine, &key)? else {
            return Ok(false);
        };
        let mut entry: QuarantineEntry =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                key: key.clone(),
                reason: err.to_string(),
            })?;
        if entry.resolved.is_some() {
            return Ok(false);
        }
        entry.resolved = Some(reason.to_owned());
        let bytes = serde_json::to_vec(&entry).map_err(|err| StoreError::Corrupt {
            key: key.clone(),
            reason: err.to_string(),
        })?;
        self.tx.put(Table::Quarantine, &key, &bytes)?;
        Ok(true)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let (true, Some(seq), META_CHANGE_SEQ) = (self.change_seq_unsaved, self.change_seq, key)
        {
            return Ok(Some(seq.to_be_bytes().to_vec()));
        }
        self.tx.get(Table::Meta, key)
    }

    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if key == META_CHANGE_SEQ {
            self.change_seq = None;
            self.change_seq_unsaved = false;
        }
        self.tx.put(Table::Meta, key, value)
    }

    /// Removes a meta entry (a retired key); true if it existed.
    pub fn delete_meta(&mut self, key: &str) -> Result<bool, StoreError> {
        if key == META_CHANGE_SEQ {
            self.change_seq = None;
            self.change_seq_unsaved = false;
        }
        self.tx.remove(Table::Meta, key)
    }

    /// Meta keys starting with `prefix`, in key order (key rotation walks `keys/`).
    pub fn meta_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        walk(self.tx.as_ref(), Table::Meta, prefix, false, |key, _| {
            keys.push(key);
            Ok(true)
        })?;
        Ok(keys)
    }
}

/// A consistent read snapshot.
pub struct StoreReader {
    snapshot: Box<dyn Snapshot + Sync>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreReader")
    }
}

impl StoreReader {
    pub fn source(&self, row: &str) -> Result<Option<StoredSource>, StoreError> {
        self.snapshot
            .get(Table::Sources, row)?
            .map(|bytes| decode_source(row, &bytes))
            .transpose()
    }

    /// Row keys reachable by one link key, in key order.
    pub fn linked_rows(&self, link: &str) -> Result<Vec<String>, StoreError> {
        self.snapshot.members(Members::Links, link)
    }

    /// Live (not deleted) source records reachable by one link key, in row-key order.
    pub fn linked_sources(&self, link: &str) -> Result<Vec<StoredSource>, StoreError> {
        let mut sources = Vec::new();
        for (row, bytes) in
            self.snapshot
                .members_with_values(Members::Links, link, Table::Sources)?
        {
            if let Some(bytes) = bytes {
                let source = decode_source(&row, &bytes)?;
                if !source.deleted {
                    sources.push(source);
                }
            }
        }
        Ok(sources)
    }

    pub fn receipt(&self, batch_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.snapshot.get(Table::Receipts, batch_id)
    }

    /// The highest change sequence number written so far.
    pub fn change_seq(&self) -> Result<u64, StoreError> {
        change_seq(self.snapshot.as_ref())
    }

    /// Changes after `after`, at most `limit`, as (sequence, entity id).
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.snapshot.changes_after(after, limit)
    }

    /// Meta entries whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        walk(
            self.snapshot.as_ref(),
            Table::Meta,
            prefix,
            true,
            |key, value| {
                out.push((key, value));
                Ok(true)
            },
        )?;
        Ok(out)
    }

    /// Quarantine entries of `department` after `after_id` (exclusive), at most `limit`.
    pub fn quarantine(
        &self,
        department: Department,
        after_id: Option<&str>,
        include_resolved: bool,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        let prefix = format!("{}/", department.code());
        let mut after = after_id.map(|id| format!("{prefix}{id}"));
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self.snapshot.scan(
                Table::Quarantine,
                &prefix,
                after.as_deref(),
                SCAN_PAGE,
                true,
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, value) in page {
                let entry: QuarantineEntry =
                    serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt {
                        key,
                        reason: err.to_string(),
                    })?;
                if include_resolved || entry.resolved.is_none() {
                    out.push(entry);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` with every live source record of `kind`, in row-key order.
    pub fn for_each_source(
        &self,
        kind: RecordKind,
        mut f: impl FnMut(StoredSource),
    ) -> Result<(), StoreError> {
        let marker = format!("/{}/", kind.as_str());
        walk(
            self.snapshot.as_ref(),
            Table::Sources,
            "",
            true,
            |key, value| {
                if key.contains(&marker) {
                    let source = decode_source(&key, &value)?;
                    if source.kind == kind && !source.deleted {
                        f(source);
                    }
                }
                Ok(true)
            },
        )
    }

    /// Source rows per department code (tombstones included: what each department has
    /// sent), counted from the row keys alone.
    pub fn rows_per_department(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        walk(
            self.snapshot.as_ref(),
            Table::Sources,
            "",
            false,
            |key, _| {
                if let Some((department, _)) = key.split_once('/') {
                    *counts.entry(department.to_owned()).or_insert(0) += 1;
                }
                Ok(true)
            },
        )?;
        Ok(counts)
    }

    /// Number of source records stored (live and tombstones).
    pub fn source_count(&self) -> Result<u64, StoreError> {
        self.snapshot.len(Table::Sources)
    }

    /// Row keys starting with `prefix` (e.g. `gongan/`) strictly after `after`, at most
    /// `limit`, in key order: a resumable walk over one department's rows.
    pub fn source_keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .snapshot
            .scan(Table::Sources, prefix, after, limit, false)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// Every entry of the store's tables, for copying a store elsewhere (`safegrid migrate`):
    /// calls `f` with each table's name, key and value, a page at a time, in key order.
    pub fn export(
        &self,
        mut f: impl FnMut(ExportedEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for table in [
            Table::Meta,
            Table::Sources,
            Table::Receipts,
            Table::Quarantine,
        ] {
            walk(self.snapshot.as_ref(), table, "", true, |key, value| {
                f(ExportedEntry::Value { table, key, value })?;
                Ok(true)
            })?;
        }
        let mut after = 0;
        loop {
            let page = self.snapshot.changes_after(after, SCAN_PAGE)?;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            after = last;
            for (seq, entity) in page {
                f(ExportedEntry::Change { seq, entity })?;
            }
        }
        Ok(())
    }
}

/// One entry of [`StoreReader::export`]. Link and quarantine-by-source members are not
/// exported: they are rebuilt from the rows they index ([`StoreWriter::import_batch`]).
#[derive(Debug)]
pub enum ExportedEntry {
    Value {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Change {
        seq: u64,
        entity: String,
    },
}

impl StoreWriter {
    /// Writes exported entries as they were, with the index entries each row or quarantine
    /// entry carries, a table's worth of statements at a time; for an empty store
    /// (`safegrid migrate`).
    pub fn import_batch(&mut self, entries: &[ExportedEntry]) -> Result<(), StoreError> {
        let mut values: BTreeMap<Table, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        let mut links = Vec::new();
        let mut by_source = Vec::new();
        let mut changes = Vec::new();
        for entry in entries {
            match entry {
                ExportedEntry::Value { table, key, value } => {
                    match table {
                        Table::Sources => {
                            for link in decode_source(key, value)?.links {
                                if is_indexed_link(&link) {
                                    links.push((link, key.clone()));
                                }
                            }
                        }
                        Table::Quarantine => {
                            let entry: QuarantineEntry =
                                serde_json::from_slice(value).map_err(|err| {
                                    StoreError::Corrupt {
                                        key: key.clone(),
                                        reason: err.to_string(),
                                    }
                                })?;
                            if let Some(source_id) = &entry.source_id {
                                by_source.push((
                                    format!("{}/{source_id}", entry.department.code()),
                                    entry.id.clone(),
                                ));
                            }
                        }
                        Table::Meta | Table::Receipts => {}
                    }
                    values
                        .entry(*table)
                        .or_default()
                        .push((key.clone(), value.clone()));
                }
                ExportedEntry::Change { seq, entity } => changes.push((*seq, entity.clone())),
            }
        }
        // The source's change counter may be among them.
        self.change_seq = None;
        self.change_seq_unsaved = false;
        for (table, entries) in &values {
            self.tx.put_many(*table, entries)?;
        }
        if !links.is_empty() {
            self.tx.add_members(Members::Links, &links)?;
        }
        if !by_source.is_empty() {
            self.tx
                .add_members(Members::QuarantineBySource, &by_source)?;
        }
        if !changes.is_empty() {
            self.tx.put_changes(&changes)?;
            self.changed = true;
        }
        Ok(())
    }
}

fn change_seq(snapshot: &dyn Snapshot) -> Result<u64, StoreError> {
    Ok(snapshot
        .get(Table::Meta, META_CHANGE_SEQ)?
        .map(|v| decode_u64(&v))
        .transpose()?
        .unwrap_or(0))
}

/// Calls `f` with every entry of `table` under `prefix`, a page at a time, until it returns
/// false.
fn walk(
    snapshot: &dyn Snapshot,
    table: Table,
    prefix: &str,
    with_values: bool,
    mut f: impl FnMut(String, Vec<u8>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let page = snapshot.scan(table, prefix, after.as_deref(), SCAN_PAGE, with_values)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, value) in page {
            if !f(key, value)? {
                return Ok(());
            }
        }
    }
}
fn decode_source(row: &str, bytes: &[u8]) -> Result<StoredSource, StoreError> {
    crate::row::decode(row, bytes)
}

fn decode_u32(bytes: &[u8]) -> Result<u32, StoreError> {
    bytes
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            key: META_FORMAT.to_owned(),
            reason: "expected 4 bytes".to_owned(),
        })
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            key: META_CHANGE_SEQ.to_owned(),
            reason: "expected 8 bytes".to_owned(),
        })
}

mod b64 {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        STANDARD_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

mod b64_map {
    use std::collections::BTreeMap;

    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(Some(map.len()))?;
        for (key, value) in map {
            out.serialize_entry(key, &STANDARD_NO_PAD.encode(value))?;
        }
        out.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                STANDARD_NO_PAD
                    .decode(v)
                    .map(|bytes| (k, bytes))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// The PostgreSQL server the tests of this crate use.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_postgres {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::PostgresOptions;

    const PG_URL_ENV: &str = "SAFEGRID_TEST_PG_URL";

    /// The PostgreSQL server of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one).
    /// Without it these tests fail and say so: a skipped test would pass unseen.
    pub(crate) fn pg_url() -> String {
        match std::env::var(PG_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => panic!(
                "{PG_URL_ENV} is not set: run `bash scripts/test.sh`, which starts a throwaway \
                 PostgreSQL (connectors/scripts/ci-postgres.sh) and sets it"
            ),
        }
    }

    /// A schema of its own for each PostgreSQL store a test opens.
    pub(crate) fn fresh_schema() -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "t_vault_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(crate) fn options() -> PostgresOptions {
        PostgresOptions::new(pg_url()).schema(fresh_schema())
    }

    /// The synchronous standby of that server (`SAFEGRID_TEST_PG_STANDBY_URL`, also started by
    /// `scripts/test.sh`).
    pub(crate) fn standby_url() -> String {
        match std::env::var("SAFEGRID_TEST_PG_STANDBY_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => panic!(
                "SAFEGRID_TEST_PG_STANDBY_URL is not set: run `bash scripts/test.sh`, which \
                 starts a standby of the test PostgreSQL (ci-postgres.sh standby)"
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_postgres::{fresh_schema, pg_url};
    use super::*;

    use std::sync::atomic::Ordering;

    fn pg_options(schema: &str) -> PostgresOptions {
        PostgresOptions::new(pg_url()).schema(schema)
    }

    /// The same test on each engine: the embedded file and a fresh PostgreSQL schema.
    fn on_both_engines(test: impl Fn(&str, &dyn Fn() -> Result<Store, StoreError>)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        test("embedded", &|| Store::open(&path));
        let options = pg_options(&fresh_schema());
        test("postgres", &|| Store::connect(&options));
    }

    fn source(id: &str, links: &[&str]) -> StoredSource {
        StoredSource {
            kind: RecordKind::Resident,
            department: Department::Gongan,
            source_id: id.to_owned(),
            version: Version::Counter(1),
            deleted: false,
            identified: true,
            entity: format!("r_{id}"),
            grid: Some("110105001001003".to_owned()),
            received_at: Utc::now(),
            batch_id: "b".to_owned(),
            digest: vec![1, 2, 3],
            clear: BTreeMap::new(),
            sealed: BTreeMap::from([("name".to_owned(), vec![9, 8, 7])]),
            links: links.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn quarantined(id: &str, source_id: &str) -> QuarantineEntry {
        QuarantineEntry {
            id: id.to_owned(),
            department: Department::Gongan,
            batch_id: "b".to_owned(),
            source_file: None,
            line: 1,
            code: "id_number_check".to_owned(),
            field: Some("id_number".to_owned()),
            message: "m".to_owned(),
            source_id: Some(source_id.to_owned()),
            received_at: Utc::now(),
            sealed_raw: vec![1],
            resolved: None,
            scope: Vec::new(),
        }
    }

    #[test]
    fn put_replaces_links_and_records_changes() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            let first = source("GA-1", &["entity:r_GA-1", "blind:a", "house:h1"]);
            store.write(|w| w.put_source(&first, None)).unwrap();
            let second = source("GA-1", &["entity:r_GA-1", "blind:b", "house:h1"]);
            store
                .write(|w| w.put_source(&second, Some(&first)))
                .unwrap();
            let reader = store.read().unwrap();
            assert!(
                reader.linked_rows("blind:a").unwrap().is_empty(),
                "{engine}"
            );
            for link in ["blind:b", "house:h1", "entity:r_GA-1"] {
                assert_eq!(
                    reader.linked_rows(link).unwrap(),
                    vec!["gongan/resident/GA-1"],
                    "{engine} {link}"
                );
            }
            assert_eq!(reader.change_seq().unwrap(), 2, "{engine}");
            let stored = reader.source("gongan/resident/GA-1").unwrap().unwrap();
            assert_eq!(stored.sealed["name"], vec![9, 8, 7], "{engine}");
            assert_eq!(stored.links, second.links, "{engine}");
            // A tombstone stays linked but is not a live source; rows come in key order.
            let mut gone = source("GA-0", &["house:h1"]);
            gone.deleted = true;
            let other = source("GA-2", &["house:h1"]);
            store
                .write(|w| {
                    w.put_source(&gone, None)?;
                    w.put_source(&other, None)
                })
                .unwrap();
            let reader = store.read().unwrap();
            assert_eq!(reader.linked_rows("house:h1").unwrap().len(), 3, "{engine}");
            let live: Vec<String> = reader
                .linked_sources("house:h1")
                .unwrap()
                .iter()
                .map(StoredSource::key)
                .collect();
            assert_eq!(
                live,
                ["gongan/resident/GA-1", "gongan/resident/GA-2"],
                "{engine}"
            );
        });
    }

    #[test]
    fn failed_batch_leaves_nothing() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            let result: Result<(), StoreError> = store.write(|w| {
                w.put_source(&source("GA-2", &["entity:x"]), None)?;
                w.put_meta("k", b"v")?;
                Err(StoreError::Corrupt {
                    key: "k".into(),
                    reason: "abort".into(),
                })
            });
            assert!(result.is_err());
            let reader = store.read().unwrap();
            assert!(
                reader.source("gongan/resident/GA-2").unwrap().is_none(),
                "{engine}"
            );
            assert!(
                reader.linked_rows("entity:x").unwrap().is_empty(),
                "{engine}"
            );
            assert_eq!(reader.change_seq().unwrap(), 0, "{engine}");
            assert!(store.meta("k").unwrap().is_none(), "{engine}");
        });
    }

    /// Writes inside one transaction take effect in their order, whatever an engine batches:
    /// the last value of a key wins, a link removed and added again is there, one added and
    /// removed is not, and a read in the transaction sees them all — past the PostgreSQL
    /// engine's batch limit too.
    #[test]
    fn writes_in_one_transaction_keep_their_order() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            store
                .write(|w| {
                    w.put_meta("k", b"1")?;
                    w.put_meta("other", b"x")?;
                    w.put_meta("k", b"2")?;
                    let first = source("GA-O", &["entity:r_GA-O", "house:a"]);
                    w.put_source(&first, None)?;
                    let second = source("GA-O", &["entity:r_GA-O", "house:b"]);
                    w.put_source(&second, Some(&first))?;
                    let third = source("GA-O", &["entity:r_GA-O", "house:a"]);
                    w.put_source(&third, Some(&second))?;
                    assert_eq!(w.meta("k")?.unwrap(), b"2", "{engine}");
                    assert_eq!(w.linked_rows("house:a")?, vec!["gongan/resident/GA-O"]);
                    assert!(w.linked_rows("house:b")?.is_empty(), "{engine}");
                    assert_eq!(w.change_seq()?, 3, "{engine}");
                    for i in 0..5000 {
                        w.put_meta(&format!("bulk/{i:05}"), &[1])?;
                    }
                    w.put_meta("k", b"3")
                })
                .unwrap();
            let reader = store.read().unwrap();
            assert_eq!(store.meta("k").unwrap().unwrap(), b"3", "{engine}");
            assert_eq!(
                reader.meta_with_prefix("bulk/").unwrap().len(),
                5000,
                "{engine}"
            );
            assert_eq!(
                reader.linked_rows("house:a").unwrap(),
                vec!["gongan/resident/GA-O"],
                "{engine}"
            );
            assert!(
                reader.linked_rows("house:b").unwrap().is_empty(),
                "{engine}"
            );
            assert_eq!(reader.changes_after(0, 10).unwrap().len(), 3, "{engine}");
        });
    }

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            store
                .write(|w| w.put_source(&source("GA-4", &["entity:r_GA-4"]), None))
                .unwrap();
            let before = store.read().unwrap();
            assert_eq!(before.change_seq().unwrap(), 1, "{engine}");
            store
                .write(|w| w.put_source(&source("GA-5", &["entity:r_GA-5"]), None))
                .unwrap();
            assert!(
                before.source("gongan/resident/GA-5").unwrap().is_none(),
                "{engine}"
            );
            assert_eq!(before.changes_after(0, 10).unwrap().len(), 1, "{engine}");
            let after = store.read().unwrap();
            assert!(
                after.source("gongan/resident/GA-5").unwrap().is_some(),
                "{engine}"
            );
            assert_eq!(after.source_count().unwrap(), 2, "{engine}");
        });
    }

    #[test]
    fn walks_keep_key_order_prefixes_and_pages() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            // More rows than one page, over two departments and two kinds.
            store
                .write(|w| {
                    for i in 0..(SCAN_PAGE + 50) {
                        let id = format!("GA-{i:05}");
                        w.put_source(&source(&id, &[&format!("entity:r_{id}")]), None)?;
                    }
                    let mut other = source("MZ-1", &["entity:r_MZ-1"]);
                    other.department = Department::Minzheng;
                    w.put_source(&other, None)?;
                    let mut house = source("GA-H1", &["house:h"]);
                    house.kind = RecordKind::House;
                    w.put_source(&house, None)?;
                    for key in ["keys/a/1", "keys/a/2", "keys/b/1", "keyz", "kex"] {
                        w.put_meta(key, key.as_bytes())?;
                    }
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            let reader = store.read().unwrap();
            let mut residents = Vec::new();
            reader
                .for_each_source(RecordKind::Resident, |s| residents.push(s.key()))
                .unwrap();
            assert_eq!(residents.len(), SCAN_PAGE + 51, "{engine}");
            assert!(residents.windows(2).all(|w| w[0] < w[1]), "{engine}");
            let counts = reader.rows_per_department().unwrap();
            assert_eq!(counts["gongan"], SCAN_PAGE as u64 + 51, "{engine}");
            assert_eq!(counts["minzheng"], 1, "{engine}");
            let first = reader
                .source_keys_after("gongan/resident/", None, 3)
                .unwrap();
            assert_eq!(
                first,
                vec![
                    "gongan/resident/GA-00000",
                    "gongan/resident/GA-00001",
                    "gongan/resident/GA-00002"
                ],
                "{engine}"
            );
            let next = reader
                .source_keys_after("gongan/resident/", Some(&first[2]), 2)
                .unwrap();
            assert_eq!(
                next,
                vec!["gongan/resident/GA-00003", "gongan/resident/GA-00004"],
                "{engine}"
            );
            let last = format!("gongan/resident/GA-{:05}", SCAN_PAGE + 49);
            assert!(reader
                .source_keys_after("gongan/resident/", Some(&last), 5)
                .unwrap()
                .is_empty());
            let keys: Vec<String> = reader
                .meta_with_prefix("keys/")
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, vec!["keys/a/1", "keys/a/2", "keys/b/1"], "{engine}");
            let in_writer = store.write(|w| w.meta_keys("keys/a/")).unwrap();
            assert_eq!(in_writer, vec!["keys/a/1", "keys/a/2"], "{engine}");
        });
    }

    #[test]
    fn quarantine_entries_page_and_close() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            store
                .write(|w| {
                    for i in 0..5 {
                        w.put_quarantine(&quarantined(&format!("q{i}"), "GA-9"))?;
                    }
                    w.put_quarantine(&quarantined("q9", "GA-10"))
                })
                .unwrap();
            let reader = store.read().unwrap();
            let page = reader
                .quarantine(Department::Gongan, None, false, 2)
                .unwrap();
            let ids: Vec<_> = page.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["q0", "q1"], "{engine}");
            let page = reader
                .quarantine(Department::Gongan, Some("q1"), false, 10)
                .unwrap();
            assert_eq!(page.len(), 4, "{engine}");
            assert!(reader
                .quarantine(Department::Minzheng, None, true, 10)
                .unwrap()
                .is_empty());
            let resolved = store
                .write(|w| w.resolve_quarantine(Department::Gongan, "GA-9", "reingested"))
                .unwrap();
            assert_eq!(resolved, 5, "{engine}");
            let reader = store.read().unwrap();
            let open_entries = reader
                .quarantine(Department::Gongan, None, false, 10)
                .unwrap();
            assert_eq!(open_entries.len(), 1, "{engine}");
            assert_eq!(open_entries[0].id, "q9", "{engine}");
            let all = reader
                .quarantine(Department::Gongan, None, true, 10)
                .unwrap();
            assert_eq!(all.len(), 6, "{engine}");
            let again = store
                .write(|w| w.close_quarantine(Department::Gongan, "q0", "dismissed"))
                .unwrap();
            assert!(!again, "{engine}: an entry closed twice");
        });
    }

    #[test]
    fn refuses_newer_format() {
        on_both_engines(|engine, open| {
            open()
                .unwrap()
                .write(|w| w.put_meta(META_FORMAT, &(STORE_FORMAT_VERSION + 1).to_be_bytes()))
                .unwrap();
            assert!(
                matches!(open(), Err(StoreError::NewerFormat { .. })),
                "{engine}"
            );
        });
    }

    #[test]
    fn a_format_1_store_with_json_rows_is_upgraded_in_place() {
        on_both_engines(|engine, open| {
            let old = source("GA-3", &["entity:r_GA-3"]);
            {
                let store = open().unwrap();
                store
                    .write(|w| {
                        w.put_meta(META_FORMAT, &1u32.to_be_bytes())?;
                        let json = serde_json::to_vec(&old).unwrap();
                        w.tx.put(Table::Sources, &old.key(), &json)
                    })
                    .unwrap();
            }
            let store = open().unwrap();
            assert_eq!(
                store.meta(META_FORMAT).unwrap().unwrap(),
                STORE_FORMAT_VERSION.to_be_bytes(),
                "{engine}"
            );
            let read = store.read().unwrap().source(&old.key()).unwrap().unwrap();
            assert_eq!(read.sealed, old.sealed, "{engine}");
            assert_eq!(read.received_at, old.received_at, "{engine}");
            store.write(|w| w.put_source(&read, Some(&old))).unwrap();
            let raw = store
                .read()
                .unwrap()
                .snapshot
                .get(Table::Sources, &old.key())
                .unwrap()
                .unwrap();
            assert_eq!(raw[0], crate::row::MARKER, "{engine}");
        });
    }

    /// Two brokers on one database, each with writers on several threads, and a follower
    /// reading the change sequence meanwhile: every change is numbered once, with no gap, and
    /// the follower never finds a number below its cursor appear later.
    #[test]
    fn brokers_sharing_a_database_number_changes_without_gaps() {
        let options = pg_options(&fresh_schema());
        let brokers = [
            std::sync::Arc::new(Store::connect(&options).unwrap()),
            std::sync::Arc::new(Store::connect(&options).unwrap()),
        ];
        const WRITERS: usize = 4;
        const BATCHES: usize = 15;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let follower = {
            let store = brokers[1].clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut cursor = 0u64;
                let mut seen = Vec::new();
                loop {
                    let done = stop.load(Ordering::Acquire);
                    let changes = store.read().unwrap().changes_after(cursor, 1000).unwrap();
                    for (seq, entity) in changes {
                        assert_eq!(seq, cursor + 1, "a gap or a reordering after {cursor}");
                        cursor = seq;
                        seen.push(entity);
                    }
                    if done {
                        return seen;
                    }
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let store = brokers[t % 2].clone();
                std::thread::spawn(move || {
                    for b in 0..BATCHES {
                        store
                            .write(|w| {
                                let id = format!("GA-{t}-{b}");
                                w.put_source(&source(&id, &[&format!("entity:r_{id}")]), None)
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        let seen = follower.join().unwrap();
        assert_eq!(seen.len(), WRITERS * BATCHES);
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), WRITERS * BATCHES);
        for broker in &brokers {
            assert_eq!(
                broker.read().unwrap().change_seq().unwrap(),
                (WRITERS * BATCHES) as u64
            );
        }
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error_without_the_password() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options = PostgresOptions::new(format!(
            "postgres://safegrid:s3cret-pw@127.0.0.1:{port}/safegrid"
        ));
        options.acquire_timeout = std::time::Duration::from_secs(2);
        let err = Store::connect(&options).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
        for bad in ["mysql://u@h/db", "not a url"] {
            let err = Store::connect(&PostgresOptions::new(bad)).unwrap_err();
            assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
        }
        let err = Store::connect(&pg_options("x; drop schema public")).unwrap_err();
        assert!(err.to_string().contains("identifier"), "{err}");
    }

    /// The shared access log on PostgreSQL: two brokers × two threads append at once; every
    /// entry gets its own position, without gaps, and reads back where it was put; the signing
    /// lease goes to one broker at a time and lapses by the database's clock.
    #[test]
    fn the_shared_access_log_hands_out_contiguous_positions_across_brokers() {
        let schema = fresh_schema();
        let brokers: Vec<std::sync::Arc<Store>> = (0..2)
            .map(|_| std::sync::Arc::new(Store::connect(&pg_options(&schema)).unwrap()))
            .collect();
        assert!(brokers[0].has_shared_log());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let store = brokers[t % 2].clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for b in 0..25 {
                        let first = store
                            .log_append(&mut |first| {
                                (0..3)
                                    .map(|i| format!("{t}/{b}/{i}@{}", first + i).into_bytes())
                                    .collect()
                            })
                            .unwrap();
                        got.push(first);
                    }
                    got
                })
            })
            .collect();
        let mut firsts: Vec<u64> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..100).map(|b| b * 3).collect::<Vec<u64>>());
        assert_eq!(brokers[1].log_len().unwrap(), 300);
        let entries = brokers[1].log_read(0, 1000).unwrap();
        assert_eq!(entries.len(), 300);
        for (pos, entry) in entries.iter().enumerate() {
            let text = String::from_utf8(entry.clone()).unwrap();
            assert!(text.ends_with(&format!("@{pos}")), "{text} at {pos}");
        }
        assert_eq!(brokers[0].log_read(298, 10).unwrap().len(), 2);

        brokers[0].log_put_checkpoint(100, "note-100").unwrap();
        brokers[1].log_put_checkpoint(100, "another note").unwrap();
        brokers[1].log_put_checkpoint(300, "note-300").unwrap();
        assert_eq!(
            brokers[1].log_checkpoints_after(50).unwrap(),
            [(100, "note-100".to_owned()), (300, "note-300".to_owned())]
        );
        assert_eq!(brokers[0].log_checkpoints_after(100).unwrap().len(), 1);

        assert!(brokers[0].log_lead("a", 1).unwrap());
        assert!(brokers[0].log_lead("a", 1).unwrap(), "renewed");
        assert!(!brokers[1].log_lead("b", 30).unwrap(), "held by a");
        std::thread::sleep(std::time::Duration::from_millis(1200));
        assert!(brokers[1].log_lead("b", 30).unwrap(), "a's lease lapsed");
        assert!(!brokers[0].log_lead("a", 30).unwrap());
        brokers[1].log_release("b").unwrap();
        assert!(brokers[0].log_lead("a", 30).unwrap(), "released");

        let dir = tempfile::tempdir().unwrap();
        let embedded = Store::open(&dir.path().join("s.redb")).unwrap();
        assert!(!embedded.has_shared_log());
        assert!(embedded.log_len().is_err());
    }

    /// Another broker's commit wakes this one's observer (LISTEN/NOTIFY), with no write here;
    /// a commit to another schema does not.
    #[test]
    fn another_brokers_commit_wakes_the_observer() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let schema = fresh_schema();
        let here = Store::connect(&pg_options(&schema)).unwrap();
        let there = Store::connect(&pg_options(&schema)).unwrap();
        let elsewhere = Store::connect(&pg_options(&fresh_schema())).unwrap();
        let woken = std::sync::Arc::new(AtomicU64::new(0));
        let counter = woken.clone();
        assert!(here.observe_commits(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let settle = |at_least: u64| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while woken.load(Ordering::SeqCst) < at_least {
                assert!(std::time::Instant::now() < deadline, "not woken");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        settle(1); // once when the listener is subscribed
        std::thread::sleep(std::time::Duration::from_millis(300));
        let before = woken.load(Ordering::SeqCst);
        elsewhere
            .write(|w| w.put_source(&source("GA-N-0", &["entity:r_n0"]), None))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            woken.load(Ordering::SeqCst),
            before,
            "another schema's commit"
        );
        there
            .write(|w| w.put_source(&source("GA-N-1", &["entity:r_n1"]), None))
            .unwrap();
        settle(before + 1);
    }

    /// A URL naming a standby and the primary, in either order: the store connects to the
    /// primary; a URL naming only the standby never writes (it fails as unavailable).
    #[test]
    fn only_the_primary_is_used_whatever_the_hosts_order() {
        let standby = test_postgres::standby_url();
        let primary = pg_url();
        let host = |url: &str| {
            let rest = url.split_once("://").unwrap().1;
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, h)| h)
                .to_owned()
        };
        let both = format!(
            "postgres://postgres@{},{}/postgres",
            host(&standby),
            host(&primary)
        );
        let schema = fresh_schema();
        let store = Store::connect(&PostgresOptions::new(both).schema(&schema)).unwrap();
        store
            .write(|w| w.put_source(&source("GA-HA-1", &["entity:r_ha"]), None))
            .unwrap();
        drop(store);
        let on_primary = Store::connect(&pg_options(&schema)).unwrap();
        assert_eq!(on_primary.read().unwrap().change_seq().unwrap(), 1);

        let mut only_standby = PostgresOptions::new(standby).schema(fresh_schema());
        only_standby.acquire_timeout = std::time::Duration::from_secs(2);
        let err = Store::connect(&only_standby).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    /// The broker calls the store from its async handlers: no runtime-inside-runtime panic,
    /// on a single-threaded runtime too.
    #[test]
    fn works_when_called_from_inside_a_runtime() {
        let options = pg_options(&fresh_schema());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seq = runtime.block_on(async move {
            let store = Store::connect(&options).unwrap();
            store
                .write(|w| w.put_source(&source("GA-7", &["entity:r_GA-7"]), None))
                .unwrap();
            let seq = store.read().unwrap().change_seq().unwrap();
            // Dropped here, inside the runtime.
            drop(store);
            seq
        });
        assert_eq!(seq, 1);
    }

    #[test]
    fn a_reader_outliving_its_store_fails_instead_of_hanging() {
        let store = Store::connect(&pg_options(&fresh_schema())).unwrap();
        let reader = store.read().unwrap();
        assert_eq!(reader.change_seq().unwrap(), 0);
        drop(store);
        assert!(matches!(
            reader.change_seq(),
            Err(StoreError::Unavailable(_))
        ));
        drop(reader);
    }

    #[test]
    fn compaction_shrinks_a_churned_file_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            for batch in 0..200 {
                store
                    .write(|w| {
                        for i in 0..20 {
                            let id = format!("GA-{batch}-{i}");
                            w.put_source(&source(&id, &[&format!("entity:r_{id}")]), None)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .unwrap();
            }
        }
        let done = compact(&path).unwrap();
        assert!(
            done.bytes_after < done.bytes_before,
            "{done:?} did not shrink"
        );
        let store = Store::open(&path).unwrap();
        let reader = store.read().unwrap();
        assert_eq!(reader.source_count().unwrap(), 4000);
        assert_eq!(
            reader.linked_rows("entity:r_GA-199-19").unwrap(),
            vec!["gongan/resident/GA-199-19"]
        );
        assert_eq!(reader.change_seq().unwrap(), 4000);
    }

    #[test]
    fn a_row_only_link_stays_in_the_row_and_an_old_entry_of_it_goes() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            let compound = format!("addrc:{}", "ab".repeat(16));
            let building = format!("addr:{}", "cd".repeat(16));
            let row = source("GA-C1", &["entity:r_GA-C1", &compound, &building]);
            // The row keeps the compound link; only the building has an entry.
            let only_the_building_is_entered = |store: &Store| {
                let reader = store.read().unwrap();
                let stored = reader.source(&row.key()).unwrap().unwrap();
                assert!(stored.links.contains(&compound), "{engine}");
                assert!(
                    reader.linked_rows(&compound).unwrap().is_empty(),
                    "{engine}"
                );
                assert_eq!(
                    reader.linked_rows(&building).unwrap(),
                    vec![row.key()],
                    "{engine}"
                );
            };
            store.write(|w| w.put_source(&row, None)).unwrap();
            only_the_building_is_entered(&store);
            // An entry an older broker made for it is removed when the row is written again.
            store
                .write(|w| w.tx.add_member(Members::Links, &compound, &row.key()))
                .unwrap();
            let mut newer = row.clone();
            newer.version = Version::Counter(2);
            store.write(|w| w.put_source(&newer, Some(&row))).unwrap();
            only_the_building_is_entered(&store);
        });
    }

    #[test]
    fn compaction_leaves_an_old_row_only_entry_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let compound = format!("addrc:{}", "ab".repeat(16));
        let row = source("GA-C2", &["entity:r_GA-C2", &compound]);
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|w| {
                    w.put_source(&row, None)?;
                    w.tx.add_member(Members::Links, &compound, &row.key())
                })
                .unwrap();
            assert_eq!(
                store.read().unwrap().linked_rows(&compound).unwrap().len(),
                1
            );
        }
        compact(&path).unwrap();
        let store = Store::open(&path).unwrap();
        let reader = store.read().unwrap();
        assert!(reader.linked_rows(&compound).unwrap().is_empty());
        assert_eq!(
            reader.linked_rows("entity:r_GA-C2").unwrap(),
            vec![row.key()]
        );
        assert!(reader
            .source(&row.key())
            .unwrap()
            .unwrap()
            .links
            .contains(&compound));
    }

    #[test]
    fn the_change_counter_is_stored_once_per_transaction_and_read_back_current() {
        on_both_engines(|engine, open| {
            let store = open().unwrap();
            store
                .write(|w| {
                    for i in 0..5 {
                        let id = format!("GA-{i}");
                        w.put_source(&source(&id, &[&format!("entity:r_{id}")]), None)?;
                        assert_eq!(w.change_seq()?, i + 1, "{engine}");
                        assert_eq!(
                            w.meta(META_CHANGE_SEQ)?,
                            Some((i + 1).to_be_bytes().to_vec()),
                            "{engine}"
                        );
                    }
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            assert_eq!(store.read().unwrap().change_seq().unwrap(), 5, "{engine}");
            // A transaction that fails stores neither its changes nor their count.
            let failed: Result<(), StoreError> = store.write(|w| {
                w.put_source(&source("GA-9", &["entity:r_GA-9"]), None)?;
                Err(StoreError::Unavailable("stop".to_owned()))
            });
            assert!(failed.is_err());
            assert_eq!(store.read().unwrap().change_seq().unwrap(), 5, "{engine}");
            // A counter written explicitly after changes (an import) is the one kept.
            store
                .write(|w| {
                    w.put_source(&source("GA-7", &["entity:r_GA-7"]), None)?;
                    w.put_meta(META_CHANGE_SEQ, &40u64.to_be_bytes())
                })
                .unwrap();
            let reader = store.read().unwrap();
            assert_eq!(reader.change_seq().unwrap(), 40, "{engine}");
            assert_eq!(reader.changes_after(0, 100).unwrap().len(), 6, "{engine}");
            drop(reader);
            store
                .write(|w| w.put_source(&source("GA-8", &["entity:r_GA-8"]), None))
                .unwrap();
            assert_eq!(store.read().unwrap().change_seq().unwrap(), 41, "{engine}");
        });
    }

    /// A file filled the way a broker fills it: many small batches, rows rewritten, one
    /// JSON row of format 1, a tombstone, receipts, quarantine entries.
    fn churned(path: &Path) {
        let store = Store::open(path).unwrap();
        for batch in 0..150 {
            store
                .write(|w| {
                    for i in 0..20 {
                        let id = format!("GA-{:03}-{i}", batch % 100);
                        let previous = w.source(&StoredSource::row_key(
                            Department::Gongan,
                            RecordKind::Resident,
                            &id,
                        ))?;
                        let mut row = source(
                            &id,
                            &[
                                &format!("entity:r_{id}"),
                                &format!("block:{:032x}", (batch % 100) * 20 + i),
                            ],
                        );
                        row.deleted = batch == 120 && i == 0;
                        w.put_source(&row, previous.as_ref())?;
                    }
                    w.put_receipt(&format!("b{batch}"), b"{}")?;
                    w.put_quarantine(&quarantined(&format!("q{batch}"), &format!("S-{batch}")))
                })
                .unwrap();
        }
        let old = source("GA-JSON", &["entity:r_GA-JSON"]);
        store
            .write(|w| {
                w.tx.add_member(Members::Links, "entity:r_GA-JSON", &old.key())?;
                w.tx.put(
                    Table::Sources,
                    &old.key(),
                    &serde_json::to_vec(&old).unwrap(),
                )
            })
            .unwrap();
    }

    #[test]
    fn compaction_rewrites_the_file_with_full_pages_and_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, redbs) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
        churned(&ours);
        churned(&redbs);
        let before = {
            let store = Store::open(&ours).unwrap();
            let reader = store.read().unwrap();
            let digest = crate::migrate::summarize(&reader, true).unwrap();
            let rows: Vec<_> = reader
                .source_keys_after("", None, 10_000)
                .unwrap()
                .into_iter()
                .map(|key| {
                    let row = reader.source(&key).unwrap().unwrap();
                    let linked: Vec<Vec<String>> = row
                        .links
                        .iter()
                        .map(|l| reader.linked_rows(l).unwrap())
                        .collect();
                    (serde_json::to_value(&row).unwrap(), linked)
                })
                .collect();
            (digest, rows, reader.change_seq().unwrap())
        };
        let done = compact(&ours).unwrap();
        assert!(done.bytes_after < done.bytes_before, "{done:?}");
        // redb's own compaction, in place, of the same file.
        {
            let mut engine = Embedded::open(&redbs, DEFAULT_CACHE_BYTES).unwrap();
            while engine.compact().unwrap() {}
        }
        let in_place = std::fs::metadata(&redbs).unwrap().len();
        assert!(
            done.bytes_after < in_place,
            "rewritten {} B, compacted in place {in_place} B",
            done.bytes_after
        );
        assert!(!dir.path().join("a.redb.compacting").exists());

        let store = Store::open(&ours).unwrap();
        let reader = store.read().unwrap();
        assert_eq!(crate::migrate::summarize(&reader, true).unwrap(), before.0);
        for (row, linked) in &before.1 {
            let key = StoredSource::row_key(
                Department::Gongan,
                RecordKind::Resident,
                row["source_id"].as_str().unwrap(),
            );
            let now = reader.source(&key).unwrap().unwrap();
            assert_eq!(&serde_json::to_value(&now).unwrap(), row);
            let now_linked: Vec<Vec<String>> = now
                .links
                .iter()
                .map(|l| reader.linked_rows(l).unwrap())
                .collect();
            assert_eq!(&now_linked, linked);
            // Every row, the old JSON one included, is in today's layout.
            let raw = reader.snapshot.get(Table::Sources, &key).unwrap().unwrap();
            assert_eq!(raw[0], crate::row::MARKER);
        }
        assert_eq!(reader.change_seq().unwrap(), before.2);
        assert_eq!(
            reader.changes_after(0, 100_000).unwrap().len() as u64,
            before.2
        );
        // The quarantine-by-source index was rebuilt: a good version closes its entry.
        assert_eq!(
            store
                .write(|w| w.resolve_quarantine(Department::Gongan, "S-7", "reingested"))
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_copy_in_tiny_chunks_is_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        churned(&path);
        // One link key whose members span many chunks.
        let store = Store::open(&path).unwrap();
        store
            .write(|w| {
                for i in 0..25 {
                    let id = format!("GA-B{i:02}");
                    let links = [format!("entity:r_{id}"), "addr:shared".to_owned()];
                    let links: Vec<&str> = links.iter().map(String::as_str).collect();
                    w.put_source(&source(&id, &links), None)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let original = store.engine.as_embedded().unwrap();
        let copy = Embedded::open(&dir.path().join("copy.redb"), DEFAULT_CACHE_BYTES).unwrap();
        original
            .copy_into(
                &copy,
                3,
                &|_, value| Ok(value.to_vec()),
                &crate::progress::Silent,
            )
            .unwrap();
        assert_eq!(
            copy.links_digest().unwrap(),
            original.links_digest().unwrap()
        );
        drop(copy);
        let copied = Store::open(&dir.path().join("copy.redb")).unwrap();
        let summary = |s: &Store| crate::migrate::summarize(&s.read().unwrap(), false).unwrap();
        assert!(summary(&copied) == summary(&store));
        assert_eq!(
            copied
                .read()
                .unwrap()
                .linked_rows("addr:shared")
                .unwrap()
                .len(),
            25
        );
    }

    #[test]
    fn a_failed_compaction_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        churned(&path);
        let content = |path: &Path| {
            let store = Store::open(path).unwrap();
            let reader = store.read().unwrap();
            crate::migrate::summarize(&reader, false).unwrap()
        };
        let before = content(&path);
        // Where the copy would go is a directory that cannot be removed as a file.
        std::fs::create_dir(dir.path().join("s.redb.compacting")).unwrap();
        assert!(compact(&path).is_err());
        // Not a row rewritten: the stored bytes digest the same.
        assert!(content(&path) == before);
        // A stale copy left by a crash is replaced, not read.
        std::fs::remove_dir(dir.path().join("s.redb.compacting")).unwrap();
        std::fs::write(dir.path().join("s.redb.compacting"), b"torn copy").unwrap();
        compact(&path).unwrap();
        assert_eq!(
            Store::open(&path)
                .unwrap()
                .read()
                .unwrap()
                .source_count()
                .unwrap(),
            2001
        );
    }

    #[test]
    fn compaction_refuses_a_store_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _running = Store::open(&path).unwrap();
        assert!(compact(&path).is_err());
    }
}
