//! The search index (tantivy): residents, houses and events found the way a grid worker
//! types — Chinese characters, pinyin, initials, prefixes, ID and phone suffixes, address
//! fragments, event words — without the index ever holding personal data in plaintext.
//!
//! Guarantees:
//! - **Blind.** Every term of a personal field is a blind token ([`blind`]); the only
//!   plaintext is the unified id, kind, grid scope codes, event type and status, house usage
//!   and event time ([`schema`]). A copy of `<data_dir>/index/` reveals no name, ID number,
//!   phone or address.
//! - **Authorized inside the query.** Jurisdiction, field visibility and source-department
//!   visibility are clauses of the tantivy query ([`query`]), so `total` and paging only ever
//!   see what the caller may find.
//! - **Fresh.** A follower tails the store's change sequence, re-resolves every changed
//!   entity and replaces (or deletes) its document, committing at least every
//!   [`COMMIT_INTERVAL`] while changes arrive. The last indexed change number is stored in the
//!   commit itself, so a restart resumes where the index is, never ahead of it.
//! - **Rebuilt when needed.** A missing index, another [`schema::SCHEMA_VERSION`] or another
//!   key is rebuilt from the store at open (`safegrid reindex` does the same offline).
//! - **Reports progress.** [`reindex_with_progress`] and [`SearchIndex::rebuild_with_progress`]
//!   tell a [`vault::progress::Progress`] how many entities there are and how many are
//!   indexed; the broker's own rebuild reports nowhere.

pub mod blind;
pub mod directory;
pub mod document;
pub mod filter;
pub mod merge;
pub mod query;
pub mod schema;
pub mod summary;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query};
use tantivy::schema::Value;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

use model::RecordKind;

use engine::resolve::{AuthorityOrder, ResolveError, Resolver};
use policies::view::ViewPlan;
use policies::Principal;
use vault::crypto::KeyRing;
use vault::progress::{Progress, Silent};
use vault::store::{Store, StoreError};

use blind::Blinder;
use query::{Access, AccessKey, Compiler, Filters, Learnt};
use schema::{build_schema, IndexFields, SCHEMA_VERSION};

/// The follower commits at least this often while changes arrive.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Changes read from the store per follower pass.
const CHANGES_PER_PASS: usize = 20_000;
/// Entities indexed under one store snapshot within a pass.
const ENTITIES_PER_SNAPSHOT: usize = 2_000;
/// File in the index directory naming the schema version and key fingerprint.
const VERSION_FILE: &str = "safegrid-index-version";
/// Memory the index writer may use before flushing a segment.
const WRITER_MEMORY: usize = 192 * 1024 * 1024;
/// Memory the writer of a full rebuild may use (split over its indexing threads): at 1M
/// residents this is four segments, kept as they are ([`REBUILD_SEGMENTS_KEPT`]). With 1 GiB
/// (and 640 MiB) both indexing threads flushed about 300 MB each at the final commit, at once:
/// the rebuild of 1M residents peaked at 1.58 GB resident, over the 1.5 GB the design allows;
/// 384 MiB took as long (BENCHMARKS.md, "Memory").
const REBUILD_WRITER_MEMORY: usize = 384 * 1024 * 1024;
/// A rebuild that ends with at most this many segments keeps them: merging them into one ran
/// on one thread for a third of a 1M rebuild (21.5 s of 61 s), while search over the two
/// segments a 1M rebuild leaves answered with the same p95 and 6 % fewer queries a second
/// (BENCHMARKS.md, "The 1M demo again"). More are merged once.
const REBUILD_SEGMENTS_KEPT: usize = 8;
/// The store's page cache for `safegrid reindex`: a rebuild reads each entity once, so the
/// cache holds little but the B-tree's upper pages, and half the broker's default keeps the
/// rebuild of 1M residents under 1.5 GB (BENCHMARKS.md, "Memory").
const REINDEX_CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Merges that run at once. tantivy's default, 4, let three capped merges of a 1M load run
/// side by side (with their memory) on a 2-core machine; merges are background work.
const MERGE_THREADS: usize = 1;
/// Least memory an indexing thread is given (tantivy's own minimum is 15 MB).
const MIN_MEMORY_PER_THREAD: usize = 32 * 1024 * 1024;
/// Terms whose blind tokens one indexing thread remembers (about 100 bytes each).
const TOKEN_MEMO: usize = 500_000;
/// Kinds of caller whose learnt access is kept.
const MAX_CACHED_ACCESS: usize = 1_024;
/// Deepest result a cursor may reach.
pub const MAX_OFFSET: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("the search index is closed")]
    Closed,
    /// The index has not yet caught up with the store since the broker started (a fresh
    /// build after an upgrade or a key rotation): its answers would be incomplete.
    #[error("the search index is still being built from the store")]
    NotReady,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SearchError + '_ {
    move |source| SearchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortOrder {
    #[default]
    Relevance,
    /// Newest event first.
    Time,
}

/// One search, as the API asks it.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub kinds: Vec<RecordKind>,
    /// Whitespace-separated parts; every part must match.
    pub q: String,
    pub filters: Filters,
    pub sort: SortOrder,
    pub offset: usize,
    pub limit: usize,
}

/// One hit: the unified id and kind, nothing else from the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub kind: RecordKind,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHits {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// The index, its writer and the follower's position.
pub struct SearchIndex {
    inner: Arc<Inner>,
}

impl Clone for SearchIndex {
    fn clone(&self) -> Self {
        SearchIndex {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.inner.dir)
            .field("indexed_seq", &self.indexed_seq())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter<TantivyDocument>>>,
    fields: IndexFields,
    blinder: Blinder,
    indexed_seq: AtomicU64,
    /// Set once [`SearchIndex::catch_up`] has reached the end of the store's changes; until
    /// then searches are refused ([`SearchError::NotReady`]) rather than answered from a
    /// partial index.
    ready: AtomicBool,
    /// Entities left out of the index because a sealed field failed to open.
    skipped: AtomicU64,
    /// Unix seconds of the follower's last pass that ended without an error.
    last_good_pass: AtomicU64,
    stopping: AtomicBool,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What the follower follows, for the final catch-up at shutdown.
    source: Mutex<Option<Source>>,
    /// What search learnt of each kind of caller's access ([`AccessKey`]), so the probes of
    /// the view run once per kind of caller and policy version, not per request.
    access: Mutex<std::collections::HashMap<AccessKey, Arc<Learnt>>>,
    /// Bitsets of the authorization filters, per segment.
    filters: Arc<filter::FilterCache>,
    /// Known residents' names, redacted from the masked text fields as the view redacts them.
    names: Mutex<Option<Arc<crate::directory::NameIndex>>>,
}

/// The store side the index follows.
#[derive(Debug, Clone)]
pub struct Source {
    pub store: Arc<Store>,
    pub keys: Arc<KeyRing>,
    pub authority: AuthorityOrder,
}

impl SearchIndex {
    /// Opens `<data_dir>/index`, wiping it first if it is missing, of another schema version,
    /// of another text normalisation or user dictionary, or built under another key. The caller then catches up from the store
    /// ([`SearchIndex::catch_up`] or [`SearchIndex::start_follower`]).
    pub fn open(data_dir: &Path, keys: &KeyRing) -> Result<SearchIndex, SearchError> {
        chinese_text::segment::warm_up();
        let dir = data_dir.join("index");
        let blinder = Blinder::new(keys);
        let expected = format!(
            "schema={SCHEMA_VERSION} text={} dictionary={} key={}\n",
            chinese_text::NORMALISATION_VERSION,
            dictionary_fingerprint(),
            blinder.fingerprint()
        );
        let current = std::fs::read_to_string(dir.join(VERSION_FILE)).ok();
        if current.as_deref() != Some(expected.as_str()) {
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), "search index missing, outdated or under another key: rebuilding");
                std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
            }
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let (schema, fields) = build_schema();
        let directory = tantivy::directory::MmapDirectory::open(&dir)
            .map_err(|e| SearchError::Index(tantivy::TantivyError::from(e)))?;
        let index = Index::open_or_create(directory, schema)?;
        // The version file is written after the index exists, so a crash in between only
        // causes another rebuild.
        if current.as_deref() != Some(expected.as_str()) {
            std::fs::write(dir.join(VERSION_FILE), &expected).map_err(io_error(&dir))?;
        }
        let writer = open_writer(&index)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let seq = index
            .load_metas()?
            .payload
            .and_then(|p| p.strip_prefix("seq=").and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        Ok(SearchIndex {
            inner: Arc::new(Inner {
                dir,
                reader,
                writer: Mutex::new(Some(writer)),
                fields,
                blinder,
                indexed_seq: AtomicU64::new(seq),
                ready: AtomicBool::new(false),
                skipped: AtomicU64::new(0),
                last_good_pass: AtomicU64::new(unix_now()),
                stopping: AtomicBool::new(false),
                follower: Mutex::new(None),
                source: Mutex::new(None),
                access: Mutex::new(std::collections::HashMap::new()),
                filters: Arc::new(filter::FilterCache::default()),
                names: Mutex::new(None),
            }),
        })
    }

    /// The last change of the store's sequence the searchable index reflects.
    pub fn indexed_seq(&self) -> u64 {
        self.inner.indexed_seq.load(Ordering::Acquire)
    }

    /// Whether the index has caught up with the store at least once since it was opened, so
    /// that its answers are complete up to the follower's lag. Never false again after that.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Seconds since the follower last finished a pass without an error (0 right after one).
    pub fn seconds_since_good_pass(&self) -> u64 {
        unix_now().saturating_sub(self.inner.last_good_pass.load(Ordering::Relaxed))
    }

    /// Entities left out of the index since it was opened because a sealed field failed to
    /// open (counted each time one is met).
    pub fn skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Number of searchable documents.
    pub fn num_docs(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }

    /// Indexes every change after [`Self::indexed_seq`] and commits; returns how many
    /// entities were (re)indexed. A fresh index is built by one pass over every entity.
    pub fn catch_up(&self, source: &Source) -> Result<usize, SearchError> {
        let mut total = 0;
        loop {
            let from = self.indexed_seq();
            let changes = source.store.read()?.changes_after(from, CHANGES_PER_PASS)?;
            let Some(last) = changes.last().map(|(seq, _)| *seq) else {
                if !self.inner.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        documents = self.num_docs(),
                        "search index caught up with the store: searches are answered"
                    );
                }
                return Ok(total);
            };
            let mut seen = HashSet::new();
            let entities: Vec<String> = changes
                .into_iter()
                .filter_map(|(_, e)| seen.insert(e.clone()).then_some(e))
                .collect();
            let mut tokens = document::Tokens::new(&self.inner.blinder, TOKEN_MEMO);
            // A snapshot per chunk of entities, dropped before the commit: the store cannot
            // reuse pages that a snapshot still sees, and one held over a whole pass during a
            // load grows its file (BENCHMARKS.md). Each snapshot is at least as new as the
            // changes it indexes (all read before it was taken).
            for chunk in entities.chunks(ENTITIES_PER_SNAPSHOT) {
                let snapshot = source.store.read()?;
                let resolver = Resolver {
                    reader: &snapshot,
                    keys: &source.keys,
                    authority: &source.authority,
                };
                self.index_entities(&resolver, chunk, true, &mut tokens)?;
            }
            self.commit(last)?;
            total += entities.len();
        }
    }

    /// Wipes the index and indexes every entity of the store once (offline rebuild).
    pub fn rebuild(&self, source: &Source) -> Result<usize, SearchError> {
        self.rebuild_with_progress(source, &Silent)
    }

    /// [`Self::rebuild`], reporting entities to `progress`: the total is the number of
    /// entities in the store's snapshot (set once they are listed), and each batch advances it
    /// once indexed, so a rebuild that finishes advances by exactly the total.
    pub fn rebuild_with_progress(
        &self,
        source: &Source,
        progress: &dyn Progress,
    ) -> Result<usize, SearchError> {
        progress.stage("listing entities");
        let snapshot = source.store.read()?;
        let upto = snapshot.change_seq()?;
        let mut seen = HashSet::new();
        let mut entities = Vec::new();
        let mut after = 0;
        loop {
            let changes = snapshot.changes_after(after, 100_000)?;
            let Some(last) = changes.last().map(|(s, _)| *s) else {
                break;
            };
            after = last;
            for (_, entity) in changes {
                if seen.insert(entity.clone()) {
                    entities.push(entity);
                }
            }
        }
        drop(seen);
        progress.set_total(entities.len() as u64);
        progress.stage("indexing");
        // A bigger writer and no merging while the documents stream in: the index is built in
        // a few large segments instead of merged over and over.
        self.swap_writer(REBUILD_WRITER_MEMORY)?;
        self.with_writer(|w| {
            w.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
            w.delete_all_documents().map(|_| ())
        })?;
        let resolver = Resolver {
            reader: &snapshot,
            keys: &source.keys,
            authority: &source.authority,
        };
        // Resolving (store reads, decryption) and analysis run on every core; the writer
        // indexes on its own threads.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = entities.len().div_ceil(threads).max(1);
        let results: Vec<Result<(), SearchError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = entities
                .chunks(chunk)
                .map(|part| {
                    let resolver = &resolver;
                    scope.spawn(move || {
                        let mut tokens = document::Tokens::new(&self.inner.blinder, TOKEN_MEMO);
                        for batch in part.chunks(1_000) {
                            self.index_entities(resolver, batch, false, &mut tokens)?;
                            progress.advance(batch.len() as u64);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(SearchError::Closed)))
                .collect()
        });
        let outcome = results.into_iter().collect::<Result<Vec<()>, _>>();
        if outcome.is_ok() {
            progress.stage("committing");
        }
        let outcome = outcome.and_then(|_| self.commit(upto)).and_then(|_| {
            self.with_writer(|w| {
                let segments = w.index().searchable_segment_ids()?;
                if segments.len() > REBUILD_SEGMENTS_KEPT {
                    progress.stage("merging segments");
                    w.merge(&segments).wait()?;
                }
                Ok(())
            })
        });
        // Back to the follower's writer (its memory budget and merge policy), whatever happened.
        let restored = self.swap_writer(WRITER_MEMORY);
        outcome?;
        restored?;
        self.inner.reader.reload()?;
        Ok(entities.len())
    }

    /// Replaces the writer with one of `memory` bytes (and the follower's merge policy,
    /// [`merge::CappedMergePolicy`]); the old one finishes its merges and releases the
    /// directory lock first.
    fn swap_writer(&self, memory: usize) -> Result<(), SearchError> {
        let mut guard = self.inner.writer.lock().map_err(|_| SearchError::Closed)?;
        let old = guard.take().ok_or(SearchError::Closed)?;
        let index = old.index().clone();
        let finished = old.wait_merging_threads();
        match open_writer_with(&index, memory) {
            Ok(writer) => *guard = Some(writer),
            Err(err) => {
                // Keep a writer if at all possible: the follower retries its passes.
                *guard = open_writer(&index).ok();
                return Err(err);
            }
        }
        Ok(finished?)
    }

    fn with_writer<R>(
        &self,
        f: impl FnOnce(&mut IndexWriter<TantivyDocument>) -> tantivy::Result<R>,
    ) -> Result<R, SearchError> {
        let mut guard = self.inner.writer.lock().map_err(|_| SearchError::Closed)?;
        let writer = guard.as_mut().ok_or(SearchError::Closed)?;
        Ok(f(writer)?)
    }

    /// Uses the broker's name directory when redacting event text for the masked fields, so
    /// a Masked-level caller cannot match a name the view would redact.
    pub fn use_names(&self, names: Arc<crate::directory::NameIndex>) {
        if let Ok(mut slot) = self.inner.names.lock() {
            *slot = Some(names);
        }
    }

    /// Replaces the documents of `entities` with their current profiles (or deletes them).
    /// Only the fields a document is built from are resolved ([`document::source_fields`]);
    /// the document is the one [`document::build`] makes from the full profile.
    fn index_entities(
        &self,
        resolver: &Resolver<'_>,
        entities: &[String],
        replace: bool,
        tokens: &mut document::Tokens<'_>,
    ) -> Result<(), SearchError> {
        let directory = self
            .inner
            .names
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|names| names.current()));
        let mut docs = Vec::with_capacity(entities.len());
        for entity in entities {
            // One entity that fails to open (tampered or moved ciphertext) or whose document
            // cannot be built (a panic in text handling) costs this entity its place in the
            // index, never the entities after it: it is recorded for the administrator, the
            // profile endpoint still answers for it, and search does not find it.
            let built = engine::problems::isolate("search_index", entity, || {
                match resolver.summary_from(entity, &|_| true, document::source_fields) {
                    Ok(profile) => Ok(Some(profile.map(|profile| {
                        document::build_with(
                            &profile,
                            &self.inner.fields,
                            tokens,
                            directory.as_deref(),
                        )
                    }))),
                    Err(ResolveError::Integrity { .. }) => Ok(None),
                    Err(err) => Err(err),
                }
            });
            let doc = match built {
                // Built, or gone from the store (its document is deleted).
                Some(Ok(Some(doc))) => doc,
                Some(Ok(None)) => {
                    self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                    engine::problems::record("search_index", entity, "integrity_error");
                    None
                }
                // Panicked: recorded by `isolate`.
                None => {
                    self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                    None
                }
                // The store itself failed: the whole pass is retried.
                Some(Err(err)) => return Err(err.into()),
            };
            docs.push((entity, doc));
        }
        self.with_writer(|writer| {
            for (entity, doc) in docs {
                if replace {
                    writer.delete_term(Term::from_field_text(self.inner.fields.id, entity));
                }
                if let Some(doc) = doc {
                    writer.add_document(doc)?;
                }
            }
            Ok(())
        })
    }

    fn commit(&self, seq: u64) -> Result<(), SearchError> {
        self.with_writer(|writer| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&format!("seq={seq}"));
            prepared.commit().map(|_| ())
        })?;
        self.inner.reader.reload()?;
        self.inner.indexed_seq.store(seq, Ordering::Release);
        Ok(())
    }

    /// One pass of the follower: a fresh index is built in one pass over the entities (not
    /// change by change), then every later change is indexed.
    fn follow(&self, source: &Source) -> Result<usize, SearchError> {
        if self.indexed_seq() == 0 && source.store.read()?.change_seq()? > 0 {
            self.rebuild(source)?;
        }
        self.catch_up(source)
    }

    /// Starts the task that keeps the index fresh. Errors are logged and retried.
    pub fn start_follower(&self, source: Source) {
        if let Ok(mut slot) = self.inner.source.lock() {
            *slot = Some(source.clone());
        }
        let index = self.clone();
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            while !index.inner.stopping.load(Ordering::Acquire) {
                let pass = index.clone();
                let source = source.clone();
                let result = tokio::task::spawn_blocking(move || pass.follow(&source)).await;
                match result {
                    Ok(Ok(_)) => {
                        failures = 0;
                        index
                            .inner
                            .last_good_pass
                            .store(unix_now(), Ordering::Relaxed);
                    }
                    Ok(Err(err)) => {
                        failures = failures.saturating_add(1);
                        tracing::error!(cause = %err, failures, "search index follower pass failed");
                    }
                    Err(err) => tracing::error!(cause = %err, "search index follower task failed"),
                }
                let pause = if failures == 0 {
                    COMMIT_INTERVAL
                } else {
                    Duration::from_secs(u64::from(failures.min(30)))
                };
                tokio::time::sleep(pause).await;
            }
        });
        if let Ok(mut slot) = self.inner.follower.lock() {
            *slot = Some(handle);
        }
    }

    /// Stops the follower, indexes what arrived since its last pass (so the next start does
    /// not begin behind, or from nothing) and releases the writer (and its directory lock).
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let handle = self.inner.follower.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        let source = self.inner.source.lock().ok().and_then(|mut s| s.take());
        if let Some(source) = source {
            let index = self.clone();
            let last = tokio::task::spawn_blocking(move || index.follow(&source)).await;
            match last {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::error!(cause = %err, "final search index pass failed: the next start catches up")
                }
                Err(err) => tracing::error!(cause = %err, "final search index pass failed"),
            }
        }
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.wait_merging_threads()).await;
        }
    }

    /// Runs a search for `principal` with the view `plan` of this request; see [`query`] for what is
    /// guaranteed about authorization.
    pub fn search(
        &self,
        principal: &Principal,
        plan: &ViewPlan,
        request: &SearchRequest,
    ) -> Result<SearchHits, SearchError> {
        if !self.is_ready() {
            return Err(SearchError::NotReady);
        }
        let parts: Vec<String> = request
            .q
            .split_whitespace()
            .take(8)
            .map(str::to_owned)
            .collect();
        let key = AccessKey::of(principal, plan);
        let learnt = match self.inner.access.lock() {
            Ok(mut cache) => {
                if cache.len() >= MAX_CACHED_ACCESS && !cache.contains_key(&key) {
                    cache.clear();
                }
                cache.entry(key).or_default().clone()
            }
            Err(_) => Arc::new(Learnt::default()),
        };
        let mut access = Access::learnt(principal, plan, learnt);
        let mut per_kind: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for kind in &request.kinds {
            let mut compiler = Compiler {
                fields: &self.inner.fields,
                blinder: &self.inner.blinder,
                access: &mut access,
                kind: *kind,
                filters: &self.inner.filters,
            };
            if let Some(q) = compiler.kind_query(&parts, &request.filters) {
                per_kind.push((Occur::Should, q));
            }
        }
        if per_kind.is_empty() {
            return Ok(SearchHits {
                total: 0,
                hits: Vec::new(),
            });
        }
        let query = BooleanQuery::new(per_kind);
        let searcher = self.inner.reader.searcher();
        let limit = request.limit.max(1);
        let offset = request.offset.min(MAX_OFFSET);
        let top = TopDocs::with_limit(limit).and_offset(offset);
        let (total, addresses): (usize, Vec<(f32, DocAddress)>) = match request.sort {
            SortOrder::Relevance => searcher.search(&query, &(Count, top.order_by_score()))?,
            SortOrder::Time => {
                let (total, docs) = searcher.search(
                    &query,
                    &(
                        Count,
                        top.order_by_fast_field::<i64>("occurred", Order::Desc),
                    ),
                )?;
                (total, docs.into_iter().map(|(_, a)| (0.0, a)).collect())
            }
        };
        let mut hits = Vec::with_capacity(addresses.len());
        for (score, address) in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            let id = doc
                .get_first(self.inner.fields.id)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let kind = doc
                .get_first(self.inner.fields.kind)
                .and_then(|v| v.as_str())
                .and_then(RecordKind::parse);
            if let (Some(id), Some(kind)) = (id, kind) {
                hits.push(Hit { id, kind, score });
            }
        }
        Ok(SearchHits { total, hits })
    }
}

fn open_writer(index: &Index) -> Result<IndexWriter<TantivyDocument>, SearchError> {
    open_writer_with(index, WRITER_MEMORY)
}

fn open_writer_with(
    index: &Index,
    memory: usize,
) -> Result<IndexWriter<TantivyDocument>, SearchError> {
    // A writer of a broker that is still shutting down in this process may hold the lock
    // for a moment: retry briefly before failing.
    let mut attempts = 0;
    loop {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min((memory / MIN_MEMORY_PER_THREAD).max(1));
        let options = tantivy::indexer::IndexWriterOptions::builder()
            .num_worker_threads(threads)
            .memory_budget_per_thread(memory / threads)
            .num_merge_threads(MERGE_THREADS)
            .build();
        match index.writer_with_options(options) {
            Ok(writer) => {
                writer.set_merge_policy(Box::new(merge::CappedMergePolicy::default()));
                return Ok(writer);
            }
            Err(tantivy::TantivyError::LockFailure(..)) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Total size in bytes of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `safegrid reindex`: rebuilds `<data_dir>/index` from the store. A broker running on the
/// same data directory holds the index writer lock, and reindex then fails without changing
/// anything. Uses the default authority order (as a broker without `[authority]` does).
pub fn reindex(data_dir: &Path, master_key: Option<&Path>) -> anyhow::Result<usize> {
    reindex_with_progress(data_dir, master_key, &Silent)
}

/// [`reindex`], reporting entities to `progress` as [`SearchIndex::rebuild_with_progress`]
/// does (the store is opened exclusively, so the advances add up to the total).
pub fn reindex_with_progress(
    data_dir: &Path,
    master_key: Option<&Path>,
    progress: &dyn Progress,
) -> anyhow::Result<usize> {
    use anyhow::Context;
    let store = Arc::new(
        Store::open_with_cache(&data_dir.join("store.redb"), REINDEX_CACHE_BYTES)
            .context("opening the store")?,
    );
    reindex_store(store, data_dir, master_key, progress)
}

/// [`reindex_with_progress`] from a store already open (a PostgreSQL store, which brokers may
/// be serving meanwhile: the rebuild reads one snapshot and then catches up with the changes
/// after it).
pub fn reindex_store(
    store: Arc<Store>,
    data_dir: &Path,
    master_key: Option<&Path>,
    progress: &dyn Progress,
) -> anyhow::Result<usize> {
    use anyhow::Context;
    let master = vault::keys::load_master_key(data_dir, master_key, false)?;
    let keys = Arc::new(vault::keys::load_key_ring(&store, &master).context("loading keys")?);
    let index = SearchIndex::open(data_dir, &keys)?;
    let source = Source {
        store,
        keys,
        authority: AuthorityOrder::default(),
    };
    let count = index.rebuild_with_progress(&source, progress)?;
    index.catch_up(&source)?;
    let writer = index.inner.writer.lock().ok().and_then(|mut w| w.take());
    if let Some(writer) = writer {
        writer.wait_merging_threads()?;
    }
    Ok(count)
}

/// A digest of the user dictionary the process-wide segmenter uses: event text is indexed
/// by its words, so another dictionary means another index.
fn dictionary_fingerprint() -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for word in chinese_text::segment::shared().user_words() {
        context.update(word.word.as_bytes());
        context.update(format!(" {:?}\n", word.frequency).as_bytes());
    }
    hex::encode(&context.finish().as_ref()[..8])
}

/// Seconds since the Unix epoch (0 on a clock before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use demo::generate::{DemoConfig, DemoWorld, STREET_CODE};
    use engine::ingest::Pipeline;
    use model::{Department, DivisionCode};
    use policies::authz::{PolicyFiles, PolicySet};
    use policies::Principal;
    use tantivy::schema::document::Document as _;
    use vault::crypto::MasterKey;

    /// A small generated street in a fresh store.
    fn street(residents: usize) -> (tempfile::TempDir, Arc<Store>, Arc<KeyRing>) {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load(Some(&dir.path().join("master.key")), true).unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("store.redb")).unwrap());
        let keys = Arc::new(vault::keys::load_key_ring(&store, &master).unwrap());
        let world = DemoWorld::new(DemoConfig {
            residents,
            seed: 7,
            bad_record_rate: 0.0,
        });
        let pipeline = Pipeline::new(store.clone(), keys.clone());
        for department in ["zhujian", "gongan", "minzheng", "weijian", "sifa", "wangge"] {
            let body = world.ndjson(department, 0..residents);
            pipeline
                .ingest(Department::parse(department).unwrap(), body.as_bytes())
                .unwrap();
        }
        (dir, store, keys)
    }

    fn entities(store: &Store) -> Vec<String> {
        let snapshot = store.read().unwrap();
        let mut seen = HashSet::new();
        snapshot
            .changes_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| seen.insert(e.clone()).then_some(e))
            .collect()
    }

    /// `safegrid reindex` on a small generated street reports every entity: the total once
    /// the entities are listed, then advances that add up to it and to what it returns.
    #[test]
    fn reindex_reports_a_total_and_advances_that_add_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let master_key = dir.path().join("data.master-key");
        let expected = {
            let master = MasterKey::load(Some(&master_key), true).unwrap();
            let store = Arc::new(Store::open(&data.join("store.redb")).unwrap());
            let keys = Arc::new(vault::keys::load_key_ring(&store, &master).unwrap());
            let world = DemoWorld::new(DemoConfig {
                residents: 150,
                seed: 7,
                bad_record_rate: 0.0,
            });
            let pipeline = Pipeline::new(store.clone(), keys);
            for department in ["zhujian", "gongan", "minzheng", "wangge"] {
                let body = world.ndjson(department, 0..150);
                pipeline
                    .ingest(Department::parse(department).unwrap(), body.as_bytes())
                    .unwrap();
            }
            entities(&store).len() as u64
        };
        assert!(expected > 150);
        let progress = vault::progress::Counting::new();
        let count = reindex_with_progress(&data, Some(&master_key), &progress).unwrap();
        assert_eq!(count as u64, expected);
        assert_eq!(progress.totals(), vec![expected]);
        assert_eq!(progress.advanced(), expected);
        assert_eq!(progress.advanced_before_total(), 0);
        assert!(progress.stages().iter().any(|s| s == "indexing"));
    }

    #[test]
    fn search_documents_from_the_light_resolution_equal_those_of_the_full_profile() {
        let (_dir, store, keys) = street(300);
        let authority = AuthorityOrder::default();
        let snapshot = store.read().unwrap();
        let resolver = Resolver {
            reader: &snapshot,
            keys: &keys,
            authority: &authority,
        };
        let (schema, fields) = build_schema();
        let blinder = Blinder::new(&keys);
        let mut tokens = document::Tokens::new(&blinder, 64);
        let mut kinds = HashSet::new();
        for entity in entities(&store) {
            let full = resolver.profile(&entity).unwrap().unwrap();
            let light = resolver
                .summary_from(&entity, &|_| true, document::source_fields)
                .unwrap()
                .unwrap();
            kinds.insert(full.kind);
            let expected = document::build(&full, &fields, &blinder, None).to_json(&schema);
            let got = document::build_with(&light, &fields, &mut tokens, None).to_json(&schema);
            assert_eq!(expected, got, "document of {entity}");
        }
        assert_eq!(
            kinds.len(),
            RecordKind::ALL.len(),
            "residents, houses, events and organizations were compared"
        );
    }

    #[tokio::test]
    async fn search_summaries_from_the_light_resolution_equal_those_of_the_full_profile() {
        let (_dir, store, keys) = street(300);
        let authority = AuthorityOrder::default();
        let purposes: Vec<String> = ["routine_visit", "case_investigation"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let policy = Arc::new(
            PolicySet::compile(&PolicyFiles::defaults(), &purposes)
                .await
                .unwrap(),
        );
        let snapshot = store.read().unwrap();
        let resolver = Resolver {
            reader: &snapshot,
            keys: &keys,
            authority: &authority,
        };
        let names = |p: &model::profile::Profile| -> Vec<String> {
            let mut out: Vec<String> = p
                .fields
                .get("name")
                .and_then(|f| f.value.as_str().map(str::to_owned))
                .into_iter()
                .collect();
            for relation in ["occupants", "parties"] {
                for r in p.related.get(relation).into_iter().flatten() {
                    out.extend(r.label.clone());
                }
            }
            out
        };
        for role in ["grid_worker", "street_officer", "community_officer"] {
            for purpose in &purposes {
                let principal = Principal {
                    sub: "t".into(),
                    name: "t".into(),
                    roles: vec![role.to_owned()],
                    jurisdiction: vec![DivisionCode::parse(STREET_CODE).unwrap()],
                    dept: None,
                };
                let plan = ViewPlan::new(policy.clone(), &principal, purpose, false);
                for entity in entities(&store) {
                    let visible = |d| plan.department_visible(d);
                    let full = resolver.profile_from(&entity, &visible).unwrap();
                    let light = resolver
                        .summary_from(&entity, &visible, crate::summary::summary_sources)
                        .unwrap();
                    let (Some(mut full), Some(mut light)) = (full, light) else {
                        continue;
                    };
                    let full_names = names(&full);
                    plan.apply(&mut full, &full_names, None);
                    let light_names = names(&light);
                    plan.apply(&mut light, &light_names, None);
                    assert_eq!(full.grid, light.grid);
                    for field in crate::summary::summary_fields(full.kind) {
                        assert_eq!(
                            full.fields.get(*field).map(|f| &f.value),
                            light.fields.get(*field).map(|f| &f.value),
                            "{field} of {entity} for {role}/{purpose}"
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn overdue_events_are_those_still_open_past_their_types_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load(Some(&dir.path().join("master.key")), true).unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("store.redb")).unwrap());
        let keys = Arc::new(vault::keys::load_key_ring(&store, &master).unwrap());
        let pipeline = Pipeline::new(store.clone(), keys.clone());
        let now = chrono::Utc::now();
        let hours_ago = |hours: i64| (now - chrono::Duration::hours(hours)).to_rfc3339();
        let grid = format!("{STREET_CODE}001003");
        // (source id, type, status, hours since it occurred)
        let events = [
            ("D-LATE", "dispute", "reported", 80),
            ("D-FRESH", "dispute", "accepted", 10),
            ("D-RESOLVED", "dispute", "resolved", 80),
            ("F-LATE", "fire_hazard", "in_progress", 30),
            // Its own deadline is longer than the default: not late yet.
            ("C-WITHIN-OWN", "illegal_construction", "reported", 200),
            ("S-WITHIN-DEFAULT", "sanitation", "dispatched", 100),
            ("S-LATE", "sanitation", "reported", 200),
            ("S-CLOSED", "sanitation", "closed", 500),
            // A department's own word for a state is not a lifecycle state.
            ("S-OWN-WORD", "sanitation", "open", 500),
        ];
        let body: String = events
            .iter()
            .map(|(id, event_type, status, hours)| {
                let record = serde_json::json!({"kind":"event","source_id":id,"version":"1",
                    "type":event_type,"title":"事件","status":status,
                    "occurred_at":hours_ago(*hours),"grid":grid});
                format!("{record}\n")
            })
            .collect();
        let receipt = pipeline
            .ingest(Department::Wangge, body.as_bytes())
            .unwrap();
        assert_eq!(receipt.accepted, events.len(), "{receipt:?}");
        let index = SearchIndex::open(dir.path(), &keys).unwrap();
        let source = Source {
            store: store.clone(),
            keys: keys.clone(),
            authority: AuthorityOrder::default(),
        };
        index.rebuild(&source).unwrap();
        index.catch_up(&source).unwrap();

        let purposes = vec!["routine_visit".to_owned()];
        let policy = Arc::new(
            PolicySet::compile(&PolicyFiles::defaults(), &purposes)
                .await
                .unwrap(),
        );
        let principal = Principal {
            sub: "t".into(),
            name: "t".into(),
            roles: vec!["street_officer".to_owned()],
            jurisdiction: vec![DivisionCode::parse(STREET_CODE).unwrap()],
            dept: None,
        };
        let plan = ViewPlan::new(policy, &principal, "routine_visit", false);
        let cut_off = |hours: i64| (now - chrono::Duration::hours(hours)).timestamp();
        let overdue = query::Overdue {
            open_statuses: ["reported", "accepted", "dispatched", "in_progress"]
                .map(str::to_owned)
                .to_vec(),
            due_before: vec![
                ("dispute".to_owned(), cut_off(72)),
                ("fire_hazard".to_owned(), cut_off(24)),
                ("illegal_construction".to_owned(), cut_off(300)),
            ],
            default_due_before: cut_off(168),
        };
        let found = |kinds: Vec<RecordKind>, filters: Filters| {
            let request = SearchRequest {
                kinds,
                q: String::new(),
                filters,
                sort: SortOrder::Relevance,
                offset: 0,
                limit: 100,
            };
            let hits = index.search(&principal, &plan, &request).unwrap();
            let mut ids: Vec<&str> = hits
                .hits
                .iter()
                .filter_map(|hit| {
                    events
                        .iter()
                        .map(|(id, ..)| *id)
                        .find(|id| pipeline.event_entity(Department::Wangge, id) == hit.id)
                })
                .collect();
            ids.sort_unstable();
            (hits.total, ids)
        };
        let all = found(vec![RecordKind::Event], Filters::default());
        assert_eq!(
            all.0,
            events.len(),
            "without the filter every event is found"
        );
        let late = Filters {
            overdue: Some(overdue.clone()),
            ..Filters::default()
        };
        assert_eq!(
            found(vec![RecordKind::Event], late.clone()),
            (3, vec!["D-LATE", "F-LATE", "S-LATE"]),
            "open and past the deadline of their own type, or the default one"
        );
        let late_disputes = Filters {
            event_type: Some("dispute".to_owned()),
            ..late.clone()
        };
        assert_eq!(
            found(vec![RecordKind::Event], late_disputes),
            (1, vec!["D-LATE"])
        );
        let nothing_open = Filters {
            overdue: Some(query::Overdue {
                open_statuses: Vec::new(),
                ..overdue
            }),
            ..Filters::default()
        };
        assert_eq!(found(vec![RecordKind::Event], nothing_open).0, 0);
        assert_eq!(
            found(vec![RecordKind::Resident, RecordKind::House], late).0,
            0,
            "only events can be overdue"
        );
    }

    #[tokio::test]
    async fn searches_are_refused_until_the_index_has_caught_up_and_shutdown_indexes_the_rest() {
        let (dir, store, keys) = street(40);
        let purposes = vec!["routine_visit".to_owned()];
        let policy = Arc::new(
            PolicySet::compile(&PolicyFiles::defaults(), &purposes)
                .await
                .unwrap(),
        );
        let principal = Principal {
            sub: "t".into(),
            name: "t".into(),
            roles: vec!["street_officer".to_owned()],
            jurisdiction: vec![DivisionCode::parse(STREET_CODE).unwrap()],
            dept: None,
        };
        let plan = ViewPlan::new(policy.clone(), &principal, "routine_visit", false);
        let request = SearchRequest {
            kinds: vec![RecordKind::Resident],
            q: String::new(),
            filters: Filters::default(),
            sort: SortOrder::Relevance,
            offset: 0,
            limit: 10,
        };
        let source = Source {
            store: store.clone(),
            keys: keys.clone(),
            authority: AuthorityOrder::default(),
        };

        let index = SearchIndex::open(dir.path(), &keys).unwrap();
        assert!(
            !index.is_ready(),
            "a fresh index over a full store is not ready"
        );
        assert!(matches!(
            index.search(&principal, &plan, &request),
            Err(SearchError::NotReady)
        ));
        index.rebuild(&source).unwrap();
        assert!(!index.is_ready(), "built, but not yet followed to the end");
        index.catch_up(&source).unwrap();
        assert!(index.is_ready());
        let before = index.search(&principal, &plan, &request).unwrap().total;
        assert!(before >= 40, "every resident is found, got {before}");

        // Changes the follower has not seen yet are indexed by the shutdown's last pass, so
        // the index on disk is current and the next start has nothing to do.
        index.start_follower(source.clone());
        index.inner.stopping.store(true, Ordering::Release);
        let world = DemoWorld::new(DemoConfig {
            residents: 50,
            seed: 8,
            bad_record_rate: 0.0,
        });
        Pipeline::new(store.clone(), keys.clone())
            .ingest(
                Department::parse("gongan").unwrap(),
                world.ndjson("gongan", 0..50).as_bytes(),
            )
            .unwrap();
        index.shutdown().await;
        let upto = store.read().unwrap().change_seq().unwrap();
        drop(index);
        let reopened = SearchIndex::open(dir.path(), &keys).unwrap();
        assert_eq!(reopened.indexed_seq(), upto);
    }
}
