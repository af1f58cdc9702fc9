//! The ingest pipeline every path ends in: split a batch into records -> validate (model) ->
//! resolve to a unified entity -> seal personal fields -> store, with one receipt per batch.
//!
//! Guarantees:
//! - Each record is judged on its own: a bad record is rejected with its line, a stable code
//!   and a message that never repeats its values; the good records beside it are stored.
//! - The receipt is returned only after the batch is durably committed.
//! - Re-delivery is idempotent on (`department`, `kind`, `source_id`, `version`): the same
//!   version again changes nothing, an older version is ignored as stale, and the same version
//!   with different content is rejected as a conflict.
//! - Plaintext personal data never reaches the store: only the sealed form and keyed hashes.
//! - A record cannot take over anyone's profile: a timestamp version more than 24 hours ahead
//!   is refused (`version_in_future`); a publisher bounded by a jurisdiction cannot publish a
//!   grid outside it (`grid_outside_jurisdiction`); a resident record whose ID number matches
//!   a person the identity authority (gongan) holds, but whose name disagrees and whose stated
//!   birth date disagrees (or, with none stated, whose name shares no character with the
//!   register's), waits in quarantine for review (`identity_conflict`).
//! - A record the broker writes itself (a grid worker's report or visit, a move of either
//!   through the lifecycle) takes the same path, typed — so it may carry what no department
//!   can publish, its parties by unified id — and is stored only if the stored record is
//!   still the one it was built on ([`Replaces`]); its refusal goes back to the caller, not
//!   into quarantine. What the lifecycle reads back is [`EventFacts`]: nothing personal.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use chrono::SubsecRound;
use model::profile::{EventTransition, ScopeMove};
use model::record::Version;
use model::{Department, DivisionCode, EventRecord, Record, RecordKind};
use rayon::prelude::*;

use vault::crypto::{CryptoError, FieldContext, KeyRing};
use vault::store::{QuarantineEntry, Store, StoreError, StoredSource};

use crate::keyed::{
    blind_keyed_links, event_row_entity_id, house_entity_id, organization_entity_id,
    organization_row_entity_id, resident_entity_id, source_entity_id,
};
use crate::resolve::history_key;

/// Body fields that are not personal and stay in clear (references, codes, statuses).
const CLEAR_FIELDS: &[&str] = &[
    "grid",
    "house_source_id",
    "usage",
    "event_type",
    // An organization's type (shop, school …): not personal, filtered on.
    "type",
    "status",
    "occurred_at",
    "id_number_legacy",
];

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the batch is not NDJSON or a JSON array of records: {0}")]
    Malformed(String),
    #[error("the batch holds {0} records; send at most {MAX_RECORDS_PER_BATCH} per request")]
    TooManyRecords(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Most records one request may carry.
pub const MAX_RECORDS_PER_BATCH: usize = 100_000;
/// Batches at least this large are prepared on every core.
const PARALLEL_FROM: usize = 64;
/// How far ahead of the broker's clock a timestamp version may be.
const MAX_VERSION_AHEAD_HOURS: i64 = 24;

/// One rejected record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Rejection {
    /// 1-based line (NDJSON) or position (JSON array) of the record in the batch.
    pub line: usize,
    /// Stable snake_case reason code.
    pub code: String,
    /// What is wrong and how to fix it; never repeats the rejected value.
    pub message: String,
    /// The field at fault, when the error is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The record's source_id, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The file, table or page the record came from (connectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    /// Id of the quarantine entry that keeps the record for correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_id: Option<String>,
}

/// What happened to a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Receipt {
    /// Same body from the same department => same batch id.
    pub batch_id: String,
    pub department: String,
    pub received_at: DateTime<Utc>,
    /// Valid records (created + updated + unchanged + stale + deleted).
    pub accepted: usize,
    /// New source records.
    pub created: usize,
    /// Newer versions of known source records.
    pub updated: usize,
    /// Re-delivered with the version already stored: nothing changed.
    pub unchanged: usize,
    /// Older than the version already stored: ignored.
    pub stale: usize,
    /// Tombstones applied.
    pub deleted: usize,
    pub rejected: Vec<Rejection>,
    /// Residents this batch placed in another community than their other records (kept in
    /// the profile's history; the API raises each for compliance officers). Not part of the
    /// receipt a publisher sees.
    #[serde(skip)]
    pub scope_moves: Vec<ScopeMove>,
    /// Records that state no grid and whose grid could not be derived: they wait in
    /// quarantine (`grid_unresolved`, also listed in `rejected`).
    #[serde(default)]
    pub grid_unresolved: usize,
}

/// The community (12-digit prefix) of a grid code.
fn community_of(grid: &str) -> Option<&str> {
    grid.get(..12).filter(|c| c.len() == 12)
}

/// Whether storing `source` moves its entity to another community: the communities of the
/// entity's other live resident records (and of this record's previous version) against the
/// new record's.
fn scope_move(
    writer: &vault::store::StoreWriter,
    source: &StoredSource,
    previous: Option<&StoredSource>,
) -> Result<Option<ScopeMove>, StoreError> {
    if source.kind != RecordKind::Resident || source.deleted {
        return Ok(None);
    }
    let Some(to) = source.grid.as_deref().and_then(community_of) else {
        return Ok(None);
    };
    // An update moves the person if its own previous version placed them elsewhere; a new
    // record moves them if no other live record of the person agrees with its community.
    let from = match previous.filter(|p| !p.deleted) {
        Some(previous) => previous
            .grid
            .as_deref()
            .and_then(community_of)
            .filter(|c| *c != to)
            .map(str::to_owned),
        None => {
            let own = source.key();
            let mut elsewhere = None;
            for row in writer.linked_rows(&format!("entity:{}", source.entity))? {
                if row == own {
                    continue;
                }
                let Some(other) = writer.source(&row)? else {
                    continue;
                };
                if other.deleted || other.kind != RecordKind::Resident {
                    continue;
                }
                match other.grid.as_deref().and_then(community_of) {
                    Some(community) if community == to => return Ok(None),
                    Some(community) => elsewhere = Some(community.to_owned()),
                    None => {}
                }
            }
            elsewhere
        }
    };
    Ok(from.map(|from| ScopeMove {
        entity: source.entity.clone(),
        department: source.department,
        at: source.received_at,
        from,
        to: to.to_owned(),
    }))
}

/// The pipeline shared by every ingest path (HTTP push today, connectors later).
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    linker: Arc<crate::linking::Linker>,
    /// The publisher's jurisdiction: records whose grid lies outside it are refused. `None`
    /// for the broker's own connectors, whose configuration the operator wrote.
    scope: Option<Arc<[DivisionCode]>>,
}

/// One record as it arrived, before validation.
#[derive(Debug, Clone)]
pub struct IncomingRecord {
    /// 1-based line or position in its batch (or file).
    pub line: usize,
    /// The file, table or page it came from, for connector batches.
    pub source_file: Option<String>,
    /// The record, or why it is not JSON.
    pub value: Result<Value, String>,
    /// The raw text when it is not JSON, kept in quarantine.
    pub raw_text: Option<String>,
}

/// A record already rejected before the pipeline (e.g. by a department's mapping), to be
/// quarantined and reported with the batch.
#[derive(Debug, Clone)]
pub struct PreRejected {
    pub rejection: Rejection,
    /// The source row as read.
    pub raw: Value,
}

/// A record validated, resolved and sealed, waiting for its transaction.
struct Prepared {
    line: usize,
    source_file: Option<String>,
    raw: Value,
    source: StoredSource,
    /// For a resident without a valid ID number: what probabilistic linking compares.
    link: Option<crate::linkage::LinkRecord>,
    /// For a resident with a valid ID number: what earlier ID-less rows of the same person
    /// are compared with when it arrives ([`crate::linking::pull_in`]).
    pull: Option<crate::linkage::LinkRecord>,
    /// For a resident: the stable numbers of its identity documents.
    documents: Vec<String>,
    /// For a resident with an ID number from a department other than the identity
    /// authority: what is compared with the authority's record of that person.
    identity: Option<Identity>,
    /// For a record the broker wrote itself: what it may replace (`None` for a published
    /// record, which follows the version rules alone).
    replaces: Option<Replaces>,
}

/// A record as the pipeline receives it: published by a department (JSON, validated here),
/// or written by the broker itself (typed: it may carry what no department may publish).
enum Arrival {
    Published(IncomingRecord),
    Own {
        record: Box<Record>,
        replaces: Replaces,
    },
}

/// What a record the broker writes itself may replace: it is stored only if the stored
/// record is still the one it was built on, so two officers moving one event at once cannot
/// both succeed (the second is refused `version_conflict` and nothing of it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaces {
    /// A new record: no live record with its key may exist.
    Nothing,
    /// Exactly this stored version.
    Version(Version),
}

/// One record validated, resolved and sealed, with what linking and the identity check
/// compare (the parts of [`Prepared`] that come from the record itself).
struct Sealed {
    source: StoredSource,
    link: Option<crate::linkage::LinkRecord>,
    pull: Option<crate::linkage::LinkRecord>,
    documents: Vec<String>,
    identity: Option<Identity>,
}

/// Who a record says a person is, beside the ID number.
#[derive(Debug, Clone)]
struct Identity {
    name: Option<String>,
    /// The birth date the record states (not the one the model derives from the ID number,
    /// which a stolen ID number always gets right).
    stated_birth_date: Option<chrono::NaiveDate>,
}

/// What preparing one record gave.
#[allow(clippy::large_enum_variant)] // most records are prepared; the vector lives one batch
enum Outcome {
    Prepared(Prepared),
    Rejected(PreRejected),
}

impl Pipeline {
    pub fn new(store: Arc<Store>, keys: Arc<KeyRing>) -> Pipeline {
        Pipeline {
            store,
            keys,
            linker: Arc::new(crate::linking::Linker::default()),
            scope: None,
        }
    }

    /// This pipeline for a publisher whose token bounds it to `jurisdiction`.
    pub fn within(&self, jurisdiction: &[DivisionCode]) -> Pipeline {
        Pipeline {
            scope: Some(jurisdiction.to_vec().into()),
            ..self.clone()
        }
    }

    /// Whether a grid lies inside the publisher's jurisdiction (always, for an unbounded
    /// pipeline).
    fn scope_allows(&self, grid: &str) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        DivisionCode::parse(grid).is_ok_and(|grid| scope.iter().any(|code| code.contains(&grid)))
    }

    /// Uses `linker` to link residents that arrive without a usable ID number.
    pub fn with_linker(mut self, linker: Arc<crate::linking::Linker>) -> Pipeline {
        self.linker = linker;
        self
    }

    pub fn linker(&self) -> &Arc<crate::linking::Linker> {
        &self.linker
    }

    /// How the resident rows in scope were resolved (see
    /// [`crate::linking::resolution_counts`]).
    pub fn resolution_counts(
        &self,
        in_scope: &dyn Fn(&StoredSource) -> bool,
    ) -> Result<crate::linking::ResolutionCounts, StoreError> {
        crate::linking::resolution_counts(&self.store, &self.keys, in_scope)
    }

    /// Review pairs for an officer (see [`crate::linking::review_pairs`]).
    pub fn review_pairs(
        &self,
        all: bool,
        in_scope: &dyn Fn(&StoredSource) -> bool,
    ) -> Result<Vec<(crate::linking::Review, StoredSource, StoredSource)>, StoreError> {
        crate::linking::review_pairs(&self.store, all, in_scope)
    }

    /// An officer's final decision (see [`crate::linking::decide_review`]).
    pub fn decide_review(
        &self,
        id: &str,
        link: bool,
        decided_by: &str,
        in_scope: &dyn Fn(&StoredSource) -> bool,
    ) -> Result<crate::linking::Decided, StoreError> {
        crate::linking::decide_review(&self.store, id, link, decided_by, in_scope)
    }

    /// Splits a wrongly linked resident row out of its entity (see
    /// [`crate::linking::split_row`]).
    pub fn split_row(
        &self,
        department: Department,
        source_id: &str,
        in_scope: &dyn Fn(&StoredSource) -> bool,
    ) -> Result<crate::linking::SplitOutcome, StoreError> {
        let row = StoredSource::row_key(department, RecordKind::Resident, source_id);
        let own = source_entity_id(&self.keys, &row);
        crate::linking::split_row(&self.store, &row, &own, in_scope)
    }

    /// One page of `department`'s quarantine, each entry with its record opened (for that
    /// department's own publisher).
    pub fn quarantine_page(
        &self,
        department: Department,
        after: Option<&str>,
        include_resolved: bool,
        limit: usize,
    ) -> Result<Vec<(QuarantineEntry, Value)>, IngestError> {
        let reader = self.store.read()?;
        let entries = reader.quarantine(department, after, include_resolved, limit)?;
        let mut page = Vec::with_capacity(entries.len());
        for entry in entries {
            let record = self.open_quarantined(&entry)?;
            page.push((entry, record));
        }
        Ok(page)
    }

    /// Closes a quarantine entry as dismissed; false if there is no such open entry.
    pub fn dismiss_quarantined(
        &self,
        department: Department,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.store
            .write(|w| w.close_quarantine(department, id, "dismissed"))
    }

    /// Estimates the linkage model from the stored residents (see
    /// [`crate::linking::Linker::train`]). The keys never leave the pipeline: callers get
    /// the model, not the means to open records.
    pub fn train_linker(&self) -> Result<Option<Arc<crate::linkage::LinkageModel>>, StoreError> {
        self.linker.train(&self.store, &self.keys)
    }

    /// Offers rows stored before the model to it ([`crate::linking::relink`]).
    pub fn relink(
        &self,
        model: &crate::linkage::LinkageModel,
        limit: Option<u64>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::linking::RelinkProgress, crate::rotation::RotationError> {
        crate::linking::relink(&self.store, &self.keys, model, limit, stop)
    }

    /// Ingests one batch body (NDJSON or a JSON array of unified records) published by
    /// `department` and returns its receipt.
    pub fn ingest(&self, department: Department, body: &[u8]) -> Result<Receipt, IngestError> {
        let batch_id = batch_id(department, body);
        let records = split_batch(body)?;
        self.ingest_records(department, &batch_id, records, Vec::new())
    }

    /// Ingests records that arrived one by one (connectors, mapped pushes): validates,
    /// resolves, seals and stores the good ones, quarantines the bad ones and `pre_rejected`,
    /// all in one durable transaction.
    pub fn ingest_records(
        &self,
        department: Department,
        batch_id: &str,
        records: Vec<IncomingRecord>,
        pre_rejected: Vec<PreRejected>,
    ) -> Result<Receipt, IngestError> {
        let records = records.into_iter().map(Arrival::Published).collect();
        self.store_batch(department, batch_id, records, pre_rejected, true, true)
    }

    /// Records waiting for their grid (`grid_unresolved`) are ingested again, as their
    /// department published them and within the publisher's jurisdiction then; those whose
    /// grid can now be derived (a house at their building, the person's register, an
    /// officer's assignment) are stored and their quarantine entries closed, the others stay
    /// where they were (the same entry, not a copy). The original receipts are kept. Returns
    /// how many records were released.
    pub fn release_unresolved(&self) -> Result<usize, IngestError> {
        type Key = (Department, String, Vec<String>);
        let reader = self.store.read()?;
        let mut batches: BTreeMap<Key, Vec<IncomingRecord>> = BTreeMap::new();
        for department in Department::ALL {
            let mut after: Option<String> = None;
            loop {
                let page = reader.quarantine(department, after.as_deref(), false, 1_000)?;
                let Some(last) = page.last() else {
                    break;
                };
                after = Some(last.id.clone());
                for entry in page.iter().filter(|e| e.code == "grid_unresolved") {
                    let Ok(raw) = self.open_quarantined(entry) else {
                        crate::problems::record("grid_release", &entry.id, "integrity_error");
                        continue;
                    };
                    batches
                        .entry((department, entry.batch_id.clone(), entry.scope.clone()))
                        .or_default()
                        .push(IncomingRecord {
                            line: entry.line,
                            source_file: entry.source_file.clone(),
                            value: Ok(raw),
                            raw_text: None,
                        });
                }
            }
        }
        drop(reader);
        let mut released = 0;
        for ((department, batch_id, scope), records) in batches {
            let pipeline = if scope.is_empty() {
                self.clone()
            } else {
                let codes: Vec<DivisionCode> = scope
                    .iter()
                    .filter_map(|code| DivisionCode::parse(code).ok())
                    .collect();
                self.within(&codes)
            };
            let records = records.into_iter().map(Arrival::Published).collect();
            let receipt =
                pipeline.store_batch(department, &batch_id, records, Vec::new(), false, true)?;
            released += receipt.accepted;
        }
        Ok(released)
    }

    /// Assigns the building of `address` (its compound and building, as the standard address
    /// tree reads them) to `grid` — or, when the address names a compound but no building,
    /// the whole compound: records there that state no grid take it (a building's own
    /// assignment wins over its compound's). Returns `None` when the address names no
    /// compound.
    pub fn assign_address_grid(
        &self,
        address: &str,
        grid: &DivisionCode,
    ) -> Result<Option<()>, StoreError> {
        let Some(link) =
            address_link(&self.keys, address).or_else(|| compound_link(&self.keys, address))
        else {
            return Ok(None);
        };
        self.store
            .write(|w| w.put_meta(&assignment_key(&link), grid.as_str().as_bytes()))?;
        Ok(Some(()))
    }

    /// Stores one batch in one durable transaction. Rejected records are quarantined when
    /// `quarantine` holds (a department's records; the broker's own are refused to the
    /// caller instead) and the receipt is kept when `keep_receipt` holds.
    fn store_batch(
        &self,
        department: Department,
        batch_id: &str,
        records: Vec<Arrival>,
        pre_rejected: Vec<PreRejected>,
        keep_receipt: bool,
        quarantine: bool,
    ) -> Result<Receipt, IngestError> {
        if records.len() + pre_rejected.len() > MAX_RECORDS_PER_BATCH {
            return Err(IngestError::TooManyRecords(
                records.len() + pre_rejected.len(),
            ));
        }
        let received_at = Utc::now();
        let mut rejected: Vec<PreRejected> = pre_rejected;
        let mut prepared = Vec::with_capacity(records.len());
        // Validating, sealing and keying records is independent per record: it runs on every
        // core (in order, so the receipt and a repeated source_id keep their order); only the
        // store transaction below is serial.
        let outcomes: Vec<Outcome> = if records.len() >= PARALLEL_FROM {
            records
                .into_par_iter()
                .map(|record| self.prepare_one(department, batch_id, received_at, record))
                .collect()
        } else {
            records
                .into_iter()
                .map(|record| self.prepare_one(department, batch_id, received_at, record))
                .collect()
        };
        for outcome in outcomes {
            match outcome {
                Outcome::Prepared(item) => prepared.push(item),
                Outcome::Rejected(item) => rejected.push(item),
            }
        }
        let mut receipt = Receipt {
            batch_id: batch_id.to_owned(),
            department: department.code().to_owned(),
            received_at,
            accepted: 0,
            created: 0,
            updated: 0,
            unchanged: 0,
            stale: 0,
            deleted: 0,
            rejected: Vec::new(),
            scope_moves: Vec::new(),
            grid_unresolved: 0,
        };
        let model = self.linker.model();
        self.store.write(|writer| -> Result<(), IngestError> {
            for item in &mut prepared {
                if item.source.grid.is_none() && !item.source.deleted {
                    match derive_grid(writer, &item.source)? {
                        Some(grid) if self.scope_allows(&grid) => item.source.grid = Some(grid),
                        derived => {
                            let outside = derived.is_some();
                            receipt.grid_unresolved += usize::from(!outside);
                            rejected.push(PreRejected {
                                rejection: Rejection {
                                    line: item.line,
                                    code: if outside { "grid_outside_jurisdiction" } else { "grid_unresolved" }.to_owned(),
                                    message: if outside {
                                        "the grid derived from the record's address lies outside the jurisdiction of the publishing token; publish it with a token for that area, or state the grid".to_owned()
                                    } else {
                                        "the record states no grid, and none could be derived from its address or the person it belongs to; state the grid, or publish the house at this address (with its grid) first".to_owned()
                                    },
                                    field: Some("grid".to_owned()),
                                    source_id: Some(item.source.source_id.clone()),
                                    source_file: item.source_file.clone(),
                                    quarantine_id: None,
                                },
                                raw: item.raw.clone(),
                            });
                            continue;
                        }
                    }
                }
                if let Some(identity) = &item.identity {
                    if identity_conflicts(writer, &self.keys, &item.source, identity)? {
                        rejected.push(PreRejected {
                            rejection: Rejection {
                                line: item.line,
                                code: "identity_conflict".to_owned(),
                                message: "the ID number belongs to a person whose name and birth date in the household register differ from this record's; it waits in quarantine for review — check the ID number at the source".to_owned(),
                                field: Some("id_number".to_owned()),
                                source_id: Some(item.source.source_id.clone()),
                                source_file: item.source_file.clone(),
                                quarantine_id: None,
                            },
                            raw: item.raw.clone(),
                        });
                        continue;
                    }
                }
                if let Some(link) = &item.link {
                    let (entity, review) = crate::linking::link_incoming(
                        writer,
                        &self.keys,
                        model.as_deref(),
                        &item.source,
                        link,
                        &item.documents,
                    )?;
                    if let Some(entity) = entity {
                        item.source.move_to(&entity);
                    }
                    if let Some(review) = review {
                        if crate::linking::get_review(writer, &review.id)?.is_none() {
                            crate::linking::put_review(writer, &review)?;
                        }
                    }
                }
                let source = &item.source;
                let previous = writer.source(&source.key())?;
                if let Some(replaces) = &item.replaces {
                    let current = previous.as_ref().filter(|p| !p.deleted).map(|p| &p.version);
                    let expected = match replaces {
                        Replaces::Nothing => None,
                        Replaces::Version(version) => Some(version),
                    };
                    if current != expected {
                        rejected.push(PreRejected {
                            rejection: Rejection {
                                line: item.line,
                                code: "version_conflict".to_owned(),
                                message: "the record changed since it was read; read it again and retry".to_owned(),
                                field: Some("version".to_owned()),
                                source_id: Some(source.source_id.clone()),
                                source_file: None,
                                quarantine_id: None,
                            },
                            raw: item.raw.clone(),
                        });
                        continue;
                    }
                }
                match previous {
                    Some(previous) if previous.version > source.version => receipt.stale += 1,
                    Some(previous) if previous.version == source.version => {
                        if previous.digest == source.digest {
                            receipt.unchanged += 1;
                        } else {
                            rejected.push(PreRejected {
                                rejection: Rejection {
                                    line: item.line,
                                    code: "version_conflict".to_owned(),
                                    message: "this source_id and version were already received with different content; send the change with a newer version".to_owned(),
                                    field: Some("version".to_owned()),
                                    source_id: Some(source.source_id.clone()),
                                    source_file: item.source_file.clone(),
                                    quarantine_id: None,
                                },
                                raw: item.raw.clone(),
                            });
                            continue;
                        }
                    }
                    previous => {
                        if source.deleted {
                            receipt.deleted += 1;
                        } else if previous.is_some() {
                            receipt.updated += 1;
                        } else {
                            receipt.created += 1;
                        }
                        if let Some(moved) = scope_move(writer, source, previous.as_ref())? {
                            let bytes = serde_json::to_vec(&moved)
                                .map_err(|err| IngestError::Malformed(err.to_string()))?;
                            writer.put_meta(&history_key(&moved, &source.key()), &bytes)?;
                            receipt.scope_moves.push(moved);
                        }
                        writer.put_source(source, previous.as_ref())?;
                        if let (Some(pull), false) = (&item.pull, source.deleted) {
                            if model.is_some() || !item.documents.is_empty() {
                                crate::linking::pull_in(
                                    writer,
                                    &self.keys,
                                    model.as_deref(),
                                    source,
                                    pull,
                                    &item.documents,
                                )?;
                            }
                        }
                    }
                }
                receipt.accepted += 1;
                writer.resolve_quarantine(department, &source.source_id, "reingested")?;
            }
            for PreRejected { mut rejection, raw } in rejected.drain(..) {
                if quarantine {
                    let entry = self.quarantine_entry(department, batch_id, received_at, &rejection, &raw)?;
                    rejection.quarantine_id = Some(entry.id.clone());
                    writer.put_quarantine(&entry)?;
                }
                receipt.rejected.push(rejection);
            }
            receipt.rejected.sort_by(|a, b| (&a.source_file, a.line).cmp(&(&b.source_file, b.line)));
            let bytes = serde_json::to_vec(&receipt)
                .map_err(|err| IngestError::Malformed(err.to_string()))?;
            if keep_receipt {
                writer.put_receipt(batch_id, &bytes)?;
            }
            Ok(())
        })?;
        Ok(receipt)
    }

    fn prepare_one(
        &self,
        department: Department,
        batch_id: &str,
        received_at: DateTime<Utc>,
        arrival: Arrival,
    ) -> Outcome {
        let (line, source_file, raw, prepared, replaces) = match arrival {
            Arrival::Published(record) => {
                let raw = match (&record.value, &record.raw_text) {
                    (Ok(value), _) => value.clone(),
                    (Err(_), Some(text)) => Value::String(text.clone()),
                    (Err(_), None) => Value::Null,
                };
                let prepared = self.prepare(department, batch_id, received_at, record.value);
                (record.line, record.source_file, raw, prepared, None)
            }
            Arrival::Own { record, replaces } => {
                let raw = serde_json::to_value(&*record).unwrap_or(Value::Null);
                let prepared =
                    self.prepare_record(department, batch_id, received_at, &record, &raw);
                (1, None, raw, prepared, Some(replaces))
            }
        };
        match prepared {
            Ok(sealed) => Outcome::Prepared(Prepared {
                line,
                source_file,
                raw,
                source: sealed.source,
                link: sealed.link,
                pull: sealed.pull,
                documents: sealed.documents,
                identity: sealed.identity,
                replaces,
            }),
            Err(rejection) => Outcome::Rejected(PreRejected {
                rejection: Rejection {
                    line,
                    source_file,
                    ..rejection
                },
                raw,
            }),
        }
    }

    /// A sealed quarantine entry for one rejected record.
    fn quarantine_entry(
        &self,
        department: Department,
        batch_id: &str,
        received_at: DateTime<Utc>,
        rejection: &Rejection,
        raw: &Value,
    ) -> Result<QuarantineEntry, CryptoError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            batch_id,
            rejection.source_file.as_deref().unwrap_or(""),
            &rejection.line.to_string(),
            &rejection.code,
        ] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        ctx.update(raw.to_string().as_bytes());
        let id = format!("q_{}", hex::encode(&ctx.finish().as_ref()[..10]));
        let row = QuarantineEntry::seal_row(department, &id);
        let sealed_raw = self.keys.seal(
            FieldContext {
                department,
                row: &row,
                field: "raw",
            },
            raw.to_string().as_bytes(),
        )?;
        Ok(QuarantineEntry {
            id,
            department,
            batch_id: batch_id.to_owned(),
            source_file: rejection.source_file.clone(),
            line: rejection.line,
            code: rejection.code.clone(),
            field: rejection.field.clone(),
            message: rejection.message.clone(),
            source_id: rejection.source_id.clone(),
            received_at,
            sealed_raw,
            resolved: None,
            scope: self
                .scope
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|code| code.as_str().to_owned())
                .collect(),
        })
    }

    /// Opens the sealed record of a quarantine entry (for its own department).
    pub fn open_quarantined(&self, entry: &QuarantineEntry) -> Result<Value, CryptoError> {
        let row = QuarantineEntry::seal_row(entry.department, &entry.id);
        let plain = self.keys.open(
            FieldContext {
                department: entry.department,
                row: &row,
                field: "raw",
            },
            &entry.sealed_raw,
        )?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Malformed)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    #[allow(clippy::result_large_err)] // a Rejection is what the receipt carries anyway
    fn prepare(
        &self,
        department: Department,
        batch_id: &str,
        received_at: DateTime<Utc>,
        item: Result<Value, String>,
    ) -> Result<Sealed, Rejection> {
        let value = item.map_err(|message| rejection("json_syntax", message, None, None))?;
        let record = Record::from_value(&value).map_err(|err| {
            let source_id = value
                .get("source_id")
                .and_then(Value::as_str)
                .map(|s| s.chars().take(200).collect());
            let field = (!err.field().is_empty()).then(|| err.field().to_owned());
            rejection(err.code(), err.message().to_owned(), field, source_id)
        })?;
        self.prepare_record(department, batch_id, received_at, &record, &value)
    }

    /// [`Self::prepare`] of a typed record; `value` is the record as it arrived (what it
    /// states, beside what the model derived).
    #[allow(clippy::result_large_err)] // a Rejection is what the receipt carries anyway
    fn prepare_record(
        &self,
        department: Department,
        batch_id: &str,
        received_at: DateTime<Utc>,
        record: &Record,
        value: &Value,
    ) -> Result<Sealed, Rejection> {
        let source_id = || Some(record.meta().source_id.clone());
        if let Version::Time(time) = &record.meta().version {
            if *time > received_at + chrono::Duration::hours(MAX_VERSION_AHEAD_HOURS) {
                return Err(rejection(
                    "version_in_future",
                    format!("version is more than {MAX_VERSION_AHEAD_HOURS} hours ahead of the broker's clock; check the source system's clock and send the record's real change time"),
                    Some("version".to_owned()),
                    source_id(),
                ));
            }
        }
        if let (Some(scope), Some(grid)) = (&self.scope, record.grid()) {
            if !scope.iter().any(|code| code.contains(grid)) {
                return Err(rejection(
                    "grid_outside_jurisdiction",
                    "the record's grid lies outside the jurisdiction of the publishing token; publish it with a token for that area, or correct the grid".to_owned(),
                    Some("grid".to_owned()),
                    source_id(),
                ));
            }
        }
        // The address read once, and a live resident's linkage features built once: its
        // standard-address links, its blocking keys and linkage all read them.
        let address = record.address().map(chinese_text::address::parse);
        let link_record = match record {
            Record::Resident { meta, body } if !meta.deleted => {
                let row = StoredSource::row_key(department, RecordKind::Resident, &meta.source_id);
                Some(crate::linkage::LinkRecord::from_resident_parsed(
                    department,
                    &row,
                    body,
                    address.as_ref(),
                ))
            }
            _ => None,
        };
        let source = self
            .seal_record(
                department,
                batch_id,
                received_at,
                record,
                link_record.as_ref(),
                address.as_ref(),
            )
            .map_err(|_| {
                rejection(
                    "internal_error",
                    "the record could not be sealed; retry later".to_owned(),
                    None,
                    None,
                )
            })?;
        let (link, pull) = match (record, link_record) {
            (Record::Resident { body, .. }, Some(record)) => {
                if body.id_number.is_none() {
                    (Some(record), None)
                } else {
                    (None, Some(record))
                }
            }
            _ => (None, None),
        };
        let identity = match record {
            Record::Resident { meta, body }
                if !meta.deleted
                    && body.id_number.is_some()
                    && department != Department::Gongan =>
            {
                let stated = value.get("birth_date").is_some_and(|v| !v.is_null());
                Some(Identity {
                    name: body.name.clone(),
                    stated_birth_date: body.birth_date.filter(|_| stated),
                })
            }
            _ => None,
        };
        let documents = match record {
            Record::Resident { meta, body } if !meta.deleted => crate::keyed::document_keys(body),
            _ => Vec::new(),
        };
        Ok(Sealed {
            source,
            link,
            pull,
            documents,
            identity,
        })
    }

    /// Resolves the record's entity and links and seals its personal fields; `linkage` is
    /// the record's linkage features when the caller built them already, `address` its
    /// address as `chinese_text::address::parse` read it.
    fn seal_record(
        &self,
        department: Department,
        batch_id: &str,
        received_at: DateTime<Utc>,
        record: &Record,
        linkage: Option<&crate::linkage::LinkRecord>,
        address: Option<&chinese_text::address::AddressParts>,
    ) -> Result<StoredSource, CryptoError> {
        let meta = record.meta();
        let kind = record.kind();
        let row = StoredSource::row_key(department, kind, &meta.source_id);
        let resolved = self.resolve(department, &row, record, linkage, address);
        let digest = self
            .keys
            .entity_hash("digest", &serde_json::to_string(record).unwrap_or_default())
            .to_vec();
        let body = body_fields(record);
        let mut clear = BTreeMap::new();
        let mut sealed = BTreeMap::new();
        if !meta.deleted {
            for (field, value) in body {
                if is_empty(&value) || field == "grid" {
                    continue;
                }
                if CLEAR_FIELDS.contains(&field.as_str()) {
                    clear.insert(field, value);
                } else {
                    let ctx = FieldContext {
                        department,
                        row: &row,
                        field: &field,
                    };
                    let plaintext = serde_json::to_vec(&value).unwrap_or_default();
                    sealed.insert(field.clone(), self.keys.seal(ctx, &plaintext)?);
                }
            }
        }
        Ok(StoredSource {
            kind,
            department,
            source_id: meta.source_id.clone(),
            version: meta.version.clone(),
            deleted: meta.deleted,
            identified: matches!(record, Record::Resident { body, .. } if !meta.deleted && body.id_number.is_some()),
            entity: resolved.entity,
            grid: record.grid().map(|g| g.as_str().to_owned()),
            received_at,
            batch_id: batch_id.to_owned(),
            digest,
            clear,
            sealed,
            links: if meta.deleted {
                Vec::new()
            } else {
                resolved.links
            },
        })
    }

    /// Deterministic resolution: residents merge on the normalised ID number, houses on their
    /// source id, events stay per source record and link to their parties and house.
    fn resolve(
        &self,
        department: Department,
        row: &str,
        record: &Record,
        linkage: Option<&crate::linkage::LinkRecord>,
        address: Option<&chinese_text::address::AddressParts>,
    ) -> Resolved {
        let keys = &self.keys;
        let mut resolved = self.resolve_identity(department, row, record, linkage);
        if let Some(address) = address {
            resolved
                .links
                .extend(standard_address_links_of(keys, record.kind(), address));
        }
        resolved
    }

    /// [`Self::resolve`] without the standard-address links.
    fn resolve_identity(
        &self,
        department: Department,
        row: &str,
        record: &Record,
        linkage: Option<&crate::linkage::LinkRecord>,
    ) -> Resolved {
        let keys = &self.keys;
        match record {
            Record::Resident { body, .. } => {
                let entity = match &body.id_number {
                    Some(id) => resident_entity_id(keys, id),
                    None => source_entity_id(keys, row),
                };
                let mut links = vec![format!("entity:{entity}")];
                if let Some(house) = &body.house_source_id {
                    links.push(format!("occupant:{}", house_entity_id(keys, house)));
                }
                links.extend(match linkage {
                    Some(features) => crate::keyed::blind_keyed_links_of(keys, body, features),
                    None => blind_keyed_links(keys, department, row, body),
                });
                Resolved { entity, links }
            }
            Record::House { meta, body } => {
                let entity = house_entity_id(keys, &meta.source_id);
                let mut links = vec![format!("entity:{entity}")];
                if let Some(owner) = &body.owner_id_number {
                    links.push(format!("owner:{}", resident_entity_id(keys, owner)));
                }
                Resolved { entity, links }
            }
            Record::Organization { body, .. } => {
                let entity = match &body.uscc {
                    Some(uscc) => organization_entity_id(keys, uscc),
                    None => organization_row_entity_id(keys, row),
                };
                let mut links = vec![format!("entity:{entity}")];
                if let Some(rep) = &body.legal_rep_id_number {
                    links.push(format!("legal-rep:{}", resident_entity_id(keys, rep)));
                }
                Resolved { entity, links }
            }
            Record::Event { body, .. } => {
                let entity = event_row_entity_id(keys, row);
                let mut links = vec![format!("entity:{entity}")];
                for party in &body.party_id_numbers {
                    links.push(format!("party:{}", resident_entity_id(keys, party)));
                }
                // Parties the broker named by unified id (an event a grid worker recorded):
                // the same links, so the event lists them and they list the event.
                for party in &body.party_entities {
                    let link = format!("party:{party}");
                    if !links.contains(&link) {
                        links.push(link);
                    }
                }
                if let Some(house) = &body.house_source_id {
                    links.push(format!("house-event:{}", house_entity_id(keys, house)));
                }
                Resolved { entity, links }
            }
        }
    }
}

/// What the lifecycle needs to know of one event: codes, states, versions and ids, nothing
/// personal (its title, description and the notes of its history stay sealed here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    pub department: Department,
    pub source_id: String,
    /// The stored version: a transition is stored only if it is still this one.
    pub version: Version,
    pub grid: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<String>,
    /// Where it was routed when it was recorded (empty for a published event).
    pub routed_to: Vec<Department>,
    /// Recorded by the broker (a report or a visit, with its reporter): only such an event
    /// moves through the lifecycle.
    pub managed: bool,
    /// Its parties' unified ids (named by ID number or by id), for the audit record.
    pub parties: Vec<String>,
}

/// The events the broker recorded, counted ([`Pipeline::recorded_events`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedEvents {
    /// Reports and visits recorded.
    pub recorded: u64,
    /// Of them, closed (结案).
    pub closed: u64,
    /// Median hours from occurrence to closing, over the closed ones.
    pub median_hours_to_close: Option<f64>,
}

/// What became of a transition ([`Pipeline::transition_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The next version is stored (and in the change sequence).
    Stored,
    /// The event changed, or went, since its facts were read: nothing was stored.
    Changed,
    /// The history already holds [`MAX_EVENT_TRANSITIONS`] moves: nothing was stored.
    HistoryFull,
    /// The pipeline refused the next version (e.g. it could not be sealed).
    Refused(Rejection),
}

/// Most moves one event's history keeps: a lifecycle runs a handful; a hundred is a loop.
pub const MAX_EVENT_TRANSITIONS: usize = 100;

// Events the broker records itself (grid workers' reports and visits) and their lifecycle:
// stored by the same pipeline as every published record, read back only as the facts the
// lifecycle needs.
impl Pipeline {
    /// The unified id of `department`'s event `source_id` (keyed: it reveals nothing).
    pub fn event_entity(&self, department: Department, source_id: &str) -> String {
        let row = StoredSource::row_key(department, RecordKind::Event, source_id);
        event_row_entity_id(&self.keys, &row)
    }

    /// Stores one record the broker wrote itself — validated, resolved, sealed and stored in
    /// one durable transaction exactly like a published one — if the stored record is still
    /// what `replaces` says. A refusal is in the receipt's `rejected` and is not quarantined
    /// (the broker answers it to its caller); no receipt is kept.
    pub fn store_own(
        &self,
        department: Department,
        record: Record,
        replaces: Replaces,
    ) -> Result<Receipt, IngestError> {
        let body =
            serde_json::to_vec(&record).map_err(|err| IngestError::Malformed(err.to_string()))?;
        let batch = batch_id(department, &body);
        let arrival = Arrival::Own {
            record: Box::new(record),
            replaces,
        };
        self.store_batch(department, &batch, vec![arrival], Vec::new(), false, false)
    }

    /// The grid of the resident `entity` when every live record of that person lies inside
    /// this pipeline's scope: among them, the grid of the department first in the default
    /// residence order (the grid centre's own record first). `None` when no live resident
    /// record forms `entity` or one lies outside the scope — the two answer alike, so a
    /// caller learns nothing of people outside its jurisdiction.
    pub fn resident_grid(&self, entity: &str) -> Result<Option<String>, StoreError> {
        let reader = self.store.read()?;
        let authority = crate::resolve::AuthorityOrder::default();
        let mut best: Option<(usize, String)> = None;
        for source in reader.linked_sources(&format!("entity:{entity}"))? {
            if source.kind != RecordKind::Resident {
                return Ok(None);
            }
            let Some(grid) = source.grid else {
                continue;
            };
            if !self.scope_allows(&grid) {
                return Ok(None);
            }
            let rank = authority.rank(RecordKind::Resident, "grid", source.department);
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, grid));
            }
        }
        Ok(best.map(|(_, grid)| grid))
    }

    /// What the lifecycle needs to know of the event `entity` (`None`: no live event).
    pub fn event_facts(&self, entity: &str) -> Result<Option<EventFacts>, IngestError> {
        let reader = self.store.read()?;
        let Some(stored) = reader
            .linked_sources(&format!("entity:{entity}"))?
            .into_iter()
            .find(|s| s.kind == RecordKind::Event)
        else {
            return Ok(None);
        };
        let managed = stored.sealed.contains_key("reported_by");
        let opened = crate::resolve::open_source_fields(
            &self.keys,
            stored,
            Some(&["routed_to", "event_type", "status"]),
        )
        .map_err(ingest_error)?;
        let text = |field: &str| {
            opened
                .fields
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let routed_to = opened
            .fields
            .get("routed_to")
            .map(|v| serde_json::from_value::<Vec<Department>>(v.clone()))
            .transpose()
            .map_err(|_| IngestError::Crypto(CryptoError::Malformed))?
            .unwrap_or_default();
        let stored = &opened.stored;
        Ok(Some(EventFacts {
            department: stored.department,
            source_id: stored.source_id.clone(),
            version: stored.version.clone(),
            grid: stored.grid.clone(),
            event_type: text("event_type"),
            status: text("status"),
            routed_to,
            managed,
            parties: stored
                .links
                .iter()
                .filter_map(|l| l.strip_prefix("party:"))
                .map(str::to_owned)
                .collect(),
        }))
    }

    /// The events the broker recorded (reports and visits): how many, how many are closed
    /// (结案), and the median hours from occurrence (the report's time when none was given)
    /// to closing. Counts only; the history is opened to find when each closed.
    pub fn recorded_events(&self) -> Result<RecordedEvents, IngestError> {
        let reader = self.store.read()?;
        let mut recorded = Vec::new();
        reader.for_each_source(RecordKind::Event, |source| {
            if source.sealed.contains_key("reported_by") {
                recorded.push(source);
            }
        })?;
        let mut hours = Vec::new();
        let mut closed = 0;
        for source in &recorded {
            let status = source.clear.get("status").and_then(Value::as_str);
            if status != Some("closed") {
                continue;
            }
            closed += 1;
            let occurred = source
                .clear
                .get("occurred_at")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let Ok(opened) =
                crate::resolve::open_source_fields(&self.keys, source.clone(), Some(&["history"]))
            else {
                // Counted as closed; a row that does not open says nothing about its time.
                continue;
            };
            let history: Vec<EventTransition> = opened
                .fields
                .get("history")
                .and_then(|h| serde_json::from_value(h.clone()).ok())
                .unwrap_or_default();
            let closed_at = history
                .iter()
                .rev()
                .find(|t| t.to == "closed")
                .map(|t| t.at);
            if let (Some(from), Some(to)) = (occurred, closed_at) {
                hours.push((to - from).num_seconds().max(0) as f64 / 3600.0);
            }
        }
        hours.sort_by(f64::total_cmp);
        let median_hours_to_close = match hours.len() {
            0 => None,
            n if n % 2 == 1 => Some(hours[n / 2]),
            n => Some((hours[n / 2 - 1] + hours[n / 2]) / 2.0),
        };
        Ok(RecordedEvents {
            recorded: recorded.len() as u64,
            closed,
            median_hours_to_close,
        })
    }

    /// Moves the event `facts` describes: its next version — status `transition.to`,
    /// `transition` appended to its history, everything else as stored — is stored through
    /// the pipeline if the stored version is still `facts.version`. Only an event the broker
    /// recorded moves ([`EventFacts::managed`]); the caller decides whether the move is
    /// allowed.
    pub fn transition_event(
        &self,
        facts: &EventFacts,
        transition: EventTransition,
    ) -> Result<TransitionOutcome, IngestError> {
        let row = StoredSource::row_key(facts.department, RecordKind::Event, &facts.source_id);
        let Some(stored) = self
            .store
            .read()?
            .source(&row)?
            .filter(|s| !s.deleted && s.version == facts.version)
        else {
            return Ok(TransitionOutcome::Changed);
        };
        let opened = crate::resolve::open_source(&self.keys, stored).map_err(ingest_error)?;
        let mut body: EventRecord = serde_json::from_value(Value::Object(opened.fields))
            .map_err(|_| IngestError::Crypto(CryptoError::Malformed))?;
        if body.reported_by.is_none() {
            return Ok(TransitionOutcome::Changed);
        }
        if body.history.len() >= MAX_EVENT_TRANSITIONS {
            return Ok(TransitionOutcome::HistoryFull);
        }
        body.status = Some(transition.to.clone());
        body.history.push(transition);
        let now = Utc::now().trunc_subsecs(6);
        // Versions only grow, even on a clock set back.
        let version = match &facts.version {
            Version::Time(previous) if *previous >= now => {
                Version::Time(*previous + chrono::Duration::microseconds(1))
            }
            _ => Version::Time(now),
        };
        let record = Record::Event {
            meta: model::SourceMeta {
                source_id: facts.source_id.clone(),
                version,
                deleted: false,
            },
            body,
        };
        let receipt = self.store_own(
            facts.department,
            record,
            Replaces::Version(facts.version.clone()),
        )?;
        Ok(match receipt.rejected.into_iter().next() {
            None => TransitionOutcome::Stored,
            Some(rejection) if rejection.code == "version_conflict" => TransitionOutcome::Changed,
            Some(rejection) => TransitionOutcome::Refused(rejection),
        })
    }
}

/// A failure to open a stored record, as the pipeline reports it.
fn ingest_error(err: crate::resolve::ResolveError) -> IngestError {
    match err {
        crate::resolve::ResolveError::Store(err) => IngestError::Store(err),
        crate::resolve::ResolveError::Integrity { source, .. } => IngestError::Crypto(source),
    }
}

struct Resolved {
    entity: String,
    links: Vec<String>,
}

/// The keyed link of a standard address down to the building (`addr:<hmac>` of compound and
/// building, as `chinese_text::address` reads them), so a record without a grid can take
/// the grid of a house or another record at the same building. Keyed with the entity-id
/// key, which is never rotated: the link means the same for every row, old or new.
fn address_link(keys: &KeyRing, address: &str) -> Option<String> {
    building_link(keys, &chinese_text::address::parse(address))
}

fn building_link(keys: &KeyRing, parts: &chinese_text::address::AddressParts) -> Option<String> {
    let compound = parts.compound_name()?;
    let building = parts.building_no()?;
    let hash = keys.entity_hash("address", &format!("{compound}|{building}"));
    Some(format!("addr:{}", hex::encode(&hash[..16])))
}

/// The keyed link of the compound (小区) or community of a standard address (`addrc:`), which
/// only an officer's whole-compound assignment uses: buildings of one compound may lie in
/// different grids, so a compound never lends one building's grid to another. It stays in
/// the row only (`vault::store::ROW_ONLY_LINK_PREFIXES`): nothing looks it up in the link
/// table.
fn compound_link(keys: &KeyRing, address: &str) -> Option<String> {
    compound_link_of(keys, &chinese_text::address::parse(address))
}

fn compound_link_of(keys: &KeyRing, parts: &chinese_text::address::AddressParts) -> Option<String> {
    let compound = parts.compound_name()?;
    let hash = keys.entity_hash("address", &format!("{compound}|"));
    Some(format!("addrc:{}", hex::encode(&hash[..16])))
}

/// The keyed link of one set of premises (`addrp:`): compound, building, unit and room as
/// the address names them (a building without rooms is premises too). A house and an
/// organization whose standard addresses read into the same premises are linked by it: the
/// shop at 3号楼底商102 is the house of that address, not every flat of building 3.
fn premises_link(keys: &KeyRing, parts: &chinese_text::address::AddressParts) -> Option<String> {
    let compound = parts.compound_name()?;
    let building = parts.building.as_deref()?;
    let unit = parts.unit.as_deref().unwrap_or("");
    let room = parts.room.as_deref().unwrap_or("");
    let hash = keys.entity_hash("premises", &format!("{compound}|{building}|{unit}|{room}"));
    Some(format!("addrp:{}", hex::encode(&hash[..16])))
}

/// The links a record of `kind` at `address` carries for its standard address: building and
/// compound (as many as it names), and for the kinds that occupy premises (houses and
/// organizations) the premises. Exactly what ingest computes, so a pass that re-computes them
/// after an upgrade agrees.
pub(crate) fn standard_address_links(
    keys: &KeyRing,
    kind: RecordKind,
    address: &str,
) -> Vec<String> {
    standard_address_links_of(keys, kind, &chinese_text::address::parse(address))
}

/// [`standard_address_links`] of an address `chinese_text::address::parse` has read.
fn standard_address_links_of(
    keys: &KeyRing,
    kind: RecordKind,
    parts: &chinese_text::address::AddressParts,
) -> Vec<String> {
    let premises = match kind {
        RecordKind::House | RecordKind::Organization => premises_link(keys, parts),
        RecordKind::Resident | RecordKind::Event => None,
    };
    building_link(keys, parts)
        .into_iter()
        .chain(compound_link_of(keys, parts))
        .chain(premises)
        .collect()
}

/// Whether `link` is one of [`standard_address_links`].
pub(crate) fn is_standard_address_link(link: &str) -> bool {
    ["addr:", "addrc:", "addrp:"]
        .iter()
        .any(|prefix| link.starts_with(prefix))
}

/// Meta key of an officer's assignment of a building (`addr:` link) or a whole compound
/// (`addrc:` link) to a grid.
fn assignment_key(address_link: &str) -> String {
    format!("address/grid/{address_link}")
}

/// The grid of a record that states none: an officer's assignment of its building, else that
/// of the person's other records (a resident with an ID number), else that of a house, else
/// of any record, at the same building. Records of the identity authority (gongan) and
/// houses first.
fn derive_grid(
    writer: &vault::store::StoreWriter,
    source: &StoredSource,
) -> Result<Option<String>, StoreError> {
    let mut lookups = Vec::new();
    // Another department's record of the same person (by ID number) or organization (by
    // credit code; an organization without one is its own entity and finds only itself).
    let identified = match source.kind {
        RecordKind::Resident => source.identified,
        RecordKind::Organization => true,
        _ => false,
    };
    if identified {
        lookups.push(format!("entity:{}", source.entity));
    }
    lookups.extend(
        source
            .links
            .iter()
            .filter(|l| l.starts_with("addr:"))
            .cloned(),
    );
    let own = source.key();
    // The building's assignment first, then the compound's.
    let assigned = source
        .links
        .iter()
        .filter(|l| l.starts_with("addr:"))
        .chain(source.links.iter().filter(|l| l.starts_with("addrc:")));
    for link in assigned {
        if let Some(grid) = writer.meta(&assignment_key(link))? {
            if let Ok(grid) = String::from_utf8(grid) {
                return Ok(Some(grid));
            }
        }
    }
    for link in lookups {
        let mut best: Option<(u8, String)> = None;
        for row in writer.linked_rows(&link)? {
            if row == own {
                continue;
            }
            // The rank comes from the row key (department/kind/source id), so rows that
            // cannot beat the best found are not read at all.
            let mut parts = row.splitn(3, '/');
            let (department, kind) = (parts.next(), parts.next());
            let rank = match (department, kind) {
                (Some(d), _) if d == Department::Gongan.code() => 0,
                (_, Some(k)) if k == RecordKind::House.as_str() => 1,
                _ => 2,
            };
            if best.as_ref().is_some_and(|(r, _)| rank >= *r) {
                continue;
            }
            let Some((false, Some(grid))) = writer.source_grid(&row)? else {
                continue;
            };
            best = Some((rank, grid));
            if rank == 0 {
                break;
            }
        }
        if let Some((_, grid)) = best {
            return Ok(Some(grid));
        }
    }
    Ok(None)
}

/// Whether a resident record claims an ID number that the identity authority (gongan) holds
/// for someone else: the names differ (after folding traditional and full-width forms) and
/// either the record states a birth date that differs from the register's, or, with no
/// birth date to compare, the names share no character at all. A record with the same name
/// is never a conflict (a mistyped birth date is the department's to fix, not a take-over),
/// nor is a one-character slip in a name.
fn identity_conflicts(
    writer: &vault::store::StoreWriter,
    keys: &KeyRing,
    source: &StoredSource,
    identity: &Identity,
) -> Result<bool, IngestError> {
    let entity_link = format!("entity:{}", source.entity);
    for row in writer.linked_rows(&entity_link)? {
        let Some(authority) = writer.source(&row)? else {
            continue;
        };
        if authority.department != Department::Gongan
            || authority.kind != RecordKind::Resident
            || authority.deleted
        {
            continue;
        }
        let opened = match crate::resolve::open_source_fields(
            keys,
            authority,
            Some(&["name", "birth_date"]),
        ) {
            Ok(opened) => opened,
            // A row that does not open is reported by the reads that need it; it decides
            // nothing here.
            Err(_) => continue,
        };
        let (Some(known), Some(claimed)) = (
            opened.fields.get("name").and_then(Value::as_str),
            identity.name.as_deref(),
        ) else {
            return Ok(false);
        };
        let (known, claimed) = (
            chinese_text::hanzi::fold_name(known),
            chinese_text::hanzi::fold_name(claimed),
        );
        if known == claimed {
            return Ok(false);
        }
        let known_birth = opened
            .fields
            .get("birth_date")
            .and_then(Value::as_str)
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        return Ok(match (known_birth, identity.stated_birth_date) {
            // Both stated: the birth date decides.
            (Some(known_birth), Some(claimed_birth)) => known_birth != claimed_birth,
            // No birth date to compare: only a name that shares no character with the
            // register's (not even the surname) is another person; a typo is not.
            _ => !claimed.chars().any(|c| known.contains(c)),
        });
    }
    Ok(false)
}

fn body_fields(record: &Record) -> Map<String, Value> {
    let value = match record {
        Record::Resident { body, .. } => serde_json::to_value(body),
        Record::House { body, .. } => serde_json::to_value(body),
        Record::Event { body, .. } => serde_json::to_value(body),
        Record::Organization { body, .. } => serde_json::to_value(body),
    };
    match value {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(_) => false,
    }
}

fn rejection(
    code: &str,
    message: String,
    field: Option<String>,
    source_id: Option<String>,
) -> Rejection {
    Rejection {
        line: 0,
        code: code.to_owned(),
        message,
        field,
        source_id,
        source_file: None,
        quarantine_id: None,
    }
}

pub fn batch_id(department: Department, body: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(department.code().as_bytes());
    ctx.update(&[0]);
    ctx.update(body);
    let digest = ctx.finish();
    format!("b_{}", hex::encode(&digest.as_ref()[..12]))
}

/// Splits a body into records: a JSON array, or NDJSON (blank lines skipped). A line that is
/// not valid JSON is kept as an error (with its text, for quarantine), not dropped.
pub fn split_batch(body: &[u8]) -> Result<Vec<IncomingRecord>, IngestError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|err| {
        IngestError::Malformed(format!(
            "the body is not UTF-8 (first bad byte at offset {}); convert GBK exports to UTF-8 or use a file connector",
            err.valid_up_to()
        ))
    })?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed).map_err(|err| {
            IngestError::Malformed(format!(
                "the JSON array is malformed at line {} column {}",
                err.line(),
                err.column()
            ))
        })?;
        return Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, v)| IncomingRecord {
                line: i + 1,
                source_file: None,
                value: Ok(v),
                raw_text: None,
            })
            .collect());
    }
    Ok(text
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let line = line.trim_end_matches('\r');
            let parsed = serde_json::from_str::<Value>(line)
                .map_err(|err| format!("line is not valid JSON (column {})", err.column()));
            IncomingRecord {
                line: i + 1,
                source_file: None,
                raw_text: parsed.is_err().then(|| line.chars().take(10_000).collect()),
                value: parsed,
            }
        })
        .collect())
}

/// What a department's own schema makes of one row: a unified record, or the reason it
/// cannot (the connectors' declarative mapping implements it in the broker).
pub trait RowMapping {
    /// Maps the object on body line `line`.
    fn map_row(
        &self,
        line: usize,
        fields: Map<String, Value>,
    ) -> Result<MappedRow, Box<MappingRefusal>>;
}

/// A row the mapping turned into a record in the unified format (validated like any other).
#[derive(Debug)]
pub struct MappedRow {
    pub line: usize,
    pub record: Value,
}

/// A row the mapping refused, with the mapping's reason; the row is quarantined.
#[derive(Debug)]
pub struct MappingRefusal {
    pub line: usize,
    pub code: String,
    pub message: String,
    /// The field at fault (empty when the whole row is).
    pub field: String,
    pub source_id: Option<String>,
    pub row: Map<String, Value>,
}

/// Ingests a body in a department's own schema: each object goes through the department's
/// mapping; rows the mapping refuses are quarantined with the mapping's reason.
pub fn ingest_mapped(
    pipeline: &Pipeline,
    department: Department,
    mapping: &dyn RowMapping,
    body: &[u8],
) -> Result<Receipt, IngestError> {
    let batch = batch_id(department, body);
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for incoming in split_batch(body)? {
        let fields = match incoming.value {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                rejected.push(PreRejected {
                    rejection: Rejection {
                        line: incoming.line,
                        ..rejection(
                            "record_not_object",
                            "each record must be a JSON object".to_owned(),
                            None,
                            None,
                        )
                    },
                    raw: Value::Null,
                });
                continue;
            }
            Err(message) => {
                records.push(IncomingRecord {
                    value: Err(message),
                    ..incoming
                });
                continue;
            }
        };
        match mapping.map_row(incoming.line, fields) {
            Ok(mapped) => records.push(IncomingRecord {
                line: mapped.line,
                source_file: None,
                value: Ok(mapped.record),
                raw_text: None,
            }),
            Err(refusal) => rejected.push(PreRejected {
                rejection: Rejection {
                    line: refusal.line,
                    code: refusal.code,
                    message: refusal.message,
                    field: (!refusal.field.is_empty()).then_some(refusal.field),
                    source_id: refusal.source_id,
                    source_file: None,
                    quarantine_id: None,
                },
                raw: Value::Object(refusal.row),
            }),
        }
    }
    pipeline.ingest_records(department, &batch, records, rejected)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vault::crypto::MasterKey;
    use vault::keys::load_key_ring;

    fn pipeline(dir: &std::path::Path) -> Pipeline {
        let store = Arc::new(vault::store::open_for_tests(&dir.join("s.redb")).unwrap());
        let keys = Arc::new(load_key_ring(&store, &MasterKey::for_tests(3)).unwrap());
        Pipeline::new(store, keys)
    }

    const GOOD: &str = r#"{"kind":"resident","source_id":"GA-1","version":"2026-11-01T08:00:00Z","id_number":"11010519491231002X","name":"张三","phone":"13812345678","grid":"110105001001003"}"#;

    #[test]
    fn bad_records_do_not_cost_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let body = format!(
            "{GOOD}\nnot json\n{}\n\n{}\n",
            r#"{"kind":"resident","source_id":"GA-2","version":"1","id_number":"110105194912310021","grid":"110105001001003"}"#,
            r#"{"kind":"house","source_id":"ZJ-1","version":"1","address":"幸福里3号楼","grid":"110105001001003"}"#
        );
        let receipt = p.ingest(Department::Gongan, body.as_bytes()).unwrap();
        assert_eq!(receipt.accepted, 2);
        assert_eq!(receipt.created, 2);
        let codes: Vec<_> = receipt
            .rejected
            .iter()
            .map(|r| (r.line, r.code.as_str()))
            .collect();
        assert_eq!(codes, vec![(2, "json_syntax"), (3, "id_number_checksum")]);
    }

    /// The grid of a record that states none comes from the building's rows in a fixed
    /// order: a household-register (gongan) record's, else a house's, else any other's; a
    /// deleted row or one without a grid gives none.
    #[test]
    fn a_derived_grid_prefers_the_register_then_the_house_and_skips_deleted_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let (register, house, other) = ("110105001001003", "110105001002004", "110105001003005");
        let at = |n: u32| format!("北京市某区青松园{n}号楼");
        let stored_grid = |department: Department, source_id: &str| {
            let row = StoredSource::row_key(department, RecordKind::Resident, source_id);
            p.store.read().unwrap().source(&row).unwrap().unwrap().grid
        };
        for n in [1, 2, 3] {
            // Listed in the order that sorts last first: chengguan < gongan < zhujian.
            let events = format!(
                r#"{{"kind":"resident","source_id":"CG-{n}","version":"1","name":"甲","address":"{}1单元1","grid":"{other}"}}"#,
                at(n)
            );
            p.ingest(Department::Chengguan, events.as_bytes()).unwrap();
            if n != 3 {
                let houses = format!(
                    r#"{{"kind":"house","source_id":"ZJ-{n}","version":"1","address":"{}","grid":"{house}"}}"#,
                    at(n)
                );
                p.ingest(Department::Zhujian, houses.as_bytes()).unwrap();
            }
            if n == 1 {
                let registered = format!(
                    r#"{{"kind":"resident","source_id":"GA-{n}","version":"1","name":"乙","address":"{}1单元2","grid":"{register}"}}"#,
                    at(n)
                );
                p.ingest(Department::Gongan, registered.as_bytes()).unwrap();
            }
        }
        // A deleted register row at building 2 does not count.
        p.ingest(
            Department::Gongan,
            format!(
                r#"{{"kind":"resident","source_id":"GA-2","version":"1","name":"丙","address":"{}1单元3","grid":"{register}"}}"#,
                at(2)
            )
            .as_bytes(),
        )
        .unwrap();
        p.ingest(
            Department::Gongan,
            br#"{"kind":"resident","source_id":"GA-2","version":"2","deleted":true}"#,
        )
        .unwrap();
        for n in [1, 2, 3] {
            let body = format!(
                r#"{{"kind":"resident","source_id":"MZ-{n}","version":"1","name":"丁","address":"{}2单元1"}}"#,
                at(n)
            );
            let receipt = p.ingest(Department::Minzheng, body.as_bytes()).unwrap();
            assert_eq!(receipt.accepted, 1, "{receipt:?}");
        }
        assert_eq!(
            stored_grid(Department::Minzheng, "MZ-1").as_deref(),
            Some(register)
        );
        assert_eq!(
            stored_grid(Department::Minzheng, "MZ-2").as_deref(),
            Some(house)
        );
        assert_eq!(
            stored_grid(Department::Minzheng, "MZ-3").as_deref(),
            Some(other)
        );
    }

    #[test]
    fn redelivery_is_idempotent_and_conflicts_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let first = p.ingest(Department::Gongan, GOOD.as_bytes()).unwrap();
        let again = p.ingest(Department::Gongan, GOOD.as_bytes()).unwrap();
        assert_eq!(first.batch_id, again.batch_id);
        assert_eq!((again.created, again.unchanged), (0, 1));
        let changed = GOOD.replace("张三", "张叁");
        let conflict = p.ingest(Department::Gongan, changed.as_bytes()).unwrap();
        assert_eq!(conflict.rejected[0].code, "version_conflict");
        let newer = changed.replace("2026-11-01T08:00:00Z", "2026-11-02T08:00:00Z");
        assert_eq!(
            p.ingest(Department::Gongan, newer.as_bytes())
                .unwrap()
                .updated,
            1
        );
        let older = GOOD.replace("2026-11-01T08:00:00Z", "2026-10-01T08:00:00Z");
        assert_eq!(
            p.ingest(Department::Gongan, older.as_bytes())
                .unwrap()
                .stale,
            1
        );
    }

    #[test]
    fn a_large_batch_prepared_in_parallel_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let line = |n: usize, name: &str| {
            format!(
                r#"{{"kind":"resident","source_id":"GA-{n}","version":"1","name":"{name}","grid":"110105001001003"}}"#
            )
        };
        let mut lines: Vec<String> = (0..300).map(|n| line(n, "王五")).collect();
        lines[4] = "not json".to_owned();
        lines[79] = r#"{"kind":"resident","source_id":"GA-79","version":"1","id_number":"110105194912310022","grid":"110105001001003"}"#.to_owned();
        // The same source and version with other content, later in the batch: the later
        // line is the conflict, as it would be if the batch were prepared one by one.
        lines[249] = line(3, "王六");
        assert!(lines.len() >= PARALLEL_FROM);
        let receipt = p
            .ingest(Department::Gongan, lines.join("\n").as_bytes())
            .unwrap();
        let rejected: Vec<(usize, &str)> = receipt
            .rejected
            .iter()
            .map(|r| (r.line, r.code.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (5, "json_syntax"),
                (80, "id_number_checksum"),
                (250, "version_conflict")
            ]
        );
        assert_eq!(receipt.accepted, 297);
        let reader = p.store.read().unwrap();
        let kept = reader.source("gongan/resident/GA-3").unwrap().unwrap();
        let opened = crate::resolve::open_source(&p.keys, kept).unwrap();
        assert_eq!(opened.fields["name"], "王五", "the first line of GA-3 won");
    }

    #[test]
    fn json_array_positions_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let body = format!("[{GOOD}, {{\"kind\":\"alien\"}}]");
        let receipt = p.ingest(Department::Gongan, body.as_bytes()).unwrap();
        assert_eq!(receipt.accepted, 1);
        assert_eq!(receipt.rejected[0].line, 2);
        assert_eq!(receipt.rejected[0].code, "kind_unknown");
    }

    #[test]
    fn legacy_and_modern_id_resolve_to_one_entity() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let legacy = GOOD
            .replace("GA-1", "MZ-1")
            .replace("11010519491231002X", "110105491231002");
        p.ingest(Department::Gongan, GOOD.as_bytes()).unwrap();
        p.ingest(Department::Minzheng, legacy.as_bytes()).unwrap();
        let reader = p.store.read().unwrap();
        let a = reader.source("gongan/resident/GA-1").unwrap().unwrap();
        let b = reader.source("minzheng/resident/MZ-1").unwrap().unwrap();
        assert_eq!(a.entity, b.entity);
        assert_eq!(
            reader
                .linked_rows(&format!("entity:{}", a.entity))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn store_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        p.ingest(Department::Gongan, GOOD.as_bytes()).unwrap();
        // Every key and value the store holds (either engine), and the embedded file itself
        // (free pages included) when there is one.
        let mut bytes = Vec::new();
        p.store
            .read()
            .unwrap()
            .export(|entry| {
                match entry {
                    vault::store::ExportedEntry::Value { key, value, .. } => {
                        bytes.extend_from_slice(key.as_bytes());
                        bytes.extend_from_slice(&value);
                    }
                    vault::store::ExportedEntry::Change { entity, .. } => {
                        bytes.extend_from_slice(entity.as_bytes())
                    }
                }
                Ok(())
            })
            .unwrap();
        assert!(bytes.len() > 500, "the record was stored");
        drop(p);
        if let Ok(file) = std::fs::read(dir.path().join("s.redb")) {
            bytes.extend(file);
        }
        for needle in ["11010519491231002X", "13812345678", "张三"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle}"
            );
        }
    }

    #[test]
    fn non_utf8_body_is_refused_with_advice() {
        let err = split_batch(&[0xD5, 0xC5, 0xC8, 0xFD]).unwrap_err();
        assert!(err.to_string().contains("GBK"));
    }

    /// A dispute a grid worker reported, as the broker builds it.
    fn reported(source_id: &str, parties: Vec<String>) -> Record {
        let mut record = Record::from_value(&serde_json::json!({"kind":"event",
            "source_id":source_id,"version":"2026-11-01T08:00:00Z","type":"dispute",
            "title":"邻里纠纷","grid":"110105001001003","status":"reported"}))
        .unwrap();
        if let Record::Event { body, .. } = &mut record {
            body.party_entities = parties;
            body.routed_to = vec![Department::Sifa];
            body.reported_by = Some("gw-1".to_owned());
        }
        record
    }

    fn step(from: &str, to: &str) -> EventTransition {
        EventTransition {
            at: Utc::now(),
            from: from.to_owned(),
            to: to.to_owned(),
            actor: "co-1".to_owned(),
            note: Some("已受理".to_owned()),
            assignee: None,
        }
    }

    #[test]
    fn an_event_keeps_at_most_its_limit_of_moves() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let receipt = p
            .store_own(
                Department::Wangge,
                reported("RPT-9", Vec::new()),
                Replaces::Nothing,
            )
            .unwrap();
        assert!(receipt.rejected.is_empty(), "{receipt:?}");
        let entity = p.event_entity(Department::Wangge, "RPT-9");
        for _ in 0..MAX_EVENT_TRANSITIONS {
            let facts = p.event_facts(&entity).unwrap().unwrap();
            let outcome = p.transition_event(&facts, step("in_progress", "resolved"));
            assert_eq!(outcome.unwrap(), TransitionOutcome::Stored);
        }
        let facts = p.event_facts(&entity).unwrap().unwrap();
        assert_eq!(
            p.transition_event(&facts, step("resolved", "in_progress"))
                .unwrap(),
            TransitionOutcome::HistoryFull
        );
        assert_eq!(
            p.event_facts(&entity).unwrap().unwrap().version,
            facts.version
        );
    }

    #[test]
    fn a_recorded_event_names_parties_by_id_and_moves_only_from_the_version_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        p.ingest(Department::Gongan, GOOD.as_bytes()).unwrap();
        let resident = resident_entity_id(
            &p.keys,
            &model::IdNumber::parse("11010519491231002X").unwrap(),
        );
        let within = |code: &str| p.within(&[DivisionCode::parse(code).unwrap()]);
        assert_eq!(
            within("110105001001")
                .resident_grid(&resident)
                .unwrap()
                .as_deref(),
            Some("110105001001003")
        );
        assert_eq!(
            within("110105001002").resident_grid(&resident).unwrap(),
            None
        );
        assert_eq!(p.resident_grid("r_00000000000000000000").unwrap(), None);

        let receipt = p
            .store_own(
                Department::Wangge,
                reported("RPT-1", vec![resident.clone()]),
                Replaces::Nothing,
            )
            .unwrap();
        assert_eq!(
            (receipt.created, receipt.rejected.len()),
            (1, 0),
            "{receipt:?}"
        );
        let entity = p.event_entity(Department::Wangge, "RPT-1");
        let facts = p.event_facts(&entity).unwrap().unwrap();
        assert!(facts.managed);
        assert_eq!(facts.status.as_deref(), Some("reported"));
        assert_eq!(facts.event_type.as_deref(), Some("dispute"));
        assert_eq!(facts.routed_to, [Department::Sifa]);
        assert_eq!(facts.parties, std::slice::from_ref(&resident));
        let party_rows = |p: &Pipeline| {
            p.store
                .read()
                .unwrap()
                .linked_rows(&format!("party:{resident}"))
                .unwrap()
        };
        assert_eq!(party_rows(&p), ["wangge/event/RPT-1"]);

        // A new record whose key exists is refused, and the refusal is not quarantined.
        let again = p
            .store_own(
                Department::Wangge,
                reported("RPT-1", Vec::new()),
                Replaces::Nothing,
            )
            .unwrap();
        assert_eq!(again.rejected.len(), 1);
        assert_eq!(again.rejected[0].code, "version_conflict");
        assert!(again.rejected[0].quarantine_id.is_none());
        assert!(p
            .quarantine_page(Department::Wangge, None, true, 10)
            .unwrap()
            .is_empty());

        let before = p.store.read().unwrap().change_seq().unwrap();
        assert_eq!(
            p.transition_event(&facts, step("reported", "accepted"))
                .unwrap(),
            TransitionOutcome::Stored
        );
        let moved = p.event_facts(&entity).unwrap().unwrap();
        assert_eq!(moved.status.as_deref(), Some("accepted"));
        assert!(moved.version > facts.version);
        let changes = p.store.read().unwrap().changes_after(before, 10).unwrap();
        assert!(
            changes.iter().any(|(_, e)| *e == entity),
            "the move is in the change sequence"
        );
        assert_eq!(
            party_rows(&p),
            ["wangge/event/RPT-1"],
            "the new version keeps its parties"
        );
        // Another move built on the version the first one replaced stores nothing.
        assert_eq!(
            p.transition_event(&facts, step("reported", "rejected"))
                .unwrap(),
            TransitionOutcome::Changed
        );
        {
            let snapshot = p.store.read().unwrap();
            let authority = crate::resolve::AuthorityOrder::default();
            let resolver = crate::resolve::Resolver {
                reader: &snapshot,
                keys: &p.keys,
                authority: &authority,
            };
            let profile = resolver.profile(&entity).unwrap().unwrap();
            assert_eq!(profile.fields["status"].value, "accepted");
            let history = profile.fields["history"].value.as_array().unwrap().clone();
            assert_eq!(history.len(), 1);
            assert_eq!(history[0]["to"], "accepted");
            assert_eq!(history[0]["actor"], "co-1");
            assert_eq!(
                profile.related["parties"]
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>(),
                [resident.as_str()]
            );
        }

        // What only the broker writes cannot come from a department.
        for field in ["party_entities", "routed_to", "reported_by", "history"] {
            let mut value = serde_json::json!({"kind":"event","source_id":"WG-1","version":"1",
                "type":"dispute","title":"纠纷","grid":"110105001001003"});
            value[field] = serde_json::json!([resident.clone()]);
            let receipt = p
                .ingest(Department::Wangge, value.to_string().as_bytes())
                .unwrap();
            assert_eq!(receipt.rejected.len(), 1, "{field}");
            assert_eq!(receipt.rejected[0].code, "field_unknown", "{field}");
        }
        let published = r#"{"kind":"event","source_id":"WG-1","version":"1","type":"dispute","title":"纠纷","grid":"110105001001003","status":"reported"}"#;
        // A published event serialises (and so digests) as before the broker's fields
        // existed: re-delivering one stored earlier is `unchanged`, not a conflict.
        let serialised = serde_json::to_value(Record::parse_json(published).unwrap()).unwrap();
        for field in ["party_entities", "routed_to", "reported_by", "history"] {
            assert!(serialised.get(field).is_none(), "{field}: {serialised}");
        }
        assert_eq!(
            p.ingest(Department::Wangge, published.as_bytes())
                .unwrap()
                .created,
            1
        );
        let own = p
            .event_facts(&p.event_entity(Department::Wangge, "WG-1"))
            .unwrap()
            .unwrap();
        assert!(!own.managed);
        assert_eq!(
            p.transition_event(&own, step("reported", "accepted"))
                .unwrap(),
            TransitionOutcome::Changed,
            "a department's own event does not move"
        );
        assert!(
            p.event_facts(&resident).unwrap().is_none(),
            "a resident is no event"
        );
    }
}
