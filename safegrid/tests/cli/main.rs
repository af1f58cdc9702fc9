//! Tests that run the `safegrid` binary: serve, demo, keys, audit verify, crash and restart,
//! the production steps of the operations guide. One test binary for the crate (link time).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod audit_verify;
mod compact;
mod crash;
mod crash_review;
mod crash_rotation;
mod exchange_crash;
mod failover;
mod keys_cli;
mod log_scan;
mod migrate;
mod production_steps;
mod progress_cli;
mod upgrade;
