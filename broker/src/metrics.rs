//! Prometheus metrics (text exposition format 0.0.4): one broker's counters, histograms and
//! gauges, rendered for `GET /metrics` (served by `api::metrics`).
//!
//! Guarantees: labels are bounded and never personal — the route template (`MatchedPath`,
//! `unmatched` otherwise, never the raw URL), the method, the status code and department
//! codes. Recording is a short mutex section; rendering never blocks a request for long.
//! Other modules publish gauges through [`Metrics::set_gauge`]; the audit queue depth, the
//! audit fsync latency histogram and the search index lag are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use model::Department;

/// Latency histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    ingest: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    gauges: Mutex<BTreeMap<&'static str, f64>>,
    /// (counter name, its one label's name, label value) -> count.
    counters: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
}

/// Help text of the labelled counters [`Metrics::count`] keeps.
const COUNTER_HELP: [(&str, &str); 4] = [
    (
        "safegrid_connections_closed_total",
        "Connections the broker closed itself, by reason (over_limit, handshake_timeout, header_timeout, idle).",
    ),
    (
        "safegrid_limit_refusals_total",
        "Requests and records refused by a configured limit, by error code.",
    ),
    (
        "safegrid_background_problems_total",
        "Items a background task skipped because they failed or panicked, by task (listed at GET /v1/admin/problems).",
    ),
    (
        "safegrid_exchange_deliveries_total",
        "Webhook delivery attempts to departments' subscriptions, by outcome (delivered, retried, failed).",
    ),
];

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Metrics {
    /// One finished request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        lock(&self.requests)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default()
            .observe(seconds);
    }

    /// Records accepted and rejected ingest records of one batch.
    pub fn count_ingest(&self, department: Department, accepted: usize, rejected: usize) {
        let mut ingest = lock(&self.ingest);
        *ingest.entry((department.code(), "accepted")).or_default() += accepted as u64;
        *ingest.entry((department.code(), "rejected")).or_default() += rejected as u64;
    }

    /// A connection the server closed, by reason.
    pub fn count_connection_closed(&self, reason: &'static str) {
        self.count("safegrid_connections_closed_total", "reason", reason);
    }

    /// A request or record refused by a limit, by its error code.
    pub fn count_limit_refusal(&self, code: &'static str) {
        self.count("safegrid_limit_refusals_total", "code", code);
    }

    /// A webhook delivery attempt's outcome.
    pub fn count_delivery(&self, outcome: &'static str) {
        self.count("safegrid_exchange_deliveries_total", "outcome", outcome);
    }

    /// Adds one to a labelled counter (a name from the counter help table).
    pub fn count(&self, name: &'static str, label: &'static str, value: &'static str) {
        *lock(&self.counters)
            .entry((name, label, value))
            .or_default() += 1;
    }

    /// The current value of a labelled counter (0 if never counted).
    pub fn counter(&self, name: &'static str, value: &'static str) -> u64 {
        lock(&self.counters)
            .iter()
            .filter(|((n, _, v), _)| *n == name && *v == value)
            .map(|(_, count)| *count)
            .sum()
    }

    /// Sets a gauge (a `safegrid_…` name, documented by its setter).
    pub fn set_gauge(&self, name: &'static str, value: f64) {
        lock(&self.gauges).insert(name, value);
    }

    /// The text exposition of everything recorded, plus `extra` gauges read at scrape time.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP safegrid_http_requests_total HTTP requests by route template, method and status.");
        let _ = writeln!(out, "# TYPE safegrid_http_requests_total counter");
        let requests = lock(&self.requests).clone();
        for ((method, route, status), h) in &requests {
            let _ = writeln!(
                out,
                "safegrid_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                h.count
            );
        }
        let _ = writeln!(out, "# HELP safegrid_http_request_duration_seconds Request latency by route template, method and status.");
        let _ = writeln!(
            out,
            "# TYPE safegrid_http_request_duration_seconds histogram"
        );
        for ((method, route, status), h) in &requests {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                escape(route)
            );
            let buckets: Vec<(f64, u64)> = BUCKETS.into_iter().zip(h.buckets).collect();
            write_histogram(
                &mut out,
                "safegrid_http_request_duration_seconds",
                &labels,
                &buckets,
                h.count,
                h.sum,
            );
        }
        let _ = writeln!(out, "# HELP safegrid_ingest_records_total Ingested records by department and outcome (accepted, rejected).");
        let _ = writeln!(out, "# TYPE safegrid_ingest_records_total counter");
        for ((department, outcome), count) in lock(&self.ingest).iter() {
            let _ = writeln!(out, "safegrid_ingest_records_total{{department=\"{department}\",outcome=\"{outcome}\"}} {count}");
        }
        let mut counters = lock(&self.counters).clone();
        for (task, total) in engine::problems::totals() {
            counters.insert(("safegrid_background_problems_total", "task", task), total);
        }
        for (name, help) in COUNTER_HELP {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((_, label, value), count) in counters.iter().filter(|((n, ..), _)| *n == name) {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
            }
        }
        let gauges = lock(&self.gauges).clone();
        let all = gauges
            .iter()
            .map(|(name, value)| (*name, "", *value))
            .chain(extra.iter().copied());
        for (name, help, value) in all {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// The sample lines of one histogram series (`labels` without braces, may be empty).
pub fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: &[(f64, u64)],
    count: u64,
    sum: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.observe_request("GET", "/v1/residents/{id}", 200, 0.003);
        metrics.observe_request("GET", "/v1/residents/{id}", 200, 0.3);
        metrics.count_ingest(Department::Gongan, 5, 2);
        metrics.set_gauge("safegrid_index_lag_changes", 7.0);
        let text = metrics.render(&[("safegrid_audit_queue_depth", "depth", 3.0)]);
        assert!(text.contains("safegrid_http_requests_total{method=\"GET\",route=\"/v1/residents/{id}\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains(
            "safegrid_ingest_records_total{department=\"gongan\",outcome=\"rejected\"} 2"
        ));
        assert!(text.contains("safegrid_index_lag_changes 7"));
        assert!(text.contains("safegrid_audit_queue_depth 3"));
    }
}
