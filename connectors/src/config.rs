//! Connector configuration: one TOML file per department source.
//!
//! Guarantees: an unknown key anywhere is an error (`deny_unknown_fields`), so a typo never
//! silently falls back to a default; [`ConnectorConfig::from_toml`] also checks the department
//! code, the connector name and the mapping, so a configuration that loads is one a connector
//! can be built from. The doc comment of each field is the user documentation of that key.
//!
//! A file is either a pull connector ([`ConnectorConfig`], with `[source]` and `[mapping]`) or
//! a sink ([`FeedSinkConfig`], with `[sink]`: a subscription's feed into the department's own
//! database); [`ConnectorFile`] reads either.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::feed_sink::SinkConfig;
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
        if has_sink_section(text) {
            return Err(ConnectorError::Config(
                "this is a sink configuration (`[sink]`): `safegrid connector run` runs it on the \
                 department's side; it is not a pull connector"
                    .to_owned(),
            ));
        }
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
        check_department(&self.department)?;
        check_name(&self.name())?;
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

fn check_department(department: &str) -> Result<(), ConnectorError> {
    model::Department::parse(department).map_err(|_| {
        ConnectorError::Config(format!(
            "department `{department}` is not one of gongan, minzheng, weijian, sifa, zhujian, \
             chengguan, yingji, wangge"
        ))
    })?;
    Ok(())
}

fn check_name(name: &str) -> Result<(), ConnectorError> {
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
    Ok(())
}

/// Whether the TOML text has a top-level `sink` key (a `[sink]` table).
fn has_sink_section(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|table| table.contains_key("sink"))
}

/// A sink's configuration file: one subscription's feed, pulled from the broker into a table
/// of the department's own PostgreSQL (`safegrid connector run`; the broker does not schedule
/// sinks, they run on the department's side).
///
/// ```toml
/// department = "sifa"
/// name = "sifa-disputes-to-pg"
///
/// [sink]
/// subscription = "sub_…"
///
/// [sink.postgres]
/// url_env = "SIFA_PG_URL"      # the database URL comes from the environment, never the file
/// table = "safegrid_disputes"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSinkConfig {
    /// Stable name of this sink (letters, digits, `-`, `_`), shown in its reports.
    /// Defaults to `<department>-sink`.
    #[serde(default)]
    pub name: Option<String>,
    /// Code of the receiving department (the `dept` of the `dept_subscriber` token the run
    /// uses): gongan, minzheng, weijian, sifa, zhujian, chengguan, yingji or wangge.
    pub department: String,
    /// The subscription to receive and the table to write it to.
    pub sink: SinkConfig,
}

impl FeedSinkConfig {
    /// Parses and checks a sink configuration.
    pub fn from_toml(text: &str) -> Result<FeedSinkConfig, ConnectorError> {
        let config: FeedSinkConfig =
            toml::from_str(text).map_err(|e| ConnectorError::Config(e.message().to_owned()))?;
        config.check()?;
        Ok(config)
    }

    /// The sink's name: the configured one or `<department>-sink`.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-sink", self.department))
    }

    /// Checks what serde cannot: the department, the name, and the `[sink]` section (the
    /// subscription id, the bounds, the table names).
    pub fn check(&self) -> Result<(), ConnectorError> {
        check_department(&self.department)?;
        check_name(&self.name())?;
        crate::feed_sink::FeedSink::from_section(self).map(drop)
    }
}

/// A connector configuration file of either shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorFile {
    /// `[source]` and `[mapping]`: a department's data pulled and published to the broker.
    Pull(Box<ConnectorConfig>),
    /// `[sink]`: a subscription's feed received into the department's database.
    Sink(Box<FeedSinkConfig>),
}

impl ConnectorFile {
    /// Parses and checks a configuration of either shape (a `[sink]` table makes it a sink).
    pub fn from_toml(text: &str) -> Result<ConnectorFile, ConnectorError> {
        if has_sink_section(text) {
            FeedSinkConfig::from_toml(text).map(|sink| ConnectorFile::Sink(Box::new(sink)))
        } else {
            ConnectorConfig::from_toml(text).map(|config| ConnectorFile::Pull(Box::new(config)))
        }
    }

    /// Reads, parses and checks a configuration file of either shape.
    pub fn load(path: &Path) -> Result<ConnectorFile, ConnectorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConnectorError::io(format!("reading {}", path.display()), e))?;
        ConnectorFile::from_toml(&text).map_err(|e| match e {
            ConnectorError::Config(message) => {
                ConnectorError::Config(format!("{}: {message}", path.display()))
            }
            other => other,
        })
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
        let sink =
            FeedSinkConfig::from_toml(include_str!("../examples-config/sifa-sink.toml")).unwrap();
        assert_eq!(sink.department, "sifa");
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

    const SINK: &str = r#"
department = "sifa"
name = "sifa-disputes-to-pg"
[sink]
subscription = "sub_0123abcd"
[sink.postgres]
url_env = "SIFA_PG_URL"
table = "safegrid_disputes"
"#;

    #[test]
    fn a_sink_section_makes_a_sink_configuration() {
        let ConnectorFile::Sink(sink) = ConnectorFile::from_toml(SINK).unwrap() else {
            panic!("not read as a sink");
        };
        assert_eq!(sink.name(), "sifa-disputes-to-pg");
        assert_eq!(sink.sink.postgres.table, "safegrid_disputes");
        let unnamed = SINK.replace("name = \"sifa-disputes-to-pg\"\n", "");
        assert_eq!(
            FeedSinkConfig::from_toml(&unnamed).unwrap().name(),
            "sifa-sink"
        );
        assert!(matches!(
            ConnectorFile::from_toml(FILE_DROP).unwrap(),
            ConnectorFile::Pull(_)
        ));

        // A pull connector's loader names the mistake instead of a missing `source`.
        let e = ConnectorConfig::from_toml(SINK).unwrap_err();
        assert!(e.to_string().contains("sink configuration"), "{e}");

        // Unknown keys, a URL in the file, a source beside the sink, a bad table name.
        for (bad, word) in [
            (
                SINK.replace("subscription =", "subscripton ="),
                "subscripton",
            ),
            (
                SINK.replace(
                    "url_env = \"SIFA_PG_URL\"",
                    "url = \"postgres://u:pw@h/db\"",
                ),
                "url",
            ),
            (format!("{SINK}[source]\ntype = \"sql\"\n"), "source"),
            (
                SINK.replace("safegrid_disputes", "t; DROP TABLE x"),
                "table",
            ),
            (SINK.replace("sifa\"\nname", "police\"\nname"), "police"),
        ] {
            let e = ConnectorFile::from_toml(&bad).unwrap_err();
            assert_eq!(e.code(), "connector_config");
            assert!(e.to_string().contains(word), "{word}: {e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }
}
