//! SQL pull: incremental reads from a department's table or query, in PostgreSQL or in the
//! MySQL family (MySQL, MariaDB, TiDB, OceanBase). The URL's scheme picks the database:
//! `postgres://` or `postgresql://` for PostgreSQL ([`postgres`]), `mysql://` or `mariadb://`
//! for the MySQL family ([`mysql`]); any other scheme is a configuration error.
//!
//! Rows are read in pages ordered by `(watermark, key)` and resumed strictly after the last
//! `(watermark, key)` delivered, so rows that share a watermark are neither skipped nor
//! repeated at a page boundary.
//!
//! Guarantees:
//! - The checkpoint (last watermark and key, as the database renders them as text) is written
//!   to `<state_dir>/<name>.checkpoint.json` atomically (temp file, fsync, rename) and only
//!   after the sink acknowledged the page; a crash between the two re-delivers that page, which
//!   the ingest pipeline absorbs (same `source_id` + `version`).
//! - A restart resumes after the checkpoint: no gaps and no duplicates beyond that one page.
//! - A row is picked up again when its watermark moves forward (an `updated_at` that the
//!   department's system bumps on update). Rows whose watermark or key is NULL are never read.
//! - A page that ends at the checkpoint it started from stops the run (`sql_source`) instead of
//!   being delivered again and again.
//! - A row reaches the mapping as a JSON object of its columns. A cell the reader cannot
//!   convert fails only its own row, and only when the mapping uses that column (the row then
//!   waits in quarantine); it never stops the run.
//! - The database URL is a secret: it is read from the environment and never printed. Errors
//!   name tables, columns and settings, never a row's value.
//!
//! What the department's table must provide: a watermark that only grows, also across
//! transactions. A row committed late with a watermark at or below one already delivered
//! (a long transaction stamping `updated_at = now()` at its start) is not seen; a trigger that
//! takes the watermark from a sequence at commit time avoids that.

pub mod mysql;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{secret_from_env, Secret};
use crate::connector::{deliver, BoxFuture, Connector, RunReport};
use crate::mapping::{CellError, Mapping, SourceRow};
use crate::state::{read_optional, write_atomic};
use crate::{
    ConnectorConfig, ConnectorError, MappedRecord, MappingError, RecordSink, SourceConfig,
};

/// `[source]` of `type = "sql"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Name of the environment variable holding the database URL. Preferred over `url`: keeps
    /// the password out of the file. The scheme picks the database:
    /// `postgres://user:password@host:5432/db` (or `postgresql://`) for PostgreSQL,
    /// `mysql://user:password@host:3306/db` (or `mariadb://`) for MySQL, MariaDB, TiDB and
    /// OceanBase.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The database URL itself, for a database without a password. Use `url_env` otherwise.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Table to read, `table` or `schema.table` (in MySQL, `database.table`). Give either
    /// `table` or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` returning the rows, used as a subquery (no trailing `;`, no `ORDER BY`).
    #[serde(default)]
    pub query: Option<String>,
    /// Column that grows when a row is inserted or changed (`updated_at` timestamptz, a
    /// bigint sequence …). Its value is the records' version unless the mapping says otherwise.
    /// In MySQL it must be an integer, DECIMAL, DATE, DATETIME or TIMESTAMP column.
    pub watermark_column: String,
    /// Column unique per row (the primary key); orders rows that share a watermark.
    pub key_column: String,
    /// Rows per page; each page is one batch and one checkpoint (default 500).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Seconds to wait for a connection (default 10).
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
}

/// Where the last acknowledged page ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The watermark of the last delivered row, as the database renders it as text
    /// (PostgreSQL's `::text`, MySQL's `CAST(… AS CHAR)`).
    pub watermark: String,
    /// The key of the last delivered row, as text.
    pub key: String,
}

/// The database a URL names, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// `postgres://`, `postgresql://`.
    Postgres,
    /// `mysql://`, `mariadb://`: MySQL, MariaDB, TiDB, OceanBase.
    MySql,
}

impl Database {
    /// Reads the scheme of `url`. The error never repeats the URL, which holds the password.
    pub fn from_url(url: &str) -> Result<Database, ConnectorError> {
        let scheme = url
            .trim_start()
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(Database::Postgres),
            Some("mysql" | "mariadb") => Ok(Database::MySql),
            _ => Err(ConnectorError::Config(
                "the database URL must start with postgres:// or postgresql:// (PostgreSQL), \
                 or mysql:// or mariadb:// (MySQL, MariaDB, TiDB, OceanBase)"
                    .to_owned(),
            )),
        }
    }
}

/// What rows are read from: a table (its dotted name split into parts) or a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Relation {
    Table(Vec<String>),
    Query(String),
}

/// What a page query needs, whatever the database.
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    pub relation: Relation,
    pub watermark_column: String,
    pub key_column: String,
    pub page_size: u32,
    pub connect_timeout: Duration,
    /// The checkpoint file, named in errors about the checkpoint.
    pub checkpoint_path: PathBuf,
}

/// One row of a page: its columns, the cells that did not convert, and where it stands.
#[derive(Debug)]
pub(crate) struct PageRow {
    pub fields: Map<String, Value>,
    pub cell_errors: Vec<CellError>,
    pub position: Checkpoint,
}

/// An open connection to one of the databases, ready to read pages.
enum Session {
    Postgres(postgres::PgReader),
    MySql(mysql::MySqlReader),
}

impl Session {
    /// The next page: at most `page_size` rows after `after`, in `(watermark, key)` order.
    async fn page(&mut self, after: Option<&Checkpoint>) -> Result<Vec<PageRow>, ConnectorError> {
        match self {
            Session::Postgres(reader) => reader.page(after).await,
            Session::MySql(reader) => reader.page(after).await,
        }
    }

    async fn close(self) {
        match self {
            Session::Postgres(reader) => reader.close().await,
            Session::MySql(reader) => reader.close().await,
        }
    }
}

/// The SQL connector.
#[derive(Debug)]
pub struct SqlConnector {
    name: String,
    department: String,
    schedule_seconds: Option<u64>,
    config: SqlConfig,
    mapping: Mapping,
    plan: ReadPlan,
    /// Label for error reports: `sql:<table>` or `sql:query`.
    source_label: String,
}

impl SqlConnector {
    pub fn new(config: &ConnectorConfig, state_dir: &Path) -> Result<SqlConnector, ConnectorError> {
        let SourceConfig::Sql(source) = &config.source else {
            return Err(ConnectorError::Config("not a sql source".to_owned()));
        };
        config.check()?;
        match (&source.url, &source.url_env) {
            (Some(url), None) => {
                Database::from_url(url.expose())?;
            }
            (None, Some(_)) => {}
            _ => {
                return Err(ConnectorError::Config(
                    "source: give exactly one of `url_env` and `url`".to_owned(),
                ))
            }
        }
        let (relation, source_label) = match (&source.table, &source.query) {
            (Some(table), None) => (
                Relation::Table(table.split('.').map(str::to_owned).collect()),
                format!("sql:{table}"),
            ),
            (None, Some(query)) => {
                let query = query.trim().trim_end_matches(';').trim();
                if query.is_empty() {
                    return Err(ConnectorError::Config("source.query is empty".to_owned()));
                }
                (Relation::Query(query.to_owned()), "sql:query".to_owned())
            }
            _ => {
                return Err(ConnectorError::Config(
                    "source: give exactly one of `table` and `query`".to_owned(),
                ))
            }
        };
        if source.page_size == Some(0) {
            return Err(ConnectorError::Config(
                "source.page_size must be at least 1".to_owned(),
            ));
        }
        let name = config.name();
        let plan = ReadPlan {
            relation,
            watermark_column: source.watermark_column.clone(),
            key_column: source.key_column.clone(),
            page_size: source.page_size.unwrap_or(500),
            connect_timeout: Duration::from_secs(source.connect_timeout_seconds.unwrap_or(10)),
            checkpoint_path: state_dir.join(format!("{name}.checkpoint.json")),
        };
        Ok(SqlConnector {
            name,
            department: config.department.clone(),
            schedule_seconds: config.schedule_seconds,
            config: source.clone(),
            mapping: Mapping::compile(&config.mapping)?,
            plan,
            source_label,
        })
    }

    /// The persisted checkpoint, if any.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, ConnectorError> {
        let path = &self.plan.checkpoint_path;
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| ConnectorError::State {
                path: path.clone(),
                message: "not a checkpoint (expected {\"watermark\": …, \"key\": …})".to_owned(),
            })
    }

    fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), ConnectorError> {
        let bytes = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| ConnectorError::Sql(format!("encoding the checkpoint: {e}")))?;
        write_atomic(&self.plan.checkpoint_path, &bytes)
    }

    async fn open(&self) -> Result<Session, ConnectorError> {
        let url = match (&self.config.url, &self.config.url_env) {
            (Some(url), _) => url.clone(),
            (None, Some(var)) => secret_from_env(var)?,
            (None, None) => {
                return Err(ConnectorError::Config("source: no database URL".to_owned()))
            }
        };
        Ok(match Database::from_url(url.expose())? {
            Database::Postgres => {
                Session::Postgres(postgres::PgReader::open(&url, self.plan.clone()).await?)
            }
            Database::MySql => {
                Session::MySql(mysql::MySqlReader::open(&url, self.plan.clone()).await?)
            }
        })
    }

    /// A row whose watermark did not convert has no version to give: when the mapping takes
    /// the version from the watermark, the row fails on that cell.
    fn watermark_failure(&self, row: &PageRow, line: usize) -> Option<MappingError> {
        if !self.mapping.needs_source_version() {
            return None;
        }
        let column = &self.config.watermark_column;
        let err = row.cell_errors.iter().find(|e| &e.column == column)?;
        Some(MappingError {
            source_file: self.source_label.clone(),
            line,
            field: "version".to_owned(),
            code: err.code.to_owned(),
            message: format!("column `{column}`: {}", err.message),
            source_id: None,
        })
    }

    async fn run_inner(&mut self, sink: &mut dyn RecordSink) -> Result<RunReport, ConnectorError> {
        let mut report = RunReport::start(&self.name, &self.department);
        let mut session = self.open().await?;
        let page_size = self.plan.page_size as usize;
        let mut checkpoint = self.checkpoint()?;
        loop {
            let rows = session.page(checkpoint.as_ref()).await?;
            if rows.is_empty() {
                break;
            }
            report.pages += 1;
            let full_page = rows.len() >= page_size;
            let mut batch = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in rows {
                let line = report.rows_read + batch.len() + 1;
                if let Some(error) = self.watermark_failure(&row, line) {
                    batch.push(MappedRecord::Failed {
                        error,
                        row: row.fields,
                    });
                    last = Some(row.position);
                    continue;
                }
                let default_version = row.fields.get(&self.config.watermark_column).cloned();
                batch.push(self.mapping.map(SourceRow {
                    source_file: self.source_label.clone(),
                    line,
                    fields: row.fields,
                    cell_errors: row.cell_errors,
                    default_version,
                    tabular: true,
                }));
                last = Some(row.position);
            }
            if last.is_some() && last.as_ref() == checkpoint.as_ref() {
                // Only rows after the checkpoint were asked for: a page ending on it means the
                // database compares these values differently from how it rendered them.
                return Err(ConnectorError::Sql(format!(
                    "a page ended at the checkpoint it started from: the values of `{}` and \
                     `{}` do not read back as they were written; check that the key column is \
                     unique and of a plain type",
                    self.config.watermark_column, self.config.key_column
                )));
            }
            deliver(sink, &self.department, batch, &mut report).await?;
            if let Some(last) = last {
                self.save_checkpoint(&last)?;
                checkpoint = Some(last);
            }
            if !full_page {
                break;
            }
        }
        // Closing politely is best effort: the run's work is already acknowledged.
        session.close().await;
        Ok(report.finish())
    }
}

impl Connector for SqlConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn department(&self) -> &str {
        &self.department
    }

    fn schedule_seconds(&self) -> Option<u64> {
        self.schedule_seconds
    }

    fn run<'a>(
        &'a mut self,
        sink: &'a mut dyn RecordSink,
    ) -> BoxFuture<'a, Result<RunReport, ConnectorError>> {
        Box::pin(self.run_inner(sink))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mysql_tests;
