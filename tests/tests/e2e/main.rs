//! End-to-end tests: a real broker on port 0 over TLS, real tokens, real HTTP. One test
//! binary for the crate (link time on two cores); each module is one area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit_log;
mod connectors;
mod console;
mod exchange;
mod faults;
mod key_rotation;
mod language;
mod layout;
mod limits;
mod metrics;
mod minors;
mod mtls;
mod oidc;
mod organizations;
mod postgres_store;
mod privacy;
mod reports;
mod resolution;
mod search;
mod sink;
mod spine;
mod text_paths;
mod traditional_names;
mod trust;
mod xlsx_exports;
