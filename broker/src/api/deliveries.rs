//! The delivery workers of the exchange: one task per subscription with a URL, sending its
//! changes one at a time through the disclosure gate (see [`crate::exchange`] for the
//! guarantees: order, retries, restarts).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::AppState;
use crate::exchange::{backoff, delivery_id, Attempt, DeliveryEntry, DeliveryState, Head};

/// How long an idle subscription waits for a commit's wake-up before looking anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often a broker that does not hold a subscription's lease looks again.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// Changes read from the sequence at a time.
const BATCH: usize = 64;

/// Starts the delivery workers: one per subscription with a URL, started and stopped as
/// subscriptions come and go.
pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let live: HashSet<String> = match state.exchange.list(None) {
                Ok(list) => list
                    .into_iter()
                    .filter(|s| s.url.is_some())
                    .map(|s| s.id)
                    .collect(),
                Err(err) => {
                    tracing::error!(error = %err, "cannot list subscriptions");
                    HashSet::new()
                }
            };
            running.retain(|id, task| {
                let keep = live.contains(id) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for id in live {
                running
                    .entry(id.clone())
                    .or_insert_with(|| tokio::spawn(worker(state.clone(), id, shutdown.clone())));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => break,
            }
        }
        // Workers stop at the shutdown signal and hand their leases over; one in the middle of
        // a delivery gets a moment to finish it.
        for (_, mut task) in running {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    })
}

/// Delivers one subscription's changes, one at a time, until shutdown or deletion — while
/// this broker holds the subscription's lease (brokers sharing a PostgreSQL store deliver
/// each subscription once, from whichever holds it).
async fn worker(state: AppState, id: String, shutdown: watch::Receiver<bool>) {
    deliver_while_held(&state, &id, shutdown).await;
    let exchange = state.exchange.clone();
    let released = tokio::task::spawn_blocking(move || exchange.release_lease(&id)).await;
    if let Ok(Err(err)) = released {
        tracing::warn!(error = %err, "a delivery lease was not released; it lapses by itself");
    }
}

async fn deliver_while_held(state: &AppState, id: &str, mut shutdown: watch::Receiver<bool>) {
    let mut commits = state.exchange.commits();
    let mut held_until: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let renew_at = held_until.map(|until| until - crate::exchange::DELIVERY_LEASE / 2);
        if renew_at.is_none_or(|at| std::time::Instant::now() >= at) {
            let asked = std::time::Instant::now();
            let exchange = state.exchange.clone();
            let owned = id.to_owned();
            match tokio::task::spawn_blocking(move || exchange.hold_lease(&owned)).await {
                Ok(Ok(true)) => held_until = Some(asked + crate::exchange::DELIVERY_LEASE),
                Ok(Ok(false)) => {
                    // Another broker delivers this subscription: look again later.
                    held_until = None;
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
                Ok(Err(err)) => {
                    tracing::error!(subscription = %id, error = %err, "delivery lease failed");
                    held_until = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(err) => {
                    tracing::error!(subscription = %id, error = %err, "delivery lease task failed");
                    return;
                }
            }
        }
        // Marked seen before the step: a commit during it wakes the next wait at once.
        commits.borrow_and_update();
        let wait = match step(state, id).await {
            Ok(Some(wait)) => wait,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(subscription = %id, error = %err, "delivery step failed");
                Duration::from_secs(1)
            }
        };
        if wait.is_zero() {
            continue;
        }
        if wait == IDLE_POLL {
            // Nothing to deliver: until the next commit (or a second, to be safe).
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One step of a subscription's delivery: picks the head (a queued retry, the change in
/// flight, or the next change), attempts it when due, and records the outcome. Returns how
/// long to wait before the next step (`None`: the subscription is gone).
async fn step(state: &AppState, id: &str) -> anyhow::Result<Option<Duration>> {
    let exchange = &state.exchange;
    let Some(subscription) = exchange.get(id)? else {
        return Ok(None);
    };
    if subscription.url.is_none() {
        return Ok(None);
    }
    let mut st = exchange.state(id)?;
    let now = Utc::now();
    if st.head.is_none() {
        if let Some(seq) = exchange.next_retry(id) {
            let entity = exchange
                .delivery(id, seq)?
                .filter(|e| e.status == "failed")
                .map(|e| e.id);
            match entity {
                Some(entity) => {
                    st.head = Some(Head {
                        seq,
                        entity,
                        attempts: 0,
                        first_attempt_at: now,
                        next_attempt_at: now,
                        retry: true,
                    });
                }
                None => {
                    // Not failed any more (delivered by an earlier retry): drop it.
                    exchange.record_retry_done(id, seq)?;
                    return Ok(Some(Duration::ZERO));
                }
            }
        }
    }
    if st.head.is_none() {
        // The next change this subscription receives.
        let changes = exchange.changes_after(st.cursor, BATCH)?;
        if changes.is_empty() {
            return Ok(Some(IDLE_POLL));
        }
        let mut found = None;
        let mut last = st.cursor;
        for (seq, entity) in changes {
            if super::disclosure::exchange_concerns(state, &subscription, &entity)
                .await
                .map_err(gate_error)?
            {
                found = Some((seq, entity));
                break;
            }
            last = seq;
        }
        if last != st.cursor {
            st.cursor = last;
            if found.is_none() {
                exchange.save_state(id, &st)?;
            }
        }
        let Some((seq, entity)) = found else {
            return Ok(Some(Duration::ZERO));
        };
        st.head = Some(Head {
            seq,
            entity,
            attempts: 0,
            first_attempt_at: now,
            next_attempt_at: now,
            retry: false,
        });
        // Not stored yet: until the attempt's outcome is, a restart finds the same change
        // again after the stored cursor.
    }
    let Some(mut head) = st.head.clone() else {
        return Ok(Some(Duration::ZERO));
    };
    if head.next_attempt_at > now {
        let wait = (head.next_attempt_at - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(1));
        return Ok(Some(wait));
    }
    let delivery = delivery_id(id, head.seq);
    // The change as this subscriber may see it now, audited before it leaves.
    let item = super::disclosure::exchange_delivery(
        state,
        &subscription,
        head.seq,
        &head.entity,
        &delivery,
    )
    .await
    .map_err(gate_error)?;
    let finish = |st: &mut DeliveryState, head: &Head| {
        if head.retry {
            st.head = None;
        } else {
            st.cursor = st.cursor.max(head.seq);
            st.head = None;
        }
    };
    let Some(item) = item else {
        // It no longer concerns the subscriber (moved out, agreement changed): nothing to send.
        finish(&mut st, &head);
        exchange.save_state(id, &st)?;
        if head.retry {
            exchange.record_retry_done(id, head.seq)?;
        }
        return Ok(Some(Duration::ZERO));
    };
    head.attempts += 1;
    let attempt = exchange.post(&subscription, &delivery, &item.body).await;
    let now = Utc::now();
    let mut entry = DeliveryEntry {
        delivery_id: delivery.clone(),
        seq: head.seq,
        id: head.entity.clone(),
        status: "pending".to_owned(),
        attempts: head.attempts,
        http_status: None,
        error: None,
        updated_at: now,
    };
    match attempt {
        Attempt::Delivered(status) => {
            entry.status = "delivered".to_owned();
            entry.http_status = Some(status);
            finish(&mut st, &head);
            st.delivered += 1;
            state.metrics.count_delivery("delivered");
            exchange.record(
                id,
                &st,
                &entry,
                Some((&head.entity, item.upsert)),
                head.retry.then_some(head.seq),
            )?;
            Ok(Some(Duration::ZERO))
        }
        Attempt::Failed { http_status, error } => {
            entry.http_status = http_status;
            entry.error = Some(error);
            let (window, max_backoff) = exchange.retry_window();
            let expired = (now - head.first_attempt_at).to_std().unwrap_or_default() >= window;
            if expired {
                entry.status = "failed".to_owned();
                finish(&mut st, &head);
                st.failed += 1;
                state.metrics.count_delivery("failed");
                exchange.record(id, &st, &entry, None, head.retry.then_some(head.seq))?;
                Ok(Some(Duration::ZERO))
            } else {
                let wait = backoff(head.attempts, max_backoff);
                head.next_attempt_at =
                    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1));
                st.head = Some(head);
                state.metrics.count_delivery("retried");
                exchange.record(id, &st, &entry, None, None)?;
                Ok(Some(wait.min(Duration::from_secs(1))))
            }
        }
    }
}

/// A gate refusal as a worker error (the code says why: `audit_unavailable`, a store error).
fn gate_error(err: super::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", err.code, err.message)
}
