//! The PostgreSQL side of a sink: the department's table, its cursor, and one transaction per
//! page.
//!
//! The table (created if absent):
//!
//! | column | |
//! |---|---|
//! | `id text PRIMARY KEY` | the unified id (`e_…`, `r_…`, `h_…`, `o_…`) |
//! | `kind text` | `event`, `resident`, `house`, `organization` |
//! | `seq bigint` | the feed sequence of the change the row holds |
//! | `change text` | `upsert`, or `delete` for a tombstone |
//! | `record jsonb` | the profile as the subscriber may see it; NULL for a tombstone |
//! | `subscription_id text`, `delivery_id text` | where the change came from |
//! | `received_at timestamptz` | when the change was applied |
//!
//! and the cursor table (default `safegrid_sink_cursor` in the table's schema), one row per
//! (table, subscription): `target_table, subscription_id, next_seq, updated_at`; `next_seq` is
//! NULL until the first page is committed (the first request goes without `after`).
//!
//! Guarantees:
//! - A page's rows and its cursor are written in one transaction; the cursor is moved first,
//!   with a compare-and-set on the value the page was asked after, so a second run of the same
//!   sink at the same time stops instead of applying a page twice.
//! - A row is replaced only by a change with a higher `seq` (`ON CONFLICT … WHERE cur.seq <
//!   EXCLUDED.seq`); a tombstone keeps its `seq`, so an older upsert cannot bring it back.
//! - Table names are [`TableName`]s — lowercase SQL identifiers, optionally schema-qualified,
//!   quoted when used; values travel as bind parameters (the page as one `jsonb`).
//! - The database URL is never printed; an error of the server carries its SQLSTATE, and its
//!   message only for the errors that name objects (a row's values are never repeated).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::{Change, FeedPage, PageApplied};
use crate::config::Secret;
use crate::ConnectorError;

/// The cursor table's name unless `cursor_table` says otherwise.
pub const DEFAULT_CURSOR_TABLE: &str = "safegrid_sink_cursor";

/// `[sink.postgres]`: the department's database and the table the changes go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSinkConfig {
    /// Name of the environment variable holding the database URL,
    /// `postgres://user:password@host:5432/db` (or `postgresql://`). The URL itself never goes
    /// in this file. The user needs CREATE on the schema the first time (the tables are created
    /// if absent), then SELECT, INSERT and UPDATE on both tables.
    pub url_env: String,
    /// The table the changes are written to, `table` or `schema.table`: lowercase ASCII
    /// letters, digits and `_`, not starting with a digit, at most 63 characters each. Created
    /// if absent (the schema must exist). One table receives one subscription.
    pub table: String,
    /// The table holding the cursor, `table` or `schema.table` (default
    /// `safegrid_sink_cursor`, in the schema of `table`). Several sinks may share it: it has
    /// one row per table and subscription.
    #[serde(default)]
    pub cursor_table: Option<String>,
    /// Seconds to wait for a connection (default 10).
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
}

/// A plain PostgreSQL identifier: lowercase ASCII letters, digits and `_`, not starting with a
/// digit, 1 to 63 bytes. Lowercase only, so the name means the same quoted (as SafeGrid writes
/// it) and unquoted (as a department's `psql` user types it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identifier(String);

impl Identifier {
    fn parse(text: &str) -> Option<Identifier> {
        let mut chars = text.chars();
        let first = chars.next()?;
        let ok = (first.is_ascii_lowercase() || first == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && text.len() <= 63;
        ok.then(|| Identifier(text.to_owned()))
    }

    fn quoted(&self) -> String {
        // Parsing admits no `"`; quoting still keeps reserved words (`user`, `order`) usable.
        format!("\"{}\"", self.0)
    }
}

/// A table name, `table` or `schema.table`, parsed from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<Identifier>,
    table: Identifier,
}

impl TableName {
    /// Parses `table` or `schema.table`; anything else (quotes, spaces, upper case, a third
    /// part, SQL) is refused with an error that says what is allowed.
    pub fn parse(text: &str) -> Result<TableName, ConnectorError> {
        let refuse = || {
            ConnectorError::Config(
                "a table name must be `table` or `schema.table`: lowercase ASCII letters, \
                 digits and `_`, not starting with a digit, at most 63 characters each"
                    .to_owned(),
            )
        };
        let mut parts = text.split('.');
        let (first, second) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(refuse());
        }
        Ok(match (first, second) {
            (Some(table), None) => TableName {
                schema: None,
                table: Identifier::parse(table).ok_or_else(refuse)?,
            },
            (Some(schema), Some(table)) => TableName {
                schema: Some(Identifier::parse(schema).ok_or_else(refuse)?),
                table: Identifier::parse(table).ok_or_else(refuse)?,
            },
            _ => return Err(refuse()),
        })
    }

    /// The name as SQL, each part quoted.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.quoted(), self.table.quoted()),
            None => self.table.quoted(),
        }
    }

    /// `name` in this table's schema.
    fn sibling(&self, name: &str) -> Result<TableName, ConnectorError> {
        Ok(TableName {
            schema: self.schema.clone(),
            table: Identifier::parse(name).ok_or_else(|| {
                ConnectorError::Config(format!("`{name}` is not a plain table name"))
            })?,
        })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", schema.0, self.table.0),
            None => f.write_str(&self.table.0),
        }
    }
}

/// What opening a target needs: checked names and settings, no secret.
#[derive(Debug, Clone)]
pub(crate) struct PgPlan {
    pub url_env: String,
    pub table: TableName,
    pub cursor_table: TableName,
    pub subscription: String,
    pub connect_timeout: Duration,
}

impl PgPlan {
    pub(crate) fn new(config: &PgSinkConfig, subscription: &str) -> Result<PgPlan, ConnectorError> {
        if config.url_env.trim().is_empty() {
            return Err(ConnectorError::Config(
                "sink.postgres.url_env must name the environment variable holding the database URL"
                    .to_owned(),
            ));
        }
        let named = |key: &str, e: ConnectorError| match e {
            ConnectorError::Config(message) => ConnectorError::Config(format!("{key}: {message}")),
            other => other,
        };
        let table = TableName::parse(&config.table).map_err(|e| named("sink.postgres.table", e))?;
        let cursor_table = match &config.cursor_table {
            Some(name) => {
                TableName::parse(name).map_err(|e| named("sink.postgres.cursor_table", e))?
            }
            None => table.sibling(DEFAULT_CURSOR_TABLE)?,
        };
        if cursor_table == table {
            return Err(ConnectorError::Config(
                "sink.postgres.cursor_table must differ from sink.postgres.table".to_owned(),
            ));
        }
        if config.connect_timeout_seconds == Some(0) {
            return Err(ConnectorError::Config(
                "sink.postgres.connect_timeout_seconds must be at least 1".to_owned(),
            ));
        }
        Ok(PgPlan {
            url_env: config.url_env.clone(),
            table,
            cursor_table,
            subscription: subscription.to_owned(),
            connect_timeout: Duration::from_secs(config.connect_timeout_seconds.unwrap_or(10)),
        })
    }
}

/// SQLSTATEs whose message names objects (tables, columns, schemas, roles, constraints),
/// never a row's value.
const MESSAGES_THAT_NAME_OBJECTS: &[&str] = &[
    "28000", // invalid authorization (no such role, pg_hba refuses)
    "28P01", // wrong password
    "3D000", // unknown database
    "3F000", // unknown schema
    "42501", // permission denied
    "42703", // unknown column (an existing table of another shape)
    "42804", // type mismatch (an existing table of another shape)
    "42P01", // no such table
    "42P10", // no unique constraint for ON CONFLICT (an existing table without the key)
    "23502", // not-null violation (the message names the column; the detail, not kept, the row)
    "23514", // check violation (names the constraint)
];

fn pg_error(context: &str, err: sqlx::Error) -> ConnectorError {
    let message = crate::sql::postgres::redacted_message(&err, MESSAGES_THAT_NAME_OBJECTS);
    ConnectorError::Sink(format!("PostgreSQL: {context}: {message}"))
}

/// An open connection to the department's database, holding the sink's cursor.
#[derive(Debug)]
pub(crate) struct PgTarget {
    conn: PgConnection,
    /// The cursor row's key: the table as configured, and the subscription.
    table_key: String,
    subscription: String,
    table: String,
    cursor: Option<u64>,
    move_cursor_sql: String,
    upsert_sql: String,
}

impl PgTarget {
    /// Connects, creates the table and the cursor table if absent, refuses a table that
    /// already receives another subscription, and reads the cursor.
    pub(crate) async fn open(url: &Secret, plan: &PgPlan) -> Result<PgTarget, ConnectorError> {
        if crate::sql::Database::from_url(url.expose()).ok() != Some(crate::sql::Database::Postgres)
        {
            return Err(ConnectorError::Config(format!(
                "`{}` must hold a PostgreSQL URL (postgres://user:password@host:5432/db)",
                plan.url_env
            )));
        }
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|_| {
                ConnectorError::Config(format!(
                    "`{}` does not hold a valid PostgreSQL URL (postgres://user:password@host:5432/db)",
                    plan.url_env
                ))
            })?
            .application_name("safegrid-sink");
        let mut conn =
            tokio::time::timeout(plan.connect_timeout, PgConnection::connect_with(&options))
                .await
                .map_err(|_| ConnectorError::Sink("PostgreSQL: connecting timed out".to_owned()))?
                .map_err(|e| pg_error("connecting", e))?;
        let table = plan.table.quoted();
        let cursor_table = plan.cursor_table.quoted();
        let table_key = plan.table.to_string();
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
               id text PRIMARY KEY, \
               kind text NOT NULL, \
               seq bigint NOT NULL, \
               change text NOT NULL, \
               record jsonb, \
               subscription_id text NOT NULL, \
               delivery_id text NOT NULL, \
               received_at timestamptz NOT NULL DEFAULT now(), \
               CHECK (change IN ('upsert', 'delete') AND (record IS NULL) = (change = 'delete')))"
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| pg_error(&format!("creating {}", plan.table), e))?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {cursor_table} (\
               target_table text NOT NULL, \
               subscription_id text NOT NULL, \
               next_seq bigint, \
               updated_at timestamptz NOT NULL DEFAULT now(), \
               PRIMARY KEY (target_table, subscription_id))"
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| pg_error(&format!("creating {}", plan.cursor_table), e))?;

        let other: Option<String> = sqlx::query_scalar(&format!(
            "SELECT subscription_id FROM {cursor_table} \
             WHERE target_table = $1 AND subscription_id <> $2 LIMIT 1"
        ))
        .bind(&table_key)
        .bind(&plan.subscription)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| pg_error(&format!("reading {}", plan.cursor_table), e))?;
        if let Some(other) = other {
            return Err(ConnectorError::Config(format!(
                "table {} already receives subscription `{other}` (its cursor is in {}): give \
                 each subscription its own table, or delete that cursor row and empty the table \
                 to switch",
                plan.table, plan.cursor_table
            )));
        }
        sqlx::query(&format!(
            "INSERT INTO {cursor_table} (target_table, subscription_id, next_seq) \
             VALUES ($1, $2, NULL) ON CONFLICT (target_table, subscription_id) DO NOTHING"
        ))
        .bind(&table_key)
        .bind(&plan.subscription)
        .execute(&mut conn)
        .await
        .map_err(|e| pg_error(&format!("writing {}", plan.cursor_table), e))?;
        let cursor: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT next_seq FROM {cursor_table} WHERE target_table = $1 AND subscription_id = $2"
        ))
        .bind(&table_key)
        .bind(&plan.subscription)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg_error(&format!("reading {}", plan.cursor_table), e))?;
        let cursor = cursor
            .map(|cursor| {
                u64::try_from(cursor).map_err(|_| {
                    ConnectorError::Sink(format!(
                        "the cursor in {} is negative ({cursor}); it was changed by hand",
                        plan.cursor_table
                    ))
                })
            })
            .transpose()?;

        Ok(PgTarget {
            conn,
            table_key,
            subscription: plan.subscription.clone(),
            table: plan.table.to_string(),
            cursor,
            move_cursor_sql: format!(
                "UPDATE {cursor_table} SET next_seq = $1, updated_at = now() \
                 WHERE target_table = $2 AND subscription_id = $3 \
                   AND next_seq IS NOT DISTINCT FROM $4"
            ),
            upsert_sql: format!(
                "INSERT INTO {table} AS cur \
                   (id, kind, seq, change, record, subscription_id, delivery_id, received_at) \
                 SELECT x.id, x.kind, x.seq, x.change, \
                   CASE WHEN x.change = 'delete' THEN NULL ELSE x.record END, \
                   $2, x.delivery_id, now() \
                 FROM jsonb_to_recordset($1) AS x(id text, kind text, seq bigint, change text, \
                   record jsonb, delivery_id text) \
                 ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, seq = EXCLUDED.seq, \
                   change = EXCLUDED.change, record = EXCLUDED.record, \
                   subscription_id = EXCLUDED.subscription_id, \
                   delivery_id = EXCLUDED.delivery_id, received_at = EXCLUDED.received_at \
                 WHERE cur.seq < EXCLUDED.seq \
                 RETURNING cur.change"
            ),
        })
    }

    /// The committed cursor: the feed's changes after it are still to apply (`None`: no page
    /// committed yet).
    pub(crate) fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Applies `page` (asked after [`Self::cursor`], and checked by [`FeedPage::check`]) and
    /// moves the cursor to its `next`, in one transaction. Returns what was written; `page`
    /// of the result is left 0 for the caller.
    pub(crate) async fn apply(&mut self, page: &FeedPage) -> Result<PageApplied, ConnectorError> {
        let after = self.cursor;
        let (latest, superseded) = page.latest_per_entity();
        let rows: Vec<Value> = latest
            .iter()
            .map(|item| {
                json!({
                    "id": item.id,
                    "kind": item.kind,
                    "seq": item.seq,
                    "change": item.change.as_str(),
                    "record": match item.change {
                        Change::Upsert => item.record.clone().unwrap_or(Value::Null),
                        Change::Delete => Value::Null,
                    },
                    "delivery_id": item.delivery_id,
                })
            })
            .collect();
        let to_i64 = |seq: u64| {
            i64::try_from(seq).map_err(|_| {
                ConnectorError::Rest(format!("the feed's sequence {seq} does not fit a bigint"))
            })
        };
        let next = to_i64(page.next)?;
        let after_i64 = after.map(to_i64).transpose()?;

        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(|e| pg_error("starting a transaction", e))?;
        // The cursor first: its row lock serialises two runs of this sink, and the
        // compare-and-set makes the second one stop instead of applying the page again.
        let moved = sqlx::query(&self.move_cursor_sql)
            .bind(next)
            .bind(&self.table_key)
            .bind(&self.subscription)
            .bind(after_i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_error("moving the cursor", e))?
            .rows_affected();
        if moved != 1 {
            let _ = tx.rollback().await;
            return Err(ConnectorError::Sink(format!(
                "the cursor of {} moved while this run held it: another run of this sink is \
                 going on (run one at a time); nothing of this page was written",
                self.table
            )));
        }
        let mut applied = PageApplied {
            page: 0,
            changes: page.items.len(),
            upserts: 0,
            deletes: 0,
            skipped: superseded,
            cursor: page.next,
        };
        if !rows.is_empty() {
            let written = rows.len();
            let returned = sqlx::query(&self.upsert_sql)
                .bind(Value::Array(rows))
                .bind(&self.subscription)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| pg_error(&format!("writing a page to {}", self.table), e))?;
            for row in &returned {
                let change: String = row
                    .try_get(0)
                    .map_err(|e| pg_error("reading what was written", e))?;
                if change == Change::Delete.as_str() {
                    applied.deletes += 1;
                } else {
                    applied.upserts += 1;
                }
            }
            applied.skipped += written - returned.len();
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a page", e))?;
        self.cursor = Some(page.next);
        Ok(applied)
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }
}
