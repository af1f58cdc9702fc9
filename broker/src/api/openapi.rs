//! The OpenAPI description of the v1 API, generated from the handlers' annotations.
//!
//! Guarantees: every route the router serves is listed here, and nothing else is (a test
//! compares the router's route table with the document, both ways).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "SafeGrid broker API", version = "1", description = "Secure data exchange for street-level public-safety governance. Every read of personal data needs a bearer token and an X-Purpose header, and is audited."),
    paths(
        super::healthz, super::readyz, super::metrics::metrics_for_admin, super::whoami, super::ingest, super::receipt,
        super::get_resident, super::get_house, super::get_event, super::get_organization,
        super::resident_by_source, super::house_by_source, super::event_by_source,
        super::organization_by_source,
        super::search::search_residents, super::search::search_houses, super::search::search_events,
        super::search::search_organizations, super::search::search_all,
        super::policy::policy_info, super::policy::preview, super::policy::replace_file,
        super::admin::backup, super::admin::problems, super::addresses::assign,
        super::rejects::list_rejects, super::rejects::file_rejects, super::rejects::dismiss_reject,
        super::resolution::list_reviews, super::resolution::decide_review, super::resolution::split, super::resolution::report,
        super::compliance::search_records, super::compliance::checkpoint,
        super::compliance::inclusion_proof, super::compliance::consistency_proof,
        super::compliance::export, super::compliance::anomalies, super::compliance::resident_report,
        super::compliance::my_records,
        // Exchange: subscriptions, deliveries and feeds.
        super::subscriptions::create, super::subscriptions::list, super::subscriptions::remove,
        super::subscriptions::deliveries, super::subscriptions::retry, super::subscriptions::feed,
        // Reports, visits and the event lifecycle.
        super::reports::report, super::reports::visit, super::reports::transition,
        // Sharing statistics.
        super::stats::sharing,
    ),
    components(schemas(
        // Exchange schemas.
        super::subscriptions::SubscriptionRequest, super::subscriptions::SubscriptionView,
        super::subscriptions::Created, super::subscriptions::SubscriptionList,
        super::subscriptions::DeliveryList, super::subscriptions::FeedPage,
        crate::exchange::DeliveryEntry, super::disclosure::ExchangeItem,
        // Reports schemas.
        super::reports::ReportRequest, super::reports::VisitRequest, super::reports::TransitionRequest,
        super::reports::Recorded, super::reports::Moved, model::profile::EventTransition,
        // Statistics schemas.
        super::stats::SharingStats, super::stats::DepartmentSharing, super::stats::EventFigures,
        super::error::ErrorBody, super::error::ErrorDetail, super::Health, super::WhoAmI, super::disclosure::UnifiedId,
        super::search::SearchPage, super::disclosure::SearchItem,
        super::policy::PolicyInfo, super::policy::Preview, super::policy::FieldPreview,
        super::policy::DepartmentLevel, super::policy::ClassPreview, super::policy::DepartmentPreview,
        super::policy::PolicyChanged, super::policy::AgreementPreview, super::addresses::Assignment, super::addresses::Assigned, super::admin::BackupDone, super::admin::ProblemList, engine::problems::Problem,
        super::rejects::RejectPage, super::rejects::RejectItem, super::rejects::FiledReject,
        super::resolution::ReviewList, super::resolution::ReviewItem, super::resolution::ReviewSide,
        super::resolution::ReviewDecision, super::resolution::SplitRequest,
        super::resolution::ResolutionReport, super::resolution::ModelReport,
        super::compliance::RecordsPage, super::compliance::CheckpointBody,
        super::compliance::InclusionBody, super::compliance::ConsistencyBody,
        super::compliance::AnomalyReport, super::compliance::AnomalyBody,
        super::compliance::AnomalySettings, super::compliance::ResidentReport,
        super::compliance::ReportEntry,
        engine::ingest::Receipt, engine::ingest::Rejection,
        model::profile::Profile, model::profile::MergedField, model::profile::Alternative,
        model::profile::MergedTag, model::profile::SourceRef, model::profile::EntityRef,
    )),
    modifiers(&BearerAuth, &RateLimited),
)]
pub struct ApiDoc;

struct BearerAuth;

/// Every route that takes a token may answer 429 `rate_limited` (the per-principal limit).
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("rate_limited: too many requests from this principal")
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::Integer),
                    )
                    .description(Some("seconds to wait"))
                    .build(),
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    operation
                        .responses
                        .responses
                        .entry("429".to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A browsable page for `/openapi.json`, self-contained (no CDN: the broker runs on closed
/// government networks): every route with its parameters, request body, responses and
/// security, rendered from the same document.
pub async fn docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>SafeGrid 接口文档</title>
<style>
body{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.6em}.op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.4em .8em}
.m{display:inline-block;min-width:4.5em;font-weight:bold}.get{color:#1a7f37}.post{color:#0969da}
.put{color:#9a6700}.delete{color:#cf222e}code,pre{background:#f6f8fa;border-radius:4px}
pre{padding:.5em;overflow:auto;max-height:20em}summary{cursor:pointer}
</style></head><body>
<h1>SafeGrid 接口文档</h1><p id="about"></p><div id="ops">正在加载 /openapi.json…</div>
<script>
fetch('openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('about').textContent=(doc.info&&doc.info.description)||'';
  const ops=document.getElementById('ops');ops.textContent='';
  const esc=s=>String(s).replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  for(const [path,item] of Object.entries(doc.paths||{}).sort()){
    for(const [method,op] of Object.entries(item)){
      const d=document.createElement('details');d.className='op';
      const params=(op.parameters||[]).map(p=>'<li><code>'+esc(p.name)+'</code> ('+esc(p.in)+(p.required?'，必填':'')+') '+esc(p.description||'')+'</li>').join('');
      const responses=Object.entries(op.responses||{}).map(([c,r])=>'<li><b>'+esc(c)+'</b> '+esc(r.description||'')+'</li>').join('');
      d.innerHTML='<summary><span class="m '+method+'">'+method.toUpperCase()+'</span> <code>'+esc(path)+'</code> '+esc(op.summary||op.description||'')+'</summary>'
        +(params?'<h4>参数</h4><ul>'+params+'</ul>':'')
        +(op.requestBody?'<h4>请求体</h4><pre>'+esc(JSON.stringify(op.requestBody,null,2))+'</pre>':'')
        +'<h4>响应</h4><ul>'+responses+'</ul>'
        +(op.security?'<p>需要 Bearer 令牌（Authorization: Bearer …）。</p>':'');
      ops.appendChild(d);
    }
  }
  const s=document.createElement('details');s.innerHTML='<summary>数据结构（Schemas）</summary><pre>'+esc(JSON.stringify((doc.components||{}).schemas||{},null,2))+'</pre>';
  ops.appendChild(s);
});
</script></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_page_renders_the_served_document() {
        assert!(DOCS_PAGE.contains("fetch('openapi.json')"));
        assert!(!DOCS_PAGE.contains("https://"), "no external assets");
    }

    #[test]
    fn the_docs_page_labels_are_chinese() {
        for label in [
            "SafeGrid 接口文档",
            "参数",
            "请求体",
            "响应",
            "需要 Bearer 令牌",
            "数据结构",
        ] {
            assert!(DOCS_PAGE.contains(label), "{label}");
        }
        for english in [
            "Loading",
            "<h4>Parameters",
            "<h4>Responses",
            "Needs a bearer token",
        ] {
            assert!(!DOCS_PAGE.contains(english), "{english}");
        }
    }

    /// The routes that also answer a workbook say so: a `format` parameter naming `xlsx`,
    /// and the spreadsheet type beside JSON (or NDJSON) in their 200 answer.
    #[test]
    fn the_workbook_routes_document_their_format_and_type() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        for (path, own) in [
            ("/v1/audit/export", "application/x-ndjson"),
            ("/v1/audit/residents/{resident}/report", "application/json"),
            ("/v1/ingest/{department}/rejects", "application/json"),
        ] {
            let get = &doc["paths"][path]["get"];
            let format = get["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "format"))
                .unwrap_or_else(|| panic!("{path}: no format parameter"));
            assert_eq!(format["in"], "query", "{path}");
            let described = format["description"].as_str().unwrap_or_default();
            assert!(described.contains("xlsx"), "{path}: {described}");
            let content = &get["responses"]["200"]["content"];
            assert!(content[own].is_object(), "{path}: {content}");
            assert!(
                content[super::super::xlsx::CONTENT_TYPE].is_object(),
                "{path}: {content}"
            );
        }
    }

    #[test]
    fn the_router_and_the_document_list_the_same_routes() {
        use std::collections::BTreeSet;
        let doc = ApiDoc::openapi();
        let documented: BTreeSet<(String, String)> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let mut methods = Vec::new();
                for (method, operation) in [
                    ("get", &item.get),
                    ("post", &item.post),
                    ("put", &item.put),
                    ("delete", &item.delete),
                    ("patch", &item.patch),
                ] {
                    if operation.is_some() {
                        methods.push((method.to_owned(), path.clone()));
                    }
                }
                methods
            })
            .collect();
        // The document and the page that renders it are not part of the API they describe.
        let undocumented = [("get", "/openapi.json"), ("get", "/docs")];
        let served: BTreeSet<(String, String)> = super::super::routes()
            .table()
            .iter()
            .filter(|route| !undocumented.contains(route))
            .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        assert!(served.len() >= 30, "the table holds the routes: {served:?}");
        let missing: Vec<_> = served.difference(&documented).collect();
        assert!(missing.is_empty(), "served but not documented: {missing:?}");
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
    }
}
