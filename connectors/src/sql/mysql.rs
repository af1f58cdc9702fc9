//! Pages from the MySQL family: MySQL, MariaDB, TiDB and OceanBase (MySQL mode), which speak
//! the same protocol, through sqlx's MySQL driver.
//!
//! Guarantees:
//! - Before a row is read, the watermark column must be an integer, DECIMAL, DATE, DATETIME or
//!   TIMESTAMP column: types whose order is the order in which rows change. Any other type
//!   stops the run with `sql_source`, naming the column and its type: FLOAT and DOUBLE are
//!   inexact, TIME wraps around every day, text sorts `2026-11-10` before `2026-11-9`. The key
//!   column may also be text (CHAR, VARCHAR, TEXT, or text in a binary collation).
//! - Pages resume with `wm >= W AND (wm > W OR key > K)` (an index on the watermark serves
//!   it), the checkpoint bound in the column's own type: integers as integers, DECIMAL, DATE
//!   and date-times through `CAST`, so no comparison goes through floating point. A checkpoint
//!   that no longer reads back as the column's type stops the run (`connector_state`) rather
//!   than reading nothing.
//! - The session: time zone UTC (TIMESTAMP values are instants, and the checkpoint is written
//!   and read back in UTC), character set utf8mb4 (characters outside the Basic Multilingual
//!   Plane, such as 𠮷, round-trip), the server's SQL mode left as the department set it (so
//!   `||` in `source.query` means what it means in the department's own client), and the
//!   cleartext password plugin refused: the driver speaks no TLS to these servers, so the
//!   password only ever travels hashed or encrypted.
//! - Every column becomes a JSON value:
//!
//!   | column type | JSON |
//!   |---|---|
//!   | TINYINT … BIGINT, signed or UNSIGNED (BOOLEAN is TINYINT(1)), YEAR, BIT | number |
//!   | FLOAT, DOUBLE | number |
//!   | DECIMAL | string of its exact digits (`"1234.50"`), never through a float |
//!   | DATE | `"2026-11-01"` |
//!   | DATETIME | `"2026-11-01T09:00:00.123456"`, no zone: the model reads it as China time |
//!   | TIMESTAMP | `"2026-11-01T01:00:00.123456+00:00"`, an instant |
//!   | TIME | `"-12:30:00"`, as MySQL writes it |
//!   | CHAR, VARCHAR, TEXT, ENUM, SET | string |
//!   | JSON (MySQL) | nested JSON; MariaDB's JSON is LONGTEXT and arrives as a string |
//!   | BINARY, VARBINARY, BLOB | string when valid UTF-8 (text with a `_bin` collation arrives as these), otherwise `\x` and hex |
//!
//! - A cell that does not convert (a zero date `0000-00-00`, a day that does not exist) becomes
//!   a `cell_error` of its column whose message names the column's type, never the value.
//! - An error of the server carries its error number and, for the errors that name objects
//!   (unknown table, column or database, access denied, a syntax error in `source.query`), its
//!   message; other messages are left out, since they may quote a row's value.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow,
    MySqlTypeInfo, MySqlValueRef,
};
use sqlx::query::Query;
use sqlx::types::JsonValue;
use sqlx::{Column, Connection, Decode, Executor, Row, Statement, Type, TypeInfo, ValueRef};

use super::{Checkpoint, PageRow, ReadPlan, Relation};
use crate::config::Secret;
use crate::mapping::CellError;
use crate::ConnectorError;

/// Quotes one identifier for MySQL.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// How a watermark or key column orders its values, and so how the checkpoint is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordered {
    Signed,
    Unsigned,
    Decimal,
    Date,
    /// DATETIME and TIMESTAMP (compared in the session's UTC).
    DateTime,
    /// Character strings, compared in the column's collation.
    Text,
}

impl Ordered {
    fn of(ty: &MySqlTypeInfo) -> Option<Ordered> {
        if <i64 as Type<MySql>>::compatible(ty) {
            return Some(Ordered::Signed);
        }
        if <u64 as Type<MySql>>::compatible(ty) && !matches!(ty.name(), "BIT" | "YEAR") {
            return Some(Ordered::Unsigned);
        }
        match ty.name() {
            "DECIMAL" => Some(Ordered::Decimal),
            "DATE" => Some(Ordered::Date),
            "DATETIME" | "TIMESTAMP" => Some(Ordered::DateTime),
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "BINARY"
            | "VARBINARY" => Some(Ordered::Text),
            _ => None,
        }
    }

    /// The placeholder that reads `text` back as this type.
    fn placeholder(self, text: &str) -> String {
        match self {
            Ordered::Signed | Ordered::Unsigned | Ordered::Text => "?".to_owned(),
            Ordered::Decimal => {
                // The scale of the text itself, so that no digit is rounded away and the
                // integer part keeps all the room DECIMAL allows.
                let scale = text.split_once('.').map_or(0, |(_, f)| f.len()).min(30);
                format!("CAST(? AS DECIMAL(65,{scale}))")
            }
            Ordered::Date => "CAST(? AS DATE)".to_owned(),
            Ordered::DateTime => "CAST(? AS DATETIME(6))".to_owned(),
        }
    }

    /// Whether the checkpoint goes through a `CAST`, which yields NULL on text it cannot read.
    fn is_cast(self) -> bool {
        matches!(self, Ordered::Decimal | Ordered::Date | Ordered::DateTime)
    }

    /// The checkpoint text as the value to bind; `None` when it is not of this type.
    fn bound(self, text: &str) -> Option<Bound> {
        match self {
            Ordered::Signed => text.parse().ok().map(Bound::Signed),
            Ordered::Unsigned => text.parse().ok().map(Bound::Unsigned),
            _ => Some(Bound::Text(text.to_owned())),
        }
    }
}

/// A checkpoint value ready to bind.
#[derive(Debug, Clone)]
enum Bound {
    Signed(i64),
    Unsigned(u64),
    Text(String),
}

fn bind<'q>(
    query: Query<'q, MySql, MySqlArguments>,
    value: &'q Bound,
) -> Query<'q, MySql, MySqlArguments> {
    match value {
        Bound::Signed(v) => query.bind(*v),
        Bound::Unsigned(v) => query.bind(*v),
        Bound::Text(v) => query.bind(v.as_str()),
    }
}

/// MySQL error numbers whose message names objects (tables, columns, databases, accounts)
/// or quotes the configured query, never a row's value.
const MESSAGES_THAT_NAME_OBJECTS: &[u16] = &[
    1044, // access denied to a database
    1045, // access denied (user name or password)
    1049, // unknown database
    1054, // unknown column
    1060, // duplicate column name (in source.query)
    1064, // syntax error (in source.query)
    1142, // command denied on a table
    1143, // command denied on a column
    1146, // no such table
];

/// What to fix, for the errors a misconfigured connector meets.
fn hint(number: u16) -> &'static str {
    match number {
        1044 | 1142 | 1143 => "; grant the URL's user SELECT on the table or view",
        1045 => "; check the user name and password in the URL, and that this user may connect from SafeGrid's address",
        1049 => "; check the database named in the URL's path",
        1054 => "; check source.watermark_column, source.key_column and the columns of source.query",
        1060 => "; give every column of source.query its own name",
        1064 => "; source.query must be one SELECT that this server accepts",
        1146 => "; check source.table (or source.query) and the database named in the URL",
        _ => "; look the number up in the server's error reference",
    }
}

fn mysql_error(context: &str, err: sqlx::Error) -> ConnectorError {
    let message = match &err {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(e) if MESSAGES_THAT_NAME_OBJECTS.contains(&e.number()) => {
                format!(
                    "MySQL error {}: {}{}",
                    e.number(),
                    e.message(),
                    hint(e.number())
                )
            }
            Some(e) => format!(
                "MySQL error {} (SQLSTATE {}){}",
                e.number(),
                e.code().unwrap_or("?"),
                hint(e.number())
            ),
            None => "the server reported an error".to_owned(),
        },
        sqlx::Error::Io(e) => format!(
            "the server could not be reached ({e}); check the host and port in the URL and \
             that the server accepts connections from this machine"
        ),
        sqlx::Error::Tls(_) => "the URL or the server asks for TLS, which SafeGrid does not \
             speak to MySQL-family servers; connect over a private network or a tunnel and \
             remove ssl-mode from the URL"
            .to_owned(),
        // A decoding error may quote the value it could not decode.
        sqlx::Error::ColumnDecode { index, .. } => {
            format!("column {index} could not be decoded")
        }
        sqlx::Error::Decode(_) => "a value could not be decoded".to_owned(),
        // The remaining errors come from the driver itself (protocol, configuration) and
        // carry no row values.
        other => other.to_string(),
    };
    ConnectorError::Sql(format!("{context}: {message}"))
}

/// An open session reading one table or query of a MySQL-family server.
#[derive(Debug)]
pub(crate) struct MySqlReader {
    conn: MySqlConnection,
    plan: ReadPlan,
    /// `SELECT src.*, CAST(wm AS CHAR), CAST(key AS CHAR) FROM (…) AS src WHERE … not null`.
    select: String,
    order: String,
    watermark: Ordered,
    key: Ordered,
    /// The columns' type names as the server describes them, for error messages.
    watermark_type: String,
    key_type: String,
    /// Whether this run has checked that the checkpoint reads back as the columns' types.
    checkpoint_checked: bool,
}

impl MySqlReader {
    pub(crate) async fn open(url: &Secret, plan: ReadPlan) -> Result<MySqlReader, ConnectorError> {
        let options = MySqlConnectOptions::from_str(url.expose())
            .map_err(|_| {
                ConnectorError::Config(
                    "the database URL is not a valid MySQL URL \
                     (mysql://user:password@host:3306/database)"
                        .to_owned(),
                )
            })?
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_owned()))
            .set_names(true)
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .enable_cleartext_plugin(false);
        let mut conn = tokio::time::timeout(
            plan.connect_timeout,
            MySqlConnection::connect_with(&options),
        )
        .await
        .map_err(|_| ConnectorError::Sql("connecting timed out".to_owned()))?
        .map_err(|e| mysql_error("connecting", e))?;

        let base = match &plan.relation {
            Relation::Table(parts) => {
                let quoted: Vec<String> = parts.iter().map(|p| quote_ident(p)).collect();
                format!("SELECT * FROM {}", quoted.join("."))
            }
            Relation::Query(query) => query.clone(),
        };
        let wm = quote_ident(&plan.watermark_column);
        let key = quote_ident(&plan.key_column);

        // The columns' types, from the server's description of the statement (nothing runs).
        let describe = format!("SELECT src.{wm}, src.{key} FROM ({base}) AS src");
        let statement = (&mut conn)
            .prepare(&describe)
            .await
            .map_err(|e| mysql_error("reading the watermark and key columns", e))?;
        let types: Vec<MySqlTypeInfo> = statement
            .columns()
            .iter()
            .map(|c| c.type_info().clone())
            .collect();
        let [wm_type, key_type] = types.as_slice() else {
            return Err(ConnectorError::Sql(
                "the server did not describe the watermark and key columns".to_owned(),
            ));
        };
        let watermark = match Ordered::of(wm_type) {
            Some(Ordered::Text) | None => {
                return Err(ConnectorError::Sql(format!(
                    "the watermark column `{}` is {}, which cannot serve as a watermark: use a \
                     column that grows whenever a row is inserted or changed, of an integer, \
                     DECIMAL, DATE, DATETIME or TIMESTAMP type (FLOAT is inexact, TIME wraps \
                     every day, text sorts 2026-11-10 before 2026-11-9)",
                    plan.watermark_column,
                    wm_type.name()
                )))
            }
            Some(ordered) => ordered,
        };
        let Some(key_ordered) = Ordered::of(key_type) else {
            return Err(ConnectorError::Sql(format!(
                "the key column `{}` is {}, which cannot order rows: use the primary key, an \
                 integer, DECIMAL, date-time or text column",
                plan.key_column,
                key_type.name()
            )));
        };

        Ok(MySqlReader {
            conn,
            select: format!(
                "SELECT src.*, CAST(src.{wm} AS CHAR) AS safegrid_watermark, \
                 CAST(src.{key} AS CHAR) AS safegrid_key FROM ({base}) AS src \
                 WHERE src.{wm} IS NOT NULL AND src.{key} IS NOT NULL"
            ),
            order: format!("ORDER BY src.{wm}, src.{key}"),
            plan,
            watermark,
            key: key_ordered,
            watermark_type: wm_type.name().to_owned(),
            key_type: key_type.name().to_owned(),
            checkpoint_checked: false,
        })
    }

    /// The checkpoint as values of the columns' types, checked once per run with the server
    /// when it goes through a `CAST`.
    async fn resume_values(
        &mut self,
        last: &Checkpoint,
    ) -> Result<(Bound, Bound, String, String), ConnectorError> {
        let wm = self
            .watermark
            .bound(&last.watermark)
            .ok_or_else(|| self.unreadable_checkpoint("watermark"))?;
        let key = self
            .key
            .bound(&last.key)
            .ok_or_else(|| self.unreadable_checkpoint("key"))?;
        let wm_placeholder = self.watermark.placeholder(&last.watermark);
        let key_placeholder = self.key.placeholder(&last.key);
        if !self.checkpoint_checked && (self.watermark.is_cast() || self.key.is_cast()) {
            let sql = format!("SELECT ({wm_placeholder}) IS NULL, ({key_placeholder}) IS NULL");
            let row = bind(bind(sqlx::query(&sql), &wm), &key)
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| mysql_error("checking the checkpoint", e))?;
            let wm_null: i64 = row
                .try_get_unchecked(0)
                .map_err(|e| mysql_error("checking the checkpoint", e))?;
            let key_null: i64 = row
                .try_get_unchecked(1)
                .map_err(|e| mysql_error("checking the checkpoint", e))?;
            if wm_null != 0 {
                return Err(self.unreadable_checkpoint("watermark"));
            }
            if key_null != 0 {
                return Err(self.unreadable_checkpoint("key"));
            }
        }
        self.checkpoint_checked = true;
        Ok((wm, key, wm_placeholder, key_placeholder))
    }

    fn unreadable_checkpoint(&self, what: &str) -> ConnectorError {
        let (column, type_name) = if what == "key" {
            (&self.plan.key_column, &self.key_type)
        } else {
            (&self.plan.watermark_column, &self.watermark_type)
        };
        ConnectorError::State {
            path: self.plan.checkpoint_path.clone(),
            message: format!(
                "its {what} does not read back as column `{column}` ({type_name}): the column \
                 changed since the checkpoint was written; delete the file to read the source \
                 again from the start"
            ),
        }
    }

    pub(crate) async fn page(
        &mut self,
        after: Option<&Checkpoint>,
    ) -> Result<Vec<PageRow>, ConnectorError> {
        let page_size = self.plan.page_size;
        let rows = match after {
            None => {
                let sql = format!("{} {} LIMIT ?", self.select, self.order);
                sqlx::query(&sql)
                    .bind(page_size)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| mysql_error("reading a page", e))?
            }
            Some(last) => {
                let (wm, key, w, k) = self.resume_values(last).await?;
                let (wm_col, key_col) = (
                    quote_ident(&self.plan.watermark_column),
                    quote_ident(&self.plan.key_column),
                );
                let sql = format!(
                    "{} AND src.{wm_col} >= {w} AND (src.{wm_col} > {w} OR src.{key_col} > {k}) \
                     {} LIMIT ?",
                    self.select, self.order
                );
                bind(bind(bind(sqlx::query(&sql), &wm), &wm), &key)
                    .bind(page_size)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| mysql_error("reading a page", e))?
            }
        };
        rows.iter().map(page_row).collect()
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// One result row: every column but the last two (the position) as JSON.
fn page_row(row: &MySqlRow) -> Result<PageRow, ConnectorError> {
    let columns = row.columns();
    let Some(data_columns) = columns.len().checked_sub(2) else {
        return Err(ConnectorError::Sql(
            "a row came back without its position columns".to_owned(),
        ));
    };
    let position_text = |index: usize, what: &str| -> Result<String, ConnectorError> {
        let raw = row
            .try_get_raw(index)
            .map_err(|e| mysql_error("decoding a row", e))?;
        <&str as Decode<MySql>>::decode(raw)
            .map(str::to_owned)
            .map_err(|_| {
                ConnectorError::Sql(format!(
                    "the {what} of a row is not UTF-8 text; use an integer, date-time or text \
                     column in a character set, not binary bytes"
                ))
            })
    };
    let position = Checkpoint {
        watermark: position_text(data_columns, "watermark")?,
        key: position_text(data_columns + 1, "key")?,
    };
    let mut fields = Map::new();
    let mut cell_errors = Vec::new();
    for column in &columns[..data_columns] {
        let raw = row
            .try_get_raw(column.ordinal())
            .map_err(|e| mysql_error("decoding a row", e))?;
        let value = match cell_json(raw) {
            Ok(value) => value,
            Err(message) => {
                cell_errors.push(CellError {
                    column: column.name().to_owned(),
                    code: "cell_error",
                    message,
                });
                Value::Null
            }
        };
        fields.insert(column.name().to_owned(), value);
    }
    Ok(PageRow {
        fields,
        cell_errors,
        position,
    })
}

/// One cell as JSON (see the module's table). The error names the type, never the value:
/// the driver's own decoding messages may quote it, so they are not passed on.
fn cell_json(raw: MySqlValueRef<'_>) -> Result<Value, String> {
    let ty = raw.type_info().into_owned();
    let type_name = ty.name().to_owned();
    let unreadable = |what: &str| format!("the {type_name} value {what}; correct it at the source");
    if raw.is_null() {
        // The driver reports MySQL's zero date as NULL, but the server did send a value: it
        // is a date that does not exist, not an empty cell.
        return match <&[u8] as Decode<MySql>>::decode(raw) {
            Ok(_) => Err(unreadable("is not a real date (MySQL's zero date?)")),
            Err(_) => Ok(Value::Null),
        };
    }
    if <i64 as Type<MySql>>::compatible(&ty) {
        return <i64 as Decode<MySql>>::decode(raw)
            .map(Value::from)
            .map_err(|_| unreadable("is not an integer"));
    }
    if <u64 as Type<MySql>>::compatible(&ty) || matches!(type_name.as_str(), "YEAR" | "BIT") {
        return <u64 as Decode<MySql>>::decode(raw)
            .map(Value::from)
            .map_err(|_| unreadable("is not an integer"));
    }
    match type_name.as_str() {
        "FLOAT" | "DOUBLE" => <f64 as Decode<MySql>>::decode(raw)
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| unreadable("is not a finite number")),
        "DECIMAL" => <&str as Decode<MySql>>::decode(raw)
            .map(|digits| Value::String(digits.to_owned()))
            .map_err(|_| unreadable("is not a decimal number")),
        "DATE" => <NaiveDate as Decode<MySql>>::decode(raw)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| unreadable("is not a real date (MySQL's zero date?)")),
        "DATETIME" => <NaiveDateTime as Decode<MySql>>::decode(raw)
            .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
            .map_err(|_| unreadable("is not a real date and time (MySQL's zero date?)")),
        "TIMESTAMP" => <DateTime<Utc> as Decode<MySql>>::decode(raw)
            .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
            .map_err(|_| unreadable("is not a real instant (a zero timestamp?)")),
        "TIME" => <sqlx::mysql::types::MySqlTime as Decode<MySql>>::decode(raw)
            .map(|t| {
                // `MySqlTime::is_negative` answers the opposite in sqlx 0.8.6; the sign's own
                // method is right.
                let sign = if t.sign().is_negative() { "-" } else { "" };
                let mut text = format!(
                    "{sign}{:02}:{:02}:{:02}",
                    t.hours(),
                    t.minutes(),
                    t.seconds()
                );
                if t.microseconds() != 0 {
                    text.push_str(&format!(".{:06}", t.microseconds()));
                }
                Value::String(text)
            })
            .map_err(|_| unreadable("is not a time")),
        "JSON" => <JsonValue as Decode<MySql>>::decode(raw).map_err(|_| unreadable("is not JSON")),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            <&str as Decode<MySql>>::decode(raw)
                .map(|text| Value::String(text.to_owned()))
                .map_err(|_| unreadable("is not valid UTF-8 text"))
        }
        "NULL" => Ok(Value::Null),
        // Binary strings, and text in a binary collation, which the protocol does not tell
        // apart; GEOMETRY is binary too.
        _ => <&[u8] as Decode<MySql>>::decode(raw)
            .map(|bytes| match std::str::from_utf8(bytes) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => Value::String(format!("\\x{}", hex::encode(bytes))),
            })
            .map_err(|_| unreadable("could not be read")),
    }
}
