//! Quarantine, for the publishing department: the records it sent that were not stored, with
//! their reasons and content, so it can fix and re-send them.
//!
//! Guarantees: a department sees and manages only its own rejects; an entry closes by itself
//! when a good version of the same `source_id` is ingested, or when the department dismisses
//! it; connector pushes can file mapping failures here so nothing is lost silently.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use audit::Decision;
use model::Department;

use engine::ingest::{PreRejected, Receipt, Rejection};

use super::error::{ApiError, ErrorBody};
use super::extract::Publisher;
use super::routes::Routes;
use super::{parse_department, AppState};

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/ingest/{department}/rejects", list_rejects)
        .post("/v1/ingest/{department}/rejects", file_rejects)
        .delete("/v1/ingest/{department}/rejects/{id}", dismiss_reject)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RejectsQuery {
    /// Also list entries already resolved or dismissed.
    #[serde(default)]
    pub include_resolved: bool,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectItem {
    pub id: String,
    pub batch_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    pub line: usize,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The record as the department sent it.
    pub record: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectPage {
    pub rejects: Vec<RejectItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn own_department(publisher: &Publisher, code: &str) -> Result<Department, ApiError> {
    let department = parse_department(code)?;
    if publisher.principal.dept != Some(department) {
        return Err(ApiError::not_found());
    }
    Ok(department)
}

/// The department's quarantined records.
#[utoipa::path(get, path = "/v1/ingest/{department}/rejects",
    params(("department" = String, Path), RejectsQuery),
    responses((status = 200, body = RejectPage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_rejects(
    State(state): State<AppState>,
    publisher: Publisher,
    Path(department): Path<String>,
    Query(query): Query<RejectsQuery>,
) -> Result<Json<RejectPage>, ApiError> {
    let department = own_department(&publisher, &department)?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let cursor = query.cursor.clone();
    if cursor
        .as_deref()
        .is_some_and(|c| !c.starts_with("q_") || c.len() > 64)
    {
        return Err(ApiError::bad_request(
            "cursor_invalid",
            "cursor must be a next_cursor value",
        ));
    }
    let pipeline = state.pipeline.clone();
    let include_resolved = query.include_resolved;
    let page = tokio::task::spawn_blocking(move || {
        pipeline.quarantine_page(department, cursor.as_deref(), include_resolved, limit)
    })
    .await??;
    let entries = page.len();
    let items: Vec<RejectItem> = page
        .into_iter()
        .map(|(entry, record)| RejectItem {
            id: entry.id,
            batch_id: entry.batch_id,
            source_file: entry.source_file,
            line: entry.line,
            code: entry.code,
            field: entry.field,
            message: entry.message,
            source_id: entry.source_id,
            received_at: entry.received_at,
            record,
            resolved: entry.resolved,
        })
        .collect();
    let next_cursor = (entries == limit)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    let mut record = state.audit_record(
        &publisher.principal,
        &publisher.context,
        "read_rejects",
        "/v1/ingest/{department}/rejects",
        Decision::Allow,
    );
    record.result_count = items.len() as u64;
    state.append_audit(record).await?;
    Ok(Json(RejectPage {
        rejects: items,
        next_cursor,
    }))
}

/// A failure a connector found before the broker saw the record (e.g. a mapping error).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FiledReject {
    pub source_file: Option<String>,
    pub line: usize,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
    pub source_id: Option<String>,
    /// The source row as read.
    pub row: Value,
}

/// File failures found on the department's side (connector mapping errors) into quarantine.
#[utoipa::path(post, path = "/v1/ingest/{department}/rejects",
    params(("department" = String, Path)),
    request_body = Vec<FiledReject>,
    responses((status = 200, body = Receipt), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn file_rejects(
    State(state): State<AppState>,
    publisher: Publisher,
    Path(department): Path<String>,
    Json(filed): Json<Vec<FiledReject>>,
) -> Result<Json<Receipt>, ApiError> {
    let department = own_department(&publisher, &department)?;
    if filed.len() > engine::ingest::MAX_RECORDS_PER_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "send at most 100000 rejects per request",
        ));
    }
    let code_ok = |c: &str| {
        !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')
    };
    if let Some(bad) = filed.iter().position(|f| !code_ok(&f.code)) {
        return Err(ApiError::bad_request(
            "reject_code_invalid",
            format!("reject {} has a code that is not snake_case", bad + 1),
        ));
    }
    let batch_text: String = filed
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{};",
                f.source_file.as_deref().unwrap_or(""),
                f.line,
                f.code
            )
        })
        .collect();
    let batch_id = format!(
        "{}r",
        engine::ingest::batch_id(department, batch_text.as_bytes())
    );
    let pre: Vec<PreRejected> = filed
        .into_iter()
        .map(|f| PreRejected {
            rejection: Rejection {
                line: f.line,
                code: f.code,
                message: f.message.chars().take(500).collect(),
                field: f.field,
                source_id: f.source_id,
                source_file: f.source_file,
                quarantine_id: None,
            },
            raw: f.row,
        })
        .collect();
    let mut record = state.audit_record(
        &publisher.principal,
        &publisher.context,
        "file_rejects",
        "/v1/ingest/{department}/rejects",
        Decision::Allow,
    );
    record.result_count = pre.len() as u64;
    record.outcome = format!("batch={batch_id}");
    let pipeline = state.pipeline.clone();
    let receipt = state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || {
                pipeline.ingest_records(department, &batch_id, Vec::new(), pre)
            })
            .await?
            .map_err(ApiError::from)
        })
        .await?;
    Ok(Json(receipt))
}

/// Dismiss one quarantined record (it will not be re-sent).
#[utoipa::path(delete, path = "/v1/ingest/{department}/rejects/{id}",
    params(("department" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dismiss_reject(
    State(state): State<AppState>,
    publisher: Publisher,
    Path((department, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let department = own_department(&publisher, &department)?;
    let mut record = state.audit_record(
        &publisher.principal,
        &publisher.context,
        "dismiss_reject",
        "/v1/ingest/{department}/rejects/{id}",
        Decision::Allow,
    );
    record.entities = vec![id.chars().take(64).collect()];
    let pipeline = state.pipeline.clone();
    state
        .audited_write(record, || async move {
            let closed =
                tokio::task::spawn_blocking(move || pipeline.dismiss_quarantined(department, &id))
                    .await??;
            if closed {
                Ok(())
            } else {
                Err(ApiError::not_found())
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
