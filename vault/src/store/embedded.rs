//! The embedded engine: one redb file. A write transaction commits with
//! `Durability::Immediate` (fsync), so a batch that returned `Ok` survives `kill -9` and power
//! loss; writers take turns, readers never wait.

use std::path::Path;
use std::sync::OnceLock;

use redb::{
    Database, MultimapTableDefinition, ReadOnlyMultimapTable, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::backend::{Engine, Members, Snapshot, Table, Transaction};
use super::StoreError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// row key (`department/kind/source_id`) -> the row in the binary encoding of [`crate::row`].
const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
/// batch id -> receipt JSON.
const RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("receipts");
/// `department/reject id` -> quarantine entry as JSON.
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
/// link key (`entity:…`, `house:…`, `party:…`, …) -> row keys.
const LINKS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("links");
/// `department/source_id` -> reject ids.
const QUARANTINE_BY_SOURCE: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("quarantine_by_source");
/// change sequence number -> unified entity id whose view changed.
const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("changes");

fn table(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match table {
        Table::Meta => META,
        Table::Sources => SOURCES,
        Table::Receipts => RECEIPTS,
        Table::Quarantine => QUARANTINE,
    }
}

fn set(set: Members) -> MultimapTableDefinition<'static, &'static str, &'static str> {
    match set {
        Members::Links => LINKS,
        Members::QuarantineBySource => QUARANTINE_BY_SOURCE,
    }
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
    redb::SetDurabilityError,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

pub(crate) struct Embedded {
    db: Database,
}

impl Embedded {
    /// Opens or creates the file and every table.
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<Embedded, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let tx = db.begin_write()?;
        for definition in [META, SOURCES, RECEIPTS, QUARANTINE] {
            tx.open_table(definition)?;
        }
        tx.open_multimap_table(LINKS)?;
        tx.open_multimap_table(QUARANTINE_BY_SOURCE)?;
        tx.open_table(CHANGES)?;
        tx.commit()?;
        Ok(Embedded { db })
    }

    /// Rewrites the file without its free pages; false once nothing more can be gained.
    pub(crate) fn compact(&mut self) -> Result<bool, StoreError> {
        Ok(self.db.compact()?)
    }

    /// Copies every entry of every table, in key order, into the empty `target`, `chunk`
    /// entries per transaction with each table opened once per transaction (so that B-tree
    /// leaves are filled from left to right and come out full), passing each source row
    /// through `row` (row key, stored bytes -> bytes to store) and reporting each to
    /// `progress`; entries an older broker made for row-only links are left behind. Only the
    /// last transaction is made durable; the caller checks the copy before using it.
    pub(crate) fn copy_into(
        &self,
        target: &Embedded,
        chunk: usize,
        row: &RowRewrite<'_>,
        progress: &dyn crate::progress::Progress,
    ) -> Result<(), StoreError> {
        let chunk = chunk.max(1);
        let read = self.db.begin_read()?;
        for (definition, is_sources) in [
            (META, false),
            (SOURCES, true),
            (RECEIPTS, false),
            (QUARANTINE, false),
        ] {
            let source = read.open_table(definition)?;
            let mut entries = source.iter()?;
            in_chunks(&target.db, |tx| {
                let mut table = tx.open_table(definition)?;
                for _ in 0..chunk {
                    let Some(entry) = entries.next() else {
                        return Ok(false);
                    };
                    let (key, value) = entry?;
                    let (key, value) = (key.value(), value.value());
                    if is_sources {
                        progress.advance(1);
                        table.insert(key, row(key, value)?.as_slice())?;
                    } else {
                        table.insert(key, value)?;
                    }
                }
                Ok(true)
            })?;
        }
        let source = read.open_table(CHANGES)?;
        let mut entries = source.iter()?;
        in_chunks(&target.db, |tx| {
            let mut table = tx.open_table(CHANGES)?;
            for _ in 0..chunk {
                let Some(entry) = entries.next() else {
                    return Ok(false);
                };
                let (seq, entity) = entry?;
                table.insert(seq.value(), entity.value())?;
            }
            Ok(true)
        })?;
        for (definition, is_links) in [(LINKS, true), (QUARANTINE_BY_SOURCE, false)] {
            let source = read.open_multimap_table(definition)?;
            let mut keys = source.iter()?;
            // The key being copied and its members not copied yet (a key's members may
            // span transactions).
            let mut current: Option<(String, redb::MultimapValue<'_, &'static str>)> = None;
            in_chunks(&target.db, |tx| {
                let mut table = tx.open_multimap_table(definition)?;
                let mut copied = 0;
                while copied < chunk {
                    if let Some((key, members)) = current.as_mut() {
                        if let Some(member) = members.next() {
                            table.insert(key.as_str(), member?.value())?;
                            copied += 1;
                            continue;
                        }
                    }
                    let Some(entry) = keys.next() else {
                        return Ok(false);
                    };
                    let (key, members) = entry?;
                    let key = key.value();
                    current = (!is_links || super::is_indexed_link(key))
                        .then(|| (key.to_owned(), members));
                }
                Ok(true)
            })?;
        }
        // What the transactions without an fsync wrote becomes durable with this one.
        target.db.begin_write()?.commit()?;
        Ok(())
    }

    /// SHA-256 over every (link, row) entry in order, and their number; entries of row-only
    /// links (which an older broker made) are left out.
    pub(crate) fn links_digest(&self) -> Result<(Vec<u8>, u64), StoreError> {
        let read = self.db.begin_read()?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut count = 0u64;
        for entry in read.open_multimap_table(LINKS)?.iter()? {
            let (key, members) = entry?;
            if !super::is_indexed_link(key.value()) {
                continue;
            }
            for member in members {
                for part in [key.value(), member?.value()] {
                    digest.update(&(part.len() as u64).to_be_bytes());
                    digest.update(part.as_bytes());
                }
                count += 1;
            }
        }
        Ok((digest.finish().as_ref().to_vec(), count))
    }
}

/// What [`Embedded::copy_into`] does to each source row: (row key, stored bytes) -> the bytes
/// to store.
pub(crate) type RowRewrite<'a> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, StoreError> + 'a;

/// Runs `fill` in one write transaction after another, each committed without an fsync,
/// until it returns false (the source is exhausted).
fn in_chunks(
    db: &Database,
    mut fill: impl FnMut(&WriteTransaction) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    loop {
        let mut tx = db.begin_write()?;
        tx.set_durability(redb::Durability::None)?;
        let more = fill(&tx)?;
        tx.commit()?;
        if !more {
            return Ok(());
        }
    }
}

impl Engine for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn begin_write(&self) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(Writer(self.db.begin_write()?)))
    }

    fn begin_read(&self) -> Result<Box<dyn Snapshot + Sync>, StoreError> {
        Ok(Box::new(Reader {
            tx: self.db.begin_read()?,
            sources: OnceLock::new(),
            links: OnceLock::new(),
        }))
    }

    fn as_embedded(&self) -> Option<&Embedded> {
        Some(self)
    }
}

/// A read snapshot.
struct Reader {
    tx: ReadTransaction,
    /// The two tables every profile reads, opened once per snapshot: opening a table looks
    /// its root up in the transaction's table tree, a B-tree descent of its own, and a
    /// profile reads them a dozen times.
    sources: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    links: OnceLock<ReadOnlyMultimapTable<&'static str, &'static str>>,
}

impl Reader {
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
}

impl Snapshot for Reader {
    fn get(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if t == Table::Sources {
            return Ok(self.sources()?.get(key)?.map(|v| v.value().to_vec()));
        }
        get(&self.tx.open_table(table(t))?, key)
    }

    fn members(&self, s: Members, key: &str) -> Result<Vec<String>, StoreError> {
        if s == Members::Links {
            return members(self.links()?, key);
        }
        members(&self.tx.open_multimap_table(set(s))?, key)
    }

    fn scan(
        &self,
        t: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        with_values: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        scan(
            &self.tx.open_table(table(t))?,
            prefix,
            after,
            limit,
            with_values,
        )
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        changes_after(&self.tx.open_table(CHANGES)?, after, limit)
    }

    fn len(&self, t: Table) -> Result<u64, StoreError> {
        Ok(self.tx.open_table(table(t))?.len()?)
    }
}

/// A write transaction (redb aborts it when dropped uncommitted).
struct Writer(WriteTransaction);

impl Snapshot for Writer {
    fn get(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(&self.0.open_table(table(t))?, key)
    }

    fn members(&self, s: Members, key: &str) -> Result<Vec<String>, StoreError> {
        members(&self.0.open_multimap_table(set(s))?, key)
    }

    fn scan(
        &self,
        t: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        with_values: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        scan(
            &self.0.open_table(table(t))?,
            prefix,
            after,
            limit,
            with_values,
        )
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        changes_after(&self.0.open_table(CHANGES)?, after, limit)
    }

    fn len(&self, t: Table) -> Result<u64, StoreError> {
        Ok(self.0.open_table(table(t))?.len()?)
    }
}

impl Transaction for Writer {
    fn put(&mut self, t: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0.open_table(table(t))?.insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, t: Table, key: &str) -> Result<bool, StoreError> {
        Ok(self.0.open_table(table(t))?.remove(key)?.is_some())
    }

    fn add_member(&mut self, s: Members, key: &str, member: &str) -> Result<(), StoreError> {
        self.0.open_multimap_table(set(s))?.insert(key, member)?;
        Ok(())
    }

    fn remove_member(&mut self, s: Members, key: &str, member: &str) -> Result<(), StoreError> {
        self.0.open_multimap_table(set(s))?.remove(key, member)?;
        Ok(())
    }

    fn put_change(&mut self, seq: u64, entity: &str) -> Result<(), StoreError> {
        self.0.open_table(CHANGES)?.insert(seq, entity)?;
        Ok(())
    }

    /// Opens the set's table once: opening one is a lookup in the transaction's table tree
    /// and closing it a write there, a third of the cost of an insert (ingest profile,
    /// BENCHMARKS.md).
    fn swap_member(
        &mut self,
        s: Members,
        member: &str,
        removed: &[&str],
        added: &[&str],
    ) -> Result<(), StoreError> {
        if removed.is_empty() && added.is_empty() {
            return Ok(());
        }
        let mut table = self.0.open_multimap_table(set(s))?;
        for key in removed {
            table.remove(*key, member)?;
        }
        for key in added {
            table.insert(*key, member)?;
        }
        Ok(())
    }

    fn add_members(&mut self, s: Members, pairs: &[(String, String)]) -> Result<(), StoreError> {
        let mut table = self.0.open_multimap_table(set(s))?;
        for (key, member) in pairs {
            table.insert(key.as_str(), member.as_str())?;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.commit()?;
        Ok(())
    }
}

fn get(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

fn members(
    table: &impl ReadableMultimapTable<&'static str, &'static str>,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for value in table.get(key)? {
        out.push(value?.value().to_owned());
    }
    Ok(out)
}

fn scan(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    with_values: bool,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let start = match after {
        Some(after) if after > prefix => after,
        _ => prefix,
    };
    let mut out = Vec::new();
    for entry in table.range(start..)? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = entry?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        if Some(key) == after {
            continue;
        }
        let value = if with_values {
            value.value().to_vec()
        } else {
            Vec::new()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn changes_after(
    table: &impl ReadableTable<u64, &'static str>,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, String)>, StoreError> {
    let mut out = Vec::new();
    let Some(first) = after.checked_add(1) else {
        return Ok(out);
    };
    for entry in table.range(first..)?.take(limit) {
        let (seq, entity) = entry?;
        out.push((seq.value(), entity.value().to_owned()));
    }
    Ok(out)
}
