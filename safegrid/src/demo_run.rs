//! `safegrid demo`: generate six departments' data for one street, publish it through the
//! real HTTPS ingest path as each department's publisher, then serve.
//!
//! Guarantees: every record goes through the same pipeline a department's own connector
//! would use (TLS, JWT, ingest endpoint, receipt); the summary counts come from the receipts,
//! not from the generator.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use model::IdNumber;

use broker::app::{self, ServeOptions};
use broker::auth::TokenRequest;
use engine::ingest::Receipt;

use demo::generate::{DemoConfig, DemoWorld, DEPARTMENTS};

/// Persons per published batch.
const BATCH_PERSONS: usize = 2_000;

/// What `safegrid demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub residents: usize,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub listen: std::net::SocketAddr,
    /// Keep serving after publishing (the default); false exits once published.
    pub serve: bool,
}

/// Totals over all receipts.
#[derive(Debug, Default, Clone)]
pub struct DemoSummary {
    pub accepted: usize,
    pub rejected: usize,
    pub batches: usize,
}

pub async fn run(options: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    // No file, but the `SAFEGRID_…` overrides apply (e.g. `SAFEGRID_STORE_CACHE_MB`); the
    // demo street brings its own user dictionary.
    let mut config = broker::config_overrides::load_with(None, std::env::vars())?;
    let dictionary = options.data_dir.join("dev").join("user-dictionary.txt");
    std::fs::create_dir_all(dictionary.parent().unwrap_or(&options.data_dir))
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    std::fs::write(&dictionary, demo::USER_DICTIONARY)
        .with_context(|| format!("writing {}", dictionary.display()))?;
    config.user_dictionary.get_or_insert(dictionary);
    let broker = app::start(ServeOptions {
        data_dir: options.data_dir.clone(),
        listen: Some(options.listen),
        config,
        master_key: None,
        dev: true,
        insecure_http: false,
    })
    .await?;
    let url = broker.url();
    let cert = broker
        .dev_certificate
        .clone()
        .context("dev mode always has a certificate")?;
    let client = broker::client::https_client(&cert)?;
    let master = vault::keys::load_master_key(&options.data_dir, None, true)?;
    let signer = app::dev_token_signer(&options.data_dir, &master)?;

    let world = DemoWorld::new(DemoConfig {
        residents: options.residents,
        seed: options.seed,
        ..DemoConfig::default()
    });
    // The street's district by name from the GB/T 2260 table (北京市 朝阳区), then the street.
    let district = model::DivisionCode::parse(world.street_code())
        .ok()
        .and_then(|code| code.district_name())
        .map(|name| format!("{name} "))
        .unwrap_or_default();
    eprintln!(
        "SafeGrid demo: {} residents of {district}{} ({}), {} communities, {} grids",
        options.residents,
        world.street_name(),
        world.street_code(),
        world.communities().len(),
        world.grids().len()
    );
    let chunks: Vec<std::ops::Range<usize>> = (0..options.residents)
        .step_by(BATCH_PERSONS)
        .map(|start| start..(start + BATCH_PERSONS).min(options.residents))
        .collect();
    // On stderr only when it is a terminal (crate::progress); log lines go above it.
    let progress = ProgressBar::with_draw_target(
        Some((chunks.len() * DEPARTMENTS.len()) as u64),
        crate::progress::draw_target(),
    );
    let drawn = crate::progress::register(&progress);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} publishing {msg:<9} [{bar:40}] {pos}/{len} batches, {elapsed}, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut summary = DemoSummary::default();
    // Houses first, so residents' house references resolve to published houses.
    let order = ["zhujian", "gongan", "minzheng", "weijian", "sifa", "wangge"];
    for department in order {
        progress.set_message(department);
        let token = signer.sign(&TokenRequest {
            sub: format!("demo-publisher-{department}"),
            name: Some(format!("{department} 数据接口")),
            roles: vec!["dept_publisher".to_owned()],
            jurisdiction: vec![world.street_code().to_owned()],
            dept: Some(department.to_owned()),
            ttl: Duration::from_secs(3600),
        })?;
        let endpoint = format!("{url}/v1/ingest/{department}");
        // Two requests in flight: one being generated and sent while the broker stores another.
        let mut pending = Vec::new();
        for range in &chunks {
            let body = world.ndjson(department, range.clone());
            // Sent again, after the broker's Retry-After, if it asks the publisher to slow
            // down (a department with few records per batch outruns the rate limit).
            let request = broker::client::send_retrying(
                client
                    .post(&endpoint)
                    .bearer_auth(&token)
                    .header("content-type", "application/x-ndjson")
                    .body(body),
            );
            pending.push(tokio::spawn(request));
            if pending.len() >= 2 {
                let receipt = finish(pending.remove(0)).await?;
                tally(&mut summary, &receipt);
                progress.inc(1);
            }
        }
        for handle in pending {
            let receipt = finish(handle).await?;
            tally(&mut summary, &receipt);
            progress.inc(1);
        }
    }
    drop(drawn);
    eprintln!(
        "published {} records in {} batches ({} rejected with reasons in their receipts) in {:.1}s",
        summary.accepted,
        summary.batches,
        summary.rejected,
        started.elapsed().as_secs_f64()
    );
    let example = (0..options.residents)
        .map(|i| world.person(i))
        .find(|p| p.departments.len() >= 3)
        .or_else(|| (options.residents > 0).then(|| world.person(0)));
    let master_key = vault::keys::default_master_key_path(&options.data_dir);
    println!();
    println!("SafeGrid is serving at {url}");
    println!("  TLS certificate (self-signed, dev): {}", cert.display());
    println!(
        "  master key (outside the data dir):  {}",
        master_key.display()
    );
    println!();
    println!("A grid worker's token for the whole street:");
    println!(
        "  TOKEN=$(safegrid token --data-dir {} --sub gw-001 --role grid_worker --jurisdiction {})",
        options.data_dir.display(),
        world.street_code()
    );
    if let Some(person) = example {
        if let Ok(id) = IdNumber::parse(&person.id_number) {
            let unified = broker.state.vault.resident_entity(&id);
            println!(
                "A merged profile ({} departments):",
                person.departments.len()
            );
            println!(
                "  curl --cacert {} -H \"Authorization: Bearer $TOKEN\" -H 'X-Purpose: routine_visit' {url}/v1/residents/{unified}",
                cert.display()
            );
        }
    }
    println!("The shops and small businesses the grid centre inspects (实有单位), by initials:");
    println!(
        "  curl --cacert {} -H \"Authorization: Bearer $TOKEN\" -H 'X-Purpose: routine_visit' '{url}/v1/organizations?q=bld'",
        cert.display()
    );
    println!("The console in a browser (Chinese; paste the token printed by the command above):");
    println!("  {url}/console/");
    if options.serve {
        println!();
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        eprintln!("stopping: draining requests and writing the final audit checkpoint");
    }
    broker.shutdown().await?;
    Ok(summary)
}

async fn finish(
    handle: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) -> anyhow::Result<Receipt> {
    let response = handle
        .await
        .context("publishing task")?
        .context("publishing a batch")?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the broker refused a batch: {status} {body}");
    }
    response
        .json::<Receipt>()
        .await
        .context("reading a receipt")
}

fn tally(summary: &mut DemoSummary, receipt: &Receipt) {
    summary.accepted += receipt.accepted;
    summary.rejected += receipt.rejected.len();
    summary.batches += 1;
}
