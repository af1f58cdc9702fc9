#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{build, ConnectorConfig, NdjsonSink};

const TOKEN: &str = "s3cret-token";

#[derive(Default)]
struct Server {
    requests: AtomicUsize,
    failures_left: AtomicUsize,
    unauthorized: AtomicUsize,
}

fn resident(id: &str, id_number: &str, name: &str, sex: &str) -> Value {
    json!({"id": id, "idCard": id_number, "fullName": name, "sex": sex,
        "updatedAt": "2026-11-01T08:00:00+08:00", "contact": {"phone": "13812345678"}})
}

async fn residents(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    server.requests.fetch_add(1, Ordering::SeqCst);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        server.unauthorized.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(params.get("dept").map(String::as_str), Some("mz"));
    let body = match params.get("cursor").map(String::as_str) {
        None => json!({"data": {"items": [
            resident("R1", "11010519491231002X", "张三", "2"),
            resident("R2", "110105198001010016", "王五", "1"),
        ], "next_cursor": "c2"}}),
        Some("c2") => {
            // The second page fails once, as a busy server does.
            if server
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            json!({"data": {"items": [
                resident("R3", "110105198001010024", "赵六", "2"),
                resident("R4", "110105197511030514", "钱七", "7"),
            ], "next_cursor": "c3"}})
        }
        Some("c3") => json!({"data": {"items": [
            resident("R5", "11010519900215063X", "孙八", "2"),
        ], "next_cursor": null}}),
        Some(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    Json(body).into_response()
}

async fn spawn(server: Arc<Server>) -> String {
    let app = Router::new()
        .route("/api/residents", get(residents))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/api/residents")
}

fn config(url: &str, token_env: &str, max_attempts: u32) -> ConnectorConfig {
    ConnectorConfig::from_toml(&format!(
        r#"
department = "minzheng"
name = "mz-api"

[source]
type = "rest"
url = "{url}"
query = {{ dept = "mz" }}
items_path = "data.items"
paging = "cursor"
cursor_param = "cursor"
next_cursor_path = "data.next_cursor"
header_name = "Authorization"
header_value_env = "{token_env}"
header_value_prefix = "Bearer "
timeout_seconds = 5
max_attempts = {max_attempts}
retry_initial_ms = 10

[mapping]
kind = "resident"
source_id = {{ template = "MZAPI-{{id}}" }}
version = {{ column = "updatedAt" }}

[mapping.fields]
id_number = "idCard"
name = "fullName"
gender = "sex"
phone = "contact.phone"

[mapping.codes]
gender = "gb2261_gender"

[mapping.constants]
grid = "110105001001003"
"#
    ))
    .unwrap()
}

#[tokio::test]
async fn pages_through_a_cursor_listing_with_auth_and_one_retry() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_A", TOKEN);
    let server = Arc::new(Server::default());
    server.failures_left.store(1, Ordering::SeqCst);
    let url = spawn(server.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let mut connector =
        build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_A", 3), state.path()).unwrap();

    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();

    assert_eq!(
        sink.source_ids(),
        vec!["MZAPI-R1", "MZAPI-R2", "MZAPI-R3", "MZAPI-R5"]
    );
    for (_, record) in &sink.records {
        model::Record::from_value(record).unwrap();
        assert_eq!(record["phone"], "13812345678");
        assert_eq!(record["version"], "2026-11-01T08:00:00+08:00");
    }
    assert_eq!(sink.failures.len(), 1);
    let failure = &sink.failures[0];
    assert_eq!(
        (failure.code.as_str(), failure.field.as_str(), failure.line),
        ("mapping_unknown_code", "gender", 2)
    );
    assert_eq!(failure.source_file, "rest:/api/residents#2");
    assert_eq!(failure.source_id.as_deref(), Some("MZAPI-R4"));
    assert_eq!(report.pages, 3);
    assert_eq!(report.retries, 1);
    assert_eq!(report.batches, 3);
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    assert_eq!(server.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_token_and_persistent_failures_stop_the_run() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_B", "wrong");
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_C", TOKEN);
    let server = Arc::new(Server::default());
    let url = spawn(server.clone()).await;
    let state = tempfile::tempdir().unwrap();

    let mut connector =
        build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_B", 3), state.path()).unwrap();
    let err = connector.run(&mut NdjsonSink::new()).await.unwrap_err();
    assert_eq!(err.code(), "rest_source");
    assert!(err.to_string().contains("401"));
    assert!(!err.to_string().contains("wrong"));
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "401 is not retried"
    );

    let mut missing = build(
        &config(&url, "SAFEGRID_TEST_REST_TOKEN_UNSET", 3),
        state.path(),
    )
    .unwrap();
    let err = missing.run(&mut NdjsonSink::new()).await.unwrap_err();
    assert_eq!(err.code(), "connector_config");

    server.failures_left.store(10, Ordering::SeqCst);
    let mut connector =
        build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_C", 2), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let err = connector.run(&mut sink).await.unwrap_err();
    assert!(err.to_string().contains("2 attempts"), "{err}");
    assert_eq!(
        sink.records.len(),
        2,
        "the first page was delivered before the failure"
    );
}
