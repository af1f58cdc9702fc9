//! Sharing statistics (`GET /v1/stats/sharing`): what the street leadership reports upward —
//! per department the records it published, how many of them other departments, grid workers
//! and officers have read or received, and the sharing rate; and the events grid workers and
//! officers recorded, how many are closed and the median hours to close.
//!
//! Guarantees: counts only, no personal data; only roles with `Permission::ReadSharingStats`
//! (street and community officers by default); each request is audited.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use audit::Decision;
use model::Department;
use policies::authz::Permission;

use super::error::ApiError;
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new().get("/v1/stats/sharing", sharing)
}

/// One department's figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepartmentSharing {
    pub department: String,
    /// Source records the department has sent (deletions included).
    pub published: u64,
    /// Of them, those read, found or received outside the department at least once.
    pub shared: u64,
    /// `shared / published` (0 when nothing was published).
    pub sharing_rate: f64,
}

/// Events recorded through `POST /v1/reports` and `/v1/visits`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventFigures {
    pub reported: u64,
    /// Closed (结案).
    pub closed: u64,
    /// Median hours from occurrence (the report's time when none was given) to closing;
    /// absent before the first closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_hours_to_close: Option<f64>,
}

/// The street's sharing figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SharingStats {
    pub departments: Vec<DepartmentSharing>,
    pub total: DepartmentSharing,
    /// Events grid workers and officers recorded (reports and visits).
    pub events: EventFigures,
    /// When the figures were read.
    pub as_of: chrono::DateTime<chrono::Utc>,
}

fn rate(shared: u64, published: u64) -> f64 {
    if published == 0 {
        0.0
    } else {
        (shared as f64 / published as f64).min(1.0)
    }
}

/// 数据共享率: records each department published and how many were shared outside it.
#[utoipa::path(get, path = "/v1/stats/sharing",
    responses((status = 200, body = SharingStats), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn sharing(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SharingStats>, ApiError> {
    const ENDPOINT: &str = "/v1/stats/sharing";
    if !state
        .permissions
        .allows(&caller.principal.roles, Permission::ReadSharingStats)
    {
        return Err(state
            .refuse(
                &caller.principal,
                &caller.context,
                ENDPOINT,
                ApiError::forbidden(
                    "role_cannot_read_statistics",
                    "the sharing statistics are for street and community officers",
                ),
            )
            .await);
    }
    let tracker = state.sharing.clone();
    let (published, shared) = tokio::task::spawn_blocking(move || {
        tracker.flush()?;
        Ok::<_, vault::store::StoreError>((tracker.published()?, tracker.shared()?))
    })
    .await??;
    let pipeline = state.pipeline.clone();
    let events = tokio::task::spawn_blocking(move || pipeline.recorded_events())
        .await?
        .map_err(|err| ApiError::internal("statistics_unreadable", &err))?;
    let mut departments = Vec::new();
    let (mut all_published, mut all_shared) = (0, 0);
    for department in Department::ALL {
        let code = department.code();
        let published = published.get(code).copied().unwrap_or(0);
        let shared = shared.get(code).copied().unwrap_or(0).min(published);
        all_published += published;
        all_shared += shared;
        departments.push(DepartmentSharing {
            department: code.to_owned(),
            published,
            shared,
            sharing_rate: rate(shared, published),
        });
    }
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "stats_sharing",
        ENDPOINT,
        Decision::Allow,
    );
    record.result_count = departments.len() as u64;
    state.append_audit(record).await?;
    Ok(Json(SharingStats {
        departments,
        total: DepartmentSharing {
            department: "all".to_owned(),
            published: all_published,
            shared: all_shared,
            sharing_rate: rate(all_shared, all_published),
        },
        events: EventFigures {
            reported: events.recorded,
            closed: events.closed,
            median_hours_to_close: events.median_hours_to_close,
        },
        as_of: chrono::Utc::now(),
    }))
}
