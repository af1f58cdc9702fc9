//! Moving a store to another engine (`safegrid migrate`: an embedded data directory into
//! PostgreSQL), verified before it is reported done.
//!
//! Guarantees:
//! - The target must be empty; the copy is one write transaction on it, so a failed or
//!   interrupted migration leaves it empty and can simply be run again.
//! - Done means checked: the target's entries, read back, digest to the same SHA-256 as the
//!   source's (every key and value of every table, and every change, in order); the links of a
//!   sample of rows are there; and the sealed fields of that sample open with the key ring the
//!   target now holds (so the master key given is the one the data was sealed under).
//! - Ciphertext moves as it is: nothing is opened except the sample, and nothing opened is
//!   written anywhere.

use std::collections::BTreeMap;

use ring::digest::{Context, SHA256};

use crate::crypto::{FieldContext, MasterKey};
use crate::keys::load_key_ring;
use crate::progress::Progress;
use crate::store::{is_indexed_link, ExportedEntry, Store, StoreError, StoreReader, Table};

/// Entries written per bulk statement.
const BATCH: usize = 2_000;
/// Rows whose links and sealed fields are checked after the copy (spread over the store).
const SAMPLE: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the target store is not empty ({0}); migrate into an empty database or schema")]
    TargetNotEmpty(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
}

/// What a migration copied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Entries per table name (`meta`, `sources`, `receipts`, `quarantine`, `changes`).
    pub entries: BTreeMap<&'static str, u64>,
    /// Source rows per department code.
    pub rows_per_department: BTreeMap<String, u64>,
    /// The highest change number, the same on both sides.
    pub change_seq: u64,
    /// SHA-256 of everything copied, hex; the same on both sides.
    pub digest: String,
    /// Rows whose links and sealed fields were checked, and the fields opened.
    pub sampled_rows: u64,
    pub opened_fields: u64,
}

/// Copies everything of `source` into the empty `target` and verifies it (see the module).
pub fn migrate(
    source: &Store,
    target: &Store,
    master: &MasterKey,
    progress: &dyn Progress,
) -> Result<Migration, MigrateError> {
    let snapshot = source.read()?;
    check_empty(&target.read()?)?;
    // The master key must open the source's wrapped keys before anything is copied.
    for (key, wrapped) in snapshot.meta_with_prefix("keys/")? {
        let label = &key["keys/".len()..];
        master.unwrap_bytes(&wrapped, label).map_err(|_| {
            MigrateError::Verify(format!(
                "the master key does not open the store's key {label}: give the master key this \
                 data directory was sealed under (--master-key)"
            ))
        })?;
    }
    let total = snapshot.source_count()?;
    progress.stage("copying");
    progress.set_total(total);
    target.write(|w| -> Result<(), MigrateError> {
        // The target's own format entry is replaced by the source's (the same version: the
        // source was upgraded when it was opened).
        let mut batch = Vec::with_capacity(BATCH);
        snapshot.export(|entry| {
            if matches!(
                entry,
                ExportedEntry::Value {
                    table: Table::Sources,
                    ..
                }
            ) {
                progress.advance(1);
            }
            batch.push(entry);
            if batch.len() >= BATCH {
                w.import_batch(&batch)?;
                batch.clear();
            }
            Ok(())
        })?;
        w.import_batch(&batch)?;
        Ok(())
    })?;

    progress.stage("verifying");
    let copied = target.read()?;
    let (digest, entries) = summarize(&snapshot, false)?;
    let (target_digest, target_entries) = summarize(&copied, false)?;
    if digest != target_digest || entries != target_entries {
        return Err(MigrateError::Verify(format!(
            "the target's entries differ from the source's (source {entries:?}, target {target_entries:?})"
        )));
    }
    let change_seq = snapshot.change_seq()?;
    if copied.change_seq()? != change_seq {
        return Err(MigrateError::Verify(
            "the change sequence differs".to_owned(),
        ));
    }
    let rows_per_department = snapshot.rows_per_department()?;
    if copied.rows_per_department()? != rows_per_department {
        return Err(MigrateError::Verify(
            "the rows per department differ".to_owned(),
        ));
    }
    drop(copied);
    let (sampled_rows, opened_fields) = check_sample(&snapshot, target, master, total)?;
    Ok(Migration {
        entries,
        rows_per_department,
        change_seq,
        digest,
        sampled_rows,
        opened_fields,
    })
}

fn check_empty(target: &StoreReader) -> Result<(), MigrateError> {
    let rows = target.source_count()?;
    let changes = target.change_seq()?;
    let mut other = 0u64;
    target.export(|entry| {
        // A store just created holds its format version and nothing else.
        if !matches!(&entry, ExportedEntry::Value { table: Table::Meta, key, .. } if key == "format_version")
        {
            other += 1;
        }
        Ok(())
    })?;
    if rows > 0 || changes > 0 || other > 0 {
        return Err(MigrateError::TargetNotEmpty(format!(
            "{rows} source rows, {changes} changes, {other} entries"
        )));
    }
    Ok(())
}

/// SHA-256 over every exported entry in order, and the entries per table; with
/// `rows_decoded`, source rows count as what they decode to (in today's layout), not as the
/// bytes stored.
pub(crate) fn summarize(
    reader: &StoreReader,
    rows_decoded: bool,
) -> Result<(String, BTreeMap<&'static str, u64>), StoreError> {
    let mut digest = Context::new(&SHA256);
    let mut counts = BTreeMap::new();
    reader.export(|entry| {
        let name = match &entry {
            ExportedEntry::Value { table, key, value } => {
                let reencoded;
                let value = if rows_decoded && *table == Table::Sources {
                    reencoded = crate::row::encode(&crate::row::decode(key, value)?);
                    &reencoded
                } else {
                    value
                };
                for part in [key.as_bytes(), value.as_slice()] {
                    digest.update(&(part.len() as u64).to_be_bytes());
                    digest.update(part);
                }
                table.name()
            }
            ExportedEntry::Change { seq, entity } => {
                digest.update(&seq.to_be_bytes());
                digest.update(&(entity.len() as u64).to_be_bytes());
                digest.update(entity.as_bytes());
                "changes"
            }
        };
        digest.update(name.as_bytes());
        *counts.entry(name).or_insert(0) += 1;
        Ok(())
    })?;
    Ok((hex::encode(digest.finish()), counts))
}

/// Checks the links and opens the sealed fields of a sample of rows spread over the store.
fn check_sample(
    source: &StoreReader,
    target: &Store,
    master: &MasterKey,
    total: u64,
) -> Result<(u64, u64), MigrateError> {
    let keys = load_key_ring(target, master)?;
    let copied = target.read()?;
    let step = (total / SAMPLE).max(1);
    let (mut index, mut sampled, mut opened) = (0u64, 0u64, 0u64);
    let mut after: Option<String> = None;
    loop {
        let page = source.source_keys_after("", after.as_deref(), 1024)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for row in page {
            index += 1;
            if (index - 1) % step != 0 {
                continue;
            }
            let stored = copied
                .source(&row)?
                .ok_or_else(|| MigrateError::Verify(format!("row {row} is missing")))?;
            for link in stored.links.iter().filter(|l| is_indexed_link(l)) {
                if !copied.linked_rows(link)?.contains(&row) {
                    return Err(MigrateError::Verify(format!(
                        "row {row} is not reachable by one of its links"
                    )));
                }
            }
            for (field, sealed) in &stored.sealed {
                let ctx = FieldContext {
                    department: stored.department,
                    row: &row,
                    field,
                };
                keys.open(ctx, sealed).map_err(|_| {
                    MigrateError::Verify(format!(
                        "field {field} of row {row} does not open: is this the master key the \
                         data was sealed under?"
                    ))
                })?;
                opened += 1;
            }
            sampled += 1;
        }
    }
    Ok((sampled, opened))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use model::record::Version;
    use model::{Department, RecordKind};

    use super::*;
    use crate::progress::Silent;
    use crate::store::{test_postgres, QuarantineEntry, StoredSource};

    const ID18: &str = "110105198001011234";

    /// An embedded store with keys, sealed rows and their links, a tombstone, a quarantined
    /// record, a receipt and changes.
    fn filled(dir: &std::path::Path, master: &MasterKey) -> Store {
        let store = Store::open(&dir.join("store.redb")).unwrap();
        let keys = load_key_ring(&store, master).unwrap();
        store
            .write(|w| {
                for i in 0..30 {
                    let department = if i % 3 == 0 {
                        Department::Minzheng
                    } else {
                        Department::Gongan
                    };
                    let source_id = format!("S-{i:03}");
                    let row = StoredSource::row_key(department, RecordKind::Resident, &source_id);
                    let mut sealed = BTreeMap::new();
                    for (field, value) in [("id_number", ID18), ("name", "欧阳明轩")] {
                        let ctx = FieldContext {
                            department,
                            row: &row,
                            field,
                        };
                        sealed.insert(field.to_owned(), keys.seal(ctx, value.as_bytes()).unwrap());
                    }
                    let source = StoredSource {
                        kind: RecordKind::Resident,
                        department,
                        source_id,
                        version: Version::Counter(1),
                        deleted: i == 7,
                        identified: true,
                        entity: format!("r_{}", i / 2),
                        grid: Some("110105001001003".to_owned()),
                        received_at: Utc::now(),
                        batch_id: "b1".to_owned(),
                        digest: vec![i as u8],
                        clear: BTreeMap::new(),
                        sealed,
                        links: vec![format!("entity:r_{}", i / 2), "house:h1".to_owned()],
                    };
                    w.put_source(&source, None)?;
                }
                w.put_receipt("b1", br#"{"accepted":30}"#)?;
                // A secret that is not a data key (the audit checkpoint key is one).
                let secret = master.wrap_bytes(&[5u8; 83], "audit-checkpoint/1").unwrap();
                w.put_meta("keys/audit-checkpoint/1", &secret)?;
                w.put_quarantine(&QuarantineEntry {
                    id: "q1".to_owned(),
                    department: Department::Gongan,
                    batch_id: "b1".to_owned(),
                    source_file: None,
                    line: 3,
                    code: "id_number_check".to_owned(),
                    field: Some("id_number".to_owned()),
                    message: "m".to_owned(),
                    source_id: Some("S-999".to_owned()),
                    received_at: Utc::now(),
                    sealed_raw: vec![1, 2],
                    resolved: None,
                    scope: Vec::new(),
                })
            })
            .unwrap();
        store
    }

    #[test]
    fn an_embedded_store_moves_to_postgres_whole_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::for_tests(7);
        let source = filled(dir.path(), &master);
        let target = Store::connect(&test_postgres::options()).unwrap();
        let done = migrate(&source, &target, &master, &Silent).unwrap();
        assert_eq!(done.entries["sources"], 30);
        assert_eq!(done.entries["changes"], 30);
        assert_eq!(done.entries["receipts"], 1);
        assert_eq!(done.entries["quarantine"], 1);
        assert_eq!(done.rows_per_department["gongan"], 20);
        assert_eq!(done.rows_per_department["minzheng"], 10);
        assert_eq!(done.change_seq, 30);
        assert_eq!(done.sampled_rows, 30);
        assert_eq!(done.opened_fields, 60);

        let copied = target.read().unwrap();
        let original = source.read().unwrap();
        assert_eq!(
            copied.linked_rows("house:h1").unwrap(),
            original.linked_rows("house:h1").unwrap()
        );
        assert_eq!(copied.linked_sources("entity:r_3").unwrap().len(), 1);
        assert_eq!(copied.changes_after(25, 10).unwrap().len(), 5);
        assert_eq!(
            copied.receipt("b1").unwrap(),
            original.receipt("b1").unwrap()
        );
        let q = copied
            .quarantine(Department::Gongan, None, false, 10)
            .unwrap();
        assert_eq!(q.len(), 1);
        // The quarantine-by-source index came along: a good version closes the entry.
        let closed = target
            .write(|w| w.resolve_quarantine(Department::Gongan, "S-999", "reingested"))
            .unwrap();
        assert_eq!(closed, 1);
        // And writes continue the change sequence where the source left it.
        let row = copied.source("gongan/resident/S-001").unwrap().unwrap();
        target.write(|w| w.put_source(&row, Some(&row))).unwrap();
        assert_eq!(target.read().unwrap().change_seq().unwrap(), 31);
    }

    #[test]
    fn a_second_run_into_a_filled_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::for_tests(7);
        let source = filled(dir.path(), &master);
        let options = test_postgres::options();
        let target = Store::connect(&options).unwrap();
        migrate(&source, &target, &master, &Silent).unwrap();
        let again = Store::connect(&options).unwrap();
        let err = migrate(&source, &again, &master, &Silent).unwrap_err();
        assert!(matches!(err, MigrateError::TargetNotEmpty(_)), "{err}");
        assert_eq!(again.read().unwrap().source_count().unwrap(), 30);
    }

    #[test]
    fn the_wrong_master_key_is_refused_before_anything_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let source = filled(dir.path(), &MasterKey::for_tests(7));
        let target = Store::connect(&test_postgres::options()).unwrap();
        let err = migrate(&source, &target, &MasterKey::for_tests(8), &Silent).unwrap_err();
        assert!(err.to_string().contains("master key"), "{err}");
        let copied = target.read().unwrap();
        assert_eq!(copied.source_count().unwrap(), 0);
        assert!(copied.meta_with_prefix("keys/").unwrap().is_empty());
    }
}
