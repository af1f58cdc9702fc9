//! The broker's configuration file (TOML), every key documented, unknown keys refused.
//!
//! Guarantees: [`Config::load`] either returns a configuration whose values were all checked
//! or an error that names the file, the key and the problem; a secret never appears in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use model::Department;

/// Default purposes of use (`X-Purpose`).
pub const DEFAULT_PURPOSES: [&str; 6] = [
    "routine_visit",
    "dispute_mediation",
    "elderly_care",
    "emergency",
    "case_investigation",
    "child_protection",
];

/// Accesses tied to a case are withheld from the resident report this long by default.
pub const DEFAULT_CASE_DEFERRAL_DAYS: i64 = 90;
/// Longest deferral a report may ask for (ten years).
pub const MAX_CASE_DEFERRAL_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config key {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on, e.g. `0.0.0.0:8443`.
    pub listen: Option<SocketAddr>,
    /// TLS certificate and key for the API (PEM). Required unless `serve --dev`.
    pub tls: Option<TlsSection>,
    /// Who may sign tokens. Required unless `serve --dev`.
    pub auth: Option<AuthSection>,
    /// Limits on what departments publish.
    #[serde(default)]
    pub ingest: IngestSection,
    /// Purposes of use a reader may state in `X-Purpose`.
    #[serde(default = "default_purposes")]
    pub purposes: Vec<String>,
    /// Folder with `model.conf` and `policy.csv` (casbin); the shipped defaults if absent.
    pub policy_dir: Option<PathBuf>,
    /// Per-field authority order: `"resident.phone" = ["gongan", "minzheng"]`. Departments
    /// earlier in the list win when departments disagree on that field.
    #[serde(default)]
    pub authority: BTreeMap<String, Vec<Department>>,
    /// Audit log settings.
    #[serde(default)]
    pub audit: AuditSection,
    /// Store settings.
    #[serde(default)]
    pub store: StoreSection,
    /// Folder of push mappings, one `<department>.toml` each holding a `[mapping]` table: that
    /// department may push its own schema to `POST /v1/ingest/{department}`.
    pub mappings_dir: Option<PathBuf>,
    /// Folder of connector configurations (`*.toml`) the broker runs on their schedules.
    pub connectors_dir: Option<PathBuf>,
    /// Folder where `POST /v1/admin/backup` writes consistent backups while serving (outside
    /// the data directory; the master key is never part of a backup).
    pub backup_dir: Option<PathBuf>,
    /// Most break-glass reads one principal may make per hour.
    #[serde(default = "default_break_glass_per_hour")]
    pub break_glass_per_hour: usize,
    /// Client certificates (mTLS) for department connectors.
    pub mtls: Option<MtlsSection>,
    /// Limits on connections and requests.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where Prometheus scrapes `/metrics` without a token (plain HTTP; keep it on loopback
    /// or a management network), e.g. `127.0.0.1:9464` (the default), or `off`. On the API
    /// port `/metrics` answers only a `system_admin` token.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Words of this street that word segmentation should keep whole in event titles and
    /// descriptions (compound, road and place names): a UTF-8 file, one word a line,
    /// optionally followed by a frequency, `#` for comments. Read at start; the search index
    /// is rebuilt when the list changes.
    pub user_dictionary: Option<PathBuf>,
    /// Exchange: where departments' subscriptions may deliver.
    #[serde(default)]
    pub exchange: ExchangeSection,
    /// Events that grid workers report: deadlines per type.
    #[serde(default)]
    pub events: EventsSection,
    /// The web console (`/console/`).
    #[serde(default)]
    pub console: ConsoleSection,
}

/// `[console]`: the web console.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Whether `/console/login` takes a pasted access token (always on with `--dev`). Turn it
    /// on where staff get their tokens from the identity provider's own portal.
    #[serde(default)]
    pub token_login: bool,
    /// Log in through the identity provider (OpenID Connect authorization code with PKCE):
    /// this broker's client id there.
    pub oidc_client_id: Option<String>,
    /// The environment variable holding the client secret, for a confidential client (none
    /// for a public client with PKCE only).
    pub oidc_client_secret_env: Option<String>,
    /// The broker's public URL of `/console/login/callback` (https), as registered at the
    /// provider.
    pub oidc_redirect_url: Option<String>,
    /// The provider's endpoints; read from `<auth.issuer>/.well-known/openid-configuration`
    /// when absent.
    pub oidc_authorization_endpoint: Option<String>,
    pub oidc_token_endpoint: Option<String>,
    /// Scopes asked for (`openid`).
    pub oidc_scope: Option<String>,
}

/// `[exchange]`: delivery hosts per department and the trust for their certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSection {
    /// Host names each department's subscriptions may deliver to, e.g.
    /// `sifa = ["receiver.sifa.example.gov.cn"]`. A subscription to any other host is
    /// refused (`delivery_host_not_allowed`); `serve --dev` also allows loopback.
    #[serde(default)]
    pub allowed_hosts: BTreeMap<Department, Vec<String>>,
    /// Extra CA certificates (PEM) trusted for delivery hosts, beside the system's roots
    /// (a department's own CA on a government network).
    pub ca_file: Option<PathBuf>,
    /// Seconds a delivery is retried after its first attempt before it is listed as failed
    /// (86400: a day).
    #[serde(default = "default_retry_for_seconds")]
    pub retry_for_seconds: u64,
    /// Longest wait between two attempts of one delivery, in seconds (3600).
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: u64,
}

impl Default for ExchangeSection {
    fn default() -> Self {
        ExchangeSection {
            allowed_hosts: BTreeMap::new(),
            ca_file: None,
            retry_for_seconds: default_retry_for_seconds(),
            max_backoff_seconds: default_max_backoff_seconds(),
        }
    }
}

fn default_retry_for_seconds() -> u64 {
    86_400
}
fn default_max_backoff_seconds() -> u64 {
    3_600
}

/// `[events]`: the lifecycle of reported events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Hours an event of a type may stay open (reported, accepted, dispatched or in
    /// progress) before `GET /v1/events?overdue=true` lists it, per event type, counted
    /// from when it occurred (`occurred_at`; a report without one occurred when it was
    /// reported): `deadline_hours = { dispute = 72, fire_hazard = 24 }`. 1 to 8760.
    #[serde(default)]
    pub deadline_hours: BTreeMap<String, u32>,
    /// Hours for every type `deadline_hours` does not name (default 168, a week).
    #[serde(default = "default_deadline_hours")]
    pub default_deadline_hours: u32,
}

/// Longest deadline, in hours (a year).
pub const MAX_DEADLINE_HOURS: u32 = 8760;

fn default_deadline_hours() -> u32 {
    168
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            deadline_hours: BTreeMap::new(),
            default_deadline_hours: default_deadline_hours(),
        }
    }
}

impl EventsSection {
    /// The deadline of an event of `event_type`, in hours.
    pub fn deadline_hours_of(&self, event_type: &str) -> u32 {
        self.deadline_hours
            .get(event_type)
            .copied()
            .unwrap_or(self.default_deadline_hours)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let hours = 1..=MAX_DEADLINE_HOURS;
        if !hours.contains(&self.default_deadline_hours) {
            return Err(ConfigError::Invalid {
                key: "events.default_deadline_hours".to_owned(),
                reason: format!("must be 1 to {MAX_DEADLINE_HOURS} (hours)"),
            });
        }
        for (event_type, deadline) in &self.deadline_hours {
            let key = format!("events.deadline_hours.{event_type}");
            if !policies::exchange::is_type_code(event_type) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "event types are snake_case codes (as in routing.csv), e.g. dispute"
                        .to_owned(),
                });
            }
            if !hours.contains(deadline) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be 1 to {MAX_DEADLINE_HOURS} (hours)"),
                });
            }
        }
        Ok(())
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

impl Config {
    /// The user dictionary's words (none when `user_dictionary` is not set).
    pub fn user_words(&self) -> Result<Vec<chinese_text::segment::UserWord>, ConfigError> {
        let Some(path) = &self.user_dictionary else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        chinese_text::segment::parse_user_dictionary(&text).map_err(|err| ConfigError::Invalid {
            key: "user_dictionary".to_owned(),
            reason: format!("{}: {err}", path.display()),
        })
    }

    /// The metrics listener's address, `None` when `off`.
    pub fn metrics_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics_listen.trim() {
            "off" | "" => Ok(None),
            text => text.parse().map(Some).map_err(|_| ConfigError::Invalid {
                key: "metrics_listen".to_owned(),
                reason: "an address and port such as 127.0.0.1:9464, or off".to_owned(),
            }),
        }
    }
}

/// Limits that keep one client from holding the broker (each refusal is counted in
/// `/metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Most open connections per listener (10000); more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (10).
    #[serde(default = "default_header_read_seconds")]
    pub header_read_seconds: u64,
    /// Seconds a connection may sit with no request in flight and nothing moving (60).
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u64,
    /// Seconds a client may take to send a request body, e.g. an ingest batch (300).
    #[serde(default = "default_body_read_seconds")]
    pub body_read_seconds: u64,
    /// Requests per second one principal may make, sustained (50).
    #[serde(default = "default_rate_per_second")]
    pub rate_per_second: u32,
    /// Requests one principal may make in a burst above the sustained rate (100).
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: default_max_connections(),
            header_read_seconds: default_header_read_seconds(),
            idle_seconds: default_idle_seconds(),
            body_read_seconds: default_body_read_seconds(),
            rate_per_second: default_rate_per_second(),
            rate_burst: default_rate_burst(),
        }
    }
}

fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_seconds() -> u64 {
    10
}
fn default_idle_seconds() -> u64 {
    60
}
fn default_body_read_seconds() -> u64 {
    300
}
fn default_rate_per_second() -> u32 {
    50
}
fn default_rate_burst() -> u32 {
    100
}

/// A second listener that requires department client certificates (mTLS). It serves the same
/// API; readers keep using the main listener with TLS and tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSection {
    /// Address of the mTLS listener, e.g. `0.0.0.0:9443`.
    pub listen: SocketAddr,
    /// PEM certificate(s) of the CA that issues department client certificates.
    pub client_ca_file: PathBuf,
    /// Certificate revocation lists of that CA (PEM or DER). A CRL past its `nextUpdate`
    /// refuses every client: re-sign it in time (`safegrid certs crl`).
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// Refuse ingest on the main listener: publishers must come through the mTLS listener.
    #[serde(default = "default_true")]
    pub require_for_ingest: bool,
    /// Seconds between checks of the CA, CRL and server certificate files for changes.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
    /// Client certificate common name -> department, for certificates whose subject does not
    /// carry a department code in `OU` or `CN`.
    #[serde(default)]
    pub subjects: BTreeMap<String, Department>,
}

fn default_true() -> bool {
    true
}
fn default_reload_seconds() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// JWKS file with the public keys of the identity provider (EdDSA, ES256 or RS256).
    /// Exactly one of `jwks_file`, `jwks_url` and `discovery` says where the keys are.
    pub jwks_file: Option<PathBuf>,
    /// URL of the identity provider's JWKS, e.g.
    /// `https://idp.example/realms/grid/protocol/openid-connect/certs` (https; plain http only
    /// on the loopback interface). Fetched at start, every `jwks_refresh_seconds`, and when a
    /// token names an unknown `kid` (at most every 10 s); a failed fetch keeps the last keys.
    pub jwks_url: Option<String>,
    /// Find the JWKS through `<issuer>/.well-known/openid-configuration` (its `jwks_uri`);
    /// the document's `issuer` must equal `issuer`.
    #[serde(default, alias = "issuer_discovery")]
    pub discovery: bool,
    /// PEM certificate(s) trusted for the identity provider besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Seconds between scheduled refreshes of remote keys (300).
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim (a token's `aud` may be a string or an array containing it).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Longest token lifetime accepted (`exp` after `iat`), e.g. `12h` (the default), `30m`.
    #[serde(
        default = "default_max_token_lifetime",
        with = "humantime_serde_compat"
    )]
    pub max_token_lifetime: std::time::Duration,
    /// Seconds of clock skew allowed on `exp` and `nbf` (30, at most 300).
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Claim with the roles: a name or a dotted path, e.g. `realm_access.roles` (`roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim with the division codes a reader covers (`jurisdiction`).
    #[serde(default = "default_jurisdiction_claim")]
    pub jurisdiction_claim: String,
    /// Claim with the department code of a department role (`dept`).
    #[serde(default = "default_dept_claim")]
    pub dept_claim: String,
    /// Claim with the person's display name (`name`).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
}

fn default_jwks_refresh_seconds() -> u64 {
    crate::auth::DEFAULT_JWKS_REFRESH_SECONDS
}
fn default_leeway_seconds() -> u64 {
    crate::auth::DEFAULT_LEEWAY_SECONDS
}
fn default_roles_claim() -> String {
    "roles".to_owned()
}
fn default_jurisdiction_claim() -> String {
    "jurisdiction".to_owned()
}
fn default_dept_claim() -> String {
    "dept".to_owned()
}
fn default_name_claim() -> String {
    "name".to_owned()
}

impl AuthSection {
    /// Checks the section on its own; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("auth.{key}"),
            reason,
        };
        let sources = usize::from(self.jwks_file.is_some())
            + usize::from(self.jwks_url.is_some())
            + usize::from(self.discovery);
        if sources != 1 {
            return Err(invalid(
                "jwks_file",
                "set exactly one of jwks_file, jwks_url and discovery = true".to_owned(),
            ));
        }
        if let Some(url) = &self.jwks_url {
            crate::auth::check_provider_url(url).map_err(|reason| invalid("jwks_url", reason))?;
        }
        if self.discovery {
            let url = format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            );
            crate::auth::check_provider_url(&url).map_err(|reason| {
                invalid(
                    "discovery",
                    format!("the issuer is not a usable URL: {reason}"),
                )
            })?;
        }
        if self.issuer.is_empty() {
            return Err(invalid("issuer", "must not be empty".to_owned()));
        }
        if !(1..=86_400).contains(&self.jwks_refresh_seconds) {
            return Err(invalid(
                "jwks_refresh_seconds",
                "must be 1 to 86400 (seconds)".to_owned(),
            ));
        }
        if self.leeway_seconds > 300 {
            return Err(invalid(
                "leeway_seconds",
                "must be 0 to 300 (seconds)".to_owned(),
            ));
        }
        for (key, path) in [
            ("roles_claim", &self.roles_claim),
            ("jurisdiction_claim", &self.jurisdiction_claim),
            ("dept_claim", &self.dept_claim),
            ("name_claim", &self.name_claim),
        ] {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(invalid(
                    key,
                    "a claim name or dotted path like realm_access.roles".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

fn default_max_token_lifetime() -> std::time::Duration {
    crate::auth::DEFAULT_MAX_TOKEN_LIFETIME
}

/// `humantime` strings ("12h") for durations in the configuration file.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 12h or 30m: {e}"))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// Largest accepted ingest body in bytes; larger batches get 413 `payload_too_large`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_body_bytes: default_max_body(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `embedded` (the default: one file under the data directory, for one street on one
    /// machine) or `postgres` (a PostgreSQL database that several brokers share).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The PostgreSQL database, `postgres://user:password@host:5432/database`, for
    /// `backend = "postgres"`; better given as `SAFEGRID_STORE_URL` than written in the file.
    /// Never logged or printed.
    #[serde(default)]
    pub url: Option<StoreUrl>,
    /// The PostgreSQL schema holding the store's tables (created if missing).
    #[serde(default = "default_store_schema")]
    pub schema: String,
    /// Most PostgreSQL connections this broker opens (each request that reads holds one).
    #[serde(default = "default_store_max_connections")]
    pub max_connections: u32,
    /// Memory for the embedded store's page cache, in MiB (a ceiling, filled as pages are
    /// read).
    #[serde(default = "default_store_cache_mb")]
    pub cache_mb: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::default(),
            url: None,
            schema: default_store_schema(),
            max_connections: default_store_max_connections(),
            cache_mb: default_store_cache_mb(),
        }
    }
}

impl StoreSection {
    /// The PostgreSQL options, when the backend is `postgres` (validated: a URL is there).
    pub fn postgres(&self) -> Option<vault::store::PostgresOptions> {
        match (self.backend, &self.url) {
            (StoreBackend::Postgres, Some(url)) => {
                let mut options =
                    vault::store::PostgresOptions::new(url.0.clone()).schema(self.schema.clone());
                options.max_connections = self.max_connections;
                Some(options)
            }
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if !(16..=65_536).contains(&self.cache_mb) {
            return Err(invalid("store.cache_mb", "must be 16 to 65536 (MiB)"));
        }
        if self.backend == StoreBackend::Postgres {
            let Some(url) = &self.url else {
                return Err(invalid(
                    "store.url",
                    "backend = \"postgres\" needs the database URL (store.url or SAFEGRID_STORE_URL)",
                ));
            };
            if !["postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.0.starts_with(scheme))
            {
                return Err(invalid(
                    "store.url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if self.schema.is_empty()
            || self.schema.len() > 63
            || self.schema.starts_with(|c: char| c.is_ascii_digit())
            || !self.schema.chars().all(plain)
        {
            return Err(invalid(
                "store.schema",
                "a lower-case identifier: a-z, 0-9 and _, not starting with a digit, at most 63",
            ));
        }
        if !(2..=1000).contains(&self.max_connections) {
            return Err(invalid("store.max_connections", "must be 2 to 1000"));
        }
        Ok(())
    }
}

/// Which engine holds the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Postgres,
}

/// A database URL, which may hold a password: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn new(url: impl Into<String>) -> StoreUrl {
        StoreUrl(url.into())
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Checkpoint origin line and key name (no spaces), e.g. `safegrid.example.gov.cn/audit`.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Seconds between signed checkpoints while the log grows.
    #[serde(default = "default_checkpoint_seconds")]
    pub checkpoint_seconds: u64,
    /// Days an access tagged with a case id (by a role that may open cases) is withheld from
    /// the resident's access report; also the most a report may ask for. 0 to 3650.
    #[serde(default = "default_case_deferral_days")]
    pub case_deferral_days: i64,
    /// MiB the audit log leaves free on its file system: below it, new audit records (and so
    /// every read of personal data) are refused with 503 until space returns, no restart (64).
    #[serde(default = "default_audit_min_free_mb")]
    pub min_free_mb: u64,
    /// Largest stored audit record in bytes; longer values are cut and hashed (16384).
    #[serde(default = "default_audit_max_record_bytes")]
    pub max_record_bytes: usize,
}

fn default_audit_min_free_mb() -> u64 {
    64
}
fn default_audit_max_record_bytes() -> usize {
    16 * 1024
}

fn default_case_deferral_days() -> i64 {
    DEFAULT_CASE_DEFERRAL_DAYS
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            origin: default_origin(),
            checkpoint_seconds: default_checkpoint_seconds(),
            case_deferral_days: default_case_deferral_days(),
            min_free_mb: default_audit_min_free_mb(),
            max_record_bytes: default_audit_max_record_bytes(),
        }
    }
}

fn default_break_glass_per_hour() -> usize {
    20
}
fn default_purposes() -> Vec<String> {
    DEFAULT_PURPOSES.iter().map(|p| (*p).to_owned()).collect()
}
fn default_audience() -> String {
    crate::auth::DEFAULT_AUDIENCE.to_owned()
}
fn default_max_body() -> usize {
    64 * 1024 * 1024
}
fn default_store_schema() -> String {
    "safegrid".to_owned()
}
fn default_store_max_connections() -> u32 {
    32
}
fn default_store_cache_mb() -> usize {
    vault::store::DEFAULT_CACHE_BYTES / (1024 * 1024)
}
fn default_origin() -> String {
    "safegrid/audit".to_owned()
}
fn default_checkpoint_seconds() -> u64 {
    5
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            tls: None,
            auth: None,
            ingest: IngestSection::default(),
            purposes: default_purposes(),
            policy_dir: None,
            authority: BTreeMap::new(),
            audit: AuditSection::default(),
            store: StoreSection::default(),
            break_glass_per_hour: default_break_glass_per_hour(),
            mtls: None,
            limits: LimitsSection::default(),
            metrics_listen: default_metrics_listen(),
            mappings_dir: None,
            connectors_dir: None,
            backup_dir: None,
            user_dictionary: None,
            exchange: ExchangeSection::default(),
            events: EventsSection::default(),
            console: ConsoleSection::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: format!(
                "{}{}",
                e.message(),
                e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default()
            ),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.purposes.is_empty() {
            return Err(invalid("purposes", "list at least one purpose of use"));
        }
        if let Some(bad) = self
            .purposes
            .iter()
            .find(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            let _ = bad;
            return Err(invalid("purposes", "purposes are snake_case ASCII codes"));
        }
        if !(0..=MAX_CASE_DEFERRAL_DAYS).contains(&self.audit.case_deferral_days) {
            return Err(invalid(
                "audit.case_deferral_days",
                "must be 0 to 3650 (days)",
            ));
        }
        if self
            .purposes
            .iter()
            .any(|p| p == policies::BREAK_GLASS_PURPOSE)
        {
            return Err(invalid(
                "purposes",
                "break_glass is reserved for break-glass levels; send X-Break-Glass instead",
            ));
        }
        self.metrics_address()?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        self.store.validate()?;
        for key in self.authority.keys() {
            let valid = key.split_once('.').is_some_and(|(kind, field)| {
                model::RecordKind::parse(kind).is_some() && !field.is_empty()
            });
            if !valid {
                return Err(invalid(
                    &format!("authority.\"{key}\""),
                    "keys are <kind>.<field>, e.g. resident.phone",
                ));
            }
        }
        if self.audit.origin.is_empty() || self.audit.origin.contains([' ', '+', '\n']) {
            return Err(invalid("audit.origin", "no spaces, '+' or newlines"));
        }
        self.events.validate()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_user_dictionary_is_read_and_a_bad_line_is_named_without_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words.txt");
        std::fs::write(&path, "# street words\n安和里\n青松園 500\n").unwrap();
        let config = Config {
            user_dictionary: Some(path.clone()),
            ..Config::default()
        };
        let words: Vec<String> = config
            .user_words()
            .unwrap()
            .into_iter()
            .map(|w| w.word)
            .collect();
        assert_eq!(words, ["安和里", "青松园"], "words are folded");

        std::fs::write(&path, "安和里\n青松园 many\n").unwrap();
        let err = config.user_words().unwrap_err().to_string();
        assert!(
            err.contains("user_dictionary") && err.contains("line 2"),
            "{err}"
        );
        assert!(err.contains("frequency"), "says what to fix: {err}");

        let missing = Config {
            user_dictionary: Some(dir.path().join("absent.txt")),
            ..Config::default()
        };
        assert!(missing
            .user_words()
            .unwrap_err()
            .to_string()
            .contains("absent.txt"));
        assert!(Config::default().user_words().unwrap().is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listn = \"0.0.0.0:1\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn event_deadlines_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[events]\ndeadline_hours = { dispute = 72, fire_hazard = 24 }\ndefault_deadline_hours = 48\n",
        )
        .unwrap();
        let events = Config::load(&path).unwrap().events;
        assert_eq!(events.deadline_hours_of("dispute"), 72);
        assert_eq!(events.deadline_hours_of("fire_hazard"), 24);
        assert_eq!(events.deadline_hours_of("sanitation"), 48);
        assert_eq!(
            Config::default().events.deadline_hours_of("dispute"),
            168,
            "a week unless configured"
        );
        for (text, key) in [
            ("[events]\ndeadline_hours = { Dispute = 72 }\n", "Dispute"),
            ("[events]\ndeadline_hours = { dispute = 0 }\n", "dispute"),
            ("[events]\ndeadline_hours = { dispute = 9000 }\n", "dispute"),
            (
                "[events]\ndefault_deadline_hours = 0\n",
                "default_deadline_hours",
            ),
            ("[events]\ndeadlines = { dispute = 1 }\n", "deadlines"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn authority_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[authority]\n\"phone\" = [\"gongan\"]\n").unwrap();
        assert!(Config::load(&path)
            .unwrap_err()
            .to_string()
            .contains("authority"));
        std::fs::write(
            &path,
            "[authority]\n\"resident.phone\" = [\"minzheng\", \"gongan\"]\n",
        )
        .unwrap();
        assert_eq!(Config::load(&path).unwrap().authority.len(), 1);
    }
}
