//! Reports, visits and the event lifecycle: what grid workers record once (`POST /v1/reports`,
//! `POST /v1/visits`), and how it moves from 上报 to 结案 (`POST /v1/events/{id}/transitions`).
//!
//! Guarantees:
//! - Only roles that may report events (`events:report`) record them, and only inside their
//!   jurisdiction: the grid of a report, and every party of a report or a visit. A party is a
//!   unified resident id (`r_…`), never an ID number (`party_invalid`); a party the caller
//!   may not see answers exactly like one that does not exist (`party_unknown`).
//! - What is recorded passes the model's own checks for an event (lengths, plain text,
//!   times) and is stored as an event of the grid centre (`wangge`) through the ingest
//!   pipeline, with its routing (`routing.csv`), its reporter and its parties. Nothing a
//!   department publishes can pass for it: those fields are not in the published format.
//! - Only an event recorded here moves through the lifecycle, one step of [`next_states`] at
//!   a time, to a state the policy lets one of the caller's roles reach, inside that role's
//!   scope: the jurisdiction, and for a department's subscriber the events routed to its
//!   department. An event outside the caller's scope answers exactly like a missing one.
//! - Each move is a new version of the event's record (so the change sequence, which
//!   subscriptions and the search index follow, carries it) with one more history entry; two
//!   moves built on the same version cannot both be stored (`transition_conflict`).
//! - Every record, move and refusal is audited; a write's audit record is durable before
//!   anything is stored.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use audit::Decision;
use engine::ingest::{EventFacts, Replaces, TransitionOutcome};
use model::profile::EventTransition;
use model::{Department, DivisionCode, IdNumber, Record};
use policies::authz::Permission;

use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::routes::Routes;
use super::AppState;
use crate::config::EventsSection;

const REPORTS: &str = "/v1/reports";
const VISITS: &str = "/v1/visits";
const TRANSITIONS: &str = "/v1/events/{id}/transitions";

/// The department whose events reports and visits become: the grid centre (网格中心).
const RECORDING_DEPARTMENT: Department = Department::Wangge;
/// The type of an event that records a visit.
const VISIT_TYPE: &str = "visit";
/// The title of a visit's event (what its lists and search hits show).
const VISIT_TITLE: &str = "走访";
/// Where every recorded event starts.
const FIRST_STATE: &str = "reported";
/// Longest note of a transition, in characters.
const MAX_NOTE_CHARS: usize = 2_000;
/// Longest assignee of a transition, in characters.
const MAX_ASSIGNEE_CHARS: usize = 200;
/// How far ahead of the broker's clock an event may say it occurred (clocks drift).
const MAX_AHEAD_MINUTES: i64 = 10;

/// The lifecycle's states that still run against a deadline: the event is being handled.
pub const OPEN_STATES: [&str; 4] = ["reported", "accepted", "dispatched", "in_progress"];

/// The lifecycle (上报 reported -> 受理 accepted -> 分拨 dispatched -> 处置 in progress -> 办结
/// resolved -> 核查 verified -> 结案 closed; 驳回 rejected while not yet dispatched; a resolved
/// event that does not pass verification is reopened): the states an event in state `from`
/// may move to next. Closed and rejected events move no further.
pub fn next_states(from: &str) -> &'static [&'static str] {
    match from {
        "reported" => &["accepted", "rejected"],
        "accepted" => &["dispatched", "rejected"],
        "dispatched" => &["in_progress"],
        "in_progress" => &["resolved"],
        "resolved" => &["verified", "in_progress"],
        "verified" => &["closed"],
        _ => &[],
    }
}

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
        .post(REPORTS, report)
        .post(VISITS, visit)
        .post(TRANSITIONS, transition)
}

/// An event a grid worker (or an officer) reports.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Event type, a snake_case code (`dispute`, `fire_hazard`, `group_rental` …): it decides
    /// where the report is routed (`routing.csv`) and its deadline.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Short title (at most 200 characters); a title or a description is required.
    pub title: Option<String>,
    /// What happened (at most 10,000 characters).
    pub description: Option<String>,
    /// The 15-digit grid (网格) it happened in, inside your jurisdiction.
    pub grid: String,
    /// Standard address, if any.
    pub address: Option<String>,
    /// The people involved, by unified resident id (`r_…`, as a search or a profile gave
    /// it), never by ID number; at most 50.
    #[serde(default)]
    pub parties: Vec<String>,
    /// When it happened (RFC 3339); default: now. Its deadline counts from this time.
    pub occurred_at: Option<String>,
}

/// What `POST /v1/reports` takes, and the shape of each key.
const REPORT_FIELDS: &[(&str, Shape)] = &[
    ("type", Shape::Required),
    ("title", Shape::Text),
    ("description", Shape::Text),
    ("grid", Shape::Required),
    ("address", Shape::Text),
    ("parties", Shape::TextList),
    ("occurred_at", Shape::Text),
];

/// A visit (走访) to a resident.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitRequest {
    /// The resident visited, by unified id (`r_…`), inside your jurisdiction.
    pub resident: String,
    /// Why: a configured purpose of use (`elderly_care`, `routine_visit` …).
    pub purpose: String,
    /// What was found (at most 10,000 characters).
    pub note: Option<String>,
    /// When (RFC 3339); default: now.
    pub visited_at: Option<String>,
}

const VISIT_FIELDS: &[(&str, Shape)] = &[
    ("resident", Shape::Required),
    ("purpose", Shape::Required),
    ("note", Shape::Text),
    ("visited_at", Shape::Text),
];

/// A move of an event through its lifecycle.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// The state to move to: `accepted`, `dispatched`, `in_progress`, `resolved`,
    /// `verified`, `closed` or `rejected`.
    pub to: String,
    /// What you did or decided (at most 2,000 characters; free text, shown masked to those
    /// who may not read free text).
    pub note: Option<String>,
    /// To whom the work goes (a staff member, a team or a department; at most 200
    /// characters).
    pub assignee: Option<String>,
}

const TRANSITION_FIELDS: &[(&str, Shape)] = &[
    ("to", Shape::Required),
    ("note", Shape::Text),
    ("assignee", Shape::Text),
];

/// A recorded report or visit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recorded {
    /// The event's unified id, for `GET /v1/events/{id}` and its transitions.
    pub id: String,
    /// Always `reported`.
    pub status: &'static str,
    /// The departments it was routed to (`routing.csv`); empty: the street handles it.
    #[schema(value_type = Vec<String>)]
    pub routed_to: Vec<Department>,
}

/// A move that was stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Moved {
    pub id: String,
    /// The state the event left.
    pub from: String,
    /// The state it is in now.
    pub status: String,
}

/// Report an event (grid workers, community and street officers): stored as the grid
/// centre's event, routed by its type, audited.
#[utoipa::path(post, path = "/v1/reports", request_body = ReportRequest,
    responses((status = 201, body = Recorded),
        (status = 400, description = "body_invalid, field_unknown, field_type, event_type_missing, type_invalid, grid_missing, grid_invalid, party_invalid, party_unknown, too_many_parties, occurred_at_in_future, or a model code (field_too_long, field_control_characters, event_text_missing, date_format …)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "role_cannot_report, grid_outside_jurisdiction", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    caller: Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    state
        .require_permission(
            &caller,
            Permission::ReportEvents,
            REPORTS,
            "role_cannot_report",
            "your role may not report events",
        )
        .await?;
    let refuse = |error| state.refuse(&caller.principal, &caller.context, REPORTS, error);
    let request: ReportRequest = match read_body(body, REPORT_FIELDS) {
        Ok(request) => request,
        Err(error) => return Err(refuse(error).await),
    };
    let checked = check_report(&request, &caller, Utc::now());
    let (grid, parties, occurred_at) = match checked {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(error).await),
    };
    if let Err(error) = parties_in_scope(&state, &caller, &parties, "parties").await? {
        return Err(refuse(error).await);
    }
    let fields = json!({
        "type": request.event_type,
        "title": request.title,
        "description": request.description,
        "grid": grid.as_str(),
        "address": request.address,
        "occurred_at": occurred_at,
    });
    let recorded = record_event(
        &state,
        &caller,
        REPORTS,
        "report_event",
        fields,
        parties,
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(recorded)))
}

/// Record a visit to a resident (grid workers, community and street officers): an event of
/// type `visit` with the resident as its party and the note as its description.
#[utoipa::path(post, path = "/v1/visits", request_body = VisitRequest,
    responses((status = 201, body = Recorded),
        (status = 400, description = "body_invalid, field_unknown, field_type, party_invalid, party_unknown, purpose_unknown, occurred_at_in_future, or a model code (field_too_long …)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "role_cannot_report", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn visit(
    State(state): State<AppState>,
    caller: Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    state
        .require_permission(
            &caller,
            Permission::ReportEvents,
            VISITS,
            "role_cannot_report",
            "your role may not record visits",
        )
        .await?;
    let refuse = |error| state.refuse(&caller.principal, &caller.context, VISITS, error);
    let request: VisitRequest = match read_body(body, VISIT_FIELDS) {
        Ok(request) => request,
        Err(error) => return Err(refuse(error).await),
    };
    let checked = check_visit(&request, &state.purposes, Utc::now());
    let (resident, visited_at) = match checked {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(error).await),
    };
    let grid = match parties_in_scope(&state, &caller, std::slice::from_ref(&resident), "resident")
        .await?
    {
        Ok(grids) => grids.into_iter().next(),
        Err(error) => return Err(refuse(error).await),
    };
    let fields = json!({
        "type": VISIT_TYPE,
        "title": VISIT_TITLE,
        "description": request.note,
        "grid": grid,
        "occurred_at": visited_at,
        "attributes": {"purpose": request.purpose},
    });
    let recorded = record_event(
        &state,
        &caller,
        VISITS,
        "record_visit",
        fields,
        vec![resident],
        Some(&request.purpose),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(recorded)))
}

/// Move an event a grid worker reported (or a visit) to its next state: who may move it to
/// which state is policy (`policy.csv`, `event:<state>`); a department's subscriber moves
/// only events routed to its department. Audited; the event's `history` keeps the move.
#[utoipa::path(post, path = "/v1/events/{id}/transitions",
    params(("id" = String, Path, description = "the event's unified id")),
    request_body = TransitionRequest,
    responses((status = 200, body = Moved),
        (status = 400, description = "body_invalid, field_unknown, field_type, state_unknown, field_too_long, field_control_characters", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "transition_not_allowed: no role of yours may move an event to this state", body = ErrorBody),
        (status = 404, description = "no such event, or not one you may act on (identical)", body = ErrorBody),
        (status = 409, description = "event_not_managed (only reported events and visits move), transition_invalid (not a next state; the message names the allowed ones), transition_conflict (moved meanwhile), history_full", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn transition(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Moved>, ApiError> {
    let refuse = |error| state.refuse(&caller.principal, &caller.context, TRANSITIONS, error);
    let request: TransitionRequest = match read_body(body, TRANSITION_FIELDS) {
        Ok(request) => request,
        Err(error) => return Err(refuse(error).await),
    };
    let (note, assignee) = match check_transition(&request) {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(error).await),
    };
    let to = request.to;
    let policy = state.permissions.current();
    let roles: Vec<&String> = caller
        .principal
        .roles
        .iter()
        .filter(|role| policy.may_transition(std::slice::from_ref(*role), &to))
        .collect();
    if roles.is_empty() {
        return Err(refuse(ApiError::forbidden(
            "transition_not_allowed",
            format!("no role of yours may move an event to {to}"),
        ))
        .await);
    }
    let facts = if is_unified_id(&id, 'e') {
        let pipeline = state.pipeline.clone();
        let entity = id.clone();
        tokio::task::spawn_blocking(move || pipeline.event_facts(&entity)).await??
    } else {
        None
    };
    let in_scope = facts.as_ref().is_some_and(|facts| {
        roles
            .iter()
            .any(|role| role_may_act(role, &caller.principal, facts))
    });
    let facts = match facts {
        Some(facts) if in_scope => facts,
        found => {
            // The same answer for a missing event and one outside the caller's scope; the
            // audit record tells them apart.
            let mut record = state.audit_record(
                &caller.principal,
                &caller.context,
                "transition_event",
                TRANSITIONS,
                Decision::Deny,
            );
            record.entities = vec![id.chars().take(64).collect()];
            record.outcome = if found.is_some() {
                "out_of_scope"
            } else {
                "not_found"
            }
            .to_owned();
            state.append_audit(record).await?;
            return Err(ApiError::not_found());
        }
    };
    if !facts.managed {
        return Err(refuse(ApiError::new(
            StatusCode::CONFLICT,
            "event_not_managed",
            "only events recorded through POST /v1/reports or /v1/visits move through the lifecycle; this one is a department's own record",
        ))
        .await);
    }
    let from = facts
        .status
        .clone()
        .unwrap_or_else(|| FIRST_STATE.to_owned());
    let allowed = next_states(&from);
    if !allowed.contains(&to.as_str()) {
        let message = if allowed.is_empty() {
            format!("the event is {from} and moves no further")
        } else {
            format!(
                "the event is {from}: it may move to {} only",
                allowed.join(" or ")
            )
        };
        return Err(refuse(ApiError::new(
            StatusCode::CONFLICT,
            "transition_invalid",
            message,
        ))
        .await);
    }
    let mut record = state.audit_record(
        &caller.principal,
        &caller.context,
        "transition_event",
        TRANSITIONS,
        Decision::Allow,
    );
    record.entities = vec![id.clone()];
    record.residents = facts
        .parties
        .iter()
        .map(|party| state.vault.audit_reference(party))
        .collect();
    record.outcome = format!("from={from} to={to}");
    let step = EventTransition {
        at: Utc::now(),
        from: from.clone(),
        to: to.clone(),
        actor: caller.principal.sub.clone(),
        note,
        assignee,
    };
    let pipeline = state.pipeline.within(&caller.principal.jurisdiction);
    state
        .audited_write(record, || async move {
            let outcome =
                tokio::task::spawn_blocking(move || pipeline.transition_event(&facts, step))
                    .await??;
            match outcome {
                TransitionOutcome::Stored => Ok(()),
                TransitionOutcome::Changed => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "transition_conflict",
                    "the event changed while you moved it; read it again and retry",
                )),
                TransitionOutcome::HistoryFull => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "history_full",
                    format!(
                        "the event has moved {} times already; record a new event",
                        engine::ingest::MAX_EVENT_TRANSITIONS
                    ),
                )),
                TransitionOutcome::Refused(rejection) => {
                    Err(ApiError::internal("transition_not_stored", &rejection.code))
                }
            }
        })
        .await?;
    Ok(Json(Moved {
        id,
        from,
        status: to,
    }))
}

/// Whether `role` of `principal` may act on the event `facts` describes: inside the
/// jurisdiction, and for a department's subscriber only on events routed to its department.
fn role_may_act(role: &str, principal: &policies::Principal, facts: &EventFacts) -> bool {
    let inside = facts
        .grid
        .as_deref()
        .and_then(|grid| DivisionCode::parse(grid).ok())
        .is_some_and(|grid| principal.covers(&grid));
    let routed = role != "dept_subscriber"
        || principal
            .dept
            .is_some_and(|dept| facts.routed_to.contains(&dept));
    inside && routed
}

/// Stores an event the caller recorded: `fields` in the unified format (checked by the
/// model like a published event), with its parties, routing and reporter, audited first.
async fn record_event(
    state: &AppState,
    caller: &Authenticated,
    endpoint: &'static str,
    action: &str,
    mut fields: Value,
    parties: Vec<String>,
    purpose: Option<&str>,
) -> Result<Recorded, ApiError> {
    let source_id = format!(
        "{}-{}",
        if endpoint == VISITS { "VST" } else { "RPT" },
        random_hex(12)
    );
    let version = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    if let Value::Object(map) = &mut fields {
        map.insert("kind".to_owned(), json!("event"));
        map.insert("source_id".to_owned(), json!(source_id));
        map.insert("version".to_owned(), json!(version));
        map.insert("status".to_owned(), json!(FIRST_STATE));
    }
    let refuse = |error| state.refuse(&caller.principal, &caller.context, endpoint, error);
    let mut record = match Record::from_value(&fields) {
        Ok(record) => record,
        Err(err) => {
            let message = match err.field() {
                "" => err.message().to_owned(),
                field => format!("{}: {}", wire_field(field), err.message()),
            };
            return Err(refuse(ApiError::bad_request(err.code(), message)).await);
        }
    };
    let event_type = fields["type"].as_str().unwrap_or_default().to_owned();
    let routed_to = state
        .permissions
        .current()
        .exchange
        .route(&event_type)
        .to_vec();
    if let Record::Event { body, .. } = &mut record {
        body.party_entities = parties.clone();
        body.routed_to = routed_to.clone();
        body.reported_by = Some(caller.principal.sub.clone());
    }
    let id = state
        .pipeline
        .event_entity(RECORDING_DEPARTMENT, &source_id);
    // Audited before it is stored: if the log cannot take the record, nothing is stored.
    let mut audit = state.audit_record(
        &caller.principal,
        &caller.context,
        action,
        endpoint,
        Decision::Allow,
    );
    audit.entities = vec![id.clone()];
    audit.residents = parties
        .iter()
        .map(|party| state.vault.audit_reference(party))
        .collect();
    audit.purpose = purpose.map(str::to_owned);
    let routed: Vec<&str> = routed_to.iter().map(|d| d.code()).collect();
    audit.outcome = format!("type={event_type} routed_to={}", routed.join(","));
    let pipeline = state.pipeline.within(&caller.principal.jurisdiction);
    let receipt = state
        .audited_write(audit, || async move {
            tokio::task::spawn_blocking(move || {
                pipeline.store_own(RECORDING_DEPARTMENT, record, Replaces::Nothing)
            })
            .await?
            .map_err(ApiError::from)
        })
        .await?;
    if let Some(rejection) = receipt.rejected.first() {
        // The model and the scope were checked above: only a failure to seal is left.
        return Err(ApiError::internal("report_not_stored", &rejection.code));
    }
    state.metrics.count_ingest(RECORDING_DEPARTMENT, 1, 0);
    Ok(Recorded {
        id,
        status: FIRST_STATE,
        routed_to,
    })
}

/// The grid, the parties and the time of a report, checked (nothing here reads the store).
fn check_report(
    request: &ReportRequest,
    caller: &Authenticated,
    now: DateTime<Utc>,
) -> Result<(DivisionCode, Vec<String>, String), ApiError> {
    if !policies::exchange::is_type_code(&request.event_type) {
        return Err(ApiError::bad_request(
            "type_invalid",
            "type is a snake_case event type code, e.g. dispute or fire_hazard",
        ));
    }
    let grid = match DivisionCode::parse(request.grid.trim()) {
        Ok(grid) if grid.as_str().len() == 15 => grid,
        _ => {
            return Err(ApiError::bad_request(
                "grid_invalid",
                "grid must be a 15-digit grid code (网格)",
            ))
        }
    };
    if !caller.principal.covers(&grid) {
        return Err(ApiError::forbidden(
            "grid_outside_jurisdiction",
            "the grid lies outside your jurisdiction",
        ));
    }
    if request.parties.len() > model::record::MAX_PARTIES {
        return Err(ApiError::bad_request(
            "too_many_parties",
            format!(
                "a report may name at most {} parties; list the rest in the description",
                model::record::MAX_PARTIES
            ),
        ));
    }
    let mut parties: Vec<String> = Vec::with_capacity(request.parties.len());
    for (position, party) in request.parties.iter().enumerate() {
        let party = party_id(party, &format!("parties[{position}]"))?;
        if !parties.contains(&party) {
            parties.push(party);
        }
    }
    let occurred_at = event_time(request.occurred_at.as_deref(), "occurred_at", now)?;
    Ok((grid, parties, occurred_at))
}

/// The resident and the time of a visit, checked (nothing here reads the store).
fn check_visit(
    request: &VisitRequest,
    purposes: &[String],
    now: DateTime<Utc>,
) -> Result<(String, String), ApiError> {
    if !purposes.contains(&request.purpose) {
        return Err(ApiError::bad_request(
            "purpose_unknown",
            format!(
                "purpose is a configured purpose of use: {}",
                purposes.join(", ")
            ),
        ));
    }
    let resident = party_id(&request.resident, "resident")?;
    let visited_at = event_time(request.visited_at.as_deref(), "visited_at", now)?;
    Ok((resident, visited_at))
}

/// The note and assignee of a move, checked.
fn check_transition(
    request: &TransitionRequest,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let movable = || policies::EVENT_STATES.iter().filter(|s| **s != FIRST_STATE);
    if !movable().any(|state| *state == request.to) {
        return Err(ApiError::bad_request(
            "state_unknown",
            format!(
                "to is one of {}",
                movable().copied().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let note = plain_text(request.note.as_deref(), "note", MAX_NOTE_CHARS, true)?;
    let assignee = plain_text(
        request.assignee.as_deref(),
        "assignee",
        MAX_ASSIGNEE_CHARS,
        false,
    )?;
    Ok((note, assignee))
}

/// A party named in a request: a unified resident id. An ID number (or anything else) is
/// refused without repeating it.
fn party_id(text: &str, field: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if IdNumber::parse(text).is_ok() {
        return Err(ApiError::bad_request(
            "party_invalid",
            format!("{field}: name a party by its unified resident id (r_…), never by ID number: find the person first and use the id the search gave you"),
        ));
    }
    if !is_unified_id(text, 'r') {
        return Err(ApiError::bad_request(
            "party_invalid",
            format!("{field}: a party is a unified resident id: r_ and 20 hexadecimal digits"),
        ));
    }
    Ok(text.to_owned())
}

/// Whether `text` is a unified id of the kind `prefix` (`r`, `e` …): the prefix, `_` and 20
/// lower-case hexadecimal digits.
fn is_unified_id(text: &str, prefix: char) -> bool {
    let mut chars = text.chars();
    chars.next() == Some(prefix)
        && chars.next() == Some('_')
        && text.len() == 22
        && chars.all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The time an event occurred, as the model reads a timestamp (now when absent); a time more
/// than a few minutes ahead of the broker's clock is refused: an event cannot have happened
/// yet, and its deadline would start late.
fn event_time(text: Option<&str>, field: &str, now: DateTime<Utc>) -> Result<String, ApiError> {
    let at = match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => now,
        Some(text) => model::parse_timestamp(text)
            .map_err(|err| ApiError::bad_request(err.code(), format!("{field}: {err}")))?,
    };
    if at > now + chrono::Duration::minutes(MAX_AHEAD_MINUTES) {
        return Err(ApiError::bad_request(
            "occurred_at_in_future",
            format!("{field} lies in the future; give the time it happened"),
        ));
    }
    Ok(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Free text of a move: trimmed, empty as absent, at most `max_chars`, no control
/// characters (line breaks and tabs only where `multi_line`).
fn plain_text(
    text: Option<&str>,
    field: &str,
    max_chars: usize,
    multi_line: bool,
) -> Result<Option<String>, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > max_chars {
        return Err(ApiError::bad_request(
            "field_too_long",
            format!("{field}: longer than {max_chars} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !(multi_line && (c == '\n' || c == '\t')))
    {
        return Err(ApiError::bad_request(
            "field_control_characters",
            format!("{field}: contains control characters; send plain text"),
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The grids of `parties` when every one is a resident inside the caller's jurisdiction;
/// else the refusal `party_unknown`, the same for a resident outside it and for no resident.
async fn parties_in_scope(
    state: &AppState,
    caller: &Authenticated,
    parties: &[String],
    field: &'static str,
) -> Result<Result<Vec<String>, ApiError>, ApiError> {
    let pipeline = state.pipeline.within(&caller.principal.jurisdiction);
    let parties = parties.to_vec();
    let grids = tokio::task::spawn_blocking(move || {
        parties
            .iter()
            .map(|party| pipeline.resident_grid(party))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    Ok(match grids.iter().position(Option::is_none) {
        Some(position) => {
            let named = if field == "parties" {
                format!("parties[{position}]")
            } else {
                field.to_owned()
            };
            Err(ApiError::bad_request(
                "party_unknown",
                format!("{named} is no resident you may see; use the unified id a search or a profile gave you"),
            ))
        }
        None => Ok(grids.into_iter().flatten().collect()),
    })
}

/// How one key of a request body may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A string that must be there and not be empty.
    Required,
    /// A string, or null.
    Text,
    /// A list of strings, or null.
    TextList,
}

/// Reads a JSON object body whose keys are `fields`, each of its shape, into `T`. Every
/// refusal names the key at fault and never repeats a value (values are personal data).
fn read_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    fields: &[(&str, Shape)],
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "body_invalid",
            "the request body could not be read",
        )
    })?;
    let not_an_object = || {
        ApiError::bad_request(
            "body_invalid",
            "the body must be one JSON object (Content-Type: application/json)",
        )
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| not_an_object())?;
    let Value::Object(mut object) = value else {
        return Err(not_an_object());
    };
    let known = |key: &String| fields.iter().any(|(name, _)| name == key);
    if let Some((key, _)) = object.iter().find(|(key, _)| !known(key)) {
        return Err(ApiError::bad_request(
            "field_unknown",
            format!(
                "{}: no such field; this request takes {}",
                key.chars().take(64).collect::<String>(),
                fields
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (name, shape) in fields {
        let value = object.get(*name).unwrap_or(&Value::Null);
        let present = match (shape, value) {
            (Shape::Required, Value::String(text)) => !text.trim().is_empty(),
            (Shape::Required, Value::Null) => false,
            (Shape::Text | Shape::TextList, Value::Null) | (Shape::Text, Value::String(_)) => true,
            (Shape::TextList, Value::Array(items)) if items.iter().all(Value::is_string) => true,
            _ => {
                return Err(ApiError::bad_request(
                    "field_type",
                    format!(
                        "{name} must be {}",
                        if *shape == Shape::TextList {
                            "a list of strings"
                        } else {
                            "a string"
                        }
                    ),
                ))
            }
        };
        if !present {
            let code = match *name {
                "type" => "event_type_missing",
                "grid" => "grid_missing",
                _ => "field_missing",
            };
            return Err(ApiError::bad_request(code, format!("{name} is required")));
        }
    }
    // Nulls are absent: `Option` and `#[serde(default)]` fields take them as such.
    object.retain(|_, value| !value.is_null());
    serde_json::from_value(Value::Object(object)).map_err(|_| not_an_object())
}

/// The request's name of a field the model reports (`event_type` is `type` on the wire).
fn wire_field(field: &str) -> &str {
    match field {
        "event_type" => "type",
        other => other,
    }
}

/// `bytes` random bytes as hex (a report's source id).
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // A failed random read leaves zeros; the version (now, in microseconds) still tells two
    // reports apart, and a repeated source id is refused, never merged.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buffer);
    hex::encode(buffer)
}

/// The `[events]` deadlines in force.
pub(super) fn deadlines(state: &AppState) -> EventsSection {
    state.events.clone()
}

/// The search filter of `GET /v1/events?overdue=true` at `now`: events still open
/// ([`OPEN_STATES`]) that occurred longer ago than their type's deadline.
pub(super) fn overdue_filter(events: &EventsSection, now: DateTime<Utc>) -> search::query::Overdue {
    let cut_off = |hours: u32| (now - chrono::Duration::hours(i64::from(hours))).timestamp();
    search::query::Overdue {
        open_statuses: OPEN_STATES.map(str::to_owned).to_vec(),
        due_before: events
            .deadline_hours
            .iter()
            .map(|(event_type, hours)| (event_type.clone(), cut_off(*hours)))
            .collect(),
        default_due_before: cut_off(events.default_deadline_hours),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_runs_from_reported_to_closed_one_step_at_a_time() {
        // Every state but the first is somewhere's next state, and every next state is one
        // the policy knows.
        for state in policies::EVENT_STATES {
            for next in next_states(state) {
                assert!(policies::EVENT_STATES.contains(next), "{state} -> {next}");
            }
            let reached = policies::EVENT_STATES
                .iter()
                .any(|from| next_states(from).contains(&state));
            assert_eq!(reached, state != FIRST_STATE, "{state}");
        }
        let mut state = FIRST_STATE;
        let mut path = vec![state];
        while let Some(next) = next_states(state).first() {
            state = next;
            path.push(state);
        }
        assert_eq!(
            path,
            [
                "reported",
                "accepted",
                "dispatched",
                "in_progress",
                "resolved",
                "verified",
                "closed"
            ]
        );
        // No skipping, no way back from the end, reopening only after resolution.
        assert!(!next_states("reported").contains(&"dispatched"));
        assert!(!next_states("accepted").contains(&"closed"));
        assert!(!next_states("dispatched").contains(&"rejected"));
        assert!(next_states("closed").is_empty());
        assert!(next_states("rejected").is_empty());
        assert_eq!(next_states("resolved"), ["verified", "in_progress"]);
        assert!(next_states("no_such_state").is_empty());
    }

    #[test]
    fn open_states_are_those_before_resolution() {
        for state in policies::EVENT_STATES {
            let open = OPEN_STATES.contains(&state);
            let finished = ["resolved", "verified", "closed", "rejected"].contains(&state);
            assert_ne!(open, finished, "{state}");
        }
    }

    #[test]
    fn the_overdue_filter_cuts_each_type_at_its_own_deadline() {
        let now = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let events = EventsSection {
            deadline_hours: [("dispute".to_owned(), 72), ("fire_hazard".to_owned(), 24)]
                .into_iter()
                .collect(),
            default_deadline_hours: 168,
        };
        let filter = overdue_filter(&events, now);
        let hours_before = |h: i64| (now - chrono::Duration::hours(h)).timestamp();
        assert_eq!(
            filter.due_before,
            [
                ("dispute".to_owned(), hours_before(72)),
                ("fire_hazard".to_owned(), hours_before(24))
            ]
        );
        assert_eq!(filter.default_due_before, hours_before(168));
        assert_eq!(filter.open_statuses, OPEN_STATES);
    }

    #[test]
    fn a_party_is_a_unified_resident_id_and_never_an_id_number() {
        let code = |text: &str| party_id(text, "parties[0]").map_err(|e| e.code);
        assert_eq!(
            code("r_0123456789abcdef0123").as_deref(),
            Ok("r_0123456789abcdef0123")
        );
        assert_eq!(
            code(" r_0123456789abcdef0123 ").as_deref(),
            Ok("r_0123456789abcdef0123")
        );
        for bad in [
            "11010519491231002X",
            "110105491231002",
            "e_0123456789abcdef0123",
            "r_0123456789ABCDEF0123",
            "r_0123",
            "张三",
            "",
        ] {
            assert_eq!(code(bad), Err("party_invalid"), "{bad}");
        }
        let id_number = party_id("11010519491231002X", "parties[0]").unwrap_err();
        assert!(!id_number.message.contains("1101"), "{}", id_number.message);
        assert!(id_number.message.contains("parties[0]"));
    }

    fn body(value: Value) -> Result<Bytes, BytesRejection> {
        Ok(Bytes::from(value.to_string()))
    }

    #[test]
    fn bodies_are_read_strictly_and_refusals_repeat_no_value() {
        let read = |value: Value| {
            read_body::<ReportRequest>(body(value), REPORT_FIELDS).map_err(|e| (e.code, e.message))
        };
        let good = read(
            json!({"type":"dispute","title":"纠纷","grid":"110105001001003",
            "parties":["r_0123456789abcdef0123"],"address":null}),
        )
        .unwrap();
        assert_eq!(good.event_type, "dispute");
        assert_eq!(good.parties, ["r_0123456789abcdef0123"]);
        assert!(good.address.is_none());

        let (code, message) =
            read(json!({"type":"dispute","title":"纠纷","grid":"110105001001003","version":"1"}))
                .unwrap_err();
        assert_eq!(code, "field_unknown");
        assert!(message.starts_with("version"), "{message}");
        let (code, message) =
            read(json!({"type":"dispute","title":"张三打人","grid":110105001001003_u64}))
                .unwrap_err();
        assert_eq!(code, "field_type");
        assert!(
            message.contains("grid") && !message.contains("110105"),
            "{message}"
        );
        let (code, message) = read(
            json!({"type":"dispute","title":"纠纷","grid":"110105001001003",
            "parties":[{"id_number":"11010519491231002X"}]}),
        )
        .unwrap_err();
        assert_eq!(code, "field_type");
        assert!(!message.contains("1101"), "{message}");
        assert_eq!(
            read(json!({"title":"纠纷","grid":"110105001001003"}))
                .unwrap_err()
                .0,
            "event_type_missing"
        );
        assert_eq!(
            read(json!({"type":"dispute","title":"纠纷","grid":" "}))
                .unwrap_err()
                .0,
            "grid_missing"
        );
        assert_eq!(read(json!(["type"])).unwrap_err().0, "body_invalid");
        assert_eq!(
            read_body::<ReportRequest>(Ok(Bytes::from_static(b"{not json")), REPORT_FIELDS)
                .unwrap_err()
                .code,
            "body_invalid"
        );
        let transition = read_body::<TransitionRequest>(
            body(json!({"to":"accepted","note":null})),
            TRANSITION_FIELDS,
        )
        .unwrap();
        assert_eq!(transition.to, "accepted");
        assert!(transition.note.is_none());
    }

    #[test]
    fn moves_name_a_known_state_and_plain_text() {
        let check = |to: &str, note: Option<&str>| {
            check_transition(&TransitionRequest {
                to: to.to_owned(),
                note: note.map(str::to_owned),
                assignee: None,
            })
            .map_err(|e| e.code)
        };
        assert_eq!(
            check("accepted", Some(" 已受理 ")),
            Ok((Some("已受理".to_owned()), None))
        );
        assert_eq!(
            check("reported", None),
            Err("state_unknown"),
            "nothing moves back to the start"
        );
        assert_eq!(check("done", None), Err("state_unknown"));
        assert_eq!(check("closed", Some("第一行\n第二行")).map(|_| ()), Ok(()));
        assert_eq!(
            check("closed", Some("bell\u{7}")),
            Err("field_control_characters")
        );
        let long = "字".repeat(MAX_NOTE_CHARS + 1);
        assert_eq!(check("closed", Some(&long)), Err("field_too_long"));
    }

    #[test]
    fn an_event_in_the_future_is_refused_and_a_missing_time_is_now() {
        let now = Utc::now();
        assert_eq!(
            event_time(None, "occurred_at", now).unwrap(),
            now.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        assert_eq!(
            event_time(Some("2026-11-20T08:00:00+08:00"), "occurred_at", now).unwrap(),
            "2026-11-20T00:00:00Z"
        );
        let tomorrow = (now + chrono::Duration::days(1)).to_rfc3339();
        assert_eq!(
            event_time(Some(&tomorrow), "occurred_at", now)
                .unwrap_err()
                .code,
            "occurred_at_in_future"
        );
        assert_eq!(
            event_time(Some("yesterday"), "occurred_at", now)
                .unwrap_err()
                .code,
            "date_format"
        );
    }

    #[test]
    fn a_subscriber_acts_only_on_events_routed_to_its_department() {
        let principal = |dept: Option<Department>| policies::Principal {
            sub: "t".into(),
            name: "t".into(),
            roles: Vec::new(),
            jurisdiction: vec![DivisionCode::parse("110105001001").unwrap()],
            dept,
        };
        let facts = EventFacts {
            department: Department::Wangge,
            source_id: "RPT-1".into(),
            version: model::record::Version::Counter(1),
            grid: Some("110105001001003".into()),
            event_type: Some("dispute".into()),
            status: Some("reported".into()),
            routed_to: vec![Department::Sifa],
            managed: true,
            parties: Vec::new(),
        };
        assert!(role_may_act(
            "dept_subscriber",
            &principal(Some(Department::Sifa)),
            &facts
        ));
        assert!(!role_may_act(
            "dept_subscriber",
            &principal(Some(Department::Yingji)),
            &facts
        ));
        assert!(!role_may_act("dept_subscriber", &principal(None), &facts));
        assert!(role_may_act("community_officer", &principal(None), &facts));
        let elsewhere = EventFacts {
            grid: Some("110105001002001".into()),
            ..facts.clone()
        };
        assert!(!role_may_act(
            "community_officer",
            &principal(None),
            &elsewhere
        ));
        assert!(!role_may_act(
            "dept_subscriber",
            &principal(Some(Department::Sifa)),
            &elsewhere
        ));
        let nowhere = EventFacts {
            grid: None,
            ..facts
        };
        assert!(!role_may_act("street_officer", &principal(None), &nowhere));
    }
}
