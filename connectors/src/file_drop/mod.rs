//! File drop: a department drops CSV, XLSX, JSON or NDJSON files into a folder; each run
//! ingests the files that have settled and moves them aside.
//!
//! Guarantees:
//! - A file is read only once it has not been modified for `settle_seconds`, so a file still
//!   being copied in is left for a later run.
//! - A file is moved to `processed/` (name + UTC timestamp suffix) only after every batch of
//!   it was acknowledged by the sink and its content hash (SHA-256) was durably recorded in
//!   the state directory; a crash before that re-delivers the file (idempotently), never
//!   loses it.
//! - Content already ingested is never ingested again, under any file name: such a file is
//!   moved to `processed/` and counted as a duplicate.
//! - A file that cannot be read at all (bad encoding, not a workbook) still reaches the sink,
//!   as one failure with line 0, so the department sees it in quarantine.
//! - Only regular files inside the folder are read. A file is opened without following links
//!   and checked, settled and read through that one handle, so a symbolic link, folder, FIFO,
//!   socket or device, whether there at listing time or swapped in afterwards, is never read
//!   (nothing outside the folder can reach quarantine through it) and never blocks a run.
//! - A file larger than `max_file_bytes` is never read into memory.
//! - An entry refused for either reason reaches the sink as one failure with line 0 and code
//!   `file_not_regular` or `file_too_large`, is counted in `files_refused`, and is moved (the
//!   link itself, not its target) to `processed/`, so it is reported once.

mod open;
mod read;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::connector::{deliver, BoxFuture, Connector, RunReport};
use crate::mapping::{Mapping, MappingError};
use crate::state::{content_hash, ProcessedHashes};
use crate::{ConnectorConfig, ConnectorError, MappedRecord, RecordSink};

use open::{read_settled, Opened, Refusal};
pub use read::TextEncoding;
use read::{read_rows, FileFormat, ReadOptions, ReadRow};

fn default_settle_seconds() -> u64 {
    2
}

/// Largest file read unless the configuration says otherwise: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// `[source]` of `type = "file_drop"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDropConfig {
    /// The folder departments drop files into. Files ending in `.csv`, `.tsv`, `.xlsx`,
    /// `.xlsm`, `.xls`, `.json`, `.ndjson` or `.jsonl` are read; hidden files, `~$` lock files
    /// and `.tmp`/`.part` files are left alone.
    pub folder: PathBuf,
    /// Where ingested files are moved; defaults to `<folder>/processed`.
    #[serde(default)]
    pub processed_folder: Option<PathBuf>,
    /// A file is read only after it has been unchanged this many seconds (default 2), so a
    /// file still being written is not read half-way.
    #[serde(default = "default_settle_seconds")]
    pub settle_seconds: u64,
    /// Largest file read, in bytes (default 268435456, i.e. 256 MiB). A larger file is not
    /// read: it reaches quarantine as one failure with code `file_too_large` and is moved to
    /// the processed folder.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Text encoding of CSV and JSON files: `auto` (default: UTF-8 with or without BOM, UTF-16
    /// with BOM, else GB18030), `utf-8`, `gbk` or `gb18030`.
    #[serde(default)]
    pub encoding: TextEncoding,
    /// CSV field separator (default `,`; `.tsv` files always use tab).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Sheet of a workbook to read; defaults to the first sheet.
    #[serde(default)]
    pub sheet: Option<String>,
    /// Row number (1-based, as Excel shows it) of a sheet's header row; defaults to the first
    /// non-empty row. Data starts on the row after it.
    #[serde(default)]
    pub header_row: Option<u32>,
}

/// A folder entry named like a data file, as the listing (which follows no link) saw it.
#[derive(Debug)]
enum Listed {
    /// A regular file, read in this format.
    File(FileFormat),
    /// Not a regular file: reported, never opened.
    Refused(Refusal),
}

/// The file-drop connector.
#[derive(Debug)]
pub struct FileDropConnector {
    name: String,
    department: String,
    schedule_seconds: Option<u64>,
    batch_size: usize,
    config: FileDropConfig,
    read_options: ReadOptions,
    mapping: Mapping,
    processed: ProcessedHashes,
}

impl FileDropConnector {
    /// Builds the connector; `state_dir` holds `<name>.processed`, the hashes of ingested files.
    pub fn new(
        config: &ConnectorConfig,
        state_dir: &Path,
    ) -> Result<FileDropConnector, ConnectorError> {
        let crate::SourceConfig::FileDrop(source) = &config.source else {
            return Err(ConnectorError::Config("not a file_drop source".to_owned()));
        };
        config.check()?;
        let delimiter = match source.delimiter {
            None => b',',
            Some(c) if c.is_ascii() => c as u8,
            Some(_) => {
                return Err(ConnectorError::Config(
                    "source.delimiter must be one ASCII character".to_owned(),
                ))
            }
        };
        if source.max_file_bytes == 0 {
            return Err(ConnectorError::Config(
                "source.max_file_bytes must be at least 1".to_owned(),
            ));
        }
        let name = config.name();
        Ok(FileDropConnector {
            processed: ProcessedHashes::load(state_dir.join(format!("{name}.processed")))?,
            name,
            department: config.department.clone(),
            schedule_seconds: config.schedule_seconds,
            batch_size: config.batch_size(),
            read_options: ReadOptions {
                encoding: source.encoding,
                delimiter,
                sheet: source.sheet.clone(),
                header_row: source.header_row,
            },
            config: source.clone(),
            mapping: Mapping::compile(&config.mapping)?,
        })
    }

    fn processed_folder(&self) -> PathBuf {
        self.config
            .processed_folder
            .clone()
            .unwrap_or_else(|| self.config.folder.join("processed"))
    }

    /// Candidate entries, sorted by name so runs are deterministic: every entry named like a
    /// data file, with its format, or with the reason it is refused when it is not a regular
    /// file (the listing does not follow links).
    fn candidates(&self) -> Result<Vec<(PathBuf, Listed)>, ConnectorError> {
        let folder = &self.config.folder;
        let processed_folder = self.processed_folder();
        let entries = fs::read_dir(folder)
            .map_err(|e| ConnectorError::io(format!("listing {}", folder.display()), e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| ConnectorError::io(format!("listing {}", folder.display()), e))?;
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if path == processed_folder {
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let lower = file_name.to_ascii_lowercase();
            if file_name.starts_with('.')
                || file_name.starts_with("~$")
                || lower.ends_with(".tmp")
                || lower.ends_with(".part")
            {
                continue;
            }
            let Some(format) = path
                .extension()
                .and_then(|e| e.to_str())
                .and_then(FileFormat::from_extension)
            else {
                continue;
            };
            if kind.is_file() {
                files.push((path, Listed::File(format)));
            } else {
                files.push((
                    path,
                    Listed::Refused(Refusal::not_regular(open::describe(&kind))),
                ));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// Moves an ingested file to the processed folder, with a UTC timestamp suffix.
    fn move_aside(&self, path: &Path) -> Result<(), ConnectorError> {
        let target_dir = self.processed_folder();
        fs::create_dir_all(&target_dir)
            .map_err(|e| ConnectorError::io(format!("creating {}", target_dir.display()), e))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let mut target = target_dir.join(format!("{stem}.{stamp}.{ext}"));
        let mut n = 1;
        // symlink_metadata, not exists(): a dangling link already there must not be replaced.
        while fs::symlink_metadata(&target).is_ok() {
            target = target_dir.join(format!("{stem}.{stamp}-{n}.{ext}"));
            n += 1;
        }
        fs::rename(path, &target).map_err(|e| {
            ConnectorError::io(
                format!("moving {} to {}", path.display(), target.display()),
                e,
            )
        })
    }

    async fn run_inner(&mut self, sink: &mut dyn RecordSink) -> Result<RunReport, ConnectorError> {
        let mut report = RunReport::start(&self.name, &self.department);
        let settle = Duration::from_secs(self.config.settle_seconds);
        for (path, listed) in self.candidates()? {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let format = match listed {
                Listed::File(format) => format,
                Listed::Refused(refusal) => {
                    self.refuse(sink, &path, &file_name, refusal, &mut report)
                        .await?;
                    continue;
                }
            };
            let (bytes, modified) = match read_settled(&path, settle, self.config.max_file_bytes)? {
                Opened::Settled { bytes, modified } => (bytes, modified),
                Opened::Waiting => {
                    report.files_waiting += 1;
                    continue;
                }
                Opened::Vanished => continue,
                Opened::Refused(refusal) => {
                    self.refuse(sink, &path, &file_name, refusal, &mut report)
                        .await?;
                    continue;
                }
            };
            let hash = content_hash(&bytes);
            if self.processed.contains(&hash) {
                self.move_aside(&path)?;
                report.files_duplicate += 1;
                continue;
            }
            let version = Value::String(
                DateTime::<Utc>::from(modified).to_rfc3339_opts(SecondsFormat::Micros, true),
            );
            self.ingest_file(sink, &file_name, &bytes, format, version, &mut report)
                .await?;
            self.processed.insert(&hash)?;
            self.move_aside(&path)?;
            report.files_processed += 1;
        }
        Ok(report.finish())
    }

    /// Reports an entry that is not read (one failure with line 0, so the department sees it
    /// in quarantine), then moves the entry itself aside so it is reported once.
    async fn refuse(
        &self,
        sink: &mut dyn RecordSink,
        path: &Path,
        file_name: &str,
        refusal: Refusal,
        report: &mut RunReport,
    ) -> Result<(), ConnectorError> {
        tracing::warn!(
            connector = %self.name,
            file = %file_name,
            code = refusal.code,
            "file drop entry refused"
        );
        let failure = whole_file_failure(file_name, refusal.code, refusal.message);
        deliver(sink, &self.department, vec![failure], report).await?;
        self.move_aside(path)?;
        report.files_refused += 1;
        Ok(())
    }

    async fn ingest_file(
        &self,
        sink: &mut dyn RecordSink,
        file_name: &str,
        bytes: &[u8],
        format: FileFormat,
        version: Value,
        report: &mut RunReport,
    ) -> Result<(), ConnectorError> {
        let rows = match read_rows(file_name, bytes, format, &self.read_options) {
            Ok(rows) => rows,
            Err(err) => {
                let failure = whole_file_failure(file_name, err.code, err.message);
                return deliver(sink, &self.department, vec![failure], report).await;
            }
        };
        let mut batch = Vec::with_capacity(self.batch_size.min(rows.len()));
        for row in rows {
            let mapped = match row {
                ReadRow::Row(mut row) => {
                    row.default_version = Some(version.clone());
                    self.mapping.map(row)
                }
                ReadRow::Broken(error, row) => MappedRecord::Failed { error, row },
            };
            batch.push(mapped);
            if batch.len() >= self.batch_size {
                deliver(sink, &self.department, std::mem::take(&mut batch), report).await?;
            }
        }
        deliver(sink, &self.department, batch, report).await
    }
}

/// The one failure, at line 0, that stands for a whole file that was not read.
fn whole_file_failure(file_name: &str, code: &str, message: String) -> MappedRecord {
    MappedRecord::Failed {
        error: MappingError {
            source_file: file_name.to_owned(),
            line: 0,
            field: String::new(),
            code: code.to_owned(),
            message,
            source_id: None,
        },
        row: Map::new(),
    }
}

impl Connector for FileDropConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn department(&self) -> &str {
        &self.department
    }

    fn schedule_seconds(&self) -> Option<u64> {
        self.schedule_seconds
    }

    fn run<'a>(
        &'a mut self,
        sink: &'a mut dyn RecordSink,
    ) -> BoxFuture<'a, Result<RunReport, ConnectorError>> {
        Box::pin(self.run_inner(sink))
    }
}

#[cfg(test)]
mod tests;
