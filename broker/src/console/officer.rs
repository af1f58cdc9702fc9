//! Community and street officers' pages: events by status and overdue, moving an event
//! through its lifecycle, the review queue of uncertain links, the sharing statistics.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::json;

use super::call::{encode, path_safe};
use super::worker::events_table;
use super::{
    api_refusal, labels, purpose_needed, render, see_other, show, Action, Cell, ConsoleState,
    FilterField, Filters, Layout, Staff, Table, TablePage,
};

#[derive(Deserialize, Default)]
pub struct EventsQuery {
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    overdue: String,
    #[serde(default)]
    q: String,
}

/// `GET /console/events`: events in the officer's jurisdiction by status, type and overdue.
pub async fn events(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(query): Query<EventsQuery>,
) -> Response {
    if staff.session.purpose.is_none() {
        return purpose_needed(&staff, &state, "事件办理");
    }
    let code = |v: &str| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let mut path = "/v1/events?sort=time&limit=100".to_owned();
    if !query.status.is_empty() && code(&query.status) {
        path.push_str(&format!("&status={}", query.status));
    }
    if !query.event_type.is_empty() && code(&query.event_type) {
        path.push_str(&format!("&type={}", query.event_type));
    }
    if query.overdue == "true" {
        path.push_str("&overdue=true");
    }
    // Event words only: a query with many digits goes through the search box.
    let q = query.q.trim();
    if !q.is_empty() && q.chars().filter(char::is_ascii_digit).count() <= 6 {
        path.push_str(&format!("&q={}", encode(q)));
    }
    let answer = match staff.get(&state, &path).await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "事件办理", &answer);
    }
    let mut statuses = vec![
        (String::new(), "全部".to_owned()),
        ("open".to_owned(), "未办结".to_owned()),
    ];
    statuses.extend(
        policies::EVENT_STATES
            .iter()
            .map(|s| ((*s).to_owned(), labels::status(s))),
    );
    let mut types = vec![(String::new(), "全部".to_owned())];
    types.extend(super::routed_types(&state).into_iter().map(|t| {
        let label = labels::event_type(&t);
        (t, label)
    }));
    let mut layout = staff.layout(&state, "事件办理");
    layout.watermark = Some(staff.watermark());
    render(&TablePage {
        layout,
        intro: "辖区内的事件，最新的在前。超期的事件标有 ⚠。".to_owned(),
        filters: Some(Filters {
            method: "get",
            action: "/console/events".to_owned(),
            fields: vec![
                FilterField::select("status", "状态", &query.status, statuses),
                FilterField::select("type", "类型", &query.event_type, types),
                FilterField::select(
                    "overdue",
                    "期限",
                    &query.overdue,
                    vec![
                        (String::new(), "全部".to_owned()),
                        ("true".to_owned(), "只看超期".to_owned()),
                    ],
                ),
                FilterField::text("q", "关键词", q),
            ],
        }),
        table: events_table(&state, &answer.json()),
        links: Vec::new(),
    })
}

#[derive(Deserialize)]
pub struct TransitionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    assignee: String,
}

/// `POST /console/events/{id}/transitions`: moves an event (the API decides who may).
pub async fn transition(
    State(state): State<ConsoleState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<TransitionForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    if !path_safe(&id) {
        return super::not_found().await;
    }
    let mut body = json!({ "to": form.to });
    if !form.note.trim().is_empty() {
        body["note"] = json!(form.note.trim());
    }
    if !form.assignee.trim().is_empty() {
        body["assignee"] = json!(form.assignee.trim());
    }
    let answer = match staff
        .call(
            &state,
            Method::POST,
            &format!("/v1/events/{id}/transitions"),
            Some(&body),
        )
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if answer.ok() {
        see_other(&format!("/console/events/{id}"))
    } else {
        api_refusal(&staff, &state, "事件流转", &answer)
    }
}

/// `GET /console/reviews`: pairs the linkage model was unsure about, to link or keep apart.
pub async fn reviews(State(state): State<ConsoleState>, staff: Staff) -> Response {
    if staff.session.purpose.is_none() {
        return purpose_needed(&staff, &state, "待确认关联");
    }
    let answer = match staff.get(&state, "/v1/resolution/reviews").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "待确认关联", &answer);
    }
    let body = answer.json();
    let csrf = staff.session.csrf.clone();
    let side = |s: &serde_json::Value| -> Cell {
        let entity = show(&s["entity"]);
        let text = format!(
            "{} {}",
            labels::department(&show(&s["department"])),
            show(&s["source_id"])
        );
        match super::call::profile_path(&entity) {
            Some(href) => Cell::link(text, href),
            None => Cell::text(text),
        }
    };
    let rows = body["reviews"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|r| {
                    let id = r["id"].as_str().filter(|id| path_safe(id))?;
                    let action = |decision: &str, label: &str| Action {
                        url: format!("/console/reviews/{id}"),
                        label: label.to_owned(),
                        fields: vec![
                            ("csrf".to_owned(), csrf.clone()),
                            ("decision".to_owned(), decision.to_owned()),
                        ],
                    };
                    let mut decide = Cell::text("");
                    decide.actions =
                        vec![action("link", "是同一人"), action("distinct", "不是同一人")];
                    Some(vec![
                        side(&r["record"]),
                        side(&r["candidate"]),
                        Cell::text(format!("{:.2}", r["score"].as_f64().unwrap_or(0.0))),
                        decide,
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    let mut layout = staff.layout(&state, "待确认关联");
    layout.watermark = Some(staff.watermark());
    render(&TablePage {
        layout,
        intro: "没有身份证号的记录与已有居民相似、系统无法确定时，请核实后选择。决定是最终的，之后的每次报送都照此处理。".to_owned(),
        filters: None,
        table: Table {
            headers: ["新记录", "相似的记录", "相似度", "决定"].map(str::to_owned).to_vec(),
            rows,
            empty: "没有待确认的关联。".to_owned(),
        },
        links: Vec::new(),
    })
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

/// `POST /console/reviews/{id}`: link or keep apart.
pub async fn decide(
    State(state): State<ConsoleState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    if !path_safe(&id) {
        return super::not_found().await;
    }
    let body = json!({ "decision": form.decision });
    let answer = match staff
        .call(
            &state,
            Method::POST,
            &format!("/v1/resolution/reviews/{id}"),
            Some(&body),
        )
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if answer.ok() {
        see_other("/console/reviews")
    } else {
        api_refusal(&staff, &state, "待确认关联", &answer)
    }
}

#[derive(Template)]
#[template(path = "console/stats.html")]
struct StatsPage {
    layout: Layout,
    bars: Vec<Bar>,
    total: String,
    events: String,
    as_of: String,
    /// The chart's height in SVG units.
    height: u32,
}

struct Bar {
    label: String,
    /// Bar length in SVG units (0 to 400).
    width: u32,
    y: u32,
    text_y: u32,
    figure: String,
}

/// `GET /console/stats`: the sharing rate per department as a bar chart (server-drawn SVG).
pub async fn stats(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let answer = match staff.get(&state, "/v1/stats/sharing").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "共享统计", &answer);
    }
    let body = answer.json();
    let bars: Vec<Bar> = body["departments"]
        .as_array()
        .map(|d| {
            d.iter()
                .enumerate()
                .map(|(i, d)| {
                    let rate = d["sharing_rate"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
                    let y = 10 + 40 * i as u32;
                    Bar {
                        label: labels::department(&show(&d["department"])),
                        width: (rate * 400.0).round() as u32,
                        y,
                        text_y: y + 20,
                        figure: format!(
                            "{:.1}%（{} / {}）",
                            rate * 100.0,
                            d["shared"].as_u64().unwrap_or(0),
                            d["published"].as_u64().unwrap_or(0)
                        ),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let total = &body["total"];
    let events = &body["events"];
    render(&StatsPage {
        layout: staff.layout(&state, "共享统计"),
        height: 20 + 40 * bars.len() as u32,
        bars,
        total: format!(
            "全街道共享率 {:.1}%（{} 条记录中 {} 条被其他部门使用）",
            total["sharing_rate"].as_f64().unwrap_or(0.0) * 100.0,
            total["published"].as_u64().unwrap_or(0),
            total["shared"].as_u64().unwrap_or(0)
        ),
        events: format!(
            "上报事件 {} 件，已结案 {} 件{}",
            events["reported"].as_u64().unwrap_or(0),
            events["closed"].as_u64().unwrap_or(0),
            events["median_hours_to_close"]
                .as_f64()
                .map(|h| format!("，结案中位用时 {h:.1} 小时"))
                .unwrap_or_default()
        ),
        as_of: super::local_time(&show(&body["as_of"])),
    })
}
