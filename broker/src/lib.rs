//! SafeGrid broker: the service between departments and grid workers. It assembles the
//! crates before it (`vault`, `engine`, `policies`, `search`, `audit`, `connectors`) into one
//! HTTPS API: `app` starts everything, `server`/`tls`/`certs` accept connections, `auth`
//! verifies tokens, `api` serves the routes — every piece of personal data through the
//! disclosure gate (`api::disclosure`) —, `connect` runs the connectors, `policy_folder`
//! keeps the live policy, `metrics` counts.
//!
//! Guarantees: no module imports `app`, and `api` is the only one that knows `AppState`; the
//! crate layout and what each crate may depend on are checked by `tests/tests/e2e/layout.rs`.

pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod client;
pub mod config;
pub mod config_overrides;
pub mod connect;
pub mod console;
pub mod exchange;
pub mod metrics;
pub mod policy_folder;
pub mod server;
pub mod sharing;
pub mod tls;
