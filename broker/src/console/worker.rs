//! The grid worker's pages: search as they type, a profile with each field's source and
//! freshness, report an event or a visit, "my events" with deadlines.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::call::{encode, path_safe, profile_path};
use super::{
    api_refusal, labels, local_time, purpose_needed, render, see_other, show, Cell, ConsoleState,
    Layout, NotePage, Staff, Table, TablePage,
};

/// Digits beyond which a typed query may be an ID or phone number: such a query is searched
/// only from the (POSTed) search box, never from a URL.
const MAX_URL_DIGITS: usize = 6;

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    layout: Layout,
    fieldwork: bool,
    open_events: Option<Table>,
}

/// The start page: the search box and, for field staff, their open events.
pub async fn home(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let fieldwork = ["grid_worker", "community_officer", "street_officer"]
        .iter()
        .any(|r| staff.has_role(r));
    let open_events = if fieldwork && staff.session.purpose.is_some() {
        match staff
            .get(
                &state,
                "/v1/events?reported_by=me&status=open&sort=time&limit=20",
            )
            .await
        {
            Ok(answer) if answer.ok() => Some(events_table(&state, &answer.json())),
            Ok(_) => None,
            Err(redirect) => return redirect,
        }
    } else {
        None
    };
    render(&HomePage {
        layout: staff.layout(&state, "首页"),
        fieldwork,
        open_events,
    })
}

#[derive(Template)]
#[template(path = "console/search.html")]
struct SearchPage {
    layout: Layout,
    q: String,
    results: Option<Results>,
}

#[derive(Template)]
#[template(path = "console/results.html")]
struct Results {
    total: u64,
    hits: Vec<Hit>,
    note: Option<String>,
}

struct Hit {
    href: String,
    kind: &'static str,
    title: String,
    lines: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console/residents[?q=]`: the search page; a `q` with more than six digits is not run
/// from a URL (type it in the box, which POSTs).
pub async fn search_page(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(query): Query<SearchQuery>,
) -> Response {
    let q = query.q.trim().to_owned();
    if q.is_empty() {
        return search_render(&state, &staff, String::new(), None);
    }
    if q.chars().filter(char::is_ascii_digit).count() > MAX_URL_DIGITS {
        let results = Results {
            total: 0,
            hits: Vec::new(),
            note: Some("证件号码、电话号码请在搜索框中输入，不要放在网址里。".to_owned()),
        };
        return search_render(&state, &staff, String::new(), Some(results));
    }
    run_search(&state, &staff, q).await
}

#[derive(Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

/// `POST /console/residents`: search as the worker types (htmx asks for the results only).
pub async fn search(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<SearchForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    run_search(&state, &staff, form.q.trim().to_owned()).await
}

async fn run_search(state: &ConsoleState, staff: &Staff, q: String) -> Response {
    if staff.session.purpose.is_none() {
        return purpose_needed(staff, state, "查找");
    }
    if q.is_empty() {
        return search_render(state, staff, q, None);
    }
    let answer = match staff
        .get(state, &format!("/v1/search?q={}&limit=20", encode(&q)))
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    let results = if answer.ok() {
        let body = answer.json();
        let hits = body["items"]
            .as_array()
            .map(|items| items.iter().filter_map(hit).collect())
            .unwrap_or_default();
        Results {
            total: body["total"].as_u64().unwrap_or(0),
            hits,
            note: None,
        }
    } else {
        Results {
            total: 0,
            hits: Vec::new(),
            note: Some(answer.message()),
        }
    };
    search_render(state, staff, q, Some(results))
}

fn search_render(
    state: &ConsoleState,
    staff: &Staff,
    q: String,
    results: Option<Results>,
) -> Response {
    if staff.fragment {
        if let Some(results) = &results {
            return render(results);
        }
    }
    // Results arrive in place as the worker types: the page carries the watermark from the
    // start.
    let mut layout = staff.layout(state, "查找");
    layout.watermark = Some(staff.watermark());
    render(&SearchPage { layout, q, results })
}

fn hit(item: &Value) -> Option<Hit> {
    let id = item["id"].as_str().filter(|id| path_safe(id))?;
    let kind = item["kind"].as_str().unwrap_or("");
    let summary = item["summary"].as_object().cloned().unwrap_or_default();
    let title = ["name", "title", "address"]
        .iter()
        .find_map(|k| summary.get(*k).map(show))
        .unwrap_or_else(|| id.to_owned());
    let lines = summary
        .iter()
        .filter(|(k, v)| !v.is_null() && k.as_str() != "name" && k.as_str() != "title")
        .map(|(k, v)| {
            let text = match k.as_str() {
                "status" => labels::status(&show(v)),
                "type" if kind == "event" => labels::event_type(&show(v)),
                "occurred_at" => local_time(&show(v)),
                _ => labels::value(k, &show(v)),
            };
            (labels::field(k), text)
        })
        .collect();
    Some(Hit {
        href: profile_path(id)?,
        kind: labels::kind(kind),
        title,
        lines,
    })
}

#[derive(Template)]
#[template(path = "console/profile.html")]
struct ProfilePage {
    layout: Layout,
    kind: String,
    id: String,
    heading: String,
    grid: String,
    fields: Vec<FieldRow>,
    tags: Vec<String>,
    related: Vec<(String, Vec<(String, String)>)>,
    history: Vec<String>,
    request_id: String,
    /// Moves the viewer may offer on an event (state, label).
    moves: Vec<(String, String)>,
    purposes: Vec<(String, String)>,
}

struct FieldRow {
    label: String,
    value: String,
    source: String,
    fresh: String,
    stale: bool,
    conflicts: Vec<String>,
}

pub async fn resident(state: State<ConsoleState>, staff: Staff, id: Path<String>) -> Response {
    profile(state, staff, id, "resident").await
}

pub async fn house(state: State<ConsoleState>, staff: Staff, id: Path<String>) -> Response {
    profile(state, staff, id, "house").await
}

pub async fn organization(state: State<ConsoleState>, staff: Staff, id: Path<String>) -> Response {
    profile(state, staff, id, "organization").await
}

pub async fn event(state: State<ConsoleState>, staff: Staff, id: Path<String>) -> Response {
    profile(state, staff, id, "event").await
}

/// A profile as the API shows it to this worker for the chosen purpose.
async fn profile(
    State(state): State<ConsoleState>,
    staff: Staff,
    Path(id): Path<String>,
    kind: &str,
) -> Response {
    let title = format!("{}档案", labels::kind(kind));
    if !path_safe(&id) {
        return super::not_found().await;
    }
    if staff.session.purpose.is_none() {
        return purpose_needed(&staff, &state, &title);
    }
    let answer = match staff.get(&state, &format!("/v1/{kind}s/{id}")).await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, &title, &answer);
    }
    let body = answer.json();
    let sources: Vec<(String, String, String)> = body["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        show(&s["department"]),
                        show(&s["version"]),
                        show(&s["received_at"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let received = |dept: &str, version: &str| -> Option<String> {
        sources
            .iter()
            .find(|(d, v, _)| d == dept && v == version)
            .or_else(|| sources.iter().find(|(d, _, _)| d == dept))
            .map(|(_, _, at)| at.clone())
    };
    let now = chrono::Utc::now();
    let fields_json = body["fields"].as_object().cloned().unwrap_or_default();
    let mut fields = Vec::new();
    for (name, field) in &fields_json {
        if name == "history" {
            continue;
        }
        let source = show(&field["source"]);
        let at = received(&source, &show(&field["version"]));
        let age_days = at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_days());
        let value = field_text(kind, name, &field["value"]);
        let conflicts = field["conflicts"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|alt| {
                        format!(
                            "{}：{}",
                            labels::department(&show(&alt["source"])),
                            field_text(kind, name, &alt["value"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        fields.push((
            field_rank(name),
            FieldRow {
                label: labels::field(name),
                value,
                source: labels::department(&source),
                fresh: match (at.as_deref(), age_days) {
                    (Some(t), Some(days)) if days <= 0 => format!("{}（今天）", local_time(t)),
                    (Some(t), Some(days)) => format!("{}（{days}天前）", local_time(t)),
                    _ => String::new(),
                },
                stale: age_days.is_some_and(|d| d > 365),
                conflicts,
            },
        ));
    }
    // The order a worker reads a file in: who, how to reach, where, then the rest (a stable
    // sort keeps the API's order among the rest).
    fields.sort_by_key(|(rank, _)| *rank);
    let fields: Vec<FieldRow> = fields.into_iter().map(|(_, row)| row).collect();
    let heading = ["name", "title", "address"]
        .iter()
        .find_map(|k| fields_json.get(*k).map(|f| show(&f["value"])))
        .unwrap_or_else(|| id.clone());
    let tags = body["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| show(&t["tag"])).collect())
        .unwrap_or_default();
    let related = body["related"]
        .as_object()
        .map(related_lists)
        .unwrap_or_default();
    let history = fields_json
        .get("history")
        .and_then(|h| h["value"].as_array())
        .map(|h| {
            h.iter()
                .map(|step| {
                    format!(
                        "{} {} → {} {}",
                        local_time(&show(&step["at"])),
                        labels::status(&show(&step["from"])),
                        labels::status(&show(&step["to"])),
                        show(&step["note"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let status = fields_json
        .get("status")
        .map(|f| show(&f["value"]))
        .unwrap_or_default();
    let moves = if kind == "event" && fields_json.contains_key("reported_by") {
        crate::api::reports::next_states(&status)
            .iter()
            .map(|s| ((*s).to_owned(), labels::status(s)))
            .collect()
    } else {
        Vec::new()
    };
    let mut layout = staff.layout(&state, &title);
    layout.watermark = Some(staff.watermark());
    render(&ProfilePage {
        layout,
        kind: kind.to_owned(),
        id,
        heading,
        grid: labels::division(&show(&body["grid"])),
        fields,
        tags,
        related,
        history,
        request_id: answer.request_id().unwrap_or_default(),
        moves,
        purposes: state
            .app
            .purposes
            .iter()
            .map(|p| (p.clone(), labels::purpose(p)))
            .collect(),
    })
}

/// Where a field stands on a profile page: who, how to reach, where, then the rest.
fn field_rank(name: &str) -> usize {
    const ORDER: [&str; 14] = [
        "name",
        "title",
        "type",
        "status",
        "gender",
        "age",
        "birth_date",
        "id_number",
        "phone",
        "address",
        "grid",
        "occurred_at",
        "description",
        "uscc",
    ];
    ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len())
}

fn field_text(kind: &str, name: &str, value: &Value) -> String {
    let text = show(value);
    match name {
        "status" => labels::status(&text),
        "type" if kind == "event" => labels::event_type(&text),
        "occurred_at" | "reported_at" => local_time(&text),
        "grid" => labels::division(&text),
        "routed_to" => value
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|d| labels::department(&show(d)))
                    .collect::<Vec<_>>()
                    .join("、")
            })
            .unwrap_or(text),
        _ => labels::value(name, &text),
    }
}

fn related_lists(related: &Map<String, Value>) -> Vec<(String, Vec<(String, String)>)> {
    let heading = |key: &str| match key {
        "house" => "房屋",
        "occupants" => "住户",
        "events" => "相关事件",
        "parties" => "当事人",
        "owner_of" => "名下房屋",
        "organizations" => "相关单位",
        "legal_representative" => "法定代表人",
        "premises" => "经营场所",
        _ => "相关",
    };
    related
        .iter()
        .map(|(key, refs)| {
            let items = refs
                .as_array()
                .map(|refs| {
                    refs.iter()
                        .filter_map(|r| {
                            let id = r["id"].as_str()?;
                            let label = r["label"].as_str().unwrap_or(id).to_owned();
                            Some((profile_path(id)?, label))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (heading(key).to_owned(), items)
        })
        .filter(|(_, items): &(String, Vec<(String, String)>)| !items.is_empty())
        .collect()
}

#[derive(Template)]
#[template(path = "console/report.html")]
struct ReportPage {
    layout: Layout,
    types: Vec<(String, String)>,
    /// The worker's grids: (code, name).
    grids: Vec<(String, String)>,
    party: String,
    party_label: String,
    form: ReportForm,
}

#[derive(Deserialize, Default, Clone)]
pub struct ReportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    grid: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    party: String,
}

#[derive(Deserialize)]
pub struct ReportQuery {
    #[serde(default)]
    party: String,
}

/// `GET /console/reports/new[?party=r_…]`: the report form, three required fields.
pub async fn report_form(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(query): Query<ReportQuery>,
) -> Response {
    let form = ReportForm {
        party: if path_safe(&query.party) && query.party.starts_with("r_") {
            query.party
        } else {
            String::new()
        },
        ..ReportForm::default()
    };
    report_render(&state, &staff, form, None, StatusCode::OK)
}

fn report_render(
    state: &ConsoleState,
    staff: &Staff,
    form: ReportForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut types = super::routed_types(state);
    for extra in ["dispute", "fire_hazard", "public_security", "road_damage"] {
        if !types.iter().any(|t| t == extra) {
            types.push(extra.to_owned());
        }
    }
    types.retain(|t| t != "visit");
    let mut layout = staff.layout(state, "上报事件");
    layout.error = error;
    let grids = staff
        .session
        .principal
        .jurisdiction
        .iter()
        .map(|g| g.as_str().to_owned())
        .filter(|g| g.len() == 15)
        .map(|g| {
            let name = labels::division(&g);
            (g, name)
        })
        .collect();
    let mut response = render(&ReportPage {
        layout,
        types: types
            .into_iter()
            .map(|t| {
                let label = labels::event_type(&t);
                (t, label)
            })
            .collect(),
        grids,
        party_label: if form.party.is_empty() {
            String::new()
        } else {
            "已关联当前居民".to_owned()
        },
        party: form.party.clone(),
        form,
    });
    *response.status_mut() = status;
    response
}

/// `POST /console/reports`: `POST /v1/reports`, then "my events".
pub async fn report(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<ReportForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let mut body = json!({
        "type": form.event_type.trim(),
        "grid": form.grid.trim(),
    });
    for (key, value) in [
        ("title", &form.title),
        ("description", &form.description),
        ("address", &form.address),
    ] {
        if !value.trim().is_empty() {
            body[key] = Value::String(value.trim().to_owned());
        }
    }
    if !form.party.is_empty() {
        body["parties"] = json!([form.party]);
    }
    match record(&state, &staff, "/v1/reports", &body).await {
        Ok(done) => done,
        Err(Ok(answer)) => {
            let status = answer.status;
            report_render(&state, &staff, form, Some(answer.message()), status)
        }
        Err(Err(redirect)) => redirect,
    }
}

/// POSTs a report or a visit; on success the way to "my events" (which waits for it), else
/// the API's refusal or the login page.
async fn record(
    state: &ConsoleState,
    staff: &Staff,
    path: &str,
    body: &Value,
) -> Result<Response, Result<super::call::Answer, Response>> {
    let answer = staff
        .call(state, Method::POST, path, Some(body))
        .await
        .map_err(Err)?;
    if answer.ok() {
        let id = answer.json()["id"].as_str().unwrap_or_default().to_owned();
        Ok(see_other(&format!("/console/events/mine?reported={id}")))
    } else {
        Err(Ok(answer))
    }
}

#[derive(Deserialize)]
pub struct VisitForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    resident: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/visits`: records a visit to the resident whose profile is open.
pub async fn visit(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<VisitForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let body = json!({
        "resident": form.resident,
        "purpose": form.purpose,
        "note": form.note.trim(),
    });
    match record(&state, &staff, "/v1/visits", &body).await {
        Ok(done) => done,
        Err(Ok(answer)) => api_refusal(&staff, &state, "记录走访", &answer),
        Err(Err(redirect)) => redirect,
    }
}

#[derive(Deserialize)]
pub struct MineQuery {
    #[serde(default)]
    reported: String,
}

/// `GET /console/events/mine`: the events this worker recorded, newest first, with deadlines.
pub async fn my_events(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(query): Query<MineQuery>,
) -> Response {
    if staff.session.purpose.is_none() {
        return purpose_needed(&staff, &state, "我的事件");
    }
    // Just reported: the search index follows the store within moments; wait for the new
    // event to be listed rather than show a list without it (at most about 3 s).
    let reported = Some(query.reported.as_str()).filter(|id| id.starts_with("e_") && path_safe(id));
    let mut tries = 0;
    let body = loop {
        let answer = match staff
            .get(&state, "/v1/events?reported_by=me&sort=time&limit=100")
            .await
        {
            Ok(answer) => answer,
            Err(redirect) => return redirect,
        };
        if !answer.ok() {
            return api_refusal(&staff, &state, "我的事件", &answer);
        }
        let body = answer.json();
        let listed = |id: &str| {
            body["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["id"] == id))
        };
        tries += 1;
        match reported {
            Some(id) if !listed(id) && tries < 30 => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => break body,
        }
    };
    let mut layout = staff.layout(&state, "我的事件");
    if reported.is_some() {
        layout.flash = Some("已上报。可在下方查看办理进度。".to_owned());
    }
    layout.watermark = Some(staff.watermark());
    render(&TablePage {
        layout,
        intro: "您上报的事件和走访记录，最新的在前；期限按事件类型计算。".to_owned(),
        filters: None,
        table: events_table(&state, &body),
        links: Vec::new(),
    })
}

/// Events as a table with their deadline (occurred + the type's hours) and whether it passed.
pub fn events_table(state: &ConsoleState, body: &Value) -> Table {
    let open = ["reported", "accepted", "dispatched", "in_progress"];
    let now = chrono::Utc::now();
    let rows = body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let id = item["id"].as_str().filter(|id| path_safe(id))?;
                    let s = &item["summary"];
                    let event_type = show(&s["type"]);
                    let status = show(&s["status"]);
                    let occurred = chrono::DateTime::parse_from_rfc3339(&show(&s["occurred_at"]))
                        .ok()
                        .map(|t| t.with_timezone(&chrono::Utc));
                    let hours = state.app.events.deadline_hours_of(&event_type);
                    let due = occurred.map(|t| t + chrono::Duration::hours(i64::from(hours)));
                    let late = open.contains(&status.as_str()) && due.is_some_and(|d| d < now);
                    let title = match show(&s["title"]) {
                        t if t.is_empty() => labels::event_type(&event_type),
                        t => t,
                    };
                    Some(vec![
                        Cell::link(title, format!("/console/events/{id}")),
                        Cell::text(labels::event_type(&event_type)),
                        Cell::text(labels::status(&status)),
                        Cell::text(
                            occurred
                                .map(|t| local_time(&t.to_rfc3339()))
                                .unwrap_or_default(),
                        ),
                        if late {
                            Cell::text(format!(
                                "⚠ 已超期 {}",
                                due.map(|d| local_time(&d.to_rfc3339())).unwrap_or_default()
                            ))
                            .class("late")
                        } else if open.contains(&status.as_str()) {
                            Cell::text(due.map(|d| local_time(&d.to_rfc3339())).unwrap_or_default())
                        } else {
                            Cell::text("✓ 已完成").class("done")
                        },
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    Table {
        headers: ["事件", "类型", "状态", "发生时间", "办理期限"]
            .map(str::to_owned)
            .to_vec(),
        rows,
        empty: "暂无事件。".to_owned(),
    }
}

/// A note page in the frame.
pub fn note(state: &ConsoleState, staff: &Staff, title: &str, text: &str) -> Response {
    render(&NotePage {
        layout: staff.layout(state, title),
        text: text.to_owned(),
    })
}

/// `GET /console/mine`: what the access log holds about this staff member's own reads and
/// searches in the last 7 days, newest first, before a compliance officer asks.
pub async fn my_accesses(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let answer = match staff.get(&state, "/v1/audit/mine?days=7&limit=200").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "我的查询记录", &answer);
    }
    let rows = answer.json()["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| {
                    let entity = r["entities"]
                        .as_array()
                        .and_then(|e| e.first())
                        .map(show)
                        .unwrap_or_default();
                    let object = match profile_path(&entity) {
                        Some(href) => Cell::link(entity, href),
                        None => Cell::text(entity),
                    };
                    vec![
                        Cell::text(local_time(&show(&r["time"]))),
                        Cell::text(labels::action(&show(&r["action"]))),
                        Cell::text(labels::purpose(&show(&r["purpose"]))),
                        Cell::text(labels::decision(&show(&r["decision"]))),
                        Cell::text(show(&r["result_count"])),
                        object,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render(&TablePage {
        layout: staff.layout(&state, "我的查询记录"),
        intro:
            "最近 7 天您在本系统的每一次查看、搜索和上报，最新的在前。合规专员看到的就是这些记录。"
                .to_owned(),
        filters: None,
        table: Table {
            headers: ["时间", "操作", "目的", "决定", "结果数", "对象"]
                .map(str::to_owned)
                .to_vec(),
            rows,
            empty: "最近 7 天没有记录。".to_owned(),
        },
        links: Vec::new(),
    })
}
