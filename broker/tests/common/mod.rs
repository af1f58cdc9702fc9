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
