//! The registry: builds the connector a configuration names.
//!
//! Guarantees: [`build`] returns a connector only for a configuration that passed every check
//! (`ConnectorConfig::check`, the source's own settings, the mapping); state files live in
//! `state_dir` under the connector's name.

use std::path::Path;

use crate::file_drop::FileDropConnector;
use crate::rest::RestConnector;
use crate::sql::SqlConnector;
use crate::{Connector, ConnectorConfig, ConnectorError, SourceConfig};

/// The `type` names of `[source]` that [`build`] knows.
pub const SOURCE_TYPES: &[&str] = &["file_drop", "sql", "rest"];

/// Builds the connector for `config`, keeping its state (checkpoints, processed hashes) in
/// `state_dir`.
pub fn build(
    config: &ConnectorConfig,
    state_dir: &Path,
) -> Result<Box<dyn Connector>, ConnectorError> {
    Ok(match &config.source {
        SourceConfig::FileDrop(_) => Box::new(FileDropConnector::new(config, state_dir)?),
        SourceConfig::Sql(_) => Box::new(SqlConnector::new(config, state_dir)?),
        SourceConfig::Rest(_) => Box::new(RestConnector::new(config)?),
    })
}
