//! An HTTPS client for talking to a broker (the demo's publishers, tests, `connector run`):
//! rustls with the ring provider, trusting exactly the given certificate(s).
//!
//! Guarantees: the client verifies the server certificate against the given roots only; it
//! never disables verification.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

/// A client that trusts the PEM certificate(s) in `ca_file`.
pub fn https_client(ca_file: &Path) -> anyhow::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::load_certs(ca_file)? {
        roots.add(cert).context("adding a trusted certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .pool_max_idle_per_host(8)
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .context("building the HTTPS client")
}

/// Most times [`send_retrying`] sends one request.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest wait between two attempts, whatever the broker's `Retry-After` says.
pub const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `request`, and sends it again while the broker answers 429 (the principal's rate
/// limit) or 503 (the store or the audit log unavailable for a moment), after the seconds its
/// `Retry-After` says (1 s without one; at most [`MAX_RETRY_WAIT`]), at most [`MAX_ATTEMPTS`]
/// times in all. Returns the last response, whatever its status; a request whose body
/// cannot be sent twice (a stream) is sent once.
pub async fn send_retrying(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    send_retrying_within(request, MAX_ATTEMPTS, MAX_RETRY_WAIT).await
}

async fn send_retrying_within(
    request: reqwest::RequestBuilder,
    max_attempts: u32,
    max_wait: std::time::Duration,
) -> reqwest::Result<reqwest::Response> {
    let mut attempt = 1;
    loop {
        let Some(again) = request.try_clone() else {
            return request.send().await;
        };
        let response = again.send().await?;
        let status = response.status();
        let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        if !busy || attempt >= max_attempts {
            return Ok(response);
        }
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(std::time::Duration::from_secs(1), |s| {
                std::time::Duration::from_secs(s.max(1))
            })
            .min(max_wait);
        tracing::info!(
            status = status.as_u16(),
            attempt,
            wait_seconds = wait.as_secs(),
            "the broker asked to retry later"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn client() -> reqwest::Client {
        crate::tls::install_crypto_provider();
        reqwest::Client::new()
    }

    /// A real HTTP server on loopback that answers `busy` (with `retry_after`, if any) to the
    /// first `refusals` requests and 200 with the request's body after; counts requests.
    async fn server(
        refusals: u32,
        busy: u16,
        retry_after: Option<&'static str>,
    ) -> (String, Arc<AtomicU32>) {
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: String| {
                let seen = seen.clone();
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let mut response = axum::response::Response::builder();
                    if n < refusals {
                        response = response.status(busy);
                        if let Some(wait) = retry_after {
                            response = response.header("retry-after", wait);
                        }
                        response.body(axum::body::Body::empty()).unwrap()
                    } else {
                        response
                            .status(200)
                            .body(axum::body::Body::from(body))
                            .unwrap()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, count)
    }

    #[tokio::test]
    async fn a_rate_limited_request_is_sent_again_after_retry_after_with_its_body() {
        let (url, count) = server(2, 429, Some("1")).await;
        let started = std::time::Instant::now();
        let response = send_retrying(client().post(&url).body("batch-1"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "batch-1");
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_unavailable_store_is_retried_and_other_refusals_are_not() {
        let (url, count) = server(1, 503, None).await;
        let response = send_retrying(client().post(&url).body("x")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        let (url, count) = server(5, 400, Some("1")).await;
        let response = send_retrying(client().post(&url).body("x")).await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_broker_that_stays_busy_gets_at_most_max_attempts_and_a_hostile_wait_is_capped() {
        // A Retry-After of a day is waited for the cap (here 20 ms), not a day.
        let (url, count) = server(u32::MAX, 429, Some("86400")).await;
        let started = std::time::Instant::now();
        let request = client().post(&url).body("x");
        let response =
            send_retrying_within(request, MAX_ATTEMPTS, std::time::Duration::from_millis(20))
                .await
                .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(count.load(Ordering::SeqCst), MAX_ATTEMPTS);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
