//! The network front: a TCP accept loop, TLS (or, only when explicitly asked, plain HTTP),
//! and hyper serving the axum router on each connection.
//!
//! Guarantees: every request carries the client's socket address ([`ClientAddr`]) and, over
//! TLS, a [`ConnectionInfo`] with the verified client certificate's identity (mTLS); a failed
//! TLS handshake affects only its own connection; on shutdown the listener stops accepting
//! at once and open connections get a grace period to finish their requests.
//! - Limits ([`ConnectionLimits`]): at most `max_connections` open per listener (more are
//!   closed at once and counted); a request's headers must arrive within `header_read`; a
//!   connection with no request in flight and no byte moving for `idle` is closed. Half a
//!   request or thousands of idle sockets cannot hold the broker.

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

use crate::metrics::Metrics;

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

/// The client's socket address, inserted by the accept loop into every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Limits on connections, so that a client holding sockets open cannot exhaust the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections per listener; more are closed at once (and counted).
    pub max_connections: usize,
    /// A request's headers must arrive within this time.
    pub header_read: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

impl ConnectionLimits {
    /// The connection limits of every listener, from the configuration's `[limits]`.
    pub fn from_config(limits: &crate::config::LimitsSection) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: limits.max_connections.max(1),
            header_read: Duration::from_secs(limits.header_read_seconds.max(1)),
            idle: Duration::from_secs(limits.idle_seconds.max(1)),
        }
    }
}

/// A stream that remembers when a byte last moved in either direction.
#[derive(Debug)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// When a connection last moved a byte, and how many requests it has in flight.
#[derive(Debug)]
struct Activity {
    started: std::time::Instant,
    last_millis: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: std::time::Instant::now(),
            last_millis: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_millis
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long nothing moved, or `None` while a request is being served.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last_millis.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Counts one request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.touch();
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once the connection has been idle (no request in flight, nothing moving) for
/// `limit`.
async fn idle_for(activity: &Activity, limit: Duration) {
    loop {
        let wait = match activity.idle_for() {
            Some(idle) if idle >= limit => return,
            Some(idle) => limit - idle,
            None => limit,
        };
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

/// Serves HTTP on one accepted (and, for TLS, handshaken) connection until it ends, goes
/// idle, or shutdown is requested.
async fn serve_connection<I>(
    io: I,
    service: impl hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            let timed_out = result.as_ref().err().is_some_and(|err| {
                err.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
            });
            if timed_out {
                metrics.count_connection_closed("header_timeout");
            }
        }
        _ = idle_for(&activity, limits.idle) => {
            metrics.count_connection_closed("idle");
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ListenerTls>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
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
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // At the cap: close at once rather than queue (a queue is what a flood wants).
            metrics.count_connection_closed("over_limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        activity.touch();
        let stream = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let router = router.clone();
        // Read per connection, so a reloaded configuration (new CRL) applies to the next one.
        let acceptor = tls
            .as_ref()
            .map(|t| (TlsAcceptor::from(t.config.load_full()), t.clone()));
        let conn_shutdown = shutdown.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            let counted = activity.clone();
            let handle = move |mut request: hyper::Request<hyper::body::Incoming>,
                               info: Option<ConnectionInfo>| {
                let in_flight = InFlight::start(&counted);
                request.extensions_mut().insert(ClientAddr(peer));
                if let Some(info) = info {
                    request.extensions_mut().insert(info);
                }
                let response = router.clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let response = response.await;
                    drop(in_flight);
                    response
                }
            };
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
                        Err(_) => {
                            metrics.count_connection_closed("handshake_timeout");
                            return;
                        }
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
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, Some(info.clone()))
                    });
                    serve_connection(tls, service, activity, limits, metrics, conn_shutdown).await;
                }
                None => {
                    let service = hyper::service::service_fn(move |request| handle(request, None));
                    serve_connection(stream, service, activity, limits, metrics, conn_shutdown)
                        .await;
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
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
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
        limits,
        metrics,
        shutdown.clone(),
    )));
    tracing::info!(%addr, "department mTLS listener");
    Ok(Some(addr))
}
