//! The directory of residents' names the broker knows, for redacting names from free text
//! (a segmenter alone misses many names).
//!
//! Guarantees: the directory holds names only in memory; it follows the store's change
//! sequence incrementally, adding each resident's name in place as soon as the change is read
//! (within about half a second of its commit), so a reader always finds every name read so
//! far and nothing is ever rebuilt (at 1,000,000 residents the rebuilt automaton had doubled
//! for a moment every 30 s: BENCHMARKS.md, "Memory").

use std::sync::Arc;
use std::time::Duration;

use policies::redact::NameDirectory;
use serde_json::Value;

use vault::crypto::{FieldContext, KeyRing};
use vault::store::{Store, StoreError};

/// Names added under one write lock: a reader waits at most for this many insertions.
const NAMES_PER_LOCK: usize = 1_000;

#[derive(Debug, Default)]
pub struct NameIndex {
    directory: Arc<NameDirectory>,
}

impl NameIndex {
    pub fn current(&self) -> Arc<NameDirectory> {
        self.directory.clone()
    }

    /// Keeps the directory fresh, until `shutdown` turns true: reads the store's change
    /// sequence from where it left off and adds the names of changed residents (opening only
    /// their name field). Names are never removed: redacting a former resident's name is the
    /// safe side.
    pub fn follow(
        self: &Arc<Self>,
        store: Arc<Store>,
        keys: Arc<KeyRing>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let directory = self.directory.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            loop {
                let (store2, keys2, directory2) = (store.clone(), keys.clone(), directory.clone());
                let result = tokio::task::spawn_blocking(move || {
                    let added = collect_names(&store2, &keys2, &mut seen, &directory2);
                    (added, seen)
                })
                .await;
                match result {
                    Ok((added, new_seen)) => {
                        seen = new_seen;
                        match added {
                            Ok(0) => {}
                            Ok(count) => {
                                tracing::debug!(
                                    added = count,
                                    names = directory.len(),
                                    "names added to the directory"
                                )
                            }
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

/// Changes read under one store snapshot.
const CHANGES_PER_SNAPSHOT: usize = 2_000;

/// Adds the names of residents changed after `*seen` to `directory`; advances `*seen`.
/// Returns how many names were new.
fn collect_names(
    store: &Store,
    keys: &KeyRing,
    seen: &mut u64,
    directory: &NameDirectory,
) -> Result<usize, StoreError> {
    let mut added = 0;
    let mut pending: Vec<String> = Vec::with_capacity(NAMES_PER_LOCK);
    loop {
        // A snapshot per chunk, not per pass: the store cannot reuse pages that a snapshot
        // still sees, and a long one during a load grows its file (BENCHMARKS.md).
        let reader = store.read()?;
        let changes = reader.changes_after(*seen, CHANGES_PER_SNAPSHOT)?;
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
                        pending.push(name);
                        if pending.len() >= NAMES_PER_LOCK {
                            added += directory.extend(pending.drain(..));
                        }
                    }
                }
            }
        }
        // Every name of these changes is in before `seen` moves past them.
        added += directory.extend(pending.drain(..));
        *seen = last;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::ingest::Pipeline;
    use model::Department;
    use vault::crypto::MasterKey;

    fn store() -> (tempfile::TempDir, Arc<Store>, Arc<KeyRing>) {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load(Some(&dir.path().join("master.key")), true).unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("store.redb")).unwrap());
        let keys = Arc::new(vault::keys::load_key_ring(&store, &master).unwrap());
        (dir, store, keys)
    }

    fn publish(store: &Arc<Store>, keys: &Arc<KeyRing>, residents: &[(&str, &str)]) {
        let body: String = residents
            .iter()
            .map(|(id, name)| {
                format!(
                    "{{\"kind\":\"resident\",\"source_id\":\"{id}\",\"version\":\"1\",\
                     \"name\":\"{name}\",\"grid\":\"110105001001001\"}}\n"
                )
            })
            .collect();
        let receipt = Pipeline::new(store.clone(), keys.clone())
            .ingest(Department::Minzheng, body.as_bytes())
            .unwrap();
        assert_eq!(receipt.accepted, residents.len(), "{receipt:?}");
    }

    #[test]
    fn names_are_added_as_their_changes_are_read_and_only_once() {
        let (_dir, store, keys) = store();
        publish(&store, &keys, &[("MZ-1", "赵六"), ("MZ-2", "钱七")]);
        let directory = NameDirectory::default();
        let mut seen = 0;
        assert_eq!(
            collect_names(&store, &keys, &mut seen, &directory).unwrap(),
            2
        );
        assert_eq!(seen, store.read().unwrap().change_seq().unwrap());
        assert_eq!(directory.spans("赵六与钱七").len(), 2);
        // Nothing new: nothing added, the position stays.
        assert_eq!(
            collect_names(&store, &keys, &mut seen, &directory).unwrap(),
            0
        );
        publish(&store, &keys, &[("MZ-3", "孙八"), ("MZ-4", "赵六")]);
        assert_eq!(
            collect_names(&store, &keys, &mut seen, &directory).unwrap(),
            1
        );
        assert_eq!(directory.len(), 3);
    }

    #[test]
    fn the_follower_adds_each_new_name_within_seconds_and_stops_on_shutdown() {
        let (_dir, store, keys) = store();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let index = Arc::new(NameIndex::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = {
            let _entered = runtime.enter();
            index.follow(store.clone(), keys.clone(), stopped)
        };
        // The second name comes right after the first was found: a directory rebuilt at
        // most every 30 s (as before) would miss it for half a minute.
        for (id, name) in [("MZ-9", "周吴郑"), ("MZ-10", "冯陈褚")] {
            publish(&store, &keys, &[(id, name)]);
            let started = std::time::Instant::now();
            while index.current().spans(&format!("{name}到场")).is_empty() {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{name}: not found in 5 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        stop.send(true).unwrap();
        runtime.block_on(task).unwrap();
    }
}
