//! Clustering a batch: records with the same valid ID number form one entity, then automatic
//! links join entities, strongest link first.
//!
//! Guarantees: no cluster ever holds two different valid ID numbers — a link that would join
//! two clusters each holding a different valid number is refused (and counted), whatever its
//! weight. Records with the same valid ID number always end in the same cluster. The result
//! depends only on the records and the links (ties in weight are broken by record index).

use std::collections::HashMap;

use super::record::LinkRecord;

const NO_ID: u32 = u32::MAX;

/// Cluster labels of a batch.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    /// `cluster_of[i]`: the smallest record index in record `i`'s cluster.
    pub cluster_of: Vec<u32>,
    /// Links refused because they would have merged two different valid ID numbers.
    pub refused_links: usize,
}

/// Union-find whose roots remember their cluster's valid ID number.
#[derive(Debug)]
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
    id_of_root: Vec<u32>,
}

impl UnionFind {
    fn find(&mut self, mut x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        while self.parent[x as usize] != root {
            let next = self.parent[x as usize];
            self.parent[x as usize] = root;
            x = next;
        }
        root
    }

    /// Joins the clusters of `a` and `b` unless they hold different valid ID numbers.
    fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return true;
        }
        let (ia, ib) = (self.id_of_root[ra as usize], self.id_of_root[rb as usize]);
        if ia != NO_ID && ib != NO_ID && ia != ib {
            return false;
        }
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        self.id_of_root[big as usize] = if ia != NO_ID { ia } else { ib };
        true
    }
}

/// Clusters `records`: equal valid ID numbers first, then `links` (`(i, j, weight)`) in
/// descending weight. `links` is sorted in place.
pub fn cluster(records: &[LinkRecord], links: &mut [(u32, u32, f64)]) -> Clusters {
    let n = records.len().min(u32::MAX as usize - 1);
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut id_of_root = vec![NO_ID; n];
    for (i, record) in records.iter().take(n).enumerate() {
        if let Some(id) = record.valid_id() {
            let next = ids.len() as u32;
            id_of_root[i] = *ids.entry(id).or_insert(next);
        }
    }
    let mut uf = UnionFind {
        parent: (0..n as u32).collect(),
        size: vec![1; n],
        id_of_root,
    };
    // Same valid ID: one entity (the deterministic upstream merge).
    let mut first_with_id: HashMap<u32, u32> = HashMap::with_capacity(ids.len());
    for i in 0..n as u32 {
        let id = uf.id_of_root[i as usize];
        if id != NO_ID {
            let first = *first_with_id.entry(id).or_insert(i);
            uf.union(first, i);
        }
    }
    links.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let mut refused_links = 0;
    for &(i, j, _) in links.iter() {
        if (i as usize) < n && (j as usize) < n && !uf.union(i, j) {
            refused_links += 1;
        }
    }
    let mut smallest: HashMap<u32, u32> = HashMap::new();
    let mut cluster_of = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let root = uf.find(i);
        cluster_of.push(*smallest.entry(root).or_insert(i));
    }
    Clusters {
        cluster_of,
        refused_links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkage::record::LinkInput;
    use model::{id_number_check_digit, Department};

    fn with_id(id: Option<String>) -> LinkRecord {
        LinkRecord::from_input(&LinkInput {
            department: Department::Sifa,
            row_key: "r",
            id_number: id.as_deref(),
            name: Some("张伟"),
            birth_date: None,
            gender: None,
            phone: None,
            address: None,
            grid: None,
        })
    }

    fn id(first17: &str) -> Option<String> {
        let check = id_number_check_digit(first17)?;
        Some(format!("{first17}{check}"))
    }

    #[test]
    fn links_never_join_two_valid_ids() {
        let records = vec![
            with_id(id("11010519800101001")),
            with_id(None),
            with_id(id("11010519800101003")),
            with_id(id("11010519800101001")),
            with_id(None),
        ];
        assert!(records[0].id_valid() && records[2].id_valid());
        // 1 links to both ID holders: the stronger link wins, the other is refused.
        let mut links = vec![(0, 1, 10.0), (1, 2, 20.0), (3, 4, 5.0)];
        let clusters = cluster(&records, &mut links);
        assert_eq!(clusters.refused_links, 1);
        assert_eq!(clusters.cluster_of, vec![0, 1, 1, 0, 0]);
    }
}
