//! End-to-end test helpers: start the real broker on port 0 over TLS with a fresh data
//! directory, and talk HTTPS to it with real tokens.
//!
//! Guarantees: every [`TestApp`] has its own data directory and master key (beside the data
//! directory, as in production) and trusts only its own self-signed certificate.

pub mod receiver;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::app::{self, RunningBroker, ServeOptions};
use broker::auth::{TokenRequest, TokenSigner};
use broker::config::Config;
use reqwest::{Client, Response};
use serde_json::Value;

/// A running broker and a client for it.
#[derive(Debug)]
pub struct TestApp {
    pub broker: Option<RunningBroker>,
    pub url: String,
    pub client: Client,
    pub signer: TokenSigner,
    pub data_dir: PathBuf,
    /// The store's settings, kept for a restart (the PostgreSQL schema of this broker).
    pub store: broker::config::StoreSection,
    /// Keeps the temporary directory alive.
    pub root: tempfile::TempDir,
}

/// `SAFEGRID_TEST_STORE=postgres` runs every test broker on the PostgreSQL store of
/// `SAFEGRID_TEST_PG_URL` (a fresh schema each) instead of the embedded file: the same suite,
/// on the other engine (`bash scripts/test.sh` runs it both ways).
pub const STORE_ENV: &str = "SAFEGRID_TEST_STORE";

/// True when the suite runs on the PostgreSQL store.
pub fn on_postgres() -> bool {
    std::env::var(STORE_ENV).is_ok_and(|v| v == "postgres")
}

/// A fresh schema name for a test broker's PostgreSQL store.
pub fn fresh_schema(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{label}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server of `SAFEGRID_TEST_PG_URL`; panics (never skips) without it.
pub fn pg_url() -> String {
    match std::env::var("SAFEGRID_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "SAFEGRID_TEST_PG_URL is not set: run `bash scripts/test.sh`, which starts a \
             throwaway PostgreSQL (connectors/scripts/ci-postgres.sh) and sets it"
        ),
    }
}

/// A store section on the PostgreSQL test server, in a fresh schema.
pub fn postgres_store() -> broker::config::StoreSection {
    broker::config::StoreSection {
        backend: broker::config::StoreBackend::Postgres,
        url: Some(broker::config::StoreUrl::new(pg_url())),
        schema: fresh_schema("e2e"),
        ..broker::config::StoreSection::default()
    }
}

/// The street all fixtures live in.
pub const STREET: &str = "110105001";
pub const COMMUNITY: &str = "110105001001";
pub const GRID: &str = "110105001001003";
pub const OTHER_GRID: &str = "110105001002001";

impl TestApp {
    /// Starts a broker in dev mode on 127.0.0.1:0 with the default configuration.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Config::default()).await
    }

    /// Starts a broker whose data directory is `root/data` (a test may prepare it first,
    /// e.g. mount a small file system for the audit log).
    pub async fn spawn_in(root: tempfile::TempDir, config: Config) -> TestApp {
        let data_dir = root.path().join("data");
        let app = TestApp::start_in(root, data_dir, config).await;
        app.wait_ready().await;
        app
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let root = tempfile::tempdir().expect("temporary directory for the test broker");
        let data_dir = root.path().join("data");
        let app = TestApp::start_in(root, data_dir, config).await;
        app.wait_ready().await;
        app
    }

    /// Starts a broker with its own data directory that shares another broker's master key
    /// (`master_key`, as brokers on one PostgreSQL store do) and `config`.
    pub async fn spawn_sharing(config: Config, master_key: &Path) -> TestApp {
        let root = tempfile::tempdir().expect("temporary directory for the test broker");
        let data_dir = root.path().join("data");
        let app =
            TestApp::start_with_key(root, data_dir, config, Some(master_key.to_owned())).await;
        app.wait_ready().await;
        app
    }

    /// The store this broker uses, opened here: the embedded file (only once the broker has
    /// stopped, since it holds the file) or its PostgreSQL schema.
    pub fn open_store(&self) -> vault::store::Store {
        match self.store.postgres() {
            Some(options) => vault::store::Store::connect(&options).expect("the PostgreSQL store"),
            None => vault::store::Store::open(&self.data_dir.join("store.redb"))
                .expect("the embedded store (the broker stopped)"),
        }
    }

    /// Where dev mode keeps this broker's master key (beside the data directory).
    pub fn master_key_path(&self) -> PathBuf {
        vault::keys::default_master_key_path(&self.data_dir)
    }

    async fn start_in(root: tempfile::TempDir, data_dir: PathBuf, config: Config) -> TestApp {
        TestApp::start_with_key(root, data_dir, config, None).await
    }

    async fn start_with_key(
        root: tempfile::TempDir,
        data_dir: PathBuf,
        mut config: Config,
        master_key: Option<PathBuf>,
    ) -> TestApp {
        if on_postgres() && config.store.backend == broker::config::StoreBackend::Embedded {
            config.store = postgres_store();
        }
        let store = config.store.clone();
        // Tests run many brokers at once: each takes its own metrics port.
        if config.metrics_listen == Config::default().metrics_listen {
            config.metrics_listen = "127.0.0.1:0".to_owned();
        }
        let broker = app::start(ServeOptions {
            data_dir: data_dir.clone(),
            listen: Some("127.0.0.1:0".parse().expect("literal address")),
            config,
            master_key: master_key.clone(),
            dev: true,
            insecure_http: false,
        })
        .await
        .expect("the broker starts");
        let cert = broker
            .dev_certificate
            .clone()
            .expect("dev mode creates a certificate");
        let client = broker::client::https_client(&cert).expect("an HTTPS client");
        let master = vault::keys::load_master_key(&data_dir, master_key.as_deref(), false)
            .expect("the master key");
        let signer = app::dev_token_signer(&data_dir, &master).expect("the dev token signer");
        TestApp {
            url: broker.url(),
            broker: Some(broker),
            client,
            signer,
            data_dir,
            store,
            root,
        }
    }

    /// Stops the broker (drain, final checkpoint) and starts a new one on the same data.
    pub async fn restart(self) -> TestApp {
        let app = self.restart_unready().await;
        app.wait_ready().await;
        app
    }

    /// [`Self::restart`] without waiting for `/readyz`: requests may meet the search index
    /// still being built.
    pub async fn restart_unready(mut self) -> TestApp {
        self.stop().await;
        let config = Config {
            store: self.store.clone(),
            ..Config::default()
        };
        TestApp::start_in(self.root, self.data_dir, config).await
    }

    /// Waits until `/readyz` answers 200: the search index has caught up with the store (after
    /// a restart it may be rebuilding), as a load balancer would wait.
    pub async fn wait_ready(&self) {
        let started = std::time::Instant::now();
        loop {
            let response = self
                .client
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .expect("/readyz answers");
            if response.status().is_success() {
                return;
            }
            let body = response.text().await.unwrap_or_default();
            assert!(body.contains("search_index_building"), "/readyz: {body}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the broker did not become ready: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn token(&self, role: &str, jurisdiction: &[&str], dept: Option<&str>) -> String {
        self.signer
            .sign(&TokenRequest {
                sub: format!("test-{role}"),
                name: Some(format!("测试{role}")),
                roles: vec![role.to_owned()],
                jurisdiction: jurisdiction.iter().map(|j| (*j).to_owned()).collect(),
                dept: dept.map(str::to_owned),
                ttl: Duration::from_secs(600),
            })
            .expect("signing a test token")
    }

    pub fn publisher(&self, dept: &str) -> String {
        self.token("dept_publisher", &[STREET], Some(dept))
    }

    /// POSTs a body to the ingest endpoint of `dept` with `token`.
    pub async fn ingest_as(&self, token: &str, dept: &str, body: impl Into<String>) -> Response {
        self.client
            .post(format!("{}/v1/ingest/{dept}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .expect("the ingest request is sent")
    }

    /// Publishes as `dept`'s own publisher and returns the receipt (asserting 200).
    pub async fn ingest(&self, dept: &str, body: impl Into<String>) -> Value {
        let response = self.ingest_as(&self.publisher(dept), dept, body).await;
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON receipt");
        assert_eq!(status, 200, "ingest failed: {body}");
        body
    }

    /// GET with a token and purpose; returns status and JSON body.
    pub async fn get(&self, path: &str, token: &str, purpose: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(purpose) = purpose {
            request = request.header("x-purpose", purpose);
        }
        let response = request.send().await.expect("the request is sent");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The unified id of a department's source record, as a street officer sees it.
    pub async fn unified_id(&self, kind: &str, dept: &str, source_id: &str) -> String {
        let token = self.token("street_officer", &[STREET], None);
        let (status, body) = self
            .get(
                &format!("/v1/{kind}s/by-source/{dept}/{source_id}"),
                &token,
                Some("routine_visit"),
            )
            .await;
        assert_eq!(status, 200, "by-source lookup failed: {body}");
        body["id"].as_str().expect("an id").to_owned()
    }
}

/// Runs `sql` with `psql` on the PostgreSQL of [`pg_url`] and returns its unaligned output: one
/// line per row, `|` between columns.
pub fn psql(sql: &str) -> String {
    let output = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(pg_url())
        .args(["-c", sql])
        .output()
        .expect("psql runs (the PostgreSQL client, installed with the server)");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("psql prints UTF-8")
}

/// Every key, value and member in the tables of a PostgreSQL store's `schema`, read back as
/// bytes with `psql`, to look for plaintext in what the database holds.
pub fn postgres_bytes(schema: &str) -> Vec<u8> {
    let sql = format!(
        "SET search_path = {schema}; \
         SELECT encode(key, 'hex') || encode(value, 'hex') FROM meta \
         UNION ALL SELECT encode(key, 'hex') || encode(value, 'hex') FROM sources \
         UNION ALL SELECT encode(key, 'hex') || encode(value, 'hex') FROM receipts \
         UNION ALL SELECT encode(key, 'hex') || encode(value, 'hex') FROM quarantine \
         UNION ALL SELECT encode(key, 'hex') || encode(member, 'hex') FROM links \
         UNION ALL SELECT encode(key, 'hex') || encode(member, 'hex') FROM quarantine_by_source \
         UNION ALL SELECT encode(convert_to(entity, 'UTF8'), 'hex') FROM changes \
         UNION ALL SELECT encode(entry, 'hex') FROM audit_log \
         UNION ALL SELECT encode(convert_to(note, 'UTF8'), 'hex') FROM audit_checkpoints"
    );
    psql(&sql)
        .lines()
        .flat_map(|row| hex::decode(row.trim()).expect("hex rows"))
        .collect()
}

/// An 18-digit ID number: `first17` and its GB 11643 check digit.
pub fn id(first17: &str) -> String {
    let check = model::id_number_check_digit(first17).expect("17 digits");
    format!("{first17}{check}")
}

/// Every file under `dir`, recursively.
/// The unified ids of a search page's items.
pub fn hit_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Whether `haystack` contains `needle` as bytes.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a traced GET returns: status, the `x-request-id` response header, and the body.
#[derive(Debug, Clone)]
pub struct Traced {
    pub status: u16,
    pub request_id: String,
    pub body: Value,
}

impl TestApp {
    /// A compliance officer's token.
    pub fn compliance(&self) -> String {
        self.token("compliance_officer", &[STREET], None)
    }

    /// GET with an optional purpose and case id; returns status, request id and JSON body.
    pub async fn get_traced(
        &self,
        path: &str,
        token: &str,
        purpose: Option<&str>,
        case_id: Option<&str>,
    ) -> Traced {
        let mut request = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(purpose) = purpose {
            request = request.header("x-purpose", purpose);
        }
        if let Some(case_id) = case_id {
            request = request.header("x-case-id", case_id);
        }
        let response = request.send().await.expect("the request is sent");
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.json().await.unwrap_or(Value::Null);
        Traced {
            status,
            request_id,
            body,
        }
    }

    /// `/metrics` from the metrics listener (no token): status, content type and text.
    pub async fn metrics_text(&self) -> (u16, String, String) {
        let addr = self
            .broker
            .as_ref()
            .and_then(|b| b.metrics_addr)
            .expect("the metrics listener is bound");
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("the metrics request is sent");
        text_of(response).await
    }

    /// GET returning status, content type and the raw body text.
    pub async fn get_text(&self, path: &str, token: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent");
        text_of(response).await
    }
}

/// Status, content type and body text of a response.
async fn text_of(response: Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    (status, content_type, text)
}
