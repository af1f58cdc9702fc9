//! The compliance officer's pages: audit search with filters, anomalies, a resident's report,
//! the log's verification, the Excel export.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::call::encode;
use super::{
    api_refusal, labels, local_time, render, show, Cell, ConsoleState, FilterField, Filters,
    Layout, Staff, Table, TablePage,
};

/// Filters of the audit search (GET carries all but `resident`, which is POSTed: it may be an
/// ID number).
#[derive(Deserialize, Default)]
pub struct AuditFilters {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    resident: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    action: String,
}

/// `GET /console/audit?actor=&entity=&from=&to=&purpose=&decision=&action=`.
pub async fn audit_page(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(mut filters): Query<AuditFilters>,
) -> Response {
    // An ID number never rides in a URL: the resident filter is taken from the form only.
    filters.resident.clear();
    audit(&state, &staff, filters).await
}

/// `POST /console/audit`: the same, with the resident filter (a unified id or an ID number).
pub async fn audit_search(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(filters): Form<AuditFilters>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&filters.csrf) {
        return refusal;
    }
    audit(&state, &staff, filters).await
}

/// A date from a date input (Beijing day) as RFC 3339, or the text as typed.
fn day_start(text: &str) -> String {
    match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(day) => format!("{day}T00:00:00+08:00"),
        Err(_) => text.to_owned(),
    }
}

async fn audit(state: &ConsoleState, staff: &Staff, f: AuditFilters) -> Response {
    let mut path = "/v1/audit/records?limit=200".to_owned();
    for (name, value) in [
        ("actor", f.actor.trim().to_owned()),
        ("resident", f.resident.trim().to_owned()),
        ("entity", f.entity.trim().to_owned()),
        ("from", day_start(f.from.trim())),
        ("to", day_start(f.to.trim())),
        ("purpose", f.purpose.trim().to_owned()),
        ("decision", f.decision.trim().to_owned()),
        ("action", f.action.trim().to_owned()),
    ] {
        if !value.is_empty() {
            path.push_str(&format!("&{name}={}", encode(&value)));
        }
    }
    let answer = match staff.get(state, &path).await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(staff, state, "访问日志", &answer);
    }
    let body = answer.json();
    let rows = body["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .rev()
                .map(|r| {
                    let entity_text = r["entities"]
                        .as_array()
                        .map(|e| e.iter().map(show).take(5).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    vec![
                        Cell::text(show(&r["seq"])),
                        Cell::text(local_time(&show(&r["time"]))),
                        Cell::text(format!(
                            "{}（{}）{}",
                            show(&r["actor"]["name"]),
                            show(&r["actor"]["sub"]),
                            r["actor"]["roles"]
                                .as_array()
                                .map(|roles| roles
                                    .iter()
                                    .map(|x| labels::role(&show(x)))
                                    .collect::<Vec<_>>()
                                    .join("、"))
                                .unwrap_or_default()
                        )),
                        Cell::text(labels::action(&show(&r["action"]))),
                        Cell::text(show(&r["endpoint"])),
                        Cell::text(labels::purpose(&show(&r["purpose"]))),
                        Cell::text(labels::decision(&show(&r["decision"]))),
                        Cell::text(entity_text),
                        Cell::text(show(&r["request_id"])),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let purposes = std::iter::once((String::new(), "全部".to_owned()))
        .chain(
            state
                .app
                .purposes
                .iter()
                .map(|p| (p.clone(), labels::purpose(p))),
        )
        .collect();
    let decisions = [
        ("", "全部"),
        ("allow", "允许"),
        ("masked", "脱敏"),
        ("deny", "拒绝"),
        ("break_glass", "紧急授权"),
    ]
    .map(|(v, l)| (v.to_owned(), l.to_owned()))
    .to_vec();
    let mut export = "/console/audit/export?".to_owned();
    if !f.from.trim().is_empty() {
        export.push_str(&format!("from={}&", encode(&day_start(f.from.trim()))));
    }
    if !f.to.trim().is_empty() {
        export.push_str(&format!("to={}&", encode(&day_start(f.to.trim()))));
    }
    let mut layout = staff.layout(state, "访问日志");
    layout.watermark = Some(staff.watermark());
    render(&TablePage {
        layout,
        intro: "每一次访问，无论允许还是拒绝，都记录在防篡改的访问日志中。按居民查询时可输入统一编号或公民身份号码（只在服务端比对，不出现在网址中）。".to_owned(),
        filters: Some(Filters {
            method: "post",
            action: "/console/audit".to_owned(),
            fields: vec![
                FilterField::text("actor", "访问人（账号）", &f.actor),
                // A typed ID number is not written back into the page.
                FilterField::text(
                    "resident",
                    "居民",
                    if f.resident.trim().starts_with("r_") { &f.resident } else { "" },
                ),
                FilterField::text("entity", "对象编号", &f.entity),
                FilterField::date("from", "起始日期", &f.from),
                FilterField::date("to", "截止日期", &f.to),
                FilterField::select("purpose", "目的", &f.purpose, purposes),
                FilterField::select("decision", "决定", &f.decision, decisions),
                FilterField::text("action", "操作", &f.action),
            ],
        }),
        table: Table {
            headers: ["序号", "时间", "访问人", "操作", "接口", "目的", "决定", "对象", "请求编号"]
                .map(str::to_owned)
                .to_vec(),
            rows,
            empty: "没有符合条件的记录。".to_owned(),
        },
        links: vec![(export.trim_end_matches(['&', '?']).to_owned(), "导出 Excel".to_owned())],
    })
}

/// `GET /console/audit/anomalies`: the last day's anomalies (bulk lookups, off hours …).
pub async fn anomalies(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let answer = match staff.get(&state, "/v1/audit/anomalies").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "异常", &answer);
    }
    let body = answer.json();
    let kind = |k: &str| match k {
        "bulk_lookup" => "批量查询".to_owned(),
        "outside_working_hours" => "非工作时间访问".to_owned(),
        "repeated_denials" => "多次被拒".to_owned(),
        "break_glass" => "紧急授权访问".to_owned(),
        "many_actors_one_resident" => "多人查看同一居民".to_owned(),
        other => other.to_owned(),
    };
    let rows = body["anomalies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    let actor = show(&a["actor"]);
                    let actor_cell = if actor.is_empty() {
                        Cell::text("")
                    } else {
                        Cell::link(
                            actor.clone(),
                            format!("/console/audit?actor={}", encode(&actor)),
                        )
                    };
                    vec![
                        Cell::text(kind(&show(&a["kind"]))),
                        actor_cell,
                        Cell::text(format!(
                            "{} — {}",
                            local_time(&show(&a["window_start"])),
                            local_time(&show(&a["window_end"]))
                        )),
                        Cell::text(show(&a["count"])),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render(&TablePage {
        layout: staff.layout(&state, "异常"),
        intro: format!(
            "最近 24 小时共检查 {} 条访问记录。",
            body["records"].as_u64().unwrap_or(0)
        ),
        filters: None,
        table: Table {
            headers: ["类型", "访问人", "时间窗口", "次数"]
                .map(str::to_owned)
                .to_vec(),
            rows,
            empty: "没有发现异常。".to_owned(),
        },
        links: Vec::new(),
    })
}

/// `GET /console/audit/report`: the form for a resident's report.
pub async fn report_page(State(state): State<ConsoleState>, staff: Staff) -> Response {
    report_render(&state, &staff, String::new(), None)
}

#[derive(Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    resident: String,
}

/// `POST /console/audit/report`: who looked at a resident's data (unified id or ID number).
pub async fn report(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<ReportForm>,
) -> Response {
    let answer = match resident_report(&state, &staff, &form, "").await {
        Ok(answer) => answer,
        Err(page) => return page,
    };
    let body = answer.json();
    let rows = body["accesses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    vec![
                        Cell::text(local_time(&show(&a["time"]))),
                        Cell::text(show(&a["organisation"])),
                        Cell::text(labels::action(&show(&a["action"]))),
                        Cell::text(labels::purpose(&show(&a["purpose"]))),
                        Cell::text(labels::decision(&show(&a["decision"]))),
                        Cell::text(
                            a["fields_clear"]
                                .as_array()
                                .map(|f| {
                                    f.iter()
                                        .map(|f| labels::field(&show(f)))
                                        .collect::<Vec<_>>()
                                        .join("、")
                                })
                                .unwrap_or_default(),
                        ),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let deferred = body["deferred"].as_u64().unwrap_or(0);
    let mut layout = staff.layout(&state, "居民查询报告");
    layout.watermark = Some(staff.watermark());
    render(&TablePage {
        layout,
        intro: format!(
            "居民 {} 的数据被谁、因何目的查看过。{}",
            show(&body["resident"]),
            if deferred > 0 {
                format!("另有 {deferred} 条与办案相关的访问按规定暂缓显示。")
            } else {
                String::new()
            }
        ),
        filters: None,
        table: Table {
            headers: [
                "时间",
                "单位或岗位",
                "操作",
                "目的",
                "决定",
                "明文查看的字段",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows,
            empty: "没有访问记录。".to_owned(),
        },
        links: Vec::new(),
    })
}

#[derive(Template)]
#[template(path = "console/resident_report.html")]
struct ReportFormPage {
    layout: Layout,
    resident: String,
}

fn report_render(
    state: &ConsoleState,
    staff: &Staff,
    resident: String,
    error: Option<String>,
) -> Response {
    let mut layout = staff.layout(state, "居民查询报告");
    layout.error = error;
    render(&ReportFormPage { layout, resident })
}

/// The outcome of a verification run from the console.
#[derive(Debug, Clone)]
pub struct Verification {
    pub at: chrono::DateTime<chrono::Utc>,
    pub by: String,
    pub ok: bool,
    pub text: String,
}

#[derive(Template)]
#[template(path = "console/verify.html")]
struct VerifyPage {
    layout: Layout,
    size: String,
    root: String,
    last: Option<(String, String, bool, String)>,
}

/// `GET /console/audit/verify`: the signed checkpoint and the last verification.
pub async fn verify_page(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let answer = match staff.get(&state, "/v1/audit/checkpoint").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "日志校验", &answer);
    }
    let body = answer.json();
    let last = state
        .app
        .console
        .last_verification
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(|v| (local_time(&v.at.to_rfc3339()), v.by, v.ok, v.text));
    render(&VerifyPage {
        layout: staff.layout(&state, "日志校验"),
        size: show(&body["size"]),
        root: show(&body["root"]),
        last,
    })
}

/// `POST /console/audit/verify`: verifies the whole log as the offline verifier does (every
/// segment, every hash, every signed checkpoint), after the API confirmed the caller is a
/// compliance officer.
pub async fn verify(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<super::CsrfForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let answer = match staff.get(&state, "/v1/audit/checkpoint").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "日志校验", &answer);
    }
    let dir = state.app.audit.dir().to_path_buf();
    let key_path = state.app.audit.public_key_path();
    let outcome = tokio::task::spawn_blocking(move || {
        let key_text = std::fs::read_to_string(&key_path).map_err(|e| e.to_string())?;
        let key =
            audit::checkpoint::PublicKey::parse(key_text.trim()).map_err(|e| e.to_string())?;
        audit::verify::verify_log_dir(&dir, &key, audit::verify::VerifyOptions::default())
            .map_err(|e| e.to_string())
    })
    .await;
    let (ok, text) = match outcome {
        Ok(Ok(report)) => (
            true,
            format!(
                "校验通过：{} 条记录，签名检查点与哈希链一致。",
                report.records
            ),
        ),
        Ok(Err(reason)) => (false, format!("校验失败：{reason}")),
        Err(_) => (false, "校验未完成。".to_owned()),
    };
    *state
        .app
        .console
        .last_verification
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Verification {
        at: chrono::Utc::now(),
        by: staff.session.principal.sub.clone(),
        ok,
        text,
    });
    super::see_other("/console/audit/verify")
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `GET /console/audit/export?from=&to=`: the API's Excel export, as a download.
pub async fn export(
    State(state): State<ConsoleState>,
    staff: Staff,
    Query(query): Query<ExportQuery>,
) -> Response {
    let mut path = "/v1/audit/export?format=xlsx".to_owned();
    for (name, value) in [("from", &query.from), ("to", &query.to)] {
        if !value.is_empty() {
            path.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    let answer = match staff.get(&state, &path).await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "导出", &answer);
    }
    super::download(answer)
}

/// `POST /console/audit/report.xlsx`: a resident's report as a workbook (the resident is
/// POSTed: it may be an ID number).
pub async fn report_xlsx(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<ReportForm>,
) -> Response {
    match resident_report(&state, &staff, &form, "?format=xlsx").await {
        Ok(answer) => super::download(answer),
        Err(page) => page,
    }
}

/// The API's report on the form's resident (`query` picks the format), or the page to show
/// instead: a refused form, an unusable resident, the API's refusal.
async fn resident_report(
    state: &ConsoleState,
    staff: &Staff,
    form: &ReportForm,
    query: &str,
) -> Result<super::call::Answer, Response> {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return Err(refusal);
    }
    let resident = form.resident.trim();
    if resident.is_empty()
        || !resident
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(report_render(
            state,
            staff,
            String::new(),
            Some("请输入居民的统一编号或公民身份号码。".to_owned()),
        ));
    }
    let answer = staff
        .get(
            state,
            &format!("/v1/audit/residents/{resident}/report{query}"),
        )
        .await?;
    if !answer.ok() {
        return Err(report_render(
            state,
            staff,
            String::new(),
            Some(answer.message()),
        ));
    }
    Ok(answer)
}
