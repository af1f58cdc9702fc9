//! Standard addresses and grids: a street or community officer assigns a building — or a
//! whole compound — to a grid, so records that state no grid and sit there take it,
//! including those already waiting in quarantine as `grid_unresolved`.
//!
//! Guarantees: only officers assign, and only to a grid inside their own jurisdiction; every
//! assignment is audited before it is stored (the audit record names the grid, never the
//! address); the records it releases are ingested within the jurisdiction their publisher
//! had.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use audit::Decision;
use model::DivisionCode;

use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;

const ENDPOINT: &str = "/v1/addresses/assign";

pub fn routes() -> Routes {
    Routes::new().post(ENDPOINT, assign)
}

/// A building, by its standard address, and the grid it lies in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// A standard address down to the building, e.g. `某区青松园5号楼` (unit and room, if
    /// given, are ignored), or of a whole compound, `某区青松园`.
    pub address: String,
    /// The 15-digit grid code.
    pub grid: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Assigned {
    pub grid: String,
    /// Records that waited for their grid and were stored now.
    pub released: usize,
}

/// Assign a building or a whole compound to a grid (street and community officers, inside
/// their jurisdiction).
#[utoipa::path(post, path = "/v1/addresses/assign", request_body = Assignment,
    responses((status = 200, body = Assigned), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assign(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<Assignment>,
) -> Result<Json<Assigned>, ApiError> {
    let refuse = |error| state.refuse(&caller.principal, &caller.context, ENDPOINT, error);
    let officer = ["street_officer", "community_officer"]
        .iter()
        .any(|role| caller.principal.has_role(role));
    if !officer {
        return Err(refuse(ApiError::forbidden(
            "role_cannot_assign",
            "only street and community officers assign buildings to grids",
        ))
        .await);
    }
    let grid = match DivisionCode::parse(body.grid.trim()) {
        Ok(grid) if grid.as_str().len() == 15 => grid,
        _ => {
            return Err(ApiError::bad_request(
                "grid_invalid",
                "grid must be a 15-digit grid code (网格)",
            ))
        }
    };
    if !caller.principal.covers(&grid) {
        return Err(refuse(ApiError::forbidden(
            "grid_outside_jurisdiction",
            "the grid lies outside your jurisdiction",
        ))
        .await);
    }
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "assign_address_grid",
        ENDPOINT,
        Decision::Allow,
    );
    record.outcome = format!("grid={}", grid.as_str());
    let pipeline = state.pipeline.clone();
    let address = body.address;
    let assigned_grid = grid.clone();
    state
        .audited_write(record, || async move {
            let assigned = tokio::task::spawn_blocking(move || {
                pipeline.assign_address_grid(&address, &assigned_grid)
            })
            .await??;
            assigned.ok_or_else(|| {
                ApiError::bad_request(
                    "address_without_compound",
                    "the address names no compound (e.g. 青松园 or 青松园5号楼); give the standard address of the compound or building",
                )
            })
        })
        .await?;
    let pipeline = state.pipeline.clone();
    let released = tokio::task::spawn_blocking(move || pipeline.release_unresolved()).await??;
    Ok(Json(Assigned {
        grid: grid.as_str().to_owned(),
        released,
    }))
}
