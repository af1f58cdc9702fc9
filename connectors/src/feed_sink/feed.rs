//! Where a sink's changes come from: the [`FeedSource`] trait, and [`HttpFeed`], the broker's
//! `GET /v1/subscriptions/{id}/feed` over HTTPS.
//!
//! Guarantees:
//! - The token is sent as a sensitive `Authorization` header and never printed; errors carry
//!   neither the token nor the broker's URL.
//! - The token is sent over HTTPS only; plain `http://` is accepted for a loopback broker
//!   (a test, or a broker on the same machine) and refused for any other host.
//! - A busy or unreachable broker (HTTP 429, 502, 503, 504, a connection error or timeout) is
//!   retried at most `max_attempts` times per request, honouring `Retry-After`; a
//!   `Retry-After` longer than `max_retry_wait_seconds` stops the run instead of being cut
//!   short. Any other answer stops the run with an error naming the HTTP status and the
//!   broker's error code.
//! - No more than [`MAX_PAGE_BYTES`] of one answer are held in memory.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;

use super::{FeedPage, FeedSink};
use crate::config::Secret;
use crate::connector::BoxFuture;
use crate::ConnectorError;

/// Largest answer to one feed request: 1000 profiles fit many times over.
pub const MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest error answer read for its code.
const MAX_ERROR_BYTES: u64 = 64 * 1024;
/// Wait before the first retry when the broker gives no `Retry-After`; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The changes of one subscription, page by page.
pub trait FeedSource: Send {
    /// At most `limit` changes after `after` (`None`: from where the subscription started), in
    /// commit order, and the `next` to ask after.
    fn page(
        &mut self,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<FeedPage, ConnectorError>>;

    /// Requests retried so far (the broker was busy or unreachable).
    fn retries(&self) -> usize {
        0
    }
}

/// The broker's feed of one subscription.
#[derive(Debug)]
pub struct HttpFeed {
    client: reqwest::Client,
    /// `{broker}/v1/subscriptions/{id}/feed`, without a query.
    feed_url: Url,
    subscription: String,
    auth: HeaderValue,
    timeout: Duration,
    max_attempts: u32,
    max_retry_wait: Duration,
    retries: usize,
}

/// What one failed attempt means.
enum Attempt {
    Retry {
        retry_after: Option<Duration>,
        why: String,
    },
    Fail(ConnectorError),
}

/// The broker's error body: `{"error":{"code","message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

impl HttpFeed {
    /// The feed of `sink`'s subscription at `broker_url`, read with `token` over `client`
    /// (built by the caller: it knows which CA, and which client certificate, if any).
    pub fn new(
        client: reqwest::Client,
        broker_url: &str,
        token: &Secret,
        sink: &FeedSink,
    ) -> Result<HttpFeed, ConnectorError> {
        let base = Url::parse(broker_url.trim())
            .map_err(|_| ConnectorError::Config("the broker URL is not a valid URL".to_owned()))?;
        let loopback = base.host_str().is_some_and(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match base.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ConnectorError::Config(
                    "the broker URL must be https:// (plain http:// only to a loopback address): \
                     the token must not travel in clear"
                        .to_owned(),
                ))
            }
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ConnectorError::Config(
                "the broker URL must not carry credentials; the token is given separately"
                    .to_owned(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ConnectorError::Config(
                "the broker URL must be the broker's base URL, without a query".to_owned(),
            ));
        }
        let mut feed_url = base;
        feed_url
            .path_segments_mut()
            .map_err(|_| ConnectorError::Config("the broker URL cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend(["v1", "subscriptions", sink.subscription(), "feed"]);
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose().trim()))
            .map_err(|_| {
                ConnectorError::Config("the token cannot be sent in an HTTP header".to_owned())
            })?;
        auth.set_sensitive(true);
        Ok(HttpFeed {
            client,
            feed_url,
            subscription: sink.subscription().to_owned(),
            auth,
            timeout: sink.timeout,
            max_attempts: sink.max_attempts,
            max_retry_wait: sink.max_retry_wait,
            retries: 0,
        })
    }

    fn page_url(&self, after: Option<u64>, limit: u32) -> Url {
        let mut url = self.feed_url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(after) = after {
                query.append_pair("after", &after.to_string());
            }
            query.append_pair("limit", &limit.to_string());
        }
        url
    }

    async fn attempt(&self, url: &Url) -> Result<FeedPage, Attempt> {
        let sent = self
            .client
            .get(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) if err.is_timeout() || err.is_connect() || err.is_request() => {
                return Err(Attempt::Retry {
                    retry_after: None,
                    why: format!("the broker did not answer: {}", err.without_url()),
                })
            }
            Err(err) => {
                return Err(Attempt::Fail(ConnectorError::Rest(format!(
                    "the broker's feed: {}",
                    err.without_url()
                ))))
            }
        };
        let status = response.status();
        if status == StatusCode::OK {
            let body = read_capped(&mut response, MAX_PAGE_BYTES)
                .await
                .map_err(|e| match e {
                    ReadFailure::TooLarge => Attempt::Fail(ConnectorError::Rest(format!(
                        "a feed page is larger than {MAX_PAGE_BYTES} bytes; lower sink.page_size"
                    ))),
                    ReadFailure::Interrupted(why) => Attempt::Retry {
                        retry_after: None,
                        why,
                    },
                })?;
            // serde's message could quote a value of the answer: only its position is kept.
            return serde_json::from_slice::<FeedPage>(&body).map_err(|e| {
                Attempt::Fail(ConnectorError::Rest(format!(
                    "the broker's feed answered something that is not a feed page \
                     ({{\"items\":[…],\"next\":…}}): {:?} error at line {}, column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )))
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let code = error_code(&mut response).await;
        let what = match &code {
            Some((code, _)) => format!("HTTP {status} (`{code}`)"),
            None => format!("HTTP {status}"),
        };
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        ) {
            return Err(Attempt::Retry {
                retry_after,
                why: what,
            });
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                "; check the token: a valid dept_subscriber token of the department".to_owned()
            }
            StatusCode::FORBIDDEN => {
                "; the token's roles or department may not read this subscription".to_owned()
            }
            StatusCode::NOT_FOUND => format!(
                "; no subscription `{}` for this token's department (check sink.subscription)",
                self.subscription
            ),
            _ => String::new(),
        };
        let message = match &code {
            Some((_, message)) if !message.is_empty() => format!(": {message}"),
            _ => String::new(),
        };
        Err(Attempt::Fail(ConnectorError::Rest(format!(
            "the broker's feed answered {what}{message}{hint}"
        ))))
    }

    async fn fetch(&mut self, after: Option<u64>, limit: u32) -> Result<FeedPage, ConnectorError> {
        let url = self.page_url(after, limit);
        let mut attempt = 1;
        loop {
            let (retry_after, why) = match self.attempt(&url).await {
                Ok(page) => return Ok(page),
                Err(Attempt::Fail(err)) => return Err(err),
                Err(Attempt::Retry { retry_after, why }) => (retry_after, why),
            };
            if attempt >= self.max_attempts {
                return Err(ConnectorError::Rest(format!(
                    "the broker's feed: giving up after {attempt} attempts: {why}"
                )));
            }
            let wait = match retry_after {
                Some(wait) if wait > self.max_retry_wait => {
                    return Err(ConnectorError::Rest(format!(
                        "the broker's feed answered {why} and asked to retry after {} s, longer \
                         than sink.max_retry_wait_seconds = {}: run again later",
                        wait.as_secs(),
                        self.max_retry_wait.as_secs()
                    )))
                }
                Some(wait) => wait,
                None => FIRST_BACKOFF
                    .saturating_mul(1u32 << (attempt - 1).min(16))
                    .min(self.max_retry_wait),
            };
            tracing::warn!(
                subscription = %self.subscription,
                attempt,
                reason = %why,
                wait_ms = wait.as_millis() as u64,
                "retrying the feed request"
            );
            tokio::time::sleep(wait).await;
            self.retries += 1;
            attempt += 1;
        }
    }
}

impl FeedSource for HttpFeed {
    fn page(
        &mut self,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<FeedPage, ConnectorError>> {
        Box::pin(self.fetch(after, limit))
    }

    fn retries(&self) -> usize {
        self.retries
    }
}

/// The broker's error code and message, when the answer is a SafeGrid error body.
async fn error_code(response: &mut Response) -> Option<(String, String)> {
    let body = read_capped(response, MAX_ERROR_BYTES).await.ok()?;
    let parsed: ErrorBody = serde_json::from_slice(&body).ok()?;
    let printable = |text: String, max: usize| -> String {
        text.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    Some((
        printable(parsed.error.code, 64),
        printable(parsed.error.message, 500),
    ))
}

enum ReadFailure {
    TooLarge,
    Interrupted(String),
}

/// Reads a body, stopping at `limit` bytes ([`crate::body::read_capped`]).
async fn read_capped(response: &mut Response, limit: u64) -> Result<Vec<u8>, ReadFailure> {
    crate::body::read_capped(response, limit)
        .await
        .map_err(|err| match err {
            crate::body::BodyError::TooLarge => ReadFailure::TooLarge,
            crate::body::BodyError::TimedOut => {
                ReadFailure::Interrupted("the answer broke off: timed out".to_owned())
            }
            crate::body::BodyError::Broken(why) => {
                ReadFailure::Interrupted(format!("the answer broke off: {why}"))
            }
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::FeedSinkConfig;

    const TOKEN: &str = "sub-t0ken-never-printed";

    /// What the fake broker answers, in order; the last one repeats.
    #[derive(Default)]
    struct Broker {
        answers: Mutex<Vec<(u16, Option<&'static str>, Value)>>,
        requests: AtomicUsize,
        queries: Mutex<Vec<(String, String, String)>>,
    }

    async fn feed(
        State(broker): State<Arc<Broker>>,
        Path(id): Path<String>,
        headers: HeaderMap,
        Query(query): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        broker.requests.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            headers.get("authorization").unwrap(),
            &format!("Bearer {TOKEN}")
        );
        broker.queries.lock().unwrap().push((
            id,
            query.get("after").cloned().unwrap_or_default(),
            query.get("limit").cloned().unwrap_or_default(),
        ));
        let (status, retry_after, body) = {
            let mut answers = broker.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        };
        let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
        }
        response
    }

    async fn serve(answers: Vec<(u16, Option<&'static str>, Value)>) -> (String, Arc<Broker>) {
        let broker = Arc::new(Broker {
            answers: Mutex::new(answers),
            ..Broker::default()
        });
        let app = Router::new()
            .route("/base/v1/subscriptions/{id}/feed", get(feed))
            .with_state(broker.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/base/"), broker)
    }

    fn sink(extra: &str) -> FeedSink {
        FeedSink::new(
            &FeedSinkConfig::from_toml(&format!(
                r#"
department = "sifa"
[sink]
subscription = "sub_abc"
{extra}
[sink.postgres]
url_env = "UNUSED_PG_URL"
table = "t"
"#
            ))
            .unwrap(),
        )
        .unwrap()
    }

    /// A plain client (the fake broker speaks http on loopback).
    fn client() -> reqwest::Client {
        // reqwest is built without a default TLS provider; the process needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn http_feed(url: &str, sink: &FeedSink) -> HttpFeed {
        HttpFeed::new(client(), url, &Secret::new(TOKEN), sink).unwrap()
    }

    fn error(code: &str) -> Value {
        json!({"error": {"code": code, "message": "what to fix"}})
    }

    #[tokio::test]
    async fn asks_for_the_page_after_the_cursor_and_parses_it() {
        let page = json!({"items": [{"delivery_id": "d1", "subscription_id": "sub_abc",
            "seq": 8, "change": "delete", "kind": "event", "id": "e_1", "record": null,
            "something_new": true}], "next": 11});
        let (url, broker) = serve(vec![(200, None, page)]).await;
        let sink = sink("page_size = 7");
        let mut feed = http_feed(&url, &sink);
        let page = feed.page(Some(5), 7).await.unwrap();
        assert_eq!(page.next, 11);
        assert_eq!(page.items[0].change, super::super::Change::Delete);
        assert_eq!(page.items[0].record, None);
        assert_eq!(
            broker.queries.lock().unwrap()[0],
            ("sub_abc".to_owned(), "5".to_owned(), "7".to_owned())
        );
        // The first page of a sink is asked without `after`.
        feed.page(None, 7).await.unwrap();
        assert_eq!(
            broker.queries.lock().unwrap()[1],
            ("sub_abc".to_owned(), String::new(), "7".to_owned())
        );
    }

    #[tokio::test]
    async fn retries_busy_answers_honouring_retry_after() {
        let page = json!({"items": [], "next": 3});
        let (url, broker) = serve(vec![
            (429, Some("1"), error("rate_limited")),
            (503, None, error("audit_unavailable")),
            (200, None, page),
        ])
        .await;
        let sink = sink("max_retry_wait_seconds = 5");
        let mut feed = http_feed(&url, &sink);
        let started = Instant::now();
        let page = feed.page(Some(0), 10).await.unwrap();
        assert_eq!(page.next, 3);
        assert_eq!(feed.retries(), 2);
        assert_eq!(broker.requests.load(Ordering::SeqCst), 3);
        // 1 s asked by Retry-After, then the 2 s backoff of the second retry.
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_on_a_long_retry_after() {
        let (url, broker) = serve(vec![(503, Some("0"), error("audit_unavailable"))]).await;
        let sink = sink("max_attempts = 3");
        let mut feed = http_feed(&url, &sink);
        let err = feed.page(Some(0), 10).await.unwrap_err().to_string();
        assert_eq!(broker.requests.load(Ordering::SeqCst), 3);
        assert!(err.contains("giving up after 3 attempts"), "{err}");
        assert!(
            err.contains("503") && err.contains("audit_unavailable"),
            "{err}"
        );

        let (url, broker) = serve(vec![(429, Some("3600"), error("rate_limited"))]).await;
        let mut feed = http_feed(&url, &sink);
        let err = feed.page(Some(0), 10).await.unwrap_err().to_string();
        assert_eq!(broker.requests.load(Ordering::SeqCst), 1);
        assert!(
            err.contains("3600 s") && err.contains("max_retry_wait_seconds"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn other_errors_name_status_and_code_at_once_never_the_token() {
        for (status, code, words) in [
            (401, "unauthenticated", "dept_subscriber token"),
            (403, "role_cannot_subscribe", "may not read"),
            (404, "not_found", "sub_abc"),
            (500, "integrity_error", "what to fix"),
        ] {
            let (url, broker) = serve(vec![(status, None, error(code))]).await;
            let sink = sink("");
            let mut feed = http_feed(&url, &sink);
            let err = feed.page(Some(0), 10).await.unwrap_err();
            let text = err.to_string();
            assert_eq!(broker.requests.load(Ordering::SeqCst), 1, "{text}");
            assert!(text.contains(&status.to_string()), "{text}");
            assert!(text.contains(code), "{text}");
            assert!(text.contains(words), "{text}");
            assert!(!text.contains(TOKEN) && !format!("{err:?}").contains(TOKEN));
        }
        // Not a feed page: the error says where, and repeats nothing of the answer.
        let (url, _) = serve(vec![(200, None, json!({"items": [{"seq": "张三"}]}))]).await;
        let sink = sink("");
        let err = http_feed(&url, &sink).page(Some(0), 10).await.unwrap_err();
        assert!(!err.to_string().contains("张三"), "{err}");
        assert!(format!("{feed:?}", feed = http_feed(&url, &sink)).contains("Sensitive"));
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_retried_then_named() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let sink = sink("max_attempts = 2\nmax_retry_wait_seconds = 1");
        let mut feed = http_feed(&format!("http://127.0.0.1:{port}"), &sink);
        let err = feed.page(Some(0), 10).await.unwrap_err().to_string();
        assert!(err.contains("giving up after 2 attempts"), "{err}");
        assert!(err.contains("did not answer"), "{err}");
        assert!(!err.contains(&port.to_string()), "{err}");
    }

    #[test]
    fn the_token_travels_only_over_https_or_to_loopback() {
        let sink = sink("");
        let token = Secret::new(TOKEN);
        for url in [
            "https://safegrid.example.gov.cn:8443",
            "https://safegrid.example.gov.cn/prefix/",
            "http://127.0.0.1:8443",
            "http://localhost:8443",
            "http://[::1]:8443",
        ] {
            assert!(HttpFeed::new(client(), url, &token, &sink).is_ok(), "{url}");
        }
        for url in [
            "http://safegrid.example.gov.cn",
            "ftp://127.0.0.1",
            "https://user:pw@safegrid.example.gov.cn",
            "https://safegrid.example.gov.cn/?x=1",
            "not a url",
        ] {
            let err = HttpFeed::new(client(), url, &token, &sink).unwrap_err();
            assert_eq!(err.code(), "connector_config", "{url}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        let feed = HttpFeed::new(
            client(),
            "https://safegrid.example.gov.cn/prefix/",
            &token,
            &sink,
        )
        .unwrap();
        assert_eq!(
            feed.page_url(Some(42), 500).as_str(),
            "https://safegrid.example.gov.cn/prefix/v1/subscriptions/sub_abc/feed?after=42&limit=500"
        );
    }
}
