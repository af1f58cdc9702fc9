//! SafeGrid broker: the secure data-exchange broker between departments and grid workers.
//!
//! Modules follow the data flow: `ingest` (validate, resolve, seal) -> `store` -> `resolve`
//! (merged views) -> `api` (authenticate, authorize, respond over TLS), with `crypto` and
//! `keys` for envelope encryption and blind indexes.

pub mod api;
pub mod app;
pub mod audit_cli;
pub mod auth;
pub mod certs;
pub mod client;
pub mod config;
pub mod config_overrides;
pub mod connect;
pub mod demo;
pub mod ingest;
pub mod linkage;
pub mod linking;
pub mod metrics;
pub mod names;
pub mod ops_cli;
pub mod policy_folder;
pub mod problems;
pub mod resolve;
pub mod rotation;
pub mod search;
pub mod server;
pub mod tls;
