//! SafeGrid broker: the secure data-exchange broker between departments and grid workers.
//!
//! Modules follow the data flow: `ingest` (validate, resolve, seal) -> `store` -> `resolve`
//! (merged views) -> `api` (authenticate, authorize, respond over TLS), with `crypto` and
//! `keys` for envelope encryption and blind indexes.

pub mod crypto;
pub mod ingest;
pub mod keys;
pub mod resolve;
pub mod store;
pub mod search;
pub mod api;
pub mod auth;
pub mod authz;
pub mod tls;
pub mod certs;
pub mod rotation;
pub mod backup;
pub mod config_overrides;
pub mod ops_cli;
pub mod metrics;
pub mod view;
pub mod app;
pub mod config;
pub mod server;
pub mod client;
pub mod demo;
pub mod audit_cli;
pub mod names;
pub mod linkage;
pub mod connect;
