//! `/metrics` after real traffic: request counters and latency histograms per route template,
//! ingest counters per department, the audit queue, the audit fsync latency histogram and the
//! search index lag — and no personal data anywhere in it.

use e2e_tests::{TestApp, GRID, STREET};
use serde_json::json;

const ID: &str = "11010519491231002X";

/// The value of an unlabelled or fully labelled sample line.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_describe_traffic_without_personal_data() {
    let app = TestApp::spawn().await;
    let body = format!(
        "{}\n{}\n",
        json!({"kind":"resident","source_id":"GA-1","version":"1","id_number":ID,
            "name":"欧阳娜娜","phone":"13812345678","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-2","version":"1","id_number":"110105194912310021",
            "grid":GRID}),
    );
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], 1);
    let unified = app.unified_id("resident", "gongan", "GA-1").await;
    let officer = app.token("street_officer", &[STREET], None);
    for _ in 0..3 {
        let (status, _) = app
            .get(
                &format!("/v1/residents/{unified}"),
                &officer,
                Some("routine_visit"),
            )
            .await;
        assert_eq!(status, 200);
    }

    // The search follower catches up within a second or so: lag reaches 0.
    let started = std::time::Instant::now();
    let text = loop {
        let (status, content_type, text) = app.metrics_text().await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        if sample(&text, "safegrid_index_lag_changes") == 0.0
            || started.elapsed() > std::time::Duration::from_secs(10)
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, "safegrid_index_lag_changes"), 0.0);
    assert_eq!(
        sample(
            &text,
            "safegrid_http_requests_total{method=\"GET\",route=\"/v1/residents/{id}\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "safegrid_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/residents/{id}\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "safegrid_ingest_records_total{department=\"gongan\",outcome=\"accepted\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "safegrid_ingest_records_total{department=\"gongan\",outcome=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "safegrid_audit_healthy"), 1.0);
    assert_eq!(sample(&text, "safegrid_audit_queue_depth"), 0.0);
    // Every profile read was audited durably: at least one synced batch per read.
    assert!(sample(&text, "safegrid_audit_fsync_seconds_count") >= 3.0);
    assert!(sample(&text, "safegrid_audit_fsync_seconds_sum") > 0.0);
    assert_eq!(
        sample(&text, "safegrid_audit_fsync_seconds_bucket{le=\"+Inf\"}"),
        sample(&text, "safegrid_audit_fsync_seconds_count")
    );
    for secret in [
        ID,
        "欧阳娜娜",
        "13812345678",
        "110105194912310021",
        unified.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} appears in /metrics");
    }
}

#[tokio::test]
async fn the_api_port_serves_metrics_only_to_the_system_administrator() {
    let app = TestApp::spawn().await;
    let (status, _, _) = app.get_text("/metrics", "").await;
    assert_eq!(status, 401, "anonymous on the API port");
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, _, body) = app.get_text("/metrics", &worker).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("role_cannot_operate"), "{body}");
    let admin = app.token("system_admin", &[STREET], None);
    let (status, _, text) = app.get_text("/metrics", &admin).await;
    assert_eq!(status, 200);
    assert!(text.contains("safegrid_audit_healthy 1"), "{text}");
    // The metrics listener answers without a token, and only /metrics.
    let (status, _, text) = app.metrics_text().await;
    assert_eq!(status, 200);
    assert!(text.contains("safegrid_connections_closed_total"), "{text}");
    let addr = app
        .broker
        .as_ref()
        .and_then(|b| b.metrics_addr)
        .expect("bound");
    let other = reqwest::Client::new()
        .get(format!("http://{addr}/v1/whoami"))
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status().as_u16(), 404);
}
