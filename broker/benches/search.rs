//! Search quality and load, on the demo generator's street.
//!
//! ```text
//! cargo bench -p broker --bench search -- quality [--residents 20000] [--queries 1000]
//! cargo bench -p broker --bench search -- load [--residents 200000] [--threads 4] [--seconds 20]
//! ```
//!
//! `quality` ingests a generated street through the real pipeline (validate, resolve, seal,
//! store), builds the index from the store, derives queries of each kind from the generator's
//! ground truth and prints recall@10 and MRR@10 per kind. `load` measures ingest, index build
//! time and size, and query latency under concurrent load through the same path the API
//! takes (search, resolve each hit, mask), without HTTP/TLS and audit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::auth::Principal;
use broker::authz::PolicyHandle;
use broker::crypto::{KeyRing, MasterKey};
use broker::demo::generate::{DemoConfig, DemoWorld, Person, DEPARTMENTS};
use broker::ingest::Pipeline;
use broker::resolve::{AuthorityOrder, Resolver};
use broker::search::query::Filters;
use broker::search::{dir_size, names, SearchIndex, SearchRequest, SortOrder, Source};
use broker::store::Store;
use broker::view::ViewPlan;
use model::{Department, DivisionCode, IdNumber, RecordKind};
use serde_json::Value;

struct Args {
    mode: String,
    residents: usize,
    queries: usize,
    threads: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut out = Args {
        mode: "quality".to_owned(),
        residents: 20_000,
        queries: 1_000,
        threads: 4,
        seconds: 20,
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut num = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--residents" => out.residents = num(out.residents),
            "--queries" => out.queries = num(out.queries),
            "--threads" => out.threads = num(out.threads),
            "--seconds" => out.seconds = num(out.seconds as usize) as u64,
            "quality" | "load" => out.mode = arg,
            _ => {}
        }
    }
    if out.mode == "load" && !std::env::args().any(|a| a == "--residents") {
        out.residents = 200_000;
    }
    out
}

struct Setup {
    _dir: tempfile::TempDir,
    world: DemoWorld,
    keys: Arc<KeyRing>,
    source: Source,
    index: SearchIndex,
    ingest_seconds: f64,
    index_seconds: f64,
    index_bytes: u64,
    records: usize,
}

fn setup(residents: usize) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let master = MasterKey::load(Some(&dir.path().join("master.key")), true)?;
    let store = Arc::new(Store::open(&data.join("store.redb"))?);
    let keys = Arc::new(broker::keys::load_key_ring(&store, &master)?);
    let world = DemoWorld::new(DemoConfig {
        residents,
        seed: 2026,
        bad_record_rate: 0.0,
    });
    let pipeline = Pipeline::new(store.clone(), keys.clone());
    let started = Instant::now();
    let mut records = 0;
    for department in ["zhujian", "gongan", "minzheng", "weijian", "sifa", "wangge"] {
        let dept = Department::parse(department).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for start in (0..residents).step_by(5_000) {
            let body = world.ndjson(department, start..(start + 5_000).min(residents));
            let receipt = pipeline.ingest(dept, body.as_bytes())?;
            records += receipt.accepted;
        }
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    eprintln!("ingested {records} records ({residents} residents) in {ingest_seconds:.1}s");
    let index = SearchIndex::open(&data, &keys)?;
    let source = Source {
        store,
        keys: keys.clone(),
        authority: AuthorityOrder::default(),
    };
    let started = Instant::now();
    let entities = index.rebuild(&source)?;
    let index_seconds = started.elapsed().as_secs_f64();
    let index_bytes = dir_size(index.dir());
    eprintln!(
        "indexed {entities} entities in {index_seconds:.1}s; index {:.1} MiB",
        index_bytes as f64 / 1048576.0
    );
    let _ = DEPARTMENTS;
    Ok(Setup {
        _dir: dir,
        world,
        keys,
        source,
        index,
        ingest_seconds,
        index_seconds,
        index_bytes,
        records,
    })
}

fn principal(role: &str) -> anyhow::Result<Principal> {
    Ok(Principal {
        sub: format!("bench-{role}"),
        name: "bench".to_owned(),
        roles: vec![role.to_owned()],
        jurisdiction: vec![DivisionCode::parse(broker::demo::generate::STREET_CODE)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?],
        dept: None,
    })
}

async fn plan(principal: &Principal, purpose: &str) -> anyhow::Result<ViewPlan> {
    let purposes: Vec<String> = [
        "routine_visit",
        "dispute_mediation",
        "elderly_care",
        "emergency",
        "case_investigation",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let policy = PolicyHandle::load(None, &purposes)
        .await
        .context("policy")?;
    Ok(ViewPlan::new(policy.current(), principal, purpose, false))
}

/// `compound + building` of a standard address, e.g. `幸福里一区3号楼`.
fn building_fragment(address: &str) -> Option<String> {
    let parts = broker::search::address::parse(address);
    Some(format!("{}{}号楼", parts.compound?, parts.building?))
}

fn room_fragment(address: &str) -> Option<String> {
    let parts = broker::search::address::parse(address);
    Some(format!(
        "{}{}号楼{}单元{}",
        parts.compound?, parts.building?, parts.unit?, parts.room?
    ))
}

fn pinyin(name: &str) -> Option<(String, String)> {
    let split = names::split_name(&names::normalise_name(name))?;
    let syllables = names::name_readings(&split).into_iter().next()?;
    let joined = syllables.concat();
    let initials: String = syllables.iter().filter_map(|s| s.chars().next()).collect();
    Some((joined, initials))
}

/// Queries of every kind for one person: (kind, query, purpose).
fn queries_for(p: &Person) -> Vec<(&'static str, String, &'static str)> {
    let mut out = Vec::new();
    let building = building_fragment(&p.address);
    out.push(("name_chars", p.name.clone(), "routine_visit"));
    if let Some(b) = &building {
        out.push((
            "name_chars+building",
            format!("{} {b}", p.name),
            "routine_visit",
        ));
    }
    if let Some((joined, initials)) = pinyin(&p.name) {
        out.push(("pinyin", joined.clone(), "routine_visit"));
        if let Some(b) = &building {
            out.push(("pinyin+building", format!("{joined} {b}"), "routine_visit"));
            out.push((
                "initials+building",
                format!("{initials} {b}"),
                "routine_visit",
            ));
            let cut = joined.len().saturating_sub(2).max(2);
            out.push((
                "prefix+building",
                format!("{} {b}", &joined[..cut.min(joined.len())]),
                "routine_visit",
            ));
        }
    }
    out.push(("id_exact", p.id_number.clone(), "case_investigation"));
    out.push((
        "id_last6",
        p.id_number[12..].to_owned(),
        "case_investigation",
    ));
    out.push(("id_last4", p.id_number[14..].to_owned(), "routine_visit"));
    if let Some(phone) = p.phone.as_deref().filter(|ph| !ph.contains('-')) {
        out.push(("phone_exact", phone.to_owned(), "case_investigation"));
        out.push((
            "phone_last4",
            phone[phone.len() - 4..].to_owned(),
            "routine_visit",
        ));
    }
    if let Some(room) = room_fragment(&p.address) {
        out.push(("address_room", room, "routine_visit"));
    }
    out
}

fn rank_of(
    index: &SearchIndex,
    principal: &Principal,
    plan: &ViewPlan,
    kinds: &[RecordKind],
    q: &str,
    expected: &str,
) -> anyhow::Result<Option<usize>> {
    let hits = index.search(
        principal,
        plan,
        &SearchRequest {
            kinds: kinds.to_vec(),
            q: q.to_owned(),
            filters: Filters::default(),
            sort: SortOrder::Relevance,
            offset: 0,
            limit: 10,
        },
    )?;
    Ok(hits.hits.iter().position(|h| h.id == expected))
}

#[derive(Default)]
struct Score {
    n: usize,
    hits: usize,
    rr: f64,
}

async fn quality(args: &Args) -> anyhow::Result<()> {
    let s = setup(args.residents)?;
    let officer = principal("street_officer")?;
    let plans = [
        ("routine_visit", plan(&officer, "routine_visit").await?),
        (
            "case_investigation",
            plan(&officer, "case_investigation").await?,
        ),
    ];
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let step = (args.residents / args.queries.max(1)).max(1);
    let started = Instant::now();
    let mut count = 0usize;
    for i in (0..args.residents).step_by(step).take(args.queries) {
        let p = s.world.person(i);
        if !p.in_gongan {
            continue;
        }
        let Ok(id) = IdNumber::parse(&p.id_number) else {
            continue;
        };
        let expected = broker::ingest::resident_entity_id(&s.keys, &id);
        for (kind, q, purpose) in queries_for(&p) {
            let plan = &plans.iter().find(|(p, _)| *p == purpose).context("plan")?.1;
            let rank = rank_of(
                &s.index,
                &officer,
                plan,
                &[RecordKind::Resident],
                &q,
                &expected,
            )?;
            count += 1;
            let score = scores.entry(kind).or_default();
            score.n += 1;
            if let Some(r) = rank {
                score.hits += 1;
                score.rr += 1.0 / (r as f64 + 1.0);
            }
        }
    }
    // Events: a worker types the place and what happened.
    let events = s.world.ndjson("wangge", 0..args.residents);
    let mut taken = 0;
    for line in events.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["kind"] != "event" || taken >= args.queries {
            continue;
        }
        let (Some(title), Some(source_id)) = (v["title"].as_str(), v["source_id"].as_str()) else {
            continue;
        };
        let Some((place, what)) = title.split_once("号楼") else {
            continue;
        };
        let what = what.trim_start_matches(|c: char| c.is_ascii_digit() || c == '单' || c == '元');
        let what = what.trim_start_matches(|c: char| c.is_ascii_digit() || c == '室');
        if what.is_empty() {
            continue;
        }
        taken += 1;
        let expected = broker::ingest::event_entity_id(&s.keys, Department::Wangge, source_id);
        let q = format!("{place}号楼 {what}");
        let rank = rank_of(
            &s.index,
            &officer,
            &plans[0].1,
            &[RecordKind::Event],
            &q,
            &expected,
        )?;
        count += 1;
        let score = scores.entry("event_words+building").or_default();
        score.n += 1;
        if let Some(r) = rank {
            score.hits += 1;
            score.rr += 1.0 / (r as f64 + 1.0);
        }
    }
    let elapsed = started.elapsed();
    println!(
        "search quality: {} residents, seed 2026, street_officer over the street",
        args.residents
    );
    println!(
        "{:<22} {:>7} {:>10} {:>8}",
        "query kind", "queries", "recall@10", "MRR@10"
    );
    for (kind, score) in &scores {
        println!(
            "{kind:<22} {:>7} {:>10.4} {:>8.4}",
            score.n,
            score.hits as f64 / score.n.max(1) as f64,
            score.rr / score.n.max(1) as f64
        );
    }
    println!(
        "{count} queries in {:.1}s ({:.2} ms each, engine only)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / count.max(1) as f64
    );
    Ok(())
}

async fn load(args: &Args) -> anyhow::Result<()> {
    let s = Arc::new(setup(args.residents)?);
    let officer = principal("grid_worker")?;
    let plan = Arc::new(plan(&officer, "routine_visit").await?);
    // A mixed pool of what workers type.
    let mut pool = Vec::new();
    let step = (args.residents / 2_000).max(1);
    for i in (0..args.residents).step_by(step) {
        let p = s.world.person(i);
        for (kind, q, purpose) in queries_for(&p) {
            if purpose == "routine_visit" && kind != "id_last4" {
                pool.push(q);
            }
        }
    }
    let pool = Arc::new(pool);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let (s, plan, pool, officer) = (s.clone(), plan.clone(), pool.clone(), officer.clone());
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let mut latencies = Vec::new();
            let mut i = t * 7919;
            while Instant::now() < deadline {
                let q = &pool[i % pool.len()];
                i += 13;
                let started = Instant::now();
                let hits = s.index.search(
                    &officer,
                    &plan,
                    &SearchRequest {
                        kinds: vec![RecordKind::Resident],
                        q: q.clone(),
                        filters: Filters::default(),
                        sort: SortOrder::Relevance,
                        offset: 0,
                        limit: 20,
                    },
                )?;
                let snapshot = s.source.store.read()?;
                let resolver = Resolver {
                    reader: &snapshot,
                    keys: &s.keys,
                    authority: &s.source.authority,
                };
                for hit in hits.hits {
                    if let Some(mut profile) =
                        resolver.profile_from(&hit.id, &|d| plan.department_visible(d))?
                    {
                        plan.apply(&mut profile, &[], None);
                    }
                }
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??,
        );
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "search load: {} residents ({} records)",
        args.residents, s.records
    );
    println!("  ingest (pipeline, no HTTP): {:.1}s", s.ingest_seconds);
    println!(
        "  index build from store:     {:.1}s ({} docs)",
        s.index_seconds,
        s.index.num_docs()
    );
    println!(
        "  index size:                 {:.1} MiB",
        s.index_bytes as f64 / 1048576.0
    );
    println!(
        "  queries: {} in {}s on {} threads = {:.0}/s; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
        all.len(),
        args.seconds,
        args.threads,
        all.len() as f64 / args.seconds as f64,
        pct(0.50),
        pct(0.95),
        pct(0.99),
        all.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.mode.as_str() {
            "load" => load(&args).await,
            _ => quality(&args).await,
        }
    })?;
    let _ = Path::new(".");
    Ok(())
}
