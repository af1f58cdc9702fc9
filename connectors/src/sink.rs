//! Where mapped records go: the [`RecordSink`] trait the broker implements, and
//! [`NdjsonSink`], an in-memory sink for tests and the command line.
//!
//! Guarantees: a connector treats a batch as delivered only when `submit` returned `Ok`;
//! every record of a batch is either a unified record that `model::Record::from_value`
//! accepts, or a [`MappingError`] carrying the reason it is not.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::connector::BoxFuture;
use crate::{ConnectorError, MappingError};

/// Where a record came from: the file (or table / page) and the 1-based line (row number in
/// a sheet, position in a JSON array, ordinal in a SQL run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source_file: String,
    pub line: usize,
}

/// One element of a batch: a unified record, or the reason a source row is not one. Both hold
/// personal data: never log them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MappedRecord {
    /// A unified-format record (a JSON object `model::Record::from_value` accepts).
    Mapped { origin: Origin, record: Value },
    /// A row that failed mapping or validation; it belongs in quarantine. `row` is the source
    /// row as read (column -> value), so quarantine can keep it (sealed: it is personal data)
    /// for correction and re-submission.
    Failed {
        error: MappingError,
        row: Map<String, Value>,
    },
}

impl MappedRecord {
    pub fn origin(&self) -> Origin {
        match self {
            MappedRecord::Mapped { origin, .. } => origin.clone(),
            MappedRecord::Failed { error, .. } => Origin {
                source_file: error.source_file.clone(),
                line: error.line,
            },
        }
    }
}

/// What the sink reports for one acknowledged batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkReceipt {
    /// The broker's batch id, when the sink has one.
    pub batch_id: Option<String>,
    /// Records stored (created, updated, unchanged or stale).
    pub accepted: usize,
    /// Records quarantined: mapping failures plus records the pipeline rejected.
    pub rejected: usize,
}

/// The receiving end of a connector. The broker implements it over its ingest pipeline.
pub trait RecordSink: Send {
    /// Delivers one batch for `department`. Returning `Ok` means the batch is durable on the
    /// receiving side (stored or quarantined); the connector then records its progress.
    fn submit<'a>(
        &'a mut self,
        department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>>;
}

/// Collects everything in memory: for tests, and for `--dry-run` style use on the command
/// line ([`NdjsonSink::to_ndjson`] renders the accepted records in the ingest format).
#[derive(Debug, Default)]
pub struct NdjsonSink {
    /// Mapped records, in delivery order.
    pub records: Vec<(Origin, Value)>,
    /// Rows that failed mapping or validation, in delivery order.
    pub failures: Vec<MappingError>,
    /// Size of every batch received.
    pub batch_sizes: Vec<usize>,
}

impl NdjsonSink {
    pub fn new() -> NdjsonSink {
        NdjsonSink::default()
    }

    /// The mapped records as NDJSON, the body `POST /v1/ingest/{department}` takes.
    pub fn to_ndjson(&self) -> String {
        let mut out = String::new();
        for (_, record) in &self.records {
            out.push_str(&record.to_string());
            out.push('\n');
        }
        out
    }

    /// The `source_id`s received, in order (handy in tests).
    pub fn source_ids(&self) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|(_, r)| r.get("source_id").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    fn accept(&mut self, batch: Vec<MappedRecord>) -> SinkReceipt {
        let mut receipt = SinkReceipt::default();
        self.batch_sizes.push(batch.len());
        for item in batch {
            match item {
                MappedRecord::Mapped { origin, record } => {
                    receipt.accepted += 1;
                    self.records.push((origin, record));
                }
                MappedRecord::Failed { error, .. } => {
                    receipt.rejected += 1;
                    self.failures.push(error);
                }
            }
        }
        receipt
    }
}

impl RecordSink for NdjsonSink {
    fn submit<'a>(
        &'a mut self,
        _department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>> {
        let receipt = self.accept(batch);
        Box::pin(async move { Ok(receipt) })
    }
}
