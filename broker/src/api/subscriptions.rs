//! Exchange: departments' subscriptions, signed webhook deliveries and pull feeds.
//!
//! Guarantees:
//! - Only a department's subscriber (`Permission::ManageSubscriptions`, a token with `dept`)
//!   manages its department's subscriptions; another department's subscription answers
//!   exactly like a missing one. Every change and every refusal is audited.
//! - A subscription is accepted only inside what the caller may receive: grids inside the
//!   token's jurisdiction, a purpose the broker knows, kinds and event types that a sharing
//!   agreement (`sharing.csv`) gives its department for that purpose, and a delivery URL on
//!   the department's allowed hosts ([`crate::exchange::Exchange::check_url`]).
//! - The secret is in the creation answer only.
//! - Feed items pass the disclosure gate ([`super::disclosure::exchange_feed`]).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use audit::Decision;
use model::{DivisionCode, RecordKind};
use policies::authz::Permission;

use super::disclosure::{Disclosed, ExchangeItem};
use super::error::ApiError;
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;
use crate::exchange::{
    DeliveryEntry, NewSubscription, Subscription, MAX_SUBSCRIPTIONS_PER_DEPARTMENT,
};

/// Most kinds, event types and grids one subscription may name.
const MAX_LIST: usize = 50;
/// Default and largest feed page.
const FEED_DEFAULT: usize = 100;
const FEED_MAX: usize = 1000;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
        .post("/v1/subscriptions", create)
        .get("/v1/subscriptions", list)
        .delete("/v1/subscriptions/{id}", remove)
        .get("/v1/subscriptions/{id}/deliveries", deliveries)
        .post(
            "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry",
            retry,
        )
        .get("/v1/subscriptions/{id}/feed", feed)
}

/// What a department asks to receive.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Kinds: `resident`, `house`, `event`, `organization`.
    pub kinds: Vec<String>,
    /// Event types (snake_case codes); empty or absent: every type an agreement covers.
    #[serde(default)]
    pub types: Vec<String>,
    /// Division codes (street, community, grid) inside the token's jurisdiction.
    pub grids: Vec<String>,
    /// The purpose the department receives for; its sharing agreement names it.
    pub purpose: String,
    /// The webhook URL (https, on the department's allowed hosts); absent for a feed-only
    /// subscription.
    #[serde(default)]
    pub url: Option<String>,
}

/// A subscription as its department sees it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub department: String,
    pub kinds: Vec<String>,
    pub types: Vec<String>,
    pub grids: Vec<String>,
    pub purpose: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The change sequence it started after.
    pub start_seq: u64,
    /// Webhook deliveries: the sequence delivered up to, counts, and the delivery in flight.
    pub cursor: u64,
    pub delivered: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_seq: Option<u64>,
}

/// A new subscription and its secret, which is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// Hex; signs every delivery (`X-SafeGrid-Signature`). Shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryEntry>,
}

/// One page of a subscription's feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPage {
    #[schema(value_type = Vec<ExchangeItem>)]
    pub items: Disclosed<Vec<ExchangeItem>>,
    /// Pass as `after` for the next page (it moves past changes that are not this
    /// subscription's, so it may be beyond the last item).
    pub next: u64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `failed` or `delivered`; all when absent.
    status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next` of the previous page (default: where the subscription started).
    after: Option<u64>,
    /// Items per page (default 100, at most 1000).
    limit: Option<usize>,
}

fn view(subscription: Subscription, state: &crate::exchange::DeliveryState) -> SubscriptionView {
    SubscriptionView {
        id: subscription.id,
        department: subscription.department.code().to_owned(),
        kinds: subscription
            .kinds
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        types: subscription.types,
        grids: subscription.grids,
        purpose: subscription.purpose,
        url: subscription.url,
        created_at: subscription.created_at,
        start_seq: subscription.start_seq,
        cursor: state.cursor,
        delivered: state.delivered,
        failed: state.failed,
        pending_seq: state.head.as_ref().map(|h| h.seq),
    }
}

/// The caller's department, if it may manage subscriptions; the refusal audited otherwise.
async fn subscriber(
    state: &AppState,
    caller: &Authenticated,
    endpoint: &str,
) -> Result<model::Department, ApiError> {
    let allowed = state
        .permissions
        .allows(&caller.principal.roles, Permission::ManageSubscriptions);
    match (allowed, caller.principal.dept) {
        (true, Some(dept)) => Ok(dept),
        _ => Err(state
            .refuse(
                &caller.principal,
                &caller.context,
                endpoint,
                ApiError::forbidden(
                    "role_cannot_subscribe",
                    "only a department's subscriber (role dept_subscriber, with dept) manages subscriptions",
                ),
            )
            .await),
    }
}

/// The caller's department's subscription `id`; another department's answers like a
/// missing one (audited).
async fn own_subscription(
    state: &AppState,
    caller: &Authenticated,
    id: &str,
    endpoint: &str,
) -> Result<Subscription, ApiError> {
    let dept = subscriber(state, caller, endpoint).await?;
    match state.exchange.get(id)? {
        Some(subscription) if subscription.department == dept => Ok(subscription),
        _ => Err(state
            .refuse(
                &caller.principal,
                &caller.context,
                endpoint,
                ApiError::not_found(),
            )
            .await),
    }
}

/// A query string that cannot be read, refused (and audited) with what to fix.
async fn refuse_query(
    state: &AppState,
    caller: &Authenticated,
    endpoint: &str,
    message: String,
) -> ApiError {
    state
        .refuse(
            &caller.principal,
            &caller.context,
            endpoint,
            ApiError::bad_request("query_string_invalid", message),
        )
        .await
}

/// Checks a request against what the caller may receive; the subscription to store.
fn validate(
    state: &AppState,
    caller: &Authenticated,
    dept: model::Department,
    request: SubscriptionRequest,
) -> Result<NewSubscription, ApiError> {
    let bad = |code: &'static str, message: String| ApiError::bad_request(code, message);
    if request.kinds.is_empty() || request.kinds.len() > MAX_LIST {
        return Err(bad(
            "kinds_invalid",
            format!("kinds lists 1 to {MAX_LIST} of resident, house, event, organization"),
        ));
    }
    let mut kinds = Vec::new();
    for kind in &request.kinds {
        let kind = RecordKind::parse(kind).ok_or_else(|| {
            bad(
                "kinds_invalid",
                "kinds lists resident, house, event or organization".to_owned(),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if request.types.len() > MAX_LIST
        || !request
            .types
            .iter()
            .all(|t| policies::exchange::is_type_code(t))
    {
        return Err(bad(
            "types_invalid",
            format!("types lists at most {MAX_LIST} snake_case event types"),
        ));
    }
    if !request.types.is_empty() && !kinds.contains(&RecordKind::Event) {
        return Err(bad(
            "types_invalid",
            "types filter events: add event to kinds".to_owned(),
        ));
    }
    if request.grids.is_empty() || request.grids.len() > MAX_LIST {
        return Err(bad(
            "grids_invalid",
            format!("grids lists 1 to {MAX_LIST} division codes"),
        ));
    }
    let mut grids = Vec::new();
    for grid in &request.grids {
        let code = DivisionCode::parse(grid).map_err(|_| {
            bad(
                "grid_invalid",
                "each grid must be a 6, 9, 12 or 15 digit division code".to_owned(),
            )
        })?;
        if !caller.principal.covers(&code) {
            return Err(ApiError::forbidden(
                "grid_outside_jurisdiction",
                "a subscription's grids must lie inside the token's jurisdiction",
            ));
        }
        grids.push(code.as_str().to_owned());
    }
    if !state.purposes.contains(&request.purpose) {
        return Err(bad(
            "purpose_unknown",
            format!("purpose must be one of {}", state.purposes.join(", ")),
        ));
    }
    let policy = state.permissions.current();
    let covered = |kind: RecordKind, event_type: Option<&str>| {
        policy.exchange.lines().iter().any(|line| {
            line.receiver == dept
                && line.kind == kind
                && line.purpose == request.purpose
                && match event_type {
                    Some(t) => line.event_type == "*" || line.event_type == t,
                    None => true,
                }
        })
    };
    for kind in &kinds {
        let ok = if *kind == RecordKind::Event && !request.types.is_empty() {
            request.types.iter().all(|t| covered(*kind, Some(t)))
        } else {
            covered(*kind, None)
        };
        if !ok {
            return Err(ApiError::forbidden(
                "no_sharing_agreement",
                format!(
                    "no sharing agreement (sharing.csv) gives {} {}{} for {}; ask the security administrator",
                    dept.code(),
                    kind.as_str(),
                    if *kind == RecordKind::Event && !request.types.is_empty() {
                        " of every listed type"
                    } else {
                        ""
                    },
                    request.purpose
                ),
            ));
        }
    }
    if let Some(url) = &request.url {
        state.exchange.check_url(dept, url).map_err(|refused| {
            let status = if refused.code == "delivery_host_not_allowed" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, refused.code, refused.message)
        })?;
    }
    Ok(NewSubscription {
        department: dept,
        kinds,
        types: request.types,
        grids,
        purpose: request.purpose,
        url: request.url,
        created_by: caller.principal.sub.clone(),
    })
}

/// Subscribe to what the department's sharing agreements allow.
#[utoipa::path(post, path = "/v1/subscriptions", request_body = SubscriptionRequest,
    responses((status = 201, body = Created), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    body: Result<Json<SubscriptionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    const ENDPOINT: &str = "/v1/subscriptions";
    let dept = subscriber(&state, &caller, ENDPOINT).await?;
    let checked = body
        .map_err(|err| {
            ApiError::bad_request(
                "body_invalid",
                format!(
                    "the body must be a JSON object with kinds, grids, purpose and optionally types and url: {}",
                    err.body_text()
                ),
            )
        })
        .and_then(|Json(request)| validate(&state, &caller, dept, request))
        .and_then(|new| {
            let held = state.exchange.list(Some(dept))?.len();
            if held >= MAX_SUBSCRIPTIONS_PER_DEPARTMENT {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_subscriptions",
                    format!("a department holds at most {MAX_SUBSCRIPTIONS_PER_DEPARTMENT} subscriptions; delete one first"),
                ))
            } else {
                Ok(new)
            }
        });
    let new = match checked {
        Ok(new) => new,
        Err(error) => {
            return Err(state
                .refuse(&caller.principal, &caller.context, ENDPOINT, error)
                .await)
        }
    };
    let record = state.audit_record(
        &caller.principal,
        &caller.context,
        "subscription_create",
        ENDPOINT,
        Decision::Allow,
    );
    let exchange = state.exchange.clone();
    let (subscription, secret) = state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || exchange.create(new))
                .await?
                .map_err(ApiError::from)
        })
        .await?;
    let delivery_state = state.exchange.state(&subscription.id)?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            subscription: view(subscription, &delivery_state),
            secret,
        }),
    ))
}

/// The department's subscriptions and where their deliveries stand.
#[utoipa::path(get, path = "/v1/subscriptions",
    responses((status = 200, body = SubscriptionList), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SubscriptionList>, ApiError> {
    let dept = subscriber(&state, &caller, "/v1/subscriptions").await?;
    let mut items = Vec::new();
    for subscription in state.exchange.list(Some(dept))? {
        let delivery_state = state.exchange.state(&subscription.id)?;
        items.push(view(subscription, &delivery_state));
    }
    Ok(Json(SubscriptionList { items }))
}

/// Delete a subscription: its deliveries stop.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    const ENDPOINT: &str = "/v1/subscriptions/{id}";
    let subscription = own_subscription(&state, &caller, &id, ENDPOINT).await?;
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "subscription_delete",
        ENDPOINT,
        Decision::Allow,
    );
    record.outcome = subscription.id.clone();
    let exchange = state.exchange.clone();
    state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || exchange.delete(&subscription.id))
                .await?
                .map_err(ApiError::from)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscription's deliveries, newest first: pending, failed (after a day of retries) and
/// the last 1000 delivered.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    const ENDPOINT: &str = "/v1/subscriptions/{id}/deliveries";
    let subscription = own_subscription(&state, &caller, &id, ENDPOINT).await?;
    let query = match query {
        Ok(Query(query))
            if query
                .status
                .as_deref()
                .is_none_or(|s| ["pending", "failed", "delivered"].contains(&s)) =>
        {
            query
        }
        _ => {
            return Err(refuse_query(
                &state,
                &caller,
                ENDPOINT,
                "status is pending, failed or delivered; limit a number".to_owned(),
            )
            .await)
        }
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .exchange
        .deliveries(&subscription.id, query.status.as_deref(), limit)?;
    Ok(Json(DeliveryList { items }))
}

/// Send a failed delivery again (before the next new change); it carries the entity as it
/// is now.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    const ENDPOINT: &str = "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry";
    let subscription = own_subscription(&state, &caller, &id, ENDPOINT).await?;
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "delivery_retry",
        ENDPOINT,
        Decision::Allow,
    );
    record.outcome = delivery.chars().take(64).collect();
    let exchange = state.exchange.clone();
    let queued = state
        .audited_write(record, || async move {
            tokio::task::spawn_blocking(move || exchange.retry(&subscription.id, &delivery))
                .await?
                .map_err(ApiError::from)
        })
        .await?;
    if queued {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found())
    }
}

/// Pull a subscription's changes in commit order, from a cursor.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/feed", params(("id" = String, Path), FeedQuery),
    responses((status = 200, body = FeedPage), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn feed(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedPage>, ApiError> {
    const ENDPOINT: &str = "/v1/subscriptions/{id}/feed";
    let subscription = own_subscription(&state, &caller, &id, ENDPOINT).await?;
    let query = match query {
        Ok(Query(query)) if query.limit.is_none_or(|l| (1..=FEED_MAX).contains(&l)) => query,
        _ => {
            return Err(refuse_query(
                &state,
                &caller,
                ENDPOINT,
                format!("after is a sequence number; limit 1 to {FEED_MAX}"),
            )
            .await)
        }
    };
    let after = query.after.unwrap_or(subscription.start_seq);
    let limit = query.limit.unwrap_or(FEED_DEFAULT);
    let (items, next) =
        super::disclosure::exchange_feed(&state, &caller, &subscription, after, limit).await?;
    Ok(Json(FeedPage { items, next }))
}
