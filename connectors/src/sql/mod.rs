//! SQL pull: incremental reads from a department's PostgreSQL table or query.
//!
//! Rows are read in pages ordered by `(watermark, key)` and resumed strictly after the last
//! `(watermark, key)` delivered, using PostgreSQL's row comparison, so rows that share a
//! watermark are neither skipped nor repeated at a page boundary.
//!
//! Guarantees:
//! - The checkpoint (last watermark and key, as PostgreSQL renders them) is written to
//!   `<state_dir>/<name>.checkpoint.json` atomically (temp file, fsync, rename) and only after
//!   the sink acknowledged the page; a crash between the two re-delivers that page, which the
//!   ingest pipeline absorbs (same `source_id` + `version`).
//! - A restart resumes after the checkpoint: no gaps and no duplicates beyond that one page.
//! - A row is picked up again when its watermark moves forward (an `updated_at` that the
//!   department's system bumps on update). Rows whose watermark or key is NULL are never read.
//! - The database URL is a secret: it is read from the environment and never printed.
//!
//! What the department's table must provide: a watermark that only grows, also across
//! transactions. A row committed late with a watermark at or below one already delivered
//! (a long transaction stamping `updated_at = now()` at its start) is not seen; a trigger that
//! takes the watermark from a sequence at commit time avoids that.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::config::{secret_from_env, Secret};
use crate::connector::{deliver, BoxFuture, Connector, RunReport};
use crate::mapping::{Mapping, SourceRow};
use crate::state::{read_optional, write_atomic};
use crate::{ConnectorConfig, ConnectorError, RecordSink, SourceConfig};

/// `[source]` of `type = "sql"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Name of the environment variable holding the PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`). Preferred over `url`: keeps the password out
    /// of the file.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The PostgreSQL URL itself, for a database without a password. Use `url_env` otherwise.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Table to read, `table` or `schema.table`. Give either `table` or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` returning the rows, used as a subquery (no trailing `;`, no `ORDER BY`).
    #[serde(default)]
    pub query: Option<String>,
    /// Column that grows when a row is inserted or changed (`updated_at` timestamptz, a
    /// bigint sequence …). Its value is the records' version unless the mapping says otherwise.
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
    /// The watermark of the last delivered row, as PostgreSQL renders it as text.
    pub watermark: String,
    /// The key of the last delivered row, as text.
    pub key: String,
}

/// The SQL connector.
#[derive(Debug)]
pub struct SqlConnector {
    name: String,
    department: String,
    schedule_seconds: Option<u64>,
    config: SqlConfig,
    mapping: Mapping,
    checkpoint_path: PathBuf,
    /// The subquery every statement reads from.
    base: String,
    /// Label for error reports: `sql:<table>` or `sql:query`.
    source_label: String,
}

/// Quotes one identifier for PostgreSQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A type name as `pg_typeof(…)::text` returns it, checked before it is put into a cast.
fn checked_type(name: &str) -> Result<&str, ConnectorError> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.,()\"[]".contains(c))
    {
        Ok(name)
    } else {
        Err(ConnectorError::Sql(
            "the watermark or key column has a type that cannot be used in a comparison".to_owned(),
        ))
    }
}

fn sql_error(context: &str, err: sqlx::Error) -> ConnectorError {
    // Database errors carry PostgreSQL's message (which names objects, not row values, for
    // the statements issued here); connection errors never contain the URL.
    ConnectorError::Sql(format!("{context}: {err}"))
}

impl SqlConnector {
    pub fn new(config: &ConnectorConfig, state_dir: &Path) -> Result<SqlConnector, ConnectorError> {
        let SourceConfig::Sql(source) = &config.source else {
            return Err(ConnectorError::Config("not a sql source".to_owned()));
        };
        config.check()?;
        if source.url.is_some() == source.url_env.is_some() {
            return Err(ConnectorError::Config(
                "source: give exactly one of `url_env` and `url`".to_owned(),
            ));
        }
        let (base, source_label) = match (&source.table, &source.query) {
            (Some(table), None) => {
                let quoted: Vec<String> = table.split('.').map(quote_ident).collect();
                (
                    format!("SELECT * FROM {}", quoted.join(".")),
                    format!("sql:{table}"),
                )
            }
            (None, Some(query)) => {
                let query = query.trim().trim_end_matches(';').trim();
                if query.is_empty() {
                    return Err(ConnectorError::Config("source.query is empty".to_owned()));
                }
                (query.to_owned(), "sql:query".to_owned())
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
        Ok(SqlConnector {
            checkpoint_path: state_dir.join(format!("{name}.checkpoint.json")),
            name,
            department: config.department.clone(),
            schedule_seconds: config.schedule_seconds,
            config: source.clone(),
            mapping: Mapping::compile(&config.mapping)?,
            base,
            source_label,
        })
    }

    /// The persisted checkpoint, if any.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, ConnectorError> {
        let Some(bytes) = read_optional(&self.checkpoint_path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| ConnectorError::State {
                path: self.checkpoint_path.clone(),
                message: "not a checkpoint (expected {\"watermark\": …, \"key\": …})".to_owned(),
            })
    }

    fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), ConnectorError> {
        let bytes = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| ConnectorError::Sql(format!("encoding the checkpoint: {e}")))?;
        write_atomic(&self.checkpoint_path, &bytes)
    }

    async fn connect(&self) -> Result<PgConnection, ConnectorError> {
        let url = match (&self.config.url, &self.config.url_env) {
            (Some(url), _) => url.clone(),
            (None, Some(var)) => secret_from_env(var)?,
            (None, None) => {
                return Err(ConnectorError::Config("source: no database URL".to_owned()))
            }
        };
        let options = PgConnectOptions::from_str(url.expose()).map_err(|_| {
            ConnectorError::Config("the database URL is not a valid PostgreSQL URL".to_owned())
        })?;
        let timeout = Duration::from_secs(self.config.connect_timeout_seconds.unwrap_or(10));
        let mut conn = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| ConnectorError::Sql("connecting timed out".to_owned()))?
            .map_err(|e| sql_error("connecting", e))?;
        // Watermarks are rendered as text and cast back: fix the session settings that
        // rendering depends on.
        sqlx::query("SET TIME ZONE 'UTC'")
            .execute(&mut conn)
            .await
            .map_err(|e| sql_error("setting the session time zone", e))?;
        sqlx::query("SET DateStyle = 'ISO, YMD'")
            .execute(&mut conn)
            .await
            .map_err(|e| sql_error("setting the session date style", e))?;
        Ok(conn)
    }

    async fn run_inner(&mut self, sink: &mut dyn RecordSink) -> Result<RunReport, ConnectorError> {
        let mut report = RunReport::start(&self.name, &self.department);
        let mut conn = self.connect().await?;
        let wm = quote_ident(&self.config.watermark_column);
        let key = quote_ident(&self.config.key_column);
        let page_size = i64::from(self.config.page_size.unwrap_or(500));
        let not_null = format!("src.{wm} IS NOT NULL AND src.{key} IS NOT NULL");
        let select = format!(
            "SELECT to_jsonb(src) AS row, (src.{wm})::text AS wm, (src.{key})::text AS k FROM ({}) AS src",
            self.base
        );
        let order = format!("ORDER BY src.{wm}, src.{key}");

        let types_sql = format!(
            "SELECT pg_typeof(src.{wm})::text AS wm_type, pg_typeof(src.{key})::text AS key_type \
             FROM ({}) AS src LIMIT 1",
            self.base
        );
        let mut types: Option<(String, String)> = None;
        let mut checkpoint = self.checkpoint()?;
        loop {
            let rows = match &checkpoint {
                None => {
                    let sql = format!("{select} WHERE {not_null} {order} LIMIT $1");
                    sqlx::query(&sql)
                        .bind(page_size)
                        .fetch_all(&mut conn)
                        .await
                        .map_err(|e| sql_error("reading a page", e))?
                }
                Some(last) => {
                    if types.is_none() {
                        let row = sqlx::query(&types_sql)
                            .fetch_optional(&mut conn)
                            .await
                            .map_err(|e| sql_error("reading column types", e))?;
                        let Some(row) = row else { break };
                        let wm_type: String = row
                            .try_get("wm_type")
                            .map_err(|e| sql_error("reading column types", e))?;
                        let key_type: String = row
                            .try_get("key_type")
                            .map_err(|e| sql_error("reading column types", e))?;
                        types = Some((wm_type, key_type));
                    }
                    let (wm_type, key_type) = types
                        .as_ref()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .unwrap_or_default();
                    let sql = format!(
                        "{select} WHERE {not_null} AND (src.{wm}, src.{key}) > \
                         (CAST($1::text AS {}), CAST($2::text AS {})) {order} LIMIT $3",
                        checked_type(wm_type)?,
                        checked_type(key_type)?
                    );
                    sqlx::query(&sql)
                        .bind(&last.watermark)
                        .bind(&last.key)
                        .bind(page_size)
                        .fetch_all(&mut conn)
                        .await
                        .map_err(|e| sql_error("reading a page", e))?
                }
            };
            if rows.is_empty() {
                break;
            }
            report.pages += 1;
            let full_page = rows.len() as i64 >= page_size;
            let mut batch = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in rows {
                let object: Value = row
                    .try_get("row")
                    .map_err(|e| sql_error("decoding a row", e))?;
                let watermark: String = row
                    .try_get("wm")
                    .map_err(|e| sql_error("decoding a row", e))?;
                let key_text: String = row
                    .try_get("k")
                    .map_err(|e| sql_error("decoding a row", e))?;
                let Value::Object(fields) = object else {
                    return Err(ConnectorError::Sql(
                        "a row did not decode to a JSON object".to_owned(),
                    ));
                };
                let default_version = fields.get(&self.config.watermark_column).cloned();
                let line = report.rows_read + batch.len() + 1;
                batch.push(self.mapping.map(SourceRow {
                    source_file: self.source_label.clone(),
                    line,
                    fields,
                    cell_errors: Vec::new(),
                    default_version,
                    tabular: true,
                }));
                last = Some(Checkpoint {
                    watermark,
                    key: key_text,
                });
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
        let _ = conn.close().await;
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
