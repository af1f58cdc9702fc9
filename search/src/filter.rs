//! Authorization filters as cached per-segment bitsets.
//!
//! The clauses that authorize a search — the kind, the caller's jurisdiction, the departments
//! whose holding of a resident the caller may know about, and the source guards of fields
//! visible only from some departments — match most documents of the index. As unions of
//! term postings they cost a pass over thousands of postings for every candidate a rare
//! query term proposes (tantivy's buffered union refills a 4,096-document window per far
//! seek). Here each such clause is evaluated once per segment into a bitset and reused by
//! every later search with the same clause.
//!
//! Guarantees:
//! - A [`FilterQuery`] matches exactly the documents that match every group of its
//!   [`FilterSpec`] (each group: any of its terms in its field), with score 0, as the
//!   `ConstScoreQuery(BooleanQuery(…), 0.0)` it replaces did. Deleted documents are left to
//!   the collector, as for a term query.
//! - A cached bitset belongs to one segment (segments never change once written; deletes are
//!   applied by the collector), so it is never stale. The cache holds at most
//!   [`MAX_ENTRIES`] bitsets and holds only document numbers, no terms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::query::{ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, Term, TERMINATED};

/// Bitsets kept at most (each `max_doc / 8` bytes: 184 KiB at 1.5 M documents).
pub const MAX_ENTRIES: usize = 256;

/// A conjunction of groups; a group matches a document holding any of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    groups: Vec<(Field, Vec<String>)>,
}

impl FilterSpec {
    pub fn new() -> FilterSpec {
        FilterSpec { groups: Vec::new() }
    }

    /// Adds a group: any of `terms` in `field` (sorted, so equal groups share a bitset).
    pub fn any_of(mut self, field: Field, mut terms: Vec<String>) -> FilterSpec {
        terms.sort();
        terms.dedup();
        self.groups.push((field, terms));
        self
    }
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec::new()
    }
}

/// A filter in one segment.
type FilterKey = (SegmentId, Arc<FilterSpec>);

/// The per-segment bitsets of filters, shared by every search of one index.
#[derive(Default)]
pub struct FilterCache {
    sets: Mutex<HashMap<FilterKey, Arc<BitSet>>>,
}

impl std::fmt::Debug for FilterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.sets.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("FilterCache")
            .field("entries", &entries)
            .finish()
    }
}

impl FilterCache {
    fn bitset(
        &self,
        reader: &SegmentReader,
        spec: &Arc<FilterSpec>,
    ) -> tantivy::Result<Arc<BitSet>> {
        let key = (reader.segment_id(), spec.clone());
        if let Some(set) = self.sets.lock().ok().and_then(|s| s.get(&key).cloned()) {
            return Ok(set);
        }
        let set = Arc::new(evaluate(reader, spec)?);
        if let Ok(mut sets) = self.sets.lock() {
            if sets.len() >= MAX_ENTRIES {
                sets.clear();
            }
            sets.insert(key, set.clone());
        }
        Ok(set)
    }
}

/// The documents of `reader` matching `spec`.
fn evaluate(reader: &SegmentReader, spec: &FilterSpec) -> tantivy::Result<BitSet> {
    let max_doc = reader.max_doc();
    let mut result: Option<BitSet> = None;
    for (field, terms) in &spec.groups {
        let inverted = reader.inverted_index(*field)?;
        let mut group = BitSet::with_max_value(max_doc);
        for text in terms {
            let term = Term::from_field_text(*field, text);
            if let Some(mut postings) = inverted.read_postings(&term, IndexRecordOption::Basic)? {
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    group.insert(doc);
                    doc = postings.advance();
                }
            }
        }
        result = Some(match result {
            None => group,
            Some(previous) => {
                let mut both = BitSet::with_max_value(max_doc);
                let mut docs = SharedBitSetDocSet::new(Arc::new(previous));
                let mut doc = docs.doc();
                while doc != TERMINATED {
                    if group.contains(doc) {
                        both.insert(doc);
                    }
                    doc = docs.advance();
                }
                both
            }
        });
    }
    // No group: nothing is authorized.
    Ok(result.unwrap_or_else(|| BitSet::with_max_value(max_doc)))
}

/// A filter clause (score 0) evaluated through the [`FilterCache`].
#[derive(Clone)]
pub struct FilterQuery {
    spec: Arc<FilterSpec>,
    cache: Arc<FilterCache>,
}

impl std::fmt::Debug for FilterQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterQuery")
            .field("groups", &self.spec.groups.len())
            .finish()
    }
}

impl FilterQuery {
    pub fn new(spec: FilterSpec, cache: Arc<FilterCache>) -> FilterQuery {
        FilterQuery {
            spec: Arc::new(spec),
            cache,
        }
    }
}

impl Query for FilterQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(FilterWeight {
            spec: self.spec.clone(),
            cache: self.cache.clone(),
        }))
    }
}

struct FilterWeight {
    spec: Arc<FilterSpec>,
    cache: Arc<FilterCache>,
}

impl Weight for FilterWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let set = self.cache.bitset(reader, &self.spec)?;
        Ok(Box::new(ConstScorer::new(
            SharedBitSetDocSet::new(set),
            0.0,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let set = self.cache.bitset(reader, &self.spec)?;
        if doc < set.max_value() && set.contains(doc) {
            Ok(Explanation::new("authorization filter", 0.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(
                "the document does not pass the filter".to_owned(),
            ))
        }
    }
}

/// Iterates a shared bitset (tantivy's `BitSetDocSet` owns its bitset).
struct SharedBitSetDocSet {
    docs: Arc<BitSet>,
    buckets: u32,
    bucket: u32,
    word: u64,
    doc: DocId,
}

impl SharedBitSetDocSet {
    fn new(docs: Arc<BitSet>) -> SharedBitSetDocSet {
        let buckets = docs.max_value().div_ceil(64);
        let mut set = SharedBitSetDocSet {
            docs,
            buckets,
            bucket: 0,
            word: 0,
            doc: 0,
        };
        if buckets > 0 {
            set.word = set.word_at(0);
            set.advance();
        } else {
            set.doc = TERMINATED;
        }
        set
    }

    fn word_at(&self, bucket: u32) -> u64 {
        u64::from_le_bytes(self.docs.tinyset(bucket).into_bytes())
    }
}

impl DocSet for SharedBitSetDocSet {
    fn advance(&mut self) -> DocId {
        loop {
            if self.word != 0 {
                let low = self.word.trailing_zeros();
                self.word &= self.word - 1;
                self.doc = self.bucket * 64 + low;
                return self.doc;
            }
            let next = self.bucket + 1;
            match (next < self.buckets)
                .then(|| self.docs.first_non_empty_bucket(next))
                .flatten()
            {
                Some(bucket) => {
                    self.bucket = bucket;
                    self.word = self.word_at(bucket);
                }
                None => {
                    self.bucket = self.buckets;
                    self.doc = TERMINATED;
                    return TERMINATED;
                }
            }
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        if target >= self.docs.max_value() {
            self.doc = TERMINATED;
            return TERMINATED;
        }
        let bucket = target / 64;
        if bucket > self.bucket {
            self.bucket = bucket;
            self.word = self.word_at(bucket);
        }
        // Drop the bits below the target in the current bucket.
        self.word &= u64::MAX << (target % 64);
        self.advance()
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.docs.len() as u32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn docs(set: &mut SharedBitSetDocSet) -> Vec<DocId> {
        let mut out = Vec::new();
        let mut doc = set.doc();
        while doc != TERMINATED {
            out.push(doc);
            doc = set.advance();
        }
        out
    }

    #[test]
    fn the_shared_docset_walks_and_seeks_like_the_bitset() {
        let wanted = [0u32, 1, 63, 64, 65, 200, 4095, 4096, 9999];
        let mut bits = BitSet::with_max_value(10_000);
        for d in wanted {
            bits.insert(d);
        }
        let bits = Arc::new(bits);
        assert_eq!(docs(&mut SharedBitSetDocSet::new(bits.clone())), wanted);
        let mut set = SharedBitSetDocSet::new(bits.clone());
        assert_eq!(set.seek(2), 63);
        assert_eq!(set.seek(63), 63);
        assert_eq!(set.seek(66), 200);
        assert_eq!(set.seek(4000), 4095);
        assert_eq!(set.seek(4097), 9999);
        assert_eq!(set.seek(10_000), TERMINATED);
        let empty = Arc::new(BitSet::with_max_value(0));
        assert_eq!(SharedBitSetDocSet::new(empty).doc(), TERMINATED);
        let none = Arc::new(BitSet::with_max_value(130));
        assert_eq!(SharedBitSetDocSet::new(none).doc(), TERMINATED);
    }
}
