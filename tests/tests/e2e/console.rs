//! The console in a real browser (Debian's chromium through chromedriver) and over plain
//! HTTPS: a grid worker logs in, finds a resident by pinyin initials as they type, opens the
//! profile, reports an event and sees it under "my events"; a compliance officer then finds
//! that very access in the audit search. Every page a grid worker can reach is scanned for
//! full ID numbers, and every URL too. Beside the use, the abuse: forms without or with a
//! wrong CSRF token, cross-site posts, forged and ended sessions, another role's view,
//! another grid's resident, an ID number in a URL; and the headers (CSP …) on every answer.
//!
//! `SAFEGRID_CONSOLE_SCREENSHOTS=<dir>` also writes the screenshots of `docs/console/`.

use std::collections::{BTreeSet, VecDeque};

use e2e_tests::webdriver::Browser;
use e2e_tests::{id, TestApp, GRID, OTHER_GRID, STREET};
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::json;

const ADDRESS: &str = "北京市朝阳区望京街道幸福里小区3号楼2单元501";

struct Street {
    zhang: String,
    zhang_id: String,
    wang: String,
    ids: Vec<String>,
    phones: Vec<String>,
}

async fn street(app: &TestApp) -> Street {
    let zhang_id = id("11010519700101002");
    let li_id = id("11010519800101001");
    let wang_id = id("11010519650303004");
    let body: String = [
        json!({"kind":"resident","source_id":"GA-1","version":"1","id_number":zhang_id,
            "name":"张三","phone":"13812345678","address":ADDRESS,"grid":GRID}),
        json!({"kind":"resident","source_id":"GA-2","version":"1","id_number":li_id,
            "name":"李四","phone":"13987654321","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-3","version":"1","id_number":wang_id,
            "name":"王五","grid":OTHER_GRID}),
    ]
    .iter()
    .map(|r| format!("{r}\n"))
    .collect();
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], 3, "{receipt}");
    // Civil affairs holds another phone for 张三: the profile shows the disagreement.
    let receipt = app
        .ingest(
            "minzheng",
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":"MZ-1","version":"1","id_number":zhang_id,
                    "name":"张三","phone":"13700001111","grid":GRID})
            ),
        )
        .await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    Street {
        zhang: app.unified_id("resident", "gongan", "GA-1").await,
        wang: app.unified_id("resident", "gongan", "GA-3").await,
        ids: vec![zhang_id.clone(), li_id, wang_id],
        zhang_id,
        phones: vec![
            "13812345678".to_owned(),
            "13987654321".to_owned(),
            "13700001111".to_owned(),
        ],
    }
}

/// Every valid 18-character ID number in `text`.
fn id_numbers_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 18 <= bytes.len() {
        let window = &bytes[i..i + 18];
        let digits17 = window[..17].iter().all(u8::is_ascii_digit);
        let last = window[17];
        if digits17 && (last.is_ascii_digit() || last == b'X' || last == b'x') {
            let candidate = String::from_utf8_lossy(window).to_uppercase();
            if model::id_number_check_digit(&candidate[..17])
                .is_some_and(|c| candidate.ends_with(c))
            {
                found.push(candidate);
            }
        }
        i += 1;
    }
    found
}

fn screenshots_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("SAFEGRID_CONSOLE_SCREENSHOTS").map(std::path::PathBuf::from)
}

async fn shot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Some(dir) = screenshots_dir() {
        std::fs::create_dir_all(&dir).expect("the screenshots directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("writing a screenshot");
    }
}

/// Logs in with a token through the form and chooses a purpose.
async fn login(browser: &Browser, app: &TestApp, token: &str, purpose: Option<&str>) {
    browser.goto(&format!("{}/console/login", app.url)).await;
    let field = browser.wait_for("#token").await;
    browser.type_into(&field, token).await;
    assert!(browser.cookie_names().await.iter().any(|c| c == "sg_login"));
    let submit = browser.wait_for("form button[type=submit]").await;
    browser.click(&submit).await;
    browser.wait_for("form.logout").await;
    if let Some(purpose) = purpose {
        let option = browser
            .wait_for(&format!("#purpose-select option[value=\"{purpose}\"]"))
            .await;
        browser.click(&option).await;
        let ok = browser.wait_for("form.purpose button").await;
        browser.click(&ok).await;
        // Only a page with a chosen purpose has this line (the home page without one asks
        // for one in words that would match a text search).
        browser.wait_for(".purpose-now").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_worker_finds_reports_and_a_compliance_officer_sees_the_access() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let worker_token = app.token("grid_worker", &[GRID], None);
    let browser = Browser::start(false).await;

    browser.goto(&format!("{}/console/login", app.url)).await;
    browser.wait_for("#token").await;
    shot(&browser, "login-desk").await;
    login(&browser, &app, &worker_token, Some("routine_visit")).await;

    // Search as they type: pinyin initials, no button pressed.
    browser
        .goto(&format!("{}/console/residents", app.url))
        .await;
    let q = browser.wait_for("#q").await;
    browser.type_into(&q, "zs").await;
    let link = browser
        .wait_for(&format!(
            "#results a[href=\"/console/residents/{}\"]",
            street.zhang
        ))
        .await;
    let results = browser.source().await;
    assert!(results.contains("张"), "the hit shows the (masked) name");
    assert!(
        !results.contains(&format!("/console/residents/{}", street.wang)),
        "a resident of another grid is not found"
    );
    shot(&browser, "search-desk").await;
    browser.click(&link).await;

    // The profile: sources, freshness, the disagreement, the watermark, the receipt.
    let profile = browser.wait_for_text("本次查看已记入访问日志").await;
    assert!(
        profile.contains("来源部门") && profile.contains("公安"),
        "sources shown"
    );
    assert!(profile.contains("不一致"), "the two phones disagree");
    assert!(
        profile.contains("测试grid_worker"),
        "the watermark names the viewer"
    );
    assert!(
        profile.contains("class=\"watermark\""),
        "the watermark is on the page"
    );
    assert!(
        !profile.contains(&street.zhang_id),
        "no full ID number on the profile"
    );
    let receipt = browser.wait_for(".receipt").await;
    let _ = receipt;
    let request_id = profile
        .split("请求编号 ")
        .nth(1)
        .and_then(|rest| rest.split('）').next())
        .expect("the profile names its request id")
        .to_owned();
    assert_eq!(request_id.len(), 24, "{request_id}");
    shot(&browser, "profile-desk").await;

    // Report an event for this resident.
    let report = browser
        .wait_for("a[href^=\"/console/reports/new?party=\"]")
        .await;
    browser.click(&report).await;
    let dispute = browser.wait_for("#type option[value=\"dispute\"]").await;
    browser.click(&dispute).await;
    let title = browser.wait_for("#title").await;
    browser.type_into(&title, "楼道堆放杂物影响通行").await;
    let description = browser.wait_for("#description").await;
    browser
        .type_into(
            &description,
            "三号楼二单元楼道内堆放纸箱，住户反映影响通行和消防。",
        )
        .await;
    shot(&browser, "report-desk").await;
    let submit = browser.wait_for("form.stack button.primary").await;
    browser.click(&submit).await;
    browser.wait_for(".flash").await;
    let mine = browser.wait_for_text("楼道堆放杂物影响通行").await;
    assert!(browser.url().await.contains("/console/events/mine"));
    assert!(mine.contains("已上报"), "the flash says it was reported");
    assert!(mine.contains("上报"), "its state is 上报");
    shot(&browser, "my-events-desk").await;

    // A full ID number typed into the box is searched (a grid worker who sees ID numbers
    // only masked finds nothing by one: the index query holds the view's rules); it never
    // enters a URL and the results do not repeat it.
    browser
        .goto(&format!("{}/console/residents", app.url))
        .await;
    let q = browser.wait_for("#q").await;
    browser.type_into(&q, &street.zhang_id).await;
    let page = browser.wait_for_text("找到").await;
    let in_results = page.split("id=\"results\"").nth(1).unwrap_or_default();
    assert!(
        id_numbers_in(in_results).is_empty(),
        "results repeat no ID number"
    );
    assert!(!browser.url().await.contains(&street.zhang_id));

    // Every page a grid worker can reach: no full ID number, none in a URL.
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([format!("{}/console/", app.url)]);
    while let Some(url) = queue.pop_front() {
        if !seen.insert(url.clone()) || seen.len() > 60 {
            continue;
        }
        browser.goto(&url).await;
        let source = browser.source().await;
        let found = id_numbers_in(&source);
        assert!(found.is_empty(), "{url} shows ID numbers {found:?}");
        for id_number in &street.ids {
            assert!(
                !url.contains(id_number.as_str()),
                "an ID number in a URL: {url}"
            );
        }
        for link in browser.find_all("a[href^=\"/console/\"]").await {
            if let Some(href) = browser.attribute(&link, "href").await {
                let absolute = if href.starts_with('/') {
                    format!("{}{href}", app.url)
                } else {
                    href
                };
                if !seen.contains(&absolute) {
                    queue.push_back(absolute);
                }
            }
        }
    }
    assert!(
        seen.iter().any(|u| u.contains("/console/events/e_")),
        "the crawl reached the reported event: {seen:?}"
    );
    for page in [
        "/console/residents/r_",
        "/console/events/mine",
        "/console/reports/new",
    ] {
        assert!(
            seen.iter().any(|u| u.contains(page)),
            "the crawl reached {page}: {seen:?}"
        );
    }

    // The compliance officer finds that very access.
    let logout = browser.wait_for("form.logout button").await;
    browser.click(&logout).await;
    browser.wait_for("#token").await;
    let officer = app.token("compliance_officer", &[STREET], None);
    login(&browser, &app, &officer, None).await;
    browser.goto(&format!("{}/console/audit", app.url)).await;
    let actor = browser.wait_for("input[name=actor]").await;
    browser.type_into(&actor, "test-grid_worker").await;
    let resident = browser.wait_for("input[name=resident]").await;
    browser.type_into(&resident, &street.zhang_id).await;
    let action = browser.wait_for("input[name=action]").await;
    browser.type_into(&action, "read_resident").await;
    let search = browser.wait_for("form.filters button").await;
    browser.click(&search).await;
    let audit = browser.wait_for_text(&request_id).await;
    assert!(
        audit.contains("查看居民档案"),
        "the access is listed as a profile read"
    );
    assert!(
        !browser.url().await.contains(&street.zhang_id),
        "the filter was POSTed"
    );
    assert!(
        id_numbers_in(&audit).is_empty(),
        "the audit page repeats no ID number"
    );
    shot(&browser, "audit-desk").await;
    browser
        .goto(&format!("{}/console/audit/verify", app.url))
        .await;
    let verify = browser.wait_for("form button.primary").await;
    browser.click(&verify).await;
    browser.wait_for_text("校验通过").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_on_a_phone_width_screen_and_in_large_text_mode() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let browser = Browser::start(true).await;
    let token = app.token("grid_worker", &[GRID], None);
    login(&browser, &app, &token, Some("elderly_care")).await;
    shot(&browser, "home-phone").await;
    browser
        .goto(&format!("{}/console/residents", app.url))
        .await;
    let q = browser.wait_for("#q").await;
    browser.type_into(&q, "zhangsan").await;
    browser
        .wait_for(&format!(
            "#results a[href=\"/console/residents/{}\"]",
            street.zhang
        ))
        .await;
    shot(&browser, "search-phone").await;
    browser
        .goto(&format!("{}/console/residents/{}", app.url, street.zhang))
        .await;
    browser.wait_for_text("本次查看已记入访问日志").await;
    shot(&browser, "profile-phone").await;
    // The large-text mode stays on for the device.
    let large = browser.wait_for("form.prefs button").await;
    browser.click(&large).await;
    browser.wait_for("body.large").await;
    browser
        .goto(&format!("{}/console/events/mine", app.url))
        .await;
    browser.wait_for("body.large").await;
    shot(&browser, "my-events-phone-large").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_worker_without_a_mouse_finds_and_opens_a_profile() {
    use e2e_tests::webdriver::{ENTER, TAB};
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let browser = Browser::start(false).await;
    let token = app.token("grid_worker", &[GRID], None);
    login(&browser, &app, &token, Some("routine_visit")).await;
    browser
        .goto(&format!("{}/console/residents", app.url))
        .await;
    browser.wait_for("#q").await;
    // The search box has the focus on arrival; Enter submits, Tab walks to the first hit.
    assert_eq!(browser.focused_attribute("id").await.as_deref(), Some("q"));
    browser.keys(&format!("zhangsan{ENTER}")).await;
    let href = format!("/console/residents/{}", street.zhang);
    browser
        .wait_for(&format!("#results a[href=\"{href}\"]"))
        .await;
    let mut reached = false;
    for _ in 0..30 {
        browser.keys(TAB).await;
        if browser.focused_attribute("href").await.as_deref() == Some(href.as_str()) {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the hit");
    browser.keys(ENTER).await;
    browser.wait_for_text("本次查看已记入访问日志").await;
    assert!(browser.url().await.ends_with(&href));
    browser.quit().await;
}

#[tokio::test]
async fn workbooks_download_through_the_console_and_never_by_an_id_number_in_a_url() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    // One record gongan sent with a wrong check digit.
    let bad = format!("{}0", &street.zhang_id[..17]);
    let bad = if bad == street.zhang_id {
        format!("{}1", &street.zhang_id[..17])
    } else {
        bad
    };
    let receipt = app
        .ingest(
            "gongan",
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":"GA-9","version":"1","id_number":bad,
                    "name":"赵六","grid":GRID})
            ),
        )
        .await;
    assert_eq!(
        receipt["rejected"].as_array().map(Vec::len),
        Some(1),
        "{receipt}"
    );
    let client = raw_client(&app);
    let publisher = app.publisher("gongan");
    let (session, _) = sign_in(&app, &client, &publisher).await;
    let page = view(&client, &app, &session, "/console/quarantine")
        .await
        .expect("the quarantine")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains("GA-9") && page.contains("/console/quarantine.xlsx"),
        "{page}"
    );
    assert!(
        !page.contains(&bad),
        "the record as sent stays off the page"
    );
    let book = view(&client, &app, &session, "/console/quarantine.xlsx")
        .await
        .expect("the workbook");
    assert_eq!(book.status(), 200);
    assert!(book.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .contains("spreadsheetml"));
    assert!(book.bytes().await.expect("bytes").starts_with(b"PK"));

    let officer = app.token("compliance_officer", &[STREET], None);
    let (session, csrf) = sign_in(&app, &client, &officer).await;
    let post = |form: Vec<(&'static str, String)>| {
        client
            .post(format!("{}/console/audit/report.xlsx", app.url))
            .header("cookie", format!("sg_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
    };
    let book = post(vec![
        ("csrf", csrf.clone()),
        ("resident", street.zhang_id.clone()),
    ])
    .await
    .expect("the report");
    assert_eq!(book.status(), 200);
    let disposition = book.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!disposition.contains(&street.zhang_id), "{disposition}");
    assert!(book.bytes().await.expect("bytes").starts_with(b"PK"));
    let refused = post(vec![
        ("csrf", String::new()),
        ("resident", street.zhang_id.clone()),
    ])
    .await
    .expect("an answer");
    assert_eq!(refused.status(), 403);
    // A grid worker gets the API's refusal, not a workbook.
    let worker = app.token("grid_worker", &[GRID], None);
    let (session, _) = sign_in(&app, &client, &worker).await;
    let refused = view(&client, &app, &session, "/console/quarantine.xlsx")
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 403);
}

/// A client that does not follow redirects, so cookies and `Location` can be read.
fn raw_client(app: &TestApp) -> reqwest::Client {
    broker::tls::install_crypto_provider();
    let cert = app
        .broker
        .as_ref()
        .and_then(|b| b.dev_certificate.clone())
        .expect("the dev certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in broker::tls::load_certs(&cert).expect("the certificate") {
        roots.add(c).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v
                .split(';')
                .next()
                .and_then(|p| p.split_once('='))
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default();
            (value, v.to_owned())
        })
}

/// GET a console page as the session's staff member.
async fn view(
    client: &reqwest::Client,
    app: &TestApp,
    session: &str,
    path: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("{}{path}", app.url))
        .header("cookie", format!("sg_session={session}"))
        .send()
        .await
}

/// POST a console form as the session's staff member.
async fn submit<K: AsRef<str>, V: AsRef<str>>(
    client: &reqwest::Client,
    app: &TestApp,
    session: &str,
    path: &str,
    form: &[(K, V)],
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}{path}", app.url))
        .header("cookie", format!("sg_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
}

/// A urlencoded form body.
fn form_body<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k.as_ref()), encode(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in session over plain HTTPS: (session cookie, CSRF token).
async fn sign_in(app: &TestApp, client: &reqwest::Client, token: &str) -> (String, String) {
    let page = client
        .get(format!("{}/console/login", app.url))
        .send()
        .await
        .expect("the login page");
    let (login_cookie, _) = cookie(page.headers(), "sg_login").expect("the login binding cookie");
    let response = client
        .post(format!("{}/console/login", app.url))
        .header("cookie", format!("sg_login={login_cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", token),
            ("login_csrf", login_cookie.as_str()),
        ]))
        .send()
        .await
        .expect("the login");
    assert_eq!(response.status(), 303);
    let (session, set) = cookie(response.headers(), "sg_session").expect("a session cookie");
    for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(part), "session cookie lacks {part}: {set}");
    }
    let home = view(client, app, &session, "/console/")
        .await
        .expect("the home page")
        .text()
        .await
        .expect("HTML");
    let csrf = home
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a CSRF token")
        .to_owned();
    (session, csrf)
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let client = raw_client(&app);
    let token = app.token("grid_worker", &[GRID], None);
    let (session, _) = sign_in(&app, &client, &token).await;
    for path in [
        "/console/login",
        "/console/",
        "/console/residents",
        "/console/events/mine",
        "/console/nowhere",
        "/console/assets/htmx-2.0.11.min.js",
        "/console/assets/console.css",
    ] {
        let response = client
            .get(format!("{}{path}", app.url))
            .header("cookie", format!("sg_session={session}"))
            .send()
            .await
            .expect("an answer");
        let headers = response.headers();
        let csp = headers
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path} has no CSP"));
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
        if !path.contains("/assets/") {
            assert_eq!(headers["cache-control"], "no-store", "{path}");
        }
    }
    // No page needs inline script or style: CSP would block them.
    let home = view(&client, &app, &session, "/console/")
        .await
        .expect("home")
        .text()
        .await
        .expect("HTML");
    assert!(
        !home.contains("<script>") && !home.contains("style=\""),
        "{home}"
    );
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_or_from_another_site_are_refused() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let client = raw_client(&app);
    let token = app.token("grid_worker", &[GRID], None);
    let (session, csrf) = sign_in(&app, &client, &token).await;
    let post = |path: &str, form: Vec<(&str, String)>, extra: Option<(&str, &str)>| {
        let mut request = client
            .post(format!("{}{path}", app.url))
            .header("cookie", format!("sg_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form));
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request.send()
    };
    // The right token works.
    let ok = post(
        "/console/purpose",
        vec![("csrf", csrf.clone()), ("purpose", "routine_visit".into())],
        None,
    )
    .await
    .expect("an answer");
    assert_eq!(ok.status(), 303);
    // No token, a wrong one, another session's.
    let other = sign_in(&app, &client, &token).await.1;
    for bad in [String::new(), "0".repeat(64), other] {
        for (path, mut form) in [
            (
                "/console/purpose",
                vec![("purpose", "emergency".to_owned())],
            ),
            ("/console/residents", vec![("q", "zs".to_owned())]),
            (
                "/console/reports",
                vec![
                    ("type", "dispute".to_owned()),
                    ("grid", GRID.to_owned()),
                    ("title", "伪造的上报".to_owned()),
                ],
            ),
            ("/console/logout", vec![]),
        ] {
            form.push(("csrf", bad.clone()));
            let response = post(path, form, None).await.expect("an answer");
            assert_eq!(response.status(), 403, "{path} with csrf {bad:?}");
            let body = response.text().await.unwrap_or_default();
            assert!(body.contains("csrf_invalid"), "{body}");
        }
    }
    // The right token from another site: refused before the token is looked at.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let response = post(
            "/console/purpose",
            vec![("csrf", csrf.clone()), ("purpose", "emergency".into())],
            Some((name, value)),
        )
        .await
        .expect("an answer");
        assert_eq!(response.status(), 403, "{name}: {value}");
    }
    // A login form posted without the cookie its page set (login CSRF).
    let response = client
        .post(format!("{}/console/login", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", token.as_str()),
            ("login_csrf", "abc"),
        ]))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 403);
    // Nothing was reported by the refused forms.
    let (_, mine) = app
        .get("/v1/events?reported_by=me", &token, Some("routine_visit"))
        .await;
    assert_eq!(mine["total"], 0, "{mine}");
    let _ = street;
}

#[tokio::test]
async fn sessions_roles_grids_and_urls_are_held_to_the_apis_rules() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let client = raw_client(&app);
    let get = |path: String, session: String| {
        client
            .get(format!("{}{path}", app.url))
            .header("cookie", format!("sg_session={session}"))
            .send()
    };
    // A forged session cookie, and none: the login page.
    for forged in ["0".repeat(64), String::new()] {
        let response = get("/console/".into(), forged).await.expect("an answer");
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()[LOCATION], "/console/login");
    }
    // A bad token is refused at login, with its reason and no session.
    let login = client
        .get(format!("{}/console/login", app.url))
        .send()
        .await
        .expect("login");
    let (binding, _) = cookie(login.headers(), "sg_login").expect("binding");
    let refused = client
        .post(format!("{}/console/login", app.url))
        .header("cookie", format!("sg_login={binding}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", "eyJhbGciOiJub25lIn0.e30."),
            ("login_csrf", binding.as_str()),
        ]))
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 401);
    assert!(cookie(refused.headers(), "sg_session").is_none());

    let worker = app.token("grid_worker", &[GRID], None);
    let (session, csrf) = sign_in(&app, &client, &worker).await;
    // Personal data needs a purpose first.
    let page = get(
        format!("/console/residents/{}", street.zhang),
        session.clone(),
    )
    .await
    .expect("an answer")
    .text()
    .await
    .expect("HTML");
    assert!(page.contains("请先在页面上方选择本次查询目的"), "{page}");
    assert!(
        !page.contains("张"),
        "nothing of the resident before a purpose"
    );
    submit(
        &client,
        &app,
        &session,
        "/console/purpose",
        &[("csrf", csrf.as_str()), ("purpose", "routine_visit")],
    )
    .await
    .expect("purpose");
    // With a purpose, the profile, masked as the API masks it.
    let own = get(
        format!("/console/residents/{}", street.zhang),
        session.clone(),
    )
    .await
    .expect("an answer");
    assert_eq!(own.status(), 200);
    let own = own.text().await.expect("HTML");
    assert!(own.contains("本次查看已记入访问日志"), "{own}");
    assert!(id_numbers_in(&own).is_empty(), "{own}");
    // Another grid's resident answers like a missing one.
    let other = get(
        format!("/console/residents/{}", street.wang),
        session.clone(),
    )
    .await
    .expect("an answer");
    assert_eq!(other.status(), 404);
    let other = other.text().await.expect("HTML");
    assert!(!other.contains("王五") && !other.contains("王*"), "{other}");
    // An ID number in a URL is not searched (and so not sent anywhere).
    let page = get(
        format!("/console/residents?q={}", street.zhang_id),
        session.clone(),
    )
    .await
    .expect("an answer")
    .text()
    .await
    .expect("HTML");
    assert!(page.contains("不要放在网址里"), "{page}");
    assert!(!page.contains(&format!("/console/residents/{}", street.zhang)));
    // A path that is not an id goes nowhere near the API.
    let odd = get("/console/residents/..%2Fv1%2Fadmin".into(), session.clone())
        .await
        .expect("an answer");
    assert_eq!(odd.status(), 404);
    // The worker's own access history lists that read.
    let mine = get("/console/mine".into(), session.clone())
        .await
        .expect("an answer")
        .text()
        .await
        .expect("HTML");
    assert!(
        mine.contains("查看居民档案") && mine.contains(&street.zhang),
        "{mine}"
    );
    // Logout ends the session: the old cookie leads to the login page.
    let out = submit(
        &client,
        &app,
        &session,
        "/console/logout",
        &[("csrf", csrf.as_str())],
    )
    .await
    .expect("logout");
    assert_eq!(out.status(), 303);
    let after = get("/console/".into(), session).await.expect("an answer");
    assert_eq!(after.status(), 303);

    // A compliance officer may not read profiles: the API's refusal, in Chinese.
    let officer = app.token("compliance_officer", &[STREET], None);
    let (session, csrf) = sign_in(&app, &client, &officer).await;
    submit(
        &client,
        &app,
        &session,
        "/console/purpose",
        &[("csrf", csrf.as_str()), ("purpose", "routine_visit")],
    )
    .await
    .expect("purpose");
    let refused = get(
        format!("/console/residents/{}", street.zhang),
        session.clone(),
    )
    .await
    .expect("an answer");
    let status = refused.status();
    let text = refused.text().await.expect("HTML");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("role_cannot_read"), "{text}");
    assert!(!text.contains("张"), "{text}");
    // A grid worker may not open the audit search.
    let (session, _) = sign_in(&app, &client, &worker).await;
    let audit = get("/console/audit".into(), session)
        .await
        .expect("an answer");
    assert_eq!(audit.status(), 403);
    // The audit log holds the console's reads like the API's, with the worker's purpose.
    let (status, records) = app
        .get(
            "/v1/audit/records?actor=test-grid_worker&action=read_resident",
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{records}");
    let records = records["records"].as_array().cloned().unwrap_or_default();
    assert!(
        records.iter().any(|r| r["purpose"] == "routine_visit"),
        "{records:?}"
    );
    for phone in &street.phones {
        assert!(!text.contains(phone.as_str()));
    }
}

/// A small OpenID provider on loopback http (the broker allows http only there): discovery,
/// JWKS, an authorization endpoint that consents at once, and a token endpoint that checks
/// the PKCE verifier against the challenge, the redirect URI and the code's single use.
mod provider {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Form, Json, Router};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::{json, Value};

    pub const CLIENT_ID: &str = "safegrid-console";
    pub const REDIRECT: &str = "https://broker.test/console/login/callback";

    struct Grant {
        challenge: String,
        redirect_uri: String,
    }

    struct Inner {
        issuer: String,
        key: Ed25519KeyPair,
        codes: Mutex<HashMap<String, Grant>>,
        counter: Mutex<u64>,
    }

    #[derive(Clone)]
    pub struct Provider(Arc<Inner>);

    impl Provider {
        pub async fn start() -> Provider {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let issuer = format!("http://{}", listener.local_addr().expect("an address"));
            let pkcs8 =
                Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("a key");
            let provider = Provider(Arc::new(Inner {
                issuer,
                key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key"),
                codes: Mutex::default(),
                counter: Mutex::default(),
            }));
            let router = Router::new()
                .route("/.well-known/openid-configuration", get(discovery))
                .route("/jwks", get(jwks))
                .route("/authorize", get(authorize))
                .route("/token", post(token))
                .with_state(provider.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            provider
        }

        pub fn issuer(&self) -> &str {
            &self.0.issuer
        }

        fn sign(&self, claims: &Value) -> String {
            let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "console-1"});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = self.0.key.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }
    }

    async fn discovery(State(p): State<Provider>) -> Json<Value> {
        let issuer = &p.0.issuer;
        Json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        }))
    }

    async fn jwks(State(p): State<Provider>) -> Json<Value> {
        Json(json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "console-1",
            "x": URL_SAFE_NO_PAD.encode(p.0.key.public_key().as_ref()),
        }]}))
    }

    async fn authorize(
        State(p): State<Provider>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let field = |k: &str| q.get(k).cloned().unwrap_or_default();
        if field("client_id") != CLIENT_ID
            || field("response_type") != "code"
            || field("code_challenge_method") != "S256"
            || field("code_challenge").len() != 43
            || field("redirect_uri") != REDIRECT
        {
            return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
        }
        let code = {
            let mut counter = p.0.counter.lock().expect("the lock");
            *counter += 1;
            format!("code-{}", *counter)
        };
        p.0.codes.lock().expect("the lock").insert(
            code.clone(),
            Grant {
                challenge: field("code_challenge"),
                redirect_uri: field("redirect_uri"),
            },
        );
        let location = format!("{REDIRECT}?code={code}&state={}", field("state"));
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    }

    async fn token(State(p): State<Provider>, Form(f): Form<HashMap<String, String>>) -> Response {
        let field = |k: &str| f.get(k).cloned().unwrap_or_default();
        let grant = p.0.codes.lock().expect("the lock").remove(&field("code"));
        let verifier_ok = |g: &Grant| {
            let digest =
                ring::digest::digest(&ring::digest::SHA256, field("code_verifier").as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref()) == g.challenge
        };
        match grant {
            Some(g)
                if field("grant_type") == "authorization_code"
                    && field("client_id") == CLIENT_ID
                    && field("redirect_uri") == g.redirect_uri
                    && verifier_ok(&g) =>
            {
                let now = chrono::Utc::now().timestamp();
                let access = p.sign(&json!({
                    "iss": p.0.issuer, "aud": "safegrid", "sub": "kc-gw-7",
                    "name": "统一认证网格员", "roles": ["grid_worker"],
                    "jurisdiction": [super::GRID], "iat": now, "exp": now + 600,
                }));
                Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 600}))
                    .into_response()
            }
            _ => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            )
                .into_response(),
        }
    }
}

async fn provider_app(provider: &provider::Provider) -> TestApp {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("safegrid.toml");
    let text = format!(
        "[auth]\ndiscovery = true\nissuer = \"{}\"\naudience = \"safegrid\"\n\n[console]\n\
         oidc_client_id = \"{}\"\noidc_redirect_url = \"{}\"\n",
        provider.issuer(),
        provider::CLIENT_ID,
        provider::REDIRECT
    );
    std::fs::write(&path, text).expect("the configuration");
    let config = broker::config::Config::load(&path).expect("a valid configuration");
    TestApp::spawn_with(config).await
}

/// Starts a login at the broker: (the provider's authorization URL, the state cookie).
async fn start_login(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let response = client
        .get(format!("{}/console/login/oidc", app.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 303);
    let (state, set) = cookie(response.headers(), "sg_oidc").expect("the state cookie");
    for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/console/login"] {
        assert!(set.contains(part), "{set}");
    }
    let location = response.headers()[LOCATION]
        .to_str()
        .expect("a location")
        .to_owned();
    (location, state)
}

/// Follows the provider's consent: the query of the redirect back to the broker.
async fn consent(client: &reqwest::Client, authorize: &str) -> String {
    let response = client
        .get(authorize)
        .send()
        .await
        .expect("the provider answers");
    assert_eq!(response.status(), 302, "{authorize}");
    let back = response.headers()[LOCATION]
        .to_str()
        .expect("a location")
        .to_owned();
    back.strip_prefix(&format!("{}?", provider::REDIRECT))
        .expect("back to the registered redirect URI")
        .to_owned()
}

async fn callback(
    app: &TestApp,
    client: &reqwest::Client,
    query: &str,
    state_cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = client.get(format!("{}/console/login/callback?{query}", app.url));
    if let Some(state) = state_cookie {
        request = request.header("cookie", format!("sg_oidc={state}"));
    }
    request.send().await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_log_in_through_the_identity_provider_with_pkce_and_stolen_codes_are_worthless() {
    let provider = provider::Provider::start().await;
    let app = provider_app(&provider).await;
    let client = raw_client(&app);
    let login = client
        .get(format!("{}/console/login", app.url))
        .send()
        .await
        .expect("the login page")
        .text()
        .await
        .expect("HTML");
    assert!(login.contains("/console/login/oidc"), "{login}");

    // The whole round: broker → provider → broker, a session for the provider's user.
    let (authorize, state) = start_login(&app, &client).await;
    assert!(authorize.starts_with(&format!("{}/authorize?", provider.issuer())));
    assert!(authorize.contains("code_challenge_method=S256"));
    let back = consent(&client, &authorize).await;
    let done = callback(&app, &client, &back, Some(&state)).await;
    assert_eq!(done.status(), 303);
    let (session, _) = cookie(done.headers(), "sg_session").expect("a session");
    let home = view(&client, &app, &session, "/console/")
        .await
        .expect("home")
        .text()
        .await
        .expect("HTML");
    assert!(home.contains("统一认证网格员"), "{home}");

    // The same callback again: the state is spent.
    let again = callback(&app, &client, &back, Some(&state)).await;
    assert_eq!(again.status(), 401);
    assert!(again
        .text()
        .await
        .unwrap_or_default()
        .contains("oidc_state_invalid"));

    // A callback without the browser's state cookie (a link someone else started).
    let (authorize, _) = start_login(&app, &client).await;
    let back = consent(&client, &authorize).await;
    let refused = callback(&app, &client, &back, None).await;
    assert_eq!(refused.status(), 401);
    assert!(cookie(refused.headers(), "sg_session").is_none());

    // A victim's code, stolen, replayed with the thief's own login: the thief's verifier does
    // not match the victim's challenge, so the provider issues nothing.
    let (victim_authorize, _victim_state) = start_login(&app, &client).await;
    let victim_back = consent(&client, &victim_authorize).await;
    let stolen_code = victim_back
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .expect("a code")
        .to_owned();
    let (_, thief_state) = start_login(&app, &client).await;
    let replay = callback(
        &app,
        &client,
        &format!("code={stolen_code}&state={thief_state}"),
        Some(&thief_state),
    )
    .await;
    assert_eq!(replay.status(), 401);
    let text = replay.text().await.unwrap_or_default();
    assert!(text.contains("oidc_token_failed"), "{text}");

    // The provider says no: a fixed message, nothing of the provider's text repeated.
    let denied = callback(
        &app,
        &client,
        "error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state=x",
        Some("x"),
    )
    .await;
    assert_eq!(denied.status(), 401);
    let text = denied.text().await.unwrap_or_default();
    assert!(
        text.contains("oidc_denied") && !text.contains("<script>alert"),
        "{text}"
    );
}

#[tokio::test]
async fn officers_move_events_on_the_console_as_far_as_the_api_lets_them() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let client = raw_client(&app);
    let worker = app.token("grid_worker", &[GRID], None);
    let (session, csrf) = sign_in(&app, &client, &worker).await;
    let post = |session: String, path: String, form: Vec<(&'static str, String)>| {
        client
            .post(format!("{}{path}", app.url))
            .header("cookie", format!("sg_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
    };
    let reported = post(
        session.clone(),
        "/console/reports".into(),
        vec![
            ("csrf", csrf.clone()),
            ("type", "dispute".into()),
            ("grid", GRID.into()),
            ("title", "邻里噪音纠纷".into()),
            ("party", street.zhang.clone()),
        ],
    )
    .await
    .expect("the report");
    assert_eq!(reported.status(), 303);
    let location = reported.headers()[LOCATION]
        .to_str()
        .expect("a location")
        .to_owned();
    let event = location
        .split("reported=")
        .nth(1)
        .expect("the new event's id")
        .to_owned();
    assert!(event.starts_with("e_"), "{location}");
    // A grid worker may not accept it: the API's refusal, on the page.
    let refused = post(
        session,
        format!("/console/events/{event}/transitions"),
        vec![("csrf", csrf), ("to", "accepted".into())],
    )
    .await
    .expect("an answer");
    assert_eq!(refused.status(), 403);
    assert!(refused
        .text()
        .await
        .unwrap_or_default()
        .contains("transition_not_allowed"));
    // A community officer accepts it; its page then offers the next moves.
    let officer = app.token("community_officer", &[GRID], None);
    let (session, csrf) = sign_in(&app, &client, &officer).await;
    post(
        session.clone(),
        "/console/purpose".into(),
        vec![
            ("csrf", csrf.clone()),
            ("purpose", "dispute_mediation".into()),
        ],
    )
    .await
    .expect("purpose");
    let moved = post(
        session.clone(),
        format!("/console/events/{event}/transitions"),
        vec![
            ("csrf", csrf.clone()),
            ("to", "accepted".into()),
            ("note", "已联系双方".into()),
        ],
    )
    .await
    .expect("an answer");
    assert_eq!(moved.status(), 303);
    let page = view(&client, &app, &session, &format!("/console/events/{event}"))
        .await
        .expect("the event")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains("受理") && page.contains("已联系双方"),
        "{page}"
    );
    assert!(
        page.contains("value=\"dispatched\""),
        "the next move is offered: {page}"
    );
    // A skipped state is the API's refusal too.
    let skipped = post(
        session,
        format!("/console/events/{event}/transitions"),
        vec![("csrf", csrf), ("to", "closed".into())],
    )
    .await
    .expect("an answer");
    assert_eq!(skipped.status(), 409);
}

#[tokio::test]
async fn a_department_reads_its_batch_receipt_and_officers_the_sharing_chart() {
    let app = TestApp::spawn().await;
    let street = street(&app).await;
    let receipt = app
        .ingest(
            "minzheng",
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":"MZ-2","version":"1",
                    "id_number":street.ids[1],"name":"李四","grid":GRID})
            ),
        )
        .await;
    let batch = receipt["batch_id"].as_str().expect("a batch id").to_owned();
    let client = raw_client(&app);
    let (session, csrf) = sign_in(&app, &client, &app.publisher("minzheng")).await;
    let (client_ref, app_ref) = (&client, &app);
    let lookup = move |session: String, csrf: String, batch: String| async move {
        submit(
            client_ref,
            app_ref,
            &session,
            "/console/receipts",
            &[("csrf", csrf), ("batch", batch)],
        )
        .await
    };
    let page = lookup(session.clone(), csrf.clone(), batch.clone())
        .await
        .expect("the receipt")
        .text()
        .await
        .expect("HTML");
    assert!(page.contains("接收") && page.contains("新增"), "{page}");
    // Another department's batch is not this department's to read.
    let (other, other_csrf) = sign_in(&app, &client, &app.publisher("gongan")).await;
    let page = lookup(other, other_csrf, batch.clone())
        .await
        .expect("an answer")
        .text()
        .await
        .expect("HTML");
    assert!(page.contains("class=\"error\""), "{page}");
    assert!(!page.contains("新增"), "{page}");
    // Not an id: refused before the API.
    let page = lookup(session, csrf, "../../v1/admin".into())
        .await
        .expect("an answer")
        .text()
        .await
        .expect("HTML");
    assert!(page.contains("批次编号只含字母"), "{page}");

    // The street officer's chart: one bar per department that published.
    let officer = app.token("street_officer", &[STREET], None);
    let (session, _) = sign_in(&app, &client, &officer).await;
    let chart = view(&client, &app, &session, "/console/stats")
        .await
        .expect("the chart")
        .text()
        .await
        .expect("HTML");
    assert!(
        chart.contains("<svg") && chart.contains("公安") && chart.contains("民政"),
        "{chart}"
    );
    assert_eq!(
        chart.matches("fill=\"#1f5fa8\"").count(),
        chart.matches("fill=\"#e3e8ee\"").count()
    );
    // A grid worker has no chart in the menu and the API refuses it.
    let worker = app.token("grid_worker", &[GRID], None);
    let (session, _) = sign_in(&app, &client, &worker).await;
    let refused = view(&client, &app, &session, "/console/stats")
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 403);
}
