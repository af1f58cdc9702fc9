//! Operations routes for the system administrator: a consistent backup while serving, and
//! the items background tasks skipped (`GET /v1/admin/problems`, keys only, no personal data).
//!
//! Guarantees (三员分立): only a role holding the operations permission may start a backup; it
//! reads no personal data (the store is copied sealed, the master key is never part of it);
//! the backup is written only under the configured `backup_dir`, never to a path the caller
//! names; every backup is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use audit::Decision;

use policies::authz::Permission;

use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .post("/v1/admin/backup", backup)
        .get("/v1/admin/problems", problems)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemList {
    /// The last items background tasks skipped (at most 1,000), oldest first.
    pub problems: Vec<engine::problems::Problem>,
}

/// Items background tasks (search index, name directory, linkage, connectors) skipped
/// because they failed or panicked: the task, the item's key, what went wrong, when.
#[utoipa::path(get, path = "/v1/admin/problems",
    responses((status = 200, body = ProblemList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn problems(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<ProblemList>, ApiError> {
    state
        .require_permission(
            &caller,
            Permission::ReadOperations,
            "/v1/admin/problems",
            "role_cannot_operate",
            "only the system administrator lists background problems",
        )
        .await?;
    Ok(Json(ProblemList {
        problems: engine::problems::list(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupDone {
    /// Directory the backup was written to (under `backup_dir`).
    pub path: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Files and their SHA-256, as in the backup's MANIFEST.json.
    pub files: usize,
}

/// Write a consistent backup of the store and the audit log while serving.
#[utoipa::path(post, path = "/v1/admin/backup",
    responses((status = 200, body = BackupDone), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn backup(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<BackupDone>, ApiError> {
    state
        .require_permission(
            &caller,
            Permission::ReadOperations,
            "/v1/admin/backup",
            "role_cannot_operate",
            "only the system administrator may start a backup",
        )
        .await?;
    let Some(backup_dir) = state.backup_dir.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_dir_not_configured",
            "set backup_dir in the configuration to take backups while serving",
        ));
    };
    if !state.vault.store_is_embedded() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_store_external",
            "the store is in PostgreSQL: back it up with pg_basebackup and WAL archiving \
             (deploy/README.md); this broker's backup copies an embedded store",
        ));
    }
    let name = chrono::Utc::now()
        .format("safegrid-%Y%m%dT%H%M%S%.3fZ")
        .to_string();
    let out = backup_dir.join(name);
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "backup",
        "/v1/admin/backup",
        Decision::Allow,
    );
    record.outcome = format!("to={}", out.display());
    let (vault_state, data_dir, target) = (state.clone(), state.data_dir.clone(), out.clone());
    let manifest = state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || vault_state.vault.backup(&data_dir, &target))
                .await?
                .map_err(|e| ApiError::internal("backup_failed", &e))
        })
        .await?;
    Ok(Json(BackupDone {
        path: out.display().to_string(),
        created_at: manifest.created_at,
        files: manifest.files.len(),
    }))
}
