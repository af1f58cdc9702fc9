//! Progress of a long offline operation (search-index rebuild, re-encryption, blind-index
//! re-computation, backup, restore), reported to whoever runs it: the command line draws a
//! bar from it, the broker's background passes report to [`Silent`].
//!
//! It lives in the lowest crate with such an operation so that `engine` and `search` report
//! the same way; no library crate draws anything or depends on a terminal crate.
//!
//! Guarantees of an operation that takes a `&dyn Progress`:
//! - [`Progress::set_total`] is called at most once per run, before the first
//!   [`Progress::advance`], with the amount of work the run will do in the operation's unit
//!   (rows, entities, bytes), when that amount can be known before the work starts.
//! - The advances of a run that finishes sum to that total, as long as nothing else writes
//!   the same data meanwhile (offline, the store is opened exclusively). A run that stops
//!   early (an error, a stop flag) has advanced by what it did.
//! - Values passed are counts only: never a key, a row key or any record content.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Receives the progress of a long operation. Called from the operation's own threads,
/// hence `Sync`; calls should be cheap (an operation calls [`Progress::advance`] once per
/// batch, not once per byte).
pub trait Progress: Sync {
    /// The amount of work this run will do, once known.
    fn set_total(&self, total: u64);
    /// `n` more units of work are done.
    fn advance(&self, n: u64);
    /// What the operation does now (e.g. "merging segments"), for display only.
    fn stage(&self, _stage: &str) {}
}

/// Reports nowhere: what the functions without a progress argument pass on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn set_total(&self, _total: u64) {}
    fn advance(&self, _n: u64) {}
}

/// Remembers every call: for tests of the operations, and for a caller that only wants the
/// numbers.
#[derive(Debug, Default)]
pub struct Counting {
    totals: Mutex<Vec<u64>>,
    advanced: AtomicU64,
    advances: AtomicU64,
    advanced_before_total: AtomicU64,
    stages: Mutex<Vec<String>>,
}

impl Counting {
    pub fn new() -> Counting {
        Counting::default()
    }

    /// Every total set, in order.
    pub fn totals(&self) -> Vec<u64> {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The sum of every advance.
    pub fn advanced(&self) -> u64 {
        self.advanced.load(Ordering::SeqCst)
    }

    /// How many times [`Progress::advance`] was called.
    pub fn advances(&self) -> u64 {
        self.advances.load(Ordering::SeqCst)
    }

    /// The sum of the advances made before any total was set.
    pub fn advanced_before_total(&self) -> u64 {
        self.advanced_before_total.load(Ordering::SeqCst)
    }

    /// Every stage announced, in order.
    pub fn stages(&self) -> Vec<String> {
        self.stages.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Progress for Counting {
    fn set_total(&self, total: u64) {
        if let Ok(mut totals) = self.totals.lock() {
            totals.push(total);
        }
    }

    fn advance(&self, n: u64) {
        let no_total = self.totals.lock().map(|t| t.is_empty()).unwrap_or(false);
        if no_total {
            self.advanced_before_total.fetch_add(n, Ordering::SeqCst);
        }
        self.advanced.fetch_add(n, Ordering::SeqCst);
        self.advances.fetch_add(1, Ordering::SeqCst);
    }

    fn stage(&self, stage: &str) {
        if let Ok(mut stages) = self.stages.lock() {
            stages.push(stage.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_adds_up_what_it_is_told() {
        let counting = Counting::new();
        let progress: &dyn Progress = &counting;
        progress.advance(1);
        progress.set_total(10);
        progress.stage("copying");
        progress.advance(4);
        progress.advance(5);
        assert_eq!(counting.totals(), vec![10]);
        assert_eq!(counting.advanced(), 10);
        assert_eq!(counting.advances(), 3);
        assert_eq!(counting.advanced_before_total(), 1);
        assert_eq!(counting.stages(), vec!["copying".to_owned()]);
        Silent.set_total(3);
        Silent.advance(3);
    }
}
