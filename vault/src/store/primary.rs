//! Finding the primary among the hosts of a store URL, and following it when it moves.
//!
//! A URL may name several servers, libpq-style: `postgres://u:p@db-a:5432,db-b:5432/safegrid`.
//! The engine connects to the first one that is a primary (not in recovery) and refuses every
//! connection to a standby. When the primary is lost — a connection does not come within
//! [`WAKE_AFTER`], or a statement fails for want of its server — a watcher probes the hosts
//! again in order and points the pool at the one that is now the primary: requests already
//! waiting for a connection get it there, without a restart. Promoting a standby is the
//! database's own business (Patroni, an operator, or `pg_ctl promote`); this only finds it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Postgres as Pg};
use tokio::sync::Notify;

/// A connection that has not come within this long wakes the watcher.
pub(super) const WAKE_AFTER: Duration = Duration::from_millis(500);

/// How long a probe waits for one host.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two rounds of probes while no primary answers.
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// Splits a URL naming several hosts into one URL per host, in order; a URL naming one host
/// comes back as it is. `target_session_attrs` is dropped: a broker always needs the primary.
pub(super) fn split_hosts(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let tail = without_param(tail, "target_session_attrs");
    let urls: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{scheme}://{userinfo}{host}{tail}"))
        .collect();
    if hosts.split(',').any(str::is_empty) {
        return None;
    }
    Some(urls)
}

fn without_param(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Parses each host's URL into connect options (the same options for every host otherwise).
pub(super) fn host_options(urls: &[String]) -> Option<Vec<PgConnectOptions>> {
    urls.iter()
        .map(|url| PgConnectOptions::from_str(url).ok())
        .collect()
}

/// Whether the server behind `connection` is a primary.
pub(super) async fn is_primary(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(connection)
        .await?;
    Ok(!in_recovery)
}

/// The error a connection to a standby fails with (then retried until a primary answers).
pub(super) fn standby_refused() -> sqlx::Error {
    sqlx::Error::Configuration("the store server is a standby, not the primary".into())
}

/// The first host, in the URL's order, that answers as a primary.
pub(super) async fn find_primary(hosts: &[PgConnectOptions]) -> Option<usize> {
    for (index, options) in hosts.iter().enumerate() {
        let probe = async {
            let mut connection = options.connect().await?;
            let primary = is_primary(&mut connection).await;
            let _ = connection.close().await;
            primary
        };
        if let Ok(Ok(true)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            return Some(index);
        }
    }
    None
}

/// Whether `err` means the server went away or cannot take writes, so that another host may
/// now be the primary.
pub(super) fn server_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 57P01–57P03: the server shut down or is starting;
            // 25006: a read-only transaction (a standby, or a demoted primary).
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "25006")
        }),
        _ => false,
    }
}

/// Where the pool connects, and the watcher that moves it.
pub(super) struct Follower {
    pub(super) hosts: Vec<PgConnectOptions>,
    wake: Notify,
}

impl Follower {
    pub(super) fn new(hosts: Vec<PgConnectOptions>) -> Arc<Follower> {
        Arc::new(Follower {
            hosts,
            wake: Notify::new(),
        })
    }

    /// Whether there is anywhere else to go.
    pub(super) fn has_alternatives(&self) -> bool {
        self.hosts.len() > 1
    }

    /// Asks the watcher to look for the primary again.
    pub(super) fn wake(&self) {
        if self.has_alternatives() {
            self.wake.notify_one();
        }
    }

    /// Runs on the engine's runtime for as long as the pool is open: each time it is woken,
    /// probes until a primary answers and points the pool there.
    pub(super) async fn watch(self: Arc<Follower>, pool: sqlx::Pool<Pg>, mut current: usize) {
        while !pool.is_closed() {
            self.wake.notified().await;
            loop {
                if pool.is_closed() {
                    return;
                }
                match find_primary(&self.hosts).await {
                    Some(index) if index == current => break,
                    Some(index) => {
                        pool.set_connect_options(self.hosts[index].clone());
                        // Only the host's position and name: the URL may hold a password.
                        tracing::warn!(
                            host = index + 1,
                            of = self.hosts.len(),
                            server = %self.hosts[index].get_host(),
                            port = self.hosts[index].get_port(),
                            "the store's primary moved; new connections go to it"
                        );
                        current = index;
                        break;
                    }
                    None => tokio::time::sleep(PROBE_PAUSE).await,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_split_per_host_keeping_everything_else() {
        assert_eq!(
            split_hosts("postgres://u:p%40ss@db-a:5432,db-b:5433/safegrid?sslmode=require")
                .unwrap(),
            [
                "postgres://u:p%40ss@db-a:5432/safegrid?sslmode=require",
                "postgres://u:p%40ss@db-b:5433/safegrid?sslmode=require",
            ]
        );
        assert_eq!(
            split_hosts("postgresql://db/x").unwrap(),
            ["postgresql://db/x"]
        );
        assert_eq!(
            split_hosts("postgres://u@[::1]:5432,h2/db?target_session_attrs=read-write").unwrap(),
            ["postgres://u@[::1]:5432/db", "postgres://u@h2/db"]
        );
        assert_eq!(
            split_hosts("postgres://h1,h2?target_session_attrs=primary&application_name=x")
                .unwrap(),
            [
                "postgres://h1?application_name=x",
                "postgres://h2?application_name=x"
            ]
        );
        assert_eq!(split_hosts("postgres://h1,,h2/db"), None);
        assert_eq!(split_hosts("not a url"), None);
    }

    #[test]
    fn lost_servers_are_told_from_bad_statements() {
        assert!(server_lost(&sqlx::Error::PoolTimedOut));
        assert!(server_lost(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!server_lost(&sqlx::Error::RowNotFound));
        assert!(!server_lost(&standby_refused()));
    }
}
