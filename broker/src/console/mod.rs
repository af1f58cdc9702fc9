//! The console: zh-CN pages for grid workers, officers, compliance officers and departments,
//! served by the broker under `/console/` (askama templates, htmx for partial updates, no
//! JavaScript build chain, no third-party or CDN asset).
//!
//! Guarantees:
//! - Every page reads and writes through the v1 API ([`call`]) with the session's token and
//!   purpose of use, so the HTML never holds a value the API would mask for that user, and
//!   every view of personal data is an audited access through the disclosure gate.
//! - No ID number in any URL: searches, audit filters and resident reports are POSTed forms;
//!   a GET search with something shaped like an ID number or a phone number is not run.
//! - Sessions, cookies and CSRF as [`session`] says; every response carries
//!   `Content-Security-Policy: default-src 'self'` (and no inline script or style is needed),
//!   `X-Frame-Options: DENY`, `Referrer-Policy: same-origin` (nothing leaves for another site;
//!   the console's own forms keep their `Origin`) and, for pages, `Cache-Control: no-store`.
//! - Every page that shows personal data carries a watermark with the viewer's name and the
//!   time.

pub mod call;
mod compliance;
mod department;
pub mod labels;
mod officer;
pub mod oidc;
pub mod session;
mod worker;

use std::sync::Mutex;

use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::api::AppState;
use call::{Answer, Client};
use session::{Session, Sessions};

/// The console's shared state: the sessions and settings, kept in [`AppState`].
#[derive(Debug, Default)]
pub struct Console {
    pub sessions: Sessions,
    /// Whether `/console/login` takes a pasted token (dev mode, or `console.token_login`).
    pub token_login: bool,
    /// The outcome of the last log verification run from the console.
    pub last_verification: Mutex<Option<compliance::Verification>>,
    /// Login through the identity provider, when `[console] oidc_client_id` is set.
    pub oidc: Option<oidc::OidcClient>,
}

impl Console {
    pub fn new(token_login: bool, oidc: Option<oidc::OidcClient>) -> Console {
        Console {
            token_login,
            oidc,
            ..Console::default()
        }
    }
}

/// What the console's handlers share: the broker's state and the API router they call.
#[derive(Clone, Debug)]
pub struct ConsoleState {
    pub app: AppState,
    pub api: Router,
}

/// The `Content-Security-Policy` of every console response.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const HTMX: &[u8] = include_bytes!("../../assets/console/htmx-2.0.11.min.js");
const CSS: &str = include_str!("../../assets/console/console.css");

/// The console's routes, under `/console`.
pub fn router(app: AppState, api: Router) -> Router {
    let state = ConsoleState { app, api };
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(worker::home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/login/oidc", get(oidc_start))
        .route("/console/login/callback", get(oidc_callback))
        .route("/console/logout", post(logout))
        .route("/console/purpose", post(choose_purpose))
        .route("/console/preferences", post(preferences))
        .route("/console/assets/htmx-2.0.11.min.js", get(htmx))
        .route("/console/assets/console.css", get(css))
        .route(
            "/console/residents",
            get(worker::search_page).post(worker::search),
        )
        .route("/console/residents/{id}", get(worker::resident))
        .route("/console/houses/{id}", get(worker::house))
        .route("/console/organizations/{id}", get(worker::organization))
        .route("/console/events/mine", get(worker::my_events))
        .route("/console/mine", get(worker::my_accesses))
        .route("/console/events/{id}", get(worker::event))
        .route(
            "/console/events/{id}/transitions",
            post(officer::transition),
        )
        .route("/console/reports/new", get(worker::report_form))
        .route("/console/reports", post(worker::report))
        .route("/console/visits", post(worker::visit))
        .route("/console/events", get(officer::events))
        .route("/console/reviews", get(officer::reviews))
        .route("/console/reviews/{id}", post(officer::decide))
        .route("/console/stats", get(officer::stats))
        .route(
            "/console/audit",
            get(compliance::audit_page).post(compliance::audit_search),
        )
        .route("/console/audit/anomalies", get(compliance::anomalies))
        .route(
            "/console/audit/report",
            get(compliance::report_page).post(compliance::report),
        )
        .route(
            "/console/audit/verify",
            get(compliance::verify_page).post(compliance::verify),
        )
        .route("/console/audit/export", get(compliance::export))
        .route("/console/audit/report.xlsx", post(compliance::report_xlsx))
        .route("/console/quarantine", get(department::quarantine))
        .route("/console/quarantine.xlsx", get(department::quarantine_xlsx))
        .route(
            "/console/receipts",
            get(department::receipts_page).post(department::receipt),
        )
        .route("/console/subscriptions", get(department::subscriptions))
        .route(
            "/console/subscriptions/{id}/deliveries/{delivery}/retry",
            post(department::retry),
        )
        // Unknown console paths get the console's page (the API's router owns the fallback).
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The headers every console response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn htmx() -> Response {
    asset(HTMX.to_vec(), "text/javascript; charset=utf-8")
}

async fn css() -> Response {
    asset(CSS.as_bytes().to_vec(), "text/css; charset=utf-8")
}

fn asset(bytes: Vec<u8>, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        bytes,
    )
        .into_response()
}

async fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "页面不存在",
        "没有这个页面。请从导航进入。",
    )
}

/// A signed-in staff member's request.
#[derive(Debug)]
pub struct Staff {
    pub session: Session,
    pub cookie: String,
    pub client: Client,
    pub large: bool,
    /// The path of this request (for the forms that return to it).
    pub path: String,
    /// Whether htmx asked for a fragment.
    pub fragment: bool,
}

impl FromRequestParts<ConsoleState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Response> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            if let Some(refusal) = cross_site_refusal(&parts.headers) {
                return Err(refusal);
            }
        }
        let cookie = session::cookie_value(&parts.headers, session::COOKIE)
            .map(str::to_owned)
            .unwrap_or_default();
        let session = match state.app.console.sessions.get(&cookie) {
            Some(session) => session,
            None => return Err(Redirect::to("/console/login").into_response()),
        };
        Ok(Staff {
            session,
            cookie,
            client: Client::of(&parts.extensions),
            large: large_mode(&parts.headers),
            path: parts.uri.path().to_owned(),
            fragment: parts.headers.contains_key("hx-request"),
        })
    }
}

/// Refuses a state-changing request the browser marks as coming from another site.
fn cross_site_refusal(headers: &axum::http::HeaderMap) -> Option<Response> {
    // Browsers set Sec-Fetch-Site and pages cannot forge it: when present it decides.
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") => return None,
        Some(_) => return Some(csrf_refusal()),
        None => {}
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (Some(origin), Some(host)) = (origin, host) {
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or(origin);
        if origin_host != host {
            return Some(csrf_refusal());
        }
    }
    None
}

fn csrf_refusal() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "请求被拒绝",
        "表单已过期或来自其他网站（csrf_invalid）。请刷新页面后重试。",
    )
}

fn large_mode(headers: &axum::http::HeaderMap) -> bool {
    session::cookie_value(headers, session::LARGE_COOKIE) == Some("1")
}

impl Staff {
    /// The refusal of a form whose CSRF token is not this session's, if it is not.
    pub fn csrf_refusal(&self, csrf: &str) -> Option<Response> {
        if session::same_secret(csrf, &self.session.csrf) {
            None
        } else {
            Some(csrf_refusal())
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.session.principal.has_role(role)
    }

    /// Calls the API as this staff member; a token that no longer verifies ends the session.
    pub async fn call(
        &self,
        state: &ConsoleState,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Response> {
        let answer = call::call(&state.api, &self.session, &self.client, method, path, body).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            state.app.console.sessions.end(&self.cookie);
            return Err(Redirect::to("/console/login").into_response());
        }
        Ok(answer)
    }

    pub async fn get(&self, state: &ConsoleState, path: &str) -> Result<Answer, Response> {
        self.call(state, Method::GET, path, None).await
    }

    /// The frame of a page.
    pub fn layout(&self, state: &ConsoleState, title: &str) -> Layout {
        let principal = &self.session.principal;
        let purposes = state
            .app
            .purposes
            .iter()
            .map(|p| Choice {
                value: p.clone(),
                label: labels::purpose(p),
                selected: self.session.purpose.as_deref() == Some(p.as_str()),
            })
            .collect();
        let roles: Vec<String> = principal.roles.iter().map(|r| labels::role(r)).collect();
        Layout {
            title: title.to_owned(),
            viewer: if principal.name.is_empty() {
                principal.sub.clone()
            } else {
                principal.name.clone()
            },
            roles: roles.join("、"),
            nav: nav(self, &self.path),
            csrf: self.session.csrf.clone(),
            purposes,
            purpose: self.session.purpose.as_deref().map(labels::purpose),
            reads_personal_data: state.app.permissions.allows(
                &principal.roles,
                policies::authz::Permission::ReadPersonalData,
            ),
            watermark: None,
            large: self.large,
            back: self.path.clone(),
            flash: None,
            error: None,
        }
    }

    /// The watermark text: the viewer's name and id, and the time (Beijing time).
    pub fn watermark(&self) -> String {
        let now = chrono::Utc::now().with_timezone(&china());
        format!(
            "{} {} {}",
            self.session.principal.name,
            self.session.principal.sub,
            now.format("%Y-%m-%d %H:%M")
        )
    }
}

/// UTC+8.
pub fn china() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// An RFC 3339 time as Beijing time, minutes.
pub fn local_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&china())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// The frame every page shares.
#[derive(Debug)]
pub struct Layout {
    pub title: String,
    pub viewer: String,
    pub roles: String,
    pub nav: Vec<Nav>,
    pub csrf: String,
    pub purposes: Vec<Choice>,
    /// The chosen purpose's label.
    pub purpose: Option<String>,
    /// Whether the viewer's roles read personal data (then the purpose picker is shown).
    pub reads_personal_data: bool,
    pub watermark: Option<String>,
    pub large: bool,
    pub back: String,
    pub flash: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

#[derive(Debug)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn nav(staff: &Staff, path: &str) -> Vec<Nav> {
    let mut items: Vec<(&'static str, &'static str)> = vec![("/console/", "首页")];
    let fieldwork = ["grid_worker", "community_officer", "street_officer"]
        .iter()
        .any(|r| staff.has_role(r));
    if fieldwork {
        items.push(("/console/residents", "查找"));
        items.push(("/console/reports/new", "上报事件"));
        items.push(("/console/events/mine", "我的事件"));
    }
    if staff.has_role("community_officer") || staff.has_role("street_officer") {
        items.push(("/console/events", "事件办理"));
        items.push(("/console/reviews", "待确认关联"));
        items.push(("/console/stats", "共享统计"));
    }
    items.push(("/console/mine", "我的查询记录"));
    if staff.has_role("compliance_officer") {
        items.push(("/console/audit", "访问日志"));
        items.push(("/console/audit/anomalies", "异常"));
        items.push(("/console/audit/report", "居民查询报告"));
        items.push(("/console/audit/verify", "日志校验"));
    }
    if staff.has_role("dept_publisher") {
        items.push(("/console/receipts", "批次回执"));
        items.push(("/console/quarantine", "拒收记录"));
    }
    if staff.has_role("dept_subscriber") {
        items.push(("/console/subscriptions", "订阅与推送"));
    }
    items
        .into_iter()
        .map(|(href, label)| Nav {
            href,
            label,
            current: path == href,
        })
        .collect()
}

/// Renders a template into a page.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "页面出错",
                "页面生成失败，请稍后重试。",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

/// A page with one message, outside a session (errors, refusals).
pub fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut response = render(&MessagePage { title, text });
    *response.status_mut() = status;
    response
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    login_csrf: String,
    token_login: bool,
    oidc: bool,
    error: Option<String>,
    large: bool,
}

async fn login_page(State(state): State<ConsoleState>, request: Request) -> Response {
    login_form(&state, large_mode(request.headers()), None, StatusCode::OK)
}

fn login_form(
    state: &ConsoleState,
    large: bool,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let login_csrf = session::random_token();
    let mut response = render(&LoginPage {
        login_csrf: login_csrf.clone(),
        token_login: state.app.console.token_login,
        oidc: state.app.console.oidc.is_some(),
        error,
        large,
    });
    *response.status_mut() = status;
    with_cookies(
        response,
        &[format!(
            "{}={login_csrf}; Path=/console/login; HttpOnly; Secure; SameSite=Strict",
            session::LOGIN_COOKIE
        )],
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    login_csrf: String,
}

async fn login(
    State(state): State<ConsoleState>,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some(refusal) = cross_site_refusal(&headers) {
        return refusal;
    }
    let large = large_mode(&headers);
    let bound = session::cookie_value(&headers, session::LOGIN_COOKIE)
        .is_some_and(|c| !form.login_csrf.is_empty() && session::same_secret(c, &form.login_csrf));
    if !bound {
        return csrf_refusal();
    }
    if !state.app.console.token_login {
        return login_form(
            &state,
            large,
            Some(
                "本系统未开启令牌登录，请通过统一身份认证登录（token_login_disabled）。".to_owned(),
            ),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim().to_owned();
    match state.app.authenticator.verify(&token) {
        Ok(principal) => {
            let cookie = state.app.console.sessions.start(token, principal);
            with_cookies(
                see_other("/console/"),
                &[session::session_cookie(&cookie, None)],
            )
        }
        Err(e) => {
            tracing::info!(reason = e.code(), "a console login was refused");
            login_form(
                &state,
                large,
                Some(format!("令牌无效或已过期，请重新获取（{}）。", e.code())),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

/// `GET /console/login/oidc`: off to the identity provider, the state bound to this browser.
async fn oidc_start(State(state): State<ConsoleState>) -> Response {
    let Some(oidc) = &state.app.console.oidc else {
        return not_found().await;
    };
    let (url, login_state) = oidc.start();
    with_cookies(
        see_other(&url),
        &[format!(
            "{}={login_state}; Path=/console/login; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
            oidc::STATE_COOKIE,
            oidc::PENDING_TTL.as_secs()
        )],
    )
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /console/login/callback?code=&state=`: the provider sends the browser back; the code
/// is traded for a token (with the PKCE verifier), which must verify like any bearer token.
async fn oidc_callback(
    State(state): State<ConsoleState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(callback): axum::extract::Query<Callback>,
) -> Response {
    let Some(oidc) = &state.app.console.oidc else {
        return not_found().await;
    };
    let large = large_mode(&headers);
    if callback.error.is_some() {
        // The provider's text is not repeated: it comes through the address bar.
        return login_form(
            &state,
            large,
            Some("统一身份认证未通过，请重新登录（oidc_denied）。".to_owned()),
            StatusCode::UNAUTHORIZED,
        );
    }
    let cookie_state = session::cookie_value(&headers, oidc::STATE_COOKIE);
    let token = match oidc
        .finish(&callback.state, cookie_state, &callback.code)
        .await
    {
        Ok(token) => token,
        Err(e) => {
            tracing::info!(reason = e.code(), error = %e, "a console login through the identity provider failed");
            return login_form(
                &state,
                large,
                Some(format!(
                    "统一身份认证登录未完成，请重新登录（{}）。",
                    e.code()
                )),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let principal = match state.app.authenticator.verify(&token) {
        Ok(principal) => principal,
        Err(e) => {
            tracing::info!(
                reason = e.code(),
                "the identity provider's token was refused"
            );
            return login_form(
                &state,
                large,
                Some(format!(
                    "统一身份认证签发的令牌未通过校验（{}）。",
                    e.code()
                )),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let cookie = state.app.console.sessions.start(token, principal);
    with_cookies(
        see_other("/console/"),
        &[
            session::session_cookie(&cookie, None),
            format!(
                "{}=; Path=/console/login; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
                oidc::STATE_COOKIE
            ),
        ],
    )
}

/// A form that carries only its CSRF token (and where to go back to).
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    state.app.console.sessions.end(&staff.cookie);
    with_cookies(
        see_other("/console/login"),
        &[session::session_cookie("", Some(0))],
    )
}

#[derive(Deserialize)]
struct PurposeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    back: String,
}

/// Where a form may send the browser back to: a console path, else the home page.
fn back_to(back: &str) -> String {
    if back.starts_with("/console/") && !back.starts_with("//") && call::path_safe_path(back) {
        back.to_owned()
    } else {
        "/console/".to_owned()
    }
}

/// `303 See Other` to `to` (axum's `Redirect::to`).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// `response` with `Set-Cookie` headers (values made here, never from a request).
fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn choose_purpose(
    State(state): State<ConsoleState>,
    staff: Staff,
    Form(form): Form<PurposeForm>,
) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    if !state.app.purposes.contains(&form.purpose) {
        return message_page(
            StatusCode::BAD_REQUEST,
            "查询目的无效",
            "请从列表中选择查询目的（purpose_unknown）。",
        );
    }
    state
        .app
        .console
        .sessions
        .set_purpose(&staff.cookie, form.purpose);
    see_other(&back_to(&form.back))
}

#[derive(Deserialize)]
struct PreferencesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    large: String,
    #[serde(default)]
    back: String,
}

/// Turns the large-text, high-contrast mode on or off for this device (a year).
async fn preferences(staff: Staff, Form(form): Form<PreferencesForm>) -> Response {
    if let Some(refusal) = staff.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let on = form.large == "1";
    with_cookies(
        see_other(&back_to(&form.back)),
        &[format!(
            "{}={}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            session::LARGE_COOKIE,
            if on { "1" } else { "0" },
            365 * 24 * 3600
        )],
    )
}

/// A page whose content is a note ("nothing here", a refusal from the API).
#[derive(Template)]
#[template(path = "console/note.html")]
#[derive(Debug)]
pub struct NotePage {
    pub layout: Layout,
    pub text: String,
}

/// The API refused or failed: show its (Chinese) message in the frame.
pub fn api_refusal(staff: &Staff, state: &ConsoleState, title: &str, answer: &Answer) -> Response {
    let status = answer.status;
    let mut response = render(&NotePage {
        layout: staff.layout(state, title),
        text: answer.message(),
    });
    *response.status_mut() = status;
    response
}

/// A page that needs a purpose of use before it reads personal data.
pub fn purpose_needed(staff: &Staff, state: &ConsoleState, title: &str) -> Response {
    let mut layout = staff.layout(state, title);
    layout.error = Some("查看个人信息前，请先在页面上方选择本次查询目的。".to_owned());
    render(&NotePage {
        layout,
        text: "每一次查看都会按所选目的记录在访问日志中。".to_owned(),
    })
}

/// A table, the shape of most list pages.
#[derive(Debug)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub empty: String,
}

#[derive(Debug)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub class: &'static str,
    pub actions: Vec<Action>,
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            href: None,
            class: "",
            actions: Vec::new(),
        }
    }

    pub fn link(text: impl Into<String>, href: String) -> Cell {
        Cell {
            href: Some(href),
            ..Cell::text(text)
        }
    }

    pub fn class(mut self, class: &'static str) -> Cell {
        self.class = class;
        self
    }
}

/// A button that POSTs a small form.
#[derive(Debug)]
pub struct Action {
    pub url: String,
    pub label: String,
    pub fields: Vec<(String, String)>,
}

/// A list page: an optional filter form above a table.
#[derive(Template)]
#[template(path = "console/table.html")]
#[derive(Debug)]
pub struct TablePage {
    pub layout: Layout,
    pub intro: String,
    pub filters: Option<Filters>,
    pub table: Table,
    pub links: Vec<(String, String)>,
}

/// A filter form.
#[derive(Debug)]
pub struct Filters {
    pub method: &'static str,
    pub action: String,
    pub fields: Vec<FilterField>,
}

#[derive(Debug)]
pub struct FilterField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    /// `text`, `date` or `select`.
    pub input: &'static str,
    pub options: Vec<Choice>,
}

impl FilterField {
    pub fn text(name: &'static str, label: &'static str, value: &str) -> FilterField {
        FilterField {
            name,
            label,
            value: value.to_owned(),
            input: "text",
            options: Vec::new(),
        }
    }

    pub fn date(name: &'static str, label: &'static str, value: &str) -> FilterField {
        FilterField {
            input: "date",
            ..FilterField::text(name, label, value)
        }
    }

    pub fn select(
        name: &'static str,
        label: &'static str,
        value: &str,
        options: Vec<(String, String)>,
    ) -> FilterField {
        FilterField {
            input: "select",
            options: options
                .into_iter()
                .map(|(v, l)| Choice {
                    selected: v == value,
                    value: v,
                    label: l,
                })
                .collect(),
            ..FilterField::text(name, label, value)
        }
    }
}

/// An API download (a workbook) passed on as it came: its type and file name, never cached.
pub fn download(answer: Answer) -> Response {
    let mut response = (StatusCode::OK, answer.bytes).into_response();
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(value) = answer.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The event types the policy routes (`routing.csv`), in its order.
pub fn routed_types(state: &ConsoleState) -> Vec<String> {
    state
        .app
        .permissions
        .current()
        .exchange
        .routes()
        .keys()
        .cloned()
        .collect()
}

/// A JSON value as one line of text.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join("、"),
        other => other.to_string(),
    }
}
