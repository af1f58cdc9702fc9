//! `GET /metrics`: on the API listener for the system administrator, and on the metrics
//! listener (`metrics_listen`, loopback by default) without a token.
//!
//! Guarantees: the text holds no personal data (see `crate::metrics`); the API listener
//! answers only a token whose role may read operations, and the refusal is audited.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::routes::Routes;
use super::AppState;
use crate::metrics::write_histogram;

/// `GET /metrics` on the API listener: for the system administrator only.
pub fn routes() -> Routes {
    Routes::new().get("/metrics", metrics_for_admin)
}

/// `GET /metrics` on the metrics listener (`metrics_listen`, loopback by default): no token,
/// since only what can reach that address can scrape it.
pub fn listener_routes(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Prometheus metrics (text format), for a `system_admin` token; scrapers without one use
/// the metrics listener (`metrics_listen`, default 127.0.0.1:9464). No personal data.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
    (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics_for_admin(
    State(state): State<AppState>,
    caller: super::extract::Authenticated,
) -> Result<axum::response::Response, super::error::ApiError> {
    state
        .require_permission(
            &caller,
            policies::authz::Permission::ReadOperations,
            "/metrics",
            "role_cannot_operate",
            "only the system administrator reads /metrics here; scrapers use metrics_listen",
        )
        .await?;
    Ok(metrics(State(state)).await.into_response())
}

/// The metrics text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let extra = [
        (
            "safegrid_audit_queue_depth",
            "Audit records waiting for the group-commit writer.",
            state.audit.queue_depth() as f64,
        ),
        (
            "safegrid_audit_healthy",
            "1 while the audit log can be written, else 0.",
            if state.audit.is_healthy() { 1.0 } else { 0.0 },
        ),
        (
            "safegrid_audit_free_bytes",
            "Free bytes on the audit log's file system at the last measurement (-1 unknown).",
            state.audit.free_bytes().map_or(-1.0, |b| b as f64),
        ),
        (
            "safegrid_audit_space_refusals_total",
            "Audit records refused since start because free space was below audit.min_free_mb.",
            state.audit.space_refusals() as f64,
        ),
        (
            "safegrid_audit_write_failures_total",
            "Audit writes that failed since start (each recovered by truncation and retry).",
            state.audit.write_failures() as f64,
        ),
        (
            "safegrid_audit_records_cut_total",
            "Audit records whose over-long values were cut and hashed since start.",
            state.audit.records_cut() as f64,
        ),
        (
            "safegrid_index_lag_changes",
            "Store changes the search index has not applied yet.",
            index_lag(&state) as f64,
        ),
        (
            "safegrid_index_skipped_entities_total",
            "Entities left out of the search index since start because a sealed field failed to open (tampered or moved data; the log names them).",
            state.search.skipped() as f64,
        ),
    ];
    let mut text = state.metrics.render(&extra);
    let sync = state.audit.sync_latency();
    let _ = writeln!(text, "# HELP safegrid_audit_fsync_seconds Time to write and fsync one group-committed batch of audit records.");
    let _ = writeln!(text, "# TYPE safegrid_audit_fsync_seconds histogram");
    write_histogram(
        &mut text,
        "safegrid_audit_fsync_seconds",
        "",
        &sync.buckets,
        sync.count,
        sync.sum_seconds,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Changes in the store that the search index has not applied yet (0 if the store cannot be
/// read; `/readyz` reports that).
fn index_lag(state: &AppState) -> u64 {
    state
        .vault
        .change_seq()
        .saturating_sub(state.search.indexed_seq())
}
