//! Problems background tasks met and went past: one bad item never stops a task.
//!
//! Guarantees:
//! - A task that meets an item it cannot process (an error, or a panic caught with
//!   `catch_unwind`) records it here, counts it in `safegrid_background_problems_total{task}`,
//!   skips it and goes on.
//! - What is kept is bounded (the last [`MAX_KEPT`] problems) and holds no personal data:
//!   the task, the item's key (a unified id or a row key of department, kind and source id),
//!   a stable kind and the time — never a panic message or an error text that may quote data.
//! - The system administrator lists them at `GET /v1/admin/problems`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Problems kept at most (oldest dropped first).
pub const MAX_KEPT: usize = 1_000;

/// One item a background task skipped.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The task: `search_index`, `names`, `linkage`, `connector` …
    pub task: &'static str,
    /// The item's key (a unified id, or `department/kind/source_id`).
    pub item: String,
    /// What went wrong: `panicked`, `integrity_error`, `failed`.
    pub kind: &'static str,
    pub at: DateTime<Utc>,
}

fn kept() -> &'static Mutex<VecDeque<Problem>> {
    static KEPT: OnceLock<Mutex<VecDeque<Problem>>> = OnceLock::new();
    KEPT.get_or_init(|| Mutex::new(VecDeque::new()))
}

fn counts() -> &'static Mutex<BTreeMap<&'static str, u64>> {
    static COUNTS: OnceLock<Mutex<BTreeMap<&'static str, u64>>> = OnceLock::new();
    COUNTS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Problems recorded per task since the start (never dropped; the metrics read them).
pub fn totals() -> BTreeMap<&'static str, u64> {
    counts()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Records that `task` skipped `item`.
pub fn record(task: &'static str, item: &str, kind: &'static str) {
    *counts()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(task)
        .or_default() += 1;
    tracing::error!(task, item, kind, "background task skipped an item");
    let mut kept = kept()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kept.len() >= MAX_KEPT {
        kept.pop_front();
    }
    kept.push_back(Problem {
        task,
        item: item.chars().take(200).collect(),
        kind,
        at: Utc::now(),
    });
}

/// The problems kept, newest last.
pub fn list() -> Vec<Problem> {
    kept()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// Runs `work` for one item; a panic is caught, recorded against `item` and returned as
/// `None`, so the caller skips the item and goes on.
pub fn isolate<T>(task: &'static str, item: &str, work: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(value) => Some(value),
        Err(_) => {
            record(task, item, "panicked");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_item_is_recorded_without_its_message_and_the_next_one_runs() {
        let mut done = Vec::new();
        for item in ["e_1", "e_2", "e_3"] {
            let out = isolate("test_task", item, || {
                if item == "e_2" {
                    panic!("secret 11010519491231002X");
                }
                item.to_owned()
            });
            done.extend(out);
        }
        assert_eq!(done, ["e_1", "e_3"]);
        let problems: Vec<Problem> = list()
            .into_iter()
            .filter(|p| p.task == "test_task")
            .collect();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].item.as_str(), problems[0].kind),
            ("e_2", "panicked")
        );
        let text = serde_json::to_string(&problems).unwrap_or_default();
        assert!(!text.contains("11010519491231002X"), "{text}");
    }
}
