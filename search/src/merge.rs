//! How the follower's index writer merges segments: tantivy's log merge policy (segments of
//! similar size are merged eight at a time), except that no merge produces a segment of more
//! than [`MAX_MERGED_DOCS`] documents.
//!
//! Why: a merge holds memory and a core in proportion to what it writes. Left alone, the log
//! policy merges ever larger levels as a street grows — at 1,000,000 residents, eight segments
//! of about 130,000 documents into one of 1,040,000 in the middle of the demo's load, the
//! broker's largest moment of resident memory (BENCHMARKS.md, "Memory"). With the cap, the
//! largest merge is the same whatever the size of the street, and search reads a few more
//! segments (about one per [`MAX_MERGED_DOCS`] documents, plus the small levels). The writer
//! runs one merge at a time (`MERGE_THREADS` in the crate root): three capped merges side by
//! side held as much memory as the one large merge had.
//!
//! Guarantees: every merge proposed is a subset of one the log policy proposed, of at least
//! two segments, whose live documents add up to at most [`MAX_MERGED_DOCS`]; a segment
//! already over the cap is never merged again (a full rebuild's segments are such).

use std::collections::HashMap;

use tantivy::index::{SegmentId, SegmentMeta};
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};

/// Most live documents a merge may produce.
pub const MAX_MERGED_DOCS: u32 = 400_000;

/// The follower's merge policy; see the module documentation.
#[derive(Debug, Default)]
pub struct CappedMergePolicy {
    log: LogMergePolicy,
}

impl MergePolicy for CappedMergePolicy {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        let docs: HashMap<SegmentId, u32> =
            segments.iter().map(|s| (s.id(), s.num_docs())).collect();
        self.log
            .compute_merge_candidates(segments)
            .into_iter()
            .flat_map(|candidate| split(candidate.0, &docs))
            .collect()
    }
}

/// Splits one candidate into merges of at most [`MAX_MERGED_DOCS`]: the largest segments
/// first, each merge filled while it stays under the cap; merges of one segment are dropped.
fn split(mut ids: Vec<SegmentId>, docs: &HashMap<SegmentId, u32>) -> Vec<MergeCandidate> {
    let size = |id: &SegmentId| docs.get(id).copied().unwrap_or(u32::MAX);
    ids.sort_by_key(|id| std::cmp::Reverse(size(id)));
    let mut merges = Vec::new();
    let mut current: Vec<SegmentId> = Vec::new();
    let mut total: u64 = 0;
    for id in ids {
        let n = u64::from(size(&id));
        if !current.is_empty() && total + n > u64::from(MAX_MERGED_DOCS) {
            if current.len() >= 2 {
                merges.push(MergeCandidate(std::mem::take(&mut current)));
            }
            current.clear();
            total = 0;
        }
        if n <= u64::from(MAX_MERGED_DOCS) {
            current.push(id);
            total += n;
        }
    }
    if current.len() >= 2 {
        merges.push(MergeCandidate(current));
    }
    merges
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tantivy::schema::{Schema, STRING};
    use tantivy::{doc, Index, IndexWriter, TantivyDocument};

    /// A real index whose segments hold `sizes` documents each (one commit per segment).
    fn segments(sizes: &[u32]) -> Vec<SegmentMeta> {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for (s, &n) in sizes.iter().enumerate() {
            for d in 0..n {
                writer.add_document(doc!(id => format!("{s}-{d}"))).unwrap();
            }
            writer.commit().unwrap();
        }
        index.searchable_segment_metas().unwrap()
    }

    fn merged_sizes(sizes: &[u32], fake_scale: u32) -> Vec<Vec<u32>> {
        let metas = segments(sizes);
        // The documents are scaled up in the size table the split reads, so that a test
        // index of a few thousand documents stands for one of a million.
        let docs: HashMap<SegmentId, u32> = metas
            .iter()
            .map(|m| (m.id(), m.num_docs() * fake_scale))
            .collect();
        let log = LogMergePolicy::default().compute_merge_candidates(&metas);
        let mut out: Vec<Vec<u32>> = log
            .into_iter()
            .flat_map(|c| split(c.0, &docs))
            .map(|c| {
                let mut sizes: Vec<u32> = c.0.iter().map(|id| docs[id]).collect();
                sizes.sort_unstable();
                sizes
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn small_levels_merge_as_the_log_policy_says() {
        let metas = segments(&[10; 8]);
        let capped = CappedMergePolicy::default().compute_merge_candidates(&metas);
        let log = LogMergePolicy::default().compute_merge_candidates(&metas);
        assert_eq!(capped.len(), 1);
        assert_eq!(log.len(), 1);
        let mut a = capped[0].0.clone();
        let mut b = log[0].0.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(CappedMergePolicy::default()
            .compute_merge_candidates(&segments(&[10; 7]))
            .is_empty());
    }

    #[test]
    fn eight_segments_of_130k_become_merges_under_the_cap() {
        // 8 segments of 1,300 documents standing for 130,000 each.
        let merges = merged_sizes(&[1_300; 8], 100);
        assert_eq!(merges.len(), 3, "{merges:?}");
        for merge in &merges {
            assert!(merge.len() >= 2);
            assert!(merge.iter().sum::<u32>() <= MAX_MERGED_DOCS);
        }
        assert_eq!(merges.iter().map(Vec::len).sum::<usize>(), 8);
    }

    #[test]
    fn segments_near_or_over_the_cap_are_never_merged() {
        // Eight segments of 300,000: no two fit under the cap.
        assert!(merged_sizes(&[3_000; 8], 100).is_empty());
        // A rebuild's segments over the cap, beside small ones of their level.
        let metas = segments(&[5_000; 8]);
        let docs: HashMap<SegmentId, u32> = metas.iter().map(|m| (m.id(), 740_000)).collect();
        let ids = metas.iter().map(SegmentMeta::id).collect();
        assert!(split(ids, &docs).is_empty());
    }
}
