//! A small W3C WebDriver client for the console's browser tests: it drives Debian's
//! `chromium` through `chromedriver` (started by `scripts/test.sh`, named by
//! `SAFEGRID_TEST_WEBDRIVER`). Only the commands the tests use.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The environment variable naming the chromedriver URL.
pub const WEBDRIVER_ENV: &str = "SAFEGRID_TEST_WEBDRIVER";

/// WebDriver's key codes.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The chromedriver URL, or a panic that says how to get one.
pub fn webdriver_url() -> String {
    match std::env::var(WEBDRIVER_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{WEBDRIVER_ENV} is not set: run `bash scripts/test.sh`, which installs Debian's \
             chromium and chromium-driver if needed and starts chromedriver \
             (tests/scripts/chromedriver.sh)"
        ),
    }
}

/// One browser session.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    /// The browser's profile, removed with the session.
    profile: tempfile::TempDir,
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// A headless Chromium session; `phone` emulates a 390×844 phone screen, else a 1280×900
    /// desk window.
    pub async fn start(phone: bool) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client for chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--lang=zh-CN".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({ "binary": chromium_binary() });
        if phone {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0}});
        } else {
            args.push("--window-size=1280,900".to_owned());
        }
        options["args"] = json!(args);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": options,
        }}});
        let url = format!("{}/session", webdriver_url());
        let answer: Value = http
            .post(&url)
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        Browser {
            http,
            session,
            profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", webdriver_url(), self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        if answer["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn try_command(&self, path: &str, body: Value) -> Option<Value> {
        let url = format!("{}/session/{}{path}", webdriver_url(), self.session);
        let answer: Value = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        if answer["value"]["error"].is_string() {
            None
        } else {
            Some(answer["value"].clone())
        }
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching a CSS selector, if any (no waiting).
    pub async fn find(&self, css: &str) -> Option<Element> {
        let value = self
            .try_command("/element", json!({"using": "css selector", "value": css}))
            .await?;
        value[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.try_command("/elements", json!({"using": "css selector", "value": css}))
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// The first element matching `css`, waiting up to 15 s for it.
    pub async fn wait_for(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no element {css} on {}: {}",
                self.url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to 15 s until the page's HTML contains `text`.
    pub async fn wait_for_text(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no {text:?} on {}: {source}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Types `keys` into whatever element has the focus (WebDriver key codes such as
    /// [`TAB`] and [`ENTER`] included), as someone without a mouse would.
    pub async fn keys(&self, keys: &str) {
        let active = self
            .command(reqwest::Method::GET, "/element/active", None)
            .await;
        let id = active[ELEMENT_KEY]
            .as_str()
            .expect("an element has the focus")
            .to_owned();
        self.type_into(&Element(id), keys).await;
    }

    /// The focused element's attribute `name`.
    pub async fn focused_attribute(&self, name: &str) -> Option<String> {
        let active = self
            .command(reqwest::Method::GET, "/element/active", None)
            .await;
        let id = active[ELEMENT_KEY].as_str()?.to_owned();
        self.attribute(&Element(id), name).await
    }

    /// The names of the cookies the browser holds for the current page.
    pub async fn cookie_names(&self) -> Vec<String> {
        self.command(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The viewport as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }

    /// Ends the session (the browser exits) and removes its profile.
    pub async fn quit(self) {
        let url = format!("{}/session/{}", webdriver_url(), self.session);
        let _ = self.http.delete(&url).send().await;
        drop(self.profile);
    }
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
}
