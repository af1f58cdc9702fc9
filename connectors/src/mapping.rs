//! Declarative mapping: a department's own rows -> records of the unified format.
//!
//! A mapping is written once per department source, in the `[mapping]` table of the
//! connector's TOML file (see [`MappingConfig`]), and compiled into a [`Mapping`] when the
//! connector is built, so a mistake in it (an unknown field, an unknown code table, a bad
//! template) stops the connector before it reads a single row.
//!
//! Guarantees:
//! - [`Mapping::map`] never panics and returns either a record that
//!   `model::Record::from_value` accepts, or a [`MappingError`] naming the source file, the
//!   line, the unified field and a stable snake_case code (the model's validation codes, such
//!   as `id_number_checksum`, or the mapping's own: `mapping_missing_column`,
//!   `mapping_unknown_code`, `mapping_bad_date`, `mapping_bad_value`, `mapping_missing_value`,
//!   `cell_precision_lost`, `cell_error`).
//! - A message names columns and rules, never the value of a cell (values are personal data).
//! - Identifiers (ID numbers, phone, grid) are always folded from full-width to half-width,
//!   stripped of whitespace and upper-cased before validation.

mod codes;
mod dates;
mod text;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use model::{Record, RecordKind};

use crate::{ConnectorError, MappedRecord, Origin};

pub use codes::BUILTIN_TABLES;
use dates::{DateFormat, DateKind};

/// Why one source row did not become a unified record. Carries no cell value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{source_file}, line {line}, field {field}: {message} ({code})")]
pub struct MappingError {
    /// The file (or `sql:<table>`, `rest:<url path>#page`) the row came from.
    pub source_file: String,
    /// 1-based line (CSV line, sheet row, array position, SQL/REST ordinal).
    pub line: usize,
    /// The unified field at fault (`id_number`, `attributes.低保类型`, …); empty when the error
    /// is about the whole row.
    pub field: String,
    /// Stable snake_case reason code.
    pub code: String,
    /// What is wrong and how to fix it; names the source column, never its value.
    pub message: String,
    /// The record's `source_id`, when it could be determined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// A problem the reader found in one cell (e.g. a number too long to be exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    pub column: String,
    pub code: &'static str,
    pub message: String,
}

/// One row as a source read it, before mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceRow {
    /// File name (or `sql:<table>`, `rest:<path>#<page>`), for error reports.
    pub source_file: String,
    /// 1-based line or ordinal, for error reports.
    pub line: usize,
    /// Column name -> cell value (strings for CSV/XLSX, JSON values for JSON/SQL/REST).
    pub fields: Map<String, Value>,
    /// Cells the reader could not read faithfully; reported only if the mapping uses them.
    pub cell_errors: Vec<CellError>,
    /// The version when the mapping says `version = "source"`: the file's modification time
    /// or the SQL watermark.
    pub default_version: Option<Value>,
    /// Tabular rows (CSV, XLSX) have every header column; a mapped column that is absent is
    /// an error. In JSON rows an absent key is simply an empty value.
    pub tabular: bool,
}

/// Which kind of record a row becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KindRule {
    /// Every row is of this kind: `kind = "resident"`.
    Fixed(RecordKind),
    /// A column decides: `kind = { column = "类别", values = { "人口" = "resident" } }`.
    ByColumn(KindByColumn),
}

/// A column whose value decides the kind of each row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindByColumn {
    /// The column holding the row's category.
    pub column: String,
    /// Category value -> `resident`, `house` or `event`. A value not listed is an error
    /// (`mapping_unknown_code`).
    pub values: BTreeMap<String, RecordKind>,
}

/// Where `source_id` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceIdRule {
    /// `source_id = { column = "编号" }`: the column's value, trimmed.
    Column(String),
    /// `source_id = { template = "MZ-{编号}" }`: each `{column}` is replaced by the column's
    /// value; every other character is kept as written.
    Template(String),
}

/// Where `version` comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionRule {
    /// `version = "source"` (the default): the file's modification time for a file drop, the
    /// watermark column for SQL. A REST source has none: name a column.
    #[default]
    Source,
    /// `version = { column = "更新时间" }`: a timestamp or a counter in that column (a date
    /// format for it may be given under `[mapping.dates] version = …`).
    Column(String),
}

/// A code table for one field: a built-in one by name, or an inline table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CodeTableConfig {
    /// `gender = "gb2261_gender"` or `ethnicity = "gb3304_ethnicity"`.
    Builtin(String),
    /// `[mapping.codes.status] "01" = "open", "02" = "closed"`.
    Inline(BTreeMap<String, String>),
}

/// A value transform, applied after trimming and before code tables and dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Full-width letters, digits and punctuation (１２３ＡＢ（）) become ASCII.
    FullWidthToHalfWidth,
    /// Common traditional characters of names become simplified (張偉 -> 张伟).
    TraditionalToSimplified,
    /// ASCII letters become upper case.
    Uppercase,
    /// All whitespace is removed, inside the value too.
    RemoveWhitespace,
}

/// A tag given to a record when a column holds a "yes".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    /// The column to look at, e.g. `低保`.
    pub column: String,
    /// The tag to add; defaults to the column's name.
    #[serde(default)]
    pub tag: Option<String>,
    /// Values meaning "yes"; defaults to 是, 1, Y, y, yes, true, TRUE, √.
    #[serde(default)]
    pub when: Option<Vec<String>>,
}

/// A column that marks a row as deleted (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagRule {
    /// The column to look at, e.g. `状态`.
    pub column: String,
    /// Values meaning "deleted", e.g. `["注销", "死亡", "迁出"]`.
    pub when: Vec<String>,
}

/// The `[mapping]` table of a connector configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Which kind of unified record each row becomes: `"resident"`, `"house"`, `"event"`, or
    /// `{ column = "类别", values = { "人口" = "resident", "房屋" = "house" } }` per row.
    pub kind: KindRule,
    /// Where `source_id` comes from: `{ column = "编号" }` or `{ template = "MZ-{编号}" }`.
    pub source_id: SourceIdRule,
    /// Where `version` comes from: `"source"` (default: file modification time, SQL
    /// watermark) or `{ column = "更新时间" }`.
    #[serde(default)]
    pub version: VersionRule,
    /// Unified field = source column, e.g. `id_number = "身份证号"`, `name = "姓名"`. A
    /// field named `attributes.<key>` goes into the record's `attributes`; `tags` and
    /// `party_id_numbers` columns may hold several values separated by `,`, `;`, `、` or
    /// spaces. Columns not named here are not read.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Code tables per unified field: a built-in table by name (`gb2261_gender`,
    /// `gb3304_ethnicity`) or an inline table `[mapping.codes.status] "01" = "open"`. A value
    /// not in the table is an error (`mapping_unknown_code`).
    #[serde(default)]
    pub codes: BTreeMap<String, CodeTableConfig>,
    /// Date format per unified field: `"auto"` (19491231, 1949-12-31, 1949/12/31,
    /// 1949年12月31日 …), `"excel_serial"`, or a chrono pattern such as `"%Y%m%d"`.
    /// `birth_date` and `occurred_at` are read as `"auto"` unless given here.
    #[serde(default)]
    pub dates: BTreeMap<String, String>,
    /// Extra transforms per unified field, in order, e.g. `name = ["traditional_to_simplified"]`.
    /// Values are always trimmed; identifiers are always folded to half-width.
    #[serde(default)]
    pub transforms: BTreeMap<String, Vec<Transform>>,
    /// Fixed values per unified field, e.g. `grid = "110105001001003"` or
    /// `tags = ["低保"]` (constant tags are added to the row's tags).
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
    /// Tags from yes/no columns: `[[mapping.tags]] column = "低保"`.
    #[serde(default)]
    pub tags: Vec<TagRule>,
    /// A column that turns a row into a tombstone (`"deleted": true`).
    #[serde(default)]
    pub deleted: Option<FlagRule>,
}

const RESIDENT_FIELDS: &[&str] = &[
    "id_number",
    "name",
    "gender",
    "birth_date",
    "ethnicity",
    "phone",
    "hukou_address",
    "address",
    "house_source_id",
    "grid",
    "tags",
];
const HOUSE_FIELDS: &[&str] = &["address", "grid", "usage", "owner_id_number"];
const EVENT_FIELDS: &[&str] = &[
    "type",
    "title",
    "description",
    "occurred_at",
    "address",
    "house_source_id",
    "grid",
    "status",
    "party_id_numbers",
];
const ORGANIZATION_FIELDS: &[&str] = &[
    "name",
    "uscc",
    "type",
    "address",
    "grid",
    "legal_rep_id_number",
    "phone",
    "tags",
];
/// Fields that always get half-width folding, whitespace removal and upper case.
const IDENTIFIER_FIELDS: &[&str] = &[
    "id_number",
    "owner_id_number",
    "legal_rep_id_number",
    "uscc",
    "party_id_numbers",
    "phone",
    "grid",
];
/// Fields whose column may hold several values.
const LIST_FIELDS: &[&str] = &["tags", "party_id_numbers"];
const DEFAULT_YES: &[&str] = &["是", "1", "Y", "y", "yes", "Yes", "true", "TRUE", "√"];

fn fields_of(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Resident => RESIDENT_FIELDS,
        RecordKind::House => HOUSE_FIELDS,
        RecordKind::Event => EVENT_FIELDS,
        RecordKind::Organization => ORGANIZATION_FIELDS,
    }
}

/// One unified field a mapping fills.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Field(String),
    Attribute(String),
}

impl Target {
    fn parse(name: &str, kinds: &[RecordKind]) -> Result<Target, ConnectorError> {
        if let Some(key) = name.strip_prefix("attributes.") {
            if key.trim().is_empty() {
                return Err(ConnectorError::Config(
                    "mapping: `attributes.` needs a key after the dot".to_owned(),
                ));
            }
            return Ok(Target::Attribute(key.to_owned()));
        }
        if kinds.iter().any(|k| fields_of(*k).contains(&name)) {
            return Ok(Target::Field(name.to_owned()));
        }
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        Err(ConnectorError::Config(format!(
            "mapping: `{name}` is not a field of {} records; use `attributes.{name}` for \
             department-specific data",
            kinds.join("/")
        )))
    }

    fn name(&self) -> String {
        match self {
            Target::Field(f) => f.clone(),
            Target::Attribute(a) => format!("attributes.{a}"),
        }
    }

    fn applies_to(&self, kind: RecordKind) -> bool {
        match self {
            Target::Field(f) => fields_of(kind).contains(&f.as_str()),
            Target::Attribute(_) => true,
        }
    }
}

/// One compiled `fields` entry.
#[derive(Debug, Clone)]
struct FieldRule {
    target: Target,
    column: String,
    transforms: Vec<Transform>,
    codes: Option<(String, HashMap<String, String>)>,
    date: Option<(DateFormat, DateKind)>,
    list: bool,
}

#[derive(Debug, Clone)]
enum TemplatePart {
    Literal(String),
    Column(String),
}

/// A compiled mapping, ready to map rows.
#[derive(Debug, Clone)]
pub struct Mapping {
    kind: KindRule,
    source_id: Vec<TemplatePart>,
    version: VersionRule,
    version_date: Option<DateFormat>,
    fields: Vec<FieldRule>,
    constants: Vec<(Target, Value)>,
    constant_tags: Vec<String>,
    tags: Vec<(String, String, Vec<String>)>,
    deleted: Option<FlagRule>,
}

impl Mapping {
    /// Compiles a mapping configuration, checking every name it uses.
    pub fn compile(config: &MappingConfig) -> Result<Mapping, ConnectorError> {
        let kinds: Vec<RecordKind> = match &config.kind {
            KindRule::Fixed(kind) => vec![*kind],
            KindRule::ByColumn(by) => {
                if by.values.is_empty() {
                    return Err(ConnectorError::Config(
                        "mapping.kind: `values` must list at least one category".to_owned(),
                    ));
                }
                let mut kinds: Vec<RecordKind> = by.values.values().copied().collect();
                kinds.sort();
                kinds.dedup();
                kinds
            }
        };
        let source_id = match &config.source_id {
            SourceIdRule::Column(column) => vec![TemplatePart::Column(column.clone())],
            SourceIdRule::Template(template) => parse_template(template)?,
        };

        let mut fields = Vec::new();
        for (name, column) in &config.fields {
            let target = Target::parse(name, &kinds)?;
            let mut transforms = Vec::new();
            if IDENTIFIER_FIELDS.contains(&name.as_str()) {
                transforms.extend([
                    Transform::FullWidthToHalfWidth,
                    Transform::RemoveWhitespace,
                    Transform::Uppercase,
                ]);
            }
            transforms.extend(config.transforms.get(name).into_iter().flatten().copied());
            let codes = match config.codes.get(name) {
                None => None,
                Some(CodeTableConfig::Builtin(table)) => {
                    let pairs = codes::builtin_table(table).ok_or_else(|| {
                        ConnectorError::Config(format!(
                            "mapping.codes.{name}: no built-in table `{table}` (known: {})",
                            BUILTIN_TABLES.join(", ")
                        ))
                    })?;
                    Some((table.clone(), pairs.into_iter().collect()))
                }
                Some(CodeTableConfig::Inline(table)) => Some((
                    format!("mapping.codes.{name}"),
                    table
                        .iter()
                        .map(|(k, v)| (k.trim().to_owned(), v.clone()))
                        .collect(),
                )),
            };
            let date_kind = if matches!(name.as_str(), "occurred_at") {
                DateKind::Timestamp
            } else {
                DateKind::Date
            };
            let date = match config.dates.get(name) {
                Some(spec) => Some((DateFormat::parse(spec), date_kind)),
                None if matches!(name.as_str(), "birth_date" | "occurred_at") => {
                    Some((DateFormat::Auto, date_kind))
                }
                None => None,
            };
            fields.push(FieldRule {
                target,
                column: column.clone(),
                transforms,
                codes,
                date,
                list: LIST_FIELDS.contains(&name.as_str()),
            });
        }

        let mut constants = Vec::new();
        let mut constant_tags = Vec::new();
        for (name, value) in &config.constants {
            if name == "tags" {
                match value {
                    Value::String(tag) => constant_tags.push(tag.clone()),
                    Value::Array(items) => {
                        for item in items {
                            let tag = item.as_str().ok_or_else(|| {
                                ConnectorError::Config(
                                    "mapping.constants.tags must be strings".to_owned(),
                                )
                            })?;
                            constant_tags.push(tag.to_owned());
                        }
                    }
                    _ => {
                        return Err(ConnectorError::Config(
                            "mapping.constants.tags must be a string or a list of strings"
                                .to_owned(),
                        ))
                    }
                }
                continue;
            }
            if config.fields.contains_key(name) {
                return Err(ConnectorError::Config(format!(
                    "mapping: `{name}` is both a column in [mapping.fields] and a constant"
                )));
            }
            constants.push((Target::parse(name, &kinds)?, value.clone()));
        }

        for (section, keys) in [
            ("codes", config.codes.keys().collect::<Vec<_>>()),
            (
                "dates",
                config.dates.keys().filter(|k| *k != "version").collect(),
            ),
            ("transforms", config.transforms.keys().collect()),
        ] {
            for key in keys {
                if !config.fields.contains_key(key) {
                    return Err(ConnectorError::Config(format!(
                        "mapping.{section}.{key}: `{key}` is not mapped in [mapping.fields]"
                    )));
                }
            }
        }
        if config.dates.contains_key("version") && config.version == VersionRule::Source {
            return Err(ConnectorError::Config(
                "mapping.dates.version needs `version = { column = … }`".to_owned(),
            ));
        }
        let tags = config
            .tags
            .iter()
            .map(|rule| {
                (
                    rule.column.clone(),
                    rule.tag.clone().unwrap_or_else(|| rule.column.clone()),
                    rule.when
                        .clone()
                        .unwrap_or_else(|| DEFAULT_YES.iter().map(|s| (*s).to_owned()).collect()),
                )
            })
            .collect();
        Ok(Mapping {
            kind: config.kind.clone(),
            source_id,
            version: config.version.clone(),
            version_date: config.dates.get("version").map(|s| DateFormat::parse(s)),
            fields,
            constants,
            constant_tags,
            tags,
            deleted: config.deleted.clone(),
        })
    }

    /// Whether the mapping needs the source to supply a default version.
    pub fn needs_source_version(&self) -> bool {
        self.version == VersionRule::Source
    }

    /// Maps one row. A failure keeps the row, so quarantine can hold it for re-submission.
    pub fn map(&self, row: SourceRow) -> MappedRecord {
        let mut source_id = None;
        match self.map_row(&row, &mut source_id) {
            Ok(record) => MappedRecord::Mapped {
                origin: Origin {
                    source_file: row.source_file,
                    line: row.line,
                },
                record,
            },
            Err((field, code, message)) => MappedRecord::Failed {
                error: MappingError {
                    source_file: row.source_file,
                    line: row.line,
                    field,
                    code,
                    message,
                    source_id,
                },
                row: row.fields,
            },
        }
    }

    fn map_row(
        &self,
        row: &SourceRow,
        source_id_out: &mut Option<String>,
    ) -> Result<Value, (String, String, String)> {
        let kind = match &self.kind {
            KindRule::Fixed(kind) => *kind,
            KindRule::ByColumn(by) => {
                let text = cell_text(row, &by.column, "kind")?.unwrap_or_default();
                *by.values.get(text.trim()).ok_or_else(|| {
                    fail(
                        "kind",
                        "mapping_unknown_code",
                        format!(
                            "column `{}` holds a category not listed in mapping.kind.values",
                            by.column
                        ),
                    )
                })?
            }
        };
        let mut source_id = String::new();
        for part in &self.source_id {
            match part {
                TemplatePart::Literal(text) => source_id.push_str(text),
                TemplatePart::Column(column) => {
                    let text = cell_text(row, column, "source_id")?.unwrap_or_default();
                    if text.trim().is_empty() {
                        return Err(fail(
                            "source_id",
                            "mapping_missing_value",
                            format!("column `{column}` is empty; it is needed for source_id"),
                        ));
                    }
                    source_id.push_str(text.trim());
                }
            }
        }
        *source_id_out = Some(source_id.chars().take(200).collect());
        let version = match &self.version {
            VersionRule::Source => row.default_version.clone().ok_or_else(|| {
                fail(
                    "version",
                    "mapping_missing_value",
                    "this source supplies no version: set `version = { column = … }` in the mapping",
                )
            })?,
            VersionRule::Column(column) => {
                let value = cell(row, column, "version")?.cloned().unwrap_or(Value::Null);
                match (&value, &self.version_date) {
                    (Value::Null, _) => {
                        return Err(fail(
                            "version",
                            "mapping_missing_value",
                            format!("column `{column}` is empty; it is needed for version"),
                        ))
                    }
                    (_, Some(format)) => {
                        let text = value_text(&value).unwrap_or_default();
                        Value::String(
                            dates::normalise(&text, format, DateKind::Timestamp).ok_or_else(
                                || {
                                    fail(
                                        "version",
                                        "mapping_bad_date",
                                        format!(
                                            "column `{column}` is not a timestamp in the format of mapping.dates.version"
                                        ),
                                    )
                                },
                            )?,
                        )
                    }
                    (Value::String(s), None) => Value::String(s.trim().to_owned()),
                    (other, None) => other.clone(),
                }
            }
        };

        let mut out = Map::new();
        out.insert("kind".to_owned(), Value::String(kind.as_str().to_owned()));
        out.insert("source_id".to_owned(), Value::String(source_id));
        out.insert("version".to_owned(), version);

        if let Some(rule) = &self.deleted {
            let text = cell_text(row, &rule.column, "deleted")?.unwrap_or_default();
            if rule.when.iter().any(|w| w.trim() == text.trim()) {
                out.insert("deleted".to_owned(), Value::Bool(true));
                return validate(Value::Object(out));
            }
        }

        let mut attributes = Map::new();
        let mut tags: Vec<Value> = Vec::new();
        for (target, value) in &self.constants {
            if target.applies_to(kind) {
                put(&mut out, &mut attributes, target, value.clone());
            }
        }
        for rule in &self.fields {
            if !rule.target.applies_to(kind) {
                continue;
            }
            let field = rule.target.name();
            let Some(value) = cell(row, &rule.column, &field)? else {
                continue;
            };
            let mapped = if rule.list {
                let text = value_text(value).ok_or_else(|| not_text(&rule.column, &field))?;
                let mut items = Vec::new();
                for item in text.split([',', '，', ';', '；', '、', ' ', '\u{3000}']) {
                    if let Some(v) = apply(rule, item, &field)? {
                        items.push(Value::String(v));
                    }
                }
                if items.is_empty() {
                    continue;
                }
                Value::Array(items)
            } else if let (Target::Attribute(_), Value::Array(_) | Value::Object(_)) =
                (&rule.target, value)
            {
                value.clone()
            } else {
                let text = value_text(value).ok_or_else(|| not_text(&rule.column, &field))?;
                match apply(rule, &text, &field)? {
                    Some(v) => Value::String(v),
                    None => continue,
                }
            };
            if matches!(&rule.target, Target::Field(f) if f == "tags") {
                if let Value::Array(items) = mapped {
                    tags.extend(items);
                }
                continue;
            }
            put(&mut out, &mut attributes, &rule.target, mapped);
        }
        if kind == RecordKind::Resident {
            for (column, tag, when) in &self.tags {
                let text = cell_text(row, column, "tags")?.unwrap_or_default();
                if when.iter().any(|w| w == text.trim()) {
                    tags.push(Value::String(tag.clone()));
                }
            }
            tags.extend(self.constant_tags.iter().cloned().map(Value::String));
            if !tags.is_empty() {
                out.insert("tags".to_owned(), Value::Array(tags));
            }
        }
        if !attributes.is_empty() {
            out.insert("attributes".to_owned(), Value::Object(attributes));
        }
        validate(Value::Object(out))
    }
}

type Failure = (String, String, String);

fn fail(field: &str, code: &str, message: impl Into<String>) -> Failure {
    (field.to_owned(), code.to_owned(), message.into())
}

fn not_text(column: &str, field: &str) -> Failure {
    fail(
        field,
        "mapping_bad_value",
        format!("column `{column}` holds a list or an object where text is expected"),
    )
}

fn put(
    out: &mut Map<String, Value>,
    attributes: &mut Map<String, Value>,
    target: &Target,
    value: Value,
) {
    match target {
        Target::Field(f) => {
            out.insert(f.clone(), value);
        }
        Target::Attribute(a) => {
            attributes.insert(a.clone(), value);
        }
    }
}

/// Runs the model's own validation so that a record leaves the connector only if the
/// pipeline will accept it; a failure keeps the model's code and field.
fn validate(record: Value) -> Result<Value, Failure> {
    match Record::from_value(&record) {
        Ok(_) => Ok(record),
        Err(err) => Err(fail(err.field(), err.code(), err.message())),
    }
}

/// The cell of `column`, `None` when empty. A reader's cell error is reported here, so only
/// columns the mapping uses can fail a row.
fn cell<'r>(row: &'r SourceRow, column: &str, field: &str) -> Result<Option<&'r Value>, Failure> {
    if let Some(err) = row.cell_errors.iter().find(|e| e.column == column) {
        return Err(fail(
            field,
            err.code,
            format!("column `{column}`: {}", err.message),
        ));
    }
    let value = match row.fields.get(column) {
        Some(value) => Some(value),
        None => lookup_path(&row.fields, column),
    };
    match value {
        None if row.tabular => Err(fail(
            field,
            "mapping_missing_column",
            format!("the source has no column `{column}`"),
        )),
        None | Some(Value::Null) => Ok(None),
        Some(value) => Ok(Some(value)),
    }
}

fn cell_text(row: &SourceRow, column: &str, field: &str) -> Result<Option<String>, Failure> {
    match cell(row, column, field)? {
        None => Ok(None),
        Some(value) => value_text(value)
            .map(Some)
            .ok_or_else(|| not_text(column, field)),
    }
}

/// `a.b.c` into nested JSON objects (REST and JSON sources).
fn lookup_path<'v>(fields: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut current = fields.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Trim, transforms, code table, date: the value chain of one field. `None` = empty.
fn apply(rule: &FieldRule, raw: &str, field: &str) -> Result<Option<String>, Failure> {
    let mut value = raw.trim().to_owned();
    for transform in &rule.transforms {
        value = match transform {
            Transform::FullWidthToHalfWidth => text::full_width_to_half_width(&value),
            Transform::TraditionalToSimplified => text::traditional_to_simplified(&value),
            Transform::Uppercase => value.to_ascii_uppercase(),
            Transform::RemoveWhitespace => text::remove_whitespace(&value),
        };
        value = value.trim().to_owned();
    }
    if value.is_empty() {
        return Ok(None);
    }
    if let Some((table_name, table)) = &rule.codes {
        value = table.get(&value).cloned().ok_or_else(|| {
            fail(
                field,
                "mapping_unknown_code",
                format!(
                    "column `{}` holds a code that is not in the table `{table_name}`",
                    rule.column
                ),
            )
        })?;
    }
    if let Some((format, kind)) = &rule.date {
        value = dates::normalise(&value, format, *kind).ok_or_else(|| {
            let expected = match format {
                DateFormat::Auto => {
                    "a date such as 19491231, 1949-12-31 or 1949年12月31日".to_owned()
                }
                DateFormat::ExcelSerial => "an Excel serial date".to_owned(),
                DateFormat::Pattern(p) => format!("a date in the format `{p}`"),
            };
            fail(
                field,
                "mapping_bad_date",
                format!("column `{}` is not {expected}", rule.column),
            )
        })?;
    }
    Ok(Some(value))
}

fn parse_template(template: &str) -> Result<Vec<TemplatePart>, ConnectorError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return Err(ConnectorError::Config(
                "mapping.source_id: a `}` in the template has no `{`".to_owned(),
            ));
        }
        if open > 0 {
            parts.push(TemplatePart::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            ConnectorError::Config(
                "mapping.source_id: a `{` in the template is not closed".to_owned(),
            )
        })?;
        let column = after[..close].trim();
        if column.is_empty() {
            return Err(ConnectorError::Config(
                "mapping.source_id: `{}` in the template names no column".to_owned(),
            ));
        }
        parts.push(TemplatePart::Column(column.to_owned()));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(ConnectorError::Config(
            "mapping.source_id: a `}` in the template has no `{`".to_owned(),
        ));
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    if !parts.iter().any(|p| matches!(p, TemplatePart::Column(_))) {
        return Err(ConnectorError::Config(
            "mapping.source_id: the template must use at least one `{column}`".to_owned(),
        ));
    }
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "11010519491231002X";

    fn mapping(toml_text: &str) -> Mapping {
        let config: MappingConfig = toml::from_str(toml_text).unwrap();
        Mapping::compile(&config).unwrap()
    }

    fn row(fields: Value) -> SourceRow {
        SourceRow {
            source_file: "民政.csv".to_owned(),
            line: 7,
            fields: fields.as_object().unwrap().clone(),
            cell_errors: Vec::new(),
            default_version: Some(json!("2026-11-01T08:00:00Z")),
            tabular: true,
        }
    }

    const RESIDENTS: &str = r#"
kind = "resident"
source_id = { template = "MZ-{编号}" }
[fields]
id_number = "身份证号"
name = "姓名"
gender = "性别"
birth_date = "出生日期"
ethnicity = "民族"
"attributes.低保类型" = "低保类型"
[codes]
gender = "gb2261_gender"
ethnicity = "gb3304_ethnicity"
[transforms]
name = ["traditional_to_simplified"]
[constants]
grid = "110105001001003"
[[tags]]
column = "低保"
"#;

    fn ok(record: MappedRecord) -> Value {
        match record {
            MappedRecord::Mapped { record, .. } => {
                Record::from_value(&record).unwrap();
                record
            }
            MappedRecord::Failed { error, .. } => panic!("mapping failed: {error}"),
        }
    }

    fn err(record: MappedRecord) -> MappingError {
        match record {
            MappedRecord::Mapped { record, .. } => panic!("mapped: {record}"),
            MappedRecord::Failed { error, .. } => error,
        }
    }

    fn good_row() -> Value {
        json!({"编号":"0001","身份证号":"１１０１０５１９４９１２３１００２ｘ","姓名":" 張偉 ","性别":"2",
            "出生日期":"1949年12月31日","民族":"1","低保类型":"A","低保":"是"})
    }

    #[test]
    fn maps_a_resident_row() {
        let m = mapping(RESIDENTS);
        let record = ok(m.map(row(good_row())));
        assert_eq!(
            record,
            json!({"kind":"resident","source_id":"MZ-0001","version":"2026-11-01T08:00:00Z",
                "id_number":ID,"name":"张伟","gender":"female","birth_date":"1949-12-31",
                "ethnicity":"汉族","grid":"110105001001003","tags":["低保"],
                "attributes":{"低保类型":"A"}})
        );
    }

    #[test]
    fn failures_name_field_code_and_line_but_not_the_value() {
        let m = mapping(RESIDENTS);
        let mut bad = good_row();
        bad["性别"] = json!("3");
        let e = err(m.map(row(bad)));
        assert_eq!(
            (e.code.as_str(), e.field.as_str(), e.line),
            ("mapping_unknown_code", "gender", 7)
        );
        assert_eq!(e.source_file, "民政.csv");
        assert_eq!(e.source_id.as_deref(), Some("MZ-0001"));

        let mut bad = good_row();
        bad["出生日期"] = json!("1949年13月31日");
        let e = err(m.map(row(bad)));
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("mapping_bad_date", "birth_date")
        );
        assert!(!e.message.contains("1949年13月31日"));

        let mut bad = good_row();
        bad["身份证号"] = json!("110105194912310021");
        let e = err(m.map(row(bad)));
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("id_number_checksum", "id_number")
        );
        assert!(!e.to_string().contains("110105194912310021"));

        let mut bad = good_row();
        bad.as_object_mut().unwrap().remove("民族");
        let e = err(m.map(row(bad)));
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("mapping_missing_column", "ethnicity")
        );
    }

    #[test]
    fn kind_by_column_and_tombstones() {
        let m = mapping(
            r#"
kind = { column = "类别", values = { "人口" = "resident", "房屋" = "house" } }
source_id = { column = "编号" }
version = { column = "更新时间" }
[fields]
name = "姓名"
address = "地址"
usage = "用途"
[constants]
grid = "110105001001003"
[deleted]
column = "状态"
when = ["注销"]
"#,
        );
        let house = ok(m.map(row(
            json!({"类别":"房屋","编号":"H1","更新时间":"2026-11-01 08:00",
            "姓名":"张三","地址":"幸福里3号楼","用途":"rental","状态":"正常"}),
        )));
        assert_eq!(house["kind"], "house");
        assert!(house.get("name").is_none());
        assert_eq!(house["version"], "2026-11-01 08:00");
        let gone = ok(m.map(row(json!({"类别":"人口","编号":"P1","更新时间":7,
            "姓名":"","地址":"","用途":"","状态":"注销"}))));
        assert_eq!(
            gone,
            json!({"kind":"resident","source_id":"P1","version":7,"deleted":true})
        );
        let e = err(m.map(row(json!({"类别":"单位","编号":"X","更新时间":1,
            "姓名":"","地址":"","用途":"","状态":""}))));
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("mapping_unknown_code", "kind")
        );
    }

    #[test]
    fn config_mistakes_are_caught_at_compile() {
        let bad = [
            ("kind = \"resident\"\nsource_id = { column = \"a\" }\n[fields]\nphone_number = \"b\"", "phone_number"),
            ("kind = \"resident\"\nsource_id = { column = \"a\" }\n[fields]\ngender = \"b\"\n[codes]\ngender = \"gb9999\"", "gb9999"),
            ("kind = \"resident\"\nsource_id = { template = \"MZ-\" }", "template"),
            ("kind = \"resident\"\nsource_id = { column = \"a\" }\n[codes]\ngender = \"gb2261_gender\"", "not mapped"),
            ("kind = \"house\"\nsource_id = { column = \"a\" }\n[fields]\nname = \"b\"", "house"),
        ];
        for (text, needle) in bad {
            let config: MappingConfig = toml::from_str(text).unwrap();
            let e = Mapping::compile(&config).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!(toml::from_str::<MappingConfig>(
            "kind = \"resident\"\nsource_id = { column = \"a\" }\nextra = 1"
        )
        .is_err());
    }

    #[test]
    fn events_with_party_lists_and_nested_json() {
        let m = mapping(
            r#"
kind = "event"
source_id = { column = "id" }
version = { column = "meta.updated" }
[fields]
type = "category"
title = "title"
occurred_at = "meta.when"
party_id_numbers = "parties"
status = "status"
[codes.status]
"01" = "open"
"02" = "closed"
[constants]
grid = "110105001001003"
"#,
        );
        let mut r = row(json!({"id":"WG-9","category":"dispute","title":"邻里纠纷",
            "meta":{"updated":"2026-11-01T08:00:00Z","when":"2026-10-31 21:30"},
            "parties":format!("{ID}、110105194912310038"),"status":"01"}));
        r.tabular = false;
        let e = ok(m.map(r));
        assert_eq!(e["occurred_at"], "2026-10-31T13:30:00Z");
        assert_eq!(e["status"], "open");
        assert_eq!(e["party_id_numbers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn template_parsing() {
        assert!(parse_template("MZ-{编号}-{户号}").unwrap().len() == 4);
        assert!(parse_template("MZ-{编号").is_err());
        assert!(parse_template("MZ-}{a}").is_err());
    }
}
