//! Quarantine, for the publishing department: the records it sent that were not stored, with
//! their reasons and content, so it can fix and re-send them.
//!
//! Guarantees: a department sees and manages only its own rejects; an entry closes by itself
//! when a good version of the same `source_id` is ingested, or when the department dismisses
//! it; connector pushes can file mapping failures here so nothing is lost silently.
//!
//! The list is written in the reader's language: with `Accept-Language` preferring Chinese,
//! each entry's `message` is the catalog's Chinese text for its code
//! ([`super::messages::rejection_message`]; a department's own code keeps its text). With
//! `format=xlsx` the same entries come as a workbook (one row per entry, its reason code and
//! message, headings in the reader's language) that holds less than the JSON: where the
//! record came from (file, line, source id), never the record's content — a workbook travels
//! by mail and USB stick, so the personal data stays behind the API, where the department
//! reads it with `record` in the JSON.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use audit::Decision;
use model::Department;

use engine::ingest::{PreRejected, Receipt, Rejection};

use super::error::{ApiError, ErrorBody};
use super::extract::Publisher;
use super::messages::{rejection_message, Language};
use super::routes::Routes;
use super::xlsx::{self, Cell, Form, Sheet};
use super::{parse_department, AppState};

/// Entries of one JSON page when `limit` is absent.
pub const DEFAULT_PAGE: usize = 50;
/// The most entries of one JSON page.
pub const MAX_PAGE: usize = 500;
/// Entries of one workbook: when `limit` is absent, and the most.
pub const MAX_WORKBOOK_ROWS: usize = 10_000;

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
    /// Page size (default 50, at most 500; a workbook: default and at most 10000).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `xlsx`: a workbook with one row per entry (its reason code and
    /// message, where it came from; not the record's content) and a summary sheet, headings
    /// in the language `Accept-Language` prefers. Its `next_cursor`, if any, is in the
    /// summary and in the `X-Next-Cursor` header.
    pub format: Option<String>,
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
    responses((status = 200,
            description = "JSON (default), messages in the language Accept-Language prefers; or with format=xlsx a workbook (Content-Disposition: attachment) without the records' content",
            content((RejectPage = "application/json"),
                (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_rejects(
    State(state): State<AppState>,
    publisher: Publisher,
    Path(department): Path<String>,
    Query(query): Query<RejectsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let department = own_department(&publisher, &department)?;
    let form = xlsx::requested_form(query.format.as_deref(), "json")?;
    let language = Language::preferred(&headers);
    let limit = match form {
        Form::Own => query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
        Form::Workbook => query
            .limit
            .unwrap_or(MAX_WORKBOOK_ROWS)
            .clamp(1, MAX_WORKBOOK_ROWS),
    };
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
            message: rejection_message(&entry.code, &entry.message, language).to_owned(),
            id: entry.id,
            batch_id: entry.batch_id,
            source_file: entry.source_file,
            line: entry.line,
            code: entry.code,
            field: entry.field,
            source_id: entry.source_id,
            received_at: entry.received_at,
            record,
            resolved: entry.resolved,
        })
        .collect();
    let next_cursor = (entries == limit)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    let page = RejectPage {
        rejects: items,
        next_cursor,
    };
    let workbook = match form {
        Form::Workbook => Some(
            xlsx::render(reject_sheets(
                department,
                &page,
                include_resolved,
                language,
                chrono::Utc::now(),
            ))
            .await?,
        ),
        Form::Own => None,
    };
    let mut record = state.audit_record(
        &publisher.principal,
        &publisher.context,
        "read_rejects",
        "/v1/ingest/{department}/rejects",
        Decision::Allow,
    );
    record.result_count = page.rejects.len() as u64;
    if workbook.is_some() {
        record.outcome = "format=xlsx".to_owned();
    }
    state.append_audit(record).await?;
    let mut response = match workbook {
        Some(workbook) => {
            let name = format!(
                "safegrid-rejects-{}-{}.xlsx",
                department.code(),
                chrono::Utc::now().format("%Y%m%d")
            );
            let mut response = xlsx::attachment(workbook, &name);
            if let Some(cursor) = page
                .next_cursor
                .as_deref()
                .and_then(|c| axum::http::HeaderValue::from_str(c).ok())
            {
                response.headers_mut().insert("x-next-cursor", cursor);
            }
            response
        }
        None => Json(page).into_response(),
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LANGUAGE, language.content_language());
    Ok(response)
}

/// The page as a workbook: one row per entry (where it came from, its reason code and
/// message, when it arrived, whether it is closed), never the record's content; a summary.
/// Headings, times and states in `language` (times in China Standard Time for Chinese).
fn reject_sheets(
    department: Department,
    page: &RejectPage,
    include_resolved: bool,
    language: Language,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Sheet> {
    let chinese = language == Language::Chinese;
    let time = |t: chrono::DateTime<chrono::Utc>| {
        if chinese {
            xlsx::china_time(t)
        } else {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
    };
    let state = |resolved: Option<&str>| -> String {
        match (resolved, chinese) {
            (None, true) => "待处理".to_owned(),
            (None, false) => "open".to_owned(),
            (Some("reingested"), true) => "已重新报送并入库".to_owned(),
            (Some("dismissed"), true) => "已撤销".to_owned(),
            (Some(other), _) => other.to_owned(),
        }
    };
    let header: &[&str] = if chinese {
        &[
            "编号",
            "批次",
            "来源文件",
            "行号",
            "原因代码",
            "字段",
            "原因说明",
            "源记录编号",
            "接收时间（北京时间）",
            "状态",
        ]
    } else {
        &[
            "ID",
            "Batch",
            "Source file",
            "Line",
            "Reason code",
            "Field",
            "Message",
            "Source ID",
            "Received (UTC)",
            "Status",
        ]
    };
    let rows = page
        .rejects
        .iter()
        .map(|item| {
            vec![
                Cell::from(item.id.as_str()),
                Cell::from(item.batch_id.as_str()),
                Cell::from(item.source_file.clone()),
                Cell::from(item.line),
                Cell::from(item.code.as_str()),
                Cell::from(item.field.clone()),
                // Already in `language` (see `list_rejects`).
                Cell::from(item.message.as_str()),
                Cell::from(item.source_id.clone()),
                Cell::Text(time(item.received_at)),
                Cell::Text(state(item.resolved.as_deref())),
            ]
        })
        .collect();
    let pairs: Vec<(String, Cell)> = if chinese {
        vec![
            (
                "部门".into(),
                Cell::Text(format!(
                    "{}（{}）",
                    department.chinese_name(),
                    department.code()
                )),
            ),
            ("导出时间（北京时间）".into(), Cell::Text(time(now))),
            ("条数".into(), Cell::from(page.rejects.len())),
            (
                "是否包含已处理的记录".into(),
                Cell::from(if include_resolved { "是" } else { "否" }),
            ),
            (
                "下一页游标".into(),
                Cell::Text(page.next_cursor.clone().unwrap_or_else(|| "无（已全部列出）".into())),
            ),
            (
                "说明".into(),
                Cell::from("本表不含记录内容；请按来源文件、行号和源记录编号在本部门系统中更正后重新报送。"),
            ),
        ]
    } else {
        vec![
            (
                "Department".into(),
                Cell::from(department.code()),
            ),
            ("Exported (UTC)".into(), Cell::Text(time(now))),
            ("Entries".into(), Cell::from(page.rejects.len())),
            (
                "Includes closed entries".into(),
                Cell::from(if include_resolved { "yes" } else { "no" }),
            ),
            (
                "Next cursor".into(),
                Cell::Text(page.next_cursor.clone().unwrap_or_else(|| "none (all listed)".into())),
            ),
            (
                "Note".into(),
                Cell::from("The records' content is not in this file: find each by source file, line and source ID in your own system, correct it and send it again."),
            ),
        ]
    };
    let (table, summary) = if chinese {
        ("退回记录", "概况")
    } else {
        ("Rejected records", "Summary")
    };
    vec![
        Sheet::Table {
            name: table.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
        },
        Sheet::Pairs {
            name: summary.to_owned(),
            pairs,
        },
    ]
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
