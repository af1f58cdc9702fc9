//! SafeGrid broker: the secure data-exchange broker between departments and grid workers.
//!
//! Modules follow the data flow: `ingest` (validate, resolve, seal) -> `store` -> `resolve`
//! (merged views) -> `api` (authenticate, authorize, respond over TLS), with `crypto` and
//! `keys` for envelope encryption and blind indexes.

pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod client;
pub mod config;
pub mod config_overrides;
pub mod connect;
pub mod metrics;
pub mod policy_folder;
pub mod server;
pub mod tls;
