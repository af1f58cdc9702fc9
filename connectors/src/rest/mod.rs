//! REST pull: reads a department's paged JSON API (cursor or page-number paging).
//!
//! Guarantees:
//! - Every page is delivered to the sink, and acknowledged, before the next page is fetched.
//! - Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with
//!   exponential backoff (honouring `Retry-After`), at most `max_attempts` times per request;
//!   other HTTP errors stop the run at once (401/403 name the auth header as the likely cause).
//! - The auth header's value is read from the environment, sent as a sensitive header and
//!   never printed; error messages carry no URL query and no header.
//! - A run stops after `max_pages` pages or when a cursor repeats, so a misbehaving API
//!   cannot make it loop forever.
//! - Redirects are followed only within the origin of `url` (same scheme, host and port, so
//!   never from https to http) and at most five per request; any other redirect stops the run
//!   with `redirect_refused` before a request is sent to where it points, so the auth header
//!   and the department's data never leave the configured API.
//! - No more than `max_response_bytes` of one response are ever held in memory: a response
//!   that declares or turns out to be larger stops the run with `response_too_large`, and the
//!   rest of its body is not read.
//!
//! A REST pull takes the whole listing each run (APIs rarely offer a durable change feed);
//! the broker's idempotent ingest turns unchanged records into no-ops.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{redirect, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{secret_from_env, Secret};
use crate::connector::{deliver, BoxFuture, Connector, RunReport};
use crate::mapping::{Mapping, SourceRow};
use crate::{ConnectorConfig, ConnectorError, RecordSink, SourceConfig};

/// Redirects one request may follow (all within the origin of `source.url`).
pub const MAX_REDIRECTS: usize = 5;

/// Largest response (one page) read unless the configuration says otherwise: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// How the API pages its listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// Each response names the next page's cursor (`next_cursor_path`); it is sent back as
    /// the query parameter `cursor_param`. No cursor, or an empty page, ends the listing.
    #[default]
    Cursor,
    /// Pages are numbered (`page_param`, starting at `first_page`); an empty page, or one
    /// shorter than `page_size`, ends the listing.
    Page,
    /// One request returns everything.
    None,
}

/// `[source]` of `type = "rest"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The listing's URL (`https://…`; `http://` only inside a trusted network).
    pub url: String,
    /// Query parameters sent with every request, e.g. `{ dept = "mz" }`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Dotted path to the list of records in a response, e.g. `data.items`; empty (the
    /// default) when the response itself is the list.
    #[serde(default)]
    pub items_path: String,
    /// `cursor` (default), `page` or `none`.
    #[serde(default)]
    pub paging: Paging,
    /// Cursor paging: query parameter that carries the cursor (default `cursor`).
    #[serde(default)]
    pub cursor_param: Option<String>,
    /// Cursor paging: dotted path to the next cursor in a response (default `next_cursor`).
    #[serde(default)]
    pub next_cursor_path: Option<String>,
    /// Page paging: query parameter of the page number (default `page`).
    #[serde(default)]
    pub page_param: Option<String>,
    /// Page paging: number of the first page (default 1).
    #[serde(default)]
    pub first_page: Option<u64>,
    /// Query parameter of the page size, if the API takes one (e.g. `page_size`).
    #[serde(default)]
    pub page_size_param: Option<String>,
    /// Records per page to ask for (sent as `page_size_param`).
    #[serde(default)]
    pub page_size: Option<u64>,
    /// Name of the auth header (default `Authorization`).
    #[serde(default)]
    pub header_name: Option<String>,
    /// Environment variable holding the auth header's value (e.g. `MZ_API_TOKEN`), so the
    /// secret is not in this file.
    #[serde(default)]
    pub header_value_env: Option<String>,
    /// Text put before the secret in the header, e.g. `"Bearer "`.
    #[serde(default)]
    pub header_value_prefix: Option<String>,
    /// Seconds before one request times out (default 30).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Attempts per request, the first included, before the run fails (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Milliseconds before the first retry; doubled on each further retry (default 500).
    #[serde(default)]
    pub retry_initial_ms: Option<u64>,
    /// Longest wait between two attempts, in milliseconds (default 30000).
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
    /// Most pages one run fetches before it stops with an error (default 10000).
    #[serde(default)]
    pub max_pages: Option<u64>,
    /// Largest response to one request, in bytes (default 67108864, i.e. 64 MiB). A larger
    /// response stops the run with `response_too_large` without being read whole; lower
    /// `page_size` if the API's pages are that big.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
}

/// The REST connector.
#[derive(Debug)]
pub struct RestConnector {
    name: String,
    department: String,
    schedule_seconds: Option<u64>,
    config: RestConfig,
    url: Url,
    mapping: Mapping,
    client: reqwest::Client,
}

/// What one failed attempt means.
enum Attempt {
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Fail(ConnectorError),
}

impl RestConnector {
    pub fn new(config: &ConnectorConfig) -> Result<RestConnector, ConnectorError> {
        let SourceConfig::Rest(source) = &config.source else {
            return Err(ConnectorError::Config("not a rest source".to_owned()));
        };
        config.check()?;
        let url = Url::parse(&source.url)
            .map_err(|_| ConnectorError::Config("source.url is not a valid URL".to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::Config(
                "source.url must be http or https".to_owned(),
            ));
        }
        if source.max_attempts == Some(0) {
            return Err(ConnectorError::Config(
                "source.max_attempts must be at least 1".to_owned(),
            ));
        }
        if source.max_response_bytes == Some(0) {
            return Err(ConnectorError::Config(
                "source.max_response_bytes must be at least 1".to_owned(),
            ));
        }
        if let Some(name) = &source.header_name {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConnectorError::Config("source.header_name is not a valid header name".to_owned())
            })?;
        }
        // reqwest is built without a default TLS provider; SafeGrid uses ring everywhere.
        // Installing fails harmlessly when the process already has one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(source.timeout_seconds.unwrap_or(30)))
            .connect_timeout(Duration::from_secs(10))
            .redirect(same_origin_redirects(url.clone()))
            .build()
            .map_err(|e| {
                ConnectorError::Rest(format!("building the HTTP client: {}", e.without_url()))
            })?;
        Ok(RestConnector {
            name: config.name(),
            department: config.department.clone(),
            schedule_seconds: config.schedule_seconds,
            config: source.clone(),
            url,
            mapping: Mapping::compile(&config.mapping)?,
            client,
        })
    }

    fn auth_header(&self) -> Result<Option<(HeaderName, HeaderValue)>, ConnectorError> {
        let Some(var) = &self.config.header_value_env else {
            return Ok(None);
        };
        let secret: Secret = secret_from_env(var)?;
        let name = HeaderName::from_bytes(
            self.config
                .header_name
                .as_deref()
                .unwrap_or("Authorization")
                .as_bytes(),
        )
        .map_err(|_| {
            ConnectorError::Config("source.header_name is not a valid header name".to_owned())
        })?;
        let text = format!(
            "{}{}",
            self.config.header_value_prefix.as_deref().unwrap_or(""),
            secret.expose()
        );
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            ConnectorError::Config(format!(
                "the value of `{var}` cannot be sent in an HTTP header"
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }

    fn page_url(&self, cursor: Option<&str>, page: u64) -> Url {
        let mut url = self.url.clone();
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.config.query {
                pairs.append_pair(k, v);
            }
            if let (Some(param), Some(size)) = (&self.config.page_size_param, self.config.page_size)
            {
                pairs.append_pair(param, &size.to_string());
            }
            match self.config.paging {
                Paging::Cursor => {
                    if let Some(cursor) = cursor {
                        pairs.append_pair(
                            self.config.cursor_param.as_deref().unwrap_or("cursor"),
                            cursor,
                        );
                    }
                }
                Paging::Page => {
                    pairs.append_pair(
                        self.config.page_param.as_deref().unwrap_or("page"),
                        &page.to_string(),
                    );
                }
                Paging::None => {}
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    async fn attempt(
        &self,
        url: &Url,
        auth: &Option<(HeaderName, HeaderValue)>,
    ) -> Result<Value, Attempt> {
        let mut request = self
            .client
            .get(url.clone())
            .header("Accept", "application/json");
        if let Some((name, value)) = auth {
            request = request.header(name.clone(), value.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                return Err(match redirect_refusal(&err) {
                    Some(refusal) => {
                        Attempt::Fail(ConnectorError::RedirectRefused(refusal.0.clone()))
                    }
                    None if err.is_timeout() || err.is_connect() || err.is_request() => {
                        Attempt::Retry {
                            after: None,
                            why: err.without_url().to_string(),
                        }
                    }
                    None => Attempt::Fail(ConnectorError::Rest(err.without_url().to_string())),
                })
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Attempt::Retry {
                after,
                why: format!("HTTP {status}"),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Attempt::Fail(ConnectorError::Rest(format!(
                "HTTP {status}: the API refused the credentials (check header_value_env)"
            ))));
        }
        if !status.is_success() {
            return Err(Attempt::Fail(ConnectorError::Rest(format!(
                "HTTP {status}"
            ))));
        }
        let limit = self
            .config
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        let body = read_capped(&mut response, limit).await?;
        serde_json::from_slice::<Value>(&body)
            .map_err(|_| Attempt::Fail(ConnectorError::Rest("the response is not JSON".to_owned())))
    }

    /// One request, with retries.
    async fn fetch(
        &self,
        url: &Url,
        auth: &Option<(HeaderName, HeaderValue)>,
        report: &mut RunReport,
    ) -> Result<Value, ConnectorError> {
        let max_attempts = self.config.max_attempts.unwrap_or(5);
        let initial = self.config.retry_initial_ms.unwrap_or(500);
        let max_wait = Duration::from_millis(self.config.retry_max_ms.unwrap_or(30_000));
        let mut attempt = 1;
        loop {
            match self.attempt(url, auth).await {
                Ok(value) => return Ok(value),
                Err(Attempt::Fail(err)) => return Err(err),
                Err(Attempt::Retry { after, why }) => {
                    if attempt >= max_attempts {
                        return Err(ConnectorError::Rest(format!(
                            "giving up after {attempt} attempts: {why}"
                        )));
                    }
                    let backoff = Duration::from_millis(
                        initial.saturating_mul(1u64 << (attempt - 1).min(20)),
                    );
                    let wait = after.unwrap_or(backoff).min(max_wait);
                    tracing::warn!(connector = %self.name, attempt, reason = %why, wait_ms = wait.as_millis() as u64, "retrying REST request");
                    tokio::time::sleep(wait).await;
                    report.retries += 1;
                    attempt += 1;
                }
            }
        }
    }

    async fn run_inner(&mut self, sink: &mut dyn RecordSink) -> Result<RunReport, ConnectorError> {
        let mut report = RunReport::start(&self.name, &self.department);
        let auth = self.auth_header()?;
        let max_pages = self.config.max_pages.unwrap_or(10_000);
        let mut cursor: Option<String> = None;
        let mut page = self.config.first_page.unwrap_or(1);
        loop {
            if report.pages as u64 >= max_pages {
                return Err(ConnectorError::Rest(format!(
                    "stopped after max_pages = {max_pages} pages"
                )));
            }
            let url = self.page_url(cursor.as_deref(), page);
            let body = self.fetch(&url, &auth, &mut report).await?;
            report.pages += 1;
            let items = lookup(&body, &self.config.items_path)
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ConnectorError::Rest(format!(
                        "the response has no list at items_path `{}`",
                        self.config.items_path
                    ))
                })?;
            let label = format!("rest:{}#{}", self.url.path(), report.pages);
            let count = items.len();
            let batch = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(fields) => self.mapping.map(SourceRow {
                        source_file: label.clone(),
                        line: i + 1,
                        fields: fields.clone(),
                        cell_errors: Vec::new(),
                        default_version: None,
                        tabular: false,
                    }),
                    _ => crate::MappedRecord::Failed {
                        error: crate::MappingError {
                            source_file: label.clone(),
                            line: i + 1,
                            field: String::new(),
                            code: "record_not_object".to_owned(),
                            message: "each item of the list must be a JSON object".to_owned(),
                            source_id: None,
                        },
                        row: serde_json::Map::new(),
                    },
                })
                .collect();
            let next = match self.config.paging {
                Paging::Cursor => {
                    let path = self
                        .config
                        .next_cursor_path
                        .as_deref()
                        .unwrap_or("next_cursor");
                    match lookup(&body, path) {
                        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        Some(Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    }
                }
                _ => None,
            };
            deliver(sink, &self.department, batch, &mut report).await?;
            let more = match self.config.paging {
                Paging::None => false,
                Paging::Page => {
                    count > 0
                        && self
                            .config
                            .page_size
                            .is_none_or(|size| count as u64 >= size)
                }
                Paging::Cursor => {
                    if count == 0 {
                        false
                    } else if let Some(next) = next {
                        if cursor.as_deref() == Some(next.as_str()) {
                            return Err(ConnectorError::Rest(
                                "the API returned the same cursor twice".to_owned(),
                            ));
                        }
                        cursor = Some(next);
                        true
                    } else {
                        false
                    }
                }
            };
            if !more {
                break;
            }
            page += 1;
        }
        Ok(report.finish())
    }
}

/// Reads a response body, holding at most `limit` bytes ([`crate::body::read_capped`]).
async fn read_capped(response: &mut Response, limit: u64) -> Result<Vec<u8>, Attempt> {
    crate::body::read_capped(response, limit)
        .await
        .map_err(|err| match err {
            crate::body::BodyError::TooLarge => {
                Attempt::Fail(ConnectorError::ResponseTooLarge { limit })
            }
            crate::body::BodyError::TimedOut => Attempt::Retry {
                after: None,
                why: "timed out reading the response".to_owned(),
            },
            crate::body::BodyError::Broken(why) => {
                Attempt::Fail(ConnectorError::Rest(format!("reading the response: {why}")))
            }
        })
}

/// Why a redirect was not followed. Travels through reqwest's error chain back to
/// [`RestConnector::attempt`], which turns it into [`ConnectorError::RedirectRefused`].
#[derive(Debug)]
struct RedirectRefusal(String);

impl std::fmt::Display for RedirectRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefusal {}

/// The redirect policy of the client: follow only what [`check_redirect`] allows.
fn same_origin_redirects(base: Url) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` holds every URL requested so far: its length counts this redirect too.
        match check_redirect(&base, attempt.url(), attempt.previous().len()) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    })
}

/// Whether the `hop`-th redirect of one request (1-based), to `next`, may be followed for the
/// API at `base`. The message names origins (scheme, host, port) only, never a path or query.
fn check_redirect(base: &Url, next: &Url, hop: usize) -> Result<(), RedirectRefusal> {
    let origin = |url: &Url| {
        let origin = url.origin();
        if origin.is_tuple() {
            origin.ascii_serialization()
        } else {
            format!("a {}: address", url.scheme())
        }
    };
    if base.scheme() == "https" && next.scheme() != "https" {
        return Err(RedirectRefusal(format!(
            "the API redirected from https to {}, which SafeGrid never follows: fix the \
             redirect on the server, or set source.url to the API's https address",
            origin(next)
        )));
    }
    if next.origin() != base.origin() {
        return Err(RedirectRefusal(format!(
            "the API redirected to {}, outside {}: SafeGrid follows redirects only to the same \
             scheme, host and port; set source.url to the address the API has moved to",
            origin(next),
            origin(base)
        )));
    }
    if hop > MAX_REDIRECTS {
        return Err(RedirectRefusal(format!(
            "the API redirected more than {MAX_REDIRECTS} times for one request: set \
             source.url to the final address"
        )));
    }
    Ok(())
}

/// The redirect refusal somewhere in `err`'s chain of causes.
fn redirect_refusal(err: &reqwest::Error) -> Option<&RedirectRefusal> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(refusal) = current.downcast_ref::<RedirectRefusal>() {
            return Some(refusal);
        }
        cause = current.source();
    }
    None
}

/// Follows a dotted path into JSON objects; the empty path is the value itself.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let path = path.trim();
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |current, part| current.as_object()?.get(part))
}

impl Connector for RestConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn department(&self) -> &str {
        &self.department
    }

    fn schedule_seconds(&self) -> Option<u64> {
        self.schedule_seconds
    }

    fn run<'a>(
        &'a mut self,
        sink: &'a mut dyn RecordSink,
    ) -> BoxFuture<'a, Result<RunReport, ConnectorError>> {
        Box::pin(self.run_inner(sink))
    }
}

#[cfg(test)]
mod tests;
