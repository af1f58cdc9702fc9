//! The embedded store (redb): source records as departments sent them (sealed), the links
//! that join them into unified entities, a change sequence, batch receipts and wrapped keys.
//!
//! Guarantees:
//! - A write batch is one redb transaction committed with `Durability::Immediate`: when
//!   [`Store::write`] returns `Ok`, the batch survives `kill -9` and power loss; when it
//!   returns `Err` (or the process dies first), none of it is visible.
//! - Link entries are always exactly those of the current version of each source record:
//!   [`StoreWriter::put_source`] removes the old record's links in the same transaction.
//! - The store carries a format version and refuses to open a newer one.
//! - Personal fields reach this module only sealed; nothing here sees plaintext.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use redb::{
    Database, MultimapTableDefinition, ReadOnlyMultimapTable, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::record::Version;
use model::{Department, RecordKind};

/// Bumped when the on-disk layout changes so that an older broker could not read it: 2 writes
/// source rows in the binary encoding of [`crate::row`] (a store of format 1 is upgraded on
/// open; its JSON rows stay readable and are rewritten as they change).
pub const STORE_FORMAT_VERSION: u32 = 2;
/// Page cache of the store unless configured (`store.cache_mb`). redb's own default, 1 GiB,
/// was most of the broker's resident memory at 200,000 residents (peak 2.0 GB against 0.9 GB
/// with 256 MiB, BENCHMARKS.md); leaf pages not cached here stay in the OS page cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// row key (`department/kind/source_id`) -> [`StoredSource`] in the binary row encoding
/// ([`crate::row`]; rows of format 1 are JSON and still read).
const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
/// link key (`entity:…`, `blind:…`, `house:…`, `party:…`) -> row keys.
const LINKS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("links");
/// change sequence number -> unified entity id whose view changed.
const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("changes");
/// batch id -> receipt JSON.
const RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("receipts");
/// `department/reject id` -> [`QuarantineEntry`] as JSON.
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
/// `department/source_id` -> reject ids, to resolve entries when a good version arrives.
const QUARANTINE_BY_SOURCE: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("quarantine_by_source");

const META_FORMAT: &str = "format_version";
const META_CHANGE_SEQ: &str = "change_seq";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database: {0}")]
    Database(#[from] redb::Error),
    #[error("store format version {found} is newer than this broker supports ({supported}); upgrade SafeGrid")]
    NewerFormat { found: u32, supported: u32 },
    #[error("store record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

macro_rules! impl_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                StoreError::Database(err.into())
            }
        }
    )*};
}
impl_from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

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

/// The embedded database.
pub struct Store {
    db: Database,
    /// Called after every committed transaction that appended to the change sequence.
    observer: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("observed", &self.observer.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates the store file, creating tables and checking the format version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of at most `cache_bytes` (redb's own default is 1 GiB).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta
                .get(META_FORMAT)?
                .map(|v| decode_u32(v.value()))
                .transpose()?;
            match found {
                Some(found) if found > STORE_FORMAT_VERSION => {
                    return Err(StoreError::NewerFormat {
                        found,
                        supported: STORE_FORMAT_VERSION,
                    })
                }
                Some(found) if found == STORE_FORMAT_VERSION => {}
                // Older formats upgrade in place: every difference is read as it is.
                Some(_) | None => {
                    meta.insert(META_FORMAT, STORE_FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
            }
            tx.open_table(SOURCES)?;
            tx.open_multimap_table(LINKS)?;
            tx.open_table(CHANGES)?;
            tx.open_table(RECEIPTS)?;
            tx.open_table(QUARANTINE)?;
            tx.open_multimap_table(QUARANTINE_BY_SOURCE)?;
        }
        tx.commit()?;
        Ok(Store {
            db,
            observer: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` in one write transaction and commits it durably if `f` returns `Ok`.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut StoreWriter) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = self.db.begin_write().map_err(StoreError::from)?;
        let mut writer = StoreWriter { tx, changed: false };
        let result = f(&mut writer)?;
        let changed = writer.changed;
        writer.tx.commit().map_err(StoreError::from)?;
        if changed {
            if let Some(observer) = self.observer.get() {
                observer();
            }
        }
        Ok(result)
    }

    /// Sets the one observer told (after the commit, on the writing thread) of every
    /// transaction that appended to the change sequence — to wake followers instead of
    /// polling. Returns false if one was set already. It must be quick and must not write.
    pub fn observe_commits(&self, observer: impl Fn() + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    pub fn read(&self) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            tx: self.db.begin_read()?,
            sources: OnceLock::new(),
            links: OnceLock::new(),
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
}

/// What [`compact`] did to a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites the store file at `path` without its free and fragmented pages, for a stopped
/// broker (the file is locked while one runs, and this fails then). Every transaction the
/// store commits copies the pages it changes, so a file filled by many small batches holds
/// more free pages than data (BENCHMARKS.md, "Store size"); nothing stored changes.
pub fn compact(path: &Path) -> Result<Compaction, StoreError> {
    let bytes_before = file_len(path)?;
    let mut store = Store::open(path)?;
    while store.db.compact()? {}
    drop(store);
    Ok(Compaction {
        bytes_before,
        bytes_after: file_len(path)?,
    })
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|err| StoreError::Database(redb::StorageError::Io(err).into()))
}

/// A write transaction.
pub struct StoreWriter {
    tx: WriteTransaction,
    /// The transaction appended to the change sequence.
    changed: bool,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreWriter")
    }
}

impl StoreWriter {
    pub fn source(&self, row: &str) -> Result<Option<StoredSource>, StoreError> {
        let table = self.tx.open_table(SOURCES)?;
        let value = table.get(row)?;
        value.map(|v| decode_source(row, v.value())).transpose()
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
        let bytes = crate::row::encode(source);
        {
            let mut table = self.tx.open_multimap_table(LINKS)?;
            for link in previous_links {
                table.remove(link.as_str(), row.as_str())?;
            }
            for link in &source.links {
                table.insert(link.as_str(), row.as_str())?;
            }
        }
        self.tx
            .open_table(SOURCES)?
            .insert(row.as_str(), bytes.as_slice())?;
        Ok(())
    }

    /// The highest change sequence number written so far (this transaction's included).
    pub fn change_seq(&self) -> Result<u64, StoreError> {
        let meta = self.tx.open_table(META)?;
        let value = meta.get(META_CHANGE_SEQ)?;
        Ok(value
            .map(|v| decode_u64(v.value()))
            .transpose()?
            .unwrap_or(0))
    }

    fn append_change(&mut self, entity: &str) -> Result<(), StoreError> {
        let mut meta = self.tx.open_table(META)?;
        let next = meta
            .get(META_CHANGE_SEQ)?
            .map(|v| decode_u64(v.value()))
            .transpose()?
            .unwrap_or(0)
            + 1;
        meta.insert(META_CHANGE_SEQ, next.to_be_bytes().as_slice())?;
        self.tx.open_table(CHANGES)?.insert(next, entity)?;
        self.changed = true;
        Ok(())
    }

    pub fn put_receipt(&mut self, batch_id: &str, receipt: &[u8]) -> Result<(), StoreError> {
        self.tx.open_table(RECEIPTS)?.insert(batch_id, receipt)?;
        Ok(())
    }

    /// Row keys reachable by one link key, as of this transaction.
    pub fn linked_rows(&self, link: &str) -> Result<Vec<String>, StoreError> {
        let table = self.tx.open_multimap_table(LINKS)?;
        let mut rows = Vec::new();
        for value in table.get(link)? {
            rows.push(value?.value().to_owned());
        }
        Ok(rows)
    }

    /// Keeps a rejected record (replacing an entry with the same id).
    pub fn put_quarantine(&mut self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let key = format!("{}/{}", entry.department.code(), entry.id);
        let bytes = serde_json::to_vec(entry).map_err(|err| StoreError::Corrupt {
            key: key.clone(),
            reason: err.to_string(),
        })?;
        self.tx
            .open_table(QUARANTINE)?
            .insert(key.as_str(), bytes.as_slice())?;
        if let Some(source_id) = &entry.source_id {
            let by_source = format!("{}/{source_id}", entry.department.code());
            self.tx
                .open_multimap_table(QUARANTINE_BY_SOURCE)?
                .insert(by_source.as_str(), entry.id.as_str())?;
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
        let ids: Vec<String> = {
            let table = self.tx.open_multimap_table(QUARANTINE_BY_SOURCE)?;
            let mut ids = Vec::new();
            for id in table.get(by_source.as_str())? {
                ids.push(id?.value().to_owned());
            }
            ids
        };
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
        let mut table = self.tx.open_table(QUARANTINE)?;
        let existing = table.get(key.as_str())?.map(|v| v.value().to_vec());
        let Some(bytes) = existing else {
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
        table.insert(key.as_str(), bytes.as_slice())?;
        Ok(true)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.tx.open_table(META)?;
        let value = table.get(key)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tx.open_table(META)?.insert(key, value)?;
        Ok(())
    }

    /// Removes a meta entry (a retired key); true if it existed.
    pub fn delete_meta(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tx.open_table(META)?.remove(key)?.is_some())
    }

    /// Meta keys starting with `prefix`, in key order (key rotation walks `keys/`).
    pub fn meta_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let table = self.tx.open_table(META)?;
        let mut keys = Vec::new();
        for entry in table.range(prefix..)? {
            let (key, _) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_owned());
        }
        Ok(keys)
    }
}

/// A consistent read snapshot.
pub struct StoreReader {
    tx: ReadTransaction,
    /// The two tables every profile reads, opened once per snapshot: opening a table looks
    /// its root up in the transaction's table tree, a B-tree descent of its own, and a
    /// profile reads them a dozen times.
    sources: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    links: OnceLock<ReadOnlyMultimapTable<&'static str, &'static str>>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreReader")
    }
}

impl StoreReader {
    fn sources(&self) -> Result<&ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        if let Some(table) = self.sources.get() {
            return Ok(table);
        }
        let table = self.tx.open_table(SOURCES)?;
        Ok(self.sources.get_or_init(|| table))
    }

    fn links(&self) -> Result<&ReadOnlyMultimapTable<&'static str, &'static str>, StoreError> {
        if let Some(table) = self.links.get() {
            return Ok(table);
        }
        let table = self.tx.open_multimap_table(LINKS)?;
        Ok(self.links.get_or_init(|| table))
    }

    pub fn source(&self, row: &str) -> Result<Option<StoredSource>, StoreError> {
        let value = self.sources()?.get(row)?;
        value.map(|v| decode_source(row, v.value())).transpose()
    }

    /// Row keys reachable by one link key, in key order.
    pub fn linked_rows(&self, link: &str) -> Result<Vec<String>, StoreError> {
        let mut rows = Vec::new();
        for value in self.links()?.get(link)? {
            rows.push(value?.value().to_owned());
        }
        Ok(rows)
    }

    /// Live (not deleted) source records reachable by one link key.
    pub fn linked_sources(&self, link: &str) -> Result<Vec<StoredSource>, StoreError> {
        let mut sources = Vec::new();
        for row in self.linked_rows(link)? {
            if let Some(source) = self.source(&row)? {
                if !source.deleted {
                    sources.push(source);
                }
            }
        }
        Ok(sources)
    }

    pub fn receipt(&self, batch_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.tx.open_table(RECEIPTS)?;
        let value = table.get(batch_id)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The highest change sequence number written so far.
    pub fn change_seq(&self) -> Result<u64, StoreError> {
        let meta = self.tx.open_table(META)?;
        let value = meta.get(META_CHANGE_SEQ)?;
        Ok(value
            .map(|v| decode_u64(v.value()))
            .transpose()?
            .unwrap_or(0))
    }

    /// Changes after `after`, at most `limit`, as (sequence, entity id).
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let table = self.tx.open_table(CHANGES)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, entity) = entry?;
            out.push((seq.value(), entity.value().to_owned()));
        }
        Ok(out)
    }

    /// Meta entries whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let table = self.tx.open_table(META)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), value.value().to_vec()));
        }
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
        let table = self.tx.open_table(QUARANTINE)?;
        let prefix = format!("{}/", department.code());
        let start = match after_id {
            Some(id) => format!("{prefix}{id}\u{1}"),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..)? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(&prefix) {
                break;
            }
            let entry: QuarantineEntry =
                serde_json::from_slice(value.value()).map_err(|err| StoreError::Corrupt {
                    key: key.to_owned(),
                    reason: err.to_string(),
                })?;
            if include_resolved || entry.resolved.is_none() {
                out.push(entry);
                if out.len() >= limit {
                    break;
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
        let table = self.tx.open_table(SOURCES)?;
        let marker = format!("/{}/", kind.as_str());
        for entry in table.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.contains(&marker) {
                continue;
            }
            let source = decode_source(key, value.value())?;
            if source.kind == kind && !source.deleted {
                f(source);
            }
        }
        Ok(())
    }

    /// Number of source records stored (live and tombstones).
    /// Source rows per department code (tombstones included: what each department has
    /// sent), counted from the row keys alone.
    pub fn rows_per_department(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let table = self.tx.open_table(SOURCES)?;
        let mut counts = std::collections::BTreeMap::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            if let Some((department, _)) = key.value().split_once('/') {
                *counts.entry(department.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    pub fn source_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        Ok(self.tx.open_table(SOURCES)?.len()?)
    }

    /// Row keys starting with `prefix` (e.g. `gongan/`) strictly after `after`, at most
    /// `limit`, in key order: a resumable walk over one department's rows.
    pub fn source_keys_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let table = self.tx.open_table(SOURCES)?;
        let start = after.unwrap_or(prefix);
        let mut keys = Vec::new();
        for entry in table.range(start..)? {
            let (key, _) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            if Some(key) != after {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn put_replaces_links_and_records_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = source("GA-1", &["entity:r_GA-1", "blind:a"]);
        store.write(|w| w.put_source(&first, None)).unwrap();
        let second = source("GA-1", &["entity:r_GA-1", "blind:b"]);
        store
            .write(|w| w.put_source(&second, Some(&first)))
            .unwrap();
        let reader = store.read().unwrap();
        assert!(reader.linked_rows("blind:a").unwrap().is_empty());
        assert_eq!(
            reader.linked_rows("blind:b").unwrap(),
            vec!["gongan/resident/GA-1"]
        );
        assert_eq!(reader.change_seq().unwrap(), 2);
        let stored = reader.source("gongan/resident/GA-1").unwrap().unwrap();
        assert_eq!(stored.sealed["name"], vec![9, 8, 7]);
    }

    #[test]
    fn failed_batch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let result: Result<(), StoreError> = store.write(|w| {
            w.put_source(&source("GA-2", &["entity:x"]), None)?;
            Err(StoreError::Corrupt {
                key: "k".into(),
                reason: "abort".into(),
            })
        });
        assert!(result.is_err());
        assert!(store
            .read()
            .unwrap()
            .source("gongan/resident/GA-2")
            .unwrap()
            .is_none());
    }

    #[test]
    fn refuses_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|w| w.put_meta(META_FORMAT, &(STORE_FORMAT_VERSION + 1).to_be_bytes()))
                .unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::NewerFormat { .. })
        ));
    }

    #[test]
    fn a_format_1_store_with_json_rows_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let old = source("GA-3", &["entity:r_GA-3"]);
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|w| {
                    w.put_meta(META_FORMAT, &1u32.to_be_bytes())?;
                    let json = serde_json::to_vec(&old).unwrap();
                    w.tx.open_table(SOURCES)?
                        .insert(old.key().as_str(), json.as_slice())?;
                    Ok::<_, StoreError>(())
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.meta(META_FORMAT).unwrap().unwrap(),
            STORE_FORMAT_VERSION.to_be_bytes()
        );
        let read = store.read().unwrap().source(&old.key()).unwrap().unwrap();
        assert_eq!(read.sealed, old.sealed);
        assert_eq!(read.received_at, old.received_at);
        store.write(|w| w.put_source(&read, Some(&old))).unwrap();
        let raw = store
            .read()
            .unwrap()
            .tx
            .open_table(SOURCES)
            .unwrap()
            .get(old.key().as_str())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        assert_eq!(raw[0], crate::row::MARKER);
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
    fn compaction_refuses_a_store_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _running = Store::open(&path).unwrap();
        assert!(compact(&path).is_err());
    }
}
