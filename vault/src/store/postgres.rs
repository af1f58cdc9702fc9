//! The PostgreSQL engine: the store's tables in one schema of a database that several brokers
//! share.
//!
//! - A write transaction takes the schema's write lock (a transaction-level advisory lock)
//!   before anything else, so writers take turns across brokers as they do in one process:
//!   the change counter is read and advanced under it and committed with the changes, which
//!   makes the change sequence gap-free and in commit order. The commit returns once the server
//!   has made it durable (`synchronous_commit`, and on a replicated server the synchronous
//!   standby's acknowledgement).
//! - A snapshot is a `REPEATABLE READ, READ ONLY` transaction: one consistent view.
//! - Keys are stored as `bytea`, so their order is byte order, whatever the database's
//!   collation.
//! - Only what the store is given reaches the server: sealed fields, blind indexes, row and
//!   link keys, receipts and wrapped (never plain) data keys.
//!
//! The store's API is synchronous; statements run on a small runtime of the engine's own, and
//! the calling thread waits for each (as it waits for the disk with the embedded engine).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::postgres::PgRow;
use sqlx::{ConnectOptions, Postgres as Pg, Row};
use tokio::runtime::{Handle, Runtime};

use super::backend::{
    Engine, Members, MembersWithValues, SharedLogEngine, Snapshot, Table, Transaction,
};
use super::primary::{
    find_primary, host_options, is_primary, server_lost, split_hosts, standby_refused, Follower,
    WAKE_AFTER,
};
use super::StoreError;

/// Where and how to reach the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:5432/database` (never logged: it may hold a password).
    pub url: String,
    /// The schema holding the store's tables (created if missing): one per street, or one per
    /// test.
    pub schema: String,
    /// Most connections this broker opens; each open snapshot or write holds one.
    pub max_connections: u32,
    /// How long a read or write waits for a free connection before failing with
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: "safegrid".to_owned(),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    pub fn schema(mut self, schema: impl Into<String>) -> PostgresOptions {
        self.schema = schema.into();
        self
    }
}

/// A schema name is written into DDL, so only plain lower-case identifiers are accepted.
fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn set_name(set: Members) -> &'static str {
    match set {
        Members::Links => "links",
        Members::QuarantineBySource => "quarantine_by_source",
    }
}

const SCHEMA_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key bytea PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sources (key bytea PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS receipts (key bytea PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS quarantine (key bytea PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS links (key bytea NOT NULL, member bytea NOT NULL, \
     PRIMARY KEY (key, member))",
    "CREATE TABLE IF NOT EXISTS quarantine_by_source (key bytea NOT NULL, member bytea NOT NULL, \
     PRIMARY KEY (key, member))",
    "CREATE TABLE IF NOT EXISTS changes (seq bigint PRIMARY KEY, entity text NOT NULL)",
    // The shared access log: entries at contiguous positions, the head row whose lock hands
    // them out, the signed checkpoints, and the lease of the broker that signs them.
    "CREATE TABLE IF NOT EXISTS audit_log (seq bigint PRIMARY KEY, entry bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_head (id boolean PRIMARY KEY CHECK (id), next bigint NOT NULL)",
    "INSERT INTO audit_head (id, next) VALUES (true, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (size bigint PRIMARY KEY, note text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_lease (id boolean PRIMARY KEY CHECK (id), holder text NOT NULL, \
     until timestamptz NOT NULL)",
];

/// The channel a commit that appended changes notifies, with its schema as the payload.
const CHANGES_CHANNEL: &str = "safegrid_changes";

/// The advisory lock every write transaction of one schema takes first.
const WRITE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('safegrid.store.write.' || current_schema()))";

type PgTransaction = sqlx::Transaction<'static, Pg>;

pub(crate) struct Postgres {
    /// Taken when the engine is dropped; sessions still open fail from then on.
    runtime: Option<Runtime>,
    handle: Handle,
    pool: Option<sqlx::Pool<Pg>>,
    schema: String,
    /// The URL's hosts and the watcher that keeps the pool on the primary.
    follower: Arc<Follower>,
}

impl Postgres {
    pub(crate) fn connect(options: &PostgresOptions) -> Result<Postgres, StoreError> {
        if !valid_schema(&options.schema) {
            return Err(StoreError::Unavailable(format!(
                "the store schema {:?} is not a plain lower-case identifier",
                options.schema
            )));
        }
        let scheme_ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| options.url.starts_with(scheme));
        let hosts = scheme_ok
            .then(|| split_hosts(&options.url).and_then(|urls| host_options(&urls)))
            .flatten()
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "the store URL is not a PostgreSQL URL \
                     (postgres://user:password@host[:port][,host2[:port]…]/db)"
                        .to_owned(),
                )
            })?
            .into_iter()
            .map(|host| {
                host.options([("search_path", options.schema.as_str())])
                    .application_name("safegrid")
                    .disable_statement_logging()
            })
            .collect();
        let follower = Follower::new(hosts);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safegrid-store-pg")
            .enable_all()
            .build()
            .map_err(|err| {
                StoreError::Unavailable(format!("starting the store's runtime: {err}"))
            })?;
        let handle = runtime.handle().clone();
        let pool_options = PoolOptions::<Pg>::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            // Writes must reach the primary: a connection to a standby is refused, and the
            // pool tries again (at the host the watcher has found by then).
            .after_connect(|connection, _| {
                Box::pin(async move {
                    match is_primary(connection).await? {
                        true => Ok(()),
                        false => Err(standby_refused()),
                    }
                })
            });
        let schema = options.schema.clone();
        let watcher = follower.clone();
        let pool = run(&handle, async move {
            // The first host that answers as a primary; if none does yet, the first host, which
            // the pool tries until the acquire timeout (a server still starting).
            let current = find_primary(&watcher.hosts).await.unwrap_or(0);
            let pool = pool_options
                .connect_with(watcher.hosts[current].clone())
                .await?;
            let mut tx = pool.begin().await?;
            // One broker creates the schema at a time (CREATE … IF NOT EXISTS races otherwise).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('safegrid.store.ddl'))")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut *tx)
                .await?;
            for statement in SCHEMA_DDL {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            if watcher.has_alternatives() {
                tokio::spawn(watcher.watch(pool.clone(), current));
            }
            Ok::<_, sqlx::Error>(pool)
        })
        .and_then(|pool| pool.map_err(pg_error));
        let pool = match pool {
            Ok(pool) => pool,
            Err(err) => {
                // Not dropped in place: the caller may be inside another runtime's task.
                runtime.shutdown_background();
                return Err(err);
            }
        };
        Ok(Postgres {
            runtime: Some(runtime),
            handle,
            pool: Some(pool),
            schema: options.schema.clone(),
            follower,
        })
    }

    fn pool(&self) -> Result<sqlx::Pool<Pg>, StoreError> {
        self.pool
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".to_owned()))
    }
}

impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn begin_write(&self) -> Result<Box<dyn Transaction>, StoreError> {
        let pool = self.pool()?;
        let follower = self.follower.clone();
        let tx = run(&self.handle, async move {
            let mut tx = follower.begin(pool.begin()).await?;
            sqlx::query(WRITE_LOCK).execute(&mut *tx).await?;
            Ok::<_, sqlx::Error>(tx)
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(Box::new(Session::new(self, tx)))
    }

    fn begin_read(&self) -> Result<Box<dyn Snapshot + Sync>, StoreError> {
        let pool = self.pool()?;
        let follower = self.follower.clone();
        let tx = run(&self.handle, async move {
            follower
                .begin(pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
                .await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(Box::new(Session::new(self, tx)))
    }

    fn shared_log(&self) -> Option<&dyn SharedLogEngine> {
        Some(self)
    }

    fn watch_remote_commits(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let Ok(pool) = self.pool() else {
            return;
        };
        let schema = self.schema.clone();
        self.handle.spawn(async move {
            // LISTEN only wakes: a notification lost while the connection is down costs a
            // follower its poll interval, never a change (followers read from their cursor).
            while !pool.is_closed() {
                if let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&pool).await {
                    if listener.listen(CHANGES_CHANNEL).await.is_ok() {
                        wake();
                        while let Ok(notification) = listener.recv().await {
                            if notification.payload() == schema {
                                wake();
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn log_corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        key: "audit_log".to_owned(),
        reason,
    }
}

impl SharedLogEngine for Postgres {
    fn append(&self, encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>) -> Result<u64, StoreError> {
        let pool = self.pool()?;
        let follower = self.follower.clone();
        // The head row's lock is held from here to the commit: positions are handed out in
        // commit order, without gaps, across brokers.
        let (tx, next) = run(&self.handle, async move {
            let mut tx = follower.begin(pool.begin()).await?;
            let next: i64 = sqlx::query_scalar("SELECT next FROM audit_head WHERE id FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
            Ok::<_, sqlx::Error>((tx, next))
        })?
        .map_err(|err| self.follower.error(err))?;
        let _context = self.handle.enter(); // a transaction dropped early rolls back here
        let first = u64::try_from(next)
            .map_err(|_| log_corrupt(format!("the log head is negative ({next})")))?;
        let entries = encode(first);
        let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
        let seqs: Vec<i64> = (next..next.saturating_add(count)).collect();
        run(&self.handle, async move {
            let mut tx = tx;
            sqlx::query(
                "INSERT INTO audit_log (seq, entry) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
            )
            .bind(seqs)
            .bind(entries)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE audit_head SET next = next + $1 WHERE id")
                .bind(count)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(first)
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let pool = self.pool()?;
        let rows: Vec<(i64, Vec<u8>)> = run(&self.handle, async move {
            sqlx::query_as("SELECT seq, entry FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2")
                .bind(clamp(from))
                .bind(clamp(limit as u64))
                .fetch_all(&pool)
                .await
        })?
        .map_err(|err| self.follower.error(err))?;
        rows.into_iter()
            .zip(from..)
            .map(|((seq, entry), expected)| {
                if u64::try_from(seq) == Ok(expected) {
                    Ok(entry)
                } else {
                    Err(log_corrupt(format!(
                        "position {expected} is missing (the next entry is at {seq})"
                    )))
                }
            })
            .collect()
    }

    fn len(&self) -> Result<u64, StoreError> {
        let pool = self.pool()?;
        let next: i64 = run(&self.handle, async move {
            sqlx::query_scalar("SELECT next FROM audit_head WHERE id")
                .fetch_one(&pool)
                .await
        })?
        .map_err(|err| self.follower.error(err))?;
        u64::try_from(next).map_err(|_| log_corrupt(format!("the log head is negative ({next})")))
    }

    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        let pool = self.pool()?;
        let note = note.to_owned();
        run(&self.handle, async move {
            sqlx::query(
                "INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2) \
                 ON CONFLICT (size) DO NOTHING",
            )
            .bind(clamp(size))
            .bind(note)
            .execute(&pool)
            .await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(())
    }

    fn checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let pool = self.pool()?;
        let rows: Vec<(i64, String)> = run(&self.handle, async move {
            sqlx::query_as(
                "SELECT size, note FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT 1000",
            )
            .bind(clamp(size))
            .fetch_all(&pool)
            .await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(rows
            .into_iter()
            .filter_map(|(size, note)| Some((u64::try_from(size).ok()?, note)))
            .collect())
    }

    fn lead(&self, holder: &str, seconds: u32) -> Result<bool, StoreError> {
        let pool = self.pool()?;
        let holder = holder.to_owned();
        // By the database's clock: the brokers' clocks play no part.
        let held: Option<String> = run(&self.handle, async move {
            sqlx::query_scalar(
                "INSERT INTO audit_lease (id, holder, until) \
                 VALUES (true, $1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE audit_lease.holder = excluded.holder OR audit_lease.until < now() \
                 RETURNING holder",
            )
            .bind(holder)
            .bind(f64::from(seconds))
            .fetch_optional(&pool)
            .await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(held.is_some())
    }

    fn release(&self, holder: &str) -> Result<(), StoreError> {
        let pool = self.pool()?;
        let holder = holder.to_owned();
        run(&self.handle, async move {
            sqlx::query("DELETE FROM audit_lease WHERE holder = $1")
                .bind(holder)
                .execute(&pool)
                .await
        })?
        .map_err(|err| self.follower.error(err))?;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Not waiting for connections still in use (a reader may outlive the store): the
        // server rolls back whatever was open when their connections go.
        let _context = self.handle.enter();
        drop(self.pool.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` on the engine's runtime and waits for it from any thread (a runtime's own
/// `block_on` refuses to run inside another runtime's tasks).
fn run<T: Send + 'static>(
    handle: &Handle,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    // Inside the runtime's context, so that a future dropped unfinished (the runtime shut
    // down) can return its connection.
    let _context = handle.enter();
    handle.spawn(async move {
        let _ = done.send(future.await);
    });
    wait.recv()
        .map_err(|_| StoreError::Unavailable("a store statement was abandoned".to_owned()))
}

fn pg_error(err: sqlx::Error) -> StoreError {
    if server_lost(&err) || matches!(err, sqlx::Error::PoolClosed) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Postgres(err)
    }
}

impl Follower {
    /// Begins a transaction; wakes the watcher if no connection comes soon (the primary may
    /// be gone), and keeps waiting for the pool's own timeout.
    async fn begin<F>(&self, begin: F) -> Result<PgTransaction, sqlx::Error>
    where
        F: Future<Output = Result<PgTransaction, sqlx::Error>>,
    {
        tokio::pin!(begin);
        match tokio::time::timeout(WAKE_AFTER, &mut begin).await {
            Ok(begun) => begun,
            Err(_) => {
                self.wake();
                begin.await
            }
        }
    }

    /// The store error for `err`, waking the watcher first if the server may be gone.
    fn error(&self, err: sqlx::Error) -> StoreError {
        if server_lost(&err) {
            self.wake();
        }
        pg_error(err)
    }
}

/// One transaction on one connection, moved to the runtime for each statement and back.
/// One transaction on one connection, moved to the runtime for each round trip and back.
///
/// Writes wait in `pending` and go to the server together, consecutive writes of one kind as
/// one statement, before the next read, before a commit, or once [`PENDING_LIMIT`] wait: a
/// batch of records costs a few round trips per record instead of one per row and link.
/// Reads always see the transaction's own writes.
struct Session {
    handle: Handle,
    follower: Arc<Follower>,
    state: Mutex<SessionState>,
}

struct SessionState {
    tx: Option<PgTransaction>,
    pending: Vec<Pending>,
    /// The transaction appends to the change sequence: its commit notifies the listeners.
    changed: bool,
}

/// A write not yet sent.
enum Pending {
    Put(Table, Vec<u8>, Vec<u8>),
    /// A member added (`true`) or removed (`false`).
    Member(Members, bool, Vec<u8>, Vec<u8>),
    Change(i64, String),
}

/// Writes held back at most before they are sent.
const PENDING_LIMIT: usize = 4096;

impl Session {
    fn new(engine: &Postgres, tx: PgTransaction) -> Session {
        Session {
            handle: engine.handle.clone(),
            follower: engine.follower.clone(),
            state: Mutex::new(SessionState {
                tx: Some(tx),
                pending: Vec::new(),
                changed: false,
            }),
        }
    }

    /// Sends the pending writes, then runs `statement` (a read, or a write whose answer is
    /// needed) on the transaction, in one round trip to the engine's runtime.
    fn call<T, F>(
        &self,
        statement: impl FnOnce(PgTransaction) -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = (PgTransaction, Result<T, sqlx::Error>)> + Send + 'static,
    {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Unavailable("a store session was poisoned".to_owned()))?;
        let tx = state.tx.take().ok_or_else(|| {
            StoreError::Unavailable("a failed statement ended this store transaction".to_owned())
        })?;
        let pending = std::mem::take(&mut state.pending);
        let (tx, result) = run(&self.handle, async move {
            let (tx, sent) = send_pending(tx, pending).await;
            match sent {
                Ok(()) => statement(tx).await,
                Err(err) => (tx, Err(err)),
            }
        })?;
        state.tx = Some(tx);
        result.map_err(|err| self.follower.error(err))
    }

    /// Holds a write back; sends them all once enough wait.
    fn defer(&mut self, write: Pending) -> Result<(), StoreError> {
        let full = {
            let state = self
                .state
                .get_mut()
                .map_err(|_| StoreError::Unavailable("a store session was poisoned".to_owned()))?;
            state.pending.push(write);
            state.pending.len() >= PENDING_LIMIT
        };
        if full {
            self.call(|tx| async move { (tx, Ok(())) })?;
        }
        Ok(())
    }
}

/// Sends `pending` in order, each run of consecutive writes of one kind to one table as one
/// statement.
async fn send_pending(
    mut tx: PgTransaction,
    pending: Vec<Pending>,
) -> (PgTransaction, Result<(), sqlx::Error>) {
    let mut writes = pending.into_iter().peekable();
    while let Some(first) = writes.next() {
        let result = match first {
            Pending::Put(table, key, value) => {
                // The last value of a key wins, as it would one statement at a time.
                let mut run: Vec<(Vec<u8>, Vec<u8>)> = vec![(key, value)];
                while let Some(Pending::Put(t, _, _)) = writes.peek() {
                    if *t != table {
                        break;
                    }
                    if let Some(Pending::Put(_, key, value)) = writes.next() {
                        run.push((key, value));
                    }
                }
                let mut last = std::collections::HashMap::new();
                for (i, (key, _)) in run.iter().enumerate() {
                    last.insert(key.clone(), i);
                }
                let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = run
                    .into_iter()
                    .enumerate()
                    .filter(|(i, (key, _))| last.get(key) == Some(i))
                    .map(|(_, pair)| pair)
                    .unzip();
                let sql = format!(
                    "INSERT INTO {} (key, value) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    table.name()
                );
                sqlx::query(&sql)
                    .bind(keys)
                    .bind(values)
                    .execute(&mut *tx)
                    .await
            }
            Pending::Member(set, adding, key, member) => {
                let (mut keys, mut members) = (vec![key], vec![member]);
                while let Some(Pending::Member(next, next_adding, _, _)) = writes.peek() {
                    if *next != set || *next_adding != adding {
                        break;
                    }
                    if let Some(Pending::Member(_, _, key, member)) = writes.next() {
                        keys.push(key);
                        members.push(member);
                    }
                }
                let sql = if adding {
                    format!(
                        "INSERT INTO {} (key, member) \
                         SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) ON CONFLICT DO NOTHING",
                        set_name(set)
                    )
                } else {
                    format!(
                        "DELETE FROM {} WHERE (key, member) IN \
                         (SELECT * FROM UNNEST($1::bytea[], $2::bytea[]))",
                        set_name(set)
                    )
                };
                sqlx::query(&sql)
                    .bind(keys)
                    .bind(members)
                    .execute(&mut *tx)
                    .await
            }
            Pending::Change(seq, entity) => {
                let (mut seqs, mut entities) = (vec![seq], vec![entity]);
                while let Some(Pending::Change(..)) = writes.peek() {
                    if let Some(Pending::Change(seq, entity)) = writes.next() {
                        seqs.push(seq);
                        entities.push(entity);
                    }
                }
                sqlx::query(
                    "INSERT INTO changes (seq, entity) \
                     SELECT * FROM UNNEST($1::bigint[], $2::text[])",
                )
                .bind(seqs)
                .bind(entities)
                .execute(&mut *tx)
                .await
            }
        };
        if let Err(err) = result {
            return (tx, Err(err));
        }
    }
    (tx, Ok(()))
}

impl Drop for Session {
    fn drop(&mut self) {
        let tx = self.state.get_mut().ok().and_then(|state| state.tx.take());
        if let Some(tx) = tx {
            // Rolled back on the runtime: returning the connection to its pool needs it.
            let _ = run(&self.handle, async move { tx.rollback().await });
        }
    }
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes)
        .map_err(|_| sqlx::Error::Decode(format!("a {what} is not UTF-8").into()))
}

/// The smallest byte string above every string that starts with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Snapshot for Session {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", table.name());
        let key = key.as_bytes().to_vec();
        self.call(move |mut tx| async move {
            let row = sqlx::query(&sql)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .and_then(|row| row.map(|r: PgRow| r.try_get::<Vec<u8>, _>(0)).transpose());
            (tx, row)
        })
    }

    fn members(&self, set: Members, key: &str) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT member FROM {} WHERE key = $1 ORDER BY member",
            set_name(set)
        );
        let key = key.as_bytes().to_vec();
        self.call(move |mut tx| async move {
            let rows = sqlx::query(&sql).bind(key).fetch_all(&mut *tx).await;
            let members = rows.and_then(|rows| {
                rows.into_iter()
                    .map(|r| text(r.try_get(0)?, "member"))
                    .collect::<Result<Vec<_>, _>>()
            });
            (tx, members)
        })
    }

    fn members_with_values(
        &self,
        set: Members,
        key: &str,
        table: Table,
    ) -> Result<MembersWithValues, StoreError> {
        let sql = format!(
            "SELECT m.member, t.value FROM {} m LEFT JOIN {} t ON t.key = m.member \
             WHERE m.key = $1 ORDER BY m.member",
            set_name(set),
            table.name()
        );
        let key = key.as_bytes().to_vec();
        self.call(move |mut tx| async move {
            let rows = sqlx::query(&sql).bind(key).fetch_all(&mut *tx).await;
            let joined = rows.and_then(|rows| {
                rows.into_iter()
                    .map(|r| Ok((text(r.try_get(0)?, "member")?, r.try_get(1)?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            });
            (tx, joined)
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        with_values: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.as_bytes().to_vec();
        let end = prefix_end(&prefix);
        let start = match after {
            Some(after) if after.as_bytes() >= prefix.as_slice() => after.as_bytes().to_vec(),
            _ => prefix.clone(),
        };
        let from = if after.is_some_and(|a| a.as_bytes() == start.as_slice()) {
            ">"
        } else {
            ">="
        };
        let sql = format!(
            "SELECT key{} FROM {} WHERE key {from} $1{} ORDER BY key LIMIT $2",
            if with_values { ", value" } else { "" },
            table.name(),
            if end.is_some() { " AND key < $3" } else { "" },
        );
        let limit = clamp(limit as u64);
        self.call(move |mut tx| async move {
            let mut query = sqlx::query(&sql).bind(start).bind(limit);
            if let Some(end) = end {
                query = query.bind(end);
            }
            let rows = query.fetch_all(&mut *tx).await;
            let entries = rows.and_then(|rows| {
                rows.into_iter()
                    .map(|r| {
                        let key = text(r.try_get(0)?, "key")?;
                        let value = if with_values {
                            r.try_get(1)?
                        } else {
                            Vec::new()
                        };
                        Ok((key, value))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            });
            (tx, entries)
        })
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let after = clamp(after);
        let limit = clamp(limit as u64);
        self.call(move |mut tx| async move {
            let rows =
                sqlx::query("SELECT seq, entity FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await;
            let changes = rows.and_then(|rows| {
                rows.into_iter()
                    .map(|r| {
                        let seq: i64 = r.try_get(0)?;
                        let entity: String = r.try_get(1)?;
                        Ok((u64::try_from(seq).unwrap_or(0), entity))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            });
            (tx, changes)
        })
    }

    fn len(&self, table: Table) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {}", table.name());
        self.call(move |mut tx| async move {
            let count = sqlx::query(&sql)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get::<i64, _>(0));
            (tx, count.map(|n| u64::try_from(n).unwrap_or(0)))
        })
    }
}

impl Transaction for Session {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.defer(Pending::Put(table, key.as_bytes().to_vec(), value.to_vec()))
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE key = $1", table.name());
        let key = key.as_bytes().to_vec();
        self.call(move |mut tx| async move {
            let done = sqlx::query(&sql).bind(key).execute(&mut *tx).await;
            (tx, done.map(|d| d.rows_affected() > 0))
        })
    }

    fn add_member(&mut self, set: Members, key: &str, member: &str) -> Result<(), StoreError> {
        self.defer(Pending::Member(
            set,
            true,
            key.as_bytes().to_vec(),
            member.as_bytes().to_vec(),
        ))
    }

    fn remove_member(&mut self, set: Members, key: &str, member: &str) -> Result<(), StoreError> {
        self.defer(Pending::Member(
            set,
            false,
            key.as_bytes().to_vec(),
            member.as_bytes().to_vec(),
        ))
    }

    fn put_change(&mut self, seq: u64, entity: &str) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).map_err(|_| StoreError::Corrupt {
            key: "change_seq".to_owned(),
            reason: "the change sequence passed 2^63".to_owned(),
        })?;
        if let Ok(state) = self.state.get_mut() {
            state.changed = true;
        }
        self.defer(Pending::Change(seq, entity.to_owned()))
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        // What is still held back goes first, in the same round trip as any read would; with
        // new changes, the notification the other brokers' listeners wake on (delivered at
        // the commit, not before).
        let changed = self.state.lock().is_ok_and(|state| state.changed);
        self.call(move |mut tx| async move {
            let notified = if changed {
                sqlx::query("SELECT pg_notify($1, current_schema())")
                    .bind(CHANGES_CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            };
            (tx, notified)
        })?;
        let mut session = *self;
        let tx = session
            .state
            .get_mut()
            .ok()
            .and_then(|state| state.tx.take())
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "a failed statement ended this store transaction".to_owned(),
                )
            })?;
        run(&session.handle, async move { tx.commit().await })?
            .map_err(|err| session.follower.error(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_byte_string() {
        assert_eq!(prefix_end(b"gongan/"), Some(b"gongan0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn only_plain_schema_names_are_accepted() {
        for good in ["safegrid", "street_110105001", "_t1"] {
            assert!(valid_schema(good), "{good}");
        }
        for bad in [
            "",
            "Safegrid",
            "a-b",
            "a;drop schema x",
            "1abc",
            &"a".repeat(64),
        ] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }

    #[test]
    fn options_never_print_the_url() {
        let options = PostgresOptions::new("postgres://u:secret@h/db");
        assert!(!format!("{options:?}").contains("secret"));
    }
}
