//! The HTTP API (v1): routes, shared state, and the audit trail of every access.
//!
//! Guarantees:
//! - Personal data leaves only through handlers that take a [`extract::Reader`]; the profile
//!   passes through [`crate::view`] (masking) before serialization, and its audit record is
//!   durable before the response is sent. If the audit log cannot be written, no personal
//!   data is returned (503 `audit_unavailable`).
//! - A record outside the caller's jurisdiction answers exactly like a missing one.

pub mod addresses;
pub mod admin;
pub mod compliance;
pub mod deliveries;
pub mod disclosure;
pub mod error;
pub mod extract;
pub mod messages;
pub mod metrics;
mod openapi;
pub mod policy;
pub mod rejects;
pub mod reports;
pub mod resolution;
pub mod routes;
pub mod search;
pub mod stats;
pub mod subscriptions;
pub mod xlsx;

use std::ops::Deref;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Json, Router};
use serde::Serialize;

use audit::{Actor, AuditLog, AuditRecord, Decision};
use model::{Department, RecordKind};

use crate::auth::Authenticator;
use crate::policy_folder::PolicyHandle;
use engine::ingest::{Pipeline, Receipt};
use model::profile::Profile;
use policies::authz::Permission;
use policies::Principal;
use routes::Routes;

use disclosure::{Disclosed, UnifiedId};
use error::ApiError;
use extract::{Authenticated, Publisher, Reader};

/// Everything a request handler may use.
#[derive(Debug)]
pub struct AppStateInner {
    /// This broker's counters and histograms (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Store, keys and authority order, reachable only through the disclosure gate.
    pub vault: disclosure::Vault,
    pub pipeline: Pipeline,
    pub authenticator: Authenticator,
    pub permissions: Arc<PolicyHandle>,
    pub names: Arc<::search::directory::NameIndex>,
    pub break_glass: BreakGlassLimiter,
    pub purposes: Vec<String>,
    pub max_body_bytes: usize,
    pub audit: AuditLog,
    /// The data directory (for backups while serving).
    pub data_dir: std::path::PathBuf,
    /// Where `POST /v1/admin/backup` writes, if configured.
    pub backup_dir: Option<std::path::PathBuf>,
    /// Mappings of departments that push their own schema.
    pub mappings: std::collections::HashMap<Department, Arc<connectors::Mapping>>,
    pub search: ::search::SearchIndex,
    /// Folds repeated unauthenticated refusals from one client into one record a minute.
    pub refusals: RefusalFolder,
    /// Days a case-tagged access stays out of a resident's report (and the most a report
    /// may ask for).
    pub case_deferral_days: i64,
    /// Requests per principal (token bucket).
    pub rate: RateLimiter,
    /// Longest time a client may take to send a request body.
    pub body_read: std::time::Duration,
    /// Departments' subscriptions and their deliveries.
    pub exchange: Arc<crate::exchange::Exchange>,
    /// Which departments' records have been disclosed outside them (the sharing rate).
    pub sharing: Arc<crate::sharing::SharingTracker>,
    /// `[events]`: deadlines per event type (`GET /v1/events?overdue=true`).
    pub events: crate::config::EventsSection,
    /// The console's sessions and settings (`/console/`).
    pub console: Arc<crate::console::Console>,
}

#[derive(Debug, Clone)]
pub struct AppState(pub Arc<AppStateInner>);

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// Per-request facts set by the server before routing.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub client_addr: Option<String>,
    /// SHA-256 of the client's TLS certificate (mTLS connections), for the audit record.
    pub client_cert_sha256: Option<String>,
}

pub use crate::server::ClientAddr;

/// Every route the API serves, each module's with its own.
pub fn routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/openapi.json", openapi::openapi_json)
        .get("/docs", openapi::docs_page)
        .post("/v1/ingest/{department}", ingest)
        .get("/v1/ingest/{department}/batches/{batch_id}", receipt)
        .get("/v1/residents/{id}", get_resident)
        .get("/v1/houses/{id}", get_house)
        .get("/v1/events/{id}", get_event)
        .get("/v1/organizations/{id}", get_organization)
        .get(
            "/v1/residents/by-source/{department}/{source_id}",
            resident_by_source,
        )
        .get(
            "/v1/houses/by-source/{department}/{source_id}",
            house_by_source,
        )
        .get(
            "/v1/events/by-source/{department}/{source_id}",
            event_by_source,
        )
        .get(
            "/v1/organizations/by-source/{department}/{source_id}",
            organization_by_source,
        )
        .get("/v1/whoami", whoami)
        .merge(addresses::routes())
        .merge(subscriptions::routes())
        .merge(reports::routes())
        .merge(stats::routes())
        .merge(compliance::routes())
        .merge(admin::routes())
        .merge(policy::routes())
        .merge(rejects::routes())
        .merge(resolution::routes())
        .merge(search::routes())
        .merge(metrics::routes())
}

/// The router with every v1 route, and the console (`/console/`), which calls the v1 routes.
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    let console = crate::console::router(state, api.clone());
    console.merge(api)
}

/// The router with every v1 route.
fn api_router(state: AppState) -> Router {
    routes()
        .into_router()
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route; see /openapi.json",
            )
        })
        // Error messages in the reader's language (`Accept-Language`); every error, also
        // the extractors' rejections, in the API's shape.
        .layer(middleware::from_fn(messages::localize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Gives every request an id (echoed as `x-request-id`) and records the client address.
async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut bytes = [0u8; 12];
    // A failed random read leaves zeros: the id is then less unique, which is harmless.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let request_id = hex::encode(bytes);
    let client_addr = request
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.to_string());
    let client_cert_sha256 = request
        .extensions()
        .get::<crate::server::ConnectionInfo>()
        .and_then(|c| c.client.as_ref())
        .map(|c| c.cert_sha256.clone());
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        client_addr,
        client_cert_sha256,
    });
    let method = request.method().clone();
    // The route template, never the raw path (ids in paths stay out of logs and metrics).
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // Extractors record `sub` and `purpose` on this span once the caller is known.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = %route,
        sub = tracing::field::Empty,
        purpose = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let elapsed = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe_request(method.as_str(), &route, response.status().as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            status = response.status().as_u16(),
            elapsed_ms = elapsed * 1000.0,
            "request"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// How long the search follower may go without a good pass, while behind the store, before
/// `/readyz` stops saying ready.
const SEARCH_STALL_SECONDS: u64 = 30;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = error::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if !state.audit.is_healthy() {
        return Err(ApiError::unavailable(
            "audit_unavailable",
            "the audit log cannot be written; personal data is withheld until it can",
        ));
    }
    if !state.vault.readable() {
        return Err(ApiError::unavailable(
            "store_unavailable",
            "the store cannot be read",
        ));
    }
    if !state.search.is_ready() {
        return Err(search::index_building());
    }
    // Behind the store and not moving: searches would answer stale pages, so say so.
    let stalled = state.search.seconds_since_good_pass();
    if stalled > SEARCH_STALL_SECONDS {
        let head = state.vault.change_seq();
        if head > state.search.indexed_seq() {
            return Err(ApiError::unavailable(
                "search_index_lagging",
                format!(
                    "the search index is {} changes behind the store and has not advanced for {stalled} s; see GET /v1/admin/problems and the log",
                    head - state.search.indexed_seq()
                ),
            )
            .retry_after(10));
        }
    }
    Ok(Json(Health { status: "ready" }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    sub: String,
    roles: Vec<String>,
    jurisdiction: Vec<String>,
    dept: Option<String>,
}

/// Who the token says you are (no personal data of residents).
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = error::ErrorBody)), security(("bearer" = [])))]
async fn whoami(caller: Authenticated) -> Json<WhoAmI> {
    let p = caller.principal;
    Json(WhoAmI {
        sub: p.sub,
        roles: p.roles,
        jurisdiction: p
            .jurisdiction
            .iter()
            .map(|j| j.as_str().to_owned())
            .collect(),
        dept: p.dept.map(|d| d.code().to_owned()),
    })
}

fn parse_department(code: &str) -> Result<Department, ApiError> {
    Department::parse(code).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "department_unknown",
            "unknown department code; use gongan, minzheng, weijian, sifa, zhujian, chengguan, yingji or wangge",
        )
    })
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct IngestQuery {
    /// `unified` (the unified record format) or `department` (the department's own schema,
    /// through its configured mapping). Default: `department` when a mapping is configured,
    /// else `unified`.
    pub format: Option<String>,
}

/// Publish a batch of records (NDJSON or a JSON array) for a department.
#[utoipa::path(post, path = "/v1/ingest/{department}",
    params(("department" = String, Path, description = "department code, e.g. gongan"), IngestQuery),
    request_body(description = "unified records (or the department's own schema through its mapping): a JSON array, or NDJSON with one record per line", content((Vec<serde_json::Value> = "application/json"), (String = "application/x-ndjson"))),
    responses((status = 200, body = Receipt), (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
        (status = 403, body = error::ErrorBody), (status = 413, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn ingest(
    State(state): State<AppState>,
    publisher: Publisher,
    Path(department): Path<String>,
    Query(query): Query<IngestQuery>,
    body: Body,
) -> Result<Json<Receipt>, ApiError> {
    let department = parse_department(&department)?;
    let refuse = |error: ApiError| {
        state.refuse(
            &publisher.principal,
            &publisher.context,
            "/v1/ingest/{department}",
            error,
        )
    };
    if publisher.principal.dept != Some(department) {
        return Err(refuse(ApiError::forbidden(
            "department_mismatch",
            "a publisher may only publish for its own department",
        ))
        .await);
    }
    let bytes = match tokio::time::timeout(
        state.body_read,
        axum::body::to_bytes(body, state.max_body_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            state.metrics.count_limit_refusal("payload_too_large");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the batch is larger than {} bytes; split it into smaller batches",
                    state.max_body_bytes
                ),
            ));
        }
        Err(_) => {
            state.metrics.count_limit_refusal("body_timeout");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} seconds (limits.body_read_seconds); send smaller batches or from closer",
                    state.body_read.as_secs()
                ),
            ));
        }
    };
    let pipeline = state.pipeline.within(&publisher.principal.jurisdiction);
    let mapping = match query.format.as_deref() {
        None | Some("department") => state.mappings.get(&department).cloned(),
        Some("unified") => None,
        Some(_) => {
            return Err(refuse(ApiError::bad_request(
                "format_unknown",
                "format is `unified` or `department` (the department's own schema, through its configured mapping)",
            ))
            .await)
        }
    };
    // Audited before it commits: if the log cannot take the record, nothing is stored.
    let mut record = state.audit_record(
        &publisher.principal,
        &publisher.context,
        "ingest",
        "/v1/ingest/{department}",
        Decision::Allow,
    );
    record.outcome = format!(
        "batch={} bytes={}",
        engine::ingest::batch_id(department, &bytes),
        bytes.len()
    );
    let receipt = state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || match mapping {
                Some(mapping) => engine::ingest::ingest_mapped(
                    &pipeline,
                    department,
                    &crate::connect::PushMapping(&mapping),
                    &bytes,
                ),
                None => pipeline.ingest(department, &bytes),
            })
            .await?
            .map_err(ApiError::from)
        })
        .await?;
    state
        .metrics
        .count_ingest(department, receipt.accepted, receipt.rejected.len());
    // A resident placed in another community is raised for compliance officers (after the
    // commit: the move itself is in the profile's history whatever happens here).
    for moved in &receipt.scope_moves {
        let mut record = state.audit_record(
            &publisher.principal,
            &publisher.context,
            audit::SCOPE_MOVE_ACTION,
            "/v1/ingest/{department}",
            Decision::Allow,
        );
        record.entities = vec![moved.entity.clone()];
        record.residents = vec![state.vault.audit_reference(&moved.entity)];
        record.outcome = format!("from={} to={}", moved.from, moved.to);
        state.append_audit(record).await?;
    }
    Ok(Json(receipt))
}

/// A batch receipt, for the department that published it.
#[utoipa::path(get, path = "/v1/ingest/{department}/batches/{batch_id}",
    params(("department" = String, Path), ("batch_id" = String, Path)),
    responses((status = 200, body = Receipt), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn receipt(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((department, batch_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let department = parse_department(&department)?;
    if !state
        .permissions
        .allows(&caller.principal.roles, Permission::ReadOwnReceipts)
        || caller.principal.dept != Some(department)
    {
        return Err(ApiError::not_found());
    }
    let bytes = state
        .vault
        .receipt(&batch_id)?
        .ok_or_else(ApiError::not_found)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| vault::store::StoreError::Corrupt {
            key: format!("receipt/{batch_id}"),
            reason: e.to_string(),
        })?;
    if value.get("department").and_then(|d| d.as_str()) != Some(department.code()) {
        return Err(ApiError::not_found());
    }
    Ok(Json(value))
}

/// One merged, masked resident profile.
#[utoipa::path(get, path = "/v1/residents/{id}",
    params(("id" = String, Path, description = "unified id"),
        ("X-Purpose" = String, Header, description = "purpose of use"),
        ("X-Case-Id" = Option<String>, Header, description = "case reference")),
    responses((status = 200, body = Profile), (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
        (status = 403, body = error::ErrorBody), (status = 404, body = error::ErrorBody), (status = 503, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn get_resident(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<Json<Disclosed<Profile>>, ApiError> {
    read_entity(
        &state,
        &reader,
        RecordKind::Resident,
        &id,
        "/v1/residents/{id}",
    )
    .await
}

/// One merged house with its occupants.
#[utoipa::path(get, path = "/v1/houses/{id}",
    params(("id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = Profile), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn get_house(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<Json<Disclosed<Profile>>, ApiError> {
    read_entity(&state, &reader, RecordKind::House, &id, "/v1/houses/{id}").await
}

/// One event with its parties and house.
#[utoipa::path(get, path = "/v1/events/{id}",
    params(("id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = Profile), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn get_event(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<Json<Disclosed<Profile>>, ApiError> {
    read_entity(&state, &reader, RecordKind::Event, &id, "/v1/events/{id}").await
}

/// One merged organization with its legal representative and premises.
#[utoipa::path(get, path = "/v1/organizations/{id}",
    params(("id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = Profile), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn get_organization(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<Json<Disclosed<Profile>>, ApiError> {
    read_entity(
        &state,
        &reader,
        RecordKind::Organization,
        &id,
        "/v1/organizations/{id}",
    )
    .await
}

/// Loads, scopes, masks and audits one entity, through the disclosure gate.
async fn read_entity(
    state: &AppState,
    reader: &Reader,
    kind: RecordKind,
    id: &str,
    endpoint: &str,
) -> Result<Json<Disclosed<Profile>>, ApiError> {
    disclosure::entity(state, reader, kind, id, endpoint)
        .await
        .map(Json)
}

async fn by_source(
    state: &AppState,
    reader: &Reader,
    kind: RecordKind,
    department: &str,
    source_id: &str,
) -> Result<Json<Disclosed<UnifiedId>>, ApiError> {
    let department = parse_department(department)?;
    disclosure::unified_id(state, reader, kind, department, source_id)
        .await
        .map(Json)
}

/// The unified id a department's resident record merged into.
#[utoipa::path(get, path = "/v1/residents/by-source/{department}/{source_id}",
    params(("department" = String, Path), ("source_id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = UnifiedId), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn resident_by_source(
    State(state): State<AppState>,
    reader: Reader,
    Path((department, source_id)): Path<(String, String)>,
) -> Result<Json<Disclosed<UnifiedId>>, ApiError> {
    by_source(
        &state,
        &reader,
        RecordKind::Resident,
        &department,
        &source_id,
    )
    .await
}

/// The unified id a department's house record merged into.
#[utoipa::path(get, path = "/v1/houses/by-source/{department}/{source_id}",
    params(("department" = String, Path), ("source_id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = UnifiedId), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn house_by_source(
    State(state): State<AppState>,
    reader: Reader,
    Path((department, source_id)): Path<(String, String)>,
) -> Result<Json<Disclosed<UnifiedId>>, ApiError> {
    by_source(&state, &reader, RecordKind::House, &department, &source_id).await
}

/// The unified id a department's event record merged into.
#[utoipa::path(get, path = "/v1/events/by-source/{department}/{source_id}",
    params(("department" = String, Path), ("source_id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = UnifiedId), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn event_by_source(
    State(state): State<AppState>,
    reader: Reader,
    Path((department, source_id)): Path<(String, String)>,
) -> Result<Json<Disclosed<UnifiedId>>, ApiError> {
    by_source(&state, &reader, RecordKind::Event, &department, &source_id).await
}

/// The unified id a department's organization record merged into.
#[utoipa::path(get, path = "/v1/organizations/by-source/{department}/{source_id}",
    params(("department" = String, Path), ("source_id" = String, Path), ("X-Purpose" = String, Header)),
    responses((status = 200, body = UnifiedId), (status = 404, body = error::ErrorBody)),
    security(("bearer" = [])))]
async fn organization_by_source(
    State(state): State<AppState>,
    reader: Reader,
    Path((department, source_id)): Path<(String, String)>,
) -> Result<Json<Disclosed<UnifiedId>>, ApiError> {
    by_source(
        &state,
        &reader,
        RecordKind::Organization,
        &department,
        &source_id,
    )
    .await
}

impl AppState {
    pub(crate) fn audit_record(
        &self,
        principal: &Principal,
        context: &RequestContext,
        action: &str,
        endpoint: &str,
        decision: Decision,
    ) -> AuditRecord {
        let actor = Actor {
            sub: principal.sub.clone(),
            name: principal.name.clone(),
            roles: principal.roles.clone(),
            dept: principal.dept.map(|d| d.code().to_owned()),
        };
        let mut record = AuditRecord::new(&context.request_id, actor, action, endpoint, decision);
        record.client_addr = context.client_addr.clone();
        record.client_cert_sha256 = context.client_cert_sha256.clone();
        record.policy_version = Some(self.permissions.version());
        record
    }

    pub(crate) fn reader_record(
        &self,
        reader: &Reader,
        action: &str,
        endpoint: &str,
        decision: Decision,
    ) -> AuditRecord {
        let mut record = self.audit_record(
            &reader.principal,
            &reader.context,
            action,
            endpoint,
            decision,
        );
        record.purpose = Some(reader.purpose.clone());
        record.case_id = reader.case_id.clone();
        record.break_glass_reason = reader.break_glass.clone();
        record
    }

    /// Runs a write only after its audit record is durable: if the log cannot take
    /// `record`, nothing changes (503 `audit_unavailable`). If the write then fails, a second
    /// record says so (best effort: nothing changed, so nothing is left unrecorded).
    pub async fn audited_write<T, F, Fut>(
        &self,
        record: AuditRecord,
        write: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut failure = record.clone();
        self.append_audit(record).await?;
        match write().await {
            Ok(value) => Ok(value),
            Err(error) => {
                failure.decision = Decision::Deny;
                failure.outcome = format!("failed {}", error.code);
                if let Err(err) = self.audit.append(failure).await {
                    tracing::error!(cause = %err, "audit append of a failed write's outcome failed");
                }
                Err(error)
            }
        }
    }

    /// Appends a record and waits until it is durable; fails closed.
    pub async fn append_audit(&self, record: AuditRecord) -> Result<u64, ApiError> {
        self.audit.append(record).await.map_err(|err| {
            tracing::error!(cause = %err, "audit append failed");
            ApiError::unavailable(
                "audit_unavailable",
                "the audit log cannot be written; the request was not served",
            )
        })
    }

    /// Audits a request refused before anyone was authenticated (no token, a forged,
    /// expired or over-long one). Repeats of one code from one client address within a
    /// minute are folded (see [`Self::audit_folded`]), so a client cannot flood the log.
    pub async fn audit_unauthenticated(
        &self,
        context: &RequestContext,
        endpoint: &str,
        error: &crate::auth::AuthError,
    ) -> Result<(), ApiError> {
        let client = context
            .client_addr
            .as_deref()
            .map_or("", |a| a.rsplit_once(':').map_or(a, |(host, _)| host));
        let principal = Principal {
            sub: "anonymous".to_owned(),
            name: String::new(),
            roles: Vec::new(),
            jurisdiction: Vec::new(),
            dept: None,
        };
        self.audit_folded(&principal, context, endpoint, client, error.code())
            .await
    }

    /// Audits a request refused by the per-principal rate limit, folded per principal.
    pub async fn audit_rate_limited(
        &self,
        principal: &Principal,
        context: &RequestContext,
        endpoint: &str,
    ) -> Result<(), ApiError> {
        self.audit_folded(principal, context, endpoint, &principal.sub, "rate_limited")
            .await
    }

    /// One refusal record per (`key`, `code`) and minute: the first is written at once, the
    /// next minute's first carries how many were folded in between (`folded=N`).
    async fn audit_folded(
        &self,
        principal: &Principal,
        context: &RequestContext,
        endpoint: &str,
        key: &str,
        code: &'static str,
    ) -> Result<(), ApiError> {
        let Some(folded) = self.refusals.admit(key, code) else {
            return Ok(());
        };
        let mut record = self.audit_record(principal, context, "refused", endpoint, Decision::Deny);
        record.outcome = if folded > 0 {
            format!("{code} folded={folded}")
        } else {
            code.to_owned()
        };
        self.append_audit(record).await.map(|_| ())
    }

    /// Audits `error` as a refusal of `principal` and returns it, for `return Err(…)`.
    pub async fn refuse(
        &self,
        principal: &Principal,
        context: &RequestContext,
        endpoint: &str,
        error: ApiError,
    ) -> ApiError {
        match self
            .audit_refusal(principal, context, None, None, endpoint, &error)
            .await
        {
            Ok(()) => error,
            Err(unavailable) => unavailable,
        }
    }

    /// Audits `error` as a refusal of a reader (with its purpose and case id) and returns
    /// it, for `return Err(…)`.
    pub async fn refuse_reader(
        &self,
        reader: &Reader,
        endpoint: &str,
        error: ApiError,
    ) -> ApiError {
        match self
            .audit_refusal(
                &reader.principal,
                &reader.context,
                Some(&reader.purpose),
                reader.case_id.as_deref(),
                endpoint,
                &error,
            )
            .await
        {
            Ok(()) => error,
            Err(unavailable) => unavailable,
        }
    }

    /// `Ok` when one of the caller's roles holds `permission`; else the refusal (403 with
    /// `code` and `message`), audited before it is returned.
    pub async fn require_permission(
        &self,
        caller: &extract::Authenticated,
        permission: Permission,
        endpoint: &str,
        code: &'static str,
        message: &'static str,
    ) -> Result<(), ApiError> {
        if self.permissions.allows(&caller.principal.roles, permission) {
            return Ok(());
        }
        Err(self
            .refuse(
                &caller.principal,
                &caller.context,
                endpoint,
                ApiError::forbidden(code, message),
            )
            .await)
    }

    /// Audits a refused request (wrong role, missing purpose …).
    pub async fn audit_refusal(
        &self,
        principal: &Principal,
        context: &RequestContext,
        purpose: Option<&str>,
        case_id: Option<&str>,
        endpoint: &str,
        error: &ApiError,
    ) -> Result<(), ApiError> {
        let mut record = self.audit_record(principal, context, "refused", endpoint, Decision::Deny);
        record.purpose = purpose.map(|p| p.chars().take(64).collect());
        record.case_id = case_id.map(str::to_owned);
        record.outcome = error.code.to_owned();
        self.append_audit(record).await.map(|_| ())
    }
}

/// Folds repeated refusals of one code from one client address into one audit record per
/// minute. Bounded: past 10,000 clients in a minute the table starts over (each new entry
/// is then written, never silently dropped).
#[derive(Debug, Default)]
pub struct RefusalFolder {
    /// (client, code) -> (minute, refusals folded since the last written record).
    seen: std::sync::Mutex<std::collections::HashMap<FoldKey, (u64, u64)>>,
}

/// Who was refused, and why.
type FoldKey = (String, &'static str);

impl RefusalFolder {
    /// `Some(folded)` when a record must be written (with the number of repeats folded
    /// since the previous one), `None` when this repeat is folded.
    pub fn admit(&self, client: &str, code: &'static str) -> Option<u64> {
        let minute = chrono::Utc::now().timestamp().max(0) as u64 / 60;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= 10_000 {
            seen.retain(|_, (m, _)| *m == minute);
            if seen.len() >= 10_000 {
                seen.clear();
            }
        }
        match seen.get_mut(&(client.to_owned(), code)) {
            Some((m, folded)) if *m == minute => {
                *folded += 1;
                None
            }
            Some((m, folded)) => {
                let earlier = *folded;
                *m = minute;
                *folded = 0;
                Some(earlier)
            }
            None => {
                seen.insert((client.to_owned(), code), (minute, 0));
                Some(0)
            }
        }
    }
}

/// A token bucket per principal (`sub`): `per_second` sustained, `burst` at once. Bounded:
/// past 100,000 principals the full buckets are forgotten (a full bucket is the state of a
/// principal never seen).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    /// sub -> (tokens left, when they were counted).
    buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second` 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Default::default(),
        }
    }

    /// Takes one request from `sub`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, sub: &str) -> Result<(), u32> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= 100_000 && !buckets.contains_key(sub) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(sub.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u32)
        }
    }
}

/// Tokens left in a principal's bucket, and when they were counted.
type Bucket = (f64, std::time::Instant);

/// At most a few break-glass reads per principal per hour.
#[derive(Debug)]
pub struct BreakGlassLimiter {
    per_hour: usize,
    uses: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
}

impl BreakGlassLimiter {
    pub fn new(per_hour: usize) -> BreakGlassLimiter {
        BreakGlassLimiter {
            per_hour,
            uses: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Records one use by `sub`; false when the hourly allowance is spent.
    pub fn try_use(&self, sub: &str) -> bool {
        let hour = std::time::Duration::from_secs(3600);
        let now = std::time::Instant::now();
        let mut uses = match self.uses.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = uses.entry(sub.to_owned()).or_default();
        entry.retain(|t| now.duration_since(*t) < hour);
        if entry.len() >= self.per_hour {
            return false;
        }
        entry.push(now);
        true
    }
}
