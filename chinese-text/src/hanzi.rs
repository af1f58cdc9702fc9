//! Chinese-name text for linkage: folded names, pinyin readings with surname overrides, and
//! the homophone tables the evaluation corrupts names with.
//!
//! Guarantees:
//! - [`fold_name`], [`simplified`], [`traditional`] and [`surname_len`] are the crate's one
//!   folding and one surname table ([`crate::fold`], [`crate::surnames`]), so linkage keys
//!   agree with search and masking.
//! - [`name_readings`] gives every dictionary reading of each character (at most
//!   [`MAX_READINGS`]), except that a surname with its own reading in the surname table gets
//!   only that reading (单 is `shan`, never `dan`). The first reading of each character is the
//!   one used for Jaro–Winkler, initials and blocking keys.
//! - A [`Syllable`] packs one toneless reading (`ü` written `v`, at most 6 letters) into a
//!   `u32`; packing is injective, so equal syllables are equal readings.

pub use crate::fold::{fold_name, simplified, traditional};
use crate::reading::readings;
pub use crate::surnames::surname_len;
use crate::surnames::surname_reading;

/// Most readings kept per character (the rest are rare literary readings).
pub const MAX_READINGS: usize = 4;

/// One toneless pinyin syllable packed base 27 (`a` = 1 … `z` = 26, `ü` as `v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Syllable(u32);

impl Syllable {
    /// Packs a toneless reading; `None` if it has a non-letter or more than 6 letters.
    pub fn pack(reading: &str) -> Option<Syllable> {
        let mut value = 0u32;
        let mut scale = 1u32;
        let mut letters = 0;
        for c in reading.chars() {
            let c = if c == 'ü' {
                'v'
            } else {
                c.to_ascii_lowercase()
            };
            if !c.is_ascii_lowercase() || letters == 6 {
                return None;
            }
            value += (c as u32 - 'a' as u32 + 1) * scale;
            scale = scale.saturating_mul(27);
            letters += 1;
        }
        (letters > 0).then_some(Syllable(value))
    }

    /// The reading as letters (`ü` written `v`).
    pub fn letters(self) -> String {
        let mut out = String::with_capacity(6);
        let mut value = self.0;
        while value > 0 {
            let digit = value % 27;
            value /= 27;
            if let Some(c) = char::from_u32('a' as u32 + digit.saturating_sub(1)) {
                out.push(c);
            }
        }
        out
    }

    /// The reading with the usual regional confusions folded away: zh/ch/sh as z/c/s, l as
    /// n and f as h at the start, -ng as -n at the end, -ui as -ei (so `lin`/`ling`,
    /// `lan`/`nan`, `hui`/`fei` fold alike).
    pub fn fuzzy(self) -> Syllable {
        let letters = self.letters();
        let mut text = letters.as_str();
        let mut out = String::with_capacity(6);
        for (long, short) in [
            ("zh", "z"),
            ("ch", "c"),
            ("sh", "s"),
            ("l", "n"),
            ("f", "h"),
        ] {
            if let Some(rest) = text.strip_prefix(long) {
                out.push_str(short);
                text = rest;
                break;
            }
        }
        let text = text
            .strip_suffix('g')
            .filter(|t| t.ends_with('n'))
            .unwrap_or(text);
        match text.strip_suffix("ui") {
            Some(head) => {
                out.push_str(head);
                out.push_str("ei");
            }
            None => out.push_str(text),
        }
        Syllable::pack(&out).unwrap_or(self)
    }

    /// First letter of the reading.
    pub fn initial(self) -> u8 {
        // Lowest base-27 digit is the first letter; 0 never occurs in a packed syllable.
        (self.0 % 27) as u8 + b'a' - 1
    }
}

/// The readings of one character of a name, most likely first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharReadings {
    len: u8,
    readings: [Syllable; MAX_READINGS],
}

impl CharReadings {
    fn new() -> CharReadings {
        CharReadings {
            len: 0,
            readings: [Syllable(0); MAX_READINGS],
        }
    }

    fn push(&mut self, syllable: Syllable) {
        let len = usize::from(self.len);
        if len < MAX_READINGS && !self.as_slice().contains(&syllable) {
            self.readings[len] = syllable;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Syllable] {
        &self.readings[..usize::from(self.len)]
    }

    /// The reading used for Jaro–Winkler, initials and blocking.
    pub fn primary(&self) -> Option<Syllable> {
        self.as_slice().first().copied()
    }

    /// Whether the two characters share any reading.
    pub fn shares_reading(&self, other: &CharReadings) -> bool {
        self.as_slice().iter().any(|r| other.as_slice().contains(r))
    }
}

/// Readings of every character of a folded name, surname characters by the surname table.
/// A non-Chinese letter or digit reads as itself; other characters are skipped.
pub fn name_readings(name: &str) -> Vec<CharReadings> {
    let surname_chars = surname_len(name);
    let surname: String = name.chars().take(surname_chars).collect();
    let fixed = surname_reading(&surname);
    let mut out = Vec::with_capacity(name.chars().count());
    for (position, c) in name.chars().enumerate() {
        let mut char_readings = CharReadings::new();
        let overridden = fixed
            .and_then(|r| r.get(position))
            .filter(|_| position < surname_chars);
        if let Some(reading) = overridden {
            if let Some(s) = Syllable::pack(reading) {
                char_readings.push(s);
            }
        } else if c.is_ascii_alphanumeric() {
            if let Some(s) = Syllable::pack(&c.to_string()) {
                char_readings.push(s);
            }
        } else {
            for reading in readings(c) {
                if let Some(s) = Syllable::pack(&reading) {
                    char_readings.push(s);
                }
            }
        }
        if char_readings.len > 0 {
            out.push(char_readings);
        }
    }
    out
}

/// Given-name characters that share a reading (same pinyin, different character): what a
/// clerk types when writing down a name heard over the counter.
pub const HOMOPHONES: &[&[char]] = &[
    &['伟', '玮', '炜', '维', '薇'],
    &['丽', '莉', '俐', '立', '利'],
    &['静', '婧', '晶', '敬'],
    &['婷', '亭', '庭', '廷'],
    &['军', '君', '钧', '均'],
    &['明', '铭', '鸣', '名'],
    &['华', '桦', '骅', '花'],
    &['杰', '洁', '捷', '婕'],
    &['磊', '蕾', '垒'],
    &['涛', '韬', '滔'],
    &['芳', '方', '舫', '坊'],
    &['红', '宏', '鸿', '虹', '洪'],
    &['平', '萍', '苹', '屏'],
    &['燕', '艳', '雁', '彦'],
    &['刚', '钢', '纲'],
    &['峰', '锋', '丰', '枫', '风'],
    &['斌', '彬', '滨', '宾'],
    &['敏', '闵', '珉'],
    &['玲', '伶', '铃', '龄', '灵'],
    &['娟', '鹃'],
    &['霞', '侠', '夏'],
    &['建', '健', '剑', '坚'],
    &['志', '智', '治', '芝'],
    &['勇', '永', '咏', '涌'],
    &['辉', '晖', '徽', '慧'],
    &['晓', '筱', '小'],
    &['梅', '媚', '玫', '美'],
    &['兰', '岚', '澜', '蓝'],
    &['琳', '林', '霖', '麟'],
    &['宇', '雨', '语', '羽', '禹'],
    &['浩', '昊', '皓', '灏'],
    &['轩', '萱', '宣', '璇'],
    &['子', '紫', '梓', '姿'],
    &['涵', '晗', '寒', '含'],
    &['欣', '馨', '新', '昕', '鑫'],
    &['怡', '仪', '宜', '艺', '逸'],
    &['佳', '嘉', '家', '加'],
    &['俊', '骏', '峻', '君'],
    &['瑞', '睿', '锐'],
    &['泽', '择', '则'],
    &['雪', '学', '薛'],
    &['颖', '莹', '影', '英', '瑛'],
    &['玉', '钰', '昱', '煜', '宇'],
    &['文', '雯', '闻', '纹'],
    &['倩', '茜', '芊'],
    &['秀', '绣', '修'],
    &['强', '蔷', '墙'],
    &['娜', '纳', '那'],
    &['凤', '奉', '风'],
    &['云', '芸', '耘', '韵'],
    &['海', '亥'],
    &['国', '帼', '果'],
    &['东', '冬', '栋'],
    &['春', '椿'],
    &['丹', '单', '郸'],
    &['鹏', '朋', '彭'],
    &['飞', '菲', '非', '斐'],
    &['凯', '铠', '恺', '楷'],
    &['博', '波', '柏', '勃'],
    &['思', '斯', '丝', '司'],
    &['诗', '师', '施', '时'],
    &['晨', '辰', '臣', '尘'],
    &['宁', '凝'],
    &['超', '潮', '朝'],
    &['悦', '月', '越', '跃'],
    &['琪', '琦', '淇', '奇', '祺'],
];

/// Given-name characters that sound alike but differ in pinyin by one of the usual regional
/// confusions (n/l, zh/z, ch/c, sh/s, -n/-ng, f/h).
pub const NEAR_HOMOPHONES: &[(char, char)] = &[
    ('琳', '玲'),
    ('林', '灵'),
    ('斌', '兵'),
    ('敏', '明'),
    ('晨', '成'),
    ('振', '正'),
    ('新', '星'),
    ('芬', '峰'),
    ('南', '兰'),
    ('宁', '林'),
    ('思', '诗'),
    ('晶', '金'),
    ('琴', '晴'),
    ('帆', '芳'),
    ('珍', '正'),
    ('彬', '冰'),
    ('辉', '飞'),
    ('森', '生'),
    ('慈', '池'),
    ('增', '正'),
    ('赞', '展'),
    ('民', '明'),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn primary(name: &str) -> Vec<String> {
        name_readings(name)
            .iter()
            .map(|r| r.primary().unwrap().letters())
            .collect()
    }

    #[test]
    fn syllables_round_trip() {
        for reading in ["a", "zhuang", "lv", "shan", "er"] {
            assert_eq!(Syllable::pack(reading).unwrap().letters(), reading);
        }
        assert_eq!(Syllable::pack("lü").unwrap().letters(), "lv");
        assert_eq!(Syllable::pack("zhuang").unwrap().initial(), b'z');
        assert!(Syllable::pack("zhuangg").is_none());
        assert!(Syllable::pack("").is_none());
    }

    #[test]
    fn fuzzy_folds_regional_confusions() {
        let f = |a: &str| Syllable::pack(a).unwrap().fuzzy().letters();
        assert_eq!(f("ling"), f("nin"));
        assert_eq!(f("lan"), f("nan"));
        assert_eq!(f("hui"), f("fei"));
        assert_eq!(f("zhang"), f("zan"));
        assert_eq!(f("sheng"), f("sen"));
        assert_ne!(f("wang"), f("li"));
    }

    #[test]
    fn surname_readings_override_the_dictionary() {
        assert_eq!(primary("单雄信"), ["shan", "xiong", "xin"]);
        assert_eq!(primary("曾国藩"), ["zeng", "guo", "fan"]);
        assert_eq!(primary("解缙"), ["xie", "jin"]);
        assert_eq!(primary("仇英"), ["qiu", "ying"]);
        assert_eq!(primary("区志明"), ["ou", "zhi", "ming"]);
        assert_eq!(primary("朴槿"), ["piao", "jin"]);
        assert_eq!(primary("查良镛"), ["zha", "liang", "yong"]);
        assert_eq!(primary("尉迟恭"), ["yu", "chi", "gong"]);
        // The surname reading is the only one: 单 as a surname never reads `dan`.
        assert_eq!(name_readings("单伟")[0].as_slice().len(), 1);
        // The same character inside a given name keeps every reading.
        let given = name_readings("王单")[1];
        let all: Vec<String> = given.as_slice().iter().map(|s| s.letters()).collect();
        assert!(all.contains(&"dan".to_owned()) && all.contains(&"shan".to_owned()));
    }

    #[test]
    fn folding_is_idempotent_and_simplifies() {
        assert_eq!(fold_name(" 張 偉 "), "张伟");
        assert_eq!(fold_name("歐陽娜娜"), "欧阳娜娜");
        assert_eq!(fold_name("买买提·艾力"), "买买提艾力");
        assert_eq!(fold_name("ＪＯＨＮ Smith"), "johnsmith");
        assert_eq!(fold_name("王強"), fold_name("王强"));
        for c in "张刘陈杨黄赵吴孙马罗郑谢韩冯邓许伟丽军国华红兰凤强".chars()
        {
            let t = traditional(c).expect("a traditional form");
            assert_ne!(t, c);
            let folded = fold_name(&t.to_string());
            assert_eq!(folded, c.to_string());
            assert_eq!(fold_name(&folded), folded);
        }
        assert_eq!(surname_len("歐陽娜娜"), 2);
        assert_eq!(surname_len(&fold_name("歐陽娜娜")), 2);
        assert_eq!(surname_len("欧阳娜娜"), 2);
        assert_eq!(surname_len("欧阳"), 1);
        assert_eq!(surname_len("张三"), 1);
    }

    #[test]
    fn homophone_groups_share_a_reading() {
        for group in HOMOPHONES {
            let readings: Vec<CharReadings> = group
                .iter()
                .map(|c| name_readings(&format!("王{c}"))[1])
                .collect();
            for (i, a) in readings.iter().enumerate() {
                for b in &readings[i + 1..] {
                    assert!(a.shares_reading(b), "{group:?} do not share a reading");
                }
            }
        }
    }

    #[test]
    fn near_homophones_do_not_share_a_reading() {
        for (a, b) in NEAR_HOMOPHONES {
            let ra = name_readings(&format!("王{a}"))[1];
            let rb = name_readings(&format!("王{b}"))[1];
            assert!(!ra.shares_reading(&rb), "{a}{b} share a reading");
        }
    }
}
