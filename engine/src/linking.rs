//! Probabilistic linking at ingest, for residents without a usable ID number: candidates by
//! blocking keys, Fellegi–Sunter decision with the model estimated on the broker's own data,
//! automatic links above the upper threshold, the review queue between the thresholds, and
//! officers' decisions that are final.
//!
//! Guarantees:
//! - Blocking keys are stored only as keyed hashes (`block:<hmac>` links): the store never
//!   holds a plaintext name, pinyin, birth date or phone through them.
//! - Two different valid ID numbers never merge (the model refuses; and records with a valid
//!   ID keep their deterministic entity).
//! - An officer's decision on a row (linked to another row, or distinct from it) is applied
//!   on every later ingest of that row, before the model is asked.
//! - A link that no second field corroborates (a name and an address alone, say) is made only
//!   at or above the threshold at which labelled pairs measured such pairs alone to meet the
//!   precision target ([`ingest_decision`]); under the model's own estimate, and with a model
//!   stored before that threshold existed, never: the pair goes to review.
//! - Rows that arrived before any model existed are not left alone for good: when a model is
//!   first estimated, one resumable pass ([`relink`]) offers every row that still stands alone
//!   to it, exactly as ingest would have.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::{parse_date, Gender, RecordKind};

use crate::keyed::block_lookup_links;
use crate::linkage::{
    BatchOptions, ComparisonVector, Decision, Field, LinkInput, LinkRecord, LinkageModel,
};
use crate::resolve::open_source;
use vault::crypto::KeyRing;
use vault::store::{Store, StoreError, StoreReader, StoreWriter, StoredSource};

const MODEL_META: &str = "linkage/model";
/// Progress of the pass over rows that arrived before the model ([`relink`]).
const RELINK_META: &str = "linkage/relink";
/// Most candidate rows compared for one incoming record.
const MAX_CANDIDATES: usize = 64;
/// Fewest residents to estimate a model on.
const MIN_TRAINING_RECORDS: usize = 50;
/// Fewest pairs of records labelled as the same person by a shared valid ID number.
const MIN_KNOWN_MATCHES: usize = 20;

/// A pair an officer should look at.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    pub id: String,
    /// The incoming record (without a usable ID number).
    pub row: String,
    /// The candidate it resembles.
    pub candidate: String,
    /// Match weight (log2 likelihood ratio).
    pub score: f64,
    /// `pending`, `linked` or `distinct`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Officers' final decisions about one row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RowDecision {
    /// The row belongs with this row's entity.
    pub link_to: Option<String>,
    /// The row is not the same person as these rows.
    #[serde(default)]
    pub distinct_from: BTreeSet<String>,
    /// The row stands alone (split).
    #[serde(default)]
    pub alone: bool,
}

/// The linkage model in force (none until one is estimated).
#[derive(Debug, Default)]
pub struct Linker {
    /// The stored model and its model, shared as it is (the ingest path reads it per batch).
    current: RwLock<Option<(Arc<StoredModel>, Arc<LinkageModel>)>>,
}

/// A model as stored: one version per estimation, with when and on how many residents it
/// was estimated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    /// 1 for the first estimation, one more for each re-estimation.
    pub version: u32,
    /// `None` for a model stored before versions were kept.
    pub estimated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Resident rows it was estimated on (0 when unknown).
    pub residents: usize,
    /// Rows of every kind stored when it was estimated (0 when unknown): what
    /// [`estimation_due`] compares the store's growth with.
    #[serde(default)]
    pub sources: u64,
    pub model: LinkageModel,
}

impl StoredModel {
    /// The model in one line of `key=value` pairs, for the audit record of its estimation:
    /// version and size, its thresholds with the targets they were chosen for and the rule
    /// that set each, the estimate they followed (labelled pairs or the model's own, with how
    /// many labelled pairs there were) and that estimate at them next to the model's own, and
    /// the threshold at which ingest links a pair no second field corroborates (`none`: never).
    /// Counts and settings only, never a record.
    pub fn summary(&self) -> String {
        let model = &self.model;
        let (estimate, choice, thresholds) = (model.estimate, model.choice, model.thresholds);
        format!(
            "version={} residents={} pairs={} converged={} precision={:.4} recall={:.4} \
             review_share={:.4} review_per_record={:.4} link_threshold={:.3} \
             link_threshold_from={} review_threshold={:.3} review_threshold_from={} \
             target_precision={} review_budget={} budget_records={} estimate_from={} \
             labelled_matches={} labelled_non_matches={} labelled_coverage={:.4} \
             match_share={:.4} model_precision={:.4} uncorroborated_link_threshold={}",
            self.version,
            self.residents,
            model.pairs,
            model.converged,
            estimate.precision,
            estimate.recall,
            estimate.review_share,
            estimate.review_per_record,
            thresholds.upper,
            choice.upper_from.as_str(),
            thresholds.lower,
            choice.lower_from.as_str(),
            choice.target_precision,
            choice.review_budget,
            choice.budget_records,
            choice.estimate_from.as_str(),
            choice.labelled.matches,
            choice.labelled.non_matches,
            choice.labelled_coverage,
            choice.match_share,
            estimate.model_precision,
            thresholds
                .uncorroborated
                .map_or("none".to_owned(), |t| format!("{t:.3}")),
        )
    }

    /// Reads a stored model: the versioned form, or the bare model stored before versions
    /// were kept (version 1).
    fn decode(bytes: &[u8]) -> Option<StoredModel> {
        serde_json::from_slice::<StoredModel>(bytes)
            .ok()
            .or_else(|| {
                serde_json::from_slice::<LinkageModel>(bytes)
                    .ok()
                    .map(|model| StoredModel {
                        version: 1,
                        estimated_at: None,
                        residents: 0,
                        sources: 0,
                        model,
                    })
            })
    }
}

/// When the model in force should be estimated again, from the rows stored (every kind,
/// which the store counts without reading them): the first time once `MIN_SOURCES` are
/// stored, then whenever they have grown by half since the model was estimated (a model of
/// unknown size is re-estimated once). Estimation itself still needs enough residents with
/// shared ID numbers ([`Linker::train`]).
pub fn estimation_due(sources: u64, current: Option<&StoredModel>) -> bool {
    const MIN_SOURCES: u64 = 500;
    if sources < MIN_SOURCES {
        return false;
    }
    match current {
        None => true,
        Some(stored) if stored.sources == 0 => true,
        Some(stored) => sources >= stored.sources + stored.sources / 2,
    }
}

impl Linker {
    /// Loads the model stored by a previous [`Linker::train`], if any.
    pub fn load(store: &Store) -> Result<Linker, StoreError> {
        let current = store
            .meta(MODEL_META)?
            .and_then(|bytes| StoredModel::decode(&bytes))
            .map(|stored| {
                let model = Arc::new(stored.model.clone());
                (Arc::new(stored), model)
            });
        Ok(Linker {
            current: RwLock::new(current),
        })
    }

    pub fn model(&self) -> Option<Arc<LinkageModel>> {
        self.current().map(|(_, model)| model)
    }

    /// The model in force with its version and provenance.
    pub fn stored(&self) -> Option<Arc<StoredModel>> {
        self.current().map(|(stored, _)| stored)
    }

    fn current(&self) -> Option<(Arc<StoredModel>, Arc<LinkageModel>)> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Estimates the model by EM on the broker's residents, stores and installs it; its
    /// thresholds follow the precision measured on the candidate pairs of residents that both
    /// carry valid ID numbers (the household register and every other department's records
    /// with one), compared without them, when there are enough
    /// ([`crate::linkage::calibration`]). `None` when there are too few residents to learn
    /// from.
    pub fn train(
        &self,
        store: &Store,
        keys: &KeyRing,
    ) -> Result<Option<Arc<LinkageModel>>, StoreError> {
        let reader = store.read()?;
        let mut records = Vec::new();
        reader.for_each_source(RecordKind::Resident, |source| {
            if let Some(record) = link_record(keys, source) {
                records.push(record);
            }
        })?;
        if records.len() < MIN_TRAINING_RECORDS {
            return Ok(None);
        }
        // EM needs true matches to learn what agreement looks like: the same valid ID number
        // published by several departments labels them. Without enough, a model would link on
        // a shared name alone, so none is made.
        let mut per_id: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for record in &records {
            if let Some(id) = record.valid_id() {
                *per_id.entry(id).or_insert(0) += 1;
            }
        }
        let known_matches: usize = per_id.values().map(|n| n * n.saturating_sub(1) / 2).sum();
        if known_matches < MIN_KNOWN_MATCHES {
            tracing::info!(
                known_matches,
                "too few cross-department ID matches to estimate a linkage model"
            );
            return Ok(None);
        }
        let sources = reader.source_count()?;
        let resolution = crate::linkage::resolve_batch(&records, &BatchOptions::default());
        let stored = Arc::new(StoredModel {
            version: self.stored().map_or(1, |s| s.version + 1),
            estimated_at: Some(chrono::Utc::now()),
            residents: records.len(),
            sources,
            model: resolution.model,
        });
        let bytes = serde_json::to_vec(&*stored).map_err(|err| StoreError::Corrupt {
            key: MODEL_META.to_owned(),
            reason: err.to_string(),
        })?;
        store.write(|w| w.put_meta(MODEL_META, &bytes))?;
        let model = Arc::new(stored.model.clone());
        let current = Some((stored, model.clone()));
        match self.current.write() {
            Ok(mut guard) => *guard = current,
            Err(poisoned) => *poisoned.into_inner() = current,
        }
        Ok(Some(model))
    }
}

/// The linkage view of a stored resident record (opens only what linking compares).
pub fn link_record(keys: &KeyRing, source: StoredSource) -> Option<LinkRecord> {
    let department = source.department;
    let row = source.key();
    let opened = open_source(keys, source).ok()?;
    let text = |field: &str| {
        opened
            .fields
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let id = text("id_number");
    let name = text("name");
    let phone = text("phone");
    let address = text("address");
    let grid = opened.stored.grid.clone();
    let birth = text("birth_date").and_then(|d| parse_date(&d).ok());
    let gender = text("gender").and_then(|g| Gender::parse(&g).ok());
    Some(LinkRecord::from_input(&LinkInput {
        department,
        row_key: &row,
        id_number: id.as_deref(),
        name: name.as_deref(),
        birth_date: birth,
        gender,
        phone: phone.as_deref(),
        address: address.as_deref(),
        grid: grid.as_deref(),
    }))
}

fn decision_key(row: &str) -> String {
    format!("linkage/decision/{row}")
}

fn review_key(id: &str) -> String {
    format!("linkage/review/{id}")
}

pub fn review_id(row: &str, candidate: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{row}\0{candidate}").as_bytes(),
    );
    format!("rv_{}", hex::encode(&digest.as_ref()[..10]))
}

/// Reads the decisions recorded for `row`.
pub fn row_decision(writer: &StoreWriter, row: &str) -> Result<RowDecision, StoreError> {
    Ok(writer
        .meta(&decision_key(row))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

pub fn put_row_decision(
    writer: &mut StoreWriter,
    row: &str,
    decision: &RowDecision,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(decision).map_err(|err| StoreError::Corrupt {
        key: decision_key(row),
        reason: err.to_string(),
    })?;
    writer.put_meta(&decision_key(row), &bytes)
}

pub fn put_review(writer: &mut StoreWriter, review: &Review) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(review).map_err(|err| StoreError::Corrupt {
        key: review_key(&review.id),
        reason: err.to_string(),
    })?;
    writer.put_meta(&review_key(&review.id), &bytes)
}

pub fn get_review(writer: &StoreWriter, id: &str) -> Result<Option<Review>, StoreError> {
    Ok(writer
        .meta(&review_key(id))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Every review, oldest first.
pub fn reviews(reader: &StoreReader) -> Result<Vec<Review>, StoreError> {
    let mut out: Vec<Review> = reader
        .meta_with_prefix("linkage/review/")?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect();
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Decides the entity of an incoming resident row without a valid ID number, inside the
/// ingest transaction. Returns the entity to use (if linked) and a review to file (if unsure).
/// In order: an officer's decision; an identity document the row shares with another
/// person's row (`documents`, their stable numbers) when their birth dates do not disagree;
/// then, if a model exists, the model.
pub fn link_incoming(
    writer: &StoreWriter,
    keys: &KeyRing,
    model: Option<&LinkageModel>,
    incoming: &StoredSource,
    record: &LinkRecord,
    documents: &[String],
) -> Result<(Option<String>, Option<Review>), StoreError> {
    let row = incoming.key();
    let decision = row_decision(writer, &row)?;
    if decision.alone {
        return Ok((None, None));
    }
    if let Some(target) = &decision.link_to {
        if let Some(target) = writer.source(target)?.filter(|s| !s.deleted) {
            return Ok((Some(target.entity), None));
        }
    }
    if let Some(entity) = document_match(writer, keys, incoming, record, documents, &decision)? {
        return Ok((Some(entity), None));
    }
    let Some(model) = model else {
        return Ok((None, None));
    };
    let mut candidates = BTreeSet::new();
    for link in block_lookup_links(keys, record) {
        for candidate in writer.linked_rows(&link)? {
            if candidate != row && !decision.distinct_from.contains(&candidate) {
                candidates.insert(candidate);
            }
            if candidates.len() >= MAX_CANDIDATES {
                break;
            }
        }
    }
    let mut best_link: Option<(f64, String)> = None;
    let mut best_review: Option<(f64, String)> = None;
    for candidate_row in candidates {
        // Rows already of this row's entity are not another person to link to.
        let Some(candidate) = writer.source(&candidate_row)?.filter(|s| {
            !s.deleted && s.kind == RecordKind::Resident && s.entity != incoming.entity
        }) else {
            continue;
        };
        let entity = candidate.entity.clone();
        let Some(other) = link_record(keys, candidate) else {
            continue;
        };
        let vector = ComparisonVector::compare(record, &other);
        let score = model.vector_weight(&vector);
        match ingest_decision(model, &vector) {
            Decision::Link if best_link.as_ref().is_none_or(|(s, _)| score > *s) => {
                best_link = Some((score, entity));
            }
            Decision::Review if best_review.as_ref().is_none_or(|(s, _)| score > *s) => {
                best_review = Some((score, candidate_row));
            }
            _ => {}
        }
    }
    if let Some((_, entity)) = best_link {
        return Ok((Some(entity), None));
    }
    Ok((
        None,
        best_review.map(|(score, candidate)| Review {
            id: review_id(&row, &candidate),
            row: row.clone(),
            candidate,
            score,
            status: "pending".to_owned(),
            decided_by: None,
            created_at: chrono::Utc::now(),
        }),
    ))
}

/// Progress of the pass that offers rows ingested before the model existed to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelinkProgress {
    /// The last row key visited; the pass resumes after it.
    pub cursor: Option<String>,
    pub done: bool,
    /// Rows visited (every kind).
    pub rows: u64,
    /// Resident rows visited that stood alone (no usable ID number, not linked).
    pub alone: u64,
    /// Rows moved to another entity: those the model linked, with the rows already linked
    /// to them.
    pub linked: u64,
    /// Pairs filed for an officer.
    pub reviews: u64,
}

crate::rotation::impl_walk!(RelinkProgress);

/// Starts a new relink pass from the first row (when a model was just estimated).
pub fn schedule_relink(store: &Store) -> Result<(), StoreError> {
    let bytes =
        serde_json::to_vec(&RelinkProgress::default()).map_err(|e| StoreError::Corrupt {
            key: RELINK_META.to_owned(),
            reason: e.to_string(),
        })?;
    store.write(|w| w.put_meta(RELINK_META, &bytes))
}

/// The relink pass's progress, if one was ever scheduled.
pub fn relink_progress(store: &Store) -> Result<Option<RelinkProgress>, StoreError> {
    store
        .meta(RELINK_META)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: RELINK_META.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Offers every resident row that stands alone (no usable ID number, never linked) to
/// `model`, as [`link_incoming`] does at ingest: officers' decisions first, then
/// [`ingest_decision`], unsure pairs to the review queue. A linked row is rewritten with its new
/// entity (both entities get a change, so the search index and name directory follow).
/// Resumable: one transaction per batch, the cursor kept in the store; stops early when
/// `stop` turns true or after `limit` rows.
pub fn relink(
    store: &Store,
    keys: &KeyRing,
    model: &LinkageModel,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<RelinkProgress, crate::rotation::RotationError> {
    let Some(mut progress) = relink_progress(store)? else {
        return Ok(RelinkProgress {
            done: true,
            ..RelinkProgress::default()
        });
    };
    crate::rotation::walk(
        store,
        "",
        RELINK_META,
        limit,
        stop,
        &mut progress,
        |w, rows, progress| {
            if rows.is_empty() {
                progress.done = true;
            }
            progress.rows += rows.len() as u64;
            for row in rows {
                let offered = offer_alone_row(w, keys, Some(model), row)?;
                progress.alone += u64::from(offered.alone);
                progress.linked += offered.moved;
                progress.reviews += u64::from(offered.reviewed);
            }
            Ok(())
        },
    )?;
    Ok(progress)
}

/// The entity of another person's row that shares an identity document with `incoming`
/// and whose birth date does not disagree with it; a row with a valid ID number first.
/// A shared passport or permit number is as strong as a shared ID number: no model needed.
fn document_match(
    writer: &StoreWriter,
    keys: &KeyRing,
    incoming: &StoredSource,
    record: &LinkRecord,
    documents: &[String],
    decision: &RowDecision,
) -> Result<Option<String>, StoreError> {
    let row = incoming.key();
    let mut best: Option<(bool, String)> = None;
    for key in documents {
        for link in crate::keyed::document_lookup_links(keys, key) {
            for candidate_row in writer.linked_rows(&link)? {
                if candidate_row == row || decision.distinct_from.contains(&candidate_row) {
                    continue;
                }
                let Some(candidate) = writer.source(&candidate_row)?.filter(|s| {
                    !s.deleted && s.kind == RecordKind::Resident && s.entity != incoming.entity
                }) else {
                    continue;
                };
                let entity = candidate.entity.clone();
                let Some(other) = link_record(keys, candidate) else {
                    continue;
                };
                let disagree = matches!(
                    (record.birth_date(), other.birth_date()),
                    (Some(a), Some(b)) if a != b
                );
                if disagree {
                    continue;
                }
                let with_id = other.valid_id().is_some();
                if best.as_ref().is_none_or(|(had_id, _)| with_id && !had_id) {
                    best = Some((with_id, entity));
                }
            }
        }
    }
    Ok(best.map(|(_, entity)| entity))
}

/// The stable numbers of the identity documents of a stored resident row (opening only
/// `documents`).
pub fn stored_document_keys(keys: &KeyRing, source: &StoredSource) -> Vec<String> {
    let Ok(opened) = crate::resolve::open_source_fields(keys, source.clone(), Some(&["documents"]))
    else {
        return Vec::new();
    };
    opened
        .fields
        .get("documents")
        .cloned()
        .and_then(|v| serde_json::from_value::<Vec<model::IdentityDocument>>(v).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(model::IdentityDocument::match_key)
        .collect()
}

/// What offering one row to the model did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// The row stood alone (a live resident row without a usable ID number, never linked).
    pub alone: bool,
    /// Rows moved into another entity: the row and the rows linked to it before.
    pub moved: u64,
    /// A pair was filed for an officer.
    pub reviewed: bool,
}

/// Offers `row` to `model` if it stands alone, exactly as [`link_incoming`] does at ingest;
/// a linked row moves with every row already linked to its stand-alone entity (both
/// entities get a change, so the search index and the name directory follow). A row whose
/// text cannot be handled (a panic) is skipped and listed for the administrator.
pub fn offer_alone_row(
    w: &mut StoreWriter,
    keys: &KeyRing,
    model: Option<&LinkageModel>,
    row: &str,
) -> Result<Offered, StoreError> {
    let mut offered = Offered::default();
    let Some(source) = w
        .source(row)?
        .filter(|s| !s.deleted && s.kind == RecordKind::Resident)
    else {
        return Ok(offered);
    };
    if source.entity != crate::keyed::source_entity_id(keys, row) {
        return Ok(offered);
    }
    let Some(Some(record)) =
        crate::problems::isolate("linkage", row, || link_record(keys, source.clone()))
    else {
        return Ok(offered);
    };
    offered.alone = true;
    let documents = stored_document_keys(keys, &source);
    let Some(linked) = crate::problems::isolate("linkage", row, || {
        link_incoming(w, keys, model, &source, &record, &documents)
    }) else {
        return Ok(offered);
    };
    let (entity, review) = linked?;
    if let Some(entity) = entity.filter(|e| *e != source.entity) {
        for member in w.linked_rows(&format!("entity:{}", source.entity))? {
            let Some(member) = w.source(&member)? else {
                continue;
            };
            let mut moved = member.clone();
            moved.move_to(&entity);
            w.put_source(&moved, Some(&member))?;
            offered.moved += 1;
        }
    }
    if let Some(review) = review {
        if get_review(w, &review.id)?.is_none() {
            put_review(w, &review)?;
            offered.reviewed = true;
        }
    }
    Ok(offered)
}

/// A resident row with a valid ID number has just been stored: every earlier row that
/// stands alone and shares an identity document or (with a model) a blocking key with it is
/// offered again, so the
/// person's ID-less records join the person in the same transaction instead of waiting for
/// an officer or a re-delivery. Returns what the offers did, summed.
pub fn pull_in(
    w: &mut StoreWriter,
    keys: &KeyRing,
    model: Option<&LinkageModel>,
    arrived: &StoredSource,
    record: &LinkRecord,
    documents: &[String],
) -> Result<Offered, StoreError> {
    let row = arrived.key();
    let mut candidates = BTreeSet::new();
    let mut lookups: Vec<String> = documents
        .iter()
        .flat_map(|key| crate::keyed::document_lookup_links(keys, key))
        .collect();
    if model.is_some() {
        lookups.extend(block_lookup_links(keys, record));
    }
    for link in lookups {
        for candidate in w.linked_rows(&link)? {
            if candidate != row {
                candidates.insert(candidate);
            }
        }
        if candidates.len() >= MAX_CANDIDATES {
            break;
        }
    }
    let mut total = Offered::default();
    for candidate in candidates {
        let offered = offer_alone_row(w, keys, model, &candidate)?;
        total.alone |= offered.alone;
        total.moved += offered.moved;
        total.reviewed |= offered.reviewed;
    }
    Ok(total)
}

/// What ingest does with a pair: the model's decision, except that a link no second field
/// corroborates ([`ComparisonVector::corroborated`]: birth date, phone, or the same room with
/// the birth year) must also reach the threshold measured for such pairs alone
/// ([`LinkageModel::links_uncorroborated`]), else the pair goes to review; and a review needs
/// names at least as close as similar pinyin (else the pair is distinct).
pub fn ingest_decision(model: &LinkageModel, vector: &ComparisonVector) -> Decision {
    match model.decide_vector(vector) {
        // A name alone (with an address) links only where labelled pairs measured that such
        // pairs meet the target by themselves; a model's own estimate is overconfident on
        // names and addresses, so with it they always go to an officer.
        Decision::Link if !vector.corroborated() && !model.links_uncorroborated(vector) => {
            Decision::Review
        }
        Decision::Review if !names_close(vector) => Decision::Distinct,
        other => other,
    }
}

fn level(vector: &ComparisonVector, field: Field) -> u8 {
    vector.levels[field as usize]
}

/// Names agree at least as similar pinyin: below that, an officer is not asked.
fn names_close(vector: &ComparisonVector) -> bool {
    level(vector, Field::Name) <= 2
}

/// What an officer's decision on a review did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one value per request, moved once
pub enum Decided {
    /// No such review, or one of its rows is gone or outside the officer's scope.
    NotFound,
    /// The pair was decided before; decisions are final.
    AlreadyDecided,
    /// The decision is stored (and, for a link, the row moved into the candidate's entity).
    Done {
        review: Review,
        record: StoredSource,
        candidate: StoredSource,
    },
}

/// What a split did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one value per request, moved once
pub enum SplitOutcome {
    /// No such live row, or outside the officer's scope.
    NotFound,
    /// The row already stands alone.
    NotLinked,
    /// The row carries a valid ID number: it belongs to that person's entity.
    HasIdNumber,
    /// The row now stands alone (and stays apart on later ingests).
    Split(StoredSource),
}

/// The review pairs (pending only unless `all`) whose two rows still exist and satisfy
/// `in_scope`, with those rows.
pub fn review_pairs(
    store: &Store,
    all: bool,
    in_scope: &dyn Fn(&StoredSource) -> bool,
) -> Result<Vec<(Review, StoredSource, StoredSource)>, StoreError> {
    let snapshot = store.read()?;
    let mut pairs = Vec::new();
    for review in reviews(&snapshot)? {
        if !all && review.status != "pending" {
            continue;
        }
        let (Some(a), Some(b)) = (
            snapshot.source(&review.row)?,
            snapshot.source(&review.candidate)?,
        ) else {
            continue;
        };
        if in_scope(&a) && in_scope(&b) {
            pairs.push((review, a, b));
        }
    }
    Ok(pairs)
}

/// Records an officer's final decision on review `id`: `link` moves the row into the
/// candidate's entity; otherwise the two stay apart on every later ingest.
pub fn decide_review(
    store: &Store,
    id: &str,
    link: bool,
    decided_by: &str,
    in_scope: &dyn Fn(&StoredSource) -> bool,
) -> Result<Decided, StoreError> {
    store.write(|w| -> Result<Decided, StoreError> {
        let Some(mut review) = get_review(w, id)? else {
            return Ok(Decided::NotFound);
        };
        let (Some(a), Some(b)) = (w.source(&review.row)?, w.source(&review.candidate)?) else {
            return Ok(Decided::NotFound);
        };
        if !in_scope(&a) || !in_scope(&b) {
            return Ok(Decided::NotFound);
        }
        if review.status != "pending" {
            return Ok(Decided::AlreadyDecided);
        }
        let mut decision = row_decision(w, &review.row)?;
        let mut moved = a.clone();
        if link {
            decision.link_to = Some(review.candidate.clone());
            decision.alone = false;
            moved.move_to(&b.entity);
            w.put_source(&moved, Some(&a))?;
            review.status = "linked".to_owned();
        } else {
            decision.distinct_from.insert(review.candidate.clone());
            review.status = "distinct".to_owned();
        }
        review.decided_by = Some(decided_by.to_owned());
        put_row_decision(w, &review.row, &decision)?;
        put_review(w, &review)?;
        Ok(Decided::Done {
            review,
            record: moved,
            candidate: b,
        })
    })
}

/// Takes resident row `row` out of the entity it was linked into: it stands alone as
/// `own_entity` and stays apart on every later ingest.
pub fn split_row(
    store: &Store,
    row: &str,
    own_entity: &str,
    in_scope: &dyn Fn(&StoredSource) -> bool,
) -> Result<SplitOutcome, StoreError> {
    store.write(|w| -> Result<SplitOutcome, StoreError> {
        let Some(current) = w.source(row)?.filter(|s| !s.deleted) else {
            return Ok(SplitOutcome::NotFound);
        };
        if !in_scope(&current) {
            return Ok(SplitOutcome::NotFound);
        }
        if current.entity == own_entity {
            return Ok(SplitOutcome::NotLinked);
        }
        if current.sealed.contains_key("id_number") {
            return Ok(SplitOutcome::HasIdNumber);
        }
        let mut moved = current.clone();
        moved.move_to(own_entity);
        w.put_source(&moved, Some(&current))?;
        let decision = RowDecision {
            link_to: None,
            alone: true,
            ..row_decision(w, row)?
        };
        put_row_decision(w, row, &decision)?;
        Ok(SplitOutcome::Split(moved))
    })
}

/// Counts of how the resident rows in scope were resolved, and of the review queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResolutionCounts {
    /// Live resident rows.
    pub residents: u64,
    /// Of them, rows with a valid ID number (their entity follows from it).
    pub with_id: u64,
    /// Rows without one that the model or an officer linked to a person.
    pub linked_without_id: u64,
    /// Rows without one that stand alone.
    pub alone_without_id: u64,
    /// Review pairs whose two rows are in scope, by status.
    pub reviews_pending: u64,
    pub reviews_linked: u64,
    pub reviews_distinct: u64,
}

/// How the resident rows that satisfy `in_scope` were resolved (reading row metadata only:
/// no sealed field is opened).
pub fn resolution_counts(
    store: &Store,
    keys: &KeyRing,
    in_scope: &dyn Fn(&StoredSource) -> bool,
) -> Result<ResolutionCounts, StoreError> {
    let snapshot = store.read()?;
    let mut counts = ResolutionCounts::default();
    snapshot.for_each_source(RecordKind::Resident, |source| {
        if source.deleted || !in_scope(&source) {
            return;
        }
        counts.residents += 1;
        let row = source.key();
        if source.identified {
            counts.with_id += 1;
        } else if source.entity == crate::keyed::source_entity_id(keys, &row) {
            counts.alone_without_id += 1;
        } else {
            counts.linked_without_id += 1;
        }
    })?;
    for review in reviews(&snapshot)? {
        let (Some(a), Some(b)) = (
            snapshot.source(&review.row)?,
            snapshot.source(&review.candidate)?,
        ) else {
            continue;
        };
        if !(in_scope(&a) && in_scope(&b)) {
            continue;
        }
        match review.status.as_str() {
            "pending" => counts.reviews_pending += 1,
            "linked" => counts.reviews_linked += 1,
            _ => counts.reviews_distinct += 1,
        }
    }
    Ok(counts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored(sources: u64) -> StoredModel {
        let model = LinkageModel::estimate(&[], 0);
        StoredModel {
            version: 1,
            estimated_at: None,
            residents: 0,
            sources,
            model,
        }
    }

    #[test]
    fn the_model_is_estimated_first_at_500_rows_then_as_they_grow_by_half() {
        assert!(!estimation_due(499, None));
        assert!(estimation_due(500, None));
        let first = stored(1_000);
        assert!(!estimation_due(1_499, Some(&first)));
        assert!(estimation_due(1_500, Some(&first)));
        // A model stored before sizes were kept is re-estimated once.
        assert!(estimation_due(600, Some(&stored(0))));
        assert!(
            !estimation_due(100, Some(&stored(0))),
            "never below the minimum"
        );
    }

    #[test]
    fn a_model_stored_before_versions_loads_as_version_one() {
        let bare = serde_json::to_vec(&LinkageModel::estimate(&[], 0)).unwrap();
        let loaded = StoredModel::decode(&bare).unwrap();
        assert_eq!((loaded.version, loaded.sources), (1, 0));
        assert!(loaded.estimated_at.is_none());
        let versioned = serde_json::to_vec(&StoredModel {
            version: 4,
            ..stored(2_000)
        })
        .unwrap();
        assert_eq!(StoredModel::decode(&versioned).unwrap().version, 4);
        assert!(StoredModel::decode(b"not json").is_none());
    }

    /// A model as stored before its thresholds followed its own estimate: fixed posterior
    /// thresholds, an estimate without review counts, no threshold choice.
    fn model_before_threshold_choice() -> serde_json::Value {
        let mut model = serde_json::to_value(LinkageModel::estimate(&[], 0)).unwrap();
        let fields = model.as_object_mut().unwrap();
        fields.remove("choice");
        fields.insert(
            "estimate".to_owned(),
            serde_json::json!({"precision": 0.9788, "recall": 0.9968, "review_share": 0.0079}),
        );
        fields.insert(
            "thresholds".to_owned(),
            serde_json::json!({"lower": -5.35, "upper": -1.1}),
        );
        model
    }

    #[test]
    fn models_stored_before_the_threshold_choice_still_decode_and_keep_their_thresholds() {
        use crate::linkage::{EstimateSource, LabelCounts, LinkRule, ReviewRule, ThresholdChoice};
        let legacy = model_before_threshold_choice();
        let as_version = serde_json::json!({"version": 3, "estimated_at": null, "residents": 900,
            "sources": 2_000, "model": legacy});
        for bytes in [
            serde_json::to_vec(&legacy).unwrap(),
            serde_json::to_vec(&as_version).unwrap(),
        ] {
            let loaded = StoredModel::decode(&bytes).expect("an old model decodes");
            let model = &loaded.model;
            assert_eq!(
                (model.thresholds.lower, model.thresholds.upper),
                (-5.35, -1.1)
            );
            assert_eq!(model.estimate.precision, 0.9788);
            assert_eq!(model.estimate.review_pairs, 0);
            // Its thresholds were the floors, and no target was set.
            assert_eq!(model.choice, ThresholdChoice::default());
            assert_eq!(model.choice.upper_from, LinkRule::Floor);
            assert_eq!(model.choice.lower_from, ReviewRule::Floor);
            assert_eq!(model.choice.target_precision, 0.0);
            // Nor was it calibrated on labelled pairs.
            assert_eq!(model.choice.estimate_from, EstimateSource::Model);
            assert_eq!(model.choice.labelled, LabelCounts::default());
            assert_eq!(model.estimate.model_precision, 0.0);
        }
        assert_eq!(
            StoredModel::decode(&serde_json::to_vec(&as_version).unwrap())
                .unwrap()
                .version,
            3
        );
    }

    #[test]
    fn models_whose_thresholds_followed_the_models_own_estimate_decode_as_such() {
        use crate::linkage::{EstimateSource, LabelCounts, LinkRule, ReviewRule};
        // Stored when the thresholds followed the model's own estimate, before labelled pairs.
        let mut model = model_before_threshold_choice();
        model.as_object_mut().unwrap().insert(
            "choice".to_owned(),
            serde_json::json!({"target_precision": 0.995, "review_budget": 0.02,
                "budget_records": 4_000, "upper_from": "estimate", "lower_from": "budget"}),
        );
        let loaded = StoredModel::decode(&serde_json::to_vec(&model).unwrap()).unwrap();
        let choice = loaded.model.choice;
        assert_eq!(
            (choice.upper_from, choice.lower_from),
            (LinkRule::Estimate, ReviewRule::Budget)
        );
        assert_eq!(choice.budget_records, 4_000);
        assert_eq!(choice.estimate_from, EstimateSource::Model);
        assert_eq!(choice.labelled, LabelCounts::default());
        assert_eq!(choice.match_share, 0.0);
    }

    #[test]
    fn the_audit_summary_names_the_thresholds_targets_and_rules() {
        let legacy: LinkageModel = serde_json::from_value(model_before_threshold_choice()).unwrap();
        let summary = StoredModel {
            version: 7,
            model: legacy,
            ..stored(3_000)
        }
        .summary();
        for part in [
            "version=7 ",
            "link_threshold=-1.100 ",
            "link_threshold_from=floor ",
            "review_threshold=-5.350 ",
            "review_threshold_from=floor ",
            "target_precision=0 ",
            "precision=0.9788 ",
            "estimate_from=model ",
            "labelled_matches=0 labelled_non_matches=0 ",
        ] {
            assert!(summary.contains(part), "{part:?} not in {summary}");
        }
        assert!(!summary.contains('\n'));
    }

    #[test]
    fn a_model_keeps_how_its_thresholds_were_chosen_through_storage() {
        use crate::linkage::compare::{IdRelation, FIELDS, LEVEL_COUNTS};
        // Pairs that agree on everything, pairs that disagree on everything, pairs between.
        let vector = |differ: &[usize]| {
            let mut levels = [0u8; FIELDS];
            for f in differ {
                levels[*f] = (LEVEL_COUNTS[*f] - 1) as u8;
            }
            ComparisonVector {
                levels,
                ids: IdRelation::Undetermined,
            }
        };
        let mut pairs = Vec::new();
        pairs.extend(std::iter::repeat_n(vector(&[]), 900));
        pairs.extend(std::iter::repeat_n(vector(&[0, 1, 2, 3, 4, 5]), 9_000));
        pairs.extend(std::iter::repeat_n(vector(&[1]), 40));
        pairs.extend(std::iter::repeat_n(vector(&[2]), 40));
        // And pairs that valid ID numbers label, enough of each kind to calibrate on.
        let labelled = |differ: &[usize], ids: IdRelation| ComparisonVector {
            ids,
            ..vector(differ)
        };
        pairs.extend(std::iter::repeat_n(
            labelled(&[5], IdRelation::BothValidEqual),
            300,
        ));
        pairs.extend(std::iter::repeat_n(
            labelled(&[0, 1, 2, 3, 5], IdRelation::BothValidDifferent),
            250,
        ));
        let model = LinkageModel::estimate(&pairs, 5_000);
        assert_eq!(model.choice.budget_records, 5_000);
        assert_eq!(model.choice.target_precision, 0.995);
        assert_eq!(
            model.choice.estimate_from,
            crate::linkage::EstimateSource::LabelledPairs
        );
        let bytes = serde_json::to_vec(&StoredModel {
            model: model.clone(),
            ..stored(10_000)
        })
        .unwrap();
        let loaded = StoredModel::decode(&bytes).unwrap();
        assert_eq!(loaded.model.choice, model.choice);
        assert_eq!(loaded.model.thresholds, model.thresholds);
        assert_eq!(loaded.model.estimate, model.estimate);
        let summary = loaded.summary();
        assert!(summary.contains("target_precision=0.995 review_budget=0.02 budget_records=5000"));
        assert!(
            summary.contains(
                "estimate_from=labelled_pairs labelled_matches=300 labelled_non_matches=250 "
            ),
            "{summary}"
        );
        assert!(summary.contains(&format!(
            "link_threshold_from={} ",
            model.choice.upper_from.as_str()
        )));
    }

    /// A pair with the same name in the same room, and nothing else to compare; and the same
    /// name and birth date in the same room.
    fn name_and_room() -> (ComparisonVector, ComparisonVector) {
        use crate::linkage::compare::{IdRelation, FIELDS, NULL_LEVEL};
        let mut levels = [NULL_LEVEL; FIELDS];
        levels[Field::Name as usize] = 0;
        levels[Field::Address as usize] = 0;
        let alone = ComparisonVector {
            levels,
            ids: IdRelation::Undetermined,
        };
        let mut with_birth = alone;
        with_birth.levels[Field::BirthDate as usize] = 0;
        (alone, with_birth)
    }

    #[test]
    fn ingest_links_a_pair_without_corroboration_only_at_or_above_its_own_threshold() {
        let (alone, with_birth) = name_and_room();
        assert!(!alone.corroborated() && with_birth.corroborated());
        // Every field: the closest level nine times in ten for matches, the farthest for
        // non-matches.
        let mut model = LinkageModel::estimate(&[], 0);
        for (f, &levels) in crate::linkage::compare::LEVEL_COUNTS.iter().enumerate() {
            for l in 0..levels {
                let rest = 0.1 / (levels - 1) as f64;
                model.m[f][l] = if l == 0 { 0.9 } else { rest };
                model.u[f][l] = if l == levels - 1 { 0.9 } else { rest };
            }
        }
        let weight = model.vector_weight(&alone);
        assert!(model.vector_weight(&with_birth) > weight);
        model.thresholds.upper = weight - 1.0;
        model.thresholds.lower = weight - 5.0;
        // The model links both; without a threshold of its own the uncorroborated one goes to
        // an officer (the model's own estimate, or a model stored before it existed).
        model.thresholds.uncorroborated = None;
        assert_eq!(model.decide_vector(&alone), Decision::Link);
        assert_eq!(ingest_decision(&model, &alone), Decision::Review);
        assert_eq!(ingest_decision(&model, &with_birth), Decision::Link);
        // Measured to meet the target at or above a weight: it links there, not below.
        model.thresholds.uncorroborated = Some(weight - 0.5);
        assert_eq!(ingest_decision(&model, &alone), Decision::Link);
        model.thresholds.uncorroborated = Some(weight);
        assert_eq!(ingest_decision(&model, &alone), Decision::Link);
        model.thresholds.uncorroborated = Some(weight + 0.5);
        assert_eq!(ingest_decision(&model, &alone), Decision::Review);
        assert_eq!(ingest_decision(&model, &with_birth), Decision::Link);
        // It never loosens the model's own link threshold.
        model.thresholds.uncorroborated = Some(weight - 10.0);
        model.thresholds.upper = weight + 1.0;
        assert_eq!(ingest_decision(&model, &alone), Decision::Review);
        model.thresholds.lower = weight + 0.5;
        assert_eq!(ingest_decision(&model, &alone), Decision::Distinct);
    }

    #[test]
    fn a_model_stored_before_the_uncorroborated_threshold_keeps_the_corroboration_rule() {
        let (alone, with_birth) = name_and_room();
        let legacy = model_before_threshold_choice();
        assert!(legacy["thresholds"].get("uncorroborated").is_none());
        let loaded = StoredModel::decode(&serde_json::to_vec(&legacy).unwrap()).unwrap();
        let model = &loaded.model;
        assert_eq!(model.thresholds.uncorroborated, None);
        assert!(model.vector_weight(&alone) >= model.thresholds.upper);
        assert_eq!(model.decide_vector(&alone), Decision::Link);
        assert_eq!(ingest_decision(model, &alone), Decision::Review);
        assert_eq!(ingest_decision(model, &with_birth), Decision::Link);
        assert!(loaded
            .summary()
            .ends_with(" uncorroborated_link_threshold=none"));
        // One stored with it keeps it, and links such a pair above it.
        let mut newer = loaded.clone();
        newer.model.thresholds.uncorroborated = Some(model.vector_weight(&alone) - 0.25);
        let back = StoredModel::decode(&serde_json::to_vec(&newer).unwrap()).unwrap();
        assert_eq!(back.model.thresholds, newer.model.thresholds);
        assert_eq!(ingest_decision(&back.model, &alone), Decision::Link);
        assert!(
            back.summary().contains(&format!(
                " uncorroborated_link_threshold={:.3}",
                model.vector_weight(&alone) - 0.25
            )),
            "{}",
            back.summary()
        );
    }
}
