//! The network front: a TCP accept loop, TLS (or, only when explicitly asked, plain HTTP),
//! and hyper serving the axum router on each connection.
//!
//! Guarantees: every request carries the client's socket address ([`ClientAddr`]) and, over
//! TLS, a [`ConnectionInfo`] with the verified client certificate's identity (mTLS); a failed
//! TLS handshake affects only its own connection; on shutdown the listener stops accepting
//! at once and open connections get a grace period to finish their requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::ClientAddr;

/// TLS of one listener: its (reloadable) configuration and how client certificates map
/// to departments.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: crate::tls::SharedConfig,
    pub subjects: Arc<crate::certs::SubjectMap>,
    /// This listener requires client certificates (the department / connector listener).
    pub mtls: bool,
    /// Publishing on this listener needs a client certificate (set on the main listener
    /// when `[mtls] require_for_ingest` is on).
    pub ingest_requires_client_cert: bool,
}

impl ListenerTls {
    /// A listener with a fixed configuration and no client certificates.
    pub fn fixed(config: Arc<ServerConfig>) -> ListenerTls {
        ListenerTls {
            config: Arc::new(arc_swap::ArcSwap::new(config)),
            subjects: Arc::new(crate::certs::SubjectMap::new()),
            mtls: false,
            ingest_requires_client_cert: false,
        }
    }
}

/// What the accept loop knows about a connection, in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The verified client certificate, on mTLS connections.
    pub client: Option<crate::certs::ClientIdentity>,
    /// The connection came in on the mTLS listener.
    pub mtls_listener: bool,
    /// Publishing over this connection needs a client certificate.
    pub ingest_requires_client_cert: bool,
}

/// How long open connections may take to finish after shutdown is requested.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ListenerTls>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        // Read per connection, so a reloaded configuration (new CRL) applies to the next one.
        let acceptor = tls
            .as_ref()
            .map(|t| (TlsAcceptor::from(t.config.load_full()), t.clone()));
        let mut conn_shutdown = shutdown.clone();
        connections.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some((acceptor, listener_tls)) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let info = ConnectionInfo {
                        client: tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| crate::certs::identify(leaf, &listener_tls.subjects)),
                        mtls_listener: listener_tls.mtls,
                        ingest_requires_client_cert: listener_tls.ingest_requires_client_cert,
                    };
                    let service = hyper::service::service_fn(
                        move |mut request: hyper::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(ClientAddr(peer));
                            request.extensions_mut().insert(info.clone());
                            router.clone().oneshot(request.map(axum::body::Body::new))
                        },
                    );
                    let connection = builder.serve_connection(TokioIo::new(tls), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = conn_shutdown.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                }
                None => {
                    let service = hyper::service::service_fn(
                        move |mut request: hyper::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(ClientAddr(peer));
                            router.clone().oneshot(request.map(axum::body::Body::new))
                        },
                    );
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = conn_shutdown.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                }
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Binds a listener; port 0 picks a free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Binds and serves the department (mTLS) listener when `[mtls]` is configured, with a task
/// that reloads its CA, CRLs and certificate when they change. Returns its address.
pub async fn start_mtls_listener(
    section: Option<&crate::config::MtlsSection>,
    server_files: Option<&crate::tls::CertFiles>,
    router: Router,
    shutdown: &watch::Receiver<bool>,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Option<SocketAddr>> {
    use anyhow::Context;
    let Some(section) = section else {
        return Ok(None);
    };
    let Some(server) = server_files else {
        anyhow::bail!("[mtls] needs TLS: configure [tls] (or --dev), not --insecure-http");
    };
    let reloading = Arc::new(
        crate::tls::ReloadingConfig::new(crate::tls::MtlsFiles {
            server: server.clone(),
            client_ca: section.client_ca_file.clone(),
            crls: section.crl_files.clone(),
        })
        .context("building the mTLS listener (mtls.client_ca_file, mtls.crl_files)")?,
    );
    let (listener, addr) = bind(section.listen)
        .await
        .with_context(|| format!("listening on {} (mtls.listen)", section.listen))?;
    let tls = ListenerTls {
        config: reloading.shared(),
        subjects: Arc::new(section.subjects.clone()),
        mtls: true,
        ingest_requires_client_cert: true,
    };
    background.push(reloading.watch(
        Duration::from_secs(section.reload_seconds.max(1)),
        shutdown.clone(),
    ));
    background.push(tokio::spawn(serve(
        listener,
        Some(tls),
        router,
        shutdown.clone(),
    )));
    tracing::info!(%addr, "department mTLS listener");
    Ok(Some(addr))
}
