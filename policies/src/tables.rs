//! The field-class tables that sit beside the casbin policy: which class every field, tag and
//! department's attributes belong to, how far an owner department lets others see its data,
//! and the label a masked tag shows.
//!
//! Guarantees: [`FieldTables::parse`] accepts only known classes, levels and departments and
//! reports the file and line of anything else; lookups are total (an unlisted field has no
//! class and is therefore hidden by the broker).

use std::collections::HashMap;

use model::Department;

/// How a caller may see a value. Ordered: `Hidden < Masked < Clear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Hidden,
    Masked,
    Clear,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim() {
            "hidden" => Some(Level::Hidden),
            "masked" => Some(Level::Masked),
            "clear" => Some(Level::Clear),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Hidden => "hidden",
            Level::Masked => "masked",
            Level::Clear => "clear",
        }
    }
}

/// Every field class the policy can name.
/// `minor` is assigned to no field by default: it caps every personal value of the profile of
/// a child under 14 ([`crate::minor`]).
pub const CLASSES: [&str; 13] = [
    "public",
    "internal",
    "personal",
    "identifier",
    "free_text",
    "welfare",
    "welfare_detail",
    "elderly",
    "health",
    "health_detail",
    "criminal_justice",
    "criminal_justice_detail",
    "minor",
];

/// Classes of one department's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentClasses {
    /// Class of a tag this department publishes that `tag_classes.csv` does not list.
    pub tag: String,
    /// Class of everything under this department's `attributes`.
    pub attributes: String,
    /// A caller who cannot see this class at all does not learn the department holds a record.
    pub visibility: String,
}

/// Raw text of the table files, as read from the policy folder.
#[derive(Debug, Clone, Default)]
pub struct TableFiles {
    pub field_classes: String,
    pub tag_classes: String,
    pub department_classes: String,
    pub owner_restrictions: String,
    pub masked_labels: String,
    /// Sharing agreements ([`crate::exchange`]).
    pub sharing: String,
    /// Where reports of each event type go ([`crate::exchange`]).
    pub routing: String,
}

impl TableFiles {
    /// The shipped defaults.
    pub fn defaults() -> TableFiles {
        TableFiles {
            field_classes: include_str!("../default/field_classes.csv").to_owned(),
            tag_classes: include_str!("../default/tag_classes.csv").to_owned(),
            department_classes: include_str!("../default/department_classes.csv").to_owned(),
            owner_restrictions: include_str!("../default/owner_restrictions.csv").to_owned(),
            masked_labels: include_str!("../default/masked_labels.csv").to_owned(),
            sharing: include_str!("../default/sharing.csv").to_owned(),
            routing: include_str!("../default/routing.csv").to_owned(),
        }
    }

    /// File names, in the order of the struct fields.
    pub const NAMES: [&'static str; 7] = [
        "field_classes.csv",
        "tag_classes.csv",
        "department_classes.csv",
        "owner_restrictions.csv",
        "masked_labels.csv",
        "sharing.csv",
        "routing.csv",
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct TableError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}

/// The parsed tables.
#[derive(Debug, Clone, Default)]
pub struct FieldTables {
    /// kind -> field -> class (nested so lookups by `&str` need no allocation).
    fields: HashMap<String, HashMap<String, String>>,
    tags: HashMap<String, String>,
    departments: HashMap<Department, DepartmentClasses>,
    owner_caps: HashMap<Department, HashMap<String, Level>>,
    masked_labels: HashMap<String, String>,
}

impl FieldTables {
    pub fn parse(files: &TableFiles) -> Result<FieldTables, TableError> {
        let mut tables = FieldTables::default();
        for (line, cells) in rows(&files.field_classes) {
            let err = |message: String| TableError {
                file: "field_classes.csv",
                line,
                message,
            };
            let [kind, field, class] = cells[..] else {
                return Err(err("expected: kind, field, class".into()));
            };
            if model::RecordKind::parse(kind).is_none() {
                return Err(err(format!("unknown kind {kind:?}")));
            }
            check_class(class).map_err(err)?;
            tables
                .fields
                .entry(kind.to_owned())
                .or_default()
                .insert(field.to_owned(), class.to_owned());
        }
        for (line, cells) in rows(&files.tag_classes) {
            let err = |message: String| TableError {
                file: "tag_classes.csv",
                line,
                message,
            };
            let [tag, class] = cells[..] else {
                return Err(err("expected: tag, class".into()));
            };
            check_class(class).map_err(err)?;
            tables.tags.insert(tag.to_owned(), class.to_owned());
        }
        for (line, cells) in rows(&files.department_classes) {
            let err = |message: String| TableError {
                file: "department_classes.csv",
                line,
                message,
            };
            let [dept, tag, attributes, visibility] = cells[..] else {
                return Err(err(
                    "expected: department, tag class, attribute class, visibility class".into(),
                ));
            };
            let dept =
                Department::parse(dept).map_err(|_| err(format!("unknown department {dept:?}")))?;
            for class in [tag, attributes, visibility] {
                check_class(class).map_err(err)?;
            }
            tables.departments.insert(
                dept,
                DepartmentClasses {
                    tag: tag.to_owned(),
                    attributes: attributes.to_owned(),
                    visibility: visibility.to_owned(),
                },
            );
        }
        for (line, cells) in rows(&files.owner_restrictions) {
            let err = |message: String| TableError {
                file: "owner_restrictions.csv",
                line,
                message,
            };
            let [dept, class, level] = cells[..] else {
                return Err(err("expected: department, class, level".into()));
            };
            let dept =
                Department::parse(dept).map_err(|_| err(format!("unknown department {dept:?}")))?;
            check_class(class).map_err(err)?;
            let level = Level::parse(level)
                .ok_or_else(|| err("level must be clear, masked or hidden".into()))?;
            tables
                .owner_caps
                .entry(dept)
                .or_default()
                .insert(class.to_owned(), level);
        }
        for (line, cells) in rows(&files.masked_labels) {
            let err = |message: String| TableError {
                file: "masked_labels.csv",
                line,
                message,
            };
            let [class, label] = cells[..] else {
                return Err(err("expected: class, label".into()));
            };
            check_class(class).map_err(err)?;
            tables
                .masked_labels
                .insert(class.to_owned(), label.to_owned());
        }
        Ok(tables)
    }

    /// The class of a field of an entity kind, if the table lists it.
    pub fn field_class(&self, kind: &str, field: &str) -> Option<&str> {
        self.fields
            .get(kind)
            .and_then(|fields| fields.get(field))
            .map(String::as_str)
    }

    /// The class of a tag published by `department`.
    pub fn tag_class(&self, tag: &str, department: Department) -> &str {
        self.tags
            .get(tag)
            .map(String::as_str)
            .or_else(|| self.departments.get(&department).map(|d| d.tag.as_str()))
            .unwrap_or("personal")
    }

    /// The class of a department's attributes.
    pub fn attribute_class(&self, department: Department) -> &str {
        self.departments
            .get(&department)
            .map(|d| d.attributes.as_str())
            .unwrap_or("personal")
    }

    /// The class that decides whether a caller learns that `department` holds a record.
    pub fn visibility_class(&self, department: Department) -> &str {
        self.departments
            .get(&department)
            .map(|d| d.visibility.as_str())
            .unwrap_or("personal")
    }

    /// The most anyone outside `department` may see of its data of `class`.
    pub fn owner_cap(&self, department: Department, class: &str) -> Level {
        self.owner_caps
            .get(&department)
            .and_then(|caps| caps.get(class))
            .copied()
            .unwrap_or(Level::Clear)
    }

    /// The label a masked tag of `class` shows.
    pub fn masked_label(&self, class: &str) -> &str {
        self.masked_labels
            .get(class)
            .map(String::as_str)
            .unwrap_or("***")
    }

    /// Every (kind, field) the table lists, sorted.
    pub fn fields(&self) -> Vec<(&str, &str, &str)> {
        let mut out: Vec<_> = self
            .fields
            .iter()
            .flat_map(|(k, fields)| {
                fields
                    .iter()
                    .map(move |(f, c)| (k.as_str(), f.as_str(), c.as_str()))
            })
            .collect();
        out.sort();
        out
    }
}

fn check_class(class: &str) -> Result<(), String> {
    if CLASSES.contains(&class) {
        Ok(())
    } else {
        Err(format!(
            "unknown class {class:?}; classes are {}",
            CLASSES.join(", ")
        ))
    }
}

/// Non-comment, non-blank lines split on commas and trimmed, with 1-based line numbers.
pub(crate) fn rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#'))
            .then(|| (i + 1, line.split(',').map(str::trim).collect()))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_answer() {
        let t = FieldTables::parse(&TableFiles::defaults()).unwrap();
        assert_eq!(t.field_class("resident", "id_number"), Some("identifier"));
        assert_eq!(t.field_class("resident", "nonexistent"), None);
        assert_eq!(t.tag_class("慢性病", Department::Minzheng), "health");
        assert_eq!(t.tag_class("某新标签", Department::Weijian), "health");
        assert_eq!(
            t.attribute_class(Department::Sifa),
            "criminal_justice_detail"
        );
        assert_eq!(
            t.owner_cap(Department::Weijian, "health_detail"),
            Level::Hidden
        );
        assert_eq!(t.owner_cap(Department::Weijian, "health"), Level::Clear);
        assert_eq!(t.masked_label("health"), "健康关注");
    }

    #[test]
    fn errors_name_file_and_line() {
        let mut files = TableFiles::defaults();
        files.field_classes = "# header\nresident, name, secret\n".into();
        let err = FieldTables::parse(&files).unwrap_err();
        assert_eq!((err.file, err.line), ("field_classes.csv", 2));
        files.field_classes = "resident, name\n".into();
        assert!(FieldTables::parse(&files).is_err());
    }
}
