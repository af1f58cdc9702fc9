//! Exchange delivery benchmark: a broker (dev mode, a temporary data directory) and a local
//! HTTPS receiver; one subscription of the justice office to disputes.
//!
//! - latency: events published one at a time; the time from the publisher's acknowledgement
//!   (and from its request) until the receiver has the signed delivery;
//! - throughput: a backlog of events published in batches; deliveries per second until the
//!   receiver has them all.
//!
//! `cargo bench -p e2e-tests --bench exchange -- --latency 200 --events 3000`

use std::time::{Duration, Instant};

use broker::config::Config;
use e2e_tests::receiver::Receiver;
use e2e_tests::{TestApp, GRID, STREET};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(n: usize) -> String {
    format!(
        "{}\n",
        json!({"kind":"event","source_id":format!("WG-{n}"),"version":1,"type":"dispute",
            "title":format!("第{n}号纠纷"),"description":"邻里噪音纠纷，双方同意调解","grid":GRID})
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let samples = arg("--latency", 200);
    let backlog = arg("--events", 3000);
    let receiver = Receiver::start().await;
    let mut config = Config::default();
    config.exchange.ca_file = Some(receiver.cert.clone());
    config.limits.rate_per_second = 0;
    let app = TestApp::spawn_with(config).await;
    let subscriber = app.token("dept_subscriber", &[STREET], Some("sifa"));
    let response = app
        .client
        .post(format!("{}/v1/subscriptions", app.url))
        .bearer_auth(&subscriber)
        .json(
            &json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
            "purpose":"dispute_mediation","url":receiver.url("/hook")}),
        )
        .send()
        .await
        .expect("subscribed");
    assert_eq!(response.status(), 201);

    let mut from_ack = Vec::with_capacity(samples);
    let mut from_request = Vec::with_capacity(samples);
    for n in 0..samples {
        let sent = Instant::now();
        app.ingest("wangge", event(n)).await;
        let acked = Instant::now();
        let received = receiver
            .wait_for(Duration::from_secs(30), "the delivery", |r| r.len() > n)
            .await;
        let arrived = received[n].at;
        from_ack.push(arrived - acked);
        from_request.push(arrived - sent);
    }
    from_ack.sort();
    from_request.sort();
    println!(
        "latency over {samples} deliveries: from acknowledgement p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; from the publisher's request p50 {:.1} ms, p95 {:.1} ms",
        percentile(&from_ack, 0.5).as_secs_f64() * 1e3,
        percentile(&from_ack, 0.95).as_secs_f64() * 1e3,
        percentile(&from_ack, 1.0).as_secs_f64() * 1e3,
        percentile(&from_request, 0.5).as_secs_f64() * 1e3,
        percentile(&from_request, 0.95).as_secs_f64() * 1e3,
    );

    let started = Instant::now();
    let mut n = samples;
    while n < samples + backlog {
        let end = (n + 500).min(samples + backlog);
        let body: String = (n..end).map(event).collect();
        app.ingest("wangge", body).await;
        n = end;
    }
    let published = started.elapsed();
    let received = receiver
        .wait_for(Duration::from_secs(600), "the backlog", |r| {
            r.len() >= samples + backlog
        })
        .await;
    let elapsed = received[samples + backlog - 1].at - started;
    println!(
        "throughput: {backlog} events published in {:.2} s, all delivered after {:.2} s: {:.0} deliveries/s",
        published.as_secs_f64(),
        elapsed.as_secs_f64(),
        backlog as f64 / elapsed.as_secs_f64()
    );
}
