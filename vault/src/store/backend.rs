//! What a storage engine gives the store: named tables of byte values under string keys in
//! byte order, two sets of members under a key, and the change sequence — read in a consistent
//! snapshot, written in one atomic, durable transaction. Everything the store means by its
//! rows (encoding, links, change numbers, quarantine) is built on this in `store/mod.rs`, once
//! for both engines.

use super::StoreError;

/// Members with their values in a table (`None` where a member has none).
pub(crate) type MembersWithValues = Vec<(String, Option<Vec<u8>>)>;

/// Tables of byte values under string keys (named by [`super::ExportedEntry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Meta,
    Sources,
    Receipts,
    Quarantine,
}

impl Table {
    /// The table's name (a PostgreSQL table, a line of a migration report).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Sources => "sources",
            Table::Receipts => "receipts",
            Table::Quarantine => "quarantine",
        }
    }
}

/// Sets of string members under string keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Members {
    Links,
    QuarantineBySource,
}

/// A consistent snapshot (or the view inside a write transaction, its own writes included).
pub(crate) trait Snapshot: Send {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Members of `key`, in byte order.
    fn members(&self, set: Members, key: &str) -> Result<Vec<String>, StoreError>;

    /// The members of `key` with their values in `table` (`None` where a member has none), in
    /// the members' order: a profile's rows in one read. An engine with round trips overrides
    /// it with one statement.
    fn members_with_values(
        &self,
        set: Members,
        key: &str,
        table: Table,
    ) -> Result<MembersWithValues, StoreError> {
        self.members(set, key)?
            .into_iter()
            .map(|member| {
                let value = self.get(table, &member)?;
                Ok((member, value))
            })
            .collect()
    }

    /// Entries whose key starts with `prefix` and sorts strictly after `after` (if given), at
    /// most `limit`, in byte order of their keys; values empty unless `with_values`.
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        with_values: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Changes numbered after `after`, at most `limit`, in order.
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError>;

    fn len(&self, table: Table) -> Result<u64, StoreError>;
}

/// One write transaction: nothing of it is visible to others before [`Transaction::commit`]
/// returns `Ok`, and after that it survives a crash. Dropped without a commit, it is rolled
/// back.
pub(crate) trait Transaction: Snapshot {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes an entry; true if it existed.
    fn remove(&mut self, table: Table, key: &str) -> Result<bool, StoreError>;

    fn add_member(&mut self, set: Members, key: &str, member: &str) -> Result<(), StoreError>;

    fn remove_member(&mut self, set: Members, key: &str, member: &str) -> Result<(), StoreError>;

    fn put_change(&mut self, seq: u64, entity: &str) -> Result<(), StoreError>;

    /// Many entries of one table at once (a bulk copy); an engine with round trips overrides
    /// it with one statement.
    fn put_many(&mut self, table: Table, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, value) in entries {
            self.put(table, key, value)?;
        }
        Ok(())
    }

    /// Many members at once, as (key, member).
    fn add_members(&mut self, set: Members, pairs: &[(String, String)]) -> Result<(), StoreError> {
        for (key, member) in pairs {
            self.add_member(set, key, member)?;
        }
        Ok(())
    }

    /// `member` out of the sets of the keys `removed` and into those of `added` (one row's
    /// links changing); an engine that pays for opening a table per call overrides it.
    fn swap_member(
        &mut self,
        set: Members,
        member: &str,
        removed: &[&str],
        added: &[&str],
    ) -> Result<(), StoreError> {
        for key in removed {
            self.remove_member(set, key, member)?;
        }
        for key in added {
            self.add_member(set, key, member)?;
        }
        Ok(())
    }

    /// Many changes at once.
    fn put_changes(&mut self, changes: &[(u64, String)]) -> Result<(), StoreError> {
        for (seq, entity) in changes {
            self.put_change(*seq, entity)?;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A storage engine.
pub(crate) trait Engine: Send + Sync {
    /// `embedded` or `postgres`.
    fn name(&self) -> &'static str;

    fn begin_write(&self) -> Result<Box<dyn Transaction>, StoreError>;
    fn begin_read(&self) -> Result<Box<dyn Snapshot + Sync>, StoreError>;

    /// The embedded engine, for what only it does (compaction).
    fn as_embedded(&self) -> Option<&super::embedded::Embedded> {
        None
    }

    /// The access log several brokers share, where the engine keeps one (PostgreSQL).
    fn shared_log(&self) -> Option<&dyn SharedLogEngine> {
        None
    }

    /// Calls `wake` when another process commits changes to the same store (PostgreSQL:
    /// LISTEN/NOTIFY). A wake-up only: followers still read from their cursors.
    fn watch_remote_commits(&self, _wake: std::sync::Arc<dyn Fn() + Send + Sync>) {}
}

/// An append-only log of opaque entries at contiguous positions from 0, shared by every
/// broker of a store, with the signed checkpoints over it and the lease of the one broker
/// that signs them. Its own lock, not the store's write lock: an access is logged without
/// waiting for a batch being stored.
pub(crate) trait SharedLogEngine: Send + Sync {
    /// Under the log head's lock: asks `encode` for the entries given the first free
    /// position, stores them at the positions from there and commits. Returns that first
    /// position.
    fn append(&self, encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>) -> Result<u64, StoreError>;

    /// Entries from position `from`, at most `limit`, in order.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The number of entries.
    fn len(&self) -> Result<u64, StoreError>;

    /// Keeps a signed checkpoint (the first one kept for a size stays).
    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError>;

    /// Checkpoints over more than `size` entries, smallest first.
    fn checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, StoreError>;

    /// Takes or renews the signing lease for `holder` for `seconds`, by the database's
    /// clock; `true` if `holder` has it now.
    fn lead(&self, holder: &str, seconds: u32) -> Result<bool, StoreError>;

    /// Gives the lease up, if `holder` has it.
    fn release(&self, holder: &str) -> Result<(), StoreError>;
}
