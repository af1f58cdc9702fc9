//! The [`Connector`] trait every source implements, and the per-run [`RunReport`].
//!
//! Guarantees: `run` reads only what is new since the last acknowledged batch (per source:
//! unprocessed files, rows past the checkpoint, or all pages of a REST listing), delivers it
//! through the sink in batches, and returns a report whose counts add up:
//! `rows_read = records_mapped + mapping_failures`.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ConnectorError, MappedRecord, RecordSink, SinkReceipt};

/// A boxed, sendable future: keeps [`Connector`] and [`RecordSink`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One department source. Built from its configuration by [`crate::build`].
pub trait Connector: Send {
    /// The connector's stable name (from the configuration); it names its state files.
    fn name(&self) -> &str;

    /// The department code every record is published under.
    fn department(&self) -> &str;

    /// Seconds between scheduled runs, when the configuration asks for a schedule.
    fn schedule_seconds(&self) -> Option<u64>;

    /// Reads what is new at the source and delivers it to `sink`.
    fn run<'a>(
        &'a mut self,
        sink: &'a mut dyn RecordSink,
    ) -> BoxFuture<'a, Result<RunReport, ConnectorError>>;
}

/// What one run did. Serializable, so the CLI and the scheduler can print or store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub connector: String,
    pub department: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Source rows read (lines, sheet rows, SQL rows, REST items).
    pub rows_read: usize,
    /// Rows turned into valid unified records.
    pub records_mapped: usize,
    /// Rows that failed mapping or validation (sent to the sink for quarantine).
    pub mapping_failures: usize,
    /// Batches the sink acknowledged.
    pub batches: usize,
    /// Sum of the sink's `accepted` counts.
    pub accepted: usize,
    /// Sum of the sink's `rejected` counts.
    pub rejected: usize,
    /// File drop: files ingested and moved to `processed/`.
    pub files_processed: usize,
    /// File drop: files whose content was ingested before (moved aside, not re-ingested).
    pub files_duplicate: usize,
    /// File drop: files still being written (younger than `settle_seconds`), left for later.
    pub files_waiting: usize,
    /// File drop: entries not read and reported to the sink as one failure each (not a
    /// regular file, or larger than `max_file_bytes`), then moved to `processed/`.
    #[serde(default)]
    pub files_refused: usize,
    /// REST: pages fetched. SQL: pages queried.
    pub pages: usize,
    /// REST: requests retried after a transient failure.
    pub retries: usize,
}

impl RunReport {
    pub(crate) fn start(connector: &str, department: &str) -> RunReport {
        let now = Utc::now();
        RunReport {
            connector: connector.to_owned(),
            department: department.to_owned(),
            started_at: now,
            finished_at: now,
            rows_read: 0,
            records_mapped: 0,
            mapping_failures: 0,
            batches: 0,
            accepted: 0,
            rejected: 0,
            files_processed: 0,
            files_duplicate: 0,
            files_waiting: 0,
            files_refused: 0,
            pages: 0,
            retries: 0,
        }
    }

    pub(crate) fn finish(mut self) -> RunReport {
        self.finished_at = Utc::now();
        self
    }

    /// Counts a batch before delivery.
    pub(crate) fn count_batch(&mut self, batch: &[MappedRecord]) {
        for item in batch {
            self.rows_read += 1;
            match item {
                MappedRecord::Mapped { .. } => self.records_mapped += 1,
                MappedRecord::Failed { .. } => self.mapping_failures += 1,
            }
        }
    }

    pub(crate) fn count_receipt(&mut self, receipt: &SinkReceipt) {
        self.batches += 1;
        self.accepted += receipt.accepted;
        self.rejected += receipt.rejected;
    }
}

/// Delivers `batch` (if not empty) and updates the report. Returns only after the sink
/// acknowledged it.
pub(crate) async fn deliver(
    sink: &mut dyn RecordSink,
    department: &str,
    batch: Vec<MappedRecord>,
    report: &mut RunReport,
) -> Result<(), ConnectorError> {
    if batch.is_empty() {
        return Ok(());
    }
    report.count_batch(&batch);
    let receipt = sink.submit(department, batch).await?;
    report.count_receipt(&receipt);
    Ok(())
}
