//! The compliance officer's API: search the access log, checkpoints, proofs, export,
//! anomalies and the resident access report.
//!
//! Guarantees:
//! - Every route here answers only a caller whose role holds `ReadAuditLog`
//!   (`compliance_officer` by default); anyone else gets 403 `role_cannot_read_audit`, and
//!   that refusal is itself audited before the answer leaves.
//! - Every answer that shows audit records (search, proofs, export, anomalies, resident
//!   report) is itself audited (`audit_search`, `audit_proof`, `audit_export`,
//!   `audit_anomalies`, `audit_resident_report`) and durable before it is sent; the
//!   checkpoint and consistency proofs carry only hashes and are not.
//! - A resident may be named by unified id (`r_…`) or by ID number; an ID number is turned
//!   into the broker's keyed reference at once and never stored, logged or echoed. The
//!   audit record of a compliance query names the resident only by unified id and keyed
//!   reference; the route template (never the raw path) is recorded as the endpoint.
//! - Bad parameters answer 400 with a stable code naming the parameter
//!   (`query_invalid`, `resident_invalid`, `from_invalid`, `to_invalid`, `range_invalid`,
//!   `decision_invalid`, `limit_invalid`, `cursor_invalid`, `seq_invalid`,
//!   `tree_size_invalid`, `proof_target_invalid`, `threshold_invalid`,
//!   `work_hours_invalid`, `defer_days_invalid`, `range_too_large`, `format_invalid`); a
//!   request id or sequence number the log does not hold answers 404 `record_not_found`.
//!
//! Paging (`/v1/audit/records`): records come oldest first (ascending `seq`); `next_cursor`
//! is opaque and present only when another page exists. Pages never skip or repeat a record
//! (the cursor is the position in the append-only log); records appended while paging
//! appear on later pages if they match.
//!
//! Export format (`/v1/audit/export`, `application/x-ndjson`): every line but the last is
//! one record's canonical bytes exactly as stored, so the Merkle leaf of a line is
//! `SHA-256(0x00 || line)`; the last line is `{"checkpoint":{"origin","size","root","note"}}`,
//! a checkpoint signed for this export whose tree covers every exported record
//! (`seq < size`). Inclusion of any line is proven with
//! `/v1/audit/proof/inclusion?seq=S&tree_size=SIZE` (or offline from the log directory).
//!
//! Workbooks (`format=xlsx`, see [`super::xlsx`]): the export and the resident report also
//! answer an Excel workbook for reading, built from exactly the records (report entries) of
//! the NDJSON (JSON) answer — the report's withheld accesses stay out of it the same way — and
//! audited like it, with the outcome `format=xlsx`. The NDJSON stays the verifiable form.
//!
//! Resident report: shows, per access, the organisation (department, or the role for grid
//! and street staff), roles, action, time, purpose, decision and which fields were shown in
//! clear — never the worker's personal name or id. The resident learns which office used
//! the data, as Estonia's Data Tracker shows the institution; naming individual workers to
//! a resident would expose them to pressure in disputes they mediate, and the compliance
//! officer can still find the worker through `/v1/audit/records`. Accesses tagged with a
//! case id by a role that policy lets open cases are withheld for `defer_days` (default and
//! most: the configured `audit.case_deferral_days`, 90 days unless set) after the access, so
//! the report does not tip off an open investigation; the response says how many were
//! withheld. A case id from any other role never hides an access.

use audit::{
    detect_anomalies, Anomaly, AnomalyConfig, AnomalyKind, AuditError, AuditQuery, AuditRecord,
    Decision, ResidentSubject, SignedCheckpoint,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use model::{Department, IdNumber};
use serde::{Deserialize, Serialize};

use policies::authz::Permission;
use policies::Principal;

use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::routes::Routes;
use super::xlsx::{self, Cell, Form, Sheet};
use super::{AppState, RequestContext};

/// Page size of `/v1/audit/records` when `limit` is absent.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page of `/v1/audit/records`.
pub const MAX_PAGE: usize = 500;
pub use crate::config::{DEFAULT_CASE_DEFERRAL_DAYS, MAX_CASE_DEFERRAL_DAYS};
/// Most records one export, anomaly scan or report reads; narrow the range beyond it.
pub const MAX_RECORDS_PER_SCAN: usize = 200_000;
/// Longest range of one anomaly scan.
pub const MAX_ANOMALY_RANGE_DAYS: i64 = 31;
/// Evidence records shown in full per anomaly (all `seq`s are listed up to
/// [`MAX_EVIDENCE_SEQS`]).
pub const EVIDENCE_RECORDS: usize = 5;
/// Most evidence `seq`s listed per anomaly.
pub const MAX_EVIDENCE_SEQS: usize = 1000;

/// Routes under `/v1/audit`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/audit/records", search_records)
        .get("/v1/audit/checkpoint", checkpoint)
        .get("/v1/audit/proof/inclusion", inclusion_proof)
        .get("/v1/audit/proof/consistency", consistency_proof)
        .get("/v1/audit/export", export)
        .get("/v1/audit/anomalies", anomalies)
        .get("/v1/audit/residents/{resident}/report", resident_report)
        .get("/v1/audit/mine", my_records)
}

/// A caller whose role may read the audit log.
#[derive(Debug, Clone)]
pub struct ComplianceOfficer {
    pub principal: Principal,
    pub context: RequestContext,
}

impl FromRequestParts<AppState> for ComplianceOfficer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated { principal, context } =
            Authenticated::from_request_parts(parts, state).await?;
        if !state
            .permissions
            .allows(&principal.roles, Permission::ReadAuditLog)
        {
            let error = ApiError::forbidden(
                "role_cannot_read_audit",
                "only a compliance officer may read the audit log",
            );
            // The route template, never the raw path (it may hold an ID number).
            let endpoint = parts
                .extensions
                .get::<MatchedPath>()
                .map_or("/v1/audit", MatchedPath::as_str)
                .to_owned();
            state
                .audit_refusal(&principal, &context, None, None, &endpoint, &error)
                .await?;
            return Err(error);
        }
        Ok(ComplianceOfficer { principal, context })
    }
}

// ---------------------------------------------------------------------------------------
// Parameters

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params.map(|Query(p)| p).map_err(|rejection| {
        ApiError::bad_request(
            "query_invalid",
            format!(
                "unknown or repeated query parameter: {}",
                rejection.body_text()
            ),
        )
    })
}

/// Parses an RFC 3339 time. A `+` of the offset that arrived as a space (an unencoded
/// `+` in a query string) is accepted.
fn parse_time(value: &str, code: &'static str, name: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(&value.trim().replace(' ', "+"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                code,
                format!("{name} must be an RFC 3339 time, e.g. 2026-11-01T08:00:00+08:00"),
            )
        })
}

/// `from` (inclusive) and `to` (exclusive), each optional.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn parse_range(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, ApiError> {
    let from = from
        .map(|f| parse_time(f, "from_invalid", "from"))
        .transpose()?;
    let to = to.map(|t| parse_time(t, "to_invalid", "to")).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request(
                "range_invalid",
                "from must not be later than to",
            ));
        }
    }
    Ok((from, to))
}

fn parse_number<T: std::str::FromStr>(
    value: &str,
    code: &'static str,
    what: &str,
) -> Result<T, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(code, format!("{what} must be a non-negative integer")))
}

fn parse_decision(value: &str) -> Result<Decision, ApiError> {
    match value.trim() {
        "allow" => Ok(Decision::Allow),
        "deny" => Ok(Decision::Deny),
        "masked" => Ok(Decision::Masked),
        "break_glass" => Ok(Decision::BreakGlass),
        _ => Err(ApiError::bad_request(
            "decision_invalid",
            "decision must be one of allow, deny, masked, break_glass",
        )),
    }
}

fn encode_cursor(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("seq:{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("seq:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "cursor_invalid",
                "cursor is not one this API returned; start again without it",
            )
        })
}

/// Whether `value` has the shape of a unified resident id (`r_` + 20 hex digits).
fn is_unified_resident_id(value: &str) -> bool {
    value
        .strip_prefix("r_")
        .is_some_and(|hex| hex.len() == 20 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The resident as the log knows them, from a unified id or an ID number. The ID number is
/// dropped here: only its unified id and keyed reference go on.
fn resident_subject(state: &AppState, input: &str) -> Result<ResidentSubject, ApiError> {
    let input = input.trim();
    let entity = if is_unified_resident_id(input) {
        input.to_ascii_lowercase()
    } else {
        let id = IdNumber::parse(input).map_err(|err| {
            ApiError::bad_request(
                "resident_invalid",
                format!(
                    "resident must be a unified resident id (r_ and 20 hex digits) or a valid 18- or 15-digit ID number ({})",
                    err.code()
                ),
            )
        })?;
        state.vault.resident_entity(&id)
    };
    Ok(ResidentSubject {
        reference: state.vault.audit_reference(&entity),
        entity,
    })
}

/// Runs a blocking read of the log off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await?
}

/// Reads every record matching `query` (at most [`MAX_RECORDS_PER_SCAN`]).
async fn scan_all(state: &AppState, query: AuditQuery) -> Result<Vec<AuditRecord>, ApiError> {
    let log = state.audit.clone();
    blocking(move || {
        let mut out = Vec::new();
        let mut too_many = false;
        log.scan(&query, |record, _| {
            if out.len() == MAX_RECORDS_PER_SCAN {
                too_many = true;
                return false;
            }
            out.push(record);
            true
        })
        .map_err(ApiError::from)?;
        if too_many {
            return Err(too_large());
        }
        Ok(out)
    })
    .await
}

fn too_large() -> ApiError {
    ApiError::bad_request(
        "range_too_large",
        format!("more than {MAX_RECORDS_PER_SCAN} records match; narrow the time range"),
    )
}

impl AppState {
    /// Audits a compliance officer's answer before it leaves (fails closed).
    async fn audit_compliance(
        &self,
        officer: &ComplianceOfficer,
        action: &str,
        endpoint: &str,
        result_count: usize,
        subject: Option<&ResidentSubject>,
    ) -> Result<(), ApiError> {
        self.audit_compliance_as(officer, action, endpoint, result_count, subject, Form::Own)
            .await
    }

    /// [`Self::audit_compliance`] of an answer in `form`: a workbook, which leaves the
    /// system as a file, is recorded with the outcome `format=xlsx`.
    async fn audit_compliance_as(
        &self,
        officer: &ComplianceOfficer,
        action: &str,
        endpoint: &str,
        result_count: usize,
        subject: Option<&ResidentSubject>,
        form: Form,
    ) -> Result<(), ApiError> {
        let mut record = self.audit_record(
            &officer.principal,
            &officer.context,
            action,
            endpoint,
            Decision::Allow,
        );
        record.result_count = result_count as u64;
        if form == Form::Workbook {
            record.outcome = "format=xlsx".to_owned();
        }
        if let Some(subject) = subject {
            record.residents = vec![subject.reference.clone()];
            record.entities = vec![subject.entity.clone()];
        }
        self.append_audit(record).await.map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------
// Search

/// Filters of `/v1/audit/records`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordsParams {
    /// Actor subject (`sub` claim).
    actor: Option<String>,
    /// Unified resident id (`r_…`) or an 18/15-digit ID number (hashed server-side, never stored).
    resident: Option<String>,
    /// Unified entity id of any kind (resident, house, event, organization).
    entity: Option<String>,
    /// Records at or after this RFC 3339 time.
    from: Option<String>,
    /// Records before this RFC 3339 time.
    to: Option<String>,
    /// Declared purpose of use.
    purpose: Option<String>,
    /// allow, deny, masked or break_glass.
    decision: Option<String>,
    /// Action, e.g. read_resident, refused, ingest, audit_search.
    action: Option<String>,
    /// Page size, default 50, at most 500.
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of audit records, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordsPage {
    /// Records in their stored form (`v`, `seq`, `time`, `request_id`, `actor`, …).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page size from `limit` (`default` when absent): 1 to [`MAX_PAGE`].
fn page_limit(limit: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(l) => match parse_number::<usize>(l, "limit_invalid", "limit")? {
            n @ 1..=MAX_PAGE => Ok(n),
            _ => Err(ApiError::bad_request(
                "limit_invalid",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        },
    }
}

/// Parameters of `/v1/audit/mine`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MineParams {
    /// Days back from now (default 7, at most 90).
    days: Option<String>,
    /// Records returned at most, newest first (default 100, at most 500).
    limit: Option<String>,
}

/// The caller's own accesses, newest first: what the log holds about what you did, before a
/// compliance officer asks (the console's "我的查询记录"). Any authenticated staff member or
/// department; never anyone else's records.
#[utoipa::path(get, path = "/v1/audit/mine", params(MineParams),
    responses((status = 200, body = RecordsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn my_records(
    State(state): State<AppState>,
    caller: Authenticated,
    params: Result<Query<MineParams>, QueryRejection>,
) -> Result<Json<RecordsPage>, ApiError> {
    let p = query(params)?;
    let days = match p.days.as_deref() {
        None => 7,
        Some(d) => match parse_number::<i64>(d, "days_invalid", "days")? {
            n @ 1..=90 => n,
            _ => {
                return Err(ApiError::bad_request(
                    "days_invalid",
                    "days must be between 1 and 90",
                ))
            }
        },
    };
    let limit = page_limit(p.limit.as_deref(), 100)?;
    let query = AuditQuery {
        actor: Some(caller.principal.sub.clone()),
        from: Some(Utc::now() - Duration::days(days)),
        // The newest `limit` of the window: read the window (one person's week is thousands
        // at most) and keep its end.
        limit: 20_000,
        ..AuditQuery::default()
    };
    let log = state.audit.clone();
    let mut records = blocking(move || log.search(&query).map_err(ApiError::from)).await?;
    records.reverse();
    records.truncate(limit);
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "audit_mine",
        "/v1/audit/mine",
        Decision::Allow,
    );
    record.result_count = records.len() as u64;
    state.append_audit(record).await?;
    Ok(Json(RecordsPage {
        records,
        next_cursor: None,
    }))
}

/// Search the access log.
#[utoipa::path(get, path = "/v1/audit/records", params(RecordsParams),
    responses((status = 200, body = RecordsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search_records(
    State(state): State<AppState>,
    officer: ComplianceOfficer,
    params: Result<Query<RecordsParams>, QueryRejection>,
) -> Result<Json<RecordsPage>, ApiError> {
    let p = query(params)?;
    let (from, to) = parse_range(p.from.as_deref(), p.to.as_deref())?;
    let limit = page_limit(p.limit.as_deref(), DEFAULT_PAGE)?;
    let subject = p
        .resident
        .as_deref()
        .map(|r| resident_subject(&state, r))
        .transpose()?;
    let query = AuditQuery {
        actor: p.actor,
        entity: p.entity,
        from,
        to,
        purpose: p.purpose,
        decision: p.decision.as_deref().map(parse_decision).transpose()?,
        action: p.action,
        subject: subject.clone(),
        after_seq: p.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
        ..AuditQuery::default()
    };
    let log = state.audit.clone();
    let mut records = blocking(move || log.search(&query).map_err(ApiError::from)).await?;
    let next_cursor = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| encode_cursor(r.seq))
    } else {
        None
    };
    state
        .audit_compliance(
            &officer,
            "audit_search",
            "/v1/audit/records",
            records.len(),
            subject.as_ref(),
        )
        .await?;
    Ok(Json(RecordsPage {
        records,
        next_cursor,
    }))
}

// ---------------------------------------------------------------------------------------
// Checkpoint and proofs

/// A signed checkpoint: the log `origin` had `size` records with Merkle root `root`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointBody {
    pub origin: String,
    pub size: u64,
    /// RFC 6962 root, hex.
    pub root: String,
    /// The C2SP signed note; verify it with `checkpoint-public.key`.
    pub note: String,
}

impl From<&SignedCheckpoint> for CheckpointBody {
    fn from(cp: &SignedCheckpoint) -> Self {
        CheckpointBody {
            origin: cp.origin.clone(),
            size: cp.size,
            root: hex::encode(cp.root),
            note: cp.note.clone(),
        }
    }
}

async fn fresh_checkpoint(state: &AppState) -> Result<SignedCheckpoint, ApiError> {
    state.audit.checkpoint_now().await.map_err(ApiError::from)
}

/// The latest signed checkpoint, covering every record durable at the time of the request.
#[utoipa::path(get, path = "/v1/audit/checkpoint",
    responses((status = 200, body = CheckpointBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn checkpoint(
    State(state): State<AppState>,
    _officer: ComplianceOfficer,
) -> Result<Json<CheckpointBody>, ApiError> {
    let cp = fresh_checkpoint(&state).await?;
    Ok(Json(CheckpointBody::from(&cp)))
}

/// Parameters of `/v1/audit/proof/inclusion`: `seq` or `request_id`, and optionally `tree_size`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionParams {
    /// Position of the record in the log.
    seq: Option<String>,
    /// Or: the request id whose (first) record to prove.
    request_id: Option<String>,
    /// Tree size to prove against; default: a checkpoint covering the record.
    tree_size: Option<String>,
}

/// An RFC 9162 inclusion proof of one record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InclusionBody {
    pub seq: u64,
    pub tree_size: u64,
    /// `SHA-256(0x00 || canonical record bytes)`, hex.
    pub leaf_hash: String,
    /// Root of the tree of `tree_size` records, hex.
    pub root: String,
    /// Audit path, hex, leaf to root.
    pub hashes: Vec<String>,
    /// The record.
    #[schema(value_type = Object)]
    pub record: AuditRecord,
    /// The signed checkpoint at `tree_size`, when the proof is against one.
    pub checkpoint: Option<CheckpointBody>,
}

/// Prove that a record is in the log.
#[utoipa::path(get, path = "/v1/audit/proof/inclusion", params(InclusionParams),
    responses((status = 200, body = InclusionBody), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn inclusion_proof(
    State(state): State<AppState>,
    officer: ComplianceOfficer,
    params: Result<Query<InclusionParams>, QueryRejection>,
) -> Result<Json<InclusionBody>, ApiError> {
    let p = query(params)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "record_not_found",
            "the audit log holds no such record",
        )
    };
    let seq = match (p.seq.as_deref(), p.request_id.as_deref()) {
        (Some(seq), None) => parse_number::<u64>(seq, "seq_invalid", "seq")?,
        (None, Some(id)) => state
            .audit
            .find_by_request_id(id.trim())
            .ok_or_else(not_found)?,
        _ => {
            return Err(ApiError::bad_request(
                "proof_target_invalid",
                "give exactly one of seq and request_id",
            ))
        }
    };
    if seq >= state.audit.size() {
        return Err(not_found());
    }
    let (tree_size, cp) = match p.tree_size.as_deref() {
        Some(size) => {
            let size = parse_number::<u64>(size, "tree_size_invalid", "tree_size")?;
            if size <= seq || size > state.audit.size() {
                return Err(ApiError::bad_request(
                    "tree_size_invalid",
                    format!(
                        "tree_size must be above seq and at most the log size ({})",
                        state.audit.size()
                    ),
                ));
            }
            let latest = state.audit.latest_checkpoint().filter(|cp| cp.size == size);
            (size, latest)
        }
        None => {
            let cp = match state.audit.latest_checkpoint() {
                Some(cp) if cp.size > seq => cp,
                _ => fresh_checkpoint(&state).await?,
            };
            (cp.size, Some(cp))
        }
    };
    let log = state.audit.clone();
    let (record, leaf, root, proof) = blocking(move || {
        let record = log.read(seq).map_err(ApiError::from)?;
        let leaf = log
            .leaf_hash(seq)
            .ok_or_else(|| ApiError::from(AuditError::NotFound(seq)))?;
        let root = log.root_at(tree_size).map_err(ApiError::from)?;
        let proof = log
            .inclusion_proof(seq, tree_size)
            .map_err(ApiError::from)?;
        Ok((record, leaf, root, proof))
    })
    .await?;
    state
        .audit_compliance(
            &officer,
            "audit_proof",
            "/v1/audit/proof/inclusion",
            1,
            None,
        )
        .await?;
    Ok(Json(InclusionBody {
        seq,
        tree_size,
        leaf_hash: hex::encode(leaf),
        root: hex::encode(root),
        hashes: proof.iter().map(hex::encode).collect(),
        record,
        checkpoint: cp.as_ref().map(CheckpointBody::from),
    }))
}

/// Parameters of `/v1/audit/proof/consistency`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// The older tree size (e.g. of a checkpoint you saved).
    old: Option<String>,
    /// The newer tree size; default: a fresh checkpoint's size.
    new: Option<String>,
}

/// An RFC 9162 consistency proof between two tree sizes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsistencyBody {
    pub old: u64,
    pub new: u64,
    /// Root at `old`, hex (check it against your saved checkpoint).
    pub old_root: String,
    /// Root at `new`, hex.
    pub new_root: String,
    /// Proof hashes, hex.
    pub hashes: Vec<String>,
    /// The signed checkpoint at `new`, when `new` was not given.
    pub checkpoint: Option<CheckpointBody>,
}

/// Prove that the log at `new` extends the log at `old`.
#[utoipa::path(get, path = "/v1/audit/proof/consistency", params(ConsistencyParams),
    responses((status = 200, body = ConsistencyBody), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn consistency_proof(
    State(state): State<AppState>,
    _officer: ComplianceOfficer,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
) -> Result<Json<ConsistencyBody>, ApiError> {
    let p = query(params)?;
    let old = match p.old.as_deref() {
        Some(old) => parse_number::<u64>(old, "tree_size_invalid", "old")?,
        None => {
            return Err(ApiError::bad_request(
                "tree_size_invalid",
                "old (the older tree size) is required",
            ))
        }
    };
    let (new, cp) = match p.new.as_deref() {
        Some(new) => (parse_number::<u64>(new, "tree_size_invalid", "new")?, None),
        None => {
            let cp = fresh_checkpoint(&state).await?;
            (cp.size, Some(cp))
        }
    };
    if old > new || new > state.audit.size() {
        return Err(ApiError::bad_request(
            "tree_size_invalid",
            format!("need old <= new <= the log size ({})", state.audit.size()),
        ));
    }
    let log = state.audit.clone();
    let (old_root, new_root, proof) = blocking(move || {
        let bad = ApiError::from;
        Ok((
            log.root_at(old).map_err(bad)?,
            log.root_at(new).map_err(bad)?,
            log.consistency_proof(old, new).map_err(bad)?,
        ))
    })
    .await?;
    Ok(Json(ConsistencyBody {
        old,
        new,
        old_root: hex::encode(old_root),
        new_root: hex::encode(new_root),
        hashes: proof.iter().map(hex::encode).collect(),
        checkpoint: cp.as_ref().map(CheckpointBody::from),
    }))
}

// ---------------------------------------------------------------------------------------
// Export

/// Time range of an export or anomaly scan.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Records at or after this RFC 3339 time.
    from: Option<String>,
    /// Records before this RFC 3339 time.
    to: Option<String>,
    /// `ndjson` (default: the canonical lines, verifiable offline) or `xlsx` (a workbook for
    /// reading: one row per record, and the checkpoint on its own sheet).
    format: Option<String>,
}

#[derive(Debug, Serialize)]
struct ExportTrailer<'a> {
    checkpoint: &'a CheckpointBody,
}

/// Export a time range as NDJSON (canonical record lines, then the covering checkpoint) or,
/// with `format=xlsx`, as a workbook for reading.
#[utoipa::path(get, path = "/v1/audit/export", params(ExportParams),
    responses((status = 200,
            description = "NDJSON (default): one canonical record per line (leaf = SHA-256(0x00 || line)); last line {\"checkpoint\":{origin,size,root,note}} covering them all. With format=xlsx: a workbook (Content-Disposition: attachment), a row per record and the checkpoint on its own sheet",
            content((String = "application/x-ndjson"),
                (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    officer: ComplianceOfficer,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let form = xlsx::requested_form(p.format.as_deref(), "ndjson")?;
    let (from, to) = parse_range(p.from.as_deref(), p.to.as_deref())?;
    let cp = fresh_checkpoint(&state).await?;
    let query = AuditQuery {
        from,
        to,
        before_seq: Some(cp.size),
        ..AuditQuery::default()
    };
    let log = state.audit.clone();
    let (mut body, count) = blocking(move || {
        let mut body = Vec::new();
        let mut count = 0usize;
        log.scan(&query, |_, bytes| {
            if count == MAX_RECORDS_PER_SCAN {
                return false;
            }
            body.extend_from_slice(bytes);
            body.push(b'\n');
            count += 1;
            true
        })
        .map_err(ApiError::from)?;
        Ok((body, count))
    })
    .await?;
    if count == MAX_RECORDS_PER_SCAN {
        return Err(too_large());
    }
    let trailer = CheckpointBody::from(&cp);
    let body = match form {
        Form::Workbook => xlsx::render(export_sheets(&body, &trailer)).await?,
        Form::Own => {
            let line = serde_json::to_vec(&ExportTrailer {
                checkpoint: &trailer,
            })
            .map_err(|e| ApiError::internal("export_failed", &e))?;
            body.extend_from_slice(&line);
            body.push(b'\n');
            body
        }
    };
    state
        .audit_compliance_as(
            &officer,
            "audit_export",
            "/v1/audit/export",
            count,
            None,
            form,
        )
        .await?;
    let mut response = match form {
        Form::Workbook => xlsx::attachment(body, "safegrid-audit-export.xlsx"),
        Form::Own => {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-audit-records", HeaderValue::from(count as u64));
    headers.insert("x-audit-checkpoint-size", HeaderValue::from(cp.size));
    Ok(response)
}

/// The export as a workbook: one row per record (访问记录), the checkpoint that covers them
/// on its own sheet (检查点). The NDJSON export stays the verifiable form.
fn export_sheets(lines: &[u8], checkpoint: &CheckpointBody) -> Vec<Sheet> {
    let columns = [
        ("序号 seq", "seq"),
        ("时间 time", "time"),
        ("操作人 actor", "actor.sub"),
        ("姓名 name", "actor.name"),
        ("角色 roles", "actor.roles"),
        ("部门 dept", "actor.dept"),
        ("目的 purpose", "purpose"),
        ("案件 case", "case_id"),
        ("操作 action", "action"),
        ("接口 endpoint", "endpoint"),
        ("决定 decision", "decision"),
        ("实体 entities", "entities"),
        ("居民 residents", "residents"),
        ("明文字段 fields clear", "fields_clear"),
        ("结果数 results", "result_count"),
        ("结果 outcome", "outcome"),
        ("紧急授权 break glass", "break_glass_reason"),
        ("请求 request", "request_id"),
    ];
    let rows = lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .map(|record| {
            columns
                .iter()
                .map(|(_, path)| {
                    let value = path
                        .split('.')
                        .try_fold(&record, |v, key| v.get(key))
                        .unwrap_or(&serde_json::Value::Null);
                    match value {
                        serde_json::Value::Null => Cell::Empty,
                        serde_json::Value::Number(n) => {
                            Cell::Number(n.as_f64().unwrap_or_default())
                        }
                        serde_json::Value::String(text) => Cell::Text(text.clone()),
                        serde_json::Value::Array(items) => {
                            let joined: Vec<String> = items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                                .collect();
                            Cell::Text(joined.join(", "))
                        }
                        other => Cell::Text(other.to_string()),
                    }
                })
                .collect()
        })
        .collect();
    let checkpoint = serde_json::to_value(checkpoint).unwrap_or_default();
    let pairs = ["origin", "size", "root", "note"]
        .into_iter()
        .map(|key| {
            let value = &checkpoint[key];
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.to_owned(), Cell::Text(text))
        })
        .collect();
    vec![
        Sheet::Table {
            name: "访问记录".to_owned(),
            header: columns
                .iter()
                .map(|(title, _)| (*title).to_owned())
                .collect(),
            rows,
        },
        Sheet::Pairs {
            name: "检查点".to_owned(),
            pairs,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Anomalies

/// Range and thresholds of an anomaly scan (defaults in parentheses).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// Start, RFC 3339 (24 hours before `to`).
    from: Option<String>,
    /// End, RFC 3339 (now). At most 31 days after `from`.
    to: Option<String>,
    /// Bulk lookup: more than this many distinct residents per actor per hour (50).
    bulk_threshold: Option<String>,
    /// Repeated denials: at least this many per actor per hour (5).
    denial_threshold: Option<String>,
    /// At least this many distinct actors on one resident per day (5).
    actor_threshold: Option<String>,
    /// Start of working hours, China time, HH:MM (08:00). Working days are Monday to Friday.
    work_start: Option<String>,
    /// End of working hours, China time, HH:MM (20:00).
    work_end: Option<String>,
}

/// One anomaly with its evidence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalyBody {
    /// bulk_lookup, outside_working_hours, repeated_denials, break_glass or many_actors_one_resident.
    #[schema(value_type = String)]
    pub kind: AnomalyKind,
    /// The actor (`sub`), for per-actor kinds.
    pub actor: Option<String>,
    /// The resident's keyed reference, for per-resident kinds.
    pub resident: Option<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Distinct residents, denials, distinct actors or accesses in the window.
    pub count: u64,
    /// `seq` of the evidence records (at most 1000).
    pub evidence_seqs: Vec<u64>,
    /// Whether `evidence_seqs` was cut at 1000.
    pub evidence_truncated: bool,
    /// The first few evidence records in full.
    #[schema(value_type = Vec<Object>)]
    pub evidence: Vec<AuditRecord>,
}

/// The thresholds a scan used.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalySettings {
    pub bulk_threshold: usize,
    pub denial_threshold: usize,
    pub actor_threshold: usize,
    pub work_start: String,
    pub work_end: String,
    pub utc_offset: String,
}

/// The anomalies found in a range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalyReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Records scanned.
    pub records: usize,
    pub settings: AnomalySettings,
    pub anomalies: Vec<AnomalyBody>,
}

fn parse_threshold(value: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match parse_number::<usize>(v, "threshold_invalid", "a threshold")? {
            0 => Err(ApiError::bad_request(
                "threshold_invalid",
                "a threshold must be at least 1",
            )),
            n => Ok(n),
        },
    }
}

fn parse_clock(value: Option<&str>, default: NaiveTime) -> Result<NaiveTime, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => NaiveTime::parse_from_str(v.trim(), "%H:%M").map_err(|_| {
            ApiError::bad_request(
                "work_hours_invalid",
                "work_start and work_end are HH:MM, e.g. 08:00",
            )
        }),
    }
}

/// Find bulk lookups, off-hours access, repeated denials, break-glass use and residents
/// looked at by many actors.
#[utoipa::path(get, path = "/v1/audit/anomalies", params(AnomalyParams),
    responses((status = 200, body = AnomalyReport), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn anomalies(
    State(state): State<AppState>,
    officer: ComplianceOfficer,
    params: Result<Query<AnomalyParams>, QueryRejection>,
) -> Result<Json<AnomalyReport>, ApiError> {
    let p = query(params)?;
    let (from, to) = parse_range(p.from.as_deref(), p.to.as_deref())?;
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::hours(24));
    if from > to {
        return Err(ApiError::bad_request(
            "range_invalid",
            "from must not be later than to",
        ));
    }
    if to - from > Duration::days(MAX_ANOMALY_RANGE_DAYS) {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!("scan at most {MAX_ANOMALY_RANGE_DAYS} days at a time"),
        ));
    }
    let defaults = AnomalyConfig::default();
    let config = AnomalyConfig {
        bulk_residents: parse_threshold(p.bulk_threshold.as_deref(), defaults.bulk_residents)?,
        denials: parse_threshold(p.denial_threshold.as_deref(), defaults.denials)?,
        actors_per_resident: parse_threshold(
            p.actor_threshold.as_deref(),
            defaults.actors_per_resident,
        )?,
        work_start: parse_clock(p.work_start.as_deref(), defaults.work_start)?,
        work_end: parse_clock(p.work_end.as_deref(), defaults.work_end)?,
        ..defaults
    };
    if config.work_start >= config.work_end {
        return Err(ApiError::bad_request(
            "work_hours_invalid",
            "work_start must be before work_end",
        ));
    }
    let records = scan_all(
        &state,
        AuditQuery {
            from: Some(from),
            to: Some(to),
            ..AuditQuery::default()
        },
    )
    .await?;
    let found = detect_anomalies(&records, &config);
    // Records are in ascending seq order: evidence is looked up by binary search.
    let by_seq = |seq: u64| {
        records
            .binary_search_by_key(&seq, |r| r.seq)
            .ok()
            .and_then(|i| records.get(i))
            .cloned()
    };
    let anomalies: Vec<AnomalyBody> = found
        .into_iter()
        .map(|a: Anomaly| {
            let evidence = a
                .evidence
                .iter()
                .take(EVIDENCE_RECORDS)
                .filter_map(|s| by_seq(*s))
                .collect();
            let truncated = a.evidence.len() > MAX_EVIDENCE_SEQS;
            let mut seqs = a.evidence;
            seqs.truncate(MAX_EVIDENCE_SEQS);
            AnomalyBody {
                kind: a.kind,
                actor: a.actor,
                resident: a.resident,
                window_start: a.window_start,
                window_end: a.window_end,
                count: a.count,
                evidence_seqs: seqs,
                evidence_truncated: truncated,
                evidence,
            }
        })
        .collect();
    state
        .audit_compliance(
            &officer,
            "audit_anomalies",
            "/v1/audit/anomalies",
            anomalies.len(),
            None,
        )
        .await?;
    Ok(Json(AnomalyReport {
        from,
        to,
        records: records.len(),
        settings: AnomalySettings {
            bulk_threshold: config.bulk_residents,
            denial_threshold: config.denials,
            actor_threshold: config.actors_per_resident,
            work_start: config.work_start.format("%H:%M").to_string(),
            work_end: config.work_end.format("%H:%M").to_string(),
            utc_offset: config.utc_offset.to_string(),
        },
        anomalies,
    }))
}

// ---------------------------------------------------------------------------------------
// Resident access report

/// Parameters of the resident report.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Days an access tagged with a case id stays withheld (default and most: the configured
    /// `audit.case_deferral_days`, 90 unless set).
    defer_days: Option<String>,
    /// `json` (default) or `xlsx`: a workbook with Chinese headings, one row per access
    /// (访问记录) and the summary (概况); withheld accesses are left out exactly as in JSON.
    format: Option<String>,
}

/// One access to the resident's data, as the resident may see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportEntry {
    pub time: DateTime<Utc>,
    /// Who, as an office: the department's Chinese name, or the role's (网格员 …).
    pub organisation: String,
    /// Department code, when the actor belongs to one.
    pub dept: Option<String>,
    pub roles: Vec<String>,
    /// What was done, e.g. read_resident.
    pub action: String,
    pub purpose: Option<String>,
    /// allow, masked, deny or break_glass.
    #[schema(value_type = String)]
    pub decision: Decision,
    /// Fields shown in clear.
    pub fields_clear: Vec<String>,
}

/// Who looked at a resident's data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResidentReport {
    /// The resident's unified id.
    pub resident: String,
    pub generated_at: DateTime<Utc>,
    pub case_deferral_days: i64,
    /// Accesses withheld because they belong to a case younger than the deferral.
    pub deferred: usize,
    /// Accesses, oldest first.
    pub accesses: Vec<ReportEntry>,
}

fn role_label(role: &str) -> &'static str {
    match role {
        "grid_worker" => "网格员",
        "community_officer" => "社区工作人员",
        "street_officer" => "街道工作人员",
        "dept_analyst" => "部门数据分析人员",
        "dept_publisher" => "部门数据发布",
        "compliance_officer" => "合规审计人员",
        "security_admin" => "安全管理员",
        "system_admin" => "系统管理员",
        _ => "其他人员",
    }
}

fn organisation(record: &AuditRecord) -> String {
    let role = record
        .actor
        .roles
        .first()
        .map_or("其他人员", |r| role_label(r));
    match record
        .actor
        .dept
        .as_deref()
        .and_then(|d| Department::parse(d).ok())
    {
        Some(dept) => format!("{}（{role}）", dept.chinese_name()),
        None => role.to_owned(),
    }
}

fn decision_label(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "允许",
        Decision::Masked => "允许（部分信息遮蔽）",
        Decision::Deny => "拒绝",
        Decision::BreakGlass => "紧急调阅",
    }
}

/// The action in words a resident reads; an action without words shows its code.
fn action_label(action: &str) -> &str {
    match action {
        "read_resident" => "查看居民档案",
        "read_house" => "查看房屋档案",
        "read_event" => "查看事件",
        "read_organization" => "查看组织档案",
        "lookup_by_source" => "按部门编号查找",
        "search" => "检索",
        "exchange_delivery" => "数据共享（推送）",
        "exchange_feed" => "数据共享（拉取）",
        "report_event" => "上报事件",
        "record_visit" => "走访登记",
        "transition_event" => "办理事件",
        "split" => "拆分档案",
        "decide_review" => "身份合并审核",
        "audit_search" => "审计查询",
        "audit_resident_report" => "生成访问报告",
        "refused" => "被拒绝的请求",
        other => other,
    }
}

/// The resident access report: who looked at this resident's data, when and why.
#[utoipa::path(get, path = "/v1/audit/residents/{resident}/report",
    params(("resident" = String, Path, description = "unified resident id (r_…) or ID number"), ReportParams),
    responses((status = 200,
            description = "JSON (default), or with format=xlsx a workbook (Content-Disposition: attachment): one row per access with Chinese headings, and the summary",
            content((ResidentReport = "application/json"),
                (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resident_report(
    State(state): State<AppState>,
    officer: ComplianceOfficer,
    Path(resident): Path<String>,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let form = xlsx::requested_form(p.format.as_deref(), "json")?;
    let subject = resident_subject(&state, &resident)?;
    let defer_days = match p.defer_days.as_deref() {
        None => state.case_deferral_days,
        Some(d) => match parse_number::<i64>(d, "defer_days_invalid", "defer_days")? {
            n if (0..=state.case_deferral_days).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "defer_days_invalid",
                    format!(
                        "defer_days must be between 0 and {} (audit.case_deferral_days)",
                        state.case_deferral_days
                    ),
                ))
            }
        },
    };
    let report = build_report(&state, subject.clone(), defer_days).await?;
    let workbook = match form {
        Form::Workbook => Some(xlsx::render(report_sheets(&report)).await?),
        Form::Own => None,
    };
    state
        .audit_compliance_as(
            &officer,
            "audit_resident_report",
            "/v1/audit/residents/{resident}/report",
            report.accesses.len(),
            Some(&subject),
            form,
        )
        .await?;
    Ok(match workbook {
        // Named by the day only: the resident's id or ID number never reaches the name.
        Some(workbook) => xlsx::attachment(
            workbook,
            &format!(
                "safegrid-resident-report-{}.xlsx",
                report.generated_at.format("%Y%m%d")
            ),
        ),
        None => Json(report).into_response(),
    })
}

/// The report of `subject`: every access in the log but those withheld for an open case.
async fn build_report(
    state: &AppState,
    subject: ResidentSubject,
    defer_days: i64,
) -> Result<ResidentReport, ApiError> {
    let records = scan_all(
        state,
        AuditQuery {
            subject: Some(subject.clone()),
            ..AuditQuery::default()
        },
    )
    .await?;
    let now = Utc::now();
    let policy = state.permissions.current();
    let deferral = Duration::days(defer_days);
    let mut deferred = 0;
    let mut accesses = Vec::with_capacity(records.len());
    for record in records {
        let may_open_cases = policy.allows(&record.actor.roles, Permission::OpenCase);
        if record.case_id.is_some() && may_open_cases && record.time + deferral > now {
            deferred += 1;
            continue;
        }
        accesses.push(ReportEntry {
            time: record.time,
            organisation: organisation(&record),
            dept: record.actor.dept.clone(),
            roles: record.actor.roles.clone(),
            action: record.action,
            purpose: record.purpose,
            decision: record.decision,
            fields_clear: record.fields_clear,
        });
    }
    Ok(ResidentReport {
        resident: subject.entity,
        generated_at: now,
        case_deferral_days: defer_days,
        deferred,
        accesses,
    })
}

/// The report as a workbook in Chinese: one row per access (访问记录) with exactly the facts
/// of the JSON entry, times in China Standard Time; the summary (概况) beside it.
fn report_sheets(report: &ResidentReport) -> Vec<Sheet> {
    let header = [
        "访问时间（北京时间）",
        "单位",
        "部门代码",
        "角色",
        "操作",
        "用途",
        "结果",
        "明文显示的字段",
    ];
    let rows = report
        .accesses
        .iter()
        .map(|entry| {
            let roles: Vec<&str> = entry.roles.iter().map(|r| role_label(r)).collect();
            vec![
                Cell::Text(xlsx::china_time(entry.time)),
                Cell::from(entry.organisation.as_str()),
                Cell::from(entry.dept.clone()),
                Cell::Text(roles.join("、")),
                Cell::from(action_label(&entry.action)),
                Cell::from(entry.purpose.clone()),
                Cell::from(decision_label(entry.decision)),
                Cell::Text(entry.fields_clear.join("、")),
            ]
        })
        .collect();
    let first = report.accesses.first().map(|e| xlsx::china_time(e.time));
    let last = report.accesses.last().map(|e| xlsx::china_time(e.time));
    let pairs = vec![
        ("居民统一编号".to_owned(), Cell::from(report.resident.as_str())),
        (
            "报告生成时间（北京时间）".to_owned(),
            Cell::Text(xlsx::china_time(report.generated_at)),
        ),
        (
            "统计范围".to_owned(),
            Cell::from("审计日志中该居民的全部访问记录"),
        ),
        ("最早访问时间（北京时间）".to_owned(), Cell::from(first)),
        ("最近访问时间（北京时间）".to_owned(), Cell::from(last)),
        ("列出的访问次数".to_owned(), Cell::from(report.accesses.len())),
        ("暂缓列出的访问次数".to_owned(), Cell::from(report.deferred)),
        (
            "案件访问暂缓天数".to_owned(),
            Cell::from(report.case_deferral_days),
        ),
        (
            "说明".to_owned(),
            Cell::Text(format!(
                "有权办理案件的人员因案件查阅的记录，在查阅后 {} 天内暂缓列出，只计入暂缓次数；表中列出使用信息的单位和角色，不列工作人员个人。",
                report.case_deferral_days
            )),
        ),
    ];
    vec![
        Sheet::Table {
            name: "访问记录".to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
        },
        Sheet::Pairs {
            name: "概况".to_owned(),
            pairs,
        },
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The entries `api/openapi.rs` lists for this module, checked here so they stay valid.
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(
            search_records,
            checkpoint,
            inclusion_proof,
            consistency_proof,
            export,
            anomalies,
            resident_report,
        ),
        components(schemas(
            RecordsPage,
            CheckpointBody,
            InclusionBody,
            ConsistencyBody,
            AnomalyReport,
            AnomalyBody,
            AnomalySettings,
            ResidentReport,
            ReportEntry,
        ))
    )]
    struct ComplianceDoc;

    #[test]
    fn every_compliance_route_is_documented() {
        use utoipa::OpenApi as _;
        let doc = ComplianceDoc::openapi();
        for path in [
            "/v1/audit/records",
            "/v1/audit/checkpoint",
            "/v1/audit/proof/inclusion",
            "/v1/audit/proof/consistency",
            "/v1/audit/export",
            "/v1/audit/anomalies",
            "/v1/audit/residents/{resident}/report",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains("\"cursor\"") && json.contains("application/x-ndjson"));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "!!", "c2VxOng", &URL_SAFE_NO_PAD.encode("nope:1")] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code,
                "cursor_invalid",
                "{bad}"
            );
        }
    }

    #[test]
    fn times_accept_an_unencoded_plus() {
        let a = parse_time("2026-11-01T08:00:00+08:00", "from_invalid", "from").unwrap();
        let b = parse_time("2026-11-01T08:00:00 08:00", "from_invalid", "from").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            parse_time("yesterday", "from_invalid", "from")
                .unwrap_err()
                .code,
            "from_invalid"
        );
        assert_eq!(
            parse_range(Some("2026-11-02T00:00:00Z"), Some("2026-11-01T00:00:00Z"))
                .unwrap_err()
                .code,
            "range_invalid"
        );
    }

    #[test]
    fn unified_ids_are_recognised_by_shape() {
        assert!(is_unified_resident_id("r_0123456789abcdef0123"));
        assert!(!is_unified_resident_id("h_0123456789abcdef0123"));
        assert!(!is_unified_resident_id("r_0123"));
        assert!(!is_unified_resident_id("11010519491231002X"));
    }

    #[test]
    fn organisation_names_the_office_not_the_person() {
        let mut r = AuditRecord::new(
            "q",
            audit::Actor {
                sub: "w-7".into(),
                name: "李网格".into(),
                roles: vec!["grid_worker".into()],
                dept: None,
            },
            "read_resident",
            "/v1/residents/{id}",
            Decision::Masked,
        );
        assert_eq!(organisation(&r), "网格员");
        r.actor.dept = Some("minzheng".into());
        r.actor.roles = vec!["dept_analyst".into()];
        let label = organisation(&r);
        assert!(label.starts_with("民政"), "{label}");
        assert!(!label.contains("李网格"));
    }
}
