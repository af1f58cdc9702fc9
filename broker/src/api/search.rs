//! Search endpoints: `GET /v1/residents?q=`, `/v1/houses?q=`, `/v1/events?q=`,
//! `/v1/organizations?q=` and `/v1/search?q=` across kinds.
//!
//! Guarantees:
//! - Only a [`Reader`] can search; the jurisdiction and field visibility are inside the index
//!   query ([`search::query`]), so `total` and pages count only what the caller may
//!   find.
//! - A hit carries the unified id, kind, score and a summary cut from the profile *after*
//!   [`policies::view::ViewPlan::apply`], exactly as the profile endpoint would show it. Only
//!   the summary's fields are resolved ([`summary_sources`](search::summary::summary_sources)); the audit record's masking
//!   decision and clear fields describe those fields, which are all a search discloses.
//! - Every search is audited (action `search`, result count, the entities returned) and the
//!   record is durable before the response leaves.
//! - A cursor is bound to its query: used with another query it is refused
//!   (400 `cursor_mismatch`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use model::{DivisionCode, RecordKind};

use super::disclosure::{self, Disclosed, SearchItem};
use super::error::ApiError;
use super::extract::Reader;
use super::routes::Routes;
use super::AppState;
use model::profile::Profile;
use search::query::Filters;
use search::summary::{summary_fields, summary_sources};
use search::{SearchRequest, SortOrder, MAX_OFFSET};

/// Default page size.
const DEFAULT_LIMIT: usize = 20;
/// Largest page size.
const MAX_LIMIT: usize = 100;
/// Longest query accepted, in characters.
const MAX_QUERY_CHARS: usize = 200;

/// The search routes.
pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/residents", search_residents)
        .get("/v1/houses", search_houses)
        .get("/v1/events", search_events)
        .get("/v1/organizations", search_organizations)
        .get("/v1/search", search_all)
}

/// Query-string parameters of every search endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// What the worker typed: Chinese name, pinyin, initials, a pinyin prefix, an ID number
    /// or its last 4/6, a phone or its last 4, an address fragment, event words. Parts
    /// separated by spaces must all match.
    q: Option<String>,
    /// Page size, default 20, at most 100.
    limit: Option<String>,
    /// The `next_cursor` of the previous page of the same query.
    cursor: Option<String>,
    /// Events: event type code (e.g. `dispute`); organizations: their type (e.g. `shop`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Events: `open` or `closed`.
    status: Option<String>,
    /// A division code (grid, community, street) to narrow the search to.
    grid: Option<String>,
    /// Events: occurred at or after (RFC 3339 or YYYY-MM-DD).
    from: Option<String>,
    /// Events: occurred before (RFC 3339 or YYYY-MM-DD).
    to: Option<String>,
    /// `relevance` (default) or `time` (newest first).
    sort: Option<String>,
    /// Events: `true` lists only events still open (reported, accepted, dispatched, in
    /// progress) longer after they occurred than their type's deadline (`[events]` in the
    /// configuration); `total` counts only those.
    overdue: Option<String>,
    /// Events: `me` lists only the events the caller recorded (reports and visits): "my
    /// events". Another staff member's events cannot be asked for.
    reported_by: Option<String>,
}

/// One page of results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    #[schema(value_type = Vec<SearchItem>)]
    pub items: Disclosed<Vec<SearchItem>>,
    /// Number of matching records the caller may see.
    pub total: usize,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Search residents.
#[utoipa::path(get, path = "/v1/residents", params(SearchParams, ("X-Purpose" = String, Header)),
    responses((status = 200, body = SearchPage), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 503, description = "search_index_building: the index is being built at start-up; or the audit log cannot be written",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u32, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(super) async fn search_residents(
    State(state): State<AppState>,
    reader: Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    run(
        &state,
        &reader,
        params,
        &[RecordKind::Resident],
        "/v1/residents",
    )
    .await
}

/// Search houses.
#[utoipa::path(get, path = "/v1/houses", params(SearchParams, ("X-Purpose" = String, Header)),
    responses((status = 200, body = SearchPage), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 503, description = "search_index_building: the index is being built at start-up; or the audit log cannot be written",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u32, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(super) async fn search_houses(
    State(state): State<AppState>,
    reader: Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    run(&state, &reader, params, &[RecordKind::House], "/v1/houses").await
}

/// Search events (full text, filters, sort by relevance or time).
#[utoipa::path(get, path = "/v1/events", params(SearchParams, ("X-Purpose" = String, Header)),
    responses((status = 200, body = SearchPage), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 503, description = "search_index_building: the index is being built at start-up; or the audit log cannot be written",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u32, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(super) async fn search_events(
    State(state): State<AppState>,
    reader: Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    run(&state, &reader, params, &[RecordKind::Event], "/v1/events").await
}

/// Search organizations (实有单位): by name (characters, words, pinyin initials or a word's
/// pinyin), credit code, the legal representative's ID number (last 4 when masked), phone,
/// address or tag; `type` filters by the organization's type.
#[utoipa::path(get, path = "/v1/organizations", params(SearchParams, ("X-Purpose" = String, Header)),
    responses((status = 200, body = SearchPage), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 503, description = "search_index_building: the index is being built at start-up; or the audit log cannot be written",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u32, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(super) async fn search_organizations(
    State(state): State<AppState>,
    reader: Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    run(
        &state,
        &reader,
        params,
        &[RecordKind::Organization],
        "/v1/organizations",
    )
    .await
}

/// Search residents, houses, events and organizations at once.
#[utoipa::path(get, path = "/v1/search", params(SearchParams, ("X-Purpose" = String, Header)),
    responses((status = 200, body = SearchPage), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 503, description = "search_index_building: the index is being built at start-up; or the audit log cannot be written",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u32, description = "seconds to wait before trying again")))),
    security(("bearer" = [])))]
pub(super) async fn search_all(
    State(state): State<AppState>,
    reader: Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    run(&state, &reader, params, &RecordKind::ALL, "/v1/search").await
}

/// A validated search: the request, and the fingerprint its cursors carry.
#[derive(Debug)]
struct Parsed {
    request: SearchRequest,
    fingerprint: String,
    /// `overdue=true`: the deadlines' cut-offs are added at the moment of the search.
    overdue: bool,
    /// `reported_by=me`: the caller's `sub` is added to the filters.
    mine: bool,
}

fn parse(params: SearchParams, kinds: &[RecordKind]) -> Result<Parsed, ApiError> {
    let q = params.q.unwrap_or_default().trim().to_owned();
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "query_too_long",
            format!("q may have at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let limit = match params.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("limit_invalid", format!("limit must be 1 to {MAX_LIMIT}"))
            })?,
    };
    let sort = match params.sort.as_deref() {
        None | Some("") | Some("relevance") => SortOrder::Relevance,
        Some("time") if kinds == [RecordKind::Event] => SortOrder::Time,
        Some(_) => {
            return Err(ApiError::bad_request(
                "sort_invalid",
                "sort is relevance, or time for /v1/events",
            ))
        }
    };
    let grid = match params.grid.as_deref().filter(|g| !g.is_empty()) {
        None => None,
        Some(text) => Some(
            DivisionCode::parse(text)
                .map_err(|_| {
                    ApiError::bad_request(
                        "grid_invalid",
                        "grid must be a 6, 9, 12 or 15 digit division code",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let time = |text: Option<&str>, name: &str| -> Result<Option<i64>, ApiError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(Some(at.timestamp()));
        }
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            // A bare date is a day in China (UTC+8).
            .map(|t| Some(t.and_utc().timestamp() - 8 * 3600))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "time_invalid",
                    format!("{name} must be RFC 3339 or YYYY-MM-DD"),
                )
            })
    };
    let code_filter = |value: Option<String>,
                       name: &str,
                       allowed: &[RecordKind]|
     -> Result<Option<String>, ApiError> {
        match value.filter(|v| !v.is_empty()) {
            Some(_) if !(kinds.len() == 1 && allowed.contains(&kinds[0])) => {
                Err(ApiError::bad_request(
                    "filter_not_supported",
                    if allowed.len() > 1 {
                        format!("{name} filters events or organizations only: use /v1/events or /v1/organizations")
                    } else {
                        format!("{name} filters events only: use /v1/events")
                    },
                ))
            }
            Some(v)
                if v.len() > 40 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Err(ApiError::bad_request(
                    "filter_invalid",
                    format!("{name} is a snake_case code"),
                ))
            }
            other => Ok(other),
        }
    };
    let overdue = match params.overdue.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") if kinds == [RecordKind::Event] => true,
        Some("true") => {
            return Err(ApiError::bad_request(
                "filter_not_supported",
                "overdue filters events only: use /v1/events",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "filter_invalid",
                "overdue is true or false",
            ))
        }
    };
    let mine = match params.reported_by.as_deref() {
        None | Some("") => false,
        Some("me") if kinds == [RecordKind::Event] => true,
        Some("me") => {
            return Err(ApiError::bad_request(
                "filter_not_supported",
                "reported_by filters events only: use /v1/events",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "filter_invalid",
                "reported_by takes only me (your own reports and visits)",
            ))
        }
    };
    let from = time(params.from.as_deref(), "from")?;
    let to = time(params.to.as_deref(), "to")?;
    if (from.is_some() || to.is_some()) && kinds != [RecordKind::Event] {
        return Err(ApiError::bad_request(
            "filter_not_supported",
            "from and to filter events only: use /v1/events",
        ));
    }
    let filters = Filters {
        event_type: code_filter(
            params.event_type,
            "type",
            &[RecordKind::Event, RecordKind::Organization],
        )?,
        status: code_filter(params.status, "status", &[RecordKind::Event])?,
        grid,
        from,
        to,
        overdue: None,
        reported_by: None,
    };
    let fingerprint = {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut text = format!("{kinds:?}\u{0}{q}\u{0}{filters:?}\u{0}{sort:?}");
        // The flag, not its cut-offs: they move with the clock, and the next page must
        // still fit the cursor.
        if overdue {
            text.push_str("\u{0}overdue");
        }
        if mine {
            text.push_str("\u{0}mine");
        }
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()[..8])
    };
    let offset = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => decode_cursor(cursor, &fingerprint)?,
    };
    Ok(Parsed {
        request: SearchRequest {
            kinds: kinds.to_vec(),
            q,
            filters,
            sort,
            offset,
            limit,
        },
        fingerprint,
        overdue,
        mine,
    })
}

fn encode_cursor(offset: usize, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{offset}:{fingerprint}"))
}

fn decode_cursor(cursor: &str, fingerprint: &str) -> Result<usize, ApiError> {
    let invalid =
        || ApiError::bad_request("cursor_invalid", "cursor is not a cursor this API issued");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let (Some("v1"), Some(offset), Some(print)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    if print != fingerprint {
        return Err(ApiError::bad_request(
            "cursor_mismatch",
            "this cursor belongs to another query; send the same q and filters, or no cursor",
        ));
    }
    if offset > MAX_OFFSET {
        return Err(invalid());
    }
    Ok(offset)
}

fn summary(profile: &Profile) -> Map<String, Value> {
    let mut out = Map::new();
    for field in summary_fields(profile.kind) {
        if let Some(f) = profile.fields.get(*field) {
            out.insert((*field).to_owned(), f.value.clone());
        }
    }
    if let Some(grid) = &profile.grid {
        out.insert("grid".to_owned(), Value::String(grid.clone()));
    }
    out
}

/// The answer while the index is being built from the store at start-up (after an upgrade
/// that changes the index schema, a blind-index key rotation, or a lost index directory).
pub(super) fn index_building() -> ApiError {
    ApiError::unavailable(
        "search_index_building",
        "the search index is being built from the store after a start; try again shortly \
         (profiles by id can be read meanwhile)",
    )
    .retry_after(10)
}

async fn run(
    state: &AppState,
    reader: &Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
    kinds: &[RecordKind],
    endpoint: &str,
) -> Result<Json<SearchPage>, ApiError> {
    let parsed = params
        .map_err(|_| {
            ApiError::bad_request("query_string_invalid", "the query string could not be read")
        })
        .and_then(|Query(params)| parse(params, kinds))
        .and_then(|parsed| {
            if state.search.is_ready() {
                Ok(parsed)
            } else {
                Err(index_building())
            }
        });
    let mut parsed = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Err(state.refuse_reader(reader, endpoint, error).await),
    };
    if parsed.overdue {
        let deadlines = super::reports::deadlines(state);
        parsed.request.filters.overdue = Some(super::reports::overdue_filter(
            &deadlines,
            chrono::Utc::now(),
        ));
    }
    if parsed.mine {
        parsed.request.filters.reported_by = Some(reader.principal.sub.clone());
    }
    let plan = reader.plan(state);
    let job_state = state.clone();
    let principal = reader.principal.clone();
    let job_plan = plan.clone();
    let request = parsed.request.clone();
    let found = tokio::task::spawn_blocking(move || {
        job_state.search.search(&principal, &job_plan, &request)
    })
    .await??;
    let total = found.total;
    let request = &parsed.request;
    let items = disclosure::search_hits(
        state,
        reader,
        &plan,
        disclosure::Found {
            hits: found
                .hits
                .into_iter()
                .map(|h| (h.id, h.kind, h.score))
                .collect(),
            total,
            offset: request.offset,
        },
        endpoint,
        summary_sources,
        summary,
    )
    .await?;
    let next_offset = request.offset + request.limit;
    let next_cursor = (next_offset < total && next_offset <= MAX_OFFSET)
        .then(|| encode_cursor(next_offset, &parsed.fingerprint));
    Ok(Json(SearchPage {
        items,
        total,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_only_fits_its_own_query() {
        let cursor = encode_cursor(20, "abcd");
        assert_eq!(decode_cursor(&cursor, "abcd").ok(), Some(20));
        assert_eq!(
            decode_cursor(&cursor, "ef01").map_err(|e| e.code),
            Err("cursor_mismatch")
        );
        assert_eq!(
            decode_cursor("not a cursor", "abcd").map_err(|e| e.code),
            Err("cursor_invalid")
        );
    }

    #[test]
    fn parameters_are_validated_with_stable_codes() {
        let events = [RecordKind::Event];
        let bad =
            |params: SearchParams, kinds: &[RecordKind]| parse(params, kinds).err().map(|e| e.code);
        assert_eq!(
            bad(
                SearchParams {
                    limit: Some("0".into()),
                    ..Default::default()
                },
                &events
            ),
            Some("limit_invalid")
        );
        assert_eq!(
            bad(
                SearchParams {
                    limit: Some("101".into()),
                    ..Default::default()
                },
                &events
            ),
            Some("limit_invalid")
        );
        assert_eq!(
            bad(
                SearchParams {
                    sort: Some("time".into()),
                    ..Default::default()
                },
                &[RecordKind::Resident]
            ),
            Some("sort_invalid")
        );
        assert_eq!(
            bad(
                SearchParams {
                    grid: Some("12".into()),
                    ..Default::default()
                },
                &events
            ),
            Some("grid_invalid")
        );
        assert_eq!(
            bad(
                SearchParams {
                    from: Some("yesterday".into()),
                    ..Default::default()
                },
                &events
            ),
            Some("time_invalid")
        );
        assert_eq!(
            bad(
                SearchParams {
                    status: Some("open".into()),
                    ..Default::default()
                },
                &[RecordKind::House]
            ),
            Some("filter_not_supported")
        );
        assert_eq!(
            bad(
                SearchParams {
                    overdue: Some("true".into()),
                    ..Default::default()
                },
                &[RecordKind::Resident]
            ),
            Some("filter_not_supported")
        );
        assert_eq!(
            bad(
                SearchParams {
                    overdue: Some("yes".into()),
                    ..Default::default()
                },
                &events
            ),
            Some("filter_invalid")
        );
        let overdue = parse(
            SearchParams {
                overdue: Some("true".into()),
                ..Default::default()
            },
            &events,
        )
        .expect("overdue=true on events");
        let plain = parse(SearchParams::default(), &events).expect("no parameters");
        assert!(overdue.overdue && !plain.overdue);
        assert_ne!(
            overdue.fingerprint, plain.fingerprint,
            "a cursor of one does not fit the other"
        );
        assert!(parse(
            SearchParams {
                q: Some("张三".into()),
                ..Default::default()
            },
            &events
        )
        .is_ok());
    }
}
