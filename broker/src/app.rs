//! Assembling and starting a broker: data directory, master key, keys, store, audit log,
//! policy, authentication, TLS and the HTTP server.
//!
//! Guarantees: [`start`] returns only once the broker is listening and every component is
//! ready; any missing piece (master key, TLS files, JWKS) is an error naming it. The master
//! key is never looked for or created inside the data directory. [`RunningBroker::shutdown`]
//! stops accepting, drains requests, and closes the audit log with a final checkpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use audit::{Actor, AuditConfig, AuditLog, CheckpointSigner, Decision};

use crate::api::{router, AppState, AppStateInner};
use crate::auth::{Authenticator, TokenSigner, DEFAULT_AUDIENCE, DEV_ISSUER};
use crate::config::Config;
use crate::policy_folder::PolicyHandle;
use crate::tls;
use engine::ingest::Pipeline;
use engine::resolve::AuthorityOrder;
use vault::crypto::MasterKey;
use vault::keys::{load_key_ring, load_or_create_secret};
use vault::store::Store;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// How to run a broker.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub config: Config,
    pub master_key: Option<PathBuf>,
    pub dev: bool,
    /// Serve plain HTTP instead of TLS (only for a TLS-terminating proxy in front).
    pub insecure_http: bool,
}

/// A broker that is listening.
#[derive(Debug)]
pub struct RunningBroker {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The department (mTLS) listener, when `[mtls]` is configured.
    pub mtls_addr: Option<SocketAddr>,
    /// The metrics listener (plain HTTP, `/metrics` only), when it could be bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The self-signed certificate in dev mode, for clients to trust.
    pub dev_certificate: Option<PathBuf>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// Background tasks (followers) that stop on shutdown.
    background: Vec<JoinHandle<()>>,
}

impl RunningBroker {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let ip = self.addr.ip();
        let host = if ip.is_unspecified() || (ip.is_loopback() && self.addr.is_ipv4()) {
            "localhost".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    /// Stops accepting, drains open requests, and closes the audit log (final checkpoint).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        for task in self.background {
            let _ = task.await;
        }
        self.state.search.shutdown().await;
        self.state
            .audit
            .close()
            .await
            .context("closing the audit log")?;
        Ok(())
    }
}

/// Where dev-mode material (self-signed certificate, instance JWT key) lives.
pub fn dev_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dev")
}

/// The instance's own token-signing key (dev mode), created on first use, stored wrapped.
pub fn dev_token_signer(data_dir: &Path, master: &MasterKey) -> anyhow::Result<TokenSigner> {
    let dir = dev_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("jwt-signing.key.wrapped");
    const LABEL: &str = "dev/jwt-signing";
    let pkcs8 = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let wrapped = STANDARD
                .decode(text.trim())
                .with_context(|| format!("{} is not base64", path.display()))?;
            master.unwrap_bytes(&wrapped, LABEL).with_context(|| {
                format!("{} does not open under this master key", path.display())
            })?
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let pkcs8 = zeroize::Zeroizing::new(CheckpointSigner::generate_pkcs8());
            let wrapped = master.wrap_bytes(&pkcs8, LABEL)?;
            vault::crypto::write_private_file(&path, STANDARD.encode(wrapped).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            pkcs8
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let signer = TokenSigner::from_pkcs8(&pkcs8)?;
    std::fs::write(
        dir.join("jwt-public.key"),
        STANDARD.encode(signer.public_key()),
    )
    .context("writing the dev JWT public key")?;
    Ok(signer)
}

/// The store the configuration names: the embedded file under the data directory, or the
/// shared PostgreSQL database (the search index and the audit log stay under the data
/// directory, one per broker).
/// The PostgreSQL store's shared access log, as the audit log's system of record.
struct StoreAuditLog(Arc<Store>);

impl audit::SharedLog for StoreAuditLog {
    fn append(&self, encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>) -> Result<u64, String> {
        self.0.log_append(encode).map_err(|e| e.to_string())
    }
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, String> {
        self.0.log_read(from, limit).map_err(|e| e.to_string())
    }
    fn size(&self) -> Result<u64, String> {
        self.0.log_len().map_err(|e| e.to_string())
    }
    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), String> {
        self.0
            .log_put_checkpoint(size, note)
            .map_err(|e| e.to_string())
    }
    fn checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, String> {
        self.0
            .log_checkpoints_after(size)
            .map_err(|e| e.to_string())
    }
    fn lead(&self, holder: &str, seconds: u32) -> Result<bool, String> {
        self.0.log_lead(holder, seconds).map_err(|e| e.to_string())
    }
    fn release(&self, holder: &str) -> Result<(), String> {
        self.0.log_release(holder).map_err(|e| e.to_string())
    }
}

pub fn open_store(data_dir: &Path, config: &crate::config::StoreSection) -> anyhow::Result<Store> {
    match config.postgres() {
        Some(options) => {
            let store = Store::connect(&options).with_context(|| {
                format!(
                    "connecting to the PostgreSQL store (schema {})",
                    options.schema
                )
            })?;
            tracing::info!(schema = %options.schema, "store: PostgreSQL");
            Ok(store)
        }
        None => Store::open_with_cache(
            &data_dir.join("store.redb"),
            config.cache_mb.saturating_mul(1024 * 1024),
        )
        .context("opening the store"),
    }
}

/// Opens everything and starts listening.
pub async fn start(options: ServeOptions) -> anyhow::Result<RunningBroker> {
    tls::install_crypto_provider();
    let data_dir = &options.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let master =
        vault::keys::load_master_key(data_dir, options.master_key.as_deref(), options.dev)?;
    let store = Arc::new(open_store(data_dir, &options.config.store)?);
    let keys = Arc::new(load_key_ring(&store, &master).context("loading keys")?);
    // Index and query time segment with the same dictionary: it is fixed before the index
    // opens (and the index rebuilt if it was built with another).
    let user_words = options.config.user_words()?;
    chinese_text::segment::install_user_words(user_words)
        .context("installing the user dictionary")?;
    let search = search::SearchIndex::open(data_dir, &keys).context("opening the search index")?;

    let audit_pkcs8 = load_or_create_secret(&store, &master, "audit-checkpoint/1", || {
        Ok(CheckpointSigner::generate_pkcs8())
    })?;
    let audit_config = AuditConfig {
        origin: options.config.audit.origin.clone(),
        checkpoint_interval: std::time::Duration::from_secs(
            options.config.audit.checkpoint_seconds.max(1),
        ),
        min_free_bytes: options.config.audit.min_free_mb.saturating_mul(1024 * 1024),
        max_record_bytes: options.config.audit.max_record_bytes,
        ..AuditConfig::default()
    };
    let audit_signer = CheckpointSigner::from_pkcs8(&audit_pkcs8)?;
    let audit = if store.has_shared_log() {
        // Brokers on one PostgreSQL store share one access log there; this directory holds
        // this broker's verified replica of it.
        let holder = format!(
            "{}/{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        );
        AuditLog::open_shared(
            &data_dir.join("audit"),
            audit_signer,
            audit_config,
            Arc::new(StoreAuditLog(store.clone())),
            holder,
        )
        .context("opening the access log shared in the store's database")?
    } else {
        AuditLog::open(&data_dir.join("audit"), audit_signer, audit_config)
            .context("opening the audit log")?
    };

    let authenticator = match (&options.config.auth, options.dev) {
        (Some(auth), _) => Authenticator::from_section(auth)
            .await
            .context("loading the identity provider's keys ([auth])")?,
        (None, true) => {
            let signer = dev_token_signer(data_dir, &master)?;
            Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE)
        }
        (None, false) => bail!("no [auth] section in the configuration: set auth.issuer and one of auth.jwks_file, auth.jwks_url, auth.discovery, or run with --dev"),
    };
    let permissions = Arc::new(
        PolicyHandle::load(
            options.config.policy_dir.as_deref(),
            &options.config.purposes,
        )
        .await
        .context("loading the policy")?,
    );
    permissions.watch(std::time::Duration::from_secs(1));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let names = Arc::new(search::directory::NameIndex::default());
    let background = vec![names.follow(store.clone(), keys.clone(), shutdown_rx.clone())];
    let mut authority = AuthorityOrder::default();
    for (key, order) in &options.config.authority {
        authority.set(key, order.clone());
    }

    let server_files = if options.insecure_http {
        None
    } else {
        match (&options.config.tls, options.dev) {
            (Some(section), _) => Some(tls::CertFiles {
                cert: section.cert_file.clone(),
                key: section.key_file.clone(),
            }),
            (None, true) => Some(tls::ensure_dev_certificate(&dev_dir(data_dir))?),
            (None, false) => bail!("no [tls] section in the configuration: set tls.cert_file and tls.key_file, run with --dev, or (behind a TLS proxy only) --insecure-http"),
        }
    };
    let tls_config = server_files.as_ref().map(tls::server_config).transpose()?;
    let dev_certificate = match (&options.config.tls, &server_files) {
        (None, Some(files)) => Some(files.cert.clone()),
        _ => None,
    };

    let mappings = match &options.config.mappings_dir {
        Some(dir) => crate::connect::load_mappings(dir)?,
        None => Default::default(),
    };
    let linker =
        Arc::new(engine::linking::Linker::load(&store).context("loading the linkage model")?);
    let pipeline = Pipeline::new(store.clone(), keys.clone()).with_linker(linker.clone());
    let mut background = background;
    background.push(linkage_background(
        pipeline.clone(),
        audit.clone(),
        shutdown_rx.clone(),
    ));
    background.push(grid_release_background(
        pipeline.clone(),
        audit.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(dir) = &options.config.connectors_dir {
        let configs = crate::connect::load_connector_configs(dir)?;
        background.extend(crate::connect::schedule(
            configs,
            data_dir.join("connectors"),
            pipeline.clone(),
            shutdown_rx.clone(),
        )?);
    }
    let follower_source = search::Source {
        store: store.clone(),
        keys: keys.clone(),
        authority: authority.clone(),
    };
    // After an upgrade that changed the text normalisation, the keyed links are re-computed
    // by the background passes below; scheduled before anything is served or ingested.
    engine::rotation::schedule_renormalisation(&store, &keys)
        .context("reading the text normalisation of the keyed links")?;
    let rotation = (store.clone(), keys.clone());
    let exchange = Arc::new(
        crate::exchange::Exchange::new(
            store.clone(),
            keys.clone(),
            options.config.exchange.clone(),
            options.dev,
        )
        .context("setting up the exchange")?,
    );
    let sharing = Arc::new(
        crate::sharing::SharingTracker::load(store.clone()).context("loading the sharing marks")?,
    );
    background.push(sharing.clone().spawn(shutdown_rx.clone()));
    let console_oidc = crate::console::oidc::OidcClient::from_config(
        &options.config.console,
        options.config.auth.as_ref().map(|a| a.issuer.as_str()),
        options
            .config
            .auth
            .as_ref()
            .and_then(|a| a.ca_file.as_deref()),
    )
    .await
    .context("the console's login through the identity provider ([console])")?;
    let state = AppState(Arc::new(AppStateInner {
        metrics: Arc::new(crate::metrics::Metrics::default()),
        data_dir: data_dir.clone(),
        backup_dir: options.config.backup_dir.clone(),
        mappings,
        pipeline,
        vault: crate::api::disclosure::Vault::new(store, keys, authority),
        authenticator,
        permissions,
        names,
        break_glass: crate::api::BreakGlassLimiter::new(options.config.break_glass_per_hour),
        purposes: options.config.purposes.clone(),
        max_body_bytes: options.config.ingest.max_body_bytes,
        audit,
        search: search.clone(),
        refusals: Default::default(),
        rate: crate::api::RateLimiter::new(
            options.config.limits.rate_per_second,
            options.config.limits.rate_burst,
        ),
        body_read: std::time::Duration::from_secs(options.config.limits.body_read_seconds.max(1)),
        events: options.config.events.clone(),
        case_deferral_days: options
            .config
            .audit
            .case_deferral_days
            .clamp(0, crate::config::MAX_CASE_DEFERRAL_DAYS),
        exchange,
        sharing,
        console: Arc::new(crate::console::Console::new(
            options.dev || options.config.console.token_login,
            console_oidc,
        )),
    }));
    background.push(crate::api::deliveries::spawn(
        state.clone(),
        shutdown_rx.clone(),
    ));
    search.use_names(state.names.clone());
    search.start_follower(follower_source);
    let listen = options.listen.or(options.config.listen).unwrap_or_else(|| {
        DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)))
    });
    let (listener, addr) = crate::server::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    background.push(engine::rotation::spawn_pending(
        rotation.0,
        rotation.1,
        shutdown_rx.clone(),
    ));
    let mtls_addr = crate::server::start_mtls_listener(
        options.config.mtls.as_ref(),
        server_files.as_ref(),
        router(state.clone()),
        crate::server::ConnectionLimits::from_config(&options.config.limits),
        state.metrics.clone(),
        &shutdown_rx,
        &mut background,
    )
    .await?;
    let main_tls = tls_config.clone().map(|config| crate::server::ListenerTls {
        ingest_requires_client_cert: options
            .config
            .mtls
            .as_ref()
            .is_some_and(|m| m.require_for_ingest),
        ..crate::server::ListenerTls::fixed(config)
    });
    let server = tokio::spawn(crate::server::serve(
        listener,
        main_tls,
        router(state.clone()),
        crate::server::ConnectionLimits::from_config(&options.config.limits),
        state.metrics.clone(),
        shutdown_rx,
    ));
    let metrics_addr = match options.config.metrics_address()? {
        None => None,
        Some(address) => match crate::server::bind(address).await {
            Ok((listener, bound)) => {
                background.push(tokio::spawn(crate::server::serve(
                    listener,
                    None,
                    crate::api::metrics::listener_routes(state.clone()),
                    crate::server::ConnectionLimits::from_config(&options.config.limits),
                    state.metrics.clone(),
                    shutdown.subscribe(),
                )));
                tracing::info!(addr = %bound, "metrics listener");
                Some(bound)
            }
            // Serving goes on: a system administrator's token still reads /metrics.
            Err(err) => {
                tracing::error!(%address, error = %err, "cannot listen for metrics (metrics_listen)");
                None
            }
        },
    };
    tracing::info!(%addr, tls = tls_config.is_some(), "broker listening");
    Ok(RunningBroker {
        addr,
        mtls_addr,
        metrics_addr,
        tls: tls_config.is_some(),
        dev_certificate,
        state,
        shutdown,
        server,
        background,
    })
}

/// Estimates the linkage model once enough residents are stored (checked every 30 s), so
/// that records without an ID number start being linked without an operator step; offers
/// the rows stored before the model to it ([`engine::linking::relink`], resumed on the next
/// start if interrupted); then estimates it again whenever the residents have grown by half
/// ([`engine::linking::estimation_due`]). Each estimation calibrates the thresholds on the
/// candidate pairs of stored residents that both carry valid ID numbers (the household
/// register and every other record with one), when there are enough of them, else on the
/// model's own estimate. Every estimation is audited with the model's thresholds, the targets
/// they were chosen for and the rule that set each, which estimate they followed and on how
/// many labelled pairs, and that estimate of its precision, recall and review share at them
/// next to the model's own ([`engine::linking::StoredModel::summary`]).
fn linkage_background(
    pipeline: Pipeline,
    audit: AuditLog,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if pipeline.linker().model().is_none()
            && !estimate_when_due(&pipeline, &audit, shutdown.clone()).await
        {
            return;
        }
        relink_pending(pipeline.clone(), shutdown.clone()).await;
        while estimate_when_due(&pipeline, &audit, shutdown.clone()).await {}
    })
}
/// Records waiting for their grid are offered again whenever the store has changed (checked
/// every 2 s): the house, the person or the assignment that decides their grid may have
/// arrived. Each release is audited with the number of records stored.
fn grid_release_background(
    pipeline: Pipeline,
    audit: AuditLog,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let p = pipeline.clone();
            let last = seen;
            let outcome = tokio::task::spawn_blocking(move || {
                let now = p.store().read()?.change_seq()?;
                if Some(now) == last {
                    return Ok::<_, anyhow::Error>((now, 0));
                }
                Ok((now, p.release_unresolved()?))
            })
            .await;
            match outcome {
                Ok(Ok((now, released))) => {
                    seen = Some(now);
                    if released > 0 {
                        tracing::info!(released, "records that waited for their grid were stored");
                        let mut record = audit::AuditRecord::new(
                            format!("grid-release-{now}"),
                            Actor {
                                sub: "safegrid".to_owned(),
                                name: "grid release".to_owned(),
                                roles: vec!["system".to_owned()],
                                dept: None,
                            },
                            "grid_release",
                            "background/grid_release",
                            Decision::Allow,
                        );
                        record.result_count = released as u64;
                        if let Err(err) = audit.append(record).await {
                            tracing::error!(error = %err, "could not audit a grid release");
                        }
                    }
                }
                Ok(Err(err)) => tracing::error!(error = %err, "grid release failed"),
                Err(_) => return,
            }
        }
    })
}

/// Runs the relink pass if one is scheduled and unfinished; stops at shutdown.
async fn relink_pending(pipeline: Pipeline, shutdown: watch::Receiver<bool>) {
    engine::rotation::blocking_until_shutdown(shutdown, move |stop| {
        let Some(model) = pipeline.linker().model() else {
            return;
        };
        match engine::linking::relink_progress(pipeline.store()) {
            Ok(Some(progress)) if !progress.done => {}
            Ok(_) => return,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the relink progress");
                return;
            }
        }
        match pipeline.relink(&model, None, stop) {
            Ok(progress) => tracing::info!(
                rows = progress.rows,
                alone = progress.alone,
                linked = progress.linked,
                reviews = progress.reviews,
                done = progress.done,
                "rows stored before the linkage model were offered to it"
            ),
            Err(err) => tracing::error!(error = %err, "relink pass stopped"),
        }
    })
    .await;
}

/// Waits until an estimation is due and runs it; true once a new model is in force, false at
/// shutdown.
async fn estimate_when_due(
    pipeline: &Pipeline,
    audit: &AuditLog,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    loop {
        let p = pipeline.clone();
        let estimated = tokio::task::spawn_blocking(move || {
            let residents = p.store().read()?.source_count()?;
            let before = p.linker().stored();
            if !engine::linking::estimation_due(residents, before.as_deref()) {
                return Ok(None);
            }
            if p.train_linker()?.is_none() {
                return Ok(None);
            }
            if before.is_none() {
                engine::linking::schedule_relink(p.store())?;
            }
            Ok::<_, anyhow::Error>(p.linker().stored())
        })
        .await;
        match estimated {
            Ok(Ok(Some(stored))) => {
                let model = &stored.model;
                let (estimate, choice, thresholds) =
                    (model.estimate, model.choice, model.thresholds);
                tracing::info!(
                    version = stored.version,
                    residents = stored.residents,
                    precision = estimate.precision,
                    recall = estimate.recall,
                    review_share = estimate.review_share,
                    review_per_record = estimate.review_per_record,
                    link_threshold = thresholds.upper,
                    link_threshold_from = choice.upper_from.as_str(),
                    review_threshold = thresholds.lower,
                    review_threshold_from = choice.lower_from.as_str(),
                    estimate_from = choice.estimate_from.as_str(),
                    labelled_matches = choice.labelled.matches,
                    labelled_non_matches = choice.labelled.non_matches,
                    labelled_coverage = choice.labelled_coverage,
                    model_precision = estimate.model_precision,
                    "linkage model estimated from the stored residents"
                );
                let mut record = audit::AuditRecord::new(
                    format!("linkage-model-{}", stored.version),
                    Actor {
                        sub: "safegrid".to_owned(),
                        name: "linkage model estimation".to_owned(),
                        roles: vec!["system".to_owned()],
                        dept: None,
                    },
                    "linkage_model_estimated",
                    "background/linkage",
                    Decision::Allow,
                );
                record.result_count = stored.residents as u64;
                record.outcome = stored.summary();
                if let Err(err) = audit.append(record).await {
                    tracing::error!(error = %err, "could not audit the linkage model estimation");
                }
                return true;
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "linkage model estimation failed"),
            Err(_) => return false,
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            _ = shutdown.changed() => return false,
        }
        if *shutdown.borrow() {
            return false;
        }
    }
}
