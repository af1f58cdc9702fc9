//! Pages from PostgreSQL.
//!
//! Guarantees:
//! - A row reaches the mapping as PostgreSQL's own `to_jsonb` of it: numbers as JSON numbers,
//!   `timestamptz` as RFC 3339 in UTC, `timestamp` and `date` as ISO 8601 without a zone, `json`
//!   and `jsonb` as nested JSON, text as strings.
//! - Pages resume after the checkpoint with PostgreSQL's row comparison
//!   `(watermark, key) > (…, …)`, the checkpoint cast back to the columns' own types.
//! - The session runs in UTC with `DateStyle = ISO, YMD`, so the checkpoint text reads back as
//!   the value it was written from.
//! - An error of the server carries its SQLSTATE and, for the errors that name objects
//!   (unknown table, column or database, access denied, a syntax error in `source.query`), its
//!   message; other messages are left out, since they may quote a row's value.

use std::str::FromStr;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use sqlx::{Connection, Row};

use super::{Checkpoint, PageRow, ReadPlan, Relation};
use crate::config::Secret;
use crate::ConnectorError;

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

/// SQLSTATEs whose message names objects (tables, columns, databases, roles, types) or
/// quotes the configured query, never a row's value.
const MESSAGES_THAT_NAME_OBJECTS: &[&str] = &[
    "28000", // invalid authorization (no such role, pg_hba refuses)
    "28P01", // wrong password
    "3D000", // unknown database
    "42501", // permission denied on a table
    "42601", // syntax error (in source.query)
    "42702", // ambiguous column
    "42703", // unknown column
    "42804", // type mismatch
    "42883", // unknown function or operator for these types
    "42P01", // no such table
];

fn sql_error(context: &str, err: sqlx::Error) -> ConnectorError {
    let message = redacted_message(&err, MESSAGES_THAT_NAME_OBJECTS);
    ConnectorError::Sql(format!("{context}: {message}"))
}

/// What a PostgreSQL error may say out loud: the server's message only for the codes in
/// `naming` (their messages name objects, never values); otherwise the code alone, since
/// other messages (a failed cast, a constraint) may quote a row's value. Connection errors
/// never contain the URL.
pub(crate) fn redacted_message(err: &sqlx::Error, naming: &[&str]) -> String {
    match err {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(e) if naming.contains(&e.code()) => {
                format!("PostgreSQL error {}: {}", e.code(), e.message())
            }
            Some(e) => format!(
                "PostgreSQL error {} (the server's message may quote a value and is not \
                 repeated; look the code up in PostgreSQL's error code table)",
                e.code()
            ),
            None => "the server reported an error".to_owned(),
        },
        sqlx::Error::ColumnDecode { index, .. } => format!("column {index} could not be decoded"),
        sqlx::Error::Decode(_) => "a value could not be decoded".to_owned(),
        other => other.to_string(),
    }
}

/// An open PostgreSQL session reading one table or query.
#[derive(Debug)]
pub(crate) struct PgReader {
    conn: PgConnection,
    page_size: i64,
    /// `SELECT to_jsonb(src), wm::text, key::text FROM (…) AS src`.
    select: String,
    not_null: String,
    order: String,
    wm: String,
    key: String,
    /// Reads the types of the watermark and key columns, to cast the checkpoint back.
    types_sql: String,
    types: Option<(String, String)>,
}

impl PgReader {
    pub(crate) async fn open(url: &Secret, plan: ReadPlan) -> Result<PgReader, ConnectorError> {
        let options = PgConnectOptions::from_str(url.expose()).map_err(|_| {
            ConnectorError::Config("the database URL is not a valid PostgreSQL URL".to_owned())
        })?;
        let mut conn =
            tokio::time::timeout(plan.connect_timeout, PgConnection::connect_with(&options))
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

        let base = match &plan.relation {
            Relation::Table(parts) => {
                let quoted: Vec<String> = parts.iter().map(|p| quote_ident(p)).collect();
                format!("SELECT * FROM {}", quoted.join("."))
            }
            Relation::Query(query) => query.clone(),
        };
        let wm = quote_ident(&plan.watermark_column);
        let key = quote_ident(&plan.key_column);
        Ok(PgReader {
            conn,
            page_size: i64::from(plan.page_size),
            select: format!(
                "SELECT to_jsonb(src) AS row, (src.{wm})::text AS wm, (src.{key})::text AS k \
                 FROM ({base}) AS src"
            ),
            not_null: format!("src.{wm} IS NOT NULL AND src.{key} IS NOT NULL"),
            order: format!("ORDER BY src.{wm}, src.{key}"),
            types_sql: format!(
                "SELECT pg_typeof(src.{wm})::text AS wm_type, pg_typeof(src.{key})::text AS key_type \
                 FROM ({base}) AS src LIMIT 1"
            ),
            wm,
            key,
            types: None,
        })
    }

    pub(crate) async fn page(
        &mut self,
        after: Option<&Checkpoint>,
    ) -> Result<Vec<PageRow>, ConnectorError> {
        let (select, not_null, order, wm, key) = (
            &self.select,
            &self.not_null,
            &self.order,
            &self.wm,
            &self.key,
        );
        let rows = match after {
            None => {
                let sql = format!("{select} WHERE {not_null} {order} LIMIT $1");
                sqlx::query(&sql)
                    .bind(self.page_size)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| sql_error("reading a page", e))?
            }
            Some(last) => {
                if self.types.is_none() {
                    let row = sqlx::query(&self.types_sql)
                        .fetch_optional(&mut self.conn)
                        .await
                        .map_err(|e| sql_error("reading column types", e))?;
                    let Some(row) = row else {
                        return Ok(Vec::new());
                    };
                    let wm_type: String = row
                        .try_get("wm_type")
                        .map_err(|e| sql_error("reading column types", e))?;
                    let key_type: String = row
                        .try_get("key_type")
                        .map_err(|e| sql_error("reading column types", e))?;
                    self.types = Some((wm_type, key_type));
                }
                let (wm_type, key_type) = self
                    .types
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
                    .bind(self.page_size)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| sql_error("reading a page", e))?
            }
        };
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            let object: Value = row
                .try_get("row")
                .map_err(|e| sql_error("decoding a row", e))?;
            let watermark: String = row
                .try_get("wm")
                .map_err(|e| sql_error("decoding a row", e))?;
            let key: String = row
                .try_get("k")
                .map_err(|e| sql_error("decoding a row", e))?;
            let Value::Object(fields) = object else {
                return Err(ConnectorError::Sql(
                    "a row did not decode to a JSON object".to_owned(),
                ));
            };
            page.push(PageRow {
                fields,
                cell_errors: Vec::new(),
                position: Checkpoint { watermark, key },
            });
        }
        Ok(page)
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }
}
