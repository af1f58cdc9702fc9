//! Exchange: departments' subscriptions to what their sharing agreements let them receive,
//! delivered as signed webhooks and pulled as feeds.
//!
//! Guarantees:
//! - The outbox is the store's change sequence: every write appends the entities it changed
//!   in the same transaction, in commit order, without gaps. A subscription keeps a cursor in
//!   that sequence; nothing else needs to be written for a change to be delivered.
//! - Deliveries of one subscription go one at a time in sequence order, so they arrive in
//!   order per entity (and overall). A delivery is retried with backoff (1 s doubling to
//!   `exchange.max_backoff_seconds`, 1 h) until `exchange.retry_for_seconds` (24 h) have
//!   passed since its first attempt, then listed as failed and the cursor moves on; a failed
//!   delivery can be retried by its department. The cursor, the delivery in flight and its
//!   attempts are stored after each step, so a restart (even a kill -9) resumes: at least
//!   once, never skipped. Each delivery carries the entity as it is when sent.
//! - What a delivery holds passes the disclosure gate ([`crate::api::disclosure`]): the
//!   subscription's agreement, its grids, the owner restrictions, and an audit record per
//!   disclosure (actor `subscription:<id>`, the subscription's purpose) durable before the
//!   request leaves.
//! - Delivery URLs are https on the department's allowed hosts (`[exchange.allowed_hosts]`),
//!   checked when the subscription is made and again before every request; `--dev` also allows
//!   loopback, plain http included. Redirects are not followed.
//! - The secret is shown once, stored sealed under the department's data key, and signs
//!   every delivery: `X-SafeGrid-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use model::{Department, RecordKind};
use serde::{Deserialize, Serialize};
use vault::crypto::{FieldContext, KeyRing};
use vault::store::{Store, StoreError};

use crate::config::ExchangeSection;

/// Longest a delivery request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivered entries kept per subscription (failed and pending ones are all kept).
pub const DELIVERED_KEPT: usize = 1000;
/// Most subscriptions one department may hold.
pub const MAX_SUBSCRIPTIONS_PER_DEPARTMENT: usize = 50;
/// Longest accepted delivery URL.
pub const MAX_URL_CHARS: usize = 2000;

fn subscription_key(id: &str) -> String {
    format!("exchange/subscription/{id}")
}
fn state_key(id: &str) -> String {
    format!("exchange/state/{id}")
}
fn delivery_prefix(id: &str) -> String {
    format!("exchange/delivery/{id}/")
}
fn delivery_key(id: &str, seq: u64) -> String {
    format!("{}{seq:020}", delivery_prefix(id))
}
fn seen_key(id: &str, entity: &str) -> String {
    format!("exchange/seen/{id}/{entity}")
}

/// One department's subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub department: Department,
    pub kinds: Vec<RecordKind>,
    /// Event types (empty: every type its agreement covers).
    #[serde(default)]
    pub types: Vec<String>,
    /// Division codes the subscription covers (inside the creating token's jurisdiction).
    pub grids: Vec<String>,
    pub purpose: String,
    /// Where deliveries go; none for a feed-only subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The change sequence when it was made: it receives what changes after.
    pub start_seq: u64,
    /// The secret, sealed under the department's data key (base64).
    sealed_secret: String,
}

/// Where a subscription's webhook deliveries stand.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Every change up to here is delivered, failed or not for this subscription.
    pub cursor: u64,
    /// The delivery in flight.
    pub head: Option<Head>,
    pub delivered: u64,
    pub failed: u64,
}

/// The delivery in flight: the change, its attempts and when to try next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub entity: String,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    /// A retry of an earlier failed delivery (its cursor has long moved on).
    #[serde(default)]
    pub retry: bool,
}

/// Where one delivery stands, as its department sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryEntry {
    pub delivery_id: String,
    pub seq: u64,
    /// The unified id the change was about.
    pub id: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why the last attempt failed (no personal data: a status or a connection error kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The stable id of the delivery of change `seq` to subscription `id`.
pub fn delivery_id(id: &str, seq: u64) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{id}|{seq}").as_bytes());
    format!("dlv_{}", hex::encode(&digest.as_ref()[..10]))
}

/// The signature header of a delivery body: `t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>`.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The wait before attempt `attempts + 1`: 1 s doubling, at most `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    Duration::from_secs(1u64 << exponent).min(max)
}

/// Why a delivery URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRefused {
    pub code: &'static str,
    pub message: String,
}

/// The exchange's state: subscriptions in the store's meta table, the delivery client.
#[derive(Debug)]
pub struct Exchange {
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    config: ExchangeSection,
    dev: bool,
    client: reqwest::Client,
    /// Serialises changes to one subscription's state between the API and its worker.
    lock: Mutex<()>,
    /// Bumped after every commit that appended to the change sequence (the store's
    /// observer), so idle workers wake at once instead of polling.
    commits: tokio::sync::watch::Sender<u64>,
    /// This process among the brokers sharing a store: the holder named in delivery leases.
    instance: String,
}

/// How long a broker's hold on one subscription's deliveries lasts unless renewed (renewed at
/// half of it). A broker that dies is replaced by another after at most this long; one that
/// stops cleanly hands over at once.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(15);

/// Who delivers a subscription, in the store's meta table (`exchange/lease/<id>`).
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    /// Unix milliseconds, by the holder's clock.
    until_ms: i64,
}

fn lease_key(id: &str) -> String {
    format!("exchange/lease/{id}")
}

impl Exchange {
    pub fn new(
        store: Arc<Store>,
        keys: Arc<KeyRing>,
        config: ExchangeSection,
        dev: bool,
    ) -> anyhow::Result<Exchange> {
        let client = delivery_client(&config)?;
        let (commits, _) = tokio::sync::watch::channel(0u64);
        let notify = commits.clone();
        // Another observer (a second broker on one store, in tests) keeps its own wake-ups;
        // this one then polls every second.
        store.observe_commits(move || {
            notify.send_modify(|n| *n = n.wrapping_add(1));
        });
        Ok(Exchange {
            store,
            keys,
            config,
            dev,
            client,
            lock: Mutex::new(()),
            commits,
            instance: hex::encode(rand::random::<[u8; 12]>()),
        })
    }

    /// Takes or renews this broker's hold on delivering subscription `id`; false while another
    /// broker sharing the store holds it. With the embedded store one process holds the file,
    /// so the answer is always yes and nothing is written. A lease whose end lies more than
    /// two leases ahead of this broker's clock (a holder with a clock far ahead) counts as
    /// expired, so such a holder cannot keep a subscription for longer than that when it dies.
    pub fn hold_lease(&self, id: &str) -> Result<bool, StoreError> {
        if self.store.is_embedded() {
            return Ok(true);
        }
        let key = lease_key(id);
        let span = i64::try_from(DELIVERY_LEASE.as_millis()).unwrap_or(i64::MAX);
        self.store.write(|w| {
            let now = Utc::now().timestamp_millis();
            let current: Option<Lease> = w
                .meta(&key)?
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let free = match &current {
                None => true,
                Some(lease) if lease.holder == self.instance => true,
                Some(lease) => {
                    lease.until_ms < now || lease.until_ms > now.saturating_add(2 * span)
                }
            };
            if free {
                let lease = Lease {
                    holder: self.instance.clone(),
                    until_ms: now.saturating_add(span),
                };
                w.put_meta(&key, &encode(&lease))?;
            }
            Ok(free)
        })
    }

    /// Gives up this broker's hold on `id` (on shutdown), so another broker takes over at
    /// once.
    pub fn release_lease(&self, id: &str) -> Result<(), StoreError> {
        if self.store.is_embedded() {
            return Ok(());
        }
        let key = lease_key(id);
        self.store.write(|w| {
            let ours = w
                .meta(&key)?
                .and_then(|bytes| serde_json::from_slice::<Lease>(&bytes).ok())
                .is_some_and(|lease| lease.holder == self.instance);
            if ours {
                w.delete_meta(&key)?;
            }
            Ok(())
        })
    }

    /// A receiver that changes after every commit that appended to the change sequence.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Checks a delivery URL for `department`: https (or, in dev mode, a loopback http) on
    /// one of the department's allowed hosts (or loopback in dev mode).
    pub fn check_url(&self, department: Department, url: &str) -> Result<(), UrlRefused> {
        let refused = |code, message: String| UrlRefused { code, message };
        if url.chars().count() > MAX_URL_CHARS {
            return Err(refused(
                "url_invalid",
                format!("url may have at most {MAX_URL_CHARS} characters"),
            ));
        }
        let parsed = reqwest::Url::parse(url).map_err(|_| {
            refused(
                "url_invalid",
                "url must be an absolute https URL, e.g. https://receiver.example.gov.cn/safegrid"
                    .to_owned(),
            )
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(refused(
                "url_invalid",
                "url may not carry credentials; deliveries are signed instead".to_owned(),
            ));
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let loopback = self.dev && is_loopback(&host);
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(refused(
                    "url_not_https",
                    "deliveries go over https only".to_owned(),
                ))
            }
        }
        let allowed = self
            .config
            .allowed_hosts
            .get(&department)
            .is_some_and(|hosts| hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)));
        if allowed || loopback {
            Ok(())
        } else {
            Err(refused(
                "delivery_host_not_allowed",
                format!(
                    "the host is not on {}'s allowed delivery hosts ([exchange.allowed_hosts] in the broker's configuration)",
                    department.code()
                ),
            ))
        }
    }

    /// Stores a new subscription; returns it and its secret (shown once).
    pub fn create(
        &self,
        mut subscription: NewSubscription,
    ) -> Result<(Subscription, String), StoreError> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut raw = [0u8; 16];
        let mut secret = [0u8; 32];
        rng.fill(&mut raw)
            .and_then(|()| rng.fill(&mut secret))
            .map_err(|_| StoreError::Corrupt {
                key: "exchange/subscription".to_owned(),
                reason: "the system random generator failed".to_owned(),
            })?;
        let id = format!("sub_{}", hex::encode(raw));
        let secret_hex = hex::encode(secret);
        let row = subscription_key(&id);
        let sealed = self
            .keys
            .seal(
                FieldContext {
                    department: subscription.department,
                    row: &row,
                    field: "secret",
                },
                secret_hex.as_bytes(),
            )
            .map_err(|err| StoreError::Corrupt {
                key: row.clone(),
                reason: err.to_string(),
            })?;
        subscription.types.sort();
        subscription.types.dedup();
        let _guard = self.lock.lock();
        let stored = self.store.write(|w| {
            let start_seq = w.change_seq()?;
            let stored = Subscription {
                id: id.clone(),
                department: subscription.department,
                kinds: subscription.kinds,
                types: subscription.types,
                grids: subscription.grids,
                purpose: subscription.purpose,
                url: subscription.url,
                created_by: subscription.created_by,
                created_at: Utc::now(),
                start_seq,
                sealed_secret: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &sealed,
                ),
            };
            w.put_meta(&row, &encode(&stored))?;
            let state = DeliveryState {
                cursor: start_seq,
                ..DeliveryState::default()
            };
            w.put_meta(&state_key(&id), &encode(&state))?;
            Ok::<_, StoreError>(stored)
        })?;
        Ok((stored, secret_hex))
    }

    /// Every live subscription, of one department or all.
    pub fn list(&self, department: Option<Department>) -> Result<Vec<Subscription>, StoreError> {
        let reader = self.store.read()?;
        Ok(reader
            .meta_with_prefix("exchange/subscription/")?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<Subscription>(&bytes).ok())
            .filter(|s| department.is_none_or(|d| s.department == d))
            .collect())
    }

    pub fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        if !is_subscription_id(id) {
            return Ok(None);
        }
        Ok(self
            .store
            .meta(&subscription_key(id))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Deletes a subscription, its state, deliveries and seen set.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let _guard = self.lock.lock();
        self.store.write(|w| {
            let existed = w.delete_meta(&subscription_key(id))?;
            w.delete_meta(&state_key(id))?;
            for prefix in [delivery_prefix(id), format!("exchange/seen/{id}/")] {
                for key in w.meta_keys(&prefix)? {
                    w.delete_meta(&key)?;
                }
            }
            Ok(existed)
        })
    }

    /// The subscription's delivery state.
    pub fn state(&self, id: &str) -> Result<DeliveryState, StoreError> {
        Ok(self
            .store
            .meta(&state_key(id))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default())
    }

    /// Deliveries of a subscription with `status` (any when `None`), newest first.
    pub fn deliveries(
        &self,
        id: &str,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryEntry>, StoreError> {
        let reader = self.store.read()?;
        let mut entries: Vec<DeliveryEntry> = reader
            .meta_with_prefix(&delivery_prefix(id))?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<DeliveryEntry>(&bytes).ok())
            .filter(|e| status.is_none_or(|s| e.status == s))
            .collect();
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }

    /// The delivery entry of change `seq` of subscription `id`, if one was recorded.
    pub fn delivery(&self, id: &str, seq: u64) -> Result<Option<DeliveryEntry>, StoreError> {
        Ok(self
            .store
            .meta(&delivery_key(id, seq))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Queues a failed delivery to be sent again (before the next new change). Returns
    /// whether it was a failed delivery of this subscription.
    pub fn retry(&self, id: &str, delivery: &str) -> Result<bool, StoreError> {
        let _guard = self.lock.lock();
        self.store.write(|w| {
            let Some(seq) = find_failed(w, id, delivery)? else {
                return Ok(false);
            };
            let mut retries: Vec<u64> = w
                .meta(&retry_key(id))?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if !retries.contains(&seq) {
                retries.push(seq);
            }
            w.put_meta(&retry_key(id), &encode(&retries))?;
            Ok(true)
        })
    }

    /// The subscription's secret.
    fn secret(&self, subscription: &Subscription) -> Option<Vec<u8>> {
        let sealed = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &subscription.sealed_secret,
        )
        .ok()?;
        let row = subscription_key(&subscription.id);
        self.keys
            .open(
                FieldContext {
                    department: subscription.department,
                    row: &row,
                    field: "secret",
                },
                &sealed,
            )
            .ok()
            .map(|plain| plain.to_vec())
    }

    /// Whether the subscription has delivered an upsert of `entity` that no delete followed.
    pub fn seen(&self, id: &str, entity: &str) -> bool {
        self.store
            .meta(&seen_key(id, entity))
            .ok()
            .flatten()
            .is_some()
    }

    /// Marks what a feed page sent: entities upserted are seen, deleted ones no longer.
    pub fn mark_seen(
        &self,
        id: &str,
        upserted: &[String],
        deleted: &[String],
    ) -> Result<(), StoreError> {
        if upserted.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        self.store.write(|w| {
            for entity in upserted {
                w.put_meta(&seen_key(id, entity), b"1")?;
            }
            for entity in deleted {
                w.delete_meta(&seen_key(id, entity))?;
            }
            Ok(())
        })
    }

    /// Changes after `after`, at most `limit`, as (sequence, entity id).
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.store.read()?.changes_after(after, limit)
    }

    pub fn change_seq(&self) -> u64 {
        self.store.read().and_then(|r| r.change_seq()).unwrap_or(0)
    }

    pub fn save_state(&self, id: &str, state: &DeliveryState) -> Result<(), StoreError> {
        let _guard = self.lock.lock();
        self.store.write(|w| {
            if w.meta(&subscription_key(id))?.is_some() {
                w.put_meta(&state_key(id), &encode(state))?;
            }
            Ok(())
        })
    }

    /// Records the outcome of one attempt: the entry, the state, the seen set.
    pub fn record(
        &self,
        id: &str,
        state: &DeliveryState,
        entry: &DeliveryEntry,
        seen: Option<(&str, bool)>,
        done_retry: Option<u64>,
    ) -> Result<(), StoreError> {
        let _guard = self.lock.lock();
        self.store.write(|w| {
            if w.meta(&subscription_key(id))?.is_none() {
                return Ok(());
            }
            w.put_meta(&state_key(id), &encode(state))?;
            w.put_meta(&delivery_key(id, entry.seq), &encode(entry))?;
            if let Some((entity, upserted)) = seen {
                if upserted {
                    w.put_meta(&seen_key(id, entity), b"1")?;
                } else {
                    w.delete_meta(&seen_key(id, entity))?;
                }
            }
            if let Some(seq) = done_retry {
                let mut retries: Vec<u64> = w
                    .meta(&retry_key(id))?
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                retries.retain(|s| *s != seq);
                w.put_meta(&retry_key(id), &encode(&retries))?;
            }
            if entry.status == "delivered" && entry.seq.is_multiple_of(100) {
                prune_delivered(w, id)?;
            }
            Ok(())
        })
    }

    pub fn next_retry(&self, id: &str) -> Option<u64> {
        self.store
            .meta(&retry_key(id))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Vec<u64>>(&b).ok())
            .and_then(|r| r.first().copied())
    }
}

fn retry_key(id: &str) -> String {
    format!("exchange/retry/{id}")
}

fn find_failed(
    w: &vault::store::StoreWriter,
    id: &str,
    delivery: &str,
) -> Result<Option<u64>, StoreError> {
    for key in w.meta_keys(&delivery_prefix(id))? {
        let Some(bytes) = w.meta(&key)? else { continue };
        if let Ok(entry) = serde_json::from_slice::<DeliveryEntry>(&bytes) {
            if entry.delivery_id == delivery && entry.status == "failed" {
                return Ok(Some(entry.seq));
            }
        }
    }
    Ok(None)
}

/// Keeps the newest [`DELIVERED_KEPT`] delivered entries of a subscription.
fn prune_delivered(w: &mut vault::store::StoreWriter, id: &str) -> Result<(), StoreError> {
    let keys = w.meta_keys(&delivery_prefix(id))?;
    let mut delivered = Vec::new();
    for key in keys {
        if let Some(bytes) = w.meta(&key)? {
            if serde_json::from_slice::<DeliveryEntry>(&bytes)
                .is_ok_and(|e| e.status == "delivered")
            {
                delivered.push(key);
            }
        }
    }
    let excess = delivered.len().saturating_sub(DELIVERED_KEPT);
    for key in delivered.into_iter().take(excess) {
        w.delete_meta(&key)?;
    }
    Ok(())
}

/// What a department asks for.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub department: Department,
    pub kinds: Vec<RecordKind>,
    pub types: Vec<String>,
    pub grids: Vec<String>,
    pub purpose: String,
    pub url: Option<String>,
    pub created_by: String,
}

/// Whether `id` has the form of a subscription id (`sub_` + 32 hex).
pub fn is_subscription_id(id: &str) -> bool {
    id.strip_prefix("sub_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The delivery client: the system's roots and `exchange.ca_file`, no redirects, a timeout.
fn delivery_client(config: &ExchangeSection) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root that rustls cannot use is skipped, as every client does.
        let _ = roots.add(cert);
    }
    if let Some(file) = &config.ca_file {
        for cert in crate::tls::load_certs(file)? {
            roots
                .add(cert)
                .context("adding a certificate of exchange.ca_file")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(4)
        .build()
        .context("building the delivery client")
}

/// Outcome of one delivery attempt.
#[derive(Debug)]
pub enum Attempt {
    Delivered(u16),
    Failed {
        http_status: Option<u16>,
        error: String,
    },
}

impl Exchange {
    /// Sends one delivery body to the subscription's URL, signed with its secret, after
    /// checking the URL against the allowed hosts again (the configuration may have changed).
    pub async fn post(&self, subscription: &Subscription, delivery: &str, body: &[u8]) -> Attempt {
        let Some(url) = subscription.url.as_deref() else {
            return Attempt::Failed {
                http_status: None,
                error: "no_url".to_owned(),
            };
        };
        if let Err(refused) = self.check_url(subscription.department, url) {
            return Attempt::Failed {
                http_status: None,
                error: refused.code.to_owned(),
            };
        }
        let Some(secret) = self.secret(subscription) else {
            return Attempt::Failed {
                http_status: None,
                error: "secret_unreadable".to_owned(),
            };
        };
        send(&self.client, url, &secret, delivery, body).await
    }

    /// Seconds a delivery is retried, and the longest wait between attempts.
    pub fn retry_window(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.config.retry_for_seconds),
            Duration::from_secs(self.config.max_backoff_seconds.max(1)),
        )
    }

    pub fn record_retry_done(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        let _guard = self.lock.lock();
        self.store.write(|w| {
            let mut retries: Vec<u64> = w
                .meta(&retry_key(id))?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            retries.retain(|s| *s != seq);
            w.put_meta(&retry_key(id), &encode(&retries))
        })
    }
}

/// One POST: any 2xx is delivered.
async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
    delivery: &str,
    body: &[u8],
) -> Attempt {
    let unix = Utc::now().timestamp();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-safegrid-delivery", delivery)
        .header("x-safegrid-signature", signature(secret, unix, body))
        .body(body.to_vec())
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => {
            Attempt::Delivered(response.status().as_u16())
        }
        Ok(response) => Attempt::Failed {
            http_status: Some(response.status().as_u16()),
            error: format!("receiver answered {}", response.status().as_u16()),
        },
        Err(err) => Attempt::Failed {
            http_status: None,
            error: if err.is_timeout() {
                "timeout".to_owned()
            } else if err.is_connect() {
                "connection_failed".to_owned()
            } else {
                "request_failed".to_owned()
            },
        },
    }
}

/// A change as one subscriber may receive it: the signed body and whether it is an upsert.
#[derive(Debug)]
pub struct ExchangeBody {
    pub body: Vec<u8>,
    pub upsert: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // RFC 4231 test case 2 as a key, our message format.
        let header = signature(b"Jefe", 1_700_000_000, b"{\"a\":1}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let expected = ring::hmac::sign(&key, b"1700000000.{\"a\":1}");
        assert_eq!(
            header,
            format!("t=1700000000,v1={}", hex::encode(expected.as_ref()))
        );
        assert_ne!(header, signature(b"Jefe", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(header, signature(b"Jeff", 1_700_000_000, b"{\"a\":1}"));
    }

    #[test]
    fn backoff_doubles_from_a_second_to_the_cap() {
        let max = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=14).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(&waits[..5], [1, 2, 4, 8, 16]);
        assert_eq!(waits[12], 3600);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        assert_eq!(delivery_id("sub_a", 7), delivery_id("sub_a", 7));
        assert_ne!(delivery_id("sub_a", 7), delivery_id("sub_a", 8));
        assert_ne!(delivery_id("sub_a", 7), delivery_id("sub_b", 7));
        assert!(is_subscription_id(&format!("sub_{}", "0a".repeat(16))));
        assert!(!is_subscription_id("sub_../../x"));
    }

    /// Two brokers on one PostgreSQL store (`SAFEGRID_TEST_PG_URL`): one holds a
    /// subscription's lease, the other waits; a release hands it over; a lease written by a
    /// clock a day ahead does not keep it; an expired one does not either.
    #[test]
    fn one_broker_at_a_time_holds_a_subscriptions_lease() {
        let url = std::env::var("SAFEGRID_TEST_PG_URL")
            .expect("SAFEGRID_TEST_PG_URL: run `bash scripts/test.sh`, which starts PostgreSQL");
        let schema = format!(
            "t_lease_{}_{}",
            std::process::id(),
            Utc::now().timestamp_subsec_nanos()
        );
        let options = vault::store::PostgresOptions::new(url).schema(schema);
        let broker = || {
            let store = Arc::new(Store::connect(&options).unwrap());
            let keys = Arc::new(
                vault::keys::load_key_ring(&store, &vault::crypto::MasterKey::for_tests(3))
                    .unwrap(),
            );
            Exchange::new(store, keys, ExchangeSection::default(), true).unwrap()
        };
        let (a, b) = (broker(), broker());
        assert!(a.hold_lease("sub_x").unwrap());
        assert!(a.hold_lease("sub_x").unwrap(), "the holder renews");
        assert!(!b.hold_lease("sub_x").unwrap(), "another broker waits");
        assert!(
            b.hold_lease("sub_y").unwrap(),
            "leases are per subscription"
        );
        a.release_lease("sub_x").unwrap();
        assert!(
            b.hold_lease("sub_x").unwrap(),
            "a released lease is taken at once"
        );
        b.release_lease("sub_x").unwrap();

        let plant = |until_ms: i64| {
            let lease = Lease {
                holder: "a-broker-elsewhere".to_owned(),
                until_ms,
            };
            a.store
                .write(|w| w.put_meta(&lease_key("sub_z"), &encode(&lease)))
                .unwrap();
        };
        let now = Utc::now().timestamp_millis();
        plant(now + 5_000);
        assert!(!a.hold_lease("sub_z").unwrap(), "a live lease elsewhere");
        plant(now - 1);
        assert!(a.hold_lease("sub_z").unwrap(), "an expired lease");
        plant(now + 24 * 3600 * 1000);
        assert!(
            b.hold_lease("sub_z").unwrap(),
            "a lease from a clock a day ahead"
        );
        assert!(!a.hold_lease("sub_z").unwrap());
    }

    #[test]
    fn only_https_on_allowed_hosts_and_loopback_in_dev() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let keys = Arc::new(
            vault::keys::load_key_ring(&store, &vault::crypto::MasterKey::for_tests(3)).unwrap(),
        );
        let mut config = ExchangeSection::default();
        config
            .allowed_hosts
            .insert(Department::Sifa, vec!["receiver.sifa.example".to_owned()]);
        let production = Exchange::new(store.clone(), keys.clone(), config.clone(), false).unwrap();
        let dev = Exchange::new(store, keys, config, true).unwrap();
        let code = |e: &Exchange, d, url: &str| e.check_url(d, url).err().map(|r| r.code);
        assert_eq!(
            code(
                &production,
                Department::Sifa,
                "https://receiver.sifa.example/in"
            ),
            None
        );
        assert_eq!(
            code(
                &production,
                Department::Sifa,
                "https://RECEIVER.sifa.example:8443/in"
            ),
            None
        );
        assert_eq!(
            code(
                &production,
                Department::Gongan,
                "https://receiver.sifa.example/in"
            ),
            Some("delivery_host_not_allowed")
        );
        assert_eq!(
            code(
                &production,
                Department::Sifa,
                "http://receiver.sifa.example/in"
            ),
            Some("url_not_https")
        );
        assert_eq!(
            code(&production, Department::Sifa, "https://127.0.0.1:9/in"),
            Some("delivery_host_not_allowed")
        );
        assert_eq!(
            code(
                &production,
                Department::Sifa,
                "https://user:pw@receiver.sifa.example/in"
            ),
            Some("url_invalid")
        );
        assert_eq!(
            code(
                &production,
                Department::Sifa,
                "https://receiver.sifa.example.evil.example/in"
            ),
            Some("delivery_host_not_allowed")
        );
        assert_eq!(
            code(&production, Department::Sifa, "receiver"),
            Some("url_invalid")
        );
        assert_eq!(
            code(&dev, Department::Gongan, "http://127.0.0.1:9/in"),
            None
        );
        assert_eq!(
            code(&dev, Department::Gongan, "https://localhost:9/in"),
            None
        );
        assert_eq!(
            code(&dev, Department::Gongan, "http://10.0.0.1/in"),
            Some("url_not_https")
        );
    }
}
