//! Authentication: JWT bearer tokens verified against configured keys, turned into a
//! [`Principal`].
//!
//! Guarantees: only EdDSA, ES256 and RS256 are accepted (never `none` or HMAC with a public
//! key); `exp`, `iss`, `aud` and `nbf` are always checked (`aud` may be a string or an array,
//! accepted when one entry is the configured audience; `exp` and `nbf` with the configured
//! leeway); a token whose lifetime (`exp` after `iat`, or after now when `iat` is absent)
//! exceeds the configured maximum is refused; a principal's jurisdiction codes and department
//! are parsed into their types, so a token with a malformed one is refused. Roles,
//! jurisdiction, department and name are read at configured claim paths (`realm_access.roles`
//! walks into nested objects). A token whose roles are all unknown, a reader role without a
//! jurisdiction, and a department role (`dept_analyst`, `dept_publisher`, `dept_subscriber`)
//! without `dept` are refused (401 with a message naming the claim).
//!
//! Keys come from the instance (dev mode), a JWKS file, or an identity provider over HTTPS
//! (`jwks_url`, or its OpenID discovery document). File and remote keys are read before the
//! broker starts (no keys, no start), read again on a schedule (`jwks_refresh_seconds`), and
//! at once (at most every [`UNKNOWN_KID_REFRESH_INTERVAL`]) when a token names a `kid` the
//! broker does not hold; a failed read keeps the last good keys and logs a warning that
//! names the file or URL and the kind of failure, never a key. A file is parsed again only
//! when its content changed (by SHA-256), so a file replaced by one that is unreadable, not
//! JSON or holds no usable key is warned about once and changes nothing until it changes
//! again. A token whose `kid` is still unknown is refused.
//!
//! A verified token is remembered (by its SHA-256, with its `exp`) so that a client sending
//! the same token again is not charged a signature verification per request; a remembered
//! token is still refused once it expires, and a token that failed is never remembered.

use policies::Principal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use model::{Department, DivisionCode};

use crate::config::AuthSection;

/// Issuer and audience of tokens the broker signs itself in dev mode.
pub const DEV_ISSUER: &str = "safegrid-dev";
pub const DEFAULT_AUDIENCE: &str = "safegrid";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("the token's jurisdiction or dept claim is malformed")]
    BadClaims,
    #[error("the token is valid for longer than this broker accepts; ask the identity provider for a shorter-lived token")]
    TooLong,
    #[error("the token names no role this broker knows")]
    NoKnownRole,
    #[error("the token's reader role needs a jurisdiction claim (division codes)")]
    NoJurisdiction,
    #[error("the token's department role needs a dept claim")]
    NoDepartment,
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("identity provider {url}: {reason}")]
    Provider { url: String, reason: String },
}

impl AuthError {
    /// A stable code for the audit record of a refused token.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Invalid => "token_invalid",
            AuthError::BadClaims => "token_claims_malformed",
            AuthError::TooLong => "token_lifetime_too_long",
            AuthError::NoKnownRole => "token_roles_unknown",
            AuthError::NoJurisdiction => "token_jurisdiction_missing",
            AuthError::NoDepartment => "token_dept_missing",
            AuthError::KeyFile { .. } | AuthError::Provider { .. } => "token_keys_unavailable",
        }
    }
}

/// Claims the broker's own dev tokens carry (and tests forge edge cases with).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub jurisdiction: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dept: Option<String>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Seconds of clock skew allowed on `exp` and `nbf` by default.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Longest token lifetime accepted by default (12 hours).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Seconds between scheduled refreshes of remote keys by default.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
/// A token naming an unknown `kid` makes the broker refetch the keys at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the identity provider (discovery document or keys).
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS read (a provider, or a file someone else may write,
/// is not trusted with our memory).
const PROVIDER_MAX_BYTES: usize = 1024 * 1024;
/// Roles that read personal data and so must be bounded by a jurisdiction.
const READER_ROLES: [&str; 5] = [
    "grid_worker",
    "community_officer",
    "street_officer",
    "dept_analyst",
    "dept_subscriber",
];
/// Roles that act for one department and so must carry `dept`.
const DEPARTMENT_ROLES: [&str; 3] = ["dept_analyst", "dept_publisher", "dept_subscriber"];
/// Verified tokens remembered at most; the memory is emptied when it is full.
const VERIFIED_CAPACITY: usize = 10_000;

/// Where the principal's claims are in a token: a claim name, or a dotted path into nested
/// objects (`realm_access.roles`). A claim whose name itself contains dots is found first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPaths {
    pub roles: String,
    pub jurisdiction: String,
    pub dept: String,
    pub name: String,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        ClaimPaths {
            roles: "roles".to_owned(),
            jurisdiction: "jurisdiction".to_owned(),
            dept: "dept".to_owned(),
            name: "name".to_owned(),
        }
    }
}

/// One trusted public key.
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The keys in force, swapped whole on a refresh, and where to refresh them from.
struct KeyStore {
    current: ArcSwap<Vec<VerifyKey>>,
    source: KeySource,
    /// When a token with an unknown `kid` last caused a re-read.
    last_unknown_kid_refresh: Mutex<Option<Instant>>,
    /// Wakes the scheduled refresher early (when the caller cannot wait for a refetch).
    wake: tokio::sync::Notify,
}

/// Where the keys come from.
enum KeySource {
    /// Fixed for the authenticator's life (dev mode: the instance's own key).
    Fixed,
    /// An identity provider's JWKS endpoint.
    Provider(RemoteKeys),
    /// A JWKS file, read again when its content changes.
    File(FileKeys),
}

/// An identity provider's JWKS endpoint.
struct RemoteKeys {
    client: reqwest::Client,
    jwks_url: String,
}

/// A JWKS file and what was last found there.
struct FileKeys {
    path: PathBuf,
    /// Held while the file is read, parsed and its keys put in force, so two re-reads never
    /// put older keys over newer ones.
    seen: Mutex<FileSeen>,
}

/// What the last read of a JWKS file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileSeen {
    /// Content with this SHA-256 (its keys in force, or refused and warned about).
    Content([u8; 32]),
    /// No content (missing, unreadable, too large); warned about.
    Unreadable,
}

/// Reads a JWKS file, at most [`PROVIDER_MAX_BYTES`].
fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(PROVIDER_MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > PROVIDER_MAX_BYTES {
        return Err("the file is larger than 1 MiB".into());
    }
    Ok(bytes)
}

/// The keys of a JWKS document. Why one is refused is said by kind and position only: a
/// JSON error's own text may quote the document, which holds key material.
fn parse_key_file(bytes: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Syntax => "is not JSON",
            serde_json::error::Category::Eof => "ends early (half written?)",
            serde_json::error::Category::Data => "is JSON but not a JWKS ({\"keys\":[…]})",
        };
        format!("the file {kind} (line {}, column {})", e.line(), e.column())
    })?;
    keys_of(&set)
}

impl KeyStore {
    fn new(keys: Vec<VerifyKey>, source: KeySource) -> KeyStore {
        KeyStore {
            current: ArcSwap::from_pointee(keys),
            source,
            last_unknown_kid_refresh: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Reads the keys again and puts them in force; on failure the old keys stay. `None`:
    /// nothing to read (fixed keys), or a file whose content has not changed since.
    async fn refresh(self: &Arc<Self>) -> Result<Option<usize>, AuthError> {
        match &self.source {
            KeySource::Fixed => Ok(None),
            KeySource::File(file) => {
                let store = Arc::clone(self);
                let path = file.path.display().to_string();
                tokio::task::spawn_blocking(move || store.reread_file())
                    .await
                    .map_err(|e| AuthError::KeyFile {
                        path,
                        reason: format!("the re-read did not finish: {e}"),
                    })?
            }
            KeySource::Provider(remote) => {
                let set: JwkSet = fetch_json(&remote.client, &remote.jwks_url).await?;
                let keys = keys_of(&set).map_err(|reason| AuthError::Provider {
                    url: remote.jwks_url.clone(),
                    reason,
                })?;
                let count = keys.len();
                self.current.store(Arc::new(keys));
                Ok(Some(count))
            }
        }
    }

    /// Reads the JWKS file; when its content changed, parses it and puts its keys in force.
    /// `Ok(None)`: unchanged since the last read, or the same failure as last time (already
    /// warned about). A file that cannot be read or used is an error and the old keys stay.
    fn reread_file(&self) -> Result<Option<usize>, AuthError> {
        let KeySource::File(file) = &self.source else {
            return Ok(None);
        };
        let failed = |reason: String| AuthError::KeyFile {
            path: file.path.display().to_string(),
            reason,
        };
        let mut seen = file
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match read_key_file(&file.path) {
            Ok(bytes) => bytes,
            Err(_) if *seen == FileSeen::Unreadable => return Ok(None),
            Err(reason) => {
                *seen = FileSeen::Unreadable;
                return Err(failed(reason));
            }
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut content = [0u8; 32];
        content.copy_from_slice(digest.as_ref());
        if *seen == FileSeen::Content(content) {
            return Ok(None);
        }
        *seen = FileSeen::Content(content);
        let keys = parse_key_file(&bytes).map_err(failed)?;
        let count = keys.len();
        self.current.store(Arc::new(keys));
        Ok(Some(count))
    }

    /// Reads the keys again because a token named an unknown `kid`, unless one did so
    /// lately. A file is read at once; a provider is waited for on a multi-threaded runtime,
    /// elsewhere only the refresher is woken. True when new keys came in force.
    fn refresh_for_unknown_kid(self: &Arc<Self>) -> bool {
        if matches!(self.source, KeySource::Fixed) {
            return false;
        }
        {
            let mut last = self
                .last_unknown_kid_refresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match &self.source {
            KeySource::Fixed => false,
            KeySource::File(file) => match self.reread_file() {
                Ok(Some(count)) => {
                    tracing::info!(path = %file.path.display(), keys = count, "the JWKS file changed and was read again for an unknown kid");
                    true
                }
                Ok(None) => false,
                Err(err) => {
                    tracing::warn!(error = %err, "re-reading the JWKS file failed; the last good keys stay");
                    false
                }
            },
            KeySource::Provider(remote) => match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    let outcome = tokio::task::block_in_place(|| handle.block_on(self.refresh()));
                    match outcome {
                        Ok(count) => {
                            tracing::info!(url = %remote.jwks_url, keys = count.unwrap_or(0), "identity provider keys refreshed for an unknown kid");
                            true
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "refreshing identity provider keys failed; the last good keys stay");
                            false
                        }
                    }
                }
                _ => {
                    self.wake.notify_one();
                    false
                }
            },
        }
    }
}

/// Reads `store`'s keys again every `every` (or when woken) until the authenticator is
/// dropped.
async fn refresh_on_schedule(store: Weak<KeyStore>, every: Duration) {
    loop {
        {
            let Some(strong) = store.upgrade() else {
                return;
            };
            if matches!(strong.source, KeySource::Fixed) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = strong.wake.notified() => {}
            }
        }
        let Some(strong) = store.upgrade() else {
            return;
        };
        match (&strong.source, strong.refresh().await) {
            (_, Ok(None)) => {}
            (KeySource::File(file), Ok(Some(count))) => {
                tracing::info!(path = %file.path.display(), keys = count, "the JWKS file changed; its keys are in force");
            }
            (_, Ok(Some(count))) => {
                tracing::debug!(keys = count, "identity provider keys refreshed")
            }
            (KeySource::File(_), Err(err)) => {
                tracing::warn!(error = %err, "the changed JWKS file cannot be used; the last good keys stay")
            }
            (_, Err(err)) => {
                tracing::warn!(error = %err, "refreshing identity provider keys failed; the last good keys stay")
            }
        }
    }
}

/// GETs a JSON document from the identity provider, bounded in time and size.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, AuthError> {
    let failed = |reason: String| AuthError::Provider {
        url: url.to_owned(),
        reason,
    };
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| failed(format!("{e:#}")))?;
    if !response.status().is_success() {
        return Err(failed(format!("answered {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        body.extend_from_slice(&chunk);
        if body.len() > PROVIDER_MAX_BYTES {
            return Err(failed("the document is larger than 1 MiB".into()));
        }
    }
    serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))
}

/// Refuses a key URL that is neither HTTPS nor plain HTTP on the loopback interface.
pub fn check_provider_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{url:?}: keys are fetched over https (plain http only on the loopback interface)"
        )),
    }
}

/// The HTTPS client for the identity provider: the system's roots plus `ca_file`, no
/// redirects, a timeout.
pub fn provider_client(ca_file: Option<&Path>) -> Result<reqwest::Client, AuthError> {
    let failed = |reason: String| AuthError::KeyFile {
        path: ca_file.map_or_else(|| "system roots".to_owned(), |p| p.display().to_string()),
        reason,
    };
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root that rustls cannot use is skipped, as every client does.
        let _ = roots.add(cert);
    }
    if let Some(file) = ca_file {
        for cert in crate::tls::load_certs(file).map_err(|e| failed(format!("{e:#}")))? {
            roots.add(cert).map_err(|e| failed(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROVIDER_TIMEOUT)
        .build()
        .map_err(|e| failed(e.to_string()))
}

/// The subset of an OpenID Provider's discovery document the broker reads.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The trusted keys of a JWKS; an empty set or an unsupported key type is refused.
fn keys_of(set: &JwkSet) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match jwk.common.key_algorithm {
            Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(jsonwebtoken::jwk::KeyAlgorithm::RS256) => Algorithm::RS256,
            _ => match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return Err("only EdDSA, ES256 and RS256 keys are accepted".into()),
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            key,
            algorithm,
        });
    }
    if keys.is_empty() {
        return Err("the JWKS holds no key".into());
    }
    Ok(keys)
}

/// Verifies tokens.
pub struct Authenticator {
    keys: Arc<KeyStore>,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    leeway: u64,
    claims: ClaimPaths,
    /// SHA-256 of a verified token → its principal and `exp`.
    verified: Mutex<HashMap<[u8; 32], (Principal, u64)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (jwks_url, jwks_file) = match &self.keys.source {
            KeySource::Fixed => (None, None),
            KeySource::Provider(remote) => (Some(remote.jwks_url.as_str()), None),
            KeySource::File(file) => (None, Some(file.path.as_path())),
        };
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.current.load().len())
            .field("jwks_url", &jwks_url)
            .field("jwks_file", &jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("leeway", &self.leeway)
            .field("claims", &self.claims)
            .finish()
    }
}

impl Authenticator {
    fn with_keys(
        keys: Vec<VerifyKey>,
        source: KeySource,
        issuer: &str,
        audience: &str,
    ) -> Authenticator {
        Authenticator {
            keys: Arc::new(KeyStore::new(keys, source)),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            leeway: DEFAULT_LEEWAY_SECONDS,
            claims: ClaimPaths::default(),
            verified: Mutex::default(),
        }
    }

    /// Trusts one Ed25519 public key (dev mode: the instance's own key).
    pub fn ed25519(public_key: &[u8], issuer: &str, audience: &str) -> Authenticator {
        let key = VerifyKey {
            kid: None,
            key: DecodingKey::from_ed_der(public_key),
            algorithm: Algorithm::EdDSA,
        };
        Authenticator::with_keys(vec![key], KeySource::Fixed, issuer, audience)
    }

    /// Refuses tokens valid for longer than `max` (from `iat`, or from now without `iat`).
    pub fn with_max_lifetime(mut self, max: Duration) -> Authenticator {
        self.max_lifetime = max;
        self
    }

    /// Allows `seconds` of clock skew on `exp` and `nbf`.
    pub fn with_leeway(mut self, seconds: u64) -> Authenticator {
        self.leeway = seconds;
        self
    }

    /// Reads the principal's claims at these paths.
    pub fn with_claim_paths(mut self, claims: ClaimPaths) -> Authenticator {
        self.claims = claims;
        self
    }

    /// Trusts the keys of a JWKS file (production), read now (an error if it cannot be read
    /// or holds no usable key) and again whenever its content changed: every `refresh` (when
    /// called inside a Tokio runtime, which then runs the refresher) and when a token names an
    /// unknown `kid` (at most every [`UNKNOWN_KID_REFRESH_INTERVAL`]). A changed file that
    /// cannot be used keeps the last good keys.
    pub fn from_jwks_file(
        path: &Path,
        refresh: Duration,
        issuer: &str,
        audience: &str,
    ) -> Result<Authenticator, AuthError> {
        let key_error = |reason: String| AuthError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let bytes = read_key_file(path).map_err(key_error)?;
        let keys = parse_key_file(&bytes).map_err(key_error)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut content = [0u8; 32];
        content.copy_from_slice(digest.as_ref());
        let source = KeySource::File(FileKeys {
            path: path.to_path_buf(),
            seen: Mutex::new(FileSeen::Content(content)),
        });
        let authenticator = Authenticator::with_keys(keys, source, issuer, audience);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_on_schedule(
                Arc::downgrade(&authenticator.keys),
                refresh.max(Duration::from_secs(1)),
            ));
        }
        Ok(authenticator)
    }

    /// Trusts the keys an identity provider publishes at `jwks_url` (or, with `discovery`,
    /// at the `jwks_uri` of `<issuer>/.well-known/openid-configuration`, whose `issuer` must
    /// be `issuer`). Fetches them now (an error if that fails) and spawns the refresher, so it
    /// must be called inside a Tokio runtime.
    pub async fn from_provider(
        source: &ProviderKeys,
        issuer: &str,
        audience: &str,
    ) -> Result<Authenticator, AuthError> {
        let client = provider_client(source.ca_file.as_deref())?;
        let jwks_url = match &source.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let failed = |reason: String| AuthError::Provider {
                    url: url.clone(),
                    reason,
                };
                check_provider_url(&url).map_err(failed)?;
                let discovery: Discovery = fetch_json(&client, &url).await?;
                if discovery.issuer != issuer {
                    return Err(failed(format!(
                        "the discovery document names issuer {:?}, not the configured {issuer:?}",
                        discovery.issuer
                    )));
                }
                discovery.jwks_uri
            }
        };
        check_provider_url(&jwks_url).map_err(|reason| AuthError::Provider {
            url: jwks_url.clone(),
            reason,
        })?;
        let remote = RemoteKeys { client, jwks_url };
        let authenticator =
            Authenticator::with_keys(Vec::new(), KeySource::Provider(remote), issuer, audience);
        authenticator.keys.refresh().await?;
        tokio::spawn(refresh_on_schedule(
            Arc::downgrade(&authenticator.keys),
            source.refresh.max(Duration::from_secs(1)),
        ));
        Ok(authenticator)
    }

    /// The authenticator an `[auth]` section describes.
    pub async fn from_section(auth: &AuthSection) -> Result<Authenticator, AuthError> {
        let refresh = Duration::from_secs(auth.jwks_refresh_seconds);
        let authenticator = match &auth.jwks_file {
            Some(file) => {
                Authenticator::from_jwks_file(file, refresh, &auth.issuer, &auth.audience)?
            }
            None => {
                let source = ProviderKeys {
                    jwks_url: auth.jwks_url.clone(),
                    ca_file: auth.ca_file.clone(),
                    refresh,
                };
                Authenticator::from_provider(&source, &auth.issuer, &auth.audience).await?
            }
        };
        Ok(authenticator
            .with_max_lifetime(auth.max_token_lifetime)
            .with_leeway(auth.leeway_seconds)
            .with_claim_paths(ClaimPaths {
                roles: auth.roles_claim.clone(),
                jurisdiction: auth.jurisdiction_claim.clone(),
                dept: auth.dept_claim.clone(),
                name: auth.name_claim.clone(),
            }))
    }

    /// Verifies a bearer token and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        let now = jsonwebtoken::get_current_timestamp();
        {
            let mut verified = self.remembered();
            match verified.get(&id) {
                Some((principal, exp)) if now <= exp.saturating_add(self.leeway) => {
                    return Ok(principal.clone());
                }
                Some(_) => {
                    verified.remove(&id);
                    return Err(AuthError::Invalid);
                }
                None => {}
            }
        }
        let (principal, exp) = self.verify_signature(token)?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(id, (principal.clone(), exp));
        Ok(principal)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, u64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The full check: signature, algorithm, `exp`, `iss`, `aud`, claims. A `kid` the keys
    /// do not name makes a file or remote key set read again once (rate-limited) before the
    /// check.
    fn verify_signature(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if let Some(kid) = &header.kid {
            let known = self
                .keys
                .current
                .load()
                .iter()
                .any(|k| k.kid.as_deref() == Some(kid));
            if !known {
                self.keys.refresh_for_unknown_kid();
            }
        }
        let keys = self.keys.current.load();
        for VerifyKey {
            kid,
            key,
            algorithm,
        } in keys.iter()
        {
            if header.alg != *algorithm {
                continue;
            }
            if let (Some(want), Some(got)) = (kid, &header.kid) {
                if want != got {
                    continue;
                }
            }
            let mut validation = Validation::new(*algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = self.leeway;
            validation.validate_nbf = true;
            if let Ok(data) = jsonwebtoken::decode::<Value>(token, key, &validation) {
                let claims = data.claims;
                let exp = claims
                    .get("exp")
                    .and_then(Value::as_u64)
                    .ok_or(AuthError::Invalid)?;
                let now = jsonwebtoken::get_current_timestamp();
                // A token "issued" in the future starts its lifetime now.
                let start = match claims.get("iat").and_then(Value::as_u64).unwrap_or(0) {
                    0 => now,
                    iat => iat.min(now),
                };
                if exp.saturating_sub(start) > self.max_lifetime.as_secs() + self.leeway {
                    return Err(AuthError::TooLong);
                }
                return principal(&claims, &self.claims).map(|p| (p, exp));
            }
        }
        Err(AuthError::Invalid)
    }
}

/// Where remote keys come from: `jwks_url`, or (without it) the issuer's discovery document.
#[derive(Debug, Clone)]
pub struct ProviderKeys {
    pub jwks_url: Option<String>,
    /// PEM certificates trusted beside the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Time between scheduled refreshes.
    pub refresh: Duration,
}

/// The claim at `path`: a claim of that exact name, else the dotted path into nested objects.
fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.')
        .try_fold(claims, |value, part| value.get(part))
}

/// A claim holding a list of strings (one string counts as a list of one; absent or null as
/// empty); anything else is malformed.
fn strings_at(claims: &Value, path: &str) -> Result<Vec<String>, AuthError> {
    match claim_at(claims, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(AuthError::BadClaims))
            .collect(),
        Some(_) => Err(AuthError::BadClaims),
    }
}

/// A claim holding one string (absent or null: none); anything else is malformed.
fn string_at(claims: &Value, path: &str) -> Result<Option<String>, AuthError> {
    match claim_at(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(one)) => Ok(Some(one.clone())),
        Some(_) => Err(AuthError::BadClaims),
    }
}

fn principal(claims: &Value, paths: &ClaimPaths) -> Result<Principal, AuthError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(AuthError::Invalid)?
        .to_owned();
    let roles = strings_at(claims, &paths.roles)?;
    let jurisdiction = strings_at(claims, &paths.jurisdiction)?
        .iter()
        .map(|code| DivisionCode::parse(code))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthError::BadClaims)?;
    let dept = string_at(claims, &paths.dept)?
        .as_deref()
        .map(Department::parse)
        .transpose()
        .map_err(|_| AuthError::BadClaims)?;
    let name = string_at(claims, &paths.name)?.unwrap_or_default();
    let has = |set: &[&str]| roles.iter().any(|r| set.contains(&r.as_str()));
    if !roles.iter().any(|r| policies::ROLES.contains(&r.as_str())) {
        return Err(AuthError::NoKnownRole);
    }
    if has(&READER_ROLES) && jurisdiction.is_empty() {
        return Err(AuthError::NoJurisdiction);
    }
    if has(&DEPARTMENT_ROLES) && dept.is_none() {
        return Err(AuthError::NoDepartment);
    }
    Ok(Principal {
        sub,
        name,
        roles,
        jurisdiction,
        dept,
    })
}

/// Signs tokens with an Ed25519 key (the instance key in dev mode).
pub struct TokenSigner {
    key: EncodingKey,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<redacted>)")
    }
}

/// What a signed token should say.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub jurisdiction: Vec<String>,
    pub dept: Option<String>,
    pub ttl: Duration,
}

impl TokenSigner {
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenSigner, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| AuthError::KeyFile {
            path: "instance signing key".into(),
            reason: "not an Ed25519 PKCS#8 key".into(),
        })?;
        Ok(TokenSigner {
            key: EncodingKey::from_ed_der(pkcs8),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Signs exactly these claims (tests forge edge cases with it: `nbf`, long lifetimes).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|_| AuthError::Invalid)
    }

    pub fn sign(&self, request: &TokenRequest) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: request.sub.clone(),
            name: request.name.clone().unwrap_or_else(|| request.sub.clone()),
            roles: request.roles.clone(),
            jurisdiction: request.jurisdiction.clone(),
            dept: request.dept.clone(),
            iss: DEV_ISSUER.to_owned(),
            aud: DEFAULT_AUDIENCE.to_owned(),
            exp: now + request.ttl.as_secs(),
            iat: now,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|_| AuthError::Invalid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        TokenSigner::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn request() -> TokenRequest {
        TokenRequest {
            sub: "gw-001".into(),
            name: Some("李网格".into()),
            roles: vec!["grid_worker".into()],
            jurisdiction: vec!["110105001001".into()],
            dept: None,
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn signed_token_verifies_and_scopes() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let principal = auth.verify(&signer.sign(&request()).unwrap()).unwrap();
        assert_eq!(principal.sub, "gw-001");
        assert!(principal.covers(&DivisionCode::parse("110105001001003").unwrap()));
        assert!(!principal.covers(&DivisionCode::parse("110105001002003").unwrap()));
    }

    #[test]
    fn foreign_key_wrong_audience_and_garbage_are_refused() {
        let auth = Authenticator::ed25519(signer().public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        assert!(auth.verify(&signer().sign(&request()).unwrap()).is_err());
        let own = signer();
        let other_aud = Authenticator::ed25519(own.public_key(), DEV_ISSUER, "elsewhere");
        assert!(other_aud.verify(&own.sign(&request()).unwrap()).is_err());
        assert!(auth.verify("not.a.token").is_err());
        // alg=none
        assert!(auth.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").is_err());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_refused_one_is_not_remembered() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let token = signer.sign(&request()).unwrap();
        assert_eq!(auth.verify(&token).unwrap().sub, "gw-001");
        assert_eq!(auth.remembered().len(), 1);
        assert_eq!(auth.verify(&token).unwrap().sub, "gw-001", "from memory");
        // The same token, its expiry (plus leeway) now in the past.
        let past = jsonwebtoken::get_current_timestamp() - DEFAULT_LEEWAY_SECONDS - 1;
        for (_, exp) in auth.remembered().values_mut() {
            *exp = past;
        }
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid)));
        assert!(auth.remembered().is_empty(), "the expired entry is dropped");

        let foreign = super::tests::signer().sign(&request()).unwrap();
        assert!(auth.verify(&foreign).is_err());
        assert!(auth.verify(&foreign).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(
            auth.remembered().is_empty(),
            "refused tokens are not remembered"
        );
    }

    #[test]
    fn malformed_jurisdiction_is_refused() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let mut bad = request();
        bad.jurisdiction = vec!["beijing".into()];
        assert!(matches!(
            auth.verify(&signer.sign(&bad).unwrap()),
            Err(AuthError::BadClaims)
        ));
    }

    /// A key pair and its authenticator, for tokens with arbitrary JSON claims.
    fn raw_signer() -> (EncodingKey, Authenticator) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let signer = TokenSigner::from_pkcs8(pkcs8.as_ref()).unwrap();
        let auth = Authenticator::ed25519(signer.public_key(), "https://idp", DEFAULT_AUDIENCE);
        (EncodingKey::from_ed_der(pkcs8.as_ref()), auth)
    }

    fn sign_json(key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, key).unwrap()
    }

    fn keycloak_claims(aud: Value, exp_offset: i64) -> Value {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        serde_json::json!({
            "sub": "kc-1", "iss": "https://idp", "aud": aud,
            "exp": now + exp_offset, "iat": now - 60,
            "preferred_username": "网格员甲",
            "realm_access": {"roles": ["offline_access", "grid_worker"]},
            "attrs": {"jurisdiction": "110105001001"},
        })
    }

    #[test]
    fn aud_array_and_claim_paths_are_read() {
        let (key, auth) = raw_signer();
        let auth = auth.with_claim_paths(ClaimPaths {
            roles: "realm_access.roles".into(),
            jurisdiction: "attrs.jurisdiction".into(),
            dept: "dept".into(),
            name: "preferred_username".into(),
        });
        let token = sign_json(
            &key,
            &keycloak_claims(serde_json::json!(["account", "safegrid"]), 300),
        );
        let principal = auth.verify(&token).unwrap();
        assert_eq!(principal.name, "网格员甲");
        assert_eq!(principal.roles, vec!["offline_access", "grid_worker"]);
        assert!(principal.covers(&DivisionCode::parse("110105001001003").unwrap()));
        // An array without the audience, and roles at the default path (absent), are refused.
        let other = sign_json(
            &key,
            &keycloak_claims(serde_json::json!(["account", "x"]), 300),
        );
        assert!(matches!(auth.verify(&other), Err(AuthError::Invalid)));
        let (key2, default_paths) = raw_signer();
        let token2 = sign_json(&key2, &keycloak_claims(serde_json::json!("safegrid"), 300));
        assert!(matches!(
            default_paths.verify(&token2),
            Err(AuthError::NoKnownRole)
        ));
    }

    #[test]
    fn leeway_is_configurable() {
        let (key, auth) = raw_signer();
        let auth = auth.with_claim_paths(ClaimPaths {
            roles: "realm_access.roles".into(),
            jurisdiction: "attrs.jurisdiction".into(),
            ..ClaimPaths::default()
        });
        let expired_20s = sign_json(&key, &keycloak_claims(serde_json::json!("safegrid"), -20));
        let expired_40s = sign_json(&key, &keycloak_claims(serde_json::json!("safegrid"), -40));
        assert!(auth.verify(&expired_20s).is_ok(), "within the default 30 s");
        assert!(
            auth.verify(&expired_40s).is_err(),
            "beyond the default 30 s"
        );
        let auth = auth.with_leeway(5);
        let expired_20s = sign_json(&key, &keycloak_claims(serde_json::json!(["safegrid"]), -20));
        assert!(auth.verify(&expired_20s).is_err(), "beyond a 5 s leeway");
    }

    /// An Ed25519 key with its `kid`: its JWK, and tokens it signs naming the `kid`.
    struct FileKey {
        kid: String,
        pkcs8: Vec<u8>,
        public: Vec<u8>,
    }

    impl FileKey {
        fn new(kid: &str) -> FileKey {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            FileKey {
                kid: kid.to_owned(),
                pkcs8: pkcs8.as_ref().to_vec(),
                public: pair.public_key().as_ref().to_vec(),
            }
        }

        fn jwk(&self) -> Value {
            use base64::Engine as _;
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": self.kid,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public),
            })
        }

        /// A token for `sub` (distinct subjects: none is answered from memory).
        fn token(&self, sub: &str) -> String {
            let now = jsonwebtoken::get_current_timestamp();
            let claims = serde_json::json!({
                "sub": sub, "iss": "https://idp", "aud": DEFAULT_AUDIENCE,
                "exp": now + 300, "iat": now,
                "roles": ["grid_worker"], "jurisdiction": ["110105001001"],
            });
            let header = Header {
                kid: Some(self.kid.clone()),
                ..Header::new(Algorithm::EdDSA)
            };
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
        }
    }

    fn write_jwks(path: &Path, keys: &[&FileKey]) {
        let set = serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        // Replaced whole, as an operator (or a Kubernetes secret mount) does.
        let next = path.with_extension("next");
        std::fs::write(&next, set.to_string()).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    /// Forgets the last unknown-`kid` re-read, as if 10 s had passed.
    fn let_time_pass(auth: &Authenticator) {
        *auth.keys.last_unknown_kid_refresh.lock().unwrap() = None;
    }

    #[test]
    fn a_changed_jwks_file_is_read_again_on_an_unknown_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (old, new, newer) = (
            FileKey::new("2025-old"),
            FileKey::new("2026-new"),
            FileKey::new("2027"),
        );
        write_jwks(&path, &[&old]);
        let auth = Authenticator::from_jwks_file(
            &path,
            Duration::from_secs(300),
            "https://idp",
            DEFAULT_AUDIENCE,
        )
        .unwrap();
        assert_eq!(auth.verify(&old.token("a")).unwrap().sub, "a");
        assert!(format!("{auth:?}").contains("jwks.json"));

        write_jwks(&path, &[&new]);
        assert_eq!(
            auth.verify(&new.token("b")).unwrap().sub,
            "b",
            "the unknown kid made the file be read again"
        );
        assert!(
            matches!(auth.verify(&old.token("c")), Err(AuthError::Invalid)),
            "the key no longer in the file is no longer trusted"
        );

        // Unknown kids read the file at most every 10 s.
        write_jwks(&path, &[&new, &newer]);
        assert!(matches!(
            auth.verify(&newer.token("d")),
            Err(AuthError::Invalid)
        ));
        let_time_pass(&auth);
        assert_eq!(auth.verify(&newer.token("e")).unwrap().sub, "e");
        assert_eq!(auth.verify(&new.token("f")).unwrap().sub, "f");
    }

    #[test]
    fn a_jwks_file_that_turns_bad_keeps_the_last_keys_and_is_warned_about_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (key, next) = (FileKey::new("k1"), FileKey::new("k2"));
        write_jwks(&path, &[&key]);
        let auth = Authenticator::from_jwks_file(
            &path,
            Duration::from_secs(300),
            "https://idp",
            DEFAULT_AUDIENCE,
        )
        .unwrap();
        assert!(matches!(auth.keys.reread_file(), Ok(None)), "unchanged");

        let secret = "SECRET-KEY-MATERIAL-d-parameter";
        for (i, garbage) in [
            format!("{{\"keys\": [{{\"kty\": \"OKP\", \"x\": \"{secret}"),
            format!("{{\"keys\": \"{secret}\"}}"),
            format!("{{\"keys\": [{{\"kty\": \"{secret}\"}}]}}"),
            "{\"keys\": []}".to_owned(),
            "not json at all".to_owned(),
        ]
        .into_iter()
        .enumerate()
        {
            std::fs::write(&path, &garbage).unwrap();
            let err = auth.keys.reread_file().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("jwks.json"), "{text}");
            assert!(!text.contains(secret), "key material in {text:?}");
            assert!(
                matches!(auth.keys.reread_file(), Ok(None)),
                "the same bad content is not warned about again ({i})"
            );
            assert_eq!(
                auth.verify(&key.token(&format!("bad-{i}"))).unwrap().sub,
                format!("bad-{i}"),
                "the last good keys stay"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(auth.keys.reread_file().is_err());
        assert!(matches!(auth.keys.reread_file(), Ok(None)));
        assert!(auth.verify(&key.token("gone")).is_ok());

        write_jwks(&path, &[&next]);
        assert!(matches!(auth.keys.reread_file(), Ok(Some(1))));
        assert!(auth.verify(&next.token("next")).is_ok());
        assert!(auth.verify(&key.token("retired")).is_err());

        // A file unusable at start stops the start, without quoting it either.
        std::fs::write(&path, format!("{{\"keys\": \"{secret}\"}}")).unwrap();
        let err = Authenticator::from_jwks_file(
            &path,
            Duration::from_secs(300),
            "https://idp",
            DEFAULT_AUDIENCE,
        )
        .unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
    }

    #[test]
    fn provider_urls_are_https_or_loopback_http() {
        assert!(check_provider_url("https://idp.example/certs").is_ok());
        assert!(check_provider_url("http://127.0.0.1:8080/certs").is_ok());
        assert!(check_provider_url("http://[::1]:8080/certs").is_ok());
        assert!(check_provider_url("http://localhost/certs").is_ok());
        assert!(check_provider_url("http://idp.example/certs").is_err());
        assert!(check_provider_url("file:///etc/jwks.json").is_err());
        assert!(check_provider_url("not a url").is_err());
    }
}
