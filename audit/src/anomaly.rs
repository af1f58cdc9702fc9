//! Anomaly detection over audit records: the patterns a compliance officer should look at.
//!
//! Guarantees ([`detect_anomalies`] is a pure function of the records and the [`AnomalyConfig`]):
//! - **Bulk lookup**: an actor obtained the data of *more than*
//!   [`AnomalyConfig::bulk_residents`] distinct residents (keyed references in
//!   [`AuditRecord::residents`], records not denied) within any sliding hour.
//! - **Repeated denials**: an actor was refused at least [`AnomalyConfig::denials`] times
//!   within any sliding hour.
//! - **Many actors, one resident**: at least [`AnomalyConfig::actors_per_resident`] distinct
//!   actors obtained one resident's data within any sliding 24 hours.
//! - **Outside working hours**: every data access (not `ingest`) outside the working hours
//!   ([`AnomalyConfig::work_start`]..[`AnomalyConfig::work_end`] on working days, in the
//!   configured UTC offset, China time by default) — one anomaly per actor and local day.
//!   Public holidays are not known to the detector.
//! - **Break-glass**: every record with decision `break_glass`, one anomaly each.
//!
//! Sliding windows (not clock-hour buckets) mean a burst that straddles the hour is still
//! caught. Once a window crosses its threshold it is extended as far as the window length
//! allows and reported once with every record in it as evidence; detection then restarts
//! after it, so one long burst can yield several consecutive anomalies. Every anomaly names
//! the `seq` of each record it rests on, so each can be proven with an inclusion proof.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike as _, Duration, FixedOffset, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use crate::record::{AuditRecord, Decision};

/// What counts as an anomaly. [`Default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyConfig {
    /// A bulk lookup is *more than* this many distinct residents per actor per hour.
    pub bulk_residents: usize,
    /// Repeated denials: at least this many refusals per actor per hour.
    pub denials: usize,
    /// At least this many distinct actors on one resident per 24 hours.
    pub actors_per_resident: usize,
    /// Start of the working day (local time, inclusive).
    pub work_start: NaiveTime,
    /// End of the working day (local time, exclusive).
    pub work_end: NaiveTime,
    /// Working days, Monday first.
    pub working_days: [bool; 7],
    /// The local time zone of the working hours (China: UTC+8, no daylight saving).
    pub utc_offset: FixedOffset,
}

/// Default threshold of a bulk lookup (distinct residents per actor per hour).
pub const DEFAULT_BULK_RESIDENTS: usize = 50;
/// Default threshold of repeated denials (per actor per hour).
pub const DEFAULT_DENIALS: usize = 5;
/// Default threshold of distinct actors on one resident per day.
pub const DEFAULT_ACTORS_PER_RESIDENT: usize = 5;

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            bulk_residents: DEFAULT_BULK_RESIDENTS,
            denials: DEFAULT_DENIALS,
            actors_per_resident: DEFAULT_ACTORS_PER_RESIDENT,
            work_start: NaiveTime::from_hms_opt(8, 0, 0).expect("08:00 is a valid time"),
            work_end: NaiveTime::from_hms_opt(20, 0, 0).expect("20:00 is a valid time"),
            working_days: [true, true, true, true, true, false, false],
            utc_offset: china_time(),
        }
    }
}

/// China Standard Time, UTC+8 all year.
pub fn china_time() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The kinds of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Too many distinct residents by one actor in an hour.
    BulkLookup,
    /// Data access outside working hours.
    OutsideWorkingHours,
    /// Too many refusals of one actor in an hour.
    RepeatedDenials,
    /// Emergency access outside the normal policy.
    BreakGlass,
    /// Too many distinct actors on one resident in a day.
    ManyActorsOneResident,
    /// A published record moved a resident into another community (who sees the person
    /// changed): an identity take-over looks like this.
    ScopeMove,
}

/// The action of the audit record the broker writes when a record moves a resident into
/// another community.
pub const SCOPE_MOVE_ACTION: &str = "scope_move";

/// One finding, with the records it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// What was found.
    pub kind: AnomalyKind,
    /// The actor (`actor.sub`), for per-actor kinds.
    pub actor: Option<String>,
    /// The resident's keyed reference, for per-resident kinds.
    pub resident: Option<String>,
    /// Time of the first evidence record.
    pub window_start: DateTime<Utc>,
    /// Time of the last evidence record.
    pub window_end: DateTime<Utc>,
    /// The measured quantity: distinct residents, denials, distinct actors or accesses.
    pub count: u64,
    /// `seq` of every record in the window, ascending.
    pub evidence: Vec<u64>,
}

/// Whether a record is an access to data (as opposed to publishing it).
fn is_data_access(r: &AuditRecord) -> bool {
    r.action != "ingest"
        && r.action != SCOPE_MOVE_ACTION
        && (!r.residents.is_empty() || !r.entities.is_empty() || r.purpose.is_some())
}

/// Finds every anomaly in `records` (any order). Output is ordered by window start, then
/// kind.
pub fn detect_anomalies(records: &[AuditRecord], config: &AnomalyConfig) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let hour = Duration::hours(1);
    let day = Duration::hours(24);

    let mut by_actor: BTreeMap<&str, Vec<Event<'_>>> = BTreeMap::new();
    let mut denials: BTreeMap<&str, Vec<Event<'_>>> = BTreeMap::new();
    let mut by_resident: BTreeMap<&str, Vec<Event<'_>>> = BTreeMap::new();
    let mut off_hours: BTreeMap<(&str, NaiveDate), Vec<Event<'_>>> = BTreeMap::new();
    for r in records {
        let actor = r.actor.sub.as_str();
        if r.action == SCOPE_MOVE_ACTION {
            out.push(single(AnomalyKind::ScopeMove, r));
            continue;
        }
        if r.decision == Decision::Deny {
            denials.entry(actor).or_default().push(Event::new(r, actor));
        } else {
            for resident in &r.residents {
                by_actor
                    .entry(actor)
                    .or_default()
                    .push(Event::new(r, resident));
                by_resident
                    .entry(resident)
                    .or_default()
                    .push(Event::new(r, actor));
            }
        }
        if r.decision == Decision::BreakGlass {
            out.push(single(AnomalyKind::BreakGlass, r));
        }
        if is_data_access(r) {
            let local = r.time.with_timezone(&config.utc_offset);
            let weekday = local.weekday().num_days_from_monday() as usize;
            let working_day = config.working_days.get(weekday).copied().unwrap_or(false);
            let time = local.time();
            if !(working_day && time >= config.work_start && time < config.work_end) {
                off_hours
                    .entry((actor, local.date_naive()))
                    .or_default()
                    .push(Event::new(r, actor));
            }
        }
    }

    for (actor, mut events) in by_actor {
        for w in windows(
            &mut events,
            hour,
            config.bulk_residents.saturating_add(1),
            true,
        ) {
            out.push(w.into_anomaly(AnomalyKind::BulkLookup, Some(actor), None));
        }
    }
    for (actor, mut events) in denials {
        for w in windows(&mut events, hour, config.denials.max(1), false) {
            out.push(w.into_anomaly(AnomalyKind::RepeatedDenials, Some(actor), None));
        }
    }
    for (resident, mut events) in by_resident {
        for w in windows(&mut events, day, config.actors_per_resident.max(1), true) {
            out.push(w.into_anomaly(AnomalyKind::ManyActorsOneResident, None, Some(resident)));
        }
    }
    for ((actor, _), mut events) in off_hours {
        events.sort_by_key(|e| (e.time, e.seq));
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            continue;
        };
        out.push(Anomaly {
            kind: AnomalyKind::OutsideWorkingHours,
            actor: Some(actor.to_owned()),
            resident: None,
            window_start: first.time,
            window_end: last.time,
            count: events.len() as u64,
            evidence: sorted_seqs(&events),
        });
    }
    out.sort_by_key(|a| (a.window_start, a.kind));
    out
}

/// An anomaly that one record is enough for (a break-glass read, a scope move).
fn single(kind: AnomalyKind, r: &AuditRecord) -> Anomaly {
    Anomaly {
        kind,
        actor: Some(r.actor.sub.clone()),
        resident: r.residents.first().cloned(),
        window_start: r.time,
        window_end: r.time,
        count: 1,
        evidence: vec![r.seq],
    }
}

/// One record seen under one key: `item` is what is counted (a resident, an actor).
#[derive(Debug, Clone, Copy)]
struct Event<'a> {
    time: DateTime<Utc>,
    seq: u64,
    item: &'a str,
}

impl<'a> Event<'a> {
    fn new(r: &AuditRecord, item: &'a str) -> Self {
        Event {
            time: r.time,
            seq: r.seq,
            item,
        }
    }
}

/// A window that crossed its threshold.
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    count: usize,
    seqs: Vec<u64>,
}

impl Window {
    fn into_anomaly(
        self,
        kind: AnomalyKind,
        actor: Option<&str>,
        resident: Option<&str>,
    ) -> Anomaly {
        Anomaly {
            kind,
            actor: actor.map(str::to_owned),
            resident: resident.map(str::to_owned),
            window_start: self.start,
            window_end: self.end,
            count: self.count as u64,
            evidence: self.seqs,
        }
    }
}

fn sorted_seqs(events: &[Event<'_>]) -> Vec<u64> {
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// Sliding windows shorter than `span` in which the number of events (or of distinct
/// items, if `distinct`) reaches `min` (see the module docs for how windows are reported).
fn windows(events: &mut [Event<'_>], span: Duration, min: usize, distinct: bool) -> Vec<Window> {
    events.sort_by_key(|e| (e.time, e.seq));
    let mut out = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let measure = |counts: &HashMap<&str, usize>, left: usize, right: usize| {
        if distinct {
            counts.len()
        } else {
            right + 1 - left
        }
    };
    let mut left = 0;
    let mut right = 0;
    while right < events.len() {
        *counts.entry(events[right].item).or_default() += 1;
        while events[right].time - events[left].time >= span {
            remove(&mut counts, events[left].item);
            left += 1;
        }
        if measure(&counts, left, right) >= min {
            let mut end = right;
            while end + 1 < events.len() && events[end + 1].time - events[left].time < span {
                end += 1;
                *counts.entry(events[end].item).or_default() += 1;
            }
            out.push(Window {
                start: events[left].time,
                end: events[end].time,
                count: measure(&counts, left, end),
                seqs: sorted_seqs(&events[left..=end]),
            });
            counts.clear();
            left = end + 1;
            right = end + 1;
            continue;
        }
        right += 1;
    }
    out
}

fn remove(counts: &mut HashMap<&str, usize>, item: &str) {
    if let Some(n) = counts.get_mut(item) {
        *n -= 1;
        if *n == 0 {
            counts.remove(item);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Actor;
    use chrono::TimeZone;

    /// A Wednesday, 10:00 China time.
    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 4, 2, 0, 0).unwrap()
    }

    fn rec(
        seq: u64,
        actor: &str,
        resident: Option<&str>,
        decision: Decision,
        at: DateTime<Utc>,
    ) -> AuditRecord {
        let mut r = AuditRecord::new(
            format!("req-{seq}"),
            Actor {
                sub: actor.into(),
                ..Actor::default()
            },
            "read_resident",
            "/v1/residents/{id}",
            decision,
        );
        r.seq = seq;
        r.time = at;
        r.purpose = Some("routine_visit".into());
        r.residents = resident.map(|x| vec![x.to_owned()]).unwrap_or_default();
        r
    }

    fn kinds(found: &[Anomaly]) -> Vec<AnomalyKind> {
        found.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn quiet_log_has_no_anomalies() {
        let records: Vec<_> = (0..50)
            .map(|i| {
                rec(
                    i,
                    "w1",
                    Some(&format!("r{}", i % 10)),
                    Decision::Masked,
                    t0() + Duration::minutes(i as i64),
                )
            })
            .collect();
        assert!(detect_anomalies(&records, &AnomalyConfig::default()).is_empty());
    }

    #[test]
    fn bulk_lookup_across_the_hour_boundary_is_caught_with_every_record() {
        // 51 distinct residents between 10:40 and 11:20: no clock hour holds more than 50.
        let records: Vec<_> = (0..51)
            .map(|i| {
                rec(
                    i,
                    "w1",
                    Some(&format!("r{i}")),
                    Decision::Masked,
                    t0() + Duration::minutes(40) + Duration::seconds(i as i64 * 47),
                )
            })
            .collect();
        let found = detect_anomalies(&records, &AnomalyConfig::default());
        assert_eq!(kinds(&found), [AnomalyKind::BulkLookup]);
        assert_eq!(found[0].actor.as_deref(), Some("w1"));
        assert_eq!(found[0].count, 51);
        assert_eq!(found[0].evidence, (0..51).collect::<Vec<_>>());
        // Exactly 50 is not more than 50; re-reading the same residents is not bulk either.
        assert!(detect_anomalies(&records[..50], &AnomalyConfig::default()).is_empty());
        let again: Vec<_> = (0..200)
            .map(|i| {
                rec(
                    i,
                    "w1",
                    Some(&format!("r{}", i % 50)),
                    Decision::Masked,
                    t0() + Duration::seconds(i as i64),
                )
            })
            .collect();
        assert!(detect_anomalies(&again, &AnomalyConfig::default()).is_empty());
        // Spread over more than an hour, it is not a burst.
        let slow: Vec<_> = (0..60)
            .map(|i| {
                rec(
                    i,
                    "w1",
                    Some(&format!("r{i}")),
                    Decision::Masked,
                    t0() + Duration::minutes(i as i64 * 2),
                )
            })
            .collect();
        assert!(detect_anomalies(&slow, &AnomalyConfig::default()).is_empty());
    }

    #[test]
    fn denials_break_glass_and_many_actors() {
        let mut records: Vec<_> = (0..5)
            .map(|i| {
                rec(
                    i,
                    "w2",
                    None,
                    Decision::Deny,
                    t0() + Duration::minutes(i as i64 * 10),
                )
            })
            .collect();
        records.push(rec(5, "w3", Some("rx"), Decision::BreakGlass, t0()));
        for (i, actor) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            records.push(rec(
                6 + i as u64,
                actor,
                Some("ry"),
                Decision::Allow,
                t0() + Duration::hours(2 * i as i64),
            ));
        }
        let found = detect_anomalies(&records, &AnomalyConfig::default());
        let mut k = kinds(&found);
        k.sort();
        assert_eq!(
            k,
            [
                AnomalyKind::RepeatedDenials,
                AnomalyKind::BreakGlass,
                AnomalyKind::ManyActorsOneResident
            ]
        );
        let denied = found
            .iter()
            .find(|a| a.kind == AnomalyKind::RepeatedDenials)
            .unwrap();
        assert_eq!(
            (denied.count, denied.evidence.clone()),
            (5, vec![0, 1, 2, 3, 4])
        );
        let many = found
            .iter()
            .find(|a| a.kind == AnomalyKind::ManyActorsOneResident)
            .unwrap();
        assert_eq!((many.resident.as_deref(), many.count), (Some("ry"), 5));
        // Four denials, or five actors spread over more than a day, are not anomalies.
        assert!(detect_anomalies(&records[..4], &AnomalyConfig::default()).is_empty());
    }

    #[test]
    fn off_hours_and_weekends_are_reported_per_actor_and_day() {
        let night = Utc.with_ymd_and_hms(2026, 11, 4, 14, 30, 0).unwrap(); // 22:30 China time
        let saturday = Utc.with_ymd_and_hms(2026, 11, 7, 3, 0, 0).unwrap(); // 11:00 Saturday
        let records = vec![
            rec(0, "w1", Some("r1"), Decision::Masked, night),
            rec(
                1,
                "w1",
                Some("r2"),
                Decision::Masked,
                night + Duration::minutes(5),
            ),
            rec(2, "w1", Some("r3"), Decision::Masked, saturday),
            rec(3, "w1", Some("r4"), Decision::Masked, t0()),
        ];
        let found = detect_anomalies(&records, &AnomalyConfig::default());
        assert_eq!(kinds(&found), [AnomalyKind::OutsideWorkingHours; 2]);
        assert_eq!((found[0].count, found[0].evidence.clone()), (2, vec![0, 1]));
        assert_eq!(found[1].evidence, [2]);
        // An ingest at night is a connector's job, not an access.
        let mut ingest = rec(4, "pub", None, Decision::Allow, night);
        ingest.action = "ingest".into();
        ingest.purpose = None;
        assert!(detect_anomalies(&[ingest], &AnomalyConfig::default()).is_empty());
        // Working hours are configurable.
        let all_day = AnomalyConfig {
            work_start: NaiveTime::MIN,
            work_end: NaiveTime::from_hms_opt(23, 59, 59).unwrap(),
            working_days: [true; 7],
            ..AnomalyConfig::default()
        };
        assert!(detect_anomalies(&records, &all_day).is_empty());
    }
}
