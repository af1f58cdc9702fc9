//! The directory of residents' names the broker knows, for redacting names from free text
//! (a segmenter alone misses many names).
//!
//! Guarantees: the directory holds names only in memory; it follows the store's change
//! sequence incrementally and is rebuilt at most once per refresh interval; a reader always
//! gets a complete directory (the old one until the new one is ready).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use policies::redact::NameDirectory;
use serde_json::Value;

use vault::crypto::{FieldContext, KeyRing};
use vault::store::{Store, StoreError};

#[derive(Debug)]
pub struct NameIndex {
    current: RwLock<Arc<NameDirectory>>,
}

impl Default for NameIndex {
    fn default() -> Self {
        NameIndex {
            current: RwLock::new(Arc::new(NameDirectory::new(Vec::<String>::new()))),
        }
    }
}

impl NameIndex {
    pub fn current(&self) -> Arc<NameDirectory> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the directory with one built from `names`.
    fn install(&self, names: &HashSet<String>) -> usize {
        let directory = NameDirectory::new(names.iter());
        let len = directory.len();
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(directory),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(directory),
        }
        len
    }

    /// Keeps the directory fresh, until `shutdown` turns true: reads the store's change
    /// sequence from where it left off, collects the names of changed residents (opening only
    /// their name field), and rebuilds the automaton at most once per `every` when names were
    /// added. Names are never removed: redacting a former resident's name is the safe side.
    pub fn follow(
        self: &Arc<Self>,
        store: Arc<Store>,
        keys: Arc<KeyRing>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let index = self.clone();
        tokio::spawn(async move {
            let mut names: HashSet<String> = HashSet::new();
            let mut seen = 0u64;
            let mut dirty = false;
            let mut last_build: Option<Instant> = None;
            loop {
                let (store2, keys2) = (store.clone(), keys.clone());
                let mut batch = std::mem::take(&mut names);
                let result = tokio::task::spawn_blocking(move || {
                    let added = collect_names(&store2, &keys2, &mut seen, &mut batch);
                    (added, seen, batch)
                })
                .await;
                match result {
                    Ok((added, new_seen, batch)) => {
                        names = batch;
                        seen = new_seen;
                        match added {
                            Ok(count) => dirty |= count > 0,
                            Err(err) => {
                                tracing::error!(error = %err, "name directory update failed")
                            }
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "name directory task failed");
                        break;
                    }
                }
                let due = last_build.is_none_or(|t| t.elapsed() >= every);
                if dirty && due {
                    let count = index.install(&names);
                    tracing::debug!(names = count, "name directory rebuilt");
                    dirty = false;
                    last_build = Some(Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

/// Adds the names of residents changed after `*seen` to `names`; advances `*seen`.
fn collect_names(
    store: &Store,
    keys: &KeyRing,
    seen: &mut u64,
    names: &mut HashSet<String>,
) -> Result<usize, StoreError> {
    let reader = store.read()?;
    let mut added = 0;
    loop {
        let changes = reader.changes_after(*seen, 10_000)?;
        let Some((last, _)) = changes.last() else {
            return Ok(added);
        };
        let last = *last;
        for (_, entity) in changes {
            if !entity.starts_with("r_") {
                continue;
            }
            for source in reader.linked_sources(&format!("entity:{entity}"))? {
                let Some(sealed) = source.sealed.get("name") else {
                    continue;
                };
                let row = source.key();
                let ctx = FieldContext {
                    department: source.department,
                    row: &row,
                    field: "name",
                };
                // A field that fails to open is reported on read; here it adds no name.
                if let Ok(plain) = keys.open(ctx, sealed) {
                    if let Ok(Value::String(name)) = serde_json::from_slice::<Value>(&plain) {
                        if names.insert(name) {
                            added += 1;
                        }
                    }
                }
            }
        }
        *seen = last;
    }
}
