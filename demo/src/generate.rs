//! Synthetic data behind `safegrid demo`: one street (街道) of 北京市朝阳区 as six departments
//! see it, in the unified NDJSON ingest format of DESIGN.md.
//!
//! What this module guarantees:
//!
//! - **Deterministic.** The output is a pure function of [`DemoConfig`]; no clock, no global
//!   state. Every date is relative to the fixed reference instant [`AS_OF`].
//! - **Independent ranges.** A person is derived from `(seed, index)` in O(household size), so
//!   `ndjson(d, a..b) + ndjson(d, b..c) == ndjson(d, a..c)` and ranges can be generated in
//!   parallel ([`DemoWorld`] is `Send + Sync`).
//! - **Valid identifiers.** Every good record carries an ID number that is a valid GB 11643
//!   18-digit number (or, where a department still keeps it, the 15-digit legacy form that
//!   upgrades back to it), consistent with `birth_date` and `gender`, and unique in the world.
//!   Phones match `1[3-9]\d{9}` or are Beijing landlines `010-[68]\d{7}`.
//! - **Consistent references.** Residents' `house_source_id` and `grid` refer to houses
//!   `zhujian` publishes; each house is emitted exactly once overall (in the range of its
//!   lowest-index occupant); event parties are persons of the world.
//! - **Realistic disagreement.** Departments other than `gongan` sometimes keep the legacy
//!   15-digit ID, an old address, a differently formatted address, another or no phone, a name
//!   in traditional characters or with a trailing space, and their versions differ.
//! - **Countable bad records.** A fraction `bad_record_rate` of records is deliberately broken
//!   (bad ID checksum, invalid grid code, or no `source_id`); each carries
//!   `"attributes": {"demo_defect": "…"}` ([`DEFECT_KEY`]) and [`DemoWorld::bad_records`] counts
//!   them.
//!
//! Unknown department codes (including `chengguan` and `yingji`) publish nothing.

use std::fmt::Write as _;
use std::ops::Range;

use chrono::{Datelike, NaiveDate};
use rand::{Rng, RngCore};

/// The departments that publish demo data, in the order the demo loads them.
pub const DEPARTMENTS: [&str; 6] = ["gongan", "minzheng", "weijian", "sifa", "zhujian", "wangge"];
/// Division code of the demo street (街道).
pub const STREET_CODE: &str = "110105001";
/// Name of the demo street.
pub const STREET_NAME: &str = "望京街道";
/// Division code of the district the street belongs to (北京市朝阳区).
pub const DISTRICT_CODE: &str = "110105";
/// Key inside `attributes` that marks a deliberately bad record; its value names the defect
/// (`id_checksum`, `invalid_grid` or `missing_source_id`).
pub const DEFECT_KEY: &str = "demo_defect";
/// The reference instant of the demo world: ages, versions and events are relative to it.
pub const AS_OF: &str = "2026-11-01T00:00:00Z";

const CITY_DISTRICT: &str = "北京市朝阳区";
const AS_OF_YMD: (i32, u32, u32) = (2026, 11, 1);
const AS_OF_DAYS: i64 = days_from_civil(AS_OF_YMD.0 as i64, AS_OF_YMD.1 as i64, AS_OF_YMD.2 as i64);
const AS_OF_UNIX: i64 = AS_OF_DAYS * DAY;
const DAY: i64 = 86_400;

/// Persons are cut into households block by block; a household never crosses a block.
const BLOCK: usize = 64;
/// Birth day-of-year x sequence slot space: 365 days x 499 sequence slots per parity.
const ID_SPACE: u64 = 365 * 499;
/// Multiplier of the permutation of `ID_SPACE`; coprime with 5, 73 and 499.
const ID_MULTIPLIER: u64 = 104_729;

// RNG streams: every random decision is drawn from (seed, stream, key).
const STREAM_WORLD: u64 = 1;
const STREAM_BLOCK: u64 = 2;
const STREAM_HOUSEHOLD: u64 = 3;
const STREAM_DEPT: u64 = 10; // + department index
const STREAM_EVENTS: u64 = 20; // + department index
const STREAM_DEFECT: u64 = 30; // + department index
const STREAM_NAME: u64 = 40;
const STREAM_PHONE: u64 = 41; // and 42
const STREAM_HUKOU: u64 = 43;
const STREAM_ORGANIZATION: u64 = 44;

/// Departments other than `gongan` keep 15-digit IDs only for persons born before this year
/// (the last 15-digit cards were issued in the 1990s to people aged 16 and over).
const LEGACY_BEFORE: i32 = 1985;

/// Every tag a department publishes; `Member::tags` is a bit set over this list.
#[rustfmt::skip]
const TAGS: [&str; 14] = [
    "户籍人口", "人户分离", "流动人口", "低保", "低收入", "独居老人", "空巢老人", "高龄老人", "残疾", "慢性病", "孕产妇", "严重精神障碍", "社区矫正", "刑满释放",
];
const TAG_LOW_INCOME_MIN: u16 = 1 << 3;
const TAG_LOW_INCOME: u16 = 1 << 4;
const TAG_ALONE: u16 = 1 << 5;
const TAG_EMPTY_NEST: u16 = 1 << 6;
const TAG_VERY_OLD: u16 = 1 << 7;
const TAG_DISABLED: u16 = 1 << 8;
const TAG_CHRONIC: u16 = 1 << 9;
const TAG_MATERNITY: u16 = 1 << 10;
const TAG_MENTAL: u16 = 1 << 11;
const TAG_CORRECTION: u16 = 1 << 12;
const TAG_RELEASED: u16 = 1 << 13;
/// The tags each department publishes residents for (`gongan` publishes everyone it knows).
const DEPT_TAG_MASK: [u16; 6] = [
    0,
    0b1_1111_1000,
    0b1110_0000_0000,
    0b11_0000_0000_0000,
    0,
    0,
];

const GONGAN: usize = 0;
const MINZHENG: usize = 1;
const WEIJIAN: usize = 2;
const SIFA: usize = 3;
const ZHUJIAN: usize = 4;
const WANGGE: usize = 5;

/// Size and shape of the demo world.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Number of persons actually living in the street (实有人口).
    pub residents: usize,
    /// Seed of every random decision.
    pub seed: u64,
    /// Fraction of records that are deliberately bad (0.0 disables them).
    pub bad_record_rate: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            residents: 20_000,
            seed: 2026,
            bad_record_rate: 0.002,
        }
    }
}

/// The canonical truth about one person (what `gongan` would publish if it knew everyone).
#[derive(Debug, Clone)]
pub struct Person {
    pub index: usize,
    /// 18-digit GB 11643 ID number.
    pub id_number: String,
    /// The 15-digit form for persons born before 1999 (some departments still keep it).
    pub legacy_id_number: Option<String>,
    pub name: String,
    pub surname: &'static str,
    /// `"male"` or `"female"`.
    pub gender: &'static str,
    pub birth_date: NaiveDate,
    /// Age in whole years at [`AS_OF`].
    pub age: u32,
    pub ethnicity: &'static str,
    pub phone: Option<String>,
    pub grid: String,
    pub house_source_id: String,
    /// Standard address (标准地址) of the house the person lives in.
    pub address: String,
    pub hukou_address: String,
    /// `户籍人口`, `人户分离` or `流动人口`.
    pub resident_type: &'static str,
    /// Relation to the head of household (户主, 配偶, 子, 女, 父亲, 母亲, 承租人, 同住人).
    pub relation_to_head: &'static str,
    /// Indices of the persons sharing the house; `household.start` is the head.
    pub household: Range<usize>,
    /// Whether `gongan` publishes this person (about 3% floating population is unregistered).
    pub in_gongan: bool,
    /// Every tag any department publishes about the person.
    pub tags: Vec<&'static str>,
    /// Departments that publish a resident record about the person.
    pub departments: Vec<&'static str>,
}

/// The generator. Cheap to construct; holds only the street's divisions and lookup tables.
#[derive(Debug)]
pub struct DemoWorld {
    config: DemoConfig,
    communities: Vec<Community>,
    grids: Vec<GridInfo>,
    /// `slot % grids.len()` -> grid index (a seeded shuffle).
    grid_of_slot: Vec<usize>,
    surname_cum: Vec<u32>,
    /// Number of birth-year classes needed to keep ID numbers unique (1 up to 182,135 persons).
    id_epochs: u64,
    id_offset: u64,
    as_of: NaiveDate,
    names: NameTables,
}

#[derive(Debug)]
struct Community {
    code: String,
    name: String,
}

#[derive(Debug)]
struct GridInfo {
    code: String,
    community: usize,
    compounds: Vec<String>,
    tower: bool,
    units: u32,
    floors: u32,
    rooms: u32,
    worker: String,
}

#[derive(Debug)]
struct NameTables {
    old_male: Vec<&'static str>,
    old_female: Vec<&'static str>,
    mid_male: Vec<&'static str>,
    mid_female: Vec<&'static str>,
    young_male: Vec<&'static str>,
    young_female: Vec<&'static str>,
    young_male_full: Vec<&'static str>,
    young_female_full: Vec<&'static str>,
}

impl DemoWorld {
    /// Builds the street: 6–10 communities of 3–8 grids each, compounds and name tables.
    pub fn new(config: DemoConfig) -> Self {
        let mut rng = Mix::new(config.seed, STREAM_WORLD, 0);
        let n_communities = rng.gen_range(6..=10usize);
        let mut pool: Vec<usize> = (0..COMMUNITY_NAMES.len()).collect();
        shuffle(&mut pool, &mut rng);
        let mut communities = Vec::with_capacity(n_communities);
        let mut grids = Vec::new();
        let mut compound_serial = 0usize;
        let compound_offset = rng.gen_range(0..COMPOUND_PREFIXES.len() * COMPOUND_SUFFIXES.len());
        for (ci, &name_idx) in pool.iter().take(n_communities).enumerate() {
            let root = COMMUNITY_NAMES[name_idx];
            let code = format!("{STREET_CODE}{:03}", ci + 1);
            let n_grids = rng.gen_range(3..=8usize);
            for gi in 0..n_grids {
                let tower = rng.gen_bool(0.45);
                let mut compounds = vec![format!("{root}{}区", CHINESE_NUMERALS[gi % 16])];
                if rng.gen_bool(0.5) {
                    compounds.push(compound_name(compound_serial, compound_offset));
                    compound_serial += 1;
                }
                let (units, floors, rooms) = if tower {
                    (
                        rng.gen_range(1..=3),
                        rng.gen_range(11..=28),
                        rng.gen_range(2..=4),
                    )
                } else {
                    (
                        rng.gen_range(3..=6),
                        rng.gen_range(5..=6),
                        rng.gen_range(2..=3),
                    )
                };
                let worker = format!(
                    "{}{}",
                    pick(SURNAMES_TOP, &mut rng),
                    pick(GRID_WORKER_GIVEN, &mut rng)
                );
                grids.push(GridInfo {
                    code: format!("{code}{:03}", gi + 1),
                    community: ci,
                    compounds,
                    tower,
                    units,
                    floors,
                    rooms,
                    worker,
                });
            }
            communities.push(Community {
                code,
                name: format!("{root}社区"),
            });
        }
        let mut grid_of_slot: Vec<usize> = (0..grids.len()).collect();
        shuffle(&mut grid_of_slot, &mut rng);
        let mut acc = 0u32;
        let surname_cum = SURNAMES
            .iter()
            .map(|&(_, w)| {
                acc += w;
                acc
            })
            .collect();
        let id_epochs = (config.residents as u64).div_ceil(ID_SPACE).max(1);
        let id_offset = rng.gen_range(0..ID_SPACE);
        let as_of = NaiveDate::from_ymd_opt(AS_OF_YMD.0, AS_OF_YMD.1, AS_OF_YMD.2)
            .expect("AS_OF_YMD is a valid calendar date");
        let words = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
        let names = NameTables {
            old_male: words(OLD_MALE),
            old_female: words(OLD_FEMALE),
            mid_male: words(MID_MALE),
            mid_female: words(MID_FEMALE),
            young_male: words(YOUNG_MALE),
            young_female: words(YOUNG_FEMALE),
            young_male_full: words(YOUNG_MALE_FULL),
            young_female_full: words(YOUNG_FEMALE_FULL),
        };
        DemoWorld {
            config,
            communities,
            grids,
            grid_of_slot,
            surname_cum,
            id_epochs,
            id_offset,
            as_of,
            names,
        }
    }

    pub fn config(&self) -> &DemoConfig {
        &self.config
    }

    pub fn street_code(&self) -> &str {
        STREET_CODE
    }

    pub fn street_name(&self) -> &str {
        STREET_NAME
    }

    /// 12-digit community (社区) codes.
    pub fn communities(&self) -> Vec<String> {
        self.communities.iter().map(|c| c.code.clone()).collect()
    }

    /// `(code, name)` of every community, e.g. `("110105001001", "花家地北里社区")`.
    pub fn community_names(&self) -> Vec<(String, String)> {
        self.communities
            .iter()
            .map(|c| (c.code.clone(), c.name.clone()))
            .collect()
    }

    /// 15-digit grid (网格) codes.
    pub fn grids(&self) -> Vec<String> {
        self.grids.iter().map(|g| g.code.clone()).collect()
    }

    pub fn residents(&self) -> usize {
        self.config.residents
    }

    /// The canonical truth for person `index` (must be `< residents()`).
    pub fn person(&self, index: usize) -> Person {
        let span = self.span_of(index);
        let sk = self.skeleton(span);
        let sh = self.shared(&sk);
        self.materialize(&sk, index - span.start, &sh)
    }

    /// NDJSON lines (each ending in `'\n'`) that `department` publishes about persons in
    /// `range`: resident records for `gongan`, `minzheng`, `weijian`, `sifa`; the houses whose
    /// lowest-index occupant is in `range` for `zhujian`; the events a person in `range` is the
    /// first party of for `wangge` and `sifa`. The range is clipped to `0..residents()`.
    pub fn ndjson(&self, department: &str, range: Range<usize>) -> String {
        let Some(dept) = DEPARTMENTS.iter().position(|&d| d == department) else {
            return String::new();
        };
        let mut outs = [self.out_for(dept, &range)];
        self.emit(&[dept], range, &mut outs);
        let [out] = outs;
        out.buf
    }

    /// What every department publishes about `range`, in [`DEPARTMENTS`] order; element `i`
    /// equals `ndjson(DEPARTMENTS[i], range)`. About twice as fast as six `ndjson` calls.
    pub fn ndjson_all(&self, range: Range<usize>) -> [String; 6] {
        let mut outs: [Out; 6] = std::array::from_fn(|d| self.out_for(d, &range));
        self.emit(&[0, 1, 2, 3, 4, 5], range, &mut outs);
        outs.map(|o| o.buf)
    }

    fn out_for(&self, dept: usize, range: &Range<usize>) -> Out {
        // Measured bytes per person, so that the buffer is allocated once.
        const BYTES_PER_PERSON: [usize; 6] = [560, 64, 64, 12, 165, 56];
        let persons = range
            .end
            .min(self.config.residents)
            .saturating_sub(range.start);
        Out {
            buf: String::with_capacity(persons * BYTES_PER_PERSON[dept]),
            bad: 0,
        }
    }

    /// How many deliberately bad records `ndjson(department, range)` contains.
    pub fn bad_records(&self, department: &str, range: Range<usize>) -> usize {
        let Some(dept) = DEPARTMENTS.iter().position(|&d| d == department) else {
            return 0;
        };
        let mut outs = [Out {
            buf: String::new(),
            bad: 0,
        }];
        self.emit(&[dept], range, &mut outs);
        outs[0].bad
    }

    // ----------------------------------------------------------------------------------
    // Households
    // ----------------------------------------------------------------------------------

    fn block_spans(&self, block: usize, spans: &mut Vec<Span>) {
        spans.clear();
        let n = self.config.residents;
        let base = block * BLOCK;
        if base >= n {
            return;
        }
        let end = (base + BLOCK).min(n);
        let mut rng = Mix::new(self.config.seed, STREAM_BLOCK, block as u64);
        let mut start = base;
        while start < end {
            // 1:22% 2:30% 3:25% 4:12% 5:5% 6:3% group rental (6-9 persons):3%
            let roll = rng.gen_range(0..100u32);
            let (size, group) = match roll {
                0..=21 => (1, false),
                22..=51 => (2, false),
                52..=76 => (3, false),
                77..=88 => (4, false),
                89..=93 => (5, false),
                94..=96 => (6, false),
                _ => (rng.gen_range(6..=9), true),
            };
            let len = size.min(end - start);
            spans.push(Span {
                start,
                len,
                group_rental: group && len >= 3,
            });
            start += len;
        }
    }

    fn span_of(&self, index: usize) -> Span {
        let mut spans = Vec::with_capacity(32);
        self.block_spans(index / BLOCK, &mut spans);
        spans
            .into_iter()
            .find(|s| s.start <= index && index < s.start + s.len)
            .unwrap_or(Span {
                start: index,
                len: 1,
                group_rental: false,
            })
    }

    /// Whether a household starts at `index`.
    fn is_household_start(&self, index: usize, spans: &mut Vec<Span>) -> bool {
        if index >= self.config.residents {
            return false;
        }
        self.block_spans(index / BLOCK, spans);
        spans.iter().any(|s| s.start == index)
    }

    /// The numeric skeleton of a household: structure, ages, genders, regions, tags, tenure.
    /// Strings are made later by [`Self::materialize`], only for the members a department
    /// publishes; string-only randomness comes from per-person streams, so materializing one
    /// member or all of them gives the same result.
    fn skeleton(&self, span: Span) -> Skeleton {
        let mut rng = Mix::new(self.config.seed, STREAM_HOUSEHOLD, span.start as u64);
        let n = span.len;
        let kind = if span.group_rental {
            ResidentKind::Floating
        } else {
            match rng.gen_range(0..100u32) {
                0..=54 => ResidentKind::Registered,
                55..=69 => ResidentKind::Separated,
                _ => ResidentKind::Floating,
            }
        };
        let in_gongan = !(kind == ResidentKind::Floating && rng.gen_bool(0.10));
        let specs = self.compose(span, kind, &mut rng);
        let home_region = match kind {
            ResidentKind::Floating => pick_weighted(PROVINCE_REGIONS, &mut rng),
            _ => pick_weighted(BEIJING_REGIONS, &mut rng),
        };
        let ethnicity = pick_weighted(ETHNICITIES, &mut rng).0;
        let family_surname = self.surname(&mut rng);
        let low_income = if kind != ResidentKind::Floating {
            match rng.gen_range(0..1000u32) {
                0..=14 => TAG_LOW_INCOME_MIN,
                15..=26 => TAG_LOW_INCOME,
                _ => 0,
            }
        } else {
            0
        };

        let mut members = Vec::with_capacity(n);
        for (k, spec) in specs.iter().enumerate() {
            let index = span.start + k;
            let male = spec.male;
            let surname = match spec.surname {
                SurnameOf::Family => family_surname,
                SurnameOf::Own => self.surname(&mut rng),
                SurnameOf::ChildOf => {
                    if rng.gen_bool(0.92) {
                        family_surname
                    } else {
                        self.surname(&mut rng)
                    }
                }
            };
            let birth_date = self.birth_date(index, AS_OF_YMD.0 - spec.age as i32);
            let age = age_at(birth_date, self.as_of);
            let region = match kind {
                ResidentKind::Floating if rng.gen_bool(0.9) => home_region.0,
                ResidentKind::Floating => pick_weighted(PROVINCE_REGIONS, &mut rng).0,
                _ if rng.gen_bool(0.7) => DISTRICT_CODE,
                _ => pick_weighted(BEIJING_REGIONS, &mut rng).0,
            };
            let ethnicity = if k == 0 || rng.gen_bool(0.9) {
                ethnicity
            } else {
                pick_weighted(ETHNICITIES, &mut rng).0
            };
            let phone = if age < 16 {
                if rng.gen_bool(0.35) {
                    PhoneKind::Head
                } else {
                    PhoneKind::None
                }
            } else if age >= 75 && rng.gen_bool(0.4) {
                PhoneKind::Landline
            } else if k > 0 && rng.gen_bool(0.06) {
                PhoneKind::None
            } else {
                PhoneKind::Mobile
            };

            let mut tags = kind.tag_bit() | low_income;
            if age >= 60 && n == 1 && !span.group_rental {
                tags |= TAG_ALONE;
            }
            if age >= 80 {
                tags |= TAG_VERY_OLD;
            }
            if rng.gen_bool(if age >= 60 { 0.07 } else { 0.02 }) {
                tags |= TAG_DISABLED;
            }
            let chronic = match age {
                0..=34 => 0.01,
                35..=49 => 0.08,
                50..=59 => 0.18,
                60..=74 => 0.35,
                _ => 0.50,
            };
            if rng.gen_bool(chronic) {
                tags |= TAG_CHRONIC;
            }
            if !male && (22..=40).contains(&age) && rng.gen_bool(0.03) {
                tags |= TAG_MATERNITY;
            }
            if age >= 18 && rng.gen_bool(0.004) {
                tags |= TAG_MENTAL;
            }
            if (18..=65).contains(&age) {
                let p = if male { 1.0 } else { 0.2 };
                if rng.gen_bool(0.003 * p) {
                    tags |= TAG_CORRECTION;
                } else if rng.gen_bool(0.006 * p) {
                    tags |= TAG_RELEASED;
                }
            }
            members.push(Member {
                index,
                relation: spec.relation,
                male,
                surname,
                birth_date,
                age,
                region,
                ethnicity,
                phone,
                tags,
            });
        }
        if n == 2 && members.iter().all(|m| m.age >= 60) {
            for m in &mut members {
                m.tags |= TAG_EMPTY_NEST;
            }
        }

        let usage = if span.group_rental {
            "group_rental"
        } else {
            let own = match kind {
                ResidentKind::Registered => 0.85,
                ResidentKind::Separated => 0.40,
                ResidentKind::Floating => 0.05,
            };
            if rng.gen_bool(own) {
                "own"
            } else {
                "rental"
            }
        };
        let owner = if usage == "own" {
            Owner::Member
        } else {
            Owner::Resident(self.other_resident(&mut rng, span))
        };
        let vacant_owner =
            (n >= 2 && rng.gen_bool(0.12)).then(|| self.other_resident(&mut rng, span));
        Skeleton {
            span,
            kind,
            in_gongan,
            home_region,
            members,
            usage,
            owner,
            vacant_owner,
        }
    }

    /// Strings every member of a household shares.
    fn shared(&self, sk: &Skeleton) -> Shared {
        let slot = sk.span.start;
        let addr = self.slot_addr(slot);
        let mut rng = Mix::new(self.config.seed, STREAM_HUKOU, slot as u64);
        let hukou_elsewhere = match sk.kind {
            ResidentKind::Registered => String::new(),
            ResidentKind::Separated => beijing_address(sk.home_region, &mut rng),
            ResidentKind::Floating => rural_address(sk.home_region, &mut rng),
        };
        Shared {
            address: self.format_addr(&addr, AddrStyle::Full),
            grid: self.grids[addr.grid].code.clone(),
            house_source_id: house_id(slot),
            hukou_elsewhere,
            addr,
        }
    }

    /// The full [`Person`] for member `k` of a household.
    /// Name and ID number of member `k` (what a party or owner reference needs).
    fn ident(&self, sk: &Skeleton, k: usize) -> Ident {
        let m = &sk.members[k];
        let mut rng = Mix::new(self.config.seed, STREAM_NAME, m.index as u64);
        let given = self.given_name(&mut rng, m.male, m.birth_date.year());
        let mut name = String::with_capacity(m.surname.len() + given.len());
        name.push_str(m.surname);
        name.push_str(given.as_str());
        let id_number = self.id_number(m.index, m.region, m.birth_date, m.male);
        let legacy_id_number = legacy_id(&id_number);
        Ident {
            id_number,
            legacy_id_number,
            name,
            birth_year: m.birth_date.year(),
        }
    }

    fn ident_at(&self, index: usize) -> Ident {
        let span = self.span_of(index);
        self.ident(&self.skeleton(span), index - span.start)
    }

    /// The head of the household `index` lives in (a house owner).
    fn head_ident(&self, index: usize) -> Ident {
        self.ident(&self.skeleton(self.span_of(index)), 0)
    }

    /// The full [`Person`] for member `k` of a household.
    fn materialize(&self, sk: &Skeleton, k: usize, sh: &Shared) -> Person {
        let m = &sk.members[k];
        let Ident {
            id_number,
            legacy_id_number,
            name,
            ..
        } = self.ident(sk, k);
        let head = sk.span.start;
        let phone = match m.phone {
            PhoneKind::None => None,
            PhoneKind::Head => Some(self.mobile_of(head)),
            PhoneKind::Mobile => Some(self.mobile_of(m.index)),
            PhoneKind::Landline => Some(landline(&mut Mix::new(
                self.config.seed,
                STREAM_PHONE + 1,
                m.index as u64,
            ))),
        };
        let hukou_address = if sk.kind == ResidentKind::Registered {
            sh.address.clone()
        } else {
            sh.hukou_elsewhere.clone()
        };
        let tags = TAGS
            .iter()
            .enumerate()
            .filter(|&(bit, _)| m.tags & (1 << bit) != 0)
            .map(|(_, &t)| t)
            .collect();
        let departments = (0..DEPARTMENTS.len())
            .filter(|&d| self.publishes_resident(d, sk, m))
            .map(|d| DEPARTMENTS[d])
            .collect();
        Person {
            index: m.index,
            id_number,
            legacy_id_number,
            name,
            surname: m.surname,
            gender: if m.male { "male" } else { "female" },
            birth_date: m.birth_date,
            age: m.age,
            ethnicity: m.ethnicity,
            phone,
            grid: sh.grid.clone(),
            house_source_id: sh.house_source_id.clone(),
            address: sh.address.clone(),
            hukou_address,
            resident_type: sk.kind.tag(),
            relation_to_head: m.relation,
            household: head..head + sk.span.len,
            in_gongan: sk.in_gongan,
            tags,
            departments,
        }
    }

    fn publishes_resident(&self, dept: usize, sk: &Skeleton, m: &Member) -> bool {
        match dept {
            GONGAN => sk.in_gongan,
            _ => m.tags & DEPT_TAG_MASK[dept] != 0,
        }
    }

    fn mobile_of(&self, index: usize) -> String {
        mobile(&mut Mix::new(self.config.seed, STREAM_PHONE, index as u64))
    }

    /// A resident index outside `span` (a landlord living elsewhere in the street).
    fn other_resident(&self, rng: &mut Mix, span: Span) -> usize {
        let n = self.config.residents.max(1);
        let j = rng.gen_range(0..n);
        if j >= span.start && j < span.start + span.len {
            (span.start + span.len) % n
        } else {
            j
        }
    }

    fn compose(&self, span: Span, kind: ResidentKind, rng: &mut Mix) -> Vec<Spec> {
        let n = span.len;
        let mut specs = Vec::with_capacity(n);
        if span.group_rental {
            for k in 0..n {
                specs.push(Spec {
                    age: rng.gen_range(18..=45),
                    male: rng.gen_bool(0.7),
                    relation: if k == 0 { "承租人" } else { "同住人" },
                    surname: SurnameOf::Own,
                });
            }
            return specs;
        }
        let floating = kind == ResidentKind::Floating;
        let adult = |rng: &mut Mix| {
            if floating {
                rng.gen_range(18..=50)
            } else {
                rng.gen_range(22..=59)
            }
        };
        let head_male = rng.gen_bool(0.8);
        let push_couple = |specs: &mut Vec<Spec>, rng: &mut Mix, head_age: u32, elderly: bool| {
            let male = head_male;
            specs.push(Spec {
                age: head_age,
                male,
                relation: "户主",
                surname: SurnameOf::Family,
            });
            let diff = rng.gen_range(-3i32..=6);
            let spouse = if male {
                head_age as i32 - diff
            } else {
                head_age as i32 + diff
            };
            let floor = if elderly { 58 } else { 20 };
            specs.push(Spec {
                age: spouse.clamp(floor, 100) as u32,
                male: !male,
                relation: "配偶",
                surname: SurnameOf::Own,
            });
        };
        let push_children =
            |specs: &mut Vec<Spec>, rng: &mut Mix, parent_age: u32, count: usize| {
                for _ in 0..count {
                    let oldest = parent_age.saturating_sub(22).min(38);
                    let male = rng.gen_bool(0.52);
                    specs.push(Spec {
                        age: rng.gen_range(0..=oldest),
                        male,
                        relation: if male { "子" } else { "女" },
                        surname: SurnameOf::ChildOf,
                    });
                }
            };
        match n {
            1 => {
                let elderly = rng.gen_bool(if floating { 0.06 } else { 0.45 });
                let (age, male) = if elderly {
                    (elder_age(rng), rng.gen_bool(0.4))
                } else {
                    (adult(rng), rng.gen_bool(0.55))
                };
                specs.push(Spec {
                    age,
                    male,
                    relation: "户主",
                    surname: SurnameOf::Family,
                });
            }
            2 => {
                let roll = rng.gen_range(0..100u32);
                let elderly_share = if floating { 5 } else { 45 };
                if roll < elderly_share {
                    let age = elder_age(rng).max(62);
                    push_couple(&mut specs, rng, age, true);
                } else if roll < elderly_share + 15 {
                    let age = rng.gen_range(30..=60);
                    specs.push(Spec {
                        age,
                        male: rng.gen_bool(0.3),
                        relation: "户主",
                        surname: SurnameOf::Family,
                    });
                    push_children(&mut specs, rng, age, 1);
                } else {
                    let age = adult(rng).max(22);
                    push_couple(&mut specs, rng, age, false);
                }
            }
            _ => {
                let three_gen = n >= 5 || (n == 4 && rng.gen_bool(0.5));
                if n == 3 && !floating && rng.gen_bool(0.2) {
                    // Elderly couple with an adult child.
                    let age = elder_age(rng).clamp(60, 85);
                    push_couple(&mut specs, rng, age, true);
                    let oldest = age.saturating_sub(22).min(55);
                    let male = rng.gen_bool(0.5);
                    specs.push(Spec {
                        age: rng.gen_range(25.min(oldest)..=oldest),
                        male,
                        relation: if male { "子" } else { "女" },
                        surname: SurnameOf::ChildOf,
                    });
                } else if three_gen {
                    let head = rng.gen_range(28..=52);
                    push_couple(&mut specs, rng, head, false);
                    let grandparents = if n >= 5 { 2 } else { 1 };
                    push_children(&mut specs, rng, head, n - 2 - grandparents);
                    for g in 0..grandparents {
                        let male = if grandparents == 2 {
                            g == 0
                        } else {
                            rng.gen_bool(0.35)
                        };
                        specs.push(Spec {
                            age: (head + rng.gen_range(23..=34)).min(100),
                            male,
                            relation: if male { "父亲" } else { "母亲" },
                            surname: if male {
                                SurnameOf::Family
                            } else {
                                SurnameOf::Own
                            },
                        });
                    }
                } else {
                    let head = rng.gen_range(27..=55);
                    push_couple(&mut specs, rng, head, false);
                    push_children(&mut specs, rng, head, n - 2);
                }
            }
        }
        specs
    }

    fn surname(&self, rng: &mut Mix) -> &'static str {
        let total = self.surname_cum.last().copied().unwrap_or(1);
        let x = rng.gen_range(0..total);
        let i = self.surname_cum.partition_point(|&c| c <= x);
        SURNAMES.get(i).map_or("王", |s| s.0)
    }

    fn given_name(&self, rng: &mut Mix, male: bool, year: i32) -> String {
        let t = &self.names;
        if year < 1960 {
            if rng.gen_bool(0.8) {
                return pick(if male { &t.old_male } else { &t.old_female }, rng).to_string();
            }
            let chars = if male { &t.mid_male } else { &t.mid_female };
            return pick(chars, rng).to_string();
        }
        if year < 1990 {
            let chars = if male { &t.mid_male } else { &t.mid_female };
            let mut s = pick(chars, rng).to_string();
            if rng.gen_bool(0.55) {
                s.push_str(pick(chars, rng));
            }
            return s;
        }
        if rng.gen_bool(0.25) {
            let full = if male {
                &t.young_male_full
            } else {
                &t.young_female_full
            };
            return pick(full, rng).to_string();
        }
        let chars = if male { &t.young_male } else { &t.young_female };
        let mut s = pick(chars, rng).to_string();
        if rng.gen_bool(0.85) {
            s.push_str(pick(chars, rng));
        }
        s
    }

    /// Birth date of person `index` near `desired_year`. The day of the year and the ID
    /// sequence slot come from a permutation of `index % ID_SPACE`; when the world is larger
    /// than `ID_SPACE`, the year is snapped to the index's epoch class so that no two persons
    /// share (region, date, sequence).
    fn birth_date(&self, index: usize, desired_year: i32) -> NaiveDate {
        let (doy, _) = self.id_slot(index);
        let k = self.id_epochs as i32;
        let mut year = desired_year;
        if k > 1 {
            let want = ((index as u64 / ID_SPACE) % self.id_epochs) as i32;
            let mut delta = (want - year.rem_euclid(k)).rem_euclid(k);
            if delta > k / 2 {
                delta -= k;
            }
            year += delta;
        }
        let mut date = date_yo(year, doy);
        while date > self.as_of {
            year -= k;
            date = date_yo(year, doy);
        }
        date
    }

    /// (day of year 1..=365, sequence slot 0..499) of person `index`.
    fn id_slot(&self, index: usize) -> (u32, u32) {
        let r = ((index as u64 % ID_SPACE) * ID_MULTIPLIER + self.id_offset) % ID_SPACE;
        ((r % 365) as u32 + 1, (r / 365) as u32)
    }

    fn id_number(&self, index: usize, region: &str, birth: NaiveDate, male: bool) -> String {
        let (_, slot) = self.id_slot(index);
        let seq = 2 * slot + if male { 1 } else { 2 };
        let mut id = String::with_capacity(18);
        id.push_str(region);
        push_num(&mut id, birth.year().max(0) as u64, 4);
        push_num(&mut id, u64::from(birth.month()), 2);
        push_num(&mut id, u64::from(birth.day()), 2);
        push_num(&mut id, u64::from(seq), 3);
        id.push(check_digit(id.as_bytes()).unwrap_or('0'));
        id
    }

    // ----------------------------------------------------------------------------------
    // Addresses
    // ----------------------------------------------------------------------------------

    fn slot_addr(&self, slot: usize) -> Addr {
        let g_count = self.grids.len();
        let grid = self.grid_of_slot[slot % g_count];
        let k = (slot / g_count) as u32;
        let g = &self.grids[grid];
        let per_building = g.units * g.floors * g.rooms;
        let kb = k / per_building;
        let within = k % per_building;
        let compound = (kb as usize) % g.compounds.len();
        let building = kb / g.compounds.len() as u32 + 1;
        Addr {
            grid,
            compound,
            building,
            unit: within / (g.floors * g.rooms) + 1,
            floor: (within / g.rooms) % g.floors + 1,
            room: within % g.rooms + 1,
        }
    }

    fn format_addr(&self, a: &Addr, style: AddrStyle) -> String {
        let compound = &self.grids[a.grid].compounds[a.compound];
        let mut s = String::with_capacity(96);
        s.push_str(match style {
            AddrStyle::NoCity => "朝阳区",
            _ => CITY_DISTRICT,
        });
        if !matches!(style, AddrStyle::Dash) {
            s.push_str(STREET_NAME);
        }
        s.push_str(compound);
        push_num(&mut s, u64::from(a.building), 1);
        if matches!(style, AddrStyle::Dash) {
            s.push('-');
            push_num(&mut s, u64::from(a.unit), 1);
            s.push('-');
        } else {
            s.push_str("号楼");
            if matches!(style, AddrStyle::Building) {
                return s;
            }
            push_num(&mut s, u64::from(a.unit), 1);
            s.push_str("单元");
        }
        push_num(&mut s, u64::from(a.floor), 1);
        push_num(&mut s, u64::from(a.room), 2);
        if matches!(style, AddrStyle::Room) {
            s.push('室');
        }
        s
    }

    fn compound_building(&self, a: &Addr) -> String {
        format!(
            "{}{}号楼",
            self.grids[a.grid].compounds[a.compound], a.building
        )
    }

    /// The head of a household in the same grid a few slots away (a neighbour).
    fn neighbour(&self, span: Span, rng: &mut Mix) -> usize {
        let g = self.grids.len();
        let mut spans = Vec::with_capacity(32);
        for d in 1..=8usize {
            let up = span.start + g * d;
            if self.is_household_start(up, &mut spans) {
                return up;
            }
            if let Some(down) = span.start.checked_sub(g * d) {
                if self.is_household_start(down, &mut spans) {
                    return down;
                }
            }
        }
        self.span_of(self.other_resident(rng, span)).start
    }

    // ----------------------------------------------------------------------------------
    // Emission
    // ----------------------------------------------------------------------------------

    /// Writes what each department in `depts` publishes about `range` into the matching
    /// `outs` entry. One pass: a household's skeleton and a person's strings are made once
    /// however many departments are asked for, and each department's output is the same as
    /// when it is asked for alone.
    fn emit(&self, depts: &[usize], range: Range<usize>, outs: &mut [Out]) {
        let n = self.config.residents;
        let range = range.start.min(n)..range.end.min(n);
        if range.is_empty() {
            return;
        }
        let zhujian = depts.iter().position(|&d| d == ZHUJIAN);
        let by_person = depts.iter().any(|&d| d != ZHUJIAN);
        let mut spans = Vec::with_capacity(32);
        for block in range.start / BLOCK..=(range.end - 1) / BLOCK {
            self.block_spans(block, &mut spans);
            for &span in &spans {
                if span.start + span.len <= range.start || span.start >= range.end {
                    continue;
                }
                let sk = self.skeleton(span);
                if let Some(z) = zhujian {
                    if range.contains(&span.start) {
                        self.write_houses(&mut outs[z], &sk);
                    }
                }
                if by_person {
                    self.emit_members(depts, &sk, &range, outs);
                }
            }
        }
    }

    fn emit_members(&self, depts: &[usize], sk: &Skeleton, range: &Range<usize>, outs: &mut [Out]) {
        let mut shared = None;
        for (k, m) in sk.members.iter().enumerate() {
            if !range.contains(&m.index) {
                continue;
            }
            let mut person = None;
            for (&dept, out) in depts.iter().zip(outs.iter_mut()) {
                let resident = self.publishes_resident(dept, sk, m);
                let wangge = if dept == WANGGE {
                    Some(self.wangge_plan(sk, m)).filter(|(kinds, _)| !kinds.is_empty())
                } else {
                    None
                };
                let mediation = if dept == SIFA {
                    self.mediation_plan(m)
                } else {
                    None
                };
                let organization = if dept == WANGGE {
                    self.organization_plan(sk, m)
                } else {
                    None
                };
                if !resident && wangge.is_none() && mediation.is_none() && organization.is_none() {
                    continue;
                }
                let sh = shared.get_or_insert_with(|| self.shared(sk));
                let p = person.get_or_insert_with(|| self.materialize(sk, k, sh));
                if resident {
                    if dept == GONGAN {
                        self.write_gongan(out, p);
                    } else {
                        self.write_department_resident(out, dept, p);
                    }
                }
                if let Some((kinds, mut rng)) = wangge {
                    for (i, kind) in kinds.into_iter().enumerate() {
                        self.write_wangge_event(out, p, sk, sh, kind, i, &mut rng);
                    }
                }
                if let Some(rng) = mediation {
                    self.write_mediation(out, p, sk, sh, rng);
                }
                if let Some(rng) = organization {
                    self.write_organization(out, p, sh, rng);
                }
            }
        }
    }

    fn defect(&self, dept: usize, serial: u64, id_capable: bool) -> Option<Defect> {
        let rate = self.config.bad_record_rate;
        if rate <= 0.0 {
            return None;
        }
        let mut rng = Mix::new(self.config.seed, STREAM_DEFECT + dept as u64, serial);
        if !rng.gen_bool(rate.min(1.0)) {
            return None;
        }
        let options: &[Defect] = if id_capable {
            &[
                Defect::IdChecksum,
                Defect::InvalidGrid,
                Defect::MissingSourceId,
            ]
        } else {
            &[Defect::InvalidGrid, Defect::MissingSourceId]
        };
        Some(options[rng.gen_range(0..options.len())])
    }

    fn write_gongan(&self, out: &mut Out, p: &Person) {
        let mut rng = Mix::new(
            self.config.seed,
            STREAM_DEPT + GONGAN as u64,
            p.index as u64,
        );
        let defect = self.defect(GONGAN, p.index as u64, true);
        let version = version_in(&mut rng, 400);
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "resident");
        if defect != Some(Defect::MissingSourceId) {
            o.key("source_id");
            o.id_str("GA-", p.index + 1, "");
        }
        o.ts("version", version);
        o.str(
            "id_number",
            &apply_id_defect(&p.id_number, defect, &mut rng),
        );
        o.str("name", &p.name);
        o.str("gender", p.gender);
        o.date("birth_date", p.birth_date);
        o.str("ethnicity", p.ethnicity);
        if let Some(phone) = &p.phone {
            o.str("phone", phone);
        }
        o.str("hukou_address", &p.hukou_address);
        o.str("address", &p.address);
        o.str("house_source_id", &p.house_source_id);
        o.str("grid", &apply_grid_defect(&p.grid, defect));
        o.list("tags", &[p.resident_type]);
        o.begin_obj("attributes");
        o.str("relation_to_head", p.relation_to_head);
        o.key("household_no");
        o.id_str("HH", p.household.start + 1, "");
        if p.resident_type == "流动人口" {
            o.bool("residence_permit", rng.gen_bool(0.7));
        }
        mark_defect(&mut o, defect, &mut out.bad);
        o.end_obj();
        o.close();
    }

    /// The resident record of `minzheng`, `weijian` or `sifa`, with realistic drift.
    fn write_department_resident(&self, out: &mut Out, dept: usize, p: &Person) {
        let mut rng = Mix::new(self.config.seed, STREAM_DEPT + dept as u64, p.index as u64);
        let defect = self.defect(dept, p.index as u64 * 16, true);
        let (prefix, window, legacy_p) = match dept {
            MINZHENG => ("MZ-", 700, 0.25),
            WEIJIAN => ("WJ-", 365, 0.08),
            _ => ("SF-", 500, 0.10),
        };
        let version = version_in(&mut rng, window);
        let drift = self.drift(p, &mut rng, legacy_p);
        let tags: Vec<&'static str> = p
            .tags
            .iter()
            .copied()
            .filter(|t| DEPT_TAGS[dept].contains(t))
            .collect();
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "resident");
        if defect != Some(Defect::MissingSourceId) {
            o.key("source_id");
            o.id_str(prefix, p.index + 1, "");
        }
        o.ts("version", version);
        let id = if defect == Some(Defect::IdChecksum) {
            &p.id_number
        } else {
            &drift.id
        };
        o.str("id_number", &apply_id_defect(id, defect, &mut rng));
        o.str("name", &drift.name);
        o.str("gender", p.gender);
        o.date("birth_date", p.birth_date);
        if let Some(phone) = &drift.phone {
            o.str("phone", phone);
        }
        o.str("address", &drift.address);
        o.str("grid", &apply_grid_defect(&drift.grid, defect));
        o.list("tags", &tags);
        o.begin_obj("attributes");
        match dept {
            MINZHENG => self.minzheng_attributes(&mut o, p, &tags, &mut rng),
            WEIJIAN => self.weijian_attributes(&mut o, p, &tags, &mut rng),
            _ => sifa_attributes(&mut o, &tags, &mut rng),
        }
        mark_defect(&mut o, defect, &mut out.bad);
        o.end_obj();
        o.close();
    }

    fn minzheng_attributes(&self, o: &mut Obj, p: &Person, tags: &[&str], rng: &mut Mix) {
        if tags.contains(&"低保") {
            o.num("allowance_monthly", rng.gen_range(6..=14u32) * 100 + 20);
        } else if tags.contains(&"低收入") {
            o.num("allowance_monthly", rng.gen_range(2..=6u32) * 100);
        }
        if p.age >= 80 {
            let subsidy = match p.age {
                80..=89 => 100u32,
                90..=99 => 500,
                _ => 800,
            };
            o.num("elderly_subsidy_monthly", subsidy as u64);
        }
        if tags.contains(&"残疾") {
            o.str("disability_type", pick(DISABILITY_TYPES, rng));
            o.str(
                "disability_level",
                pick(&["一级", "二级", "三级", "四级"], rng),
            );
        }
        if tags.contains(&"独居老人") || tags.contains(&"空巢老人") {
            o.str(
                "care_service",
                pick(
                    &["助餐", "助浴", "紧急呼叫", "定期巡访", "家庭养老床位"],
                    rng,
                ),
            );
            o.key("emergency_contact");
            let _ = write!(
                o.out,
                "\"{}{}（子女）{}\"",
                p.surname,
                pick(&self.names.mid_female, rng),
                mobile(rng)
            );
        }
    }

    fn weijian_attributes(&self, o: &mut Obj, p: &Person, tags: &[&str], rng: &mut Mix) {
        let community = &self.communities[self.grids[self.grid_index(&p.grid)].community];
        let mut diagnoses: Vec<&str> = Vec::new();
        if tags.contains(&"慢性病") {
            diagnoses.push(pick(if p.age < 35 { CHRONIC_YOUNG } else { CHRONIC }, rng));
            if p.age >= 55 && rng.gen_bool(0.3) {
                let second = pick(CHRONIC, rng);
                if !diagnoses.contains(&second) {
                    diagnoses.push(second);
                }
            }
        }
        if tags.contains(&"严重精神障碍") {
            diagnoses.push(pick(MENTAL, rng));
            o.num("risk_level", rng.gen_range(0..=3u32));
            o.key("guardian");
            let _ = write!(
                o.out,
                "\"{}{}\"",
                p.surname,
                pick(&self.names.mid_male, rng)
            );
        }
        if tags.contains(&"孕产妇") {
            let due = AS_OF_DAYS + rng.gen_range(-60..=240);
            o.date_days("expected_delivery", due);
            o.num("gravidity", rng.gen_range(1..=3u32));
        }
        if !diagnoses.is_empty() {
            o.str("diagnosis", &diagnoses.join("、"));
        }
        o.str(
            "managed_by",
            &format!("{}社区卫生服务站", community.name.trim_end_matches("社区")),
        );
        o.date_days("last_followup", AS_OF_DAYS - rng.gen_range(3..=120));
    }

    fn grid_index(&self, code: &str) -> usize {
        self.grids.iter().position(|g| g.code == code).unwrap_or(0)
    }

    /// Fields as another department keeps them: sometimes the legacy ID, an old or
    /// differently formatted address, another or no phone, a variant name.
    fn drift(&self, p: &Person, rng: &mut Mix, legacy_p: f64) -> Drift {
        let id = match &p.legacy_id_number {
            Some(legacy) if p.birth_date.year() < LEGACY_BEFORE && rng.gen_bool(legacy_p) => {
                legacy.clone()
            }
            _ => p.id_number.clone(),
        };
        let name = match rng.gen_range(0..100u32) {
            0 => traditional(&p.name).unwrap_or_else(|| format!("{} ", p.name)),
            1 => format!("{} ", p.name),
            _ => p.name.clone(),
        };
        let phone = match rng.gen_range(0..100u32) {
            0..=9 => None,
            10..=14 => Some(mobile(rng)),
            _ => p.phone.clone(),
        };
        let moved = rng.gen_bool(0.06);
        let addr = if moved {
            self.slot_addr(rng.gen_range(0..self.config.residents.max(1)))
        } else {
            self.slot_addr(p.household.start)
        };
        let style = match rng.gen_range(0..100u32) {
            0..=59 => AddrStyle::Full,
            60..=74 => AddrStyle::NoCity,
            75..=89 => AddrStyle::Room,
            _ => AddrStyle::Dash,
        };
        Drift {
            id,
            name,
            phone,
            address: self.format_addr(&addr, style),
            grid: self.grids[addr.grid].code.clone(),
        }
    }

    fn write_houses(&self, out: &mut Out, sk: &Skeleton) {
        let owner = match sk.owner {
            Owner::Member => self.ident(sk, 0),
            Owner::Resident(j) => self.head_ident(j),
        };
        let slot = sk.span.start;
        self.write_house(out, slot, sk.usage, &owner, sk.span.len);
        if let Some(j) = sk.vacant_owner {
            self.write_house(out, slot + 1, "vacant", &self.head_ident(j), 0);
        }
    }

    fn write_house(
        &self,
        out: &mut Out,
        slot: usize,
        usage: &str,
        owner: &Ident,
        occupants: usize,
    ) {
        let mut rng = Mix::new(self.config.seed, STREAM_DEPT + ZHUJIAN as u64, slot as u64);
        let defect = self.defect(ZHUJIAN, slot as u64, false);
        let version = version_in(&mut rng, 1000);
        let addr = self.slot_addr(slot);
        let g = &self.grids[addr.grid];
        let (area, built) = if g.tower {
            (rng.gen_range(550..=1450u32), rng.gen_range(2000..=2016u32))
        } else {
            (rng.gen_range(380..=920u32), rng.gen_range(1984..=2000u32))
        };
        let area = if usage == "group_rental" {
            area.max(800)
        } else {
            area
        };
        let property_type = match (g.tower, rng.gen_range(0..100u32)) {
            (true, 0..=84) | (false, 70..) => "商品房",
            (true, _) => "公租房",
            (false, _) => "房改房",
        };
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "house");
        if defect != Some(Defect::MissingSourceId) {
            o.str("source_id", &house_id(slot));
        }
        o.ts("version", version);
        o.str("address", &self.format_addr(&addr, AddrStyle::Full));
        o.str("grid", &apply_grid_defect(&g.code, defect));
        o.str("usage", usage);
        let id = match &owner.legacy_id_number {
            Some(legacy) if owner.birth_year < LEGACY_BEFORE && rng.gen_bool(0.12) => legacy,
            _ => &owner.id_number,
        };
        o.str("owner_id_number", id);
        o.begin_obj("attributes");
        o.key("area_m2");
        let _ = write!(o.out, "{}.{}", area / 10, area % 10);
        o.num("rooms", (area / 300).clamp(1, 4));
        o.num("floor", addr.floor);
        o.num("built_year", built as u64);
        o.str("property_type", property_type);
        o.str("owner_name", &owner.name);
        if usage == "rental" || usage == "group_rental" {
            o.num("occupants", occupants as u64);
            o.date_days("lease_start", AS_OF_DAYS - rng.gen_range(30..=900));
        }
        mark_defect(&mut o, defect, &mut out.bad);
        o.end_obj();
        o.close();
    }

    /// Which events the grid centre records with person `m` as first party, and the stream
    /// to write them with.
    /// Whether the household head runs a registered business at home (个体工商户, about
    /// one household in 25), which the grid centre inspects as an organization.
    fn organization_plan(&self, sk: &Skeleton, m: &Member) -> Option<Mix> {
        if m.index != sk.span.start || m.age < 25 {
            return None;
        }
        let mut rng = Mix::new(self.config.seed, STREAM_ORGANIZATION, m.index as u64);
        rng.gen_bool(0.04).then_some(rng)
    }

    /// A household's business as the grid centre records it: a name after the operator's
    /// surname, a unified social credit code (个体工商户 `92` + the district, with the GB
    /// 32100 check character), the household's address without a grid (the broker derives
    /// it), the operator as legal representative.
    fn write_organization(&self, out: &mut Out, p: &Person, sh: &Shared, mut rng: Mix) {
        const CODE_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
        let (kind, trade) = pick_weighted(
            &[
                ("shop", "便利店", 30),
                ("restaurant", "小吃店", 25),
                ("hair_salon", "理发店", 15),
                ("repair", "家电维修部", 10),
                ("tutoring", "托管班", 12),
                ("pharmacy", "药店", 8),
            ],
            &mut rng,
        );
        let surname: String = p.name.chars().take(1).collect();
        let mut code = String::from("92");
        code.push_str(&DISTRICT_CODE[..6]);
        for _ in 0..9 {
            code.push(char::from(CODE_CHARS[rng.gen_range(0..CODE_CHARS.len())]));
        }
        let check = model::uscc_check_character(code.as_bytes()).unwrap_or('0');
        code.push(check);
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "organization");
        o.key("source_id");
        o.id_str("WG-ORG-", p.index + 1, "");
        o.ts("version", version_in(&mut rng, 200));
        o.str("name", &format!("{surname}记{trade}"));
        o.str("uscc", &code);
        o.str("type", kind);
        o.str("address", &self.format_addr(&sh.addr, AddrStyle::Full));
        o.str("legal_rep_id_number", &p.id_number);
        if let Some(phone) = &p.phone {
            o.str("phone", phone);
        }
        if matches!(kind, "shop" | "restaurant" | "tutoring") {
            o.list("tags", &["九小场所"]);
        }
        o.begin_obj("attributes");
        o.date_days("inspected", AS_OF_DAYS - rng.gen_range(1..=180));
        o.bool("fire_extinguisher", rng.gen_bool(0.85));
        o.end_obj();
        o.close();
    }

    fn wangge_plan(&self, sk: &Skeleton, m: &Member) -> (Vec<EventKind>, Mix) {
        let mut rng = Mix::new(
            self.config.seed,
            STREAM_EVENTS + WANGGE as u64,
            m.index as u64,
        );
        let mut kinds: Vec<EventKind> = Vec::new();
        if m.tags & TAG_ALONE != 0 {
            for _ in 0..rng.gen_range(1..=3) {
                kinds.push(EventKind::ElderlyVisit);
            }
        }
        if sk.span.group_rental && m.index == sk.span.start && rng.gen_bool(0.6) {
            kinds.push(EventKind::GroupRental);
        }
        if m.age >= 18 {
            for (kind, prob) in [
                (EventKind::Dispute, 0.006),
                (EventKind::EBikeCharging, 0.005),
                (EventKind::IllegalConstruction, 0.0015),
                (EventKind::FireHazard, 0.002),
                (EventKind::FallingObjects, 0.0015),
                (EventKind::Sanitation, 0.003),
            ] {
                if rng.gen_bool(prob) {
                    kinds.push(kind);
                }
            }
        }
        (kinds, rng)
    }

    /// Whether person `m` applied for people's mediation, and the stream to write it with.
    fn mediation_plan(&self, m: &Member) -> Option<Mix> {
        let mut rng = Mix::new(
            self.config.seed,
            STREAM_EVENTS + SIFA as u64,
            m.index as u64,
        );
        (m.age >= 18 && rng.gen_bool(0.012)).then_some(rng)
    }
    #[allow(clippy::too_many_arguments)]
    fn write_wangge_event(
        &self,
        out: &mut Out,
        p: &Person,
        sk: &Skeleton,
        sh: &Shared,
        kind: EventKind,
        k: usize,
        rng: &mut Mix,
    ) {
        let serial = p.index as u64 * 16 + k as u64 + 1;
        let defect = self.defect(WANGGE, serial, false);
        let span = sk.span;
        let addr = &sh.addr;
        let g = &self.grids[addr.grid];
        let place = self.compound_building(addr);
        let (b, u) = (addr.building, addr.unit);
        let room = format!("{}{:02}", addr.floor, addr.room);
        let w = &g.worker;
        let a = p.name.as_str();
        let mut parties = vec![party_id(&Ident::of(p), rng)];
        let (title, mut description, address_style, handled_by) = match kind {
            EventKind::Dispute => {
                let other = self.ident_at(self.neighbour(span, rng));
                parties.push(party_id(&other, rng));
                let o = other.name.as_str();
                let issue = pick(&["噪音", "漏水", "楼道堆物", "停车", "宠物扰民"], rng);
                let d = match issue {
                    "噪音" => format!("居民{a}（{b}号楼{u}单元{room}）反映邻居{o}家夜间噪音扰民，双方多次沟通未果。网格员{w}已上门了解情况，并约双方到社区调解室协商。"),
                    "漏水" => format!("{a}反映其家中卫生间顶部渗水，怀疑系楼上{o}家防水层损坏所致，双方就维修费用分担发生争执。网格员已联系物业查勘。"),
                    "楼道堆物" => format!("{a}与邻居{o}因楼道内堆放杂物发生口角，网格员{w}现场劝导，已督促清理。"),
                    "停车" => format!("{a}与{o}因小区内车位占用问题发生争执，情绪较为激动。网格员{w}现场协调，建议通过物业重新划分车位。"),
                    _ => format!("{a}反映邻居{o}饲养的犬只夜间吠叫、未拴绳遛狗，影响老人孩子出行。网格员已上门宣传文明养犬规定。"),
                };
                (format!("{place}邻里{issue}纠纷"), d, AddrStyle::Full, "社区居委会")
            }
            EventKind::EBikeCharging => {
                let d = if rng.gen_bool(0.5) {
                    format!("网格员{w}巡查发现{b}号楼{u}单元楼道内有电动自行车飞线充电，车主为{a}，存在火灾隐患。已现场劝导断电，告知使用小区集中充电桩。")
                } else {
                    format!("居民反映{b}号楼一层有住户从窗户拉线为电动自行车充电，经核实为{a}所为，已责令整改并登记在案。")
                };
                (format!("{place}{u}单元电动自行车违规充电"), d, AddrStyle::Building, "物业")
            }
            EventKind::IllegalConstruction => {
                let area = rng.gen_range(6..=30);
                (
                    format!("{place}违法建设"),
                    format!("{a}在{b}号楼一层院内私搭彩钢板房约{area}平方米，网格员{w}已拍照取证并上报城管执法队。"),
                    AddrStyle::Full,
                    "城管执法队",
                )
            }
            EventKind::ElderlyVisit => {
                let health = pick(&["良好", "一般，腿脚不便", "较差，需要定期复诊", "良好，精神状态不错"], rng);
                (
                    format!("独居老人{a}定期走访"),
                    format!("网格员{w}上门走访{}岁独居老人{a}，老人身体状况{health}，家中燃气、用电安全，已提醒按时服药，留下网格员联系方式。", p.age),
                    AddrStyle::Full,
                    "网格员",
                )
            }
            EventKind::FireHazard => (
                format!("{place}消防通道堵塞"),
                format!("网格员巡查发现{b}号楼东侧消防通道被私家车和杂物占用，已联系物业及车主{a}挪车清理。"),
                AddrStyle::Building,
                "物业",
            ),
            EventKind::GroupRental => (
                format!("{place}{u}单元{room}疑似群租房"),
                format!(
                    "接群众反映{place}{u}单元{room}疑似群租，网格员{w}会同派出所民警入户核查，现居住{}人，承租人{a}。已通知房主限期整改。",
                    span.len
                ),
                AddrStyle::Full,
                "派出所",
            ),
            EventKind::FallingObjects => (
                format!("{place}高空抛物"),
                format!("{place}楼下多次发现从高层抛下的垃圾袋，居民{a}反映险些被砸中。网格员已张贴警示标识并调取监控。"),
                AddrStyle::Building,
                "派出所",
            ),
            EventKind::Sanitation => (
                format!("{place}垃圾桶满溢"),
                format!("{a}反映{b}号楼旁垃圾桶连续两天未清运，气味较大。已通知环卫清运。"),
                AddrStyle::Building,
                "环卫所",
            ),
        };
        append_contact(&mut description, p, rng);
        let occurred = AS_OF_UNIX - rng.gen_range(600..365 * DAY);
        let recent = AS_OF_UNIX - occurred < 30 * DAY;
        let closed =
            kind == EventKind::ElderlyVisit || rng.gen_bool(if recent { 0.35 } else { 0.95 });
        let version = if closed {
            (occurred + rng.gen_range(3600..7 * DAY)).min(AS_OF_UNIX)
        } else {
            occurred + rng.gen_range(0..7200)
        };
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "event");
        if defect != Some(Defect::MissingSourceId) {
            o.key("source_id");
            let _ = write!(o.out, "\"WG-{:08}-{}\"", p.index + 1, k + 1);
        }
        o.ts("version", version);
        o.str("type", kind.code());
        o.str("title", &title);
        o.str("description", &description);
        o.ts("occurred_at", occurred);
        o.str("address", &self.format_addr(addr, address_style));
        o.str("grid", &apply_grid_defect(&g.code, defect));
        o.str("status", if closed { "closed" } else { "open" });
        o.list("party_id_numbers", &parties);
        o.begin_obj("attributes");
        o.str("reporter", &format!("网格员{w}"));
        let channel = match kind {
            EventKind::ElderlyVisit | EventKind::FireHazard => "网格员巡查",
            _ => pick(&["网格员巡查", "居民上报", "12345热线转办"], rng),
        };
        o.str("channel", channel);
        o.str("handled_by", handled_by);
        mark_defect(&mut o, defect, &mut out.bad);
        o.end_obj();
        o.close();
    }

    fn write_mediation(&self, out: &mut Out, p: &Person, sk: &Skeleton, sh: &Shared, mut rng: Mix) {
        let span = sk.span;
        let serial = p.index as u64 * 16 + 1;
        let defect = self.defect(SIFA, serial, false);
        let a = p.name.as_str();
        let spouse = sk
            .members
            .iter()
            .position(|m| {
                m.index != p.index
                    && m.age >= 18
                    && (m.relation == "配偶" && p.relation_to_head == "户主"
                        || m.relation == "户主" && p.relation_to_head == "配偶")
            })
            .map(|k| self.ident(sk, k));
        let roll = rng.gen_range(0..100u32);
        let (category, other, reason, agreement) = if roll < 15 && spouse.is_some() {
            (
                "婚姻家庭纠纷",
                spouse,
                "家庭琐事及子女抚养问题",
                "双方互相体谅，共同承担子女教育费用",
            )
        } else if roll < 35 && sk.usage != "own" {
            let owner = match sk.owner {
                Owner::Resident(j) => Some(self.head_ident(j)),
                Owner::Member => None,
            };
            (
                "房屋租赁纠纷",
                owner,
                "押金退还及房屋维修费用",
                "房东退还押金的80%，维修费用由双方平摊",
            )
        } else if roll < 50 {
            let other = self.head_ident(self.other_resident(&mut rng, span));
            (
                "劳务纠纷",
                Some(other),
                "装修工程款拖欠",
                "被申请人于30日内分两次付清剩余工程款",
            )
        } else if roll < 60 {
            (
                "物业纠纷",
                None,
                "物业费缴纳及电梯维修",
                "物业公司于15日内完成维修，申请人补缴物业费",
            )
        } else {
            let other = self.ident_at(self.neighbour(span, &mut rng));
            (
                "邻里纠纷",
                Some(other),
                "楼上漏水造成财产损失",
                "被申请人赔偿维修费用3000元并修复防水层",
            )
        };
        let community = &self.communities[self.grids[sh.addr.grid].community];
        let committee = format!("{}人民调解委员会", community.name);
        let mediator = format!(
            "{}{}",
            pick(SURNAMES_TOP, &mut rng),
            pick(GRID_WORKER_GIVEN, &mut rng)
        );
        let occurred = AS_OF_UNIX - rng.gen_range(DAY..540 * DAY);
        let success = rng.gen_bool(0.85);
        let fulfilled = success && rng.gen_bool(0.8);
        let respondent = match &other {
            Some(o) => o.name.clone(),
            None => format!(
                "{}物业服务有限公司",
                community.name.trim_end_matches("社区")
            ),
        };
        let mut description = format!(
            "申请人{a}与被申请人{respondent}因{reason}发生纠纷，向{committee}申请调解。调解员{mediator}组织双方协商，"
        );
        if success {
            let _ = write!(description, "达成调解协议：{agreement}。");
            description.push_str(if fulfilled {
                "协议已履行完毕。"
            } else {
                "协议正在履行中，调解员将定期回访。"
            });
        } else {
            description.push_str("双方分歧较大，调解未果，已告知申请人可通过诉讼途径解决。");
        }
        append_contact(&mut description, p, &mut rng);
        let closed = !success || fulfilled || rng.gen_bool(0.3);
        let version = (occurred + rng.gen_range(DAY..45 * DAY)).min(AS_OF_UNIX);
        let mut parties = vec![party_id(&Ident::of(p), &mut rng)];
        if let Some(o) = &other {
            parties.push(party_id(o, &mut rng));
        }
        let mut o = Obj::open(&mut out.buf);
        o.str("kind", "event");
        if defect != Some(Defect::MissingSourceId) {
            o.key("source_id");
            let _ = write!(o.out, "\"SF-TJ-{:08}\"", p.index + 1);
        }
        o.ts("version", version);
        o.str("type", "dispute");
        o.str("title", &format!("人民调解：{category}"));
        o.str("description", &description);
        o.ts("occurred_at", occurred);
        o.str("address", &sh.address);
        o.str("grid", &apply_grid_defect(&sh.grid, defect));
        o.str("status", if closed { "closed" } else { "open" });
        o.list("party_id_numbers", &parties);
        o.begin_obj("attributes");
        o.str("category", category);
        o.str("committee", &committee);
        o.str("mediator", &mediator);
        o.str(
            "mediation_result",
            if success {
                "调解成功"
            } else {
                "调解不成"
            },
        );
        o.bool("agreement_fulfilled", fulfilled);
        mark_defect(&mut o, defect, &mut out.bad);
        o.end_obj();
        o.close();
    }
}

// --------------------------------------------------------------------------------------
// Identifiers (GB 11643-1999)
// --------------------------------------------------------------------------------------

/// The GB 11643 check character of the first 17 ASCII digits of `id`.
pub fn check_digit(id: &[u8]) -> Option<char> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    if id.len() < 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in id[..17].iter().zip(WEIGHTS) {
        if !c.is_ascii_digit() {
            return None;
        }
        sum += u32::from(c - b'0') * w;
    }
    Some(char::from(CHECK[(sum % 11) as usize]))
}

/// Whether `id` is 17 digits plus the right check character.
pub fn id_checksum_ok(id: &str) -> bool {
    id.len() == 18 && check_digit(id.as_bytes()) == id[17..].chars().next()
}

/// The 18-digit form of a 15-digit legacy ID number (`19` inserted after the region code).
pub fn upgrade_legacy_id(id15: &str) -> Option<String> {
    if id15.len() != 15 || !id15.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut id = String::with_capacity(18);
    id.push_str(&id15[..6]);
    id.push_str("19");
    id.push_str(&id15[6..]);
    id.push(check_digit(id.as_bytes())?);
    Some(id)
}

/// The 15-digit legacy form of an 18-digit ID of someone born 1900–1998.
pub fn legacy_id(id18: &str) -> Option<String> {
    if id18.len() != 18 || &id18[6..8] != "19" || &id18[8..10] == "99" {
        return None;
    }
    Some(format!("{}{}", &id18[..6], &id18[8..17]))
}

fn apply_id_defect(id: &str, defect: Option<Defect>, rng: &mut Mix) -> String {
    if defect != Some(Defect::IdChecksum) || id.len() != 18 {
        return id.to_string();
    }
    const CHECK: &str = "0123456789X";
    let current = CHECK.find(&id[17..]).unwrap_or(0);
    let wrong = (current + rng.gen_range(1..11)) % 11;
    format!("{}{}", &id[..17], &CHECK[wrong..=wrong])
}

fn apply_grid_defect(grid: &str, defect: Option<Defect>) -> String {
    if defect == Some(Defect::InvalidGrid) {
        // 14 digits: not a grid code.
        grid[..grid.len().saturating_sub(1)].to_string()
    } else {
        grid.to_string()
    }
}

fn mark_defect(o: &mut Obj, defect: Option<Defect>, bad: &mut usize) {
    if let Some(d) = defect {
        o.str(DEFECT_KEY, d.code());
        *bad += 1;
    }
}

// --------------------------------------------------------------------------------------
// Small types
// --------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
    group_rental: bool,
}

/// Numeric description of a household; see [`DemoWorld::skeleton`].
#[derive(Debug)]
struct Skeleton {
    span: Span,
    kind: ResidentKind,
    in_gongan: bool,
    home_region: (&'static str, &'static str),
    members: Vec<Member>,
    usage: &'static str,
    owner: Owner,
    /// A vacant house next door (slot `span.start + 1`) and the resident who owns it.
    vacant_owner: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    index: usize,
    relation: &'static str,
    male: bool,
    surname: &'static str,
    birth_date: NaiveDate,
    age: u32,
    region: &'static str,
    ethnicity: &'static str,
    phone: PhoneKind,
    /// Bit set over [`TAGS`].
    tags: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhoneKind {
    None,
    /// A child listed with the head of household's mobile.
    Head,
    Mobile,
    Landline,
}

/// Who a person is, without where they live.
#[derive(Debug, Clone)]
struct Ident {
    id_number: String,
    legacy_id_number: Option<String>,
    name: String,
    birth_year: i32,
}

impl Ident {
    fn of(p: &Person) -> Ident {
        Ident {
            id_number: p.id_number.clone(),
            legacy_id_number: p.legacy_id_number.clone(),
            name: p.name.clone(),
            birth_year: p.birth_date.year(),
        }
    }
}

/// The ID number as `wangge`/`sifa` recorded it (now and then the legacy form).
fn party_id(p: &Ident, rng: &mut Mix) -> String {
    match &p.legacy_id_number {
        Some(legacy) if p.birth_year < LEGACY_BEFORE && rng.gen_bool(0.03) => legacy.clone(),
        _ => p.id_number.clone(),
    }
}

#[derive(Debug)]
struct Shared {
    addr: Addr,
    address: String,
    grid: String,
    house_source_id: String,
    hukou_elsewhere: String,
}

fn house_id(slot: usize) -> String {
    let mut s = String::with_capacity(11);
    s.push_str("ZJ-");
    push_num(&mut s, slot as u64 + 1, 8);
    s
}

#[derive(Debug, Clone, Copy)]
enum Owner {
    /// The head of the household living there.
    Member,
    /// The head of the household of this resident index.
    Resident(usize),
}

#[derive(Debug, Clone, Copy)]
struct Addr {
    grid: usize,
    compound: usize,
    building: u32,
    unit: u32,
    floor: u32,
    room: u32,
}

#[derive(Debug, Clone, Copy)]
enum AddrStyle {
    /// 北京市朝阳区望京街道幸福里一区3号楼2单元501
    Full,
    /// 朝阳区望京街道幸福里一区3号楼2单元501
    NoCity,
    /// 北京市朝阳区望京街道幸福里一区3号楼2单元501室
    Room,
    /// 北京市朝阳区幸福里一区3-2-501
    Dash,
    /// 北京市朝阳区望京街道幸福里一区3号楼
    Building,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResidentKind {
    Registered,
    Separated,
    Floating,
}

impl ResidentKind {
    fn tag(self) -> &'static str {
        match self {
            ResidentKind::Registered => "户籍人口",
            ResidentKind::Separated => "人户分离",
            ResidentKind::Floating => "流动人口",
        }
    }

    fn tag_bit(self) -> u16 {
        match self {
            ResidentKind::Registered => 1,
            ResidentKind::Separated => 1 << 1,
            ResidentKind::Floating => 1 << 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SurnameOf {
    Family,
    Own,
    ChildOf,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    age: u32,
    male: bool,
    relation: &'static str,
    surname: SurnameOf,
}

#[derive(Debug)]
struct Drift {
    id: String,
    name: String,
    phone: Option<String>,
    address: String,
    grid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    IdChecksum,
    InvalidGrid,
    MissingSourceId,
}

impl Defect {
    fn code(self) -> &'static str {
        match self {
            Defect::IdChecksum => "id_checksum",
            Defect::InvalidGrid => "invalid_grid",
            Defect::MissingSourceId => "missing_source_id",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Dispute,
    EBikeCharging,
    IllegalConstruction,
    ElderlyVisit,
    FireHazard,
    GroupRental,
    FallingObjects,
    Sanitation,
}

impl EventKind {
    fn code(self) -> &'static str {
        match self {
            EventKind::Dispute => "dispute",
            EventKind::EBikeCharging => "e_bike_charging",
            EventKind::IllegalConstruction => "illegal_construction",
            EventKind::ElderlyVisit => "elderly_visit",
            EventKind::FireHazard => "fire_hazard",
            EventKind::GroupRental => "group_rental",
            EventKind::FallingObjects => "falling_objects",
            EventKind::Sanitation => "sanitation",
        }
    }
}

#[derive(Debug)]
struct Out {
    buf: String,
    bad: usize,
}

/// Writes one JSON object; keys are ASCII literals, values are escaped.
struct Obj<'a> {
    out: &'a mut String,
    comma: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, comma: false }
    }

    fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(',');
        }
        self.comma = true;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_json_str(self.out, v);
    }

    fn num(&mut self, k: &str, v: impl Into<u64>) {
        self.key(k);
        push_num(self.out, v.into(), 1);
    }

    /// A string value `"{prefix}{number:08}{suffix}"`; the key must already be written.
    fn id_str(&mut self, prefix: &str, number: usize, suffix: &str) {
        self.out.push('"');
        self.out.push_str(prefix);
        push_num(self.out, number as u64, 8);
        self.out.push_str(suffix);
        self.out.push('"');
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    fn ts(&mut self, k: &str, unix: i64) {
        self.key(k);
        let days = unix.div_euclid(DAY);
        let secs = unix.rem_euclid(DAY);
        self.out.push('"');
        push_ymd(self.out, civil_from_days(days));
        self.out.push('T');
        push_num(self.out, (secs / 3600) as u64, 2);
        self.out.push(':');
        push_num(self.out, (secs / 60 % 60) as u64, 2);
        self.out.push(':');
        push_num(self.out, (secs % 60) as u64, 2);
        self.out.push_str("Z\"");
    }

    fn date(&mut self, k: &str, d: NaiveDate) {
        self.key(k);
        self.out.push('"');
        push_ymd(self.out, (i64::from(d.year()), d.month(), d.day()));
        self.out.push('"');
    }

    fn date_days(&mut self, k: &str, days: i64) {
        self.key(k);
        self.out.push('"');
        push_ymd(self.out, civil_from_days(days));
        self.out.push('"');
    }

    fn list<S: AsRef<str>>(&mut self, k: &str, items: &[S]) {
        self.key(k);
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_json_str(self.out, item.as_ref());
        }
        self.out.push(']');
    }

    fn begin_obj(&mut self, k: &str) {
        self.key(k);
        self.out.push('{');
        self.comma = false;
    }

    fn end_obj(&mut self) {
        self.out.push('}');
        self.comma = true;
    }

    fn close(self) {
        self.out.push_str("}\n");
    }
}

const TWO_DIGITS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839\
                          40414243444546474849505152535455565758596061626364656667686970717273747576777879\
                          8081828384858687888990919293949596979899";

/// Appends `v` in decimal, zero-padded to `width` digits.
fn push_num(out: &mut String, mut v: u64, width: usize) {
    match (width, v) {
        (2, 0..=99) | (1, 10..=99) => return push2(out, v as usize),
        (1, 0..=9) => return out.push(char::from(b'0' + v as u8)),
        (4, 0..=9999) => {
            push2(out, v as usize / 100);
            return push2(out, v as usize % 100);
        }
        (8, 0..=99_999_999) => {
            let v = v as usize;
            push2(out, v / 1_000_000);
            push2(out, v / 10_000 % 100);
            push2(out, v / 100 % 100);
            return push2(out, v % 100);
        }
        _ => {}
    }
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("0"));
}

fn push2(out: &mut String, v: usize) {
    out.push_str(&TWO_DIGITS[v * 2..v * 2 + 2]);
}

fn push_ymd(out: &mut String, (y, m, d): (i64, u32, u32)) {
    push_num(out, y.max(0) as u64, 4);
    out.push('-');
    push_num(out, u64::from(m), 2);
    out.push('-');
    push_num(out, u64::from(d), 2);
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Branch-free scan (vectorizes); generated values almost never need escaping.
    let special = s.bytes().fold(false, |acc, b| {
        acc | (b == b'"') | (b == b'\\') | (b < 0x20)
    });
    if !special {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

// --------------------------------------------------------------------------------------
// Randomness and calendar helpers
// --------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and good enough for synthetic data; one per (seed, stream, key).
#[derive(Debug, Clone)]
struct Mix(u64);

impl Mix {
    fn new(seed: u64, stream: u64, key: u64) -> Self {
        Mix(mix64(
            mix64(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F)) ^ key,
        ))
    }
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RngCore for Mix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

fn pick<'a, T: ?Sized>(items: &[&'a T], rng: &mut Mix) -> &'a T {
    items[rng.gen_range(0..items.len())]
}

fn pick_weighted<T: Copy>(items: &[(T, &'static str, u32)], rng: &mut Mix) -> (T, &'static str) {
    let total: u32 = items.iter().map(|i| i.2).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for &(code, name, w) in items {
        if x < w {
            return (code, name);
        }
        x -= w;
    }
    (items[0].0, items[0].1)
}

fn shuffle<T>(items: &mut [T], rng: &mut Mix) {
    for i in (1..items.len()).rev() {
        let j = rng.gen_range(0..=i);
        items.swap(i, j);
    }
}

fn elder_age(rng: &mut Mix) -> u32 {
    match rng.gen_range(0..100u32) {
        0..=51 => rng.gen_range(60..=69),
        52..=83 => rng.gen_range(70..=79),
        84..=97 => rng.gen_range(80..=89),
        _ => rng.gen_range(90..=101),
    }
}

fn mobile(rng: &mut Mix) -> String {
    let mut s = String::with_capacity(11);
    s.push_str(pick(MOBILE_PREFIXES, rng));
    push_num(&mut s, u64::from(rng.gen_range(0..100_000_000u32)), 8);
    s
}

fn landline(rng: &mut Mix) -> String {
    let first = if rng.gen_bool(0.7) { 8 } else { 6 };
    format!("010-{first}{:07}", rng.gen_range(0..10_000_000u32))
}

fn append_contact(description: &mut String, p: &Person, rng: &mut Mix) {
    let roll = rng.gen_range(0..100u32);
    if roll < 12 {
        if let Some(phone) = &p.phone {
            let _ = write!(description, "联系电话：{phone}。");
        }
    } else if roll < 15 {
        let _ = write!(description, "当事人身份证号{}。", p.id_number);
    }
}

fn version_in(rng: &mut Mix, window_days: i64) -> i64 {
    AS_OF_UNIX - rng.gen_range(3600..window_days * DAY)
}

fn date_yo(year: i32, doy: u32) -> NaiveDate {
    NaiveDate::from_yo_opt(year, doy.clamp(1, 365))
        .expect("day 1..=365 exists in every year chrono supports")
}

fn age_at(birth: NaiveDate, at: NaiveDate) -> u32 {
    let mut age = at.year() - birth.year();
    if (at.month(), at.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age.max(0) as u32
}

const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn compound_name(serial: usize, offset: usize) -> String {
    let n = COMPOUND_PREFIXES.len() * COMPOUND_SUFFIXES.len();
    // 7 is coprime with n (= 200), so this visits every (prefix, suffix) pair once.
    let j = (serial * 7 + offset) % n;
    let p = j % COMPOUND_PREFIXES.len();
    let q = j / COMPOUND_PREFIXES.len();
    let s = (q + p) % COMPOUND_SUFFIXES.len();
    format!("{}{}", COMPOUND_PREFIXES[p], COMPOUND_SUFFIXES[s])
}

fn beijing_address(region: (&str, &str), rng: &mut Mix) -> String {
    let streets: &[&str] = match region.0 {
        "110101" => &["东华门街道", "景山街道", "交道口街道", "和平里街道"],
        "110102" => &["西长安街街道", "新街口街道", "德胜街道", "展览路街道"],
        "110106" => &["右安门街道", "太平桥街道", "丰台街道"],
        "110107" => &["八宝山街道", "古城街道"],
        "110108" => &["中关村街道", "学院路街道", "万寿路街道", "羊坊店街道"],
        "110112" => &["中仓街道", "新华街道"],
        "110114" => &["城北街道", "回龙观街道"],
        _ => &[
            "团结湖街道",
            "三里屯街道",
            "和平街街道",
            "酒仙桥街道",
            "麦子店街道",
        ],
    };
    format!(
        "北京市{}{}{}{}{}号楼{}单元{}{:02}",
        region.1,
        pick(streets, rng),
        pick(COMPOUND_PREFIXES, rng),
        pick(&["里", "北里", "南里", "西里", "东里", "小区"], rng),
        rng.gen_range(1..=30),
        rng.gen_range(1..=4),
        rng.gen_range(1..=6),
        rng.gen_range(1..=3)
    )
}

fn rural_address(region: (&str, &str), rng: &mut Mix) -> String {
    format!(
        "{}{}{}{}号",
        region.1,
        pick(TOWNS, rng),
        pick(VILLAGES, rng),
        rng.gen_range(1..=300)
    )
}

fn traditional(name: &str) -> Option<String> {
    let mut changed = false;
    let s: String = name
        .chars()
        .map(|c| match chinese_text::hanzi::traditional(c) {
            Some(t) => {
                changed = true;
                t
            }
            None => c,
        })
        .collect();
    changed.then_some(s)
}

// --------------------------------------------------------------------------------------
// Data tables
// --------------------------------------------------------------------------------------

const DEPT_TAGS: [&[&str]; 6] = [
    &["户籍人口", "流动人口", "人户分离"],
    &["低保", "低收入", "独居老人", "空巢老人", "高龄老人", "残疾"],
    &["慢性病", "孕产妇", "严重精神障碍"],
    &["社区矫正", "刑满释放"],
    &[],
    &[],
];

#[rustfmt::skip]
const CHINESE_NUMERALS: [&str; 16] = [
    "一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二", "十三", "十四", "十五", "十六",
];

#[rustfmt::skip]
const COMMUNITY_NAMES: &[&str] = &[
    "幸福里", "花家地北里", "南湖东园", "望花路东里", "宝星园", "利泽西园", "方舟苑", "湖光", "季景", "大西洋新城", "夏都家园", "南湖西里",
];

#[rustfmt::skip]
const COMPOUND_PREFIXES: &[&str] = &[
    "阳光", "和平", "华彩", "金隅", "锦绣", "望湖", "嘉和", "融科", "星源", "康桥", "丽景", "碧水", "清河", "东湖", "安泰", "瑞祥", "翠微", "春晓", "银河", "龙湖",
];

#[rustfmt::skip]
const COMPOUND_SUFFIXES: &[&str] = &[
    "嘉园", "家园", "花园", "新城", "公寓", "雅苑", "佳苑", "小区", "新村", "华庭",
];

#[rustfmt::skip]
const GRID_WORKER_GIVEN: &[&str] = &[
    "晓燕", "建华", "丽娟", "海涛", "春梅", "志强", "秀芳", "明", "静", "磊", "红霞", "立新",
];

const SURNAMES_TOP: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "孙", "马", "周"];

/// Surnames with weights per 100,000 persons (national frequencies, rounded), including
/// compound surnames and surnames with tricky readings.
#[rustfmt::skip]
const SURNAMES: &[(&str, u32)] = &[
    ("王", 7100), ("李", 7000), ("张", 6700), ("刘", 5400), ("陈", 4600), ("杨", 3100), ("黄", 2300), ("赵", 2200),
    ("吴", 2000), ("周", 1900), ("徐", 1600), ("孙", 1500), ("马", 1400), ("朱", 1300), ("胡", 1200), ("郭", 1200),
    ("何", 1100), ("林", 1000), ("高", 1000), ("罗", 900), ("郑", 900), ("梁", 850), ("谢", 700), ("宋", 700),
    ("唐", 650), ("许", 650), ("韩", 630), ("冯", 600), ("邓", 600), ("曹", 580), ("彭", 560), ("曾", 550),
    ("肖", 530), ("田", 520), ("董", 510), ("袁", 500), ("潘", 490), ("于", 480), ("蒋", 470), ("蔡", 460),
    ("余", 450), ("杜", 440), ("叶", 430), ("程", 420), ("苏", 410), ("魏", 400), ("吕", 390), ("丁", 380),
    ("任", 370), ("沈", 360), ("姚", 350), ("卢", 340), ("姜", 330), ("崔", 320), ("钟", 310), ("谭", 300),
    ("陆", 290), ("汪", 280), ("范", 270), ("金", 270), ("石", 260), ("廖", 250), ("贾", 250), ("夏", 240),
    ("韦", 240), ("付", 230), ("方", 230), ("白", 220), ("邹", 220), ("孟", 210), ("熊", 210), ("秦", 200),
    ("邱", 200), ("江", 190), ("尹", 190), ("薛", 180), ("闫", 180), ("段", 170), ("雷", 170), ("侯", 160),
    ("龙", 160), ("史", 150), ("陶", 150), ("黎", 140), ("贺", 140), ("顾", 130), ("毛", 130), ("郝", 130),
    ("龚", 120), ("邵", 120), ("万", 110), ("钱", 110), ("严", 110), ("覃", 100), ("武", 100), ("戴", 100),
    ("莫", 90), ("孔", 90), ("向", 90), ("汤", 90), ("常", 90), ("温", 80), ("康", 80), ("施", 80),
    ("文", 80), ("牛", 80), ("樊", 80), ("葛", 70), ("邢", 70), ("安", 70), ("齐", 70), ("易", 70),
    ("乔", 70), ("伍", 60), ("庞", 60), ("颜", 60), ("倪", 60), ("庄", 60), ("聂", 60), ("章", 60),
    ("鲁", 50), ("岳", 50), ("翟", 50), ("殷", 50), ("詹", 50), ("申", 50), ("耿", 50), ("关", 50),
    ("兰", 40), ("焦", 40), ("俞", 40), ("左", 40), ("柳", 40), ("甘", 40), ("祝", 40), ("包", 40),
    ("宁", 40), ("尚", 40), ("符", 40), ("舒", 40), ("阮", 30), ("柯", 30), ("纪", 30), ("梅", 30),
    ("童", 30), ("凌", 30), ("毕", 30), ("季", 30), ("裴", 30), ("霍", 30), ("涂", 30), ("成", 30),
    ("苗", 30), ("谷", 30), ("盛", 30), ("曲", 30), ("翁", 30), ("冉", 20), ("骆", 20), ("蓝", 20),
    ("路", 20), ("游", 20), ("辛", 20), ("靳", 20), ("管", 20), ("柴", 20), ("鲍", 20), ("华", 20),
    ("喻", 20), ("祁", 20), ("房", 20), ("滕", 20), ("屈", 20), ("饶", 20), ("牟", 20), ("艾", 20),
    ("尤", 20), ("时", 20), ("穆", 20), ("司", 20), ("卓", 20), ("吉", 20), ("车", 20), ("项", 20),
    ("连", 20), ("佟", 15), ("关", 15), ("那", 10), ("富", 10), ("赫", 10), ("爱新觉罗", 2),
    // Compound surnames and surnames whose surname reading differs from the usual one.
    ("欧阳", 30), ("司马", 5), ("诸葛", 4), ("上官", 4), ("单", 30), ("解", 20), ("仇", 10), ("区", 5),
    ("朴", 15), ("查", 10),
];

const OLD_MALE: &str = "建国 建军 国强 国庆 志强 志刚 德明 德胜 振华 振国 保国 卫东 卫国 福贵 长林 永福 永胜 宝山 金生 文华 玉林 树森 连生 春生 占山 凤山 庆祥 广福 秀山 宝林 德才 文斌 胜利 解放 跃进";
const OLD_FEMALE: &str = "秀英 桂英 秀兰 玉兰 桂兰 淑珍 淑兰 凤英 玉英 玉珍 秀珍 桂芳 淑华 凤兰 素芬 秀芳 桂珍 玉梅 翠兰 秀云 兰英 凤芝 淑英 素珍 金凤 玉芬 秀荣 桂荣 丽华 桂香 淑琴 秀琴";
const MID_MALE: &str = "伟 强 磊 军 勇 杰 涛 明 超 刚 平 辉 鹏 华 飞 斌 波 宇 浩 凯 健 俊 帆 亮 峰 鑫 东 林 海 龙 晓 建 志 文 永 新 春 立 国 彬 斌 宏 刚 旭";
const MID_FEMALE: &str = "芳 娜 敏 静 丽 艳 娟 霞 燕 玲 红 梅 琳 雪 婷 慧 颖 洁 萍 倩 丹 琴 晶 莉 蕾 晓 玉 春 秀 凤 桂 红 英 华 欣 璐 微";
const YOUNG_MALE: &str = "子 梓 浩 宇 轩 博 文 俊 睿 泽 天 一 铭 杰 嘉 晨 思 皓 然 宸 逸 航 昊 煜 辰 鑫 鹏 磊 阳 凯 奕 恒 瑞 志 明 哲 锦 楷 诚 翔";
const YOUNG_FEMALE: &str = "子 梓 欣 怡 涵 萱 雨 诗 可 馨 佳 琪 一 诺 婷 悦 妍 琳 雅 晨 思 若 语 梦 菲 彤 雪 心 依 嘉 紫 艺 晓 文 月 颖 桐 瑶";
const YOUNG_MALE_FULL: &str =
    "子轩 浩宇 浩然 宇轩 梓睿 一鸣 俊熙 子豪 皓轩 明轩 博文 天佑 思远 宇航 梓豪";
const YOUNG_FEMALE_FULL: &str =
    "梓涵 一诺 欣怡 雨桐 梓萱 子涵 诗涵 可馨 紫涵 思彤 佳怡 若汐 语桐 欣妍 雨萱";

const ETHNICITIES: &[(&str, &str, u32)] = &[
    ("汉族", "", 9500),
    ("满族", "", 200),
    ("回族", "", 180),
    ("蒙古族", "", 40),
    ("朝鲜族", "", 20),
    ("土家族", "", 15),
    ("壮族", "", 15),
    ("苗族", "", 10),
    ("维吾尔族", "", 5),
    ("藏族", "", 5),
];

/// Beijing districts (ID region of registered residents born elsewhere in the city and
/// hukou of 人户分离 residents).
const BEIJING_REGIONS: &[(&str, &str, u32)] = &[
    ("110105", "朝阳区", 30),
    ("110101", "东城区", 12),
    ("110102", "西城区", 14),
    ("110106", "丰台区", 12),
    ("110107", "石景山区", 5),
    ("110108", "海淀区", 15),
    ("110112", "通州区", 6),
    ("110114", "昌平区", 6),
];

/// Home regions of the floating population, weighted by their share in Beijing.
const PROVINCE_REGIONS: &[(&str, &str, u32)] = &[
    ("130102", "河北省石家庄市长安区", 30),
    ("130104", "河北省石家庄市桥西区", 20),
    ("130203", "河北省唐山市路北区", 20),
    ("130602", "河北省保定市竞秀区", 30),
    ("130681", "河北省保定市涿州市", 20),
    ("130702", "河北省张家口市桥东区", 15),
    ("131002", "河北省廊坊市安次区", 20),
    ("131082", "河北省廊坊市三河市", 20),
    ("130902", "河北省沧州市新华区", 15),
    ("131102", "河北省衡水市桃城区", 15),
    ("130402", "河北省邯郸市邯山区", 15),
    ("410102", "河南省郑州市中原区", 20),
    ("410105", "河南省郑州市金水区", 20),
    ("410302", "河南省洛阳市老城区", 10),
    ("411302", "河南省南阳市宛城区", 15),
    ("411602", "河南省周口市川汇区", 20),
    ("411402", "河南省商丘市梁园区", 15),
    ("410702", "河南省新乡市红旗区", 10),
    ("411702", "河南省驻马店市驿城区", 15),
    ("370102", "山东省济南市历下区", 15),
    ("370202", "山东省青岛市市南区", 10),
    ("371302", "山东省临沂市兰山区", 15),
    ("370702", "山东省潍坊市潍城区", 10),
    ("371402", "山东省德州市德城区", 15),
    ("340102", "安徽省合肥市瑶海区", 15),
    ("341302", "安徽省宿州市埇桥区", 15),
    ("341202", "安徽省阜阳市颍州区", 15),
    ("230102", "黑龙江省哈尔滨市道里区", 20),
    ("230202", "黑龙江省齐齐哈尔市龙沙区", 10),
    ("140105", "山西省太原市小店区", 15),
    ("140213", "山西省大同市平城区", 10),
    ("420102", "湖北省武汉市江岸区", 15),
    ("421002", "湖北省荆州市沙市区", 10),
    ("510104", "四川省成都市锦江区", 15),
    ("511302", "四川省南充市顺庆区", 10),
    ("150102", "内蒙古自治区呼和浩特市新城区", 10),
    ("150203", "内蒙古自治区包头市昆都仑区", 10),
    ("210102", "辽宁省沈阳市和平区", 10),
    ("210202", "辽宁省大连市中山区", 5),
    ("220102", "吉林省长春市南关区", 10),
    ("320102", "江苏省南京市玄武区", 5),
    ("320311", "江苏省徐州市泉山区", 10),
    ("430102", "湖南省长沙市芙蓉区", 10),
    ("120101", "天津市和平区", 10),
    ("120104", "天津市南开区", 10),
    ("360102", "江西省南昌市东湖区", 10),
    ("610102", "陕西省西安市新城区", 10),
    ("620102", "甘肃省兰州市城关区", 5),
    ("330102", "浙江省杭州市上城区", 5),
    ("440103", "广东省广州市荔湾区", 5),
    ("500103", "重庆市渝中区", 5),
    ("350102", "福建省福州市鼓楼区", 5),
];

#[rustfmt::skip]
const TOWNS: &[&str] = &[
    "城关镇", "新华街道", "东关街道", "北关镇", "李庄镇", "王庄乡", "高庄镇", "柳林镇", "石桥镇", "杨集镇",
];

#[rustfmt::skip]
const VILLAGES: &[&str] = &[
    "东村", "西村", "前进村", "红星村", "张庄村", "李家营村", "王家屯村", "后街村", "南关村", "北街村",
];

#[rustfmt::skip]
const MOBILE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "145", "147", "150", "151",
    "152", "153", "155", "156", "157", "158", "159", "166", "170", "171", "173", "175", "176", "177",
    "178", "180", "181", "182", "183", "184", "185", "186", "187", "188", "189", "191", "198", "199",
];

#[rustfmt::skip]
const CHRONIC: &[&str] = &[
    "高血压", "高血压", "高血压", "糖尿病", "糖尿病", "冠心病", "慢阻肺", "脑卒中", "慢性肾病",
];
const CHRONIC_YOUNG: &[&str] = &["哮喘", "糖尿病", "癫痫", "高血压"];
#[rustfmt::skip]
const MENTAL: &[&str] = &[
    "精神分裂症", "双相情感障碍", "偏执性精神病", "分裂情感性障碍",
];
#[rustfmt::skip]
const DISABILITY_TYPES: &[&str] = &[
    "肢体残疾", "视力残疾", "听力残疾", "言语残疾", "智力残疾", "精神残疾",
];
#[rustfmt::skip]
const CRIMES: &[&str] = &[
    "危险驾驶罪", "盗窃罪", "诈骗罪", "故意伤害罪", "寻衅滋事罪", "交通肇事罪", "开设赌场罪",
];

fn sifa_attributes(o: &mut Obj, tags: &[&str], rng: &mut Mix) {
    o.str("crime", pick(CRIMES, rng));
    if tags.contains(&"社区矫正") {
        o.str(
            "correction_type",
            pick(&["缓刑", "缓刑", "缓刑", "假释", "暂予监外执行"], rng),
        );
        let start = AS_OF_DAYS - rng.gen_range(30..=700);
        o.date_days("correction_start", start);
        o.date_days("correction_end", start + rng.gen_range(180..=1100));
    } else {
        o.date_days("release_date", AS_OF_DAYS - rng.gen_range(30..=1800));
        o.str(
            "placement",
            pick(&["已安置", "已安置", "待安置", "自谋职业"], rng),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn world(n: usize) -> DemoWorld {
        DemoWorld::new(DemoConfig {
            residents: n,
            ..DemoConfig::default()
        })
    }

    fn lines(s: &str) -> Vec<Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn is_bad(v: &Value) -> bool {
        v["attributes"].get(DEFECT_KEY).is_some()
    }

    #[test]
    fn the_demo_dictionary_holds_the_street_and_every_community() {
        let words = chinese_text::segment::parse_user_dictionary(crate::USER_DICTIONARY).unwrap();
        let has = |w: &str| words.iter().any(|u| u.word == w);
        assert!(has(STREET_NAME));
        for name in COMMUNITY_NAMES {
            assert!(has(name), "{name} is missing from demo/user-dictionary.txt");
        }
    }

    #[test]
    fn known_check_digits() {
        assert!(id_checksum_ok("11010519491231002X"));
        assert_eq!(
            upgrade_legacy_id("110105491231002").as_deref(),
            Some("11010519491231002X")
        );
        assert_eq!(
            legacy_id("11010519491231002X").as_deref(),
            Some("110105491231002")
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(AS_OF_DAYS), (2026, 11, 1));
        let as_of = chrono::DateTime::parse_from_rfc3339(AS_OF).unwrap();
        assert_eq!(as_of.timestamp(), AS_OF_UNIX);
    }

    #[test]
    fn world_is_shareable_and_edges_are_safe() {
        fn shareable<T: Send + Sync>() {}
        shareable::<DemoWorld>();
        let empty = world(0);
        assert_eq!(empty.ndjson("gongan", 0..10), "");
        assert_eq!(empty.person(0).index, 0);
        let w = world(10);
        let reversed = Range { start: 5, end: 3 };
        assert_eq!(w.ndjson("gongan", reversed), "");
        assert_eq!(w.ndjson("gongan", 0..1_000), w.ndjson("gongan", 0..10));
    }

    #[test]
    fn number_formatting() {
        for (v, w) in [
            (0u64, 1),
            (7, 1),
            (42, 1),
            (123, 1),
            (5, 2),
            (99, 2),
            (7, 3),
            (998, 3),
            (1949, 4),
            (7, 4),
            (12345, 4),
            (123, 8),
            (99_999_999, 8),
            (123_456_789, 8),
            (42, 12),
        ] {
            let mut s = String::new();
            push_num(&mut s, v, w);
            assert_eq!(s, format!("{v:0w$}"), "{v} {w}");
        }
    }

    #[test]
    fn divisions() {
        let w = world(1000);
        let c = w.communities();
        assert!((6..=10).contains(&c.len()));
        assert!(c
            .iter()
            .all(|c| c.len() == 12 && c.starts_with(STREET_CODE)));
        let g = w.grids();
        assert!(g.len() >= 3 * c.len() && g.len() <= 8 * c.len());
        assert!(g
            .iter()
            .all(|g| g.len() == 15 && c.iter().any(|c| g.starts_with(c.as_str()))));
    }

    #[test]
    fn persons_have_valid_unique_ids() {
        let w = world(20_000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..w.residents() {
            let p = w.person(i);
            assert_eq!(p.index, i);
            let id = &p.id_number;
            assert!(id_checksum_ok(id), "{id}");
            let b = p.birth_date;
            assert_eq!(
                &id[6..14],
                format!("{:04}{:02}{:02}", b.year(), b.month(), b.day())
            );
            let seq: u32 = id[14..17].parse().unwrap();
            assert_eq!(seq % 2 == 1, p.gender == "male", "{id} {}", p.gender);
            assert!(b <= w.as_of && p.age <= 105);
            assert!(seen.insert(id.clone()), "duplicate {id}");
            if let Some(legacy) = &p.legacy_id_number {
                assert!(b.year() < 1999);
                assert_eq!(upgrade_legacy_id(legacy).as_deref(), Some(id.as_str()));
            } else {
                assert!(b.year() >= 1999);
            }
            if let Some(phone) = &p.phone {
                let mobile = phone.len() == 11
                    && phone.starts_with('1')
                    && (b'3'..=b'9').contains(&phone.as_bytes()[1])
                    && phone.bytes().all(|c| c.is_ascii_digit());
                let land = phone.len() == 12
                    && phone.starts_with("010-")
                    && phone[4..].bytes().all(|c| c.is_ascii_digit());
                assert!(mobile || land, "{phone}");
            }
            assert!(w.grids().contains(&p.grid));
            assert!(p.household.contains(&i));
        }
    }

    #[test]
    fn unique_ids_beyond_one_epoch() {
        let w = world(400_000);
        let mut seen = std::collections::HashSet::new();
        for i in (0..400_000).step_by(7) {
            // Indices congruent modulo ID_SPACE are the only candidates for collisions.
            for j in [i, (i + ID_SPACE as usize) % 400_000] {
                let p = w.person(j);
                assert!(id_checksum_ok(&p.id_number));
                seen.insert((j, p.id_number));
            }
        }
        let ids: std::collections::HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
        let indices: std::collections::HashSet<_> = seen.iter().map(|(j, _)| *j).collect();
        assert_eq!(ids.len(), indices.len());
    }

    #[test]
    fn every_line_is_valid_json_with_required_fields() {
        let w = world(5_000);
        let grids = w.grids();
        let mut organizations = 0;
        for dept in DEPARTMENTS {
            let out = w.ndjson(dept, 0..5_000);
            assert!(out.ends_with('\n'));
            let mut prefix_ok = 0;
            for v in lines(&out) {
                let kind = v["kind"].as_str().unwrap();
                if !is_bad(&v) {
                    let sid = v["source_id"].as_str().unwrap();
                    let prefix = match dept {
                        "gongan" => "GA-",
                        "minzheng" => "MZ-",
                        "weijian" => "WJ-",
                        "sifa" => "SF-",
                        "zhujian" => "ZJ-",
                        _ => "WG-",
                    };
                    assert!(sid.starts_with(prefix), "{sid}");
                    prefix_ok += 1;
                    // An organization comes with its address only: the broker derives the grid.
                    if kind != "organization" {
                        assert!(grids.contains(&v["grid"].as_str().unwrap().to_string()));
                    }
                }
                chrono::DateTime::parse_from_rfc3339(v["version"].as_str().unwrap()).unwrap();
                assert!(v["attributes"].is_object());
                match kind {
                    "resident" => {
                        for f in ["id_number", "name", "gender", "birth_date", "address"] {
                            assert!(v[f].is_string(), "{f} in {v}");
                        }
                        assert!(v["tags"].as_array().is_some_and(|t| !t.is_empty()));
                        let id = v["id_number"].as_str().unwrap();
                        if !is_bad(&v) {
                            let full = if id.len() == 15 {
                                upgrade_legacy_id(id).unwrap()
                            } else {
                                id.to_string()
                            };
                            assert!(id_checksum_ok(&full), "{id}");
                            let b = v["birth_date"].as_str().unwrap().replace('-', "");
                            assert_eq!(&full[6..14], b);
                        }
                        if dept == "gongan" {
                            assert!(v["house_source_id"].as_str().unwrap().starts_with("ZJ-"));
                            assert!(v["hukou_address"].is_string());
                        }
                    }
                    "house" => {
                        assert!(v["address"]
                            .as_str()
                            .unwrap()
                            .starts_with("北京市朝阳区望京街道"));
                        assert!(["own", "rental", "group_rental", "vacant"]
                            .contains(&v["usage"].as_str().unwrap()));
                        assert!(v["attributes"]["area_m2"].is_f64());
                    }
                    "event" => {
                        for f in ["type", "title", "description", "address", "status"] {
                            assert!(v[f].is_string(), "{f} in {v}");
                        }
                        chrono::DateTime::parse_from_rfc3339(v["occurred_at"].as_str().unwrap())
                            .unwrap();
                        let parties = v["party_id_numbers"].as_array().unwrap();
                        assert!(!parties.is_empty());
                        for p in parties {
                            let id = p.as_str().unwrap();
                            let full = if id.len() == 15 {
                                upgrade_legacy_id(id).unwrap()
                            } else {
                                id.to_string()
                            };
                            assert!(id_checksum_ok(&full));
                        }
                    }
                    "organization" => {
                        model::Uscc::parse(v["uscc"].as_str().unwrap()).unwrap();
                        assert!(id_checksum_ok(v["legal_rep_id_number"].as_str().unwrap()));
                        assert!(v["name"].as_str().unwrap().contains('记'), "{v}");
                        assert!(v["address"]
                            .as_str()
                            .unwrap()
                            .starts_with("北京市朝阳区望京街道"));
                        assert!(v.get("grid").is_none(), "{v}");
                        organizations += 1;
                    }
                    other => panic!("kind {other}"),
                }
            }
            assert!(prefix_ok > 0, "{dept} published nothing");
        }
        // About one household in 25 runs a registered business.
        assert!((20..=150).contains(&organizations), "{organizations}");
    }

    #[test]
    fn deterministic_and_range_independent() {
        let a = world(3_000);
        let b = world(3_000);
        for dept in DEPARTMENTS {
            let whole = a.ndjson(dept, 0..3_000);
            assert_eq!(whole, b.ndjson(dept, 0..3_000));
            let mut parts = String::new();
            for r in [
                0..100,
                100..200,
                200..1_337,
                1_337..2_999,
                2_999..3_000,
                3_000..5_000,
            ] {
                parts.push_str(&a.ndjson(dept, r));
            }
            assert_eq!(whole, parts, "{dept}");
            assert_eq!(
                a.ndjson(dept, 0..200),
                format!("{}{}", a.ndjson(dept, 0..100), a.ndjson(dept, 100..200))
            );
        }
        let all = a.ndjson_all(250..2_750);
        for (d, dept) in DEPARTMENTS.iter().enumerate() {
            assert_eq!(all[d], a.ndjson(dept, 250..2_750), "{dept}");
        }
        assert_eq!(a.ndjson("chengguan", 0..3_000), "");
        let other = DemoWorld::new(DemoConfig {
            residents: 3_000,
            seed: 7,
            ..DemoConfig::default()
        });
        assert_ne!(a.ndjson("gongan", 0..100), other.ndjson("gongan", 0..100));
    }

    #[test]
    fn houses_once_and_referenced() {
        let w = world(10_000);
        let mut houses = std::collections::HashMap::new();
        for r in [0..3_333, 3_333..10_000] {
            for v in lines(&w.ndjson("zhujian", r)) {
                if let Some(sid) = v["source_id"].as_str() {
                    let prev =
                        houses.insert(sid.to_string(), v["address"].as_str().unwrap().to_string());
                    assert!(prev.is_none(), "house {sid} emitted twice");
                }
            }
        }
        let addresses: std::collections::HashSet<_> = houses.values().collect();
        assert_eq!(addresses.len(), houses.len(), "two houses share an address");
        let mut occupants = 0usize;
        for v in lines(&w.ndjson("gongan", 0..10_000)) {
            if is_bad(&v) {
                continue;
            }
            let h = v["house_source_id"].as_str().unwrap();
            // A house whose own record is bad (missing source id) is not in the map.
            if let Some(addr) = houses.get(h) {
                assert_eq!(addr, v["address"].as_str().unwrap());
                occupants += 1;
            }
        }
        let ratio = occupants as f64 / houses.len() as f64;
        assert!((2.0..3.0).contains(&ratio), "persons per house {ratio}");
    }

    #[test]
    fn bad_records_are_counted_and_bad() {
        let w = DemoWorld::new(DemoConfig {
            residents: 20_000,
            bad_record_rate: 0.02,
            ..DemoConfig::default()
        });
        let grids = w.grids();
        let mut total = 0;
        for dept in DEPARTMENTS {
            let out = w.ndjson(dept, 0..20_000);
            let mut bad = 0;
            for v in lines(&out) {
                let broken_id = v["id_number"]
                    .as_str()
                    .is_some_and(|id| id.len() == 18 && !id_checksum_ok(id));
                let broken_grid = v["kind"] != "organization"
                    && !grids.contains(&v["grid"].as_str().unwrap().to_string());
                let missing = v.get("source_id").is_none();
                let actually_bad = broken_id || broken_grid || missing;
                assert_eq!(actually_bad, is_bad(&v), "{v}");
                bad += usize::from(actually_bad);
            }
            assert_eq!(bad, w.bad_records(dept, 0..20_000), "{dept}");
            total += bad;
        }
        assert!(total > 100, "{total}");
        let none = DemoWorld::new(DemoConfig {
            residents: 2_000,
            bad_record_rate: 0.0,
            ..DemoConfig::default()
        });
        assert!(DEPARTMENTS
            .iter()
            .all(|d| none.bad_records(d, 0..2_000) == 0));
    }

    #[test]
    fn realistic_shares() {
        let n = 20_000;
        let w = world(n);
        let mut surnames: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut elderly = 0;
        let mut minors = 0;
        for i in 0..n {
            let p = w.person(i);
            *surnames.entry(p.surname).or_default() += 1;
            elderly += usize::from(p.age >= 60);
            minors += usize::from(p.age < 18);
            assert!(p.name.starts_with(p.surname));
        }
        let mut ranked: Vec<_> = surnames.into_iter().collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
        let top3: Vec<&str> = ranked.iter().take(3).map(|r| r.0).collect();
        for s in ["王", "李", "张"] {
            assert!(top3.contains(&s), "{top3:?}");
        }
        assert!(
            ranked.iter().any(|r| r.0.chars().count() == 2),
            "no compound surname"
        );
        let share = |d: &str| {
            lines(&w.ndjson(d, 0..n))
                .iter()
                .filter(|v| v["kind"] == "resident")
                .count() as f64
                / n as f64
        };
        let (ga, mz, wj, sf) = (
            share("gongan"),
            share("minzheng"),
            share("weijian"),
            share("sifa"),
        );
        assert!((0.95..0.99).contains(&ga), "gongan {ga}");
        assert!((0.10..0.22).contains(&mz), "minzheng {mz}");
        assert!((0.08..0.18).contains(&wj), "weijian {wj}");
        assert!((0.003..0.03).contains(&sf), "sifa {sf}");
        let e = elderly as f64 / n as f64;
        let m = minors as f64 / n as f64;
        assert!((0.15..0.32).contains(&e), "elderly {e}");
        assert!((0.08..0.25).contains(&m), "minors {m}");
    }

    #[test]
    fn departments_disagree_realistically() {
        let n = 20_000;
        let w = world(n);
        let out = lines(&w.ndjson("minzheng", 0..n));
        let mut legacy = 0;
        let mut moved_or_styled = 0;
        let mut name_variant = 0;
        for v in &out {
            let i: usize = v["source_id"]
                .as_str()
                .map_or(0, |s| s[3..].parse::<usize>().unwrap() - 1);
            let p = w.person(i);
            legacy += usize::from(v["id_number"].as_str().unwrap().len() == 15);
            moved_or_styled += usize::from(v["address"].as_str().unwrap() != p.address);
            name_variant += usize::from(v["name"].as_str().unwrap() != p.name);
        }
        assert!(legacy > out.len() / 10, "{legacy}");
        assert!(moved_or_styled > out.len() / 5);
        assert!(name_variant > 0);
    }
}
