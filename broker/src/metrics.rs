//! Prometheus metrics (text exposition format 0.0.4): one broker's counters, histograms and
//! gauges, rendered for `GET /metrics` (served by `api::metrics`).
//!
//! Guarantees: labels are bounded and never personal — the route template (`MatchedPath`,
//! `unmatched` otherwise, never the raw URL), the method, the status code and department
//! codes. Recording is a short mutex section; rendering never blocks a request for long.
//! Other modules publish gauges through [`Metrics::set_gauge`]; the audit queue depth, the
//! audit fsync latency histogram and the search index lag are read at scrape time.
//!
//! Every scrape also carries `safegrid_build_info{version,commit}` (always 1) and the standard
//! `process_*` series read from `/proc/self` at scrape time (Linux; elsewhere, or when a file
//! cannot be read, that series is left out rather than reported as 0). Counters are typed
//! `counter` and end in `_total`; everything else is a gauge or a histogram.

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

    /// The text exposition of everything recorded, plus `extra` values read at scrape time
    /// (counters when their name ends in `_total`, gauges otherwise).
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
            // A count since start is a counter (and named `_total`); the rest are gauges.
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        write_build_info(&mut out);
        write_process_metrics(&mut out, &ProcessStats::read());
        out
    }
}

/// The commit the binary was built from: `SAFEGRID_COMMIT` at compile time (the Dockerfile's
/// build argument; the image is built without `.git`), else `unknown`.
const COMMIT: &str = match option_env!("SAFEGRID_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

fn write_build_info(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP safegrid_build_info The broker's version and the commit it was built from (always 1)."
    );
    let _ = writeln!(out, "# TYPE safegrid_build_info gauge");
    let _ = writeln!(
        out,
        "safegrid_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION")),
        escape(COMMIT)
    );
}

/// This process as the kernel accounts it; `None` where it could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
struct ProcessStats {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/{status,stat,limits,fd}` and `/proc/stat`.
    fn read() -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let status = read("/proc/self/status");
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let boot_time = read("/proc/stat").and_then(|s| parse_boot_time(&s));
        ProcessStats {
            resident_bytes: status.as_deref().and_then(|s| status_kib(s, "VmRSS:")),
            virtual_bytes: status.as_deref().and_then(|s| status_kib(s, "VmSize:")),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
            cpu_seconds: stat
                .filter(|_| ticks > 0.0)
                .map(|s| (s.utime + s.stime) as f64 / ticks),
            start_time_seconds: match (stat, boot_time) {
                (Some(s), Some(boot)) if ticks > 0.0 => {
                    Some(boot as f64 + s.start_ticks as f64 / ticks)
                }
                _ => None,
            },
        }
    }
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `utime` (field 14), `stime` (15) and `starttime` (22) of `/proc/<pid>/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: the boot time, seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The standard process series (the names the Prometheus client libraries use).
fn write_process_metrics(out: &mut String, stats: &ProcessStats) {
    let series: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stats.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (soft limit).",
            stats.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            stats.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in series {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
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
    use std::path::Path;

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

    /// `# TYPE` of each family in an exposition, by family name.
    fn types(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }

    #[test]
    fn every_counter_is_typed_counter_and_every_family_is_typed_once() {
        let metrics = Metrics::default();
        metrics.count_ingest(Department::Gongan, 1, 0);
        metrics.count_connection_closed("idle");
        metrics.count_limit_refusal("rate_limited");
        metrics.count_delivery("delivered");
        let text = metrics.render(&[]);
        let types = types(&text);
        assert_eq!(
            types.len(),
            text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            "a family typed twice: {text}"
        );
        for (name, kind) in &types {
            assert_eq!(
                name.ends_with("_total"),
                kind == "counter",
                "{name} is typed {kind}: {text}"
            );
        }
        // Every sample belongs to a typed family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            assert!(types.contains_key(family), "{line} has no # TYPE");
        }
    }

    #[test]
    fn build_info_names_the_version_and_commit() {
        let text = Metrics::default().render(&[]);
        let line = text
            .lines()
            .find(|l| l.starts_with("safegrid_build_info{"))
            .unwrap();
        assert_eq!(
            line,
            format!(
                "safegrid_build_info{{version=\"{}\",commit=\"{COMMIT}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(types(&text)["safegrid_build_info"], "gauge");
    }

    #[test]
    fn parses_proc_files() {
        // A command name with spaces and a parenthesis, as the kernel writes it.
        let stat = "4242 (safe grid) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 1000 123456789 5000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 250,
                stime: 75,
                start_ticks: 1000
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
        let status = "Name:\tsafegrid\nVmSize:\t  204800 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(51200 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(204800 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(parse_max_open_files(limits), Some(1_048_576));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1767225600\nprocesses 9\n"),
            Some(1_767_225_600)
        );
    }

    #[test]
    fn process_series_come_from_this_process() {
        let mut out = String::new();
        write_process_metrics(&mut out, &ProcessStats::default());
        assert!(out.is_empty(), "nothing read, nothing reported: {out}");
        if !Path::new("/proc/self/stat").exists() {
            return; // not Linux
        }
        // Burn a little CPU so the counter has something to count.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 1024 * 1024, "{stats:?}");
        assert!(stats.virtual_bytes.unwrap() >= stats.resident_bytes.unwrap());
        assert!(stats.open_fds.unwrap() >= 3, "{stats:?}");
        assert!(stats.max_fds.is_none_or(|m| m >= stats.open_fds.unwrap()));
        assert!(stats.cpu_seconds.unwrap() > 0.0, "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = stats.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );

        let text = Metrics::default().render(&[]);
        let types = types(&text);
        assert_eq!(types["process_cpu_seconds_total"], "counter");
        for gauge in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert_eq!(types[gauge], "gauge", "{text}");
        }
    }
}
