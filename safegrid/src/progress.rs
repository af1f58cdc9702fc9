//! Progress bars of the long commands: `reindex`, `keys reencrypt`, `keys reblind`, `backup`,
//! `restore`, `connector run` and the demo's publishing. The library crates report through
//! [`vault::progress::Progress`]; [`Bar`] draws it with indicatif.
//!
//! Guarantees:
//! - A bar is drawn on stderr, and only when stderr is a terminal (indicatif also hides it
//!   when `TERM` is `dumb`). Otherwise it is hidden and writes nothing: a CI log, a pipe or a
//!   file gets no carriage return and no escape sequence from it. Stdout is never drawn on.
//! - Until the operation knows its total, a spinner with the count and the rate; once it
//!   does, a bar with count and total, rate and time left.
//! - While a bar is drawn, log lines ([`log_writer`]) and the commands' own stderr lines
//!   ([`Bar::eprintln`]) go above it rather than through it; without a terminal they are
//!   written exactly as without a bar.
//! - A bar shows counts, rates and stage names only, never record content.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things, named in the plural: "rows", "entities", "records".
    Items(&'static str),
    /// Bytes, shown in KiB, MiB, GiB.
    Bytes,
}

/// The bar being drawn, if any: log lines are printed above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Where a bar draws: stderr when it is a terminal, nowhere otherwise.
pub fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// Makes `bar` the one log lines are printed above, until the guard returned is dropped;
/// then the bar is cleared from the terminal, on success and on an early return alike, so
/// the command's result or error is printed on a clean line.
#[must_use = "the bar is cleared when the guard is dropped"]
pub fn register(bar: &ProgressBar) -> Drawn {
    if let Ok(mut active) = ACTIVE.lock() {
        *active = Some(bar.clone());
    }
    Drawn(bar.clone())
}

/// A bar registered by [`register`].
#[derive(Debug)]
pub struct Drawn(ProgressBar);

impl Drop for Drawn {
    fn drop(&mut self) {
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
        self.0.finish_and_clear();
    }
}

fn active() -> Option<ProgressBar> {
    ACTIVE.lock().ok().and_then(|active| active.clone())
}

/// One long command's bar; an adapter from [`vault::progress::Progress`].
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    unit: Unit,
    /// Cleared and released when the bar is dropped.
    _drawn: Drawn,
}

impl Bar {
    /// A spinner labelled `label` on stderr (hidden without a terminal), counting `unit`
    /// until the operation sets a total.
    pub fn start(label: &str, unit: Unit) -> Bar {
        Bar::with_target(label, unit, draw_target())
    }

    fn with_target(label: &str, unit: Unit, target: ProgressDrawTarget) -> Bar {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_prefix(label.to_owned());
        bar.set_style(spinner_style(unit));
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        let drawn = register(&bar);
        Bar {
            bar,
            unit,
            _drawn: drawn,
        }
    }

    /// Prints `line` on stderr, above the bar when one is drawn.
    pub fn eprintln(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Advances by `n` (for callers that count themselves).
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// How far the bar has got.
    #[cfg(test)]
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Whether the bar draws nothing (stderr is not a terminal).
    #[cfg(test)]
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }
}

impl vault::progress::Progress for Bar {
    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(bar_style(self.unit));
        self.bar.reset_eta();
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn stage(&self, stage: &str) {
        self.bar.set_message(stage.to_owned());
    }
}

/// The spinner's template: count, rate and time so far, before the total is known.
fn spinner_template(unit: Unit) -> String {
    match unit {
        Unit::Items(name) => format!(
            "{{spinner}} {{prefix}}: {{human_pos}} {name}, {{per_sec:0}}, {{elapsed}} {{msg}}"
        ),
        Unit::Bytes => {
            "{spinner} {prefix}: {binary_bytes}, {binary_bytes_per_sec}, {elapsed} {msg}".to_owned()
        }
    }
}

/// The bar's template: count and total, rate and time left.
fn bar_template(unit: Unit) -> String {
    match unit {
        Unit::Items(name) => format!(
            "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {name}, {{per_sec:0}}, \
             {{eta}} left {{msg}}"
        ),
        Unit::Bytes => "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes}, \
                        {binary_bytes_per_sec}, {eta} left {msg}"
            .to_owned(),
    }
}

fn spinner_style(unit: Unit) -> ProgressStyle {
    ProgressStyle::with_template(&spinner_template(unit))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style(unit: Unit) -> ProgressStyle {
    ProgressStyle::with_template(&bar_template(unit))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The writer of the log lines (tracing): stderr, above the bar being drawn, if any.
pub fn log_writer() -> LogLine {
    LogLine
}

/// One log line on its way to stderr.
#[derive(Debug)]
pub struct LogLine;

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match active() {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A connector's sink that counts the records it passes on (a connector does not know how
/// many it will read: the bar is a spinner with the count).
pub struct CountingSink<'a> {
    pub inner: &'a mut dyn connectors::RecordSink,
    pub bar: &'a Bar,
}

impl std::fmt::Debug for CountingSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingSink").finish_non_exhaustive()
    }
}

impl connectors::RecordSink for CountingSink<'_> {
    /// Passes the batch on; once it is acknowledged, advances by its records (mapped and
    /// failed alike: every source row read).
    fn submit<'b>(
        &'b mut self,
        department: &'b str,
        batch: Vec<connectors::MappedRecord>,
    ) -> connectors::BoxFuture<'b, Result<connectors::SinkReceipt, connectors::ConnectorError>>
    {
        let records = batch.len() as u64;
        Box::pin(async move {
            let receipt = self.inner.submit(department, batch).await?;
            self.bar.inc(records);
            Ok(receipt)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vault::progress::Progress as _;

    /// The tests that make bars take turns: the bar log lines go above is process-wide.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn the_templates_parse_and_a_hidden_bar_counts() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for unit in [Unit::Items("rows"), Unit::Bytes] {
            assert!(ProgressStyle::with_template(&spinner_template(unit)).is_ok());
            assert!(ProgressStyle::with_template(&bar_template(unit)).is_ok());
            let bar = Bar::with_target("test", unit, ProgressDrawTarget::hidden());
            assert!(bar.is_hidden());
            bar.set_total(10);
            bar.stage("copying");
            bar.advance(4);
            bar.advance(6);
            assert_eq!(bar.position(), 10);
            assert!(active().is_some(), "log lines go above the bar");
            drop(bar);
            assert!(active().is_none());
        }
    }

    /// A real file-drop connector, run through the counting sink, advances by every row it
    /// read and delivered, mapped or failed.
    #[test]
    fn a_connector_run_advances_by_every_row_it_delivers() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("drop");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("residents.csv"),
            "编号,身份证号,姓名,出生日期\n\
             1,11010519491231002X,张三,19491231\n\
             2,110105194912310021,李四,19491231\n\
             3,110105198001010016,王五,19800101\n\
             4,110105198001010024,赵六,1980年13月01日\n\
             5,110105197511030514,钱七,1975-11-03\n",
        )
        .unwrap();
        let config = connectors::ConnectorConfig::from_toml(&format!(
            r#"
department = "minzheng"
batch_size = 2

[source]
type = "file_drop"
folder = {folder:?}
settle_seconds = 0

[mapping]
kind = "resident"
source_id = {{ template = "MZ-{{编号}}" }}

[mapping.fields]
id_number = "身份证号"
name = "姓名"
birth_date = "出生日期"

[mapping.constants]
grid = "110105001001003"
"#,
            folder = folder.display().to_string()
        ))
        .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut connector = connectors::build(&config, &state).unwrap();
        let bar = Bar::with_target(
            "connector",
            Unit::Items("records"),
            ProgressDrawTarget::hidden(),
        );
        let mut inner = connectors::NdjsonSink::new();
        let mut sink = CountingSink {
            inner: &mut inner,
            bar: &bar,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(connector.run(&mut sink)).unwrap();
        assert_eq!(report.rows_read, 5);
        assert!(report.mapping_failures > 0, "{report:?}");
        assert!(report.batches >= 3, "{report:?}");
        assert_eq!(bar.position(), report.rows_read as u64);
        assert_eq!(inner.records.len() + inner.failures.len(), report.rows_read);
    }
}
