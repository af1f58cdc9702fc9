//! A department's pages: batch receipts, the quarantine with the reason for each record,
//! subscriptions and their deliveries.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::call::path_safe;
use super::{
    api_refusal, local_time, render, see_other, show, Action, Cell, ConsoleState, Layout, Staff,
    Table, TablePage,
};

/// The department code of a department's staff member, or a note page.
fn department(staff: &Staff, state: &ConsoleState) -> Result<String, Box<Response>> {
    match staff.session.principal.dept {
        Some(dept) => Ok(dept.code().to_owned()),
        None => {
            let mut page = super::worker::note(state, staff, "部门", "您的账号不属于任何部门。");
            *page.status_mut() = axum::http::StatusCode::FORBIDDEN;
            Err(Box::new(page))
        }
    }
}

/// `GET /console/quarantine`: the department's rejected records and why each was refused.
/// The record as sent stays out of the page: the reason, field and line say what to fix.
pub async fn quarantine(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let dept = match department(&staff, &state) {
        Ok(dept) => dept,
        Err(page) => return *page,
    };
    let answer = match staff
        .get(&state, &format!("/v1/ingest/{dept}/rejects?limit=500"))
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "拒收记录", &answer);
    }
    let body = answer.json();
    let rows = body["rejects"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| {
                    vec![
                        Cell::text(local_time(&show(&r["received_at"]))),
                        Cell::text(show(&r["batch_id"])),
                        Cell::text(format!(
                            "{} 第 {} 行",
                            show(&r["source_file"]),
                            show(&r["line"])
                        )),
                        Cell::text(show(&r["source_id"])),
                        Cell::text(super::labels::field(&show(&r["field"]))),
                        Cell::text(format!("{}（{}）", show(&r["message"]), show(&r["code"]))),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render(&TablePage {
        layout: staff.layout(&state, "拒收记录"),
        intro: "以下记录未被接收。请按原因在本部门系统中改正后重新报送，改正后的记录到达时此条自动关闭。"
            .to_owned(),
        filters: None,
        table: Table {
            headers: ["接收时间", "批次", "位置", "源记录编号", "字段", "原因"]
                .map(str::to_owned)
                .to_vec(),
            rows,
            empty: "没有拒收的记录。".to_owned(),
        },
        links: vec![("/console/quarantine.xlsx".to_owned(), "导出 Excel".to_owned())],
    })
}

/// `GET /console/quarantine.xlsx`: the same list as a workbook (reasons in Chinese, the
/// records as sent left out).
pub async fn quarantine_xlsx(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let dept = match department(&staff, &state) {
        Ok(dept) => dept,
        Err(page) => return *page,
    };
    let answer = match staff
        .get(&state, &format!("/v1/ingest/{dept}/rejects?format=xlsx"))
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "拒收记录", &answer);
    }
    super::download(answer)
}

#[derive(Template)]
#[template(path = "console/receipts.html")]
struct ReceiptsPage {
    layout: Layout,
    batch: String,
    receipt: Vec<(String, String)>,
}

/// `GET /console/receipts`: look up a batch receipt by its id.
pub async fn receipts_page(State(state): State<ConsoleState>, staff: Staff) -> Response {
    render(&ReceiptsPage {
        layout: staff.layout(&state, "批次回执"),
        batch: String::new(),
        receipt: Vec::new(),
    })
}

#[derive(Deserialize)]
pub struct ReceiptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    batch: String,
}

/// `POST /console/receipts`: the receipt of one batch.
pub async fn receipt(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<ReceiptForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let dept = match department(&staff, &state) {
        Ok(dept) => dept,
        Err(page) => return *page,
    };
    let batch = form.batch.trim().to_owned();
    let mut layout = staff.layout(&state, "批次回执");
    if !path_safe(&batch) {
        layout.error = Some("批次编号只含字母、数字和下划线。".to_owned());
        return render(&ReceiptsPage {
            layout,
            batch: String::new(),
            receipt: Vec::new(),
        });
    }
    let answer = match staff
        .get(&state, &format!("/v1/ingest/{dept}/batches/{batch}"))
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    let mut receipt = Vec::new();
    if answer.ok() {
        let body = answer.json();
        for (key, label) in [
            ("received_at", "接收时间"),
            ("accepted", "接收"),
            ("created", "新增"),
            ("updated", "更新"),
            ("unchanged", "未变化"),
            ("stale", "旧版本（忽略）"),
            ("deleted", "删除"),
        ] {
            let value = show(&body[key]);
            let value = if key == "received_at" {
                local_time(&value)
            } else {
                value
            };
            receipt.push((label.to_owned(), value));
        }
        let rejected = body["rejected"].as_array().map(Vec::len).unwrap_or(0);
        receipt.push(("拒收".to_owned(), rejected.to_string()));
    } else {
        layout.error = Some(answer.message());
    }
    render(&ReceiptsPage {
        layout,
        batch,
        receipt,
    })
}

/// `GET /console/subscriptions`: the department's subscriptions and their failed deliveries.
pub async fn subscriptions(State(state): State<ConsoleState>, staff: Staff) -> Response {
    let answer = match staff.get(&state, "/v1/subscriptions").await {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if !answer.ok() {
        return api_refusal(&staff, &state, "订阅与推送", &answer);
    }
    let body = answer.json();
    let mut rows = Vec::new();
    for s in body["items"].as_array().cloned().unwrap_or_default() {
        let Some(id) = s["id"]
            .as_str()
            .filter(|id| path_safe(id))
            .map(str::to_owned)
        else {
            continue;
        };
        rows.push(vec![
            Cell::text(id.clone()),
            Cell::text(
                s["kinds"]
                    .as_array()
                    .map(|k| {
                        k.iter()
                            .map(|k| super::labels::kind(&show(k)))
                            .collect::<Vec<_>>()
                            .join("、")
                    })
                    .unwrap_or_default(),
            ),
            Cell::text(show(&s["grids"])),
            Cell::text(super::labels::purpose(&show(&s["purpose"]))),
            Cell::text(match s["url"].as_str() {
                Some(url) => url.to_owned(),
                None => "仅拉取".to_owned(),
            }),
            Cell::text(format!(
                "已送达 {}，失败 {}",
                show(&s["delivered"]),
                show(&s["failed"])
            )),
            Cell::text(""),
        ]);
        let failed = match staff
            .get(
                &state,
                &format!("/v1/subscriptions/{id}/deliveries?status=failed"),
            )
            .await
        {
            Ok(answer) if answer.ok() => answer.json(),
            Ok(_) => continue,
            Err(redirect) => return redirect,
        };
        for d in failed["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .take(20)
        {
            let Some(delivery) = d["delivery_id"].as_str().filter(|d| path_safe(d)) else {
                continue;
            };
            let mut retry = Cell::text("");
            retry.actions = vec![Action {
                url: format!("/console/subscriptions/{id}/deliveries/{delivery}/retry"),
                label: "重新推送".to_owned(),
                fields: vec![("csrf".to_owned(), staff.session.csrf.clone())],
            }];
            rows.push(vec![
                Cell::text(format!("↳ {delivery}")),
                Cell::text(format!("变更 #{}", show(&d["seq"]))),
                Cell::text(""),
                Cell::text(""),
                Cell::text(format!("{} {}", show(&d["http_status"]), show(&d["error"]))),
                Cell::text(format!(
                    "失败，尝试 {} 次，{}",
                    show(&d["attempts"]),
                    local_time(&show(&d["updated_at"]))
                ))
                .class("late"),
                retry,
            ]);
        }
    }
    render(&TablePage {
        layout: staff.layout(&state, "订阅与推送"),
        intro: "本部门的订阅。推送失败的记录列在订阅下方，可重新推送。".to_owned(),
        filters: None,
        table: Table {
            headers: [
                "订阅",
                "数据类型",
                "区域",
                "目的",
                "推送地址",
                "送达情况",
                "操作",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows,
            empty: "没有订阅。".to_owned(),
        },
        links: Vec::new(),
    })
}

/// `POST /console/subscriptions/{id}/deliveries/{delivery}/retry`.
pub async fn retry(
    State(state): State<ConsoleState>,
    staff: Staff,
    Path((id, delivery)): Path<(String, String)>,
    Form(form): Form<super::CsrfForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    if !path_safe(&id) || !path_safe(&delivery) {
        return super::not_found().await;
    }
    let answer = match staff
        .call(
            &state,
            Method::POST,
            &format!("/v1/subscriptions/{id}/deliveries/{delivery}/retry"),
            None,
        )
        .await
    {
        Ok(answer) => answer,
        Err(redirect) => return redirect,
    };
    if answer.ok() {
        see_other("/console/subscriptions")
    } else {
        api_refusal(&staff, &state, "重新推送", &answer)
    }
}
