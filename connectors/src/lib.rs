//! Department connectors: one shape for every way a department's data reaches SafeGrid.
//!
//! A connector is a typed TOML configuration ([`ConnectorConfig`]) plus an implementation of
//! [`Connector`], built by name through [`build`]. Each run reads what is new at the source
//! (a drop folder, a PostgreSQL or MySQL-family table, a paged REST API), turns each row into a record of the
//! unified format through the department's declarative [`mapping`], and hands batches to a
//! [`RecordSink`] (the broker's ingest pipeline, or [`NdjsonSink`] in tests and the CLI).
//!
//! Guarantees shared by every connector:
//! - Nothing is lost silently: a row that cannot be mapped or does not validate against
//!   `model::Record::from_value` is handed to the sink as a [`MappingError`] that names the
//!   source file (or table / page), the line, the field and a stable code; its message never
//!   repeats the value, which is personal data.
//! - Progress is recorded only after the sink acknowledged the batch, so a crash re-delivers
//!   rather than skips; the broker's ingest is idempotent on `source_id` + `version`.
//! - Secrets (database URLs, API tokens) are read from the environment and never printed.

mod body;
pub mod config;
mod connector;
mod error;
pub mod feed_sink;
pub mod file_drop;
pub mod mapping;
mod registry;
pub mod rest;
mod sink;
pub mod sql;
mod state;

pub use config::{
    secret_from_env, ConnectorConfig, ConnectorFile, FeedSinkConfig, Secret, SourceConfig,
};
pub use connector::{BoxFuture, Connector, RunReport};
pub use error::ConnectorError;
pub use mapping::{Mapping, MappingError, SourceRow};
pub use registry::{build, SOURCE_TYPES};
pub use sink::{MappedRecord, NdjsonSink, Origin, RecordSink, SinkReceipt};
