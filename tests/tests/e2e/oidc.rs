//! Identity providers as they are: a small OpenID provider over HTTPS (axum behind
//! tokio-rustls, a self-signed certificate the broker trusts through `auth.ca_file`) serves a
//! discovery document and a JWKS; the test signs Keycloak-shaped EdDSA tokens with its own
//! keys, rotates them, and takes the provider down. The same keys in a `jwks_file` are
//! rotated by replacing the file, and survive a file replaced by garbage.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use broker::config::Config;
use e2e_tests::TestApp;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

const AUDIENCE: &str = "safegrid";
const GRID: &str = "110105001001003";

/// An Ed25519 signing key with its `kid`.
struct IdpKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl IdpKey {
    fn new(kid: &str) -> IdpKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        IdpKey {
            kid: kid.to_owned(),
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": base64url(self.pair.public_key().as_ref()),
        })
    }

    /// A compact JWS over `claims`, its header naming `kid` (which may lie).
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", base64url(signature.as_ref()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What the provider serves, changed by the test while it runs.
#[derive(Default)]
struct IdpState {
    jwks: Mutex<Value>,
    /// The `issuer` its discovery document names (normally its own).
    discovery_issuer: Mutex<Option<String>>,
    down: AtomicBool,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

/// A running provider at `https://127.0.0.1:<port>/realms/grid`.
struct Idp {
    issuer: String,
    state: Arc<IdpState>,
    cert: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP listener that completes the TLS handshake before axum sees the connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(stream) = self.tls.accept(stream).await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Idp {
    async fn start(keys: &[&IdpKey]) -> Idp {
        let dir = tempfile::tempdir().unwrap();
        let files = broker::tls::ensure_dev_certificate(dir.path()).unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(broker::tls::server_config(&files).unwrap());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!(
            "https://127.0.0.1:{}/realms/grid",
            tcp.local_addr().unwrap().port()
        );
        let state = Arc::new(IdpState::default());
        let idp_state = state.clone();
        let own_issuer = issuer.clone();
        let discovery = move || {
            let state = idp_state.clone();
            let issuer = own_issuer.clone();
            async move {
                state.discovery_requests.fetch_add(1, Ordering::SeqCst);
                if state.down.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                let named = state.discovery_issuer.lock().unwrap().clone();
                axum::Json(json!({
                    "issuer": named.unwrap_or_else(|| issuer.clone()),
                    "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
                    "id_token_signing_alg_values_supported": ["EdDSA"],
                }))
                .into_response()
            }
        };
        let jwks_state = state.clone();
        let certs = move || {
            let state = jwks_state.clone();
            async move {
                state.jwks_requests.fetch_add(1, Ordering::SeqCst);
                if state.down.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                axum::Json(state.jwks.lock().unwrap().clone()).into_response()
            }
        };
        let router = Router::new()
            .route(
                "/realms/grid/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/realms/grid/protocol/openid-connect/certs", get(certs));
        let task = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { tcp, tls }, router).await;
        });
        let idp = Idp {
            issuer,
            state,
            cert: files.cert,
            task,
            _dir: dir,
        };
        idp.publish(keys);
        idp
    }

    /// Serves exactly these keys from now on.
    fn publish(&self, keys: &[&IdpKey]) {
        *self.state.jwks.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    }

    fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer)
    }

    fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// A Keycloak-shaped access token of this provider (see [`claims`]).
    fn claims(&self, exp_offset: i64) -> Value {
        claims(&self.issuer, exp_offset)
    }
}

/// A Keycloak-shaped access token: `aud` an array, roles under `realm_access.roles`, the
/// name in `preferred_username`; `sub` unique so no token is answered from memory.
fn claims(issuer: &str, exp_offset: i64) -> Value {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": issuer,
        "aud": ["account", AUDIENCE],
        "azp": "safegrid-web",
        "typ": "Bearer",
        "sub": format!("kc-{}", SERIAL.fetch_add(1, Ordering::SeqCst)),
        "exp": now + exp_offset,
        "iat": now - 120,
        "preferred_username": "网格员甲",
        "realm_access": {"roles": ["offline_access", "uma_authorization", "grid_worker"]},
        "jurisdiction": [GRID],
    })
}

/// The `[auth]` section pointing at `idp`, plus `extra` lines, loaded as an operator would.
fn config(idp: &Idp, source: &str, extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safegrid.toml");
    let text = format!(
        "[auth]\n{source}\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nca_file = \"{}\"\n\
         roles_claim = \"realm_access.roles\"\nname_claim = \"preferred_username\"\n{extra}\n",
        idp.issuer,
        idp.cert.display()
    );
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

fn jwks_url_source(idp: &Idp) -> String {
    format!("jwks_url = \"{}\"", idp.jwks_url())
}

async fn status(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/whoami", token, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keycloak_token_found_through_discovery_is_accepted() {
    let key = IdpKey::new("kc-1");
    let idp = Idp::start(&[&key]).await;
    let app = TestApp::spawn_with(config(&idp, "discovery = true", "")).await;
    assert_eq!(idp.state.discovery_requests.load(Ordering::SeqCst), 1);
    assert!(idp.jwks_requests() >= 1, "keys fetched at the jwks_uri");

    let (code, body) = app
        .get("/v1/whoami", &key.sign(&idp.claims(300)), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["roles"],
        json!(["offline_access", "uma_authorization", "grid_worker"])
    );
    assert_eq!(body["jurisdiction"], json!([GRID]));

    let mut foreign_audience = idp.claims(300);
    foreign_audience["aud"] = json!(["account", "elsewhere"]);
    assert_eq!(status(&app, &key.sign(&foreign_audience)).await, 401);
    let mut string_audience = idp.claims(300);
    string_audience["aud"] = json!(AUDIENCE);
    assert_eq!(status(&app, &key.sign(&string_audience)).await, 200);
    let mut roles_at_top = idp.claims(300);
    roles_at_top["roles"] = json!(["grid_worker"]);
    roles_at_top["realm_access"] = json!({"roles": ["offline_access"]});
    assert_eq!(
        status(&app, &key.sign(&roles_at_top)).await,
        401,
        "roles are read at realm_access.roles only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_taken_without_a_restart() {
    let old = IdpKey::new("2024-old");
    let new = IdpKey::new("2025-new");
    let idp = Idp::start(&[&old]).await;
    let app = TestApp::spawn_with(config(&idp, &jwks_url_source(&idp), "")).await;
    assert_eq!(status(&app, &old.sign(&idp.claims(300))).await, 200);

    idp.publish(&[&new]);
    let before = idp.jwks_requests();
    assert_eq!(
        status(&app, &new.sign(&idp.claims(300))).await,
        200,
        "the unknown kid made the broker refetch the keys"
    );
    assert_eq!(idp.jwks_requests(), before + 1);
    assert_eq!(
        status(&app, &old.sign(&idp.claims(300))).await,
        401,
        "the retired key is no longer trusted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    let known = IdpKey::new("known");
    let stranger = IdpKey::new("stranger");
    let idp = Idp::start(&[&known]).await;
    let app = TestApp::spawn_with(config(&idp, &jwks_url_source(&idp), "")).await;
    assert_eq!(status(&app, &known.sign(&idp.claims(300))).await, 200);

    let before = idp.jwks_requests();
    assert_eq!(status(&app, &stranger.sign(&idp.claims(300))).await, 401);
    assert_eq!(idp.jwks_requests(), before + 1, "refused after one refresh");
    assert_eq!(status(&app, &stranger.sign(&idp.claims(300))).await, 401);
    assert_eq!(
        idp.jwks_requests(),
        before + 1,
        "unknown kids refetch at most every 10 s"
    );
    assert_eq!(
        status(&app, &stranger.sign_as("known", &idp.claims(300))).await,
        401,
        "a stranger's signature under a known kid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_down_at_refresh_keeps_the_last_keys() {
    let key = IdpKey::new("k1");
    let next = IdpKey::new("k2");
    let idp = Idp::start(&[&key]).await;
    let app = TestApp::spawn_with(config(
        &idp,
        &jwks_url_source(&idp),
        "jwks_refresh_seconds = 1",
    ))
    .await;
    idp.state.down.store(true, Ordering::SeqCst);
    idp.publish(&[&next]);
    let before = idp.jwks_requests();
    let started = Instant::now();
    while idp.jwks_requests() < before + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no scheduled refresh"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status(&app, &key.sign(&idp.claims(300))).await,
        200,
        "failed refreshes keep the last good keys"
    );
    assert_eq!(status(&app, &next.sign(&idp.claims(300))).await, 401);

    // Back up: the schedule alone brings the new key in.
    idp.state.down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        if status(&app, &next.sign(&idp.claims(300))).await == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new key never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&app, &key.sign(&idp.claims(300))).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_naming_another_issuer_is_refused_at_start() {
    let key = IdpKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    *idp.state.discovery_issuer.lock().unwrap() = Some("https://idp.elsewhere/realms/grid".into());
    let root = tempfile::tempdir().unwrap();
    let started = broker::app::start(broker::app::ServeOptions {
        data_dir: root.path().join("data"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        config: Config {
            metrics_listen: "127.0.0.1:0".to_owned(),
            ..config(&idp, "discovery = true", "")
        },
        master_key: None,
        dev: true,
        insecure_http: false,
    })
    .await;
    let err = started.expect_err("the broker must not start");
    let message = format!("{err:#}");
    assert!(
        message.contains("https://idp.elsewhere/realms/grid") && message.contains("issuer"),
        "{message}"
    );
    assert_eq!(idp.state.discovery_requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        idp.jwks_requests(),
        0,
        "keys are not fetched from a foreign issuer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_accepted_within_the_leeway_only() {
    let key = IdpKey::new("k1");
    let idp = Idp::start(&[&key]).await;
    let app =
        TestApp::spawn_with(config(&idp, &jwks_url_source(&idp), "leeway_seconds = 20")).await;
    assert_eq!(status(&app, &key.sign(&idp.claims(-10))).await, 200);
    assert_eq!(
        status(&app, &key.sign(&idp.claims(-25))).await,
        401,
        "beyond the configured 20 s (within the default 30 s)"
    );
    assert_eq!(status(&app, &key.sign(&idp.claims(-3600))).await, 401);
}

// ---------------------------------------------------------------------------------------
// A JWKS file

/// The issuer of the tokens whose keys are in a file.
const FILE_ISSUER: &str = "https://idp.example/realms/grid";

/// Writes `keys` to `path` as a JWKS, replacing the file whole (written beside it, then
/// renamed), as an operator or a mounted secret does.
fn write_jwks(path: &std::path::Path, keys: &[&IdpKey]) {
    let set = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    replace_file(path, set.to_string().as_bytes());
}

fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// The `[auth]` section reading its keys from `jwks`, plus `extra` lines.
fn file_config(jwks: &std::path::Path, extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safegrid.toml");
    let text = format!(
        "[auth]\njwks_file = \"{}\"\nissuer = \"{FILE_ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         roles_claim = \"realm_access.roles\"\nname_claim = \"preferred_username\"\n{extra}\n",
        jwks.display()
    );
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_jwks_file_is_taken_without_a_restart() {
    let old = IdpKey::new("2025-file-old");
    let new = IdpKey::new("2026-file-new");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&old]);
    // The schedule (300 s by default) does not run during the test: only the unknown kid
    // makes the broker look at the file again.
    let app = TestApp::spawn_with(file_config(&jwks, "")).await;
    assert_eq!(
        status(&app, &old.sign(&claims(FILE_ISSUER, 300))).await,
        200
    );
    let early = new.sign(&claims(FILE_ISSUER, 300));

    write_jwks(&jwks, &[&new]);
    assert_eq!(
        status(&app, &early).await,
        200,
        "the unknown kid made the broker read the replaced file"
    );
    assert_eq!(
        status(&app, &old.sign(&claims(FILE_ISSUER, 300))).await,
        401,
        "the key no longer in the file is no longer trusted"
    );
    assert_eq!(
        status(&app, &new.sign(&claims(FILE_ISSUER, 300))).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_jwks_file_keeps_the_last_keys_until_a_good_one_arrives() {
    let key = IdpKey::new("file-k1");
    let next = IdpKey::new("file-k2");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&key]);
    let app = TestApp::spawn_with(file_config(&jwks, "jwks_refresh_seconds = 1")).await;
    assert_eq!(
        status(&app, &key.sign(&claims(FILE_ISSUER, 300))).await,
        200
    );

    // Half a file, a JSON that is no JWKS, no usable key, no file: each sits through at
    // least two scheduled reads, and the last good key stays in force.
    for garbage in [
        Some(r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "#.to_owned()),
        Some(r#"{"keys": "rotated"}"#.to_owned()),
        Some(r#"{"keys": []}"#.to_owned()),
        Some("\u{0}\u{1}binary".to_owned()),
        None,
    ] {
        match &garbage {
            Some(text) => replace_file(&jwks, text.as_bytes()),
            None => std::fs::remove_file(&jwks).unwrap(),
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            status(&app, &key.sign(&claims(FILE_ISSUER, 300))).await,
            200,
            "{garbage:?} keeps the last good keys"
        );
        assert_eq!(
            status(&app, &next.sign(&claims(FILE_ISSUER, 300))).await,
            401,
            "{garbage:?}"
        );
    }

    // A good file again: the schedule alone puts it in force (a token naming the known kid
    // never makes the broker read the file).
    write_jwks(&jwks, &[&next]);
    let started = Instant::now();
    while status(&app, &key.sign(&claims(FILE_ISSUER, 300))).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the scheduled read never took the new file"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status(&app, &next.sign(&claims(FILE_ISSUER, 300))).await,
        200
    );
}
