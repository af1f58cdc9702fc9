//! The one error type at the connectors crate boundary.
//!
//! Guarantees: every variant has a stable snake_case [`ConnectorError::code`]; messages name
//! files, tables and settings but never a row's values or a secret.

use std::path::PathBuf;

/// Why a connector could not be built or could not finish a run.
///
/// Row-level problems are not errors of the run: they travel to the sink as
/// [`crate::MappingError`]s. A run that returns an error has delivered (and checkpointed)
/// only what the sink acknowledged before the error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The configuration file is not valid (unknown field, bad value, unknown table name …).
    #[error("configuration: {0}")]
    Config(String),
    /// Reading or moving a file, or writing state, failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The persisted state (checkpoint, processed hashes) is unreadable.
    #[error("state file {}: {message}", path.display())]
    State { path: PathBuf, message: String },
    /// The SQL source failed (connect, query, decode).
    #[error("SQL source: {0}")]
    Sql(String),
    /// The REST source failed after its retries, or answered something unusable.
    #[error("REST source: {0}")]
    Rest(String),
    /// The REST source answered with a redirect SafeGrid does not follow: to another scheme,
    /// host or port than `source.url`, or more hops than allowed. Not retried.
    #[error("REST source: {0}")]
    RedirectRefused(String),
    /// A REST response was larger than `source.max_response_bytes`; reading stopped at that
    /// limit. Not retried.
    #[error(
        "REST source: a response is larger than max_response_bytes = {limit} bytes; ask for \
         smaller pages (page_size) or raise source.max_response_bytes"
    )]
    ResponseTooLarge { limit: u64 },
    /// The sink did not acknowledge a batch; nothing after the last acknowledged batch is
    /// recorded as done.
    #[error("sink: {0}")]
    Sink(String),
}

impl ConnectorError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Config(_) => "connector_config",
            ConnectorError::Io { .. } => "connector_io",
            ConnectorError::State { .. } => "connector_state",
            ConnectorError::Sql(_) => "sql_source",
            ConnectorError::Rest(_) => "rest_source",
            ConnectorError::RedirectRefused(_) => "redirect_refused",
            ConnectorError::ResponseTooLarge { .. } => "response_too_large",
            ConnectorError::Sink(_) => "sink_failed",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            context: context.into(),
            source,
        }
    }
}
