#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{build, ConnectorConfig, NdjsonSink};

const TOKEN: &str = "s3cret-token";

#[derive(Default)]
struct Server {
    requests: AtomicUsize,
    failures_left: AtomicUsize,
    unauthorized: AtomicUsize,
    /// Redirects answered (by `/api/hop/{n}` and `/api/elsewhere`).
    redirects: AtomicUsize,
    /// Where `/api/elsewhere` redirects to (an absolute URL without query).
    redirect_to: Mutex<String>,
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

fn redirect(server: &Server, location: String) -> Response {
    server.redirects.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// `/api/hop/{n}`: `n` more redirects (relative, same origin) before the listing.
async fn hop(
    State(server): State<Arc<Server>>,
    Path(n): Path<u32>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let next = match n.checked_sub(1) {
        None => format!("/api/residents{query}"),
        Some(left) => format!("/api/hop/{left}{query}"),
    };
    redirect(&server, next)
}

/// `/api/elsewhere`: one redirect to `redirect_to`, keeping the query.
async fn elsewhere(State(server): State<Arc<Server>>, RawQuery(query): RawQuery) -> Response {
    let target = server.redirect_to.lock().unwrap().clone();
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    redirect(&server, format!("{target}{query}"))
}

/// Starts the test API on `bind` (a loopback address); returns its origin, `http://ip:port`.
async fn spawn_at(bind: &str, server: Arc<Server>) -> String {
    let app = Router::new()
        .route("/api/residents", get(residents))
        .route("/api/hop/{n}", get(hop))
        .route("/api/elsewhere", get(elsewhere))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

async fn spawn(server: Arc<Server>) -> String {
    format!("{}/api/residents", spawn_at("127.0.0.1:0", server).await)
}

fn config(url: &str, token_env: &str, max_attempts: u32) -> ConnectorConfig {
    config_with(url, token_env, max_attempts, "")
}

/// [`config`] with more `[source]` keys.
fn config_with(
    url: &str,
    token_env: &str,
    max_attempts: u32,
    extra_source: &str,
) -> ConnectorConfig {
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
{extra_source}

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

/// The four records of the listing, as the cursor test expects them.
const LISTING: [&str; 4] = ["MZAPI-R1", "MZAPI-R2", "MZAPI-R3", "MZAPI-R5"];

#[tokio::test]
async fn redirects_within_the_configured_origin_are_followed_up_to_five() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_D", TOKEN);
    let server = Arc::new(Server::default());
    let origin = spawn_at("127.0.0.1:0", server.clone()).await;
    let state = tempfile::tempdir().unwrap();

    // Five redirects per page (hop/4 -> … -> hop/0 -> residents), auth header kept.
    let url = format!("{origin}/api/hop/4");
    let mut connector =
        build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_D", 3), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), LISTING);
    assert_eq!(report.pages, 3);
    assert_eq!(server.redirects.load(Ordering::SeqCst), 15);
    assert_eq!(server.unauthorized.load(Ordering::SeqCst), 0);

    // A sixth redirect is refused, at once (no retry), before the listing is reached.
    let requests_before = server.requests.load(Ordering::SeqCst);
    let redirects_before = server.redirects.load(Ordering::SeqCst);
    let url = format!("{origin}/api/hop/5");
    let mut connector =
        build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_D", 3), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let err = connector.run(&mut sink).await.unwrap_err();
    assert_eq!(err.code(), "redirect_refused", "{err}");
    assert!(err.to_string().contains("more than 5"), "{err}");
    assert!(err.to_string().contains("source.url"), "{err}");
    assert!(sink.records.is_empty());
    assert_eq!(server.requests.load(Ordering::SeqCst), requests_before);
    assert_eq!(
        server.redirects.load(Ordering::SeqCst),
        redirects_before + 6
    );
}

#[tokio::test]
async fn redirects_to_another_host_or_port_are_refused_before_any_request_reaches_them() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_E", TOKEN);
    let server = Arc::new(Server::default());
    let origin = spawn_at("127.0.0.1:0", server.clone()).await;
    // Two more copies of the API, both on loopback: another host, and another port.
    let other_host_server = Arc::new(Server::default());
    let other_host = spawn_at("127.0.0.2:0", other_host_server.clone()).await;
    let other_port_server = Arc::new(Server::default());
    let other_port = spawn_at("127.0.0.1:0", other_port_server.clone()).await;
    let port = Url::parse(&origin).unwrap().port().unwrap();
    // The same server under another host name is another origin too.
    let other_name = format!("http://localhost:{port}");
    let state = tempfile::tempdir().unwrap();
    let url = format!("{origin}/api/elsewhere");

    for target in [&other_host, &other_port, &other_name] {
        *server.redirect_to.lock().unwrap() = format!("{target}/api/residents");
        let redirects_before = server.redirects.load(Ordering::SeqCst);
        let mut connector =
            build(&config(&url, "SAFEGRID_TEST_REST_TOKEN_E", 3), state.path()).unwrap();
        let mut sink = NdjsonSink::new();
        let err = connector.run(&mut sink).await.unwrap_err();
        let message = err.to_string();
        assert_eq!(err.code(), "redirect_refused", "{target}: {message}");
        assert!(message.contains(target.as_str()), "{message}");
        assert!(message.contains("source.url"), "{message}");
        assert!(
            !message.contains(TOKEN) && !message.contains("dept=mz"),
            "{message}"
        );
        assert!(sink.records.is_empty());
        assert_eq!(
            server.redirects.load(Ordering::SeqCst),
            redirects_before + 1,
            "not retried"
        );
    }
    for copy in [&server, &other_host_server, &other_port_server] {
        assert_eq!(
            copy.requests.load(Ordering::SeqCst),
            0,
            "no listing reached"
        );
    }
}

#[test]
fn redirect_rule_keeps_scheme_host_and_port() {
    use super::check_redirect;

    let url = |s: &str| Url::parse(s).unwrap();
    let base = url("https://api.dept.example/v2/events?dept=mz");
    assert!(check_redirect(&base, &url("https://api.dept.example/v3/events"), 1).is_ok());
    assert!(check_redirect(&base, &url("https://API.dept.example:443/x"), 1).is_ok());
    assert!(check_redirect(&base, &url("https://api.dept.example/x"), 5).is_ok());

    let refused = |next: &str, hop: usize| check_redirect(&base, &url(next), hop).unwrap_err().0;
    let downgrade = refused("http://api.dept.example/v2/events?token=abc", 1);
    assert!(
        downgrade.contains("https to http://api.dept.example"),
        "{downgrade}"
    );
    assert!(
        !downgrade.contains("token=abc") && !downgrade.contains("/v2"),
        "{downgrade}"
    );
    for next in [
        "https://api.dept.example:8443/x",
        "https://attacker.example/x",
        "https://api.dept.example.attacker.example/x",
        "https://user@attacker.example/x",
    ] {
        assert!(
            refused(next, 1).contains("https://api.dept.example"),
            "{next}"
        );
    }
    assert!(refused("https://api.dept.example/x", 6).contains("more than 5"));
    assert!(refused("file:///etc/shadow", 1).contains("a file: address"));
    // From http, https on the same host is another origin (and port) too.
    let plain = url("http://10.0.0.5:8080/api");
    assert!(check_redirect(&plain, &url("http://10.0.0.5:8080/other"), 1).is_ok());
    assert!(check_redirect(&plain, &url("https://10.0.0.5:8080/api"), 1).is_err());
}

/// Bytes the flooding server offers: far more than socket buffers hold.
const OFFERED: usize = 64 * 1024 * 1024;

/// A raw HTTP server on loopback that answers one request with an endless-looking body
/// (declared with Content-Length, or chunked), and reports how many body bytes it managed to
/// send before the client hung up.
async fn spawn_flood(chunked: bool) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {OFFERED}")
        };
        let response_head =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
        if stream.write_all(response_head.as_bytes()).await.is_err() {
            return 0;
        }
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < OFFERED {
            let written = if chunked {
                let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
                frame.extend_from_slice(&piece);
                frame.extend_from_slice(b"\r\n");
                stream.write_all(&frame).await
            } else {
                stream.write_all(&piece).await
            };
            if written.is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    });
    (format!("http://{addr}/api/residents"), sent)
}

#[tokio::test]
async fn a_response_larger_than_max_response_bytes_is_refused_without_reading_it_all() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    std::env::set_var("SAFEGRID_TEST_REST_TOKEN_F", TOKEN);
    let state = tempfile::tempdir().unwrap();
    let cap = "max_response_bytes = 100000";

    for chunked in [false, true] {
        let (url, sent) = spawn_flood(chunked).await;
        let mut connector = build(
            &config_with(&url, "SAFEGRID_TEST_REST_TOKEN_F", 3, cap),
            state.path(),
        )
        .unwrap();
        let mut sink = NdjsonSink::new();
        let err = tokio::time::timeout(Duration::from_secs(30), connector.run(&mut sink))
            .await
            .expect("the run stops at the cap")
            .unwrap_err();
        assert_eq!(
            err.code(),
            "response_too_large",
            "chunked = {chunked}: {err}"
        );
        assert!(
            err.to_string().contains("max_response_bytes = 100000"),
            "{err}"
        );
        assert!(sink.records.is_empty());
        let sent = tokio::time::timeout(Duration::from_secs(30), sent)
            .await
            .expect("the client hung up")
            .unwrap();
        assert!(
            sent < OFFERED,
            "chunked = {chunked}: the whole body was read ({sent} bytes)"
        );
    }

    // A cap the real pages fit under changes nothing; a cap of 0 is a configuration error.
    let server = Arc::new(Server::default());
    let url = spawn(server.clone()).await;
    let mut connector = build(
        &config_with(
            &url,
            "SAFEGRID_TEST_REST_TOKEN_F",
            3,
            "max_response_bytes = 4096",
        ),
        state.path(),
    )
    .unwrap();
    let mut sink = NdjsonSink::new();
    connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), LISTING);
    let zero = config_with(
        &url,
        "SAFEGRID_TEST_REST_TOKEN_F",
        3,
        "max_response_bytes = 0",
    );
    let Err(err) = build(&zero, state.path()) else {
        panic!("max_response_bytes = 0 must be refused");
    };
    assert_eq!(err.code(), "connector_config");
}
