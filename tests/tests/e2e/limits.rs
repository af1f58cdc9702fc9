//! Limits that keep one client from holding the broker, against a real broker over TLS:
//! half a request, idle sockets, more connections than allowed, too many requests from one
//! principal, a body that never finishes. Each refusal is counted in `/metrics` and the
//! broker keeps serving everyone else.

use std::time::{Duration, Instant};

use broker::config::{Config, LimitsSection};
use e2e_tests::{TestApp, GRID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn addr(app: &TestApp) -> std::net::SocketAddr {
    app.broker.as_ref().expect("running").addr
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn half_requests_and_idle_sockets_are_closed_and_the_broker_keeps_serving() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            header_read_seconds: 1,
            idle_seconds: 2,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    // A plain TCP socket that never starts TLS: closed by the handshake timeout (10 s) at
    // the latest; one that sends nothing after TLS: closed when idle. Here: a raw socket
    // that completes nothing.
    let mut silent = TcpStream::connect(addr(&app)).await.expect("connect");
    // A TLS client that sends half a request's headers and stops.
    let tls = rustls_client(&app);
    let mut half = tls_connect(&app, &tls).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    half.flush().await.expect("flush");
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let outcome = tokio::time::timeout(Duration::from_secs(8), half.read(&mut buf)).await;
    match outcome {
        // Closed (EOF), or answered 408 then closed: either way not held.
        Ok(Ok(n)) => assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Ok(Err(_)) => {}
        Err(_) => panic!("half a request held the connection for 8 s"),
    }
    assert!(started.elapsed() < Duration::from_secs(8));

    // An idle keep-alive connection after one full request is closed too.
    let mut idle = tls_connect(&app, &tls).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let n = idle.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(
        closed_within(&mut silent, Duration::from_secs(12)).await,
        "a silent socket stayed open"
    );

    // Everyone else was served all along.
    let (status, _) = app.get("/healthz", "", None).await;
    assert_eq!(status, 200);
    let (_, _, metrics) = app.metrics_text().await;
    let closed = |reason: &str| {
        sample(
            &metrics,
            &format!("safegrid_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    // Half a request and the idle keep-alive: closed by the header-read timeout (which
    // hyper applies while waiting for the next request too) or the idle watchdog.
    assert!(
        closed("header_timeout") + closed("idle") >= 2.0,
        "{metrics}"
    );
    assert!(closed("handshake_timeout") >= 1.0, "{metrics}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            max_connections: 8,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr(&app)).await.expect("connect"));
    }
    // Give the accept loop a moment to take all eight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr(&app)).await.expect("connect");
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)).await,
        "the ninth connection was kept"
    );
    // Freeing the held sockets frees their slots.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = app.get("/healthz", "", None).await;
    assert_eq!(status, 200);
    let (_, _, metrics) = app.metrics_text().await;
    assert!(
        sample(
            &metrics,
            "safegrid_connections_closed_total{reason=\"over_limit\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn one_principal_past_its_rate_gets_429_and_others_do_not() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            rate_per_second: 2,
            rate_burst: 5,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    let greedy = app.token("grid_worker", &[GRID], None);
    let mut limited = None;
    for _ in 0..20 {
        let response = app
            .client
            .get(format!("{}/v1/whoami", app.url))
            .bearer_auth(&greedy)
            .send()
            .await
            .expect("sent");
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("20 requests at once pass a burst of 5");
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another principal is not slowed down by the first.
    let other = app
        .signer
        .sign(&broker::auth::TokenRequest {
            sub: "someone-else".into(),
            name: None,
            roles: vec!["grid_worker".into()],
            jurisdiction: vec![GRID.into()],
            dept: None,
            ttl: Duration::from_secs(600),
        })
        .expect("token");
    let (status, _) = app.get("/v1/whoami", &other, None).await;
    assert_eq!(status, 200);
    // The refusals are on the record, folded: one record (or two across a minute boundary).
    let (status, page) = app
        .get(
            "/v1/audit/records?actor=test-grid_worker&decision=deny",
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let limited: Vec<&serde_json::Value> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| {
            r["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("rate_limited"))
        })
        .collect();
    assert!((1..=2).contains(&limited.len()), "{page}");
    // After the wait, the same principal is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _) = app.get("/v1/whoami", &greedy, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_that_never_finishes_is_refused_in_time() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            body_read_seconds: 1,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    let token = app.publisher("gongan");
    let tls = rustls_client(&app);
    let mut stream = tls_connect(&app, &tls).await;
    let head = format!(
        "POST /v1/ingest/gongan HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{{\"kind\":"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf))
        .await
        .expect("answered within 8 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
}

/// A TLS connection to the test broker.
async fn tls_connect(
    app: &TestApp,
    tls: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr(app)).await.expect("connect");
    tls.connect(
        rustls::pki_types::ServerName::try_from("localhost").expect("name"),
        tcp,
    )
    .await
    .expect("TLS handshake")
}

/// A TLS client that trusts the test broker's own certificate.
fn rustls_client(app: &TestApp) -> tokio_rustls::TlsConnector {
    let cert = app
        .broker
        .as_ref()
        .and_then(|b| b.dev_certificate.clone())
        .expect("dev certificate");
    let mut roots = rustls::RootCertStore::empty();
    for der in broker::tls::load_certs(&cert).expect("read certificate") {
        roots.add(der).expect("add root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn the_idle_watchdog_closes_what_the_header_timeout_would_keep() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            header_read_seconds: 60,
            idle_seconds: 1,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    let tls = rustls_client(&app);
    let mut stream = tls_connect(&app, &tls).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let mut buf = [0u8; 256];
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open after {:?}",
        started.elapsed()
    );
    let (_, _, metrics) = app.metrics_text().await;
    assert!(
        sample(
            &metrics,
            "safegrid_connections_closed_total{reason=\"idle\"}"
        ) >= 1.0,
        "{metrics}"
    );
}
