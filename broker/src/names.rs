//! The directory of residents' names the broker knows, for redacting names from free text
//! (a segmenter alone misses many names).
//!
//! Guarantees: the directory holds names only in memory; it is rebuilt from the store in the
//! background when the store has changed, at most once per refresh interval, and a reader
//! always gets a complete directory (the old one until the new one is ready).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use model::RecordKind;
use policies::redact::NameDirectory;
use serde_json::Value;

use crate::crypto::KeyRing;
use crate::resolve::open_source;
use crate::store::{Store, StoreError};

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

    /// Rebuilds the directory from every resident record's name.
    pub fn rebuild(&self, store: &Store, keys: &KeyRing) -> Result<usize, StoreError> {
        let reader = store.read()?;
        let mut names = Vec::new();
        reader.for_each_source(RecordKind::Resident, |source| {
            if !source.sealed.contains_key("name") {
                return;
            }
            // A record that fails to open is reported on read; here it just adds no name.
            if let Ok(opened) = open_source(keys, source) {
                if let Some(Value::String(name)) = opened.fields.get("name") {
                    names.push(name.clone());
                }
            }
        })?;
        let directory = NameDirectory::new(names);
        let len = directory.len();
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(directory),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(directory),
        }
        Ok(len)
    }

    /// Keeps the directory fresh: rebuilds after the store changed, checking every `every`,
    /// until `shutdown` turns true.
    pub fn follow(
        self: &Arc<Self>,
        store: Arc<Store>,
        keys: Arc<KeyRing>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let index = self.clone();
        tokio::spawn(async move {
            let mut seen = u64::MAX;
            loop {
                let seq = store.read().and_then(|r| r.change_seq()).unwrap_or(seen);
                if seq != seen {
                    let (index2, store2, keys2) = (index.clone(), store.clone(), keys.clone());
                    let result =
                        tokio::task::spawn_blocking(move || index2.rebuild(&store2, &keys2)).await;
                    match result {
                        Ok(Ok(count)) => tracing::debug!(names = count, "name directory rebuilt"),
                        Ok(Err(err)) => tracing::error!(error = %err, "name directory rebuild failed"),
                        Err(err) => tracing::error!(error = %err, "name directory task failed"),
                    }
                    seen = seq;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}
