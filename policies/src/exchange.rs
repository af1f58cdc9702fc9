//! What departments receive from one another, and where grid workers' reports go: the sharing
//! agreements (`sharing.csv`) and the routing of event types (`routing.csv`) of the policy
//! folder.
//!
//! Guarantees:
//! - A department receives nothing without an agreement line: [`ExchangeTables::agreement`]
//!   answers `None` unless some line names the receiving department, the kind, the event type
//!   (or `*`) and the purpose. The levels it answers are per data class, the best of the
//!   matching lines; a class no line names is hidden. Owner restrictions still cap them when
//!   the view applies them ([`crate::view::ViewPlan::for_agreement`]).
//! - Parsing refuses unknown departments, kinds, classes, levels and malformed event types,
//!   with the file and line; nothing is guessed.

use std::collections::{BTreeMap, HashMap};

use model::{Department, RecordKind};

use crate::tables::TableError;
use crate::{Level, CLASSES};

/// One agreement line: `receiver, kind, type, class, purpose, level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementLine {
    pub receiver: Department,
    pub kind: RecordKind,
    /// An event type, or `*` for every type (and for kinds without types).
    pub event_type: String,
    pub class: String,
    pub purpose: String,
    pub level: Level,
}

/// The parsed sharing agreements and routing table.
#[derive(Debug, Clone, Default)]
pub struct ExchangeTables {
    lines: Vec<AgreementLine>,
    /// event type -> departments a report of that type is routed to, in file order.
    routes: BTreeMap<String, Vec<Department>>,
}

/// An event type code: snake_case ASCII, at most 40 characters (`*`: any).
pub fn is_type_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ExchangeTables {
    pub fn parse(sharing: &str, routing: &str) -> Result<ExchangeTables, TableError> {
        let mut tables = ExchangeTables::default();
        for (line, cells) in crate::tables::rows(sharing) {
            let err = |message: String| TableError {
                file: "sharing.csv",
                line,
                message,
            };
            let [receiver, kind, event_type, class, purpose, level] = cells[..] else {
                return Err(err(
                    "expected: receiver, kind, type, class, purpose, level".into()
                ));
            };
            let receiver = Department::parse(receiver)
                .map_err(|_| err(format!("unknown department {receiver:?}")))?;
            let kind =
                RecordKind::parse(kind).ok_or_else(|| err(format!("unknown kind {kind:?}")))?;
            if event_type != "*" && !is_type_code(event_type) {
                return Err(err(format!(
                    "type must be * or a snake_case event type, not {event_type:?}"
                )));
            }
            if event_type != "*" && kind != RecordKind::Event {
                return Err(err("only events have types; write * for other kinds".into()));
            }
            if !CLASSES.contains(&class) {
                return Err(err(format!(
                    "unknown class {class:?}; classes are {}",
                    CLASSES.join(", ")
                )));
            }
            if purpose.is_empty() || purpose == "*" {
                return Err(err(
                    "an agreement names one purpose (a department receives for a stated purpose)"
                        .into(),
                ));
            }
            let level = match Level::parse(level) {
                Some(level @ (Level::Clear | Level::Masked)) => level,
                _ => return Err(err(format!("level must be clear or masked, not {level:?}"))),
            };
            tables.lines.push(AgreementLine {
                receiver,
                kind,
                event_type: event_type.to_owned(),
                class: class.to_owned(),
                purpose: purpose.to_owned(),
                level,
            });
        }
        for (line, cells) in crate::tables::rows(routing) {
            let err = |message: String| TableError {
                file: "routing.csv",
                line,
                message,
            };
            let [event_type, department] = cells[..] else {
                return Err(err("expected: type, department".into()));
            };
            if !is_type_code(event_type) {
                return Err(err(format!(
                    "type must be a snake_case event type, not {event_type:?}"
                )));
            }
            let department = Department::parse(department)
                .map_err(|_| err(format!("unknown department {department:?}")))?;
            let routed = tables.routes.entry(event_type.to_owned()).or_default();
            if !routed.contains(&department) {
                routed.push(department);
            }
        }
        Ok(tables)
    }

    /// The level per class that `receiver` gets of a `kind` entity (of `event_type`, for an
    /// event) for `purpose`, or `None` when no agreement covers it.
    pub fn agreement(
        &self,
        receiver: Department,
        kind: RecordKind,
        event_type: Option<&str>,
        purpose: &str,
    ) -> Option<HashMap<&'static str, Level>> {
        let mut levels: HashMap<&'static str, Level> = HashMap::new();
        let mut any = false;
        for line in &self.lines {
            let type_matches =
                line.event_type == "*" || Some(line.event_type.as_str()) == event_type;
            if line.receiver != receiver
                || line.kind != kind
                || line.purpose != purpose
                || !type_matches
            {
                continue;
            }
            any = true;
            if let Some(class) = CLASSES.iter().find(|c| **c == line.class) {
                let slot = levels.entry(class).or_insert(Level::Hidden);
                *slot = (*slot).max(line.level);
            }
        }
        any.then_some(levels)
    }

    /// Whether any agreement lets `receiver` receive `kind` (of `event_type`) for `purpose`.
    pub fn covers(
        &self,
        receiver: Department,
        kind: RecordKind,
        event_type: Option<&str>,
        purpose: &str,
    ) -> bool {
        self.agreement(receiver, kind, event_type, purpose)
            .is_some()
    }

    /// Every agreement line, in file order (for the policy preview).
    pub fn lines(&self) -> &[AgreementLine] {
        &self.lines
    }

    /// The departments a report of `event_type` is routed to (none: the street handles it).
    pub fn route(&self, event_type: &str) -> &[Department] {
        self.routes
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The whole routing table, by event type.
    pub fn routes(&self) -> &BTreeMap<String, Vec<Department>> {
        &self.routes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn defaults() -> ExchangeTables {
        let files = crate::TableFiles::defaults();
        ExchangeTables::parse(&files.sharing, &files.routing).unwrap()
    }

    #[test]
    fn the_justice_office_receives_disputes_for_mediation_and_nothing_else() {
        let tables = defaults();
        let levels = tables
            .agreement(
                Department::Sifa,
                RecordKind::Event,
                Some("dispute"),
                "dispute_mediation",
            )
            .expect("an agreement for disputes");
        assert_eq!(levels.get("free_text"), Some(&Level::Clear));
        assert!(!levels.contains_key("health"), "{levels:?}");
        assert!(tables
            .agreement(
                Department::Sifa,
                RecordKind::Event,
                Some("dispute"),
                "routine_visit"
            )
            .is_none());
        assert!(tables
            .agreement(
                Department::Sifa,
                RecordKind::Event,
                Some("fire_hazard"),
                "dispute_mediation"
            )
            .is_none());
        assert!(tables
            .agreement(
                Department::Weijian,
                RecordKind::Event,
                Some("dispute"),
                "dispute_mediation"
            )
            .is_none());
        assert_eq!(
            tables.route("dispute"),
            [Department::Sifa, Department::Gongan]
        );
        assert!(tables.route("no_such_type").is_empty());
    }

    #[test]
    fn bad_lines_are_refused_with_file_and_line() {
        let cases = [
            (
                "sifa, event, dispute, free_text, dispute_mediation",
                "",
                "sharing.csv",
                1,
            ),
            (
                "police, event, dispute, free_text, x, clear",
                "",
                "sharing.csv",
                1,
            ),
            (
                "sifa, evnt, dispute, free_text, x, clear",
                "",
                "sharing.csv",
                1,
            ),
            (
                "# c\nsifa, event, Dispute!, free_text, x, clear",
                "",
                "sharing.csv",
                2,
            ),
            (
                "sifa, resident, dispute, personal, x, clear",
                "",
                "sharing.csv",
                1,
            ),
            ("sifa, event, *, secret, x, clear", "", "sharing.csv", 1),
            ("sifa, event, *, personal, *, clear", "", "sharing.csv", 1),
            ("sifa, event, *, personal, x, hidden", "", "sharing.csv", 1),
            ("", "dispute", "routing.csv", 1),
            ("", "dispute, court", "routing.csv", 1),
            ("", "Dispute, sifa", "routing.csv", 1),
        ];
        for (sharing, routing, file, line) in cases {
            let err = ExchangeTables::parse(sharing, routing).unwrap_err();
            assert_eq!(
                (err.file, err.line),
                (file, line),
                "{sharing}{routing}: {err}"
            );
        }
    }

    #[test]
    fn levels_combine_by_the_best_matching_line() {
        let tables = ExchangeTables::parse(
            "gongan, event, *, personal, x, masked\ngongan, event, fight, personal, x, clear\n",
            "fight, gongan\nfight, gongan\nfight, sifa\n",
        )
        .unwrap();
        let level = |t: Option<&str>| {
            tables
                .agreement(Department::Gongan, RecordKind::Event, t, "x")
                .and_then(|l| l.get("personal").copied())
        };
        assert_eq!(level(Some("fight")), Some(Level::Clear));
        assert_eq!(level(Some("noise")), Some(Level::Masked));
        assert_eq!(
            tables.route("fight"),
            [Department::Gongan, Department::Sifa]
        );
    }
}
