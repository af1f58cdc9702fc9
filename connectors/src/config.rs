//! Connector configuration: one TOML file per department source.
//!
//! Guarantees: an unknown key anywhere is an error (`deny_unknown_fields`), so a typo never
//! silently falls back to a default; [`ConnectorConfig::from_toml`] also checks the department
//! code, the connector name and the mapping, so a configuration that loads is one a connector
//! can be built from. The doc comment of each field is the user documentation of that key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::file_drop::FileDropConfig;
use crate::mapping::{Mapping, MappingConfig};
use crate::rest::RestConfig;
use crate::sql::SqlConfig;
use crate::ConnectorError;

/// A secret read from the configuration (a URL with a password, a token). Never printed:
/// `Debug` shows `[redacted]` and serializing writes `[redacted]` too.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// Reads a secret from the environment variable `name`.
pub fn secret_from_env(name: &str) -> Result<Secret, ConnectorError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(Secret(value)),
        _ => Err(ConnectorError::Config(format!(
            "environment variable `{name}` is not set (it holds a secret for this connector)"
        ))),
    }
}

/// Records per batch handed to the sink, unless the configuration says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// A connector's configuration file.
///
/// ```toml
/// department = "minzheng"
/// schedule_seconds = 300
///
/// [source]
/// type = "file_drop"
/// folder = "/srv/safegrid/drop/minzheng"
///
/// [mapping]
/// kind = "resident"
/// source_id = { template = "MZ-{编号}" }
/// [mapping.fields]
/// id_number = "身份证号"
/// name = "姓名"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Stable name of this connector (letters, digits, `-`, `_`); names its state files.
    /// Defaults to `<department>-<source type>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Code of the publishing department: gongan, minzheng, weijian, sifa, zhujian,
    /// chengguan, yingji or wangge.
    pub department: String,
    /// Run every this many seconds when the broker schedules the connector; absent means
    /// "only when run by hand" (`safegrid connector run <config>`).
    #[serde(default)]
    pub schedule_seconds: Option<u64>,
    /// Records per batch handed to the ingest pipeline (default 1000).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Where the data comes from.
    pub source: SourceConfig,
    /// How the department's rows become unified records.
    pub mapping: MappingConfig,
}

/// The source of a connector, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// `type = "file_drop"`: CSV, XLSX, JSON or NDJSON files dropped into a folder.
    FileDrop(FileDropConfig),
    /// `type = "sql"`: incremental pull from a PostgreSQL or MySQL-family (MySQL, MariaDB, TiDB,
    /// OceanBase) table or query.
    Sql(SqlConfig),
    /// `type = "rest"`: paged pull from a JSON API.
    Rest(RestConfig),
}

impl SourceConfig {
    /// The `type` name, as written in the TOML.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::FileDrop(_) => "file_drop",
            SourceConfig::Sql(_) => "sql",
            SourceConfig::Rest(_) => "rest",
        }
    }
}

impl ConnectorConfig {
    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<ConnectorConfig, ConnectorError> {
        let config: ConnectorConfig =
            toml::from_str(text).map_err(|e| ConnectorError::Config(e.message().to_owned()))?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<ConnectorConfig, ConnectorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConnectorError::io(format!("reading {}", path.display()), e))?;
        ConnectorConfig::from_toml(&text).map_err(|e| match e {
            ConnectorError::Config(message) => {
                ConnectorError::Config(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// The connector's name: the configured one or `<department>-<source type>`.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.department, self.source.type_name()))
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE).max(1)
    }

    /// Checks what serde cannot: the department, the name, the mapping.
    pub fn check(&self) -> Result<(), ConnectorError> {
        model::Department::parse(&self.department).map_err(|_| {
            ConnectorError::Config(format!(
                "department `{}` is not one of gongan, minzheng, weijian, sifa, zhujian, \
                 chengguan, yingji, wangge",
                self.department
            ))
        })?;
        let name = self.name();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConnectorError::Config(
                "name must be 1-64 letters, digits, `-` or `_`".to_owned(),
            ));
        }
        if self.batch_size == Some(0) {
            return Err(ConnectorError::Config(
                "batch_size must be at least 1".to_owned(),
            ));
        }
        let mapping = Mapping::compile(&self.mapping)?;
        if let SourceConfig::Rest(_) = self.source {
            if mapping.needs_source_version() {
                return Err(ConnectorError::Config(
                    "a REST source has no version of its own: set mapping.version = { column = … }"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE_DROP: &str = r#"
department = "minzheng"
schedule_seconds = 300
[source]
type = "file_drop"
folder = "/tmp/drop"
[mapping]
kind = "resident"
source_id = { template = "MZ-{编号}" }
[mapping.fields]
name = "姓名"
[mapping.constants]
grid = "110105001001003"
"#;

    #[test]
    fn parses_and_names() {
        let config = ConnectorConfig::from_toml(FILE_DROP).unwrap();
        assert_eq!(config.name(), "minzheng-file_drop");
        assert_eq!(config.source.type_name(), "file_drop");
        assert_eq!(config.schedule_seconds, Some(300));
    }

    #[test]
    fn example_configurations_load() {
        for text in [
            include_str!("../examples-config/minzheng-file-drop.toml"),
            include_str!("../examples-config/zhujian-sql.toml"),
            include_str!("../examples-config/wangge-rest.toml"),
        ] {
            let config = ConnectorConfig::from_toml(text).unwrap();
            assert!(config.schedule_seconds.is_some());
        }
    }

    #[test]
    fn rejects_unknown_keys_departments_and_types() {
        let typo = FILE_DROP.replace("folder =", "fodler =");
        let e = ConnectorConfig::from_toml(&typo).unwrap_err();
        assert_eq!(e.code(), "connector_config");
        assert!(e.to_string().contains("fodler"), "{e}");
        let e = ConnectorConfig::from_toml(&FILE_DROP.replace("minzheng", "police")).unwrap_err();
        assert!(e.to_string().contains("police"));
        let e = ConnectorConfig::from_toml(&FILE_DROP.replace("file_drop", "ftp")).unwrap_err();
        assert!(e.to_string().contains("ftp"), "{e}");
        let e = ConnectorConfig::from_toml(&FILE_DROP.replace("schedule_seconds", "schedule"))
            .unwrap_err();
        assert!(e.to_string().contains("schedule"), "{e}");
    }
}
