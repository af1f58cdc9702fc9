//! Search quality and load, on the demo generator's street.
//!
//! ```text
//! cargo bench -p broker --bench search -- quality [--residents 20000] [--queries 1000]
//! cargo bench -p broker --bench search -- load [--residents 200000] [--threads 4] [--seconds 20]
//! cargo bench -p broker --bench search -- index [--residents 200000]
//! cargo bench -p broker --bench search -- http [--residents 200000] [--threads 4] [--seconds 20] [--warmup 10]
//! # any mode: [--keep DIR] keeps the ingested store under DIR/r<N> and reuses it next time;
//! # [--reuse-index] also reuses the index instead of rebuilding it
//! ```
//!
//! `quality` ingests a generated street through the real pipeline (validate, resolve, seal,
//! store), builds the index from the store, derives queries of each kind from the generator's
//! ground truth and prints recall@10 and MRR@10 per kind (and recall@10 counting a hit whose
//! score equals the 10th's: namesakes with equal scores are ordered by document order). `load` measures ingest, index build
//! time and size, and query latency under concurrent load through the same path the API
//! takes (search, resolve each hit's summary, mask), without HTTP/TLS and audit. `http`
//! starts the real broker (`app::start`: TLS, JWT, policy, masking, audit with fsync) on the
//! same data and measures `GET /v1/residents?q=` end to end from concurrent keep-alive HTTPS
//! clients in this process (on their own one-thread runtime).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::policy_folder::PolicyHandle;
use chinese_text::names;
use demo::generate::{DemoConfig, DemoWorld, Person, DEPARTMENTS};
use engine::ingest::Pipeline;
use engine::resolve::{AuthorityOrder, Resolver};
use model::{Department, DivisionCode, IdNumber, RecordKind};
use policies::view::ViewPlan;
use policies::Principal;
use search::query::Filters;
use search::{dir_size, SearchIndex, SearchRequest, SortOrder, Source};
use serde_json::Value;
use vault::crypto::{KeyRing, MasterKey};
use vault::store::Store;

struct Args {
    mode: String,
    residents: usize,
    queries: usize,
    threads: usize,
    seconds: u64,
    /// Keep the ingested store (and index) here and reuse them on the next run.
    keep: Option<std::path::PathBuf>,
    /// With `--keep`: reuse the index as it is instead of rebuilding it.
    reuse_index: bool,
    /// `http`: seconds to let the broker's start-up work (name directory) finish first.
    warmup: u64,
}

fn args() -> Args {
    let mut out = Args {
        mode: "quality".to_owned(),
        residents: 20_000,
        queries: 1_000,
        threads: 4,
        seconds: 20,
        keep: None,
        reuse_index: false,
        warmup: 10,
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut num = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--residents" => out.residents = num(out.residents),
            "--queries" => out.queries = num(out.queries),
            "--threads" => out.threads = num(out.threads),
            "--seconds" => out.seconds = num(out.seconds as usize) as u64,
            "--keep" => out.keep = it.next().map(Into::into),
            "--reuse-index" => out.reuse_index = true,
            "--warmup" => out.warmup = num(out.warmup as usize) as u64,
            "quality" | "load" | "index" | "http" => out.mode = arg,
            _ => {}
        }
    }
    if out.mode != "quality" && !std::env::args().any(|a| a == "--residents") {
        out.residents = 200_000;
    }
    out
}

struct Setup {
    _dir: Option<tempfile::TempDir>,
    world: DemoWorld,
    keys: Arc<KeyRing>,
    source: Source,
    index: SearchIndex,
    ingest_seconds: f64,
    index_seconds: f64,
    index_bytes: u64,
    records: usize,
}

fn setup(args: &Args) -> anyhow::Result<Setup> {
    let residents = args.residents;
    let (temp, root) = match &args.keep {
        Some(dir) => (None, dir.join(format!("r{residents}"))),
        None => {
            let t = tempfile::tempdir()?;
            let root = t.path().to_path_buf();
            (Some(t), root)
        }
    };
    let data = root.join("data");
    let ingested = data.join("ingested");
    std::fs::create_dir_all(&data)?;
    let master = MasterKey::load(Some(&root.join("master.key")), true)?;
    let store = Arc::new(Store::open(&data.join("store.redb"))?);
    let keys = Arc::new(vault::keys::load_key_ring(&store, &master)?);
    let world = DemoWorld::new(DemoConfig {
        residents,
        seed: 2026,
        bad_record_rate: 0.0,
    });
    let mut records = 0;
    let mut ingest_seconds = f64::NAN;
    if let Ok(text) = std::fs::read_to_string(&ingested) {
        records = text.trim().parse().unwrap_or(0);
        eprintln!(
            "reusing the store of {} ({records} records)",
            root.display()
        );
    } else {
        let pipeline = Pipeline::new(store.clone(), keys.clone());
        let started = Instant::now();
        for department in ["zhujian", "gongan", "minzheng", "weijian", "sifa", "wangge"] {
            let dept = Department::parse(department).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for start in (0..residents).step_by(5_000) {
                let body = world.ndjson(department, start..(start + 5_000).min(residents));
                let receipt = pipeline.ingest(dept, body.as_bytes())?;
                records += receipt.accepted;
            }
        }
        ingest_seconds = started.elapsed().as_secs_f64();
        eprintln!("ingested {records} records ({residents} residents) in {ingest_seconds:.1}s");
        if args.keep.is_some() {
            std::fs::write(&ingested, records.to_string())?;
        }
    }
    let index = SearchIndex::open(&data, &keys)?;
    let source = Source {
        store,
        keys: keys.clone(),
        authority: AuthorityOrder::default(),
    };
    let started = Instant::now();
    let entities = if args.reuse_index && index.num_docs() > 0 {
        eprintln!("reusing the index");
        index.num_docs() as usize
    } else {
        index.rebuild(&source)?
    };
    // Marks the index ready (searches are refused until it has caught up with the store).
    index.catch_up(&source)?;
    let index_seconds = started.elapsed().as_secs_f64();
    let index_bytes = dir_size(index.dir());
    eprintln!(
        "indexed {entities} entities in {index_seconds:.1}s; index {:.1} MiB",
        index_bytes as f64 / 1048576.0
    );
    let _ = DEPARTMENTS;
    Ok(Setup {
        _dir: temp,
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
        jurisdiction: vec![DivisionCode::parse(demo::generate::STREET_CODE)
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
    let parts = chinese_text::address::parse(address);
    Some(format!("{}{}号楼", parts.compound?, parts.building?))
}

fn room_fragment(address: &str) -> Option<String> {
    let parts = chinese_text::address::parse(address);
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
) -> anyhow::Result<(Option<usize>, bool)> {
    let hits = index.search(
        principal,
        plan,
        &SearchRequest {
            kinds: kinds.to_vec(),
            q: q.to_owned(),
            filters: Filters::default(),
            sort: SortOrder::Relevance,
            offset: 0,
            limit: 200,
        },
    )?;
    let position = hits.hits.iter().position(|h| h.id == expected);
    // Within the top 10 once equal scores are counted as equal: which of several residents
    // with the same score (namesakes) comes first is the index's document order.
    let tenth = hits.hits.get(9).map(|h| h.score);
    let tied = match (position, tenth) {
        (Some(p), Some(tenth)) => p < 10 || hits.hits[p].score >= tenth,
        (Some(_), None) => true,
        (None, _) => false,
    };
    Ok((position.filter(|p| *p < 10), tied))
}

#[derive(Default)]
struct Score {
    n: usize,
    hits: usize,
    tied: usize,
    rr: f64,
}

async fn quality(args: &Args) -> anyhow::Result<()> {
    let s = setup(args)?;
    let officer = principal("street_officer")?;
    let plans = [
        ("routine_visit", plan(&officer, "routine_visit").await?),
        (
            "case_investigation",
            plan(&officer, "case_investigation").await?,
        ),
    ];
    // Adults and children apart: a child (under 14 on the day of the run) is found only by
    // what the caller sees of a child, so the clues that need more are meant to miss them.
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let mut child_scores: BTreeMap<&str, Score> = BTreeMap::new();
    let today = plans[0].1.today();
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
        let expected = engine::keyed::resident_entity_id(&s.keys, &id);
        let child = policies::minor::is_minor_by_dates(&[p.birth_date], today);
        for (kind, q, purpose) in queries_for(&p) {
            let plan = &plans.iter().find(|(p, _)| *p == purpose).context("plan")?.1;
            let (rank, tied) = rank_of(
                &s.index,
                &officer,
                plan,
                &[RecordKind::Resident],
                &q,
                &expected,
            )?;
            count += 1;
            let score = if child {
                &mut child_scores
            } else {
                &mut scores
            }
            .entry(kind)
            .or_default();
            score.n += 1;
            score.tied += usize::from(tied);
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
        let expected = engine::keyed::event_entity_id(&s.keys, Department::Wangge, source_id);
        let q = format!("{place}号楼 {what}");
        let (rank, tied) = rank_of(
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
        score.tied += usize::from(tied);
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
    let table = |title: &str, scores: &BTreeMap<&str, Score>| {
        println!("{title}");
        println!(
            "{:<22} {:>7} {:>10} {:>8} {:>16}",
            "query kind", "queries", "recall@10", "MRR@10", "recall@10 ties"
        );
        for (kind, score) in scores {
            println!(
                "{kind:<22} {:>7} {:>10.4} {:>8.4} {:>16.4}",
                score.n,
                score.hits as f64 / score.n.max(1) as f64,
                score.rr / score.n.max(1) as f64,
                score.tied as f64 / score.n.max(1) as f64
            );
        }
    };
    table("adults (14 or older) and events:", &scores);
    table(
        "children under 14 (found only by what the officer sees of a child; the others are meant to miss):",
        &child_scores,
    );
    println!(
        "{count} queries in {:.1}s ({:.2} ms each, engine only)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / count.max(1) as f64
    );
    Ok(())
}

async fn load(args: &Args) -> anyhow::Result<()> {
    let s = Arc::new(setup(args)?);
    let officer = principal("grid_worker")?;
    let plan = Arc::new(plan(&officer, "routine_visit").await?);
    let pool = Arc::new(query_pool_kinds(&s.world, args.residents));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let (s, plan, pool, officer) = (s.clone(), plan.clone(), pool.clone(), officer.clone());
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<Sample>> {
                let mut samples = Vec::new();
                let mut i = t * 7919;
                while Instant::now() < deadline {
                    let (kind, q) = &pool[i % pool.len()];
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
                    let searched = started.elapsed();
                    let snapshot = s.source.store.read()?;
                    let resolver = Resolver {
                        reader: &snapshot,
                        keys: &s.keys,
                        authority: &s.source.authority,
                    };
                    let mut profiles = Vec::new();
                    for hit in &hits.hits {
                        profiles.extend(resolve_hit(&resolver, &plan, &hit.id)?);
                    }
                    let resolved = started.elapsed();
                    for mut profile in profiles {
                        plan.apply(&mut profile, &[], None);
                    }
                    let total = started.elapsed();
                    samples.push(Sample {
                        kind,
                        total: total.as_secs_f64() * 1000.0,
                        search: searched.as_secs_f64() * 1000.0,
                        resolve: (resolved - searched).as_secs_f64() * 1000.0,
                        mask: (total - resolved).as_secs_f64() * 1000.0,
                        hits: hits.total,
                    });
                }
                Ok(samples)
            },
        ));
    }
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??,
        );
    }
    let sorted = |f: &dyn Fn(&Sample) -> f64, only: Option<&str>| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|x| only.is_none_or(|k| k == x.kind))
            .map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let all = sorted(&|x| x.total, None);
    for (name, f) in [
        (
            "search",
            &(|x: &Sample| x.search) as &dyn Fn(&Sample) -> f64,
        ),
        ("resolve", &|x: &Sample| x.resolve),
        ("mask", &|x: &Sample| x.mask),
    ] {
        let v = sorted(f, None);
        println!(
            "  phase {name:<8} ms p50 {:.2} p95 {:.2} p99 {:.2} mean {:.2}",
            percentile(&v, 0.5),
            percentile(&v, 0.95),
            percentile(&v, 0.99),
            v.iter().sum::<f64>() / v.len().max(1) as f64
        );
    }
    let mut kinds: Vec<&str> = samples.iter().map(|x| x.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let v = sorted(&|x| x.total, Some(kind));
        let search = sorted(&|x| x.search, Some(kind));
        let total_hits: Vec<f64> = sorted(&|x| x.hits as f64, Some(kind));
        println!(
            "  kind {kind:<20} n {:>6} total p50 {:.2} p95 {:.2} | search p50 {:.2} p95 {:.2} | matches p50 {:.0} max {:.0}",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.95),
            percentile(&search, 0.5),
            percentile(&search, 0.95),
            percentile(&total_hits, 0.5),
            total_hits.last().copied().unwrap_or(0.0)
        );
    }
    let pct = |p: f64| percentile(&all, p);
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

/// A mixed pool of what workers type (routine visit, no ID last-4 which needs more).
struct Sample {
    kind: &'static str,
    total: f64,
    search: f64,
    resolve: f64,
    mask: f64,
    hits: usize,
}

/// What the load run resolves for one hit (the API's path).
fn resolve_hit(
    resolver: &Resolver<'_>,
    plan: &ViewPlan,
    id: &str,
) -> anyhow::Result<Option<model::profile::Profile>> {
    Ok(resolver.summary_from(
        id,
        &|d| plan.department_visible(d),
        search::summary::summary_sources,
    )?)
}

/// [`query_pool`] with the kind of each query.
fn query_pool_kinds(world: &DemoWorld, residents: usize) -> Vec<(&'static str, String)> {
    let mut pool = Vec::new();
    let step = (residents / 2_000).max(1);
    for i in (0..residents).step_by(step) {
        let p = world.person(i);
        for (kind, q, purpose) in queries_for(&p) {
            if purpose == "routine_visit" && kind != "id_last4" {
                pool.push((kind, q));
            }
        }
    }
    pool
}

fn query_pool(world: &DemoWorld, residents: usize) -> Vec<String> {
    query_pool_kinds(world, residents)
        .into_iter()
        .map(|(_, q)| q)
        .collect()
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the `http` run keeps of the setup.
struct Built {
    world: DemoWorld,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// End to end: the real broker (`app::start`, TLS, JWT, policy, masking, audit) on the
/// bench's data directory, and `threads` concurrent HTTPS clients (keep-alive) on their own
/// runtime in this process, each sending `GET /v1/residents?q=` as a grid worker.
async fn http(args: &Args) -> anyhow::Result<()> {
    let s = setup(args)?;
    s.index.shutdown().await;
    let root = match &args.keep {
        Some(dir) => dir.join(format!("r{}", args.residents)),
        None => s
            ._dir
            .as_ref()
            .context("a data directory")?
            .path()
            .to_path_buf(),
    };
    // The broker opens the store and the index itself: release them.
    let Setup {
        _dir: _keep_alive,
        world,
        index,
        source,
        keys,
        ..
    } = s;
    drop((index, source, keys));
    let s = Built { world };
    let data_dir = root.join("data");
    let pool = Arc::new(query_pool(&s.world, args.residents));
    let started = Instant::now();
    let broker = broker::app::start(broker::app::ServeOptions {
        data_dir: data_dir.clone(),
        listen: Some("127.0.0.1:0".parse()?),
        config: broker::config::Config::default(),
        master_key: Some(root.join("master.key")),
        dev: true,
        insecure_http: false,
    })
    .await?;
    eprintln!(
        "broker started in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        broker.url()
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let url = broker.url();
    let cert = broker.dev_certificate.clone().context("dev certificate")?;
    let master = vault::keys::load_master_key(&data_dir, Some(&root.join("master.key")), true)?;
    let signer = broker::app::dev_token_signer(&data_dir, &master)?;
    let token = signer.sign(&broker::auth::TokenRequest {
        sub: "bench-gw".to_owned(),
        name: Some("bench".to_owned()),
        roles: vec!["grid_worker".to_owned()],
        jurisdiction: vec![demo::generate::STREET_CODE.to_owned()],
        dept: None,
        ttl: Duration::from_secs(3600),
    })?;
    let threads = args.threads;
    let seconds = args.seconds;
    // The clients run on their own runtime so the server's runtime is the broker's alone.
    let client_side = std::thread::spawn(move || -> anyhow::Result<(Vec<f64>, usize, f64)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let client = broker::client::https_client(&cert)?;
            // Warm up: one request per connection.
            for q in pool.iter().take(threads) {
                client
                    .get(format!("{url}/v1/residents?q={}", encode(q)))
                    .bearer_auth(&token)
                    .header("X-Purpose", "routine_visit")
                    .send()
                    .await?
                    .error_for_status()?;
            }
            let began = Instant::now();
            let deadline = began + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for t in 0..threads {
                let (client, pool, token, url) =
                    (client.clone(), pool.clone(), token.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut items = 0usize;
                    let mut i = t * 7919;
                    while Instant::now() < deadline {
                        let q = &pool[i % pool.len()];
                        i += 13;
                        let started = Instant::now();
                        let response = client
                            .get(format!("{url}/v1/residents?q={}", encode(q)))
                            .bearer_auth(&token)
                            .header("X-Purpose", "routine_visit")
                            .send()
                            .await?
                            .error_for_status()?;
                        let body: Value = response.json().await?;
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                        items += body["items"].as_array().map_or(0, Vec::len);
                    }
                    Ok::<_, anyhow::Error>((latencies, items))
                }));
            }
            let mut all = Vec::new();
            let mut items = 0;
            for task in tasks {
                let (l, n) = task.await??;
                all.extend(l);
                items += n;
            }
            Ok((all, items, began.elapsed().as_secs_f64()))
        })
    });
    let (mut all, items, elapsed) = tokio::task::spawn_blocking(move || client_side.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
    broker.shutdown().await?;
    all.sort_by(f64::total_cmp);
    println!(
        "search over HTTPS: {} residents, GET /v1/residents?q= as grid_worker (routine_visit)",
        args.residents
    );
    println!(
        "  requests: {} in {:.1}s with {} concurrent connections = {:.0}/s ({:.1} items each); latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
        all.len(),
        elapsed,
        threads,
        all.len() as f64 / elapsed,
        items as f64 / all.len().max(1) as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.95),
        percentile(&all, 0.99),
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
            "http" => http(&args).await,
            "index" => {
                let s = setup(&args)?;
                println!(
                    "index build: {} residents, {:.1}s, {} docs, {:.1} MiB",
                    args.residents,
                    s.index_seconds,
                    s.index.num_docs(),
                    s.index_bytes as f64 / 1048576.0
                );
                Ok(())
            }
            _ => quality(&args).await,
        }
    })?;
    let _ = Path::new(".");
    Ok(())
}
