//! Where department connectors meet the broker: sinks that deliver mapped records into the
//! one ingest pipeline (in process, or over HTTPS from a department's own side), the
//! per-department push mappings, and the scheduler that runs configured connectors.
//!
//! Guarantees: every path ends in [`Pipeline::ingest_records`] — there is no second copy of
//! validate/resolve/seal/store per connector; a sink acknowledges a batch only once it is
//! durable (stored or quarantined), so a connector never records progress past data that
//! could still be lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use connectors::mapping::MappingConfig;
use connectors::{
    BoxFuture, ConnectorConfig, ConnectorError, MappedRecord, Mapping, RecordSink, SinkReceipt,
};
use model::Department;

use engine::ingest::{IncomingRecord, Pipeline, PreRejected, Rejection};

/// Delivers batches straight into this broker's pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSink {
    pipeline: Pipeline,
}

impl PipelineSink {
    pub fn new(pipeline: Pipeline) -> PipelineSink {
        PipelineSink { pipeline }
    }
}

/// Splits a connector batch into records for the pipeline and failures for quarantine.
pub fn split_mapped(batch: Vec<MappedRecord>) -> (Vec<IncomingRecord>, Vec<PreRejected>) {
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for item in batch {
        match item {
            MappedRecord::Mapped { origin, record } => records.push(IncomingRecord {
                line: origin.line,
                source_file: Some(origin.source_file),
                value: Ok(record),
                raw_text: None,
            }),
            MappedRecord::Failed { error, row } => failures.push(PreRejected {
                rejection: Rejection {
                    line: error.line,
                    code: error.code,
                    message: error.message,
                    field: (!error.field.is_empty()).then_some(error.field),
                    source_id: error.source_id,
                    source_file: Some(error.source_file),
                    quarantine_id: None,
                },
                raw: Value::Object(row),
            }),
        }
    }
    (records, failures)
}

/// A batch id for a connector batch: same content, same id.
fn connector_batch_id(
    department: Department,
    records: &[IncomingRecord],
    failures: &[PreRejected],
) -> String {
    let mut text = String::new();
    for record in records {
        text.push_str(record.source_file.as_deref().unwrap_or(""));
        text.push_str(&record.line.to_string());
        if let Ok(value) = &record.value {
            text.push_str(&value.to_string());
        }
    }
    for failure in failures {
        text.push_str(&failure.rejection.code);
        text.push_str(&failure.rejection.line.to_string());
    }
    engine::ingest::batch_id(department, text.as_bytes())
}

impl RecordSink for PipelineSink {
    fn submit<'a>(
        &'a mut self,
        department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>> {
        Box::pin(async move {
            let department = Department::parse(department)
                .map_err(|err| ConnectorError::Sink(err.to_string()))?;
            let (records, failures) = split_mapped(batch);
            let batch_id = connector_batch_id(department, &records, &failures);
            let pipeline = self.pipeline.clone();
            let receipt = tokio::task::spawn_blocking(move || {
                pipeline.ingest_records(department, &batch_id, records, failures)
            })
            .await
            .map_err(|err| ConnectorError::Sink(err.to_string()))?
            .map_err(|err| ConnectorError::Sink(err.to_string()))?;
            Ok(SinkReceipt {
                batch_id: Some(receipt.batch_id),
                accepted: receipt.accepted,
                rejected: receipt.rejected.len(),
            })
        })
    }
}

/// Delivers batches to a remote broker over HTTPS, as the department's publisher: records to
/// `POST /v1/ingest/{department}?format=unified`, failures to `POST …/rejects`; a batch the
/// broker answers 429 or 503 is sent again after its `Retry-After`
/// ([`crate::client::send_retrying`]; a batch sent twice is recorded once, as records are
/// keyed by department, source id and version).
#[derive(Debug)]
pub struct HttpSink {
    pub client: reqwest::Client,
    pub base_url: String,
    pub token: String,
}

impl RecordSink for HttpSink {
    fn submit<'a>(
        &'a mut self,
        department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>> {
        Box::pin(async move {
            let mut body = String::new();
            let mut failures = Vec::new();
            for item in batch {
                match item {
                    MappedRecord::Mapped { record, .. } => {
                        body.push_str(&record.to_string());
                        body.push('\n');
                    }
                    MappedRecord::Failed { error, row } => failures.push(serde_json::json!({
                        "source_file": error.source_file, "line": error.line, "code": error.code,
                        "field": (!error.field.is_empty()).then_some(error.field),
                        "message": error.message, "source_id": error.source_id, "row": row,
                    })),
                }
            }
            let sink_error = |e: String| ConnectorError::Sink(e);
            let mut receipt = SinkReceipt::default();
            if !body.is_empty() {
                let response = crate::client::send_retrying(
                    self.client
                        .post(format!(
                            "{}/v1/ingest/{department}?format=unified",
                            self.base_url
                        ))
                        .bearer_auth(&self.token)
                        .header("content-type", "application/x-ndjson")
                        .body(body),
                )
                .await
                .map_err(|e| sink_error(e.to_string()))?;
                let status = response.status();
                let value: Value = response
                    .json()
                    .await
                    .map_err(|e| sink_error(e.to_string()))?;
                if !status.is_success() {
                    return Err(sink_error(format!(
                        "the broker answered {status}: {}",
                        value["error"]["code"]
                    )));
                }
                receipt.batch_id = value["batch_id"].as_str().map(str::to_owned);
                receipt.accepted = value["accepted"].as_u64().unwrap_or(0) as usize;
                receipt.rejected = value["rejected"].as_array().map(Vec::len).unwrap_or(0);
            }
            if !failures.is_empty() {
                let response = crate::client::send_retrying(
                    self.client
                        .post(format!("{}/v1/ingest/{department}/rejects", self.base_url))
                        .bearer_auth(&self.token)
                        .json(&failures),
                )
                .await
                .map_err(|e| sink_error(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(sink_error(format!(
                        "filing rejects failed: {}",
                        response.status()
                    )));
                }
                receipt.rejected += failures.len();
            }
            Ok(receipt)
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    mapping: MappingConfig,
}

/// Loads `<department>.toml` push mappings (each a `[mapping]` table) from `dir`.
pub fn load_mappings(dir: &Path) -> anyhow::Result<HashMap<Department, Arc<Mapping>>> {
    let mut mappings = HashMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let department = Department::parse(stem).map_err(|_| {
            anyhow::anyhow!(
                "{}: name the file after a department code, e.g. minzheng.toml",
                path.display()
            )
        })?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: MappingFile = toml::from_str(&text)
            .with_context(|| format!("{}: not a [mapping] table", path.display()))?;
        let mapping =
            Mapping::compile(&file.mapping).with_context(|| format!("{}", path.display()))?;
        if mapping.needs_source_version() {
            bail!(
                "{}: pushed records have no file time or watermark; set version = {{ column = \"…\" }}",
                path.display()
            );
        }
        mappings.insert(department, Arc::new(mapping));
    }
    Ok(mappings)
}

/// Loads every connector configuration (`*.toml`) in `dir`.
pub fn load_connector_configs(dir: &Path) -> anyhow::Result<Vec<(PathBuf, ConnectorConfig)>> {
    let mut configs = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    paths.sort();
    for path in paths {
        let config = ConnectorConfig::load(&path).with_context(|| format!("{}", path.display()))?;
        configs.push((path, config));
    }
    Ok(configs)
}

/// Runs each configured connector on its schedule (default every 60 s) until shutdown.
pub fn schedule(
    configs: Vec<(PathBuf, ConnectorConfig)>,
    state_dir: PathBuf,
    pipeline: Pipeline,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (path, config) in configs {
        let mut connector = connectors::build(&config, &state_dir)
            .with_context(|| format!("building the connector of {}", path.display()))?;
        let every = Duration::from_secs(connector.schedule_seconds().unwrap_or(60).max(1));
        let mut sink = PipelineSink::new(pipeline.clone());
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                // A run that panics costs this run, never the schedule: it is listed for the
                // administrator and the connector runs again at its next time.
                let run = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                    connector.run(&mut sink),
                ))
                .await;
                match run {
                    Ok(Ok(report)) => tracing::info!(
                        connector = connector.name(),
                        department = connector.department(),
                        rows = report.rows_read,
                        accepted = report.accepted,
                        rejected = report.rejected,
                        "connector run"
                    ),
                    Ok(Err(err)) => {
                        tracing::error!(connector = connector.name(), error = %err, "connector run failed");
                        engine::problems::record("connector", connector.name(), "failed");
                    }
                    Err(_) => engine::problems::record("connector", connector.name(), "panicked"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        }));
    }
    Ok(tasks)
}
/// A department's declarative mapping applied to rows pushed to `POST /v1/ingest/{department}`.
#[derive(Debug)]
pub struct PushMapping<'a>(pub &'a connectors::Mapping);

impl engine::ingest::RowMapping for PushMapping<'_> {
    fn map_row(
        &self,
        line: usize,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<engine::ingest::MappedRow, Box<engine::ingest::MappingRefusal>> {
        let row = connectors::SourceRow {
            source_file: "push".to_owned(),
            line,
            fields,
            cell_errors: Vec::new(),
            default_version: None,
            tabular: false,
        };
        match self.0.map(row) {
            connectors::MappedRecord::Mapped { origin, record } => Ok(engine::ingest::MappedRow {
                line: origin.line,
                record,
            }),
            connectors::MappedRecord::Failed { error, row } => {
                Err(Box::new(engine::ingest::MappingRefusal {
                    line: error.line,
                    code: error.code,
                    message: error.message,
                    field: error.field,
                    source_id: error.source_id,
                    row,
                }))
            }
        }
    }
}
