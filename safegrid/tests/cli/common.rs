//! What the tests that run the `safegrid` binary share.
#![allow(dead_code)]

use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_safegrid");

/// Runs `safegrid args…` (without a master key from the environment); returns whether it
/// succeeded and its stdout and stderr together.
pub fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("SAFEGRID_MASTER_KEY")
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `safegrid serve --dev` on `127.0.0.1:port` over `data`, with no metrics port and no
/// per-principal rate (tests drive it hard with one token, beside other brokers).
pub fn serve_dev(data: &str, port: u16) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--dev", "--data-dir", data])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SAFEGRID_METRICS_LISTEN", "off")
        .env("SAFEGRID_LIMITS_RATE_PER_SECOND", "0")
        .env_remove("SAFEGRID_MASTER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts")
}

/// Waits (up to a minute) until `/readyz` answers 200.
pub async fn wait_ready(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the broker did not become ready");
}

/// `safegrid demo --no-serve` of `residents` people with `seed` into `data`.
pub fn demo(data: &str, residents: usize, seed: u64) {
    let (ok, text) = run(&[
        "demo",
        "--residents",
        &residents.to_string(),
        "--seed",
        &seed.to_string(),
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--no-serve",
    ]);
    assert!(ok, "demo failed: {text}");
}

/// A `safegrid serve --dev` process.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub cert: std::path::PathBuf,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Starts the binary on port 0 with `env` added, and reads the URL and the dev certificate
/// it prints. Tests read back as fast as they can with one token and may run beside another
/// broker: no per-principal rate, no metrics port.
pub fn serve_with(data_dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> Server {
    use std::io::BufRead as _;
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SAFEGRID_LIMITS_RATE_PER_SECOND", "0")
        .env("SAFEGRID_METRICS_LISTEN", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("safegrid starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let (mut url, mut cert) = (None, None);
    while url.is_none() || cert.is_none() {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("reading stdout");
        assert!(n > 0, "safegrid exited before serving");
        if let Some(u) = line.trim().strip_prefix("SafeGrid is serving at ") {
            url = Some(u.to_owned());
        }
        if let Some(c) = line.trim().strip_prefix("dev TLS certificate: ") {
            cert = Some(std::path::PathBuf::from(c));
        }
    }
    Server {
        child,
        url: url.expect("url"),
        cert: cert.expect("certificate"),
        _stdout: stdout,
    }
}

/// A test that fails before [`Server::stop`] leaves no broker running behind it.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// SIGTERM: drain, final checkpoint, exit 0.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("safegrid exits");
        assert!(exit.success(), "clean shutdown: {exit:?}");
    }
}

/// The PostgreSQL server of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one); the
/// tests that need it fail, never skip, without it.
pub fn pg_url() -> String {
    match std::env::var("SAFEGRID_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "SAFEGRID_TEST_PG_URL is not set: run `bash scripts/test.sh`, which starts a \
             throwaway PostgreSQL (connectors/scripts/ci-postgres.sh) and sets it"
        ),
    }
}

/// A schema of its own for a test's PostgreSQL store.
pub fn fresh_schema(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t_cli_{label}_{}_{nanos}", std::process::id())
}
