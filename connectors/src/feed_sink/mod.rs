//! Sink mode: a department without a web server of its own receives a subscription's changes by
//! pulling the broker's feed (`GET /v1/subscriptions/{id}/feed`) into a table of its own
//! PostgreSQL — the reverse of the SQL pull connector.
//!
//! Guarantees:
//! - Each page of the feed is applied in ONE PostgreSQL transaction together with the cursor
//!   (the feed's `next`): a crash at any point leaves either the whole page and its cursor, or
//!   neither, so a change is never lost and never applied twice. The next run resumes from the
//!   committed cursor; the very first run asks without `after`, so the broker starts from
//!   where the subscription started.
//! - A row only moves forward: an entity's row is replaced only by a change with a higher `seq`
//!   (an older or repeated change is counted as `skipped`, never applied).
//! - A `delete` keeps the row as a tombstone: `change = 'delete'` and `record` NULL, so the
//!   personal data is gone at once, the department's system can see what was withdrawn, and an
//!   older upsert replayed later (a cursor reset by hand) cannot bring the record back.
//! - One table receives one subscription (its `seq`s are what orders the rows); a second
//!   subscription pointed at the same table is refused before anything is written.
//! - A run stops when the feed's `next` stops advancing, or after `max_pages` pages (the next
//!   run continues from the cursor). Two runs of the same sink at once cannot both apply a page:
//!   the cursor is moved with a compare-and-set, and the loser stops with an error.
//! - The broker token and the database URL are secrets: neither is ever printed, logged or put
//!   in an error. Table names are parsed into plain SQL identifiers; nothing else from the
//!   configuration or the feed is interpolated into SQL.

pub mod feed;
pub mod postgres;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{secret_from_env, FeedSinkConfig, Secret};
use crate::ConnectorError;

pub use feed::{FeedSource, HttpFeed};
pub use postgres::{PgSinkConfig, TableName};

/// Changes asked for per request unless `sink.page_size` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// The most the feed hands out per request.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// `[sink]`: which subscription to receive, and where to write it.
///
/// ```toml
/// department = "sifa"
/// name = "sifa-disputes-to-pg"
///
/// [sink]
/// subscription = "sub_…"
///
/// [sink.postgres]
/// url_env = "SIFA_PG_URL"
/// table = "safegrid_disputes"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The subscription to receive: the `id` that `POST /v1/subscriptions` answered
    /// (`sub_…`). It must belong to the department of the token the run uses.
    pub subscription: String,
    /// Changes asked for per request (default 500, at most 1000). Each page is one
    /// PostgreSQL transaction.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Attempts per request, the first included, while the broker is busy (HTTP 429, 502,
    /// 503, 504) or unreachable (default 5). Any other error stops the run at once.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Longest wait between two attempts, in seconds (default 60). The broker's
    /// `Retry-After` is honoured; one longer than this stops the run (run it again later)
    /// rather than retrying early.
    #[serde(default)]
    pub max_retry_wait_seconds: Option<u64>,
    /// Seconds before one request to the broker times out (default 60).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Most pages one run applies (default 10000); the next run continues from the cursor.
    #[serde(default)]
    pub max_pages: Option<u64>,
    /// The department's PostgreSQL database and table.
    pub postgres: PgSinkConfig,
}

/// What a feed item asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The entity is (still) visible to the subscriber: `record` is its profile.
    Upsert,
    /// The entity is gone for the subscriber (deleted, out of scope, agreement withdrawn).
    Delete,
}

impl Change {
    /// The word stored in the table's `change` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Upsert => "upsert",
            Change::Delete => "delete",
        }
    }
}

/// One change of the feed. `record` is personal data: `Debug` leaves it out.
#[derive(Clone, PartialEq, Deserialize)]
pub struct FeedItem {
    pub delivery_id: String,
    pub subscription_id: String,
    pub seq: u64,
    pub change: Change,
    /// `event`, `resident`, `house` or `organization`.
    pub kind: String,
    /// The unified id (`e_…`, `r_…`, `h_…`, `o_…`).
    pub id: String,
    /// The profile as this subscriber may see it; absent or null for a delete.
    #[serde(default)]
    pub record: Option<Value>,
}

impl std::fmt::Debug for FeedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedItem")
            .field("delivery_id", &self.delivery_id)
            .field("subscription_id", &self.subscription_id)
            .field("seq", &self.seq)
            .field("change", &self.change)
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("record", &self.record.as_ref().map(|_| "[personal data]"))
            .finish()
    }
}

/// One answer of the feed: the changes after the asked-for sequence, in commit order, and the
/// sequence to ask after next time (past changes this subscriber may not see, so it can be
/// beyond the last item's `seq`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    pub next: u64,
}

/// Longest unified id or kind the sink accepts from the feed.
const MAX_ID_LEN: usize = 128;

impl FeedPage {
    /// Checks that the page continues the feed after `after` (`None`: the first page, asked
    /// without `after`) as the contract says: items of `subscription`, strictly increasing
    /// `seq`s all after `after`, a `next` at or past the last of them (and not before `after`),
    /// an upsert with a record. A page that does not is refused whole (nothing of it is
    /// applied); the error names `seq`s and fields, never a record's content.
    pub fn check(&self, after: Option<u64>, subscription: &str) -> Result<(), ConnectorError> {
        let refuse = |what: String| {
            Err(ConnectorError::Rest(format!(
                "the broker's feed answered a page the sink cannot apply: {what}"
            )))
        };
        if let Some(after) = after.filter(|after| self.next < *after) {
            return refuse(format!("next = {} is before the cursor {after}", self.next));
        }
        if i64::try_from(self.next).is_err() {
            return refuse(format!("next = {} does not fit a bigint", self.next));
        }
        let mut last = after;
        for item in &self.items {
            if item.subscription_id != subscription {
                return refuse(format!(
                    "seq {} belongs to another subscription than `{subscription}`",
                    item.seq
                ));
            }
            if let Some(last) = last.filter(|last| item.seq <= *last) {
                return refuse(format!(
                    "seq {} does not follow {last} (items must be in commit order, after the \
                     cursor)",
                    item.seq
                ));
            }
            last = Some(item.seq);
            if item.id.is_empty() || item.id.len() > MAX_ID_LEN {
                return refuse(format!("seq {} has no usable id", item.seq));
            }
            if item.kind.is_empty() || item.kind.len() > MAX_ID_LEN {
                return refuse(format!("seq {} has no usable kind", item.seq));
            }
            if item.change == Change::Upsert && !matches!(item.record, Some(Value::Object(_))) {
                return refuse(format!("seq {} is an upsert without a record", item.seq));
            }
        }
        if let Some(last) = last.filter(|last| self.next < *last) {
            return refuse(format!(
                "next = {} is before the last item's seq {last}",
                self.next
            ));
        }
        Ok(())
    }

    /// The items to write: for an entity that changed more than once in this page, only its
    /// last change (the earlier ones are superseded). Returns them and how many were dropped.
    pub(crate) fn latest_per_entity(&self) -> (Vec<&FeedItem>, usize) {
        let mut last_of: HashMap<&str, usize> = HashMap::new();
        for (i, item) in self.items.iter().enumerate() {
            last_of.insert(item.id.as_str(), i);
        }
        let latest: Vec<&FeedItem> = self
            .items
            .iter()
            .enumerate()
            .filter(|(i, item)| last_of.get(item.id.as_str()) == Some(i))
            .map(|(_, item)| item)
            .collect();
        let superseded = self.items.len() - latest.len();
        (latest, superseded)
    }
}

/// What one committed page did; handed to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageApplied {
    /// 1-based number of the page in this run.
    pub page: usize,
    /// Changes the page held.
    pub changes: usize,
    /// Upserts written.
    pub upserts: usize,
    /// Deletes written (tombstones).
    pub deletes: usize,
    /// Changes not written: superseded in the same page, or the table already held the same
    /// or a later `seq` of that entity.
    pub skipped: usize,
    /// The cursor committed with the page (the page's `next`).
    pub cursor: u64,
}

/// What one run did. Serializable, so the command line can print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    pub connector: String,
    pub department: String,
    pub subscription: String,
    /// The table written, as configured.
    pub table: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The cursor the run started from; `null` before the first page was ever committed.
    pub cursor_from: Option<u64>,
    /// The cursor committed last: the next run asks for the changes after it.
    pub cursor: Option<u64>,
    /// Pages committed (an empty page whose `next` moved counts: it moves the cursor).
    pub pages: usize,
    /// Changes received.
    pub changes: usize,
    pub upserts: usize,
    pub deletes: usize,
    pub skipped: usize,
    /// Requests retried after the broker was busy or unreachable.
    pub retries: usize,
    /// False when the run stopped at `max_pages` with the feed still advancing.
    pub caught_up: bool,
}

impl SinkReport {
    fn count(&mut self, page: &PageApplied) {
        self.pages += 1;
        self.changes += page.changes;
        self.upserts += page.upserts;
        self.deletes += page.deletes;
        self.skipped += page.skipped;
        self.cursor = Some(page.cursor);
    }
}

/// A sink connector ready to run: its configuration checked and its names parsed.
#[derive(Debug, Clone)]
pub struct FeedSink {
    name: String,
    department: String,
    subscription: String,
    page_size: u32,
    max_attempts: u32,
    max_retry_wait: Duration,
    timeout: Duration,
    max_pages: u64,
    target: postgres::PgPlan,
}

/// Checks a subscription id before it goes into the feed's URL path.
fn check_subscription(id: &str) -> Result<(), ConnectorError> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ConnectorError::Config(
            "sink.subscription must be the subscription's id as the broker answered it \
             (`sub_…`: letters, digits, `_` and `-`)"
                .to_owned(),
        ));
    }
    Ok(())
}

impl FeedSink {
    /// Checks `config` (the department, the name, the subscription id, the bounds, the table
    /// names) and builds the sink.
    pub fn new(config: &FeedSinkConfig) -> Result<FeedSink, ConnectorError> {
        config.check()?;
        FeedSink::from_section(config)
    }

    /// Builds the sink from a configuration whose department and name are already checked.
    pub(crate) fn from_section(config: &FeedSinkConfig) -> Result<FeedSink, ConnectorError> {
        let sink = &config.sink;
        check_subscription(&sink.subscription)?;
        let page_size = sink.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ConnectorError::Config(format!(
                "sink.page_size must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let max_attempts = sink.max_attempts.unwrap_or(5);
        if max_attempts == 0 {
            return Err(ConnectorError::Config(
                "sink.max_attempts must be at least 1".to_owned(),
            ));
        }
        let max_pages = sink.max_pages.unwrap_or(10_000);
        if max_pages == 0 {
            return Err(ConnectorError::Config(
                "sink.max_pages must be at least 1".to_owned(),
            ));
        }
        if sink.timeout_seconds == Some(0) {
            return Err(ConnectorError::Config(
                "sink.timeout_seconds must be at least 1".to_owned(),
            ));
        }
        Ok(FeedSink {
            name: config.name(),
            department: config.department.clone(),
            subscription: sink.subscription.clone(),
            page_size,
            max_attempts,
            max_retry_wait: Duration::from_secs(sink.max_retry_wait_seconds.unwrap_or(60)),
            timeout: Duration::from_secs(sink.timeout_seconds.unwrap_or(60)),
            max_pages,
            target: postgres::PgPlan::new(&sink.postgres, &sink.subscription)?,
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subscription received.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The table written.
    pub fn table(&self) -> &TableName {
        &self.target.table
    }

    /// Applies the feed from the cursor stored in the database until it stops advancing (or
    /// `max_pages`), one transaction per page. The database URL comes from the environment
    /// variable `sink.postgres.url_env`. `progress` is called after each committed page.
    ///
    /// An error stops the run; every page committed before it stays committed with its cursor.
    pub async fn run(
        &self,
        feed: &mut dyn FeedSource,
        progress: &mut (dyn FnMut(&PageApplied) + Send),
    ) -> Result<SinkReport, ConnectorError> {
        let url = secret_from_env(&self.target.url_env)?;
        self.run_with_database(&url, feed, progress).await
    }

    /// [`Self::run`] with the database URL given rather than read from the environment.
    pub async fn run_with_database(
        &self,
        database_url: &Secret,
        feed: &mut dyn FeedSource,
        progress: &mut (dyn FnMut(&PageApplied) + Send),
    ) -> Result<SinkReport, ConnectorError> {
        let started_at = Utc::now();
        let mut target = postgres::PgTarget::open(database_url, &self.target).await?;
        let cursor_from = target.cursor();
        let mut report = SinkReport {
            connector: self.name.clone(),
            department: self.department.clone(),
            subscription: self.subscription.clone(),
            table: self.target.table.to_string(),
            started_at,
            finished_at: started_at,
            cursor_from,
            cursor: cursor_from,
            pages: 0,
            changes: 0,
            upserts: 0,
            deletes: 0,
            skipped: 0,
            retries: 0,
            caught_up: false,
        };
        let result = self
            .apply_pages(&mut target, feed, progress, &mut report)
            .await;
        report.retries = feed.retries();
        // Closing politely is best effort: every page is already committed.
        target.close().await;
        result?;
        report.finished_at = Utc::now();
        Ok(report)
    }

    async fn apply_pages(
        &self,
        target: &mut postgres::PgTarget,
        feed: &mut dyn FeedSource,
        progress: &mut (dyn FnMut(&PageApplied) + Send),
        report: &mut SinkReport,
    ) -> Result<(), ConnectorError> {
        loop {
            if report.pages as u64 >= self.max_pages {
                tracing::info!(
                    connector = %self.name,
                    pages = report.pages,
                    cursor = report.cursor,
                    "sink stopped at max_pages; the next run continues from the cursor"
                );
                return Ok(());
            }
            let after = target.cursor();
            let page = feed.page(after, self.page_size).await?;
            page.check(after, &self.subscription)?;
            if Some(page.next) == after {
                // Nothing past the cursor (a page with items always moves `next`, see check).
                report.caught_up = true;
                return Ok(());
            }
            let mut applied = target.apply(&page).await?;
            applied.page = report.pages + 1;
            report.count(&applied);
            tracing::info!(
                connector = %self.name,
                page = applied.page,
                changes = applied.changes,
                upserts = applied.upserts,
                deletes = applied.deletes,
                skipped = applied.skipped,
                cursor = applied.cursor,
                "sink page committed"
            );
            progress(&applied);
        }
    }
}

/// Runs the sink of `config` against a broker: builds the feed client for `broker_url`
/// (`https://…`; plain `http://` only to a loopback address) with `token` (a `dept_subscriber`
/// token of the department) over `client`, then [`FeedSink::run`].
pub async fn run_from_broker(
    config: &FeedSinkConfig,
    client: reqwest::Client,
    broker_url: &str,
    token: &Secret,
    progress: &mut (dyn FnMut(&PageApplied) + Send),
) -> Result<SinkReport, ConnectorError> {
    let sink = FeedSink::new(config)?;
    let mut feed = HttpFeed::new(client, broker_url, token, &sink)?;
    sink.run(&mut feed, progress).await
}

#[cfg(test)]
mod tests;
