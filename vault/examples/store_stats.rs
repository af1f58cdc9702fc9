//! Where the bytes of an embedded store file go: redb's statistics per table, and the source
//! rows and link keys broken down by part and by link kind. For BENCHMARKS.md ("Store size");
//! run on a stopped broker's file, ideally after `safegrid compact`:
//!
//! `cargo run --release -p vault --example store_stats -- <DATA_DIR>/store.redb`

use std::collections::BTreeMap;

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
const LINKS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("links");
const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("changes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: store_stats <store.redb>"))?;
    let file_bytes = std::fs::metadata(&path)?.len();
    let db = Database::open(&path)?;
    let tx = db.begin_read()?;
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;

    println!("file {:.1} MiB", mib(file_bytes));
    let sources = tx.open_table(SOURCES)?;
    let links = tx.open_multimap_table(LINKS)?;
    let rows = sources.len()?;
    let mut all = vec![("sources", sources.stats()?), ("links", links.stats()?)];
    if let Ok(changes) = tx.open_table(CHANGES) {
        all.push(("changes", changes.stats()?));
    }
    if let Ok(meta) = tx.open_table(META) {
        all.push(("meta", meta.stats()?));
    }
    for (name, stats) in all {
        println!(
            "table {name:<8} stored {:>7.1} MiB  leaf pages {:>7.1} MiB  branch pages {:>6.1} MiB  fragmented {:>6.1} MiB",
            mib(stats.stored_bytes()),
            // redb pages are 4 KiB.
            mib(stats.leaf_pages() * 4096),
            mib(stats.branch_pages() * 4096),
            mib(stats.fragmented_bytes()),
        );
    }

    let (mut key_bytes, mut row_bytes, mut sealed, mut clear, mut link_bytes) = (0, 0, 0, 0, 0);
    let mut sealed_fields: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for entry in sources.iter()? {
        let (key, value) = entry?;
        let (key, value) = (key.value(), value.value());
        key_bytes += key.len() as u64;
        row_bytes += value.len() as u64;
        let source = vault::row::decode(key, value)?;
        for (name, ciphertext) in &source.sealed {
            sealed += (name.len() + ciphertext.len()) as u64;
            let e = sealed_fields.entry(name.clone()).or_default();
            e.0 += 1;
            e.1 += ciphertext.len() as u64;
        }
        for (name, value) in &source.clear {
            clear += (name.len() + value.to_string().len()) as u64;
        }
        link_bytes += source.links.iter().map(|l| l.len() as u64).sum::<u64>();
    }
    let per = |b: u64| b as f64 / rows.max(1) as f64;
    println!(
        "{rows} rows: keys {:.0} B, values {:.0} B each: sealed {:.0}, clear {:.0}, their links {:.0}",
        per(key_bytes),
        per(row_bytes),
        per(sealed),
        per(clear),
        per(link_bytes)
    );
    for (name, (count, bytes)) in &sealed_fields {
        println!(
            "  sealed {name:<20} {count:>7} x {:.0} B",
            *bytes as f64 / *count as f64
        );
    }

    // Per link kind: keys, entries (key and member pairs), bytes of keys, bytes of members.
    let mut by_kind: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for entry in links.iter()? {
        let (key, members) = entry?;
        let key = key.value();
        let kind = key.split_once(':').map_or(key, |(k, _)| k).to_owned();
        let e = by_kind.entry(kind).or_default();
        e[0] += 1;
        e[2] += key.len() as u64;
        for member in members {
            e[1] += 1;
            e[3] += member?.value().len() as u64;
        }
    }
    for (kind, [keys, entries, key_bytes, member_bytes]) in &by_kind {
        println!(
            "  links {kind:<12} {keys:>7} keys {entries:>7} entries, {:.1} MB of keys, {:.1} MB of members",
            *key_bytes as f64 / 1e6,
            *member_bytes as f64 / 1e6
        );
    }
    Ok(())
}
