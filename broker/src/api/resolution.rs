//! The entity-resolution review queue, for community and street officers: pairs the model was
//! unsure about, the officer's final decision (link or distinct), and splitting a record out
//! of the entity it was linked into.
//!
//! Guarantees: only officers see and decide, and only for records inside their jurisdiction;
//! a decision is stored as final (it is applied on every later ingest of the record, before
//! the model) and the move it causes keeps every source record's provenance; every action is
//! audited.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use audit::Decision as AuditDecision;
use model::DivisionCode;

use engine::linking::{Decided, SplitOutcome};
use vault::store::StoredSource;

use super::error::{ApiError, ErrorBody};
use super::extract::Reader;
use super::routes::Routes;
use super::{parse_department, AppState};

const OFFICER_ROLES: [&str; 2] = ["community_officer", "street_officer"];

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/resolution/reviews", list_reviews)
        .post("/v1/resolution/reviews/{id}", decide_review)
        .post("/v1/resolution/split", split)
        .get("/v1/resolution/report", report)
}

/// Only officers review entity resolution; a refusal is audited before it leaves.
async fn require_officer(
    state: &AppState,
    reader: &Reader,
    endpoint: &str,
) -> Result<(), ApiError> {
    if OFFICER_ROLES.iter().any(|r| reader.principal.has_role(r)) {
        return Ok(());
    }
    Err(state
        .refuse_reader(
            reader,
            endpoint,
            ApiError::forbidden(
                "role_cannot_resolve",
                "only community and street officers review entity resolution",
            ),
        )
        .await)
}

fn in_scope(reader: &Reader, source: &StoredSource) -> bool {
    source
        .grid
        .as_deref()
        .and_then(|g| DivisionCode::parse(g).ok())
        .is_some_and(|grid| reader.principal.covers(&grid))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReviewQuery {
    /// `pending` (default) or `all`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewSide {
    pub department: String,
    pub source_id: String,
    /// The unified entity the record is in now.
    pub entity: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    pub id: String,
    pub score: f64,
    pub status: String,
    /// The record that arrived without a usable ID number.
    pub record: ReviewSide,
    /// The record it resembles.
    pub candidate: ReviewSide,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewList {
    pub reviews: Vec<ReviewItem>,
}

fn side(source: &StoredSource) -> ReviewSide {
    ReviewSide {
        department: source.department.code().to_owned(),
        source_id: source.source_id.clone(),
        entity: source.entity.clone(),
    }
}

/// The linkage model in force: its version, when and on what it was estimated, its
/// thresholds, and its own estimate of its precision, recall and review share.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelReport {
    pub version: u32,
    /// Absent for a model stored before versions were kept.
    pub estimated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Resident rows it was estimated on (0 when unknown).
    pub residents: usize,
    /// Candidate pairs it was estimated on.
    pub pairs: u64,
    /// Expected share of true matches among automatic links.
    pub estimated_precision: f64,
    /// Expected share of true matches linked automatically.
    pub estimated_recall: f64,
    /// Share of candidate pairs sent to review.
    pub estimated_review_share: f64,
    /// Match weights (bits) at which a pair is linked, and sent to review.
    pub link_threshold: f64,
    pub review_threshold: f64,
}

/// How the resident records in the officer's jurisdiction were resolved.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResolutionReport {
    /// Absent until enough residents with shared ID numbers are stored.
    pub model: Option<ModelReport>,
    /// Live resident records.
    pub residents: u64,
    /// Records with a valid ID number.
    pub with_id: u64,
    /// Records without one, linked to a person by the model or an officer.
    pub linked_without_id: u64,
    /// Records without one that stand alone.
    pub alone_without_id: u64,
    pub reviews_pending: u64,
    pub reviews_linked: u64,
    pub reviews_distinct: u64,
    /// Review pairs (pending and decided) per record without an ID number.
    pub review_share_without_id: f64,
}

/// Counts of how the records in the officer's jurisdiction were resolved, and the model in
/// force with its own estimates. Counts only: no record is named.
#[utoipa::path(get, path = "/v1/resolution/report", params(("X-Purpose" = String, Header)),
    responses((status = 200, body = ResolutionReport), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    reader: Reader,
) -> Result<Json<ResolutionReport>, ApiError> {
    require_officer(&state, &reader, "/v1/resolution/report").await?;
    let pipeline = state.pipeline.clone();
    let reader2 = reader.clone();
    let counts = tokio::task::spawn_blocking(move || {
        pipeline.resolution_counts(&|source| in_scope(&reader2, source))
    })
    .await??;
    let model = state.pipeline.linker().stored().map(|stored| ModelReport {
        version: stored.version,
        estimated_at: stored.estimated_at,
        residents: stored.residents,
        pairs: stored.model.pairs,
        estimated_precision: stored.model.estimate.precision,
        estimated_recall: stored.model.estimate.recall,
        estimated_review_share: stored.model.estimate.review_share,
        link_threshold: stored.model.thresholds.upper,
        review_threshold: stored.model.thresholds.lower,
    });
    let without_id = counts.linked_without_id + counts.alone_without_id;
    let reviews = counts.reviews_pending + counts.reviews_linked + counts.reviews_distinct;
    let mut record = state.reader_record(
        &reader,
        "resolution_report",
        "/v1/resolution/report",
        AuditDecision::Allow,
    );
    record.result_count = counts.residents;
    state.append_audit(record).await?;
    Ok(Json(ResolutionReport {
        model,
        residents: counts.residents,
        with_id: counts.with_id,
        linked_without_id: counts.linked_without_id,
        alone_without_id: counts.alone_without_id,
        reviews_pending: counts.reviews_pending,
        reviews_linked: counts.reviews_linked,
        reviews_distinct: counts.reviews_distinct,
        review_share_without_id: if without_id == 0 {
            0.0
        } else {
            reviews as f64 / without_id as f64
        },
    }))
}

/// Pairs waiting for an officer's decision (open the two profiles to compare them).
#[utoipa::path(get, path = "/v1/resolution/reviews", params(ReviewQuery, ("X-Purpose" = String, Header)),
    responses((status = 200, body = ReviewList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_reviews(
    State(state): State<AppState>,
    reader: Reader,
    Query(query): Query<ReviewQuery>,
) -> Result<Json<ReviewList>, ApiError> {
    require_officer(&state, &reader, "/v1/resolution/reviews").await?;
    let all = query.status.as_deref() == Some("all");
    let pipeline = state.pipeline.clone();
    let reader2 = reader.clone();
    let pairs = tokio::task::spawn_blocking(move || {
        pipeline.review_pairs(all, &|source| in_scope(&reader2, source))
    })
    .await??;
    let items: Vec<ReviewItem> = pairs
        .into_iter()
        .map(|(review, a, b)| ReviewItem {
            id: review.id,
            score: review.score,
            status: review.status,
            record: side(&a),
            candidate: side(&b),
        })
        .collect();
    let mut record = state.reader_record(
        &reader,
        "list_reviews",
        "/v1/resolution/reviews",
        AuditDecision::Allow,
    );
    record.result_count = items.len() as u64;
    record.entities = items
        .iter()
        .flat_map(|i| [i.record.entity.clone(), i.candidate.entity.clone()])
        .collect();
    state.append_audit(record).await?;
    Ok(Json(ReviewList { reviews: items }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReviewDecision {
    /// `link` (the same person) or `distinct`.
    pub decision: String,
}

/// Decide a review: final, and applied on every later ingest of the record.
#[utoipa::path(post, path = "/v1/resolution/reviews/{id}", params(("id" = String, Path), ("X-Purpose" = String, Header)),
    request_body = ReviewDecision,
    responses((status = 200, body = ReviewItem), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decide_review(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
    Json(body): Json<ReviewDecision>,
) -> Result<Json<ReviewItem>, ApiError> {
    require_officer(&state, &reader, "/v1/resolution/reviews/{id}").await?;
    let link = match body.decision.as_str() {
        "link" => true,
        "distinct" => false,
        _ => {
            return Err(ApiError::bad_request(
                "decision_invalid",
                "decision is `link` or `distinct`",
            ))
        }
    };
    // Audited before it commits: the record names the review and the decision asked for;
    // a decision the transaction refuses gets a second record with the refusal.
    let mut record = state.reader_record(
        &reader,
        "decide_review",
        "/v1/resolution/reviews/{id}",
        AuditDecision::Allow,
    );
    record.entities = vec![id.chars().take(64).collect()];
    record.outcome = body.decision.clone();
    let pipeline = state.pipeline.clone();
    let reader2 = reader.clone();
    let sub = reader.principal.sub.clone();
    let item = state
        .audited_write(record, || async move {
            let decided = tokio::task::spawn_blocking(move || {
                pipeline.decide_review(&id, link, &sub, &|source| in_scope(&reader2, source))
            })
            .await??;
            match decided {
                Decided::NotFound => Err(ApiError::not_found()),
                Decided::AlreadyDecided => Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "review_already_decided",
                    "this pair was already decided; decisions are final (split a record to undo a link)",
                )),
                Decided::Done {
                    review,
                    record,
                    candidate,
                } => Ok(ReviewItem {
                    id: review.id,
                    score: review.score,
                    status: review.status,
                    record: side(&record),
                    candidate: side(&candidate),
                }),
            }
        })
        .await?;
    Ok(Json(item))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SplitRequest {
    pub department: String,
    pub source_id: String,
}

/// Take a resident record out of the entity it was linked into (a wrong link): it becomes
/// its own entity, and stays apart on every later ingest.
#[utoipa::path(post, path = "/v1/resolution/split", params(("X-Purpose" = String, Header)),
    request_body = SplitRequest,
    responses((status = 200, body = ReviewSide), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn split(
    State(state): State<AppState>,
    reader: Reader,
    Json(body): Json<SplitRequest>,
) -> Result<Json<ReviewSide>, ApiError> {
    require_officer(&state, &reader, "/v1/resolution/split").await?;
    let department = parse_department(&body.department)?;
    let mut record = state.reader_record(
        &reader,
        "split",
        "/v1/resolution/split",
        AuditDecision::Allow,
    );
    record.outcome = format!("department={}", department.code());
    let pipeline = state.pipeline.clone();
    let reader2 = reader.clone();
    let source_id = body.source_id;
    let moved = state
        .audited_write(record, || async move {
            let outcome = tokio::task::spawn_blocking(move || {
                pipeline.split_row(department, &source_id, &|source| {
                    in_scope(&reader2, source)
                })
            })
            .await??;
            match outcome {
                SplitOutcome::NotFound => Err(ApiError::not_found()),
                SplitOutcome::NotLinked => Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "not_linked",
                    "this record is already its own entity",
                )),
                SplitOutcome::HasIdNumber => Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "id_match_cannot_split",
                    "the record carries a valid ID number: it belongs to that person's entity; correct the ID at the source",
                )),
                SplitOutcome::Split(moved) => Ok(side(&moved)),
            }
        })
        .await?;
    Ok(Json(moved))
}
