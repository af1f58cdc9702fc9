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

use engine::linking::{Decided, SplitOutcome, StoredModel};
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
/// thresholds with the targets they were chosen for and the rule that set each, the estimate
/// of its precision, recall and review share at those thresholds and what that estimate came
/// from (candidate pairs that valid ID numbers label, or the model's own posterior).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelReport {
    pub version: u32,
    /// Absent for a model stored before versions were kept.
    pub estimated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Resident rows it was estimated on (0 when unknown).
    pub residents: usize,
    /// Candidate pairs it was estimated on.
    pub pairs: u64,
    /// Whether EM converged (when not, both thresholds are the floors).
    pub converged: bool,
    /// Expected share of true matches among automatic links (of the pairs its weights
    /// decide, not two valid ID numbers), under the estimate named by `estimate_from`.
    pub estimated_precision: f64,
    /// What the model's own posterior claims for the same links (the same figure when
    /// `estimate_from` is `model`; 0 for a model stored before it was kept).
    pub model_estimated_precision: f64,
    /// Expected share of true matches linked automatically.
    pub estimated_recall: f64,
    /// Share of candidate pairs sent to review.
    pub estimated_review_share: f64,
    /// Review pairs per record without a valid ID number, among those it was estimated on.
    pub estimated_review_per_record: f64,
    /// Match weights (bits) at which a pair is linked, and sent to review.
    pub link_threshold: f64,
    pub review_threshold: f64,
    /// Match weight at which a pair without a corroborating second field (birth date,
    /// phone, document) links at ingest, chosen on labelled pairs of that kind alone; absent
    /// when the estimate is the model's own: such pairs then always go to review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncorroborated_link_threshold: Option<f64>,
    /// The model's posterior match probability at each threshold.
    pub link_probability: f64,
    pub review_probability: f64,
    /// The estimated precision the automatic links were to reach (0 for a model estimated
    /// before thresholds followed a target).
    pub target_precision: f64,
    /// Most review pairs per record without a valid ID number (0 likewise).
    pub review_budget: f64,
    /// Records without a valid ID number the budget was a share of.
    pub budget_records: u64,
    /// What set the link threshold: `estimate` (the lowest weight whose estimated precision
    /// meets the target), `floor` (posterior 0.5: met there already, or the estimate could
    /// not be used) or `target_unreached` (no weight meets it: nothing links automatically).
    pub link_threshold_from: String,
    /// What set the review threshold: `budget` (raised to keep the review band within the
    /// budget) or `floor` (posterior 0.05).
    pub review_threshold_from: String,
    /// What the estimate came from: `labelled_pairs` (candidate pairs of records that both
    /// carry valid ID numbers, compared without them) or `model` (too few of those, or a
    /// model estimated before they were used).
    pub estimate_from: String,
    /// Labelled candidate pairs there were: the same valid ID number, and two different ones.
    pub labelled_matches: u64,
    pub labelled_non_matches: u64,
    /// Share of the pairs to decide whose kind (the fields they compare) the labelled pairs
    /// cover; the rest were judged on fewer of their fields (0 when the estimate is the
    /// model's).
    pub labelled_coverage: f64,
    /// Estimated share of true matches among the candidate pairs the weights decide.
    pub estimated_match_share: f64,
}

impl ModelReport {
    fn of(stored: &StoredModel) -> ModelReport {
        let model = &stored.model;
        ModelReport {
            version: stored.version,
            estimated_at: stored.estimated_at,
            residents: stored.residents,
            pairs: model.pairs,
            converged: model.converged,
            estimated_precision: model.estimate.precision,
            estimated_recall: model.estimate.recall,
            estimated_review_share: model.estimate.review_share,
            estimated_review_per_record: model.estimate.review_per_record,
            link_threshold: model.thresholds.upper,
            review_threshold: model.thresholds.lower,
            uncorroborated_link_threshold: model.thresholds.uncorroborated,
            link_probability: model.probability(model.thresholds.upper),
            review_probability: model.probability(model.thresholds.lower),
            target_precision: model.choice.target_precision,
            review_budget: model.choice.review_budget,
            budget_records: model.choice.budget_records,
            link_threshold_from: model.choice.upper_from.as_str().to_owned(),
            review_threshold_from: model.choice.lower_from.as_str().to_owned(),
            model_estimated_precision: model.estimate.model_precision,
            estimate_from: model.choice.estimate_from.as_str().to_owned(),
            labelled_matches: model.choice.labelled.matches,
            labelled_non_matches: model.choice.labelled.non_matches,
            labelled_coverage: model.choice.labelled_coverage,
            estimated_match_share: model.choice.match_share,
        }
    }
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
    let model = state
        .pipeline
        .linker()
        .stored()
        .map(|stored| ModelReport::of(&stored));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::linkage::compare::{IdRelation, FIELDS, LEVEL_COUNTS};
    use engine::linkage::{ComparisonVector, LinkageModel};

    fn stored(model: LinkageModel) -> StoredModel {
        StoredModel {
            version: 2,
            estimated_at: None,
            residents: 1_000,
            sources: 3_000,
            model,
        }
    }

    #[test]
    fn the_report_shows_the_thresholds_the_targets_and_the_rule_that_set_each() {
        // Pairs that agree on everything, that disagree on everything, and some between.
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
        let mut pairs = vec![vector(&[]); 900];
        pairs.extend(vec![vector(&[0, 1, 2, 3, 4, 5]); 9_000]);
        pairs.extend(vec![vector(&[1]); 40]);
        pairs.extend(vec![vector(&[2, 3]); 40]);
        // And pairs that valid ID numbers label, enough of each to estimate on.
        let labelled = |differ: &[usize], ids: IdRelation| ComparisonVector {
            ids,
            ..vector(differ)
        };
        pairs.extend(vec![labelled(&[5], IdRelation::BothValidEqual); 400]);
        pairs.extend(vec![
            labelled(
                &[0, 1, 2, 3, 5],
                IdRelation::BothValidDifferent
            );
            300
        ]);
        let model = LinkageModel::estimate(&pairs, 10_000);
        let report = ModelReport::of(&stored(model.clone()));
        assert_eq!(report.link_threshold, model.thresholds.upper);
        assert_eq!(report.review_threshold, model.thresholds.lower);
        assert_eq!(report.target_precision, 0.995);
        assert_eq!(report.review_budget, 0.02);
        assert_eq!(report.budget_records, 10_000);
        assert_eq!(report.link_threshold_from, model.choice.upper_from.as_str());
        assert_eq!(
            report.review_threshold_from,
            model.choice.lower_from.as_str()
        );
        assert!(
            (0.5..=1.0).contains(&report.link_probability),
            "{}",
            report.link_probability
        );
        assert!(report.review_probability >= 0.05 - 1e-9);
        assert_eq!(report.estimated_precision, model.estimate.precision);
        assert_eq!(report.estimate_from, "labelled_pairs");
        assert_eq!(
            (report.labelled_matches, report.labelled_non_matches),
            (400, 300)
        );
        assert_eq!(report.labelled_coverage, model.choice.labelled_coverage);
        assert!(report.labelled_coverage > 0.0 && report.labelled_coverage <= 1.0);
        assert_eq!(
            report.model_estimated_precision,
            model.estimate.model_precision
        );
        let json = serde_json::to_value(&report).unwrap();
        for field in [
            "link_threshold_from",
            "review_threshold_from",
            "target_precision",
            "review_budget",
            "estimated_review_per_record",
            "estimate_from",
            "labelled_matches",
            "labelled_coverage",
            "estimated_match_share",
            "model_estimated_precision",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
    }

    #[test]
    fn a_model_stored_before_the_targets_reports_its_floors_and_no_target() {
        let mut legacy = serde_json::to_value(LinkageModel::estimate(&[], 0)).unwrap();
        legacy.as_object_mut().unwrap().remove("choice");
        let model: LinkageModel = serde_json::from_value(legacy).unwrap();
        let report = ModelReport::of(&stored(model));
        assert_eq!(
            (
                report.link_threshold_from.as_str(),
                report.review_threshold_from.as_str()
            ),
            ("floor", "floor")
        );
        assert_eq!((report.target_precision, report.review_budget), (0.0, 0.0));
        assert!((report.link_probability - 0.5).abs() < 1e-9);
        assert_eq!(report.estimate_from, "model");
        assert_eq!(
            (report.labelled_matches, report.labelled_non_matches),
            (0, 0)
        );
    }
}
