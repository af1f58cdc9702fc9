//! The console reads and writes only through the v1 API: each page makes in-process calls to
//! the same router API clients reach, with the session's token, its purpose of use and
//! `Accept-Language: zh-CN`.
//!
//! Guarantees: a console page sees exactly what an API client with the same token and purpose
//! would see — the same authorization, jurisdiction, masking (the disclosure gate), rate limit
//! and audit record, which names the client's own network address. Nothing here reads the
//! store directly.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use super::session::Session;

/// Largest API answer a page reads (an audit export is the largest).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// What the connection told the outer request, passed on to the API call.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub addr: Option<crate::server::ClientAddr>,
    pub connection: Option<crate::server::ConnectionInfo>,
}

impl Client {
    pub fn of(headers_ext: &axum::http::Extensions) -> Client {
        Client {
            addr: headers_ext.get::<crate::server::ClientAddr>().cloned(),
            connection: headers_ext.get::<crate::server::ConnectionInfo>().cloned(),
        }
    }
}

/// An API answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// The API's error message (already in Chinese), or a generic one.
    pub fn message(&self) -> String {
        let body = self.json();
        let error = &body["error"];
        let message = error["message"].as_str().unwrap_or("请求未完成").to_owned();
        match error["code"].as_str() {
            Some(code) => format!("{message}（{code}）"),
            None => message,
        }
    }

    /// The request id the API gave this call (its audit record carries it).
    pub fn request_id(&self) -> Option<String> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Calls the API as the session's staff member.
pub async fn call(
    api: &Router,
    session: &Session,
    client: &Client,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
        .header(header::ACCEPT_LANGUAGE, "zh-CN");
    if let Some(purpose) = session
        .purpose
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        builder = builder.header("x-purpose", purpose);
    }
    let body = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    let mut request = match builder.body(body) {
        Ok(request) => request,
        Err(_) => {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                headers: HeaderMap::new(),
                bytes: r#"{"error":{"code":"console_request_invalid","message":"请求地址无效"}}"#
                    .as_bytes()
                    .to_vec(),
            }
        }
    };
    if let Some(addr) = &client.addr {
        request.extensions_mut().insert(*addr);
    }
    if let Some(connection) = &client.connection {
        request.extensions_mut().insert(connection.clone());
    }
    let response = match api.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Answer {
        status: parts.status,
        headers: parts.headers,
        bytes,
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Whether `id` is a unified id the console may put in a path (`r_…`, `h_…`, `e_…`, `o_…`,
/// subscription and review ids): ASCII letters, digits, `_` and `-`, at most 80.
pub fn path_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The console page of a unified id (`r_…` a resident, `h_…` a house, `e_…` an event,
/// `o_…` an organization), if it is one.
pub fn profile_path(id: &str) -> Option<String> {
    if !path_safe(id) {
        return None;
    }
    let kind = match id.split('_').next() {
        Some("r") => "residents",
        Some("h") => "houses",
        Some("e") => "events",
        Some("o") => "organizations",
        _ => return None,
    };
    Some(format!("/console/{kind}/{id}"))
}

/// Whether a console path is plain: ASCII letters, digits, `/`, `_`, `-`, at most 200, no `..`.
pub fn path_safe_path(path: &str) -> bool {
    path.len() <= 200
        && !path.contains("..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_and_paths_checked() {
        assert_eq!(encode("zs 3号"), "zs%203%E5%8F%B7");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
        assert!(path_safe("r_0a1b"));
        assert!(!path_safe("../v1/admin"));
        assert!(!path_safe("r_1?x=1"));
        assert!(!path_safe(""));
        assert_eq!(
            profile_path("r_0a1b").as_deref(),
            Some("/console/residents/r_0a1b")
        );
        assert_eq!(
            profile_path("o_9").as_deref(),
            Some("/console/organizations/o_9")
        );
        assert_eq!(profile_path("x_1"), None);
        assert_eq!(profile_path("r_1/../admin"), None);
    }
}
