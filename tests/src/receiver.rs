//! A department's webhook receiver, as a test needs one: real TLS (a self-signed certificate
//! for localhost and 127.0.0.1), real HTTP/1.1 requests read off the connection, an answer
//! the test chooses (a status, or dropping the connection), and every request kept.
//!
//! Guarantees: each request is recorded whole (headers lower-cased, the body as sent) before
//! the answer is written; a receiver can be stopped and started again on the same port, so
//! a test can take it down for a while.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the request was read whole.
    pub at: Instant,
    /// The status the receiver answered (0: it dropped the connection).
    pub answered: u16,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A running HTTPS receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    /// The receiver's certificate (PEM): the broker's `exchange.ca_file`.
    pub cert: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    /// The status it answers (0: close the connection without answering).
    status: Arc<AtomicU16>,
    task: Option<tokio::task::JoinHandle<()>>,
    tls: tokio_rustls::TlsAcceptor,
    _dir: Arc<tempfile::TempDir>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port, answering 200.
    pub async fn start() -> Receiver {
        let dir = tempfile::tempdir().expect("a directory for the receiver's certificate");
        let files = broker::tls::ensure_dev_certificate(dir.path()).expect("a certificate");
        let config = broker::tls::server_config(&files).expect("a TLS configuration");
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let mut receiver = Receiver {
            addr,
            cert: files.cert,
            received: Arc::new(Mutex::new(Vec::new())),
            status: Arc::new(AtomicU16::new(200)),
            task: None,
            tls,
            _dir: Arc::new(dir),
        };
        receiver.serve(listener);
        receiver
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Answers `status` from now on (0: drops each connection unanswered).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused until [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("the receiver's port is not free again: {err}"),
            }
        };
        self.serve(listener);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `done` holds for the requests received, or panics after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                started.elapsed() < within,
                "{what} not within {within:?}; received {}: {:?}",
                received.len(),
                received.iter().map(Received::json).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let received = self.received.clone();
        let status = self.status.clone();
        let tls = self.tls.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (received, status, tls) = (received.clone(), status.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = tls.accept(stream).await else {
                        return;
                    };
                    // Keep-alive: answer requests on this connection until it closes.
                    while let Some(mut request) = read_request(&mut stream).await {
                        let answer = status.load(Ordering::SeqCst);
                        request.answered = answer;
                        if let Ok(mut all) = received.lock() {
                            all.push(request);
                        }
                        if answer == 0 {
                            return;
                        }
                        let response = format!("HTTP/1.1 {answer} X\r\ncontent-length: 0\r\n\r\n");
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = stream.flush().await;
                    }
                });
            }
        }));
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes of body).
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > 1 << 20 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()?
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Received {
        at: Instant::now(),
        answered: 0,
        path,
        headers,
        body,
    })
}

/// Checks `X-SafeGrid-Signature: t=…,v1=…` of a delivery against `secret` (hex, as the
/// broker showed it): HMAC-SHA256 over `"<t>.<body>"`. Returns the timestamp.
pub fn verify_signature(received: &Received, secret: &str) -> Option<i64> {
    let header = received.headers.get("x-safegrid-signature")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=')? {
            ("t", value) => t = value.parse::<i64>().ok(),
            ("v1", value) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (t, v1) = (t?, v1?);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(&received.body);
    ring::hmac::verify(&key, &message, &v1).ok().map(|()| t)
}
