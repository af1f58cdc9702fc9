//! Key rotation: a new data-key version per department, the resumable re-encryption of that
//! department's sealed fields to it, and master-key rotation (re-wrapping the stored keys).
//!
//! Guarantees:
//! - [`rotate_data_key`] adds version `n + 1` of a department's data key; old versions stay
//!   in the store, so every sealed field keeps opening while re-encryption runs.
//! - [`reencrypt`] walks the department's rows in key order in batches; each batch is one
//!   store transaction that re-seals the fields and records the last row key done
//!   (`reencrypt/<department>` in the meta table), so a run stopped at any point resumes
//!   where it stopped: nothing is lost, and nothing is sealed twice (a field already under
//!   the current version is left alone — [`KeyRing::sealed_version`]).
//! - [`rotate_master`] re-wraps every stored key (`keys/…` in the meta table) and the dev
//!   JWT key under the new master key in one transaction; data is untouched. The new master
//!   key is read only from its file, never from the environment.
//! - [`rotate_blind_key`] adds version `n + 1` of the blind-index key. [`reblind`] then
//!   re-computes every resident row's keyed links (`blind:` identifier indexes and linkage
//!   `block:` keys, [`crate::keyed::blind_keyed_links`]) under it, in resumable batches like
//!   re-encryption (`reblind` in the meta table). Until it is done the older keys stay loaded
//!   and candidate lookups try every version, so linking misses nothing mid-rotation; when the
//!   walk ends the older keys are deleted from the store in the same transaction, after which
//!   no stored index can be matched with them. The search index derives its token key from
//!   the current blind-index key, so it is rebuilt from the store on the next start.
//! - [`schedule_renormalisation`]: when the text normalisation changed since the keyed links
//!   were computed (an upgrade), the same resumable [`reblind`] pass re-computes them under
//!   the current key with the new normalisation, scheduled by the first broker start after
//!   the upgrade (before it serves) and run in the background; the version is recorded when
//!   the walk ends (`text/normalisation`). A new store records the version at once. The same
//!   pass re-computes every row's standard-address links (building, compound, premises:
//!   `addr:`, `addrc:`, `addrp:`) when [`ADDRESS_LINKS_VERSION`] changed (`links/address`),
//!   so rows stored before a version that added them are linked like new ones.
//! - Plaintext lives only in zeroized buffers while a field is re-sealed.
//! - [`reencrypt_with_progress`] and [`reblind_with_progress`] report rows to a
//!   [`vault::progress::Progress`]: the rows the run will visit, counted when it starts, and
//!   each batch's rows once it has committed; the functions without it count nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use model::{Department, RecordKind, ResidentRecord};
use serde_json::Value;

use crate::keyed::{blind_keyed_links, is_blind_keyed_link};
use vault::crypto::{CryptoError, FieldContext, KeyRing, MasterKey, SecretKey};
use vault::keys::{blind_index_label, load_key_ring, KeyError, BLIND_INDEX_PREFIX};
use vault::progress::Progress as Report;
use vault::store::{Store, StoreError, StoreWriter};

/// Rows re-sealed per transaction.
pub const BATCH_ROWS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("row {row}, field {field}: {source}")]
    Field {
        row: String,
        field: String,
        source: CryptoError,
    },
    #[error("row {row}: {reason}")]
    Row { row: String, reason: String },
    #[error("{0}")]
    Io(String),
}

/// Progress of one department's re-encryption, kept in the meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// The key version fields are moved to.
    pub target: u32,
    /// The last row key finished; the walk resumes after it.
    pub cursor: Option<String>,
    /// Every row has been visited since the last rotation.
    pub done: bool,
    /// Rows visited and fields re-sealed so far.
    pub rows: u64,
    pub fields: u64,
}

fn progress_key(department: Department) -> String {
    format!("reencrypt/{}", department.code())
}

/// The stored progress of `department`, if a rotation ever happened.
pub fn progress(store: &Store, department: Department) -> Result<Option<Progress>, RotationError> {
    read_progress(store, &progress_key(department))
}

fn read_progress<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<Option<T>, RotationError> {
    let Some(bytes) = store.meta(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        RotationError::Store(StoreError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// The resumable state of a walk over row keys.
pub(crate) trait Walk: Clone + Serialize {
    fn cursor(&self) -> Option<&str>;
    fn set_cursor(&mut self, row: String);
    fn is_done(&self) -> bool;
}

/// Implements [`Walk`] for a progress struct with `cursor: Option<String>` and `done: bool`.
macro_rules! impl_walk {
    ($progress:ty) => {
        impl $crate::rotation::Walk for $progress {
            fn cursor(&self) -> Option<&str> {
                self.cursor.as_deref()
            }
            fn set_cursor(&mut self, row: String) {
                self.cursor = Some(row);
            }
            fn is_done(&self) -> bool {
                self.done
            }
        }
    };
}
pub(crate) use impl_walk;

impl_walk!(Progress);
impl_walk!(ReblindProgress);

/// Walks the row keys under `prefix` after `progress`'s cursor, in batches, until the walk is
/// done, `limit` rows were visited in this run, or `stop` turns true. Each batch is one store
/// transaction: `batch` handles the rows (an empty batch means every row was visited) and the
/// progress, cursor moved past the batch, is saved under `meta_key` in the same transaction.
/// Returns the rows visited in this run.
pub(crate) fn walk<P: Walk>(
    store: &Store,
    prefix: &str,
    meta_key: &str,
    limit: Option<u64>,
    stop: &AtomicBool,
    progress: &mut P,
    batch: impl FnMut(&mut StoreWriter, &[String], &mut P) -> Result<(), RotationError>,
) -> Result<u64, RotationError> {
    walk_reporting(store, prefix, meta_key, limit, stop, progress, None, batch)
}

/// [`walk`], and with a `report`: before the first batch its total is set to the rows this
/// run will visit (those left after the cursor, at most `limit`), and it advances by each
/// batch's rows once the batch has committed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk_reporting<P: Walk>(
    store: &Store,
    prefix: &str,
    meta_key: &str,
    limit: Option<u64>,
    stop: &AtomicBool,
    progress: &mut P,
    report: Option<&dyn Report>,
    mut batch: impl FnMut(&mut StoreWriter, &[String], &mut P) -> Result<(), RotationError>,
) -> Result<u64, RotationError> {
    if let Some(report) = report {
        let left = if progress.is_done() {
            0
        } else {
            rows_left(store, prefix, progress.cursor())?
        };
        report.set_total(limit.map_or(left, |limit| left.min(limit)));
    }
    let mut rows_this_run = 0u64;
    while !progress.is_done() && !stop.load(Ordering::Relaxed) {
        let Some(budget) = batch_budget(limit, rows_this_run) else {
            break;
        };
        let rows = store
            .read()?
            .source_keys_after(prefix, progress.cursor(), budget)?;
        let mut next = progress.clone();
        store.write(|w| -> Result<(), RotationError> {
            batch(w, &rows, &mut next)?;
            if let Some(last) = rows.last() {
                next.set_cursor(last.clone());
            }
            let bytes = serde_json::to_vec(&next).map_err(|e| StoreError::Corrupt {
                key: meta_key.to_owned(),
                reason: e.to_string(),
            })?;
            w.put_meta(meta_key, &bytes)?;
            Ok(())
        })?;
        rows_this_run += rows.len() as u64;
        *progress = next;
        if let Some(report) = report {
            if !rows.is_empty() {
                report.advance(rows.len() as u64);
            }
        }
    }
    Ok(rows_this_run)
}

/// Row keys under `prefix` strictly after `after`, counted in one read snapshot.
fn rows_left(store: &Store, prefix: &str, after: Option<&str>) -> Result<u64, RotationError> {
    let snapshot = store.read()?;
    if prefix.is_empty() && after.is_none() {
        return Ok(snapshot.source_count()?);
    }
    let mut count = 0u64;
    let mut cursor = after.map(str::to_owned);
    loop {
        let keys = snapshot.source_keys_after(prefix, cursor.as_deref(), 4_096)?;
        let Some(last) = keys.last() else {
            return Ok(count);
        };
        count += keys.len() as u64;
        cursor = Some(last.clone());
    }
}

/// Rows the next batch may take: `None` once `limit` rows were done in this run.
fn batch_budget(limit: Option<u64>, done_this_run: u64) -> Option<usize> {
    match limit {
        Some(limit) => {
            let left = limit.saturating_sub(done_this_run);
            (left > 0).then(|| usize::try_from(left).unwrap_or(BATCH_ROWS).min(BATCH_ROWS))
        }
        None => Some(BATCH_ROWS),
    }
}

/// Adds a new data-key version for `department` (new writes use it after the next start)
/// and resets its re-encryption progress. Returns the new version.
pub fn rotate_data_key(
    store: &Store,
    master: &MasterKey,
    department: Department,
) -> Result<u32, RotationError> {
    // Makes sure version 1 (and every other key) exists and opens under this master key.
    load_key_ring(store, master)?;
    let rng = SystemRandom::new();
    store.write(|w| -> Result<u32, RotationError> {
        let mut version = 1;
        while w
            .meta(&format!("keys/data/{}/{}", department.code(), version + 1))?
            .is_some()
        {
            version += 1;
        }
        let next = version + 1;
        let label = format!("data/{}/{next}", department.code());
        let key = SecretKey::generate(&rng)?;
        w.put_meta(&format!("keys/{label}"), &master.wrap(&key, &label)?)?;
        let progress = Progress {
            target: next,
            ..Progress::default()
        };
        w.put_meta(&progress_key(department), &encode(&progress))?;
        Ok(next)
    })
}

fn encode(progress: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(progress).unwrap_or_default()
}

/// What one [`reencrypt`] run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencryptReport {
    pub progress: Progress,
    /// Rows visited in this run.
    pub rows_this_run: u64,
}

/// Moves every sealed field of `department` to its current key version, resuming from the
/// stored cursor. Stops after `limit` rows (if given) or when `stop` turns true, with the
/// progress saved; call again to continue.
pub fn reencrypt(
    store: &Store,
    keys: &KeyRing,
    department: Department,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<ReencryptReport, RotationError> {
    reencrypt_reporting(store, keys, department, limit, stop, None)
}

/// [`reencrypt`], reporting rows to `report`: the total is the department's rows this run
/// will visit (those after the stored cursor, at most `limit`), counted when it starts; each
/// committed batch advances it by its rows.
pub fn reencrypt_with_progress(
    store: &Store,
    keys: &KeyRing,
    department: Department,
    limit: Option<u64>,
    stop: &AtomicBool,
    report: &dyn Report,
) -> Result<ReencryptReport, RotationError> {
    reencrypt_reporting(store, keys, department, limit, stop, Some(report))
}

fn reencrypt_reporting(
    store: &Store,
    keys: &KeyRing,
    department: Department,
    limit: Option<u64>,
    stop: &AtomicBool,
    report: Option<&dyn Report>,
) -> Result<ReencryptReport, RotationError> {
    let current = keys
        .current_version(department)
        .ok_or_else(|| CryptoError::MissingKey {
            department: department.code().to_owned(),
            version: 0,
        })?;
    let prefix = format!("{}/", department.code());
    let mut progress = progress(store, department)?.unwrap_or_default();
    if progress.target != current {
        // A rotation the stored progress does not know about (or none yet): start over.
        progress = Progress {
            target: current,
            ..Progress::default()
        };
    }
    let key = progress_key(department);
    let rows_this_run = walk_reporting(
        store,
        &prefix,
        &key,
        limit,
        stop,
        &mut progress,
        report,
        |w, rows, next| {
            next.done = rows.is_empty();
            for row in rows {
                let Some(old) = w.source(row)? else { continue };
                let mut new = old.clone();
                let mut changed = 0u64;
                let mut failed = false;
                for (field, sealed) in new.sealed.iter_mut() {
                    let Ok(version) = KeyRing::sealed_version(sealed) else {
                        failed = true;
                        break;
                    };
                    if version == current {
                        continue;
                    }
                    let ctx = FieldContext {
                        department: old.department,
                        row,
                        field,
                    };
                    let Ok(plain) = keys.open(ctx, sealed).map(Zeroizing::new) else {
                        failed = true;
                        break;
                    };
                    let Ok(resealed) = keys.seal(ctx, &plain) else {
                        failed = true;
                        break;
                    };
                    *sealed = resealed;
                    changed += 1;
                }
                if failed {
                    // A field that does not open (tampered or moved ciphertext) keeps its row
                    // as it is; the row is listed for the administrator and the pass goes on.
                    crate::problems::record("key_rotation", row, "integrity_error");
                    next.rows += 1;
                    continue;
                }
                if changed > 0 {
                    w.put_source(&new, Some(&old))?;
                }
                next.fields += changed;
                next.rows += 1;
            }
            Ok(())
        },
    )?;
    Ok(ReencryptReport {
        progress,
        rows_this_run,
    })
}

/// Meta key of the blind-index re-computation progress.
const REBLIND_META: &str = "reblind";

/// Progress of the blind-index re-computation, kept in the meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReblindProgress {
    /// The blind-index key version links are moved to.
    pub target: u32,
    /// The last row key finished; the walk resumes after it.
    pub cursor: Option<String>,
    /// Every row has been visited and the older keys are deleted.
    pub done: bool,
    /// Rows visited, and rows whose links were re-computed, so far.
    pub rows: u64,
    pub relinked: u64,
    /// Blind-index versions deleted when the walk finished.
    #[serde(default)]
    pub retired: Vec<u32>,
}

/// The stored blind-index re-computation progress, if a blind-index rotation ever happened.
pub fn reblind_progress(store: &Store) -> Result<Option<ReblindProgress>, RotationError> {
    read_progress(store, REBLIND_META)
}

/// Adds a new blind-index key version (new links use it after the next start) and resets
/// the re-computation progress. Returns the new version.
pub fn rotate_blind_key(store: &Store, master: &MasterKey) -> Result<u32, RotationError> {
    load_key_ring(store, master)?;
    let rng = SystemRandom::new();
    store.write(|w| -> Result<u32, RotationError> {
        let highest = w
            .meta_keys(BLIND_INDEX_PREFIX)?
            .iter()
            .filter_map(|key| key[BLIND_INDEX_PREFIX.len()..].parse::<u32>().ok())
            .max()
            .unwrap_or(1);
        let next = highest + 1;
        let label = blind_index_label(next);
        let key = SecretKey::generate(&rng)?;
        w.put_meta(&format!("keys/{label}"), &master.wrap(&key, &label)?)?;
        let progress = ReblindProgress {
            target: next,
            ..ReblindProgress::default()
        };
        w.put_meta(REBLIND_META, &encode(&progress))?;
        Ok(next)
    })
}

/// What one [`reblind`] run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReblindReport {
    pub progress: ReblindProgress,
    /// Rows visited in this run.
    pub rows_this_run: u64,
}

/// Re-computes the blind-keyed links of every resident row under the current blind-index
/// key, resuming from the stored cursor; when the walk ends, deletes the older blind-index
/// keys. Stops after `limit` rows (if given) or when `stop` turns true, progress saved.
pub fn reblind(
    store: &Store,
    keys: &KeyRing,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<ReblindReport, RotationError> {
    reblind_reporting(store, keys, limit, stop, None)
}

/// [`reblind`], reporting rows to `report`: the total is the rows this run will visit (every
/// row after the stored cursor, at most `limit`), counted when it starts; each committed
/// batch advances it by its rows.
pub fn reblind_with_progress(
    store: &Store,
    keys: &KeyRing,
    limit: Option<u64>,
    stop: &AtomicBool,
    report: &dyn Report,
) -> Result<ReblindReport, RotationError> {
    reblind_reporting(store, keys, limit, stop, Some(report))
}

fn reblind_reporting(
    store: &Store,
    keys: &KeyRing,
    limit: Option<u64>,
    stop: &AtomicBool,
    report: Option<&dyn Report>,
) -> Result<ReblindReport, RotationError> {
    let current = keys.blind_version();
    let mut progress = reblind_progress(store)?.unwrap_or_default();
    if progress.target != current {
        // A rotation the stored progress does not know about: start over.
        progress = ReblindProgress {
            target: current,
            ..ReblindProgress::default()
        };
    }
    let rows_this_run = walk_reporting(
        store,
        "",
        REBLIND_META,
        limit,
        stop,
        &mut progress,
        report,
        |w, rows, next| {
            for row in rows {
                next.rows += 1;
                let Some(stored) = w.source(row)? else {
                    continue;
                };
                if stored.deleted {
                    continue;
                }
                let department = stored.department;
                let resident = stored.kind == RecordKind::Resident;
                // A resident's keyed links need the whole record; the other kinds' only
                // their address.
                let only: Option<&[&str]> = if resident { None } else { Some(&["address"]) };
                // A row that does not open or whose fields cannot be keyed is skipped and
                // listed for the administrator (it keeps its links); the pass goes on.
                let Ok(opened) = crate::resolve::open_source_fields(keys, stored.clone(), only)
                else {
                    crate::problems::record("key_rotation", row, "integrity_error");
                    continue;
                };
                let address = opened
                    .fields
                    .get("address")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let mut links: Vec<String> = stored
                    .links
                    .iter()
                    .filter(|link| {
                        let recomputed = (resident && is_blind_keyed_link(link))
                            || crate::ingest::is_standard_address_link(link);
                        !recomputed
                    })
                    .cloned()
                    .collect();
                let keyed = crate::problems::isolate("key_rotation", row, || {
                    let mut keyed = Vec::new();
                    if resident {
                        let body = serde_json::from_value::<ResidentRecord>(Value::Object(
                            opened.fields.clone(),
                        ))
                        .ok()?;
                        keyed.extend(blind_keyed_links(keys, department, row, &body));
                    }
                    if let Some(address) = &address {
                        keyed.extend(crate::ingest::standard_address_links(
                            keys,
                            stored.kind,
                            address,
                        ));
                    }
                    Some(keyed)
                });
                let keyed = match keyed {
                    Some(Some(keyed)) => keyed,
                    // Not a resident record any more: listed; it keeps its links.
                    Some(None) => {
                        crate::problems::record("key_rotation", row, "failed");
                        continue;
                    }
                    // Panicked: `isolate` listed it.
                    None => continue,
                };
                links.extend(keyed);
                let same = links.len() == stored.links.len()
                    && links.iter().all(|link| stored.links.contains(link));
                if !same {
                    w.replace_links(&stored, links)?;
                    next.relinked += 1;
                }
            }
            if rows.is_empty() {
                // Every row is keyed under the current version: the older keys go.
                for meta_key in w.meta_keys(BLIND_INDEX_PREFIX)? {
                    let Ok(version) = meta_key[BLIND_INDEX_PREFIX.len()..].parse::<u32>() else {
                        continue;
                    };
                    if version != current && w.delete_meta(&meta_key)? {
                        next.retired.push(version);
                    }
                }
                next.done = true;
                w.put_meta(TEXT_META, &encode(&chinese_text::NORMALISATION_VERSION))?;
                w.put_meta(ADDRESS_LINKS_META, &encode(&ADDRESS_LINKS_VERSION))?;
            }
            Ok(())
        },
    )?;
    Ok(ReblindReport {
        progress,
        rows_this_run,
    })
}

/// Meta key of the text normalisation (`chinese_text::NORMALISATION_VERSION`) every keyed
/// link was last computed under.
const TEXT_META: &str = "text/normalisation";

/// Meta key of the version of the standard-address links ([`ADDRESS_LINKS_VERSION`]) every
/// row's links were last computed under.
const ADDRESS_LINKS_META: &str = "links/address";

/// Which standard-address links ingest computes: 1 — building and compound for every kind
/// with an address, premises for houses and organizations. Rows stored before (none, or
/// fewer) get them from one [`reblind`] pass after the upgrade.
pub const ADDRESS_LINKS_VERSION: u32 = 1;

/// The text normalisation the stored keyed links were computed under (`None`: before the
/// version was recorded, i.e. version 1).
pub fn keyed_links_normalisation(store: &Store) -> Result<Option<u32>, RotationError> {
    read_progress(store, TEXT_META)
}

/// After an upgrade that changed the text normalisation, the stored blocking keys no longer
/// match what the new code computes for the same record: schedules the re-computation of
/// every resident row's keyed links under the current key ([`reblind`], resumable), which
/// records the new version when it ends. Returns whether a pass is pending.
pub fn schedule_renormalisation(store: &Store, keys: &KeyRing) -> Result<bool, RotationError> {
    let address_links: Option<u32> = read_progress(store, ADDRESS_LINKS_META)?;
    if keyed_links_normalisation(store)? == Some(chinese_text::NORMALISATION_VERSION)
        && address_links == Some(ADDRESS_LINKS_VERSION)
    {
        return Ok(false);
    }
    if store.read()?.change_seq()? == 0 {
        // A new store: nothing was keyed under another version.
        store.write(|w| {
            w.put_meta(TEXT_META, &encode(&chinese_text::NORMALISATION_VERSION))?;
            w.put_meta(ADDRESS_LINKS_META, &encode(&ADDRESS_LINKS_VERSION))
        })?;
        return Ok(false);
    }
    if reblind_pending(store)? {
        // A pass already runs under the current code; it records the version when it ends.
        return Ok(true);
    }
    let progress = ReblindProgress {
        target: keys.blind_version(),
        ..ReblindProgress::default()
    };
    store.write(|w| w.put_meta(REBLIND_META, &encode(&progress)))?;
    tracing::info!(
        version = chinese_text::NORMALISATION_VERSION,
        address_links = ADDRESS_LINKS_VERSION,
        "text normalisation or address links changed: re-computing the keyed links of every row"
    );
    Ok(true)
}

/// Whether a blind-index re-computation is pending (rotated, not done).
pub fn reblind_pending(store: &Store) -> Result<bool, RotationError> {
    Ok(reblind_progress(store)?.is_some_and(|p| !p.done))
}

/// Departments whose re-encryption is pending (rotated, not done).
pub fn pending(store: &Store) -> Result<Vec<Department>, RotationError> {
    let mut out = Vec::new();
    for department in Department::ALL {
        if progress(store, department)?.is_some_and(|p| !p.done) {
            out.push(department);
        }
    }
    Ok(out)
}

/// Resumes a pending blind-index re-computation and pending re-encryptions in the background of a running broker; stops (progress
/// saved) on shutdown.
pub fn spawn_pending(
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(blocking_until_shutdown(shutdown, move |worker_stop| {
        match reblind_pending(&store) {
            Ok(false) => {}
            Ok(true) => match reblind(&store, &keys, None, worker_stop) {
                Ok(report) => tracing::info!(
                    version = report.progress.target,
                    rows = report.progress.rows,
                    relinked = report.progress.relinked,
                    done = report.progress.done,
                    "blind-index re-computation"
                ),
                Err(err) => {
                    tracing::error!(error = %err, "blind-index re-computation stopped")
                }
            },
            Err(err) => tracing::error!(error = %err, "cannot read blind-index progress"),
        }
        let departments = match pending(&store) {
            Ok(departments) => departments,
            Err(err) => {
                tracing::error!(error = %err, "cannot read re-encryption progress");
                return;
            }
        };
        for department in departments {
            match reencrypt(&store, &keys, department, None, worker_stop) {
                Ok(report) => tracing::info!(
                    department = department.code(),
                    rows = report.progress.rows,
                    fields = report.progress.fields,
                    done = report.progress.done,
                    "re-encryption"
                ),
                Err(err) => {
                    tracing::error!(department = department.code(), error = %err, "re-encryption stopped")
                }
            }
        }
    }))
}

/// Runs `work` on the blocking pool; at shutdown sets the flag it is given (a resumable pass
/// stops after its current batch, progress saved) and waits for it to return.
pub async fn blocking_until_shutdown(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    work: impl FnOnce(&AtomicBool) + Send + 'static,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = stop.clone();
    let worker = tokio::task::spawn_blocking(move || work(&worker_stop));
    tokio::pin!(worker);
    tokio::select! {
        _ = &mut worker => {}
        _ = shutdown.changed() => {
            stop.store(true, Ordering::Relaxed);
            let _ = worker.await;
        }
    }
}

/// Re-wraps every stored key and the dev JWT key under `new`. Returns how many were re-wrapped.
pub fn rotate_master(
    data_dir: &Path,
    store: &Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, RotationError> {
    // Refuse a wrong old key before touching anything.
    load_key_ring(store, old)?;
    let dev_key = data_dir.join("dev").join("jwt-signing.key.wrapped");
    let dev_temporary = dev_key.with_extension("wrapped.new");
    let dev_rewrapped = match std::fs::read_to_string(&dev_key) {
        Ok(text) => {
            let wrapped = STANDARD
                .decode(text.trim())
                .map_err(|_| RotationError::Io(format!("{} is not base64", dev_key.display())))?;
            let secret = old.unwrap_bytes(&wrapped, "dev/jwt-signing")?;
            let rewrapped = new.wrap_bytes(&secret, "dev/jwt-signing")?;
            let _ = std::fs::remove_file(&dev_temporary);
            vault::crypto::write_private_file(
                &dev_temporary,
                STANDARD.encode(rewrapped).as_bytes(),
            )
            .map_err(|e| RotationError::Io(format!("writing {}: {e}", dev_temporary.display())))?;
            true
        }
        Err(_) => false,
    };
    let count = store.write(|w| -> Result<usize, RotationError> {
        let keys = w.meta_keys("keys/")?;
        for meta_key in &keys {
            let label = &meta_key["keys/".len()..];
            let Some(wrapped) = w.meta(meta_key)? else {
                continue;
            };
            let secret = old.unwrap_bytes(&wrapped, label)?;
            w.put_meta(meta_key, &new.wrap_bytes(&secret, label)?)?;
        }
        Ok(keys.len())
    })?;
    if dev_rewrapped {
        std::fs::rename(&dev_temporary, &dev_key)
            .map_err(|e| RotationError::Io(format!("replacing {}: {e}", dev_key.display())))?;
    }
    Ok(count + usize::from(dev_rewrapped))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Re-encryption and blind-index re-computation on a small generated street report rows:
    /// a total before the first advance, advances that add up to it (a run cut by `--limit`
    /// reports its share, the run that resumes the rest), and nothing for a walk that is done.
    #[test]
    fn rotation_passes_report_a_total_and_advances_that_add_up_to_it() {
        use demo::generate::{DemoConfig, DemoWorld};
        use vault::progress::Counting;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let master = MasterKey::for_tests(11);
        let keys = Arc::new(load_key_ring(&store, &master).unwrap());
        let world = DemoWorld::new(DemoConfig {
            residents: 120,
            seed: 5,
            bad_record_rate: 0.0,
        });
        let pipeline = crate::ingest::Pipeline::new(store.clone(), keys);
        for department in ["zhujian", "gongan", "minzheng"] {
            let body = world.ndjson(department, 0..120);
            pipeline
                .ingest(Department::parse(department).unwrap(), body.as_bytes())
                .unwrap();
        }
        let counts = store.read().unwrap().rows_per_department().unwrap();
        let gongan_rows = counts["gongan"];
        assert!(gongan_rows > 60, "{counts:?}");

        rotate_data_key(&store, &master, Department::Gongan).unwrap();
        let keys = load_key_ring(&store, &master).unwrap();
        let stop = AtomicBool::new(false);
        let first = Counting::new();
        let report =
            reencrypt_with_progress(&store, &keys, Department::Gongan, Some(50), &stop, &first)
                .unwrap();
        assert_eq!(report.rows_this_run, 50);
        assert_eq!(first.totals(), vec![50]);
        assert_eq!(first.advanced(), 50);
        assert_eq!(first.advanced_before_total(), 0);
        let rest = Counting::new();
        let report =
            reencrypt_with_progress(&store, &keys, Department::Gongan, None, &stop, &rest).unwrap();
        assert!(report.progress.done);
        assert_eq!(rest.totals(), vec![gongan_rows - 50]);
        assert_eq!(rest.advanced(), gongan_rows - 50);
        let again = Counting::new();
        reencrypt_with_progress(&store, &keys, Department::Gongan, None, &stop, &again).unwrap();
        assert_eq!(again.totals(), vec![0]);
        assert_eq!(again.advanced(), 0);

        rotate_blind_key(&store, &master).unwrap();
        let keys = load_key_ring(&store, &master).unwrap();
        let every_row = store.read().unwrap().source_count().unwrap();
        let reblinding = Counting::new();
        let report = reblind_with_progress(&store, &keys, None, &stop, &reblinding).unwrap();
        assert!(report.progress.done);
        assert_eq!(reblinding.totals(), vec![every_row]);
        assert_eq!(reblinding.advanced(), every_row);
        assert_eq!(report.rows_this_run, every_row);
        assert!(reblinding.advances() >= every_row.div_ceil(BATCH_ROWS as u64));
    }

    #[test]
    fn master_rotation_rewraps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap();
        let old = MasterKey::for_tests(1);
        let new = MasterKey::for_tests(2);
        rotate_data_key(&store, &old, Department::Gongan).unwrap();
        let before = load_key_ring(&store, &old).unwrap();
        let ctx = FieldContext {
            department: Department::Gongan,
            row: "gongan/resident/1",
            field: "name",
        };
        let sealed = before.seal(ctx, b"x").unwrap();
        assert_eq!(KeyRing::sealed_version(&sealed).unwrap(), 2);
        assert!(rotate_master(dir.path(), &store, &old, &new).unwrap() >= 11);
        assert!(
            load_key_ring(&store, &old).is_err(),
            "the old master key no longer opens"
        );
        let after = load_key_ring(&store, &new).unwrap();
        assert_eq!(after.open(ctx, &sealed).unwrap(), b"x");
    }

    #[test]
    fn a_row_that_does_not_open_is_skipped_and_listed_and_the_pass_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let master = MasterKey::for_tests(7);
        let keys = std::sync::Arc::new(load_key_ring(&store, &master).unwrap());
        let pipeline = crate::ingest::Pipeline::new(store.clone(), keys);
        let mut body = String::new();
        for (i, first17) in [
            "11010519800101001",
            "11010519800101002",
            "11010519800101003",
        ]
        .iter()
        .enumerate()
        {
            let check = model::id_number_check_digit(first17).unwrap();
            body.push_str(&format!(
                "{{\"kind\":\"resident\",\"source_id\":\"GA-{i}\",\"version\":\"1\",\"id_number\":\"{first17}{check}\",\"name\":\"测试\",\"grid\":\"110105001001001\"}}\n"
            ));
        }
        let receipt = pipeline
            .ingest(Department::Gongan, body.as_bytes())
            .unwrap();
        assert_eq!(receipt.accepted, 3);
        // Row 1's name is swapped for row 2's ciphertext: it no longer opens.
        let reader = store.read().unwrap();
        let mut one = reader.source("gongan/resident/GA-1").unwrap().unwrap();
        let two = reader.source("gongan/resident/GA-2").unwrap().unwrap();
        drop(reader);
        let before = one.clone();
        one.sealed.insert("name".into(), two.sealed["name"].clone());
        store.write(|w| w.put_source(&one, Some(&before))).unwrap();

        rotate_data_key(&store, &master, Department::Gongan).unwrap();
        let keys = load_key_ring(&store, &master).unwrap();
        let stop = AtomicBool::new(false);
        let report = reencrypt(&store, &keys, Department::Gongan, None, &stop).unwrap();
        assert!(report.progress.done, "the pass went past the bad row");
        let current = keys.current_version(Department::Gongan).unwrap();
        let reader = store.read().unwrap();
        for good in ["gongan/resident/GA-0", "gongan/resident/GA-2"] {
            let row = reader.source(good).unwrap().unwrap();
            for sealed in row.sealed.values() {
                assert_eq!(KeyRing::sealed_version(sealed).unwrap(), current, "{good}");
            }
        }
        assert!(crate::problems::list()
            .iter()
            .any(|p| p.task == "key_rotation"
                && p.item == "gongan/resident/GA-1"
                && p.kind == "integrity_error"));
    }

    #[test]
    fn rows_stored_before_the_address_links_get_them_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let keys = std::sync::Arc::new(load_key_ring(&store, &MasterKey::for_tests(8)).unwrap());
        assert!(!schedule_renormalisation(&store, &keys).unwrap());
        let pipeline = crate::ingest::Pipeline::new(store.clone(), keys.clone());
        let body = concat!(
            r#"{"kind":"house","source_id":"ZJ-1","version":"1","address":"某区安和里3号楼1单元102","grid":"110105001001001"}"#,
            "\n",
            r#"{"kind":"event","source_id":"WG-1","version":"1","type":"dispute","title":"噪音","address":"安和里3号楼","grid":"110105001001001"}"#,
            "\n",
            r#"{"kind":"house","source_id":"ZJ-2","version":"1","address":"幸福里","grid":"110105001001001"}"#,
            "\n"
        );
        assert_eq!(
            pipeline
                .ingest(Department::Zhujian, body.as_bytes())
                .unwrap()
                .accepted,
            3
        );
        let rows = [
            "zhujian/house/ZJ-1",
            "zhujian/event/WG-1",
            "zhujian/house/ZJ-2",
        ];
        let fresh: Vec<_> = rows
            .iter()
            .map(|row| store.read().unwrap().source(row).unwrap().unwrap())
            .collect();
        assert!(fresh[0].links.iter().any(|l| l.starts_with("addrp:")));
        assert!(fresh[1].links.iter().any(|l| l.starts_with("addr:")));
        assert!(!fresh[1].links.iter().any(|l| l.starts_with("addrp:")));
        // What a version before the address links left: none of them, and no version.
        store
            .write(|w| {
                for stored in &fresh {
                    let older: Vec<String> = stored
                        .links
                        .iter()
                        .filter(|l| !crate::ingest::is_standard_address_link(l))
                        .cloned()
                        .collect();
                    w.replace_links(stored, older)?;
                }
                w.delete_meta(ADDRESS_LINKS_META).map(|_| ())
            })
            .unwrap();
        assert!(schedule_renormalisation(&store, &keys).unwrap());
        let report = reblind(&store, &keys, None, &AtomicBool::new(false)).unwrap();
        assert!(report.progress.done);
        let with_address_links = fresh
            .iter()
            .filter(|s| {
                s.links
                    .iter()
                    .any(|l| crate::ingest::is_standard_address_link(l))
            })
            .count();
        assert!(with_address_links >= 2);
        assert_eq!(report.progress.relinked, with_address_links as u64);
        for (row, before) in rows.iter().zip(&fresh) {
            let after = store.read().unwrap().source(row).unwrap().unwrap();
            let (mut expected, mut got) = (before.links.clone(), after.links.clone());
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "{row}");
        }
        assert!(!schedule_renormalisation(&store, &keys).unwrap());
    }

    #[test]
    fn keyed_links_of_an_older_normalisation_are_recomputed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let master = MasterKey::for_tests(9);
        let keys = std::sync::Arc::new(load_key_ring(&store, &master).unwrap());
        assert!(
            !schedule_renormalisation(&store, &keys).unwrap(),
            "a new store has nothing to re-key"
        );
        assert_eq!(
            keyed_links_normalisation(&store).unwrap(),
            Some(chinese_text::NORMALISATION_VERSION)
        );
        let pipeline = crate::ingest::Pipeline::new(store.clone(), keys.clone());
        let check = model::id_number_check_digit("11010519800312123").unwrap();
        let body = format!(
            "{{\"kind\":\"resident\",\"source_id\":\"GA-1\",\"version\":\"1\",\"id_number\":\"11010519800312123{check}\",\"name\":\"王強\",\"birth_date\":\"1980-03-12\",\"address\":\"某区安和里3号楼2单元501\",\"grid\":\"110105001001001\"}}\n"
        );
        assert_eq!(
            pipeline
                .ingest(Department::Gongan, body.as_bytes())
                .unwrap()
                .accepted,
            1
        );
        let row = "gongan/resident/GA-1";
        let fresh = store.read().unwrap().source(row).unwrap().unwrap();
        // What an older normalisation left: other block keys, and no recorded version.
        let mut older: Vec<String> = fresh
            .links
            .iter()
            .filter(|l| !l.starts_with("block:"))
            .cloned()
            .collect();
        older.push("block:00000000000000000000000000000000".to_owned());
        store
            .write(|w| {
                w.replace_links(&fresh, older.clone())?;
                w.delete_meta(TEXT_META).map(|_| ())
            })
            .unwrap();
        assert_eq!(keyed_links_normalisation(&store).unwrap(), None);

        assert!(schedule_renormalisation(&store, &keys).unwrap());
        let report = reblind(&store, &keys, None, &AtomicBool::new(false)).unwrap();
        assert!(report.progress.done);
        assert_eq!(report.progress.relinked, 1);
        let after = store.read().unwrap().source(row).unwrap().unwrap();
        let mut expected = fresh.links.clone();
        let mut got = after.links.clone();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "the links are what the current code computes"
        );
        assert_eq!(
            keyed_links_normalisation(&store).unwrap(),
            Some(chinese_text::NORMALISATION_VERSION)
        );
        assert!(
            !schedule_renormalisation(&store, &keys).unwrap(),
            "a finished pass is not scheduled again"
        );
    }
}
