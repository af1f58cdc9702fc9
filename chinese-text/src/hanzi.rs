//! Chinese-name text for linkage: traditional -> simplified folding of name characters,
//! pinyin readings with surname overrides, and the homophone tables the evaluation corrupts
//! names with.
//!
//! Guarantees:
//! - [`fold_name`] is idempotent, drops whitespace and name separators (`·`), folds full-width
//!   Latin to ASCII lowercase, and maps every traditional character of [`TRADITIONAL`] to its
//!   simplified form; any other character is kept as it is.
//! - [`name_readings`] gives every dictionary reading of each character (at most
//!   [`MAX_READINGS`]), except that a surname character in [`SURNAME_READINGS`] gets only its
//!   surname reading (单 is `shan`, never `dan`). The first reading of each character is the
//!   one used for Jaro–Winkler, initials and blocking keys.
//! - A [`Syllable`] packs one toneless reading (`ü` written `v`, at most 6 letters) into a
//!   `u32`; packing is injective, so equal syllables are equal readings.

use std::collections::HashMap;
use std::sync::OnceLock;

use pinyin::ToPinyinMulti;

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

/// Normalises a name as departments write it: whitespace and separators dropped,
/// traditional name characters folded to simplified, full-width Latin to ASCII lowercase.
pub fn fold_name(name: &str) -> String {
    let table = traditional_to_simplified();
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_whitespace() || matches!(c, '·' | '•' | '・' | '.' | '-' | '‧') {
            continue;
        }
        let c = match c {
            'Ａ'..='Ｚ' | 'ａ'..='ｚ' => {
                char::from_u32(c as u32 - 'Ａ' as u32 + 'A' as u32).unwrap_or(c)
            }
            _ => c,
        };
        let c = if c.is_ascii() {
            c.to_ascii_lowercase()
        } else {
            table.get(&c).copied().unwrap_or(c)
        };
        out.push(c);
    }
    out
}

/// The simplified form of a traditional name character, if the table knows it.
pub fn simplified(c: char) -> Option<char> {
    traditional_to_simplified().get(&c).copied()
}

/// The traditional form of a simplified name character, if the table knows it.
pub fn traditional(c: char) -> Option<char> {
    TRADITIONAL.iter().find(|(s, _)| *s == c).map(|(_, t)| *t)
}

fn traditional_to_simplified() -> &'static HashMap<char, char> {
    static TABLE: OnceLock<HashMap<char, char>> = OnceLock::new();
    TABLE.get_or_init(|| TRADITIONAL.iter().map(|&(s, t)| (t, s)).collect())
}

/// Length in characters of the surname at the start of a folded name (compound surnames
/// such as 欧阳 count 2); 0 for an empty name.
pub fn surname_len(name: &str) -> usize {
    let count = name.chars().count();
    if count == 0 {
        return 0;
    }
    let compound = COMPOUND_SURNAMES
        .iter()
        .find(|s| name.starts_with(**s) && count > s.chars().count());
    compound.map_or(1, |s| s.chars().count())
}

/// Readings of every character of a folded name, surname characters by the override table.
/// A non-Chinese letter or digit reads as itself; other characters are skipped.
pub fn name_readings(name: &str) -> Vec<CharReadings> {
    let surname_chars = surname_len(name);
    let surname: String = name.chars().take(surname_chars).collect();
    let fixed = SURNAME_READINGS
        .iter()
        .find(|(s, _)| *s == surname)
        .map(|(_, r)| *r);
    let mut out = Vec::with_capacity(name.chars().count());
    for (position, c) in name.chars().enumerate() {
        let mut readings = CharReadings::new();
        let overridden = fixed
            .and_then(|r| r.get(position))
            .filter(|_| position < surname_chars);
        if let Some(reading) = overridden {
            if let Some(s) = Syllable::pack(reading) {
                readings.push(s);
            }
        } else if let Some(multi) = c.to_pinyin_multi() {
            for reading in multi {
                if let Some(s) = Syllable::pack(reading.plain()) {
                    readings.push(s);
                }
            }
        } else if c.is_ascii_alphanumeric() {
            if let Some(s) = Syllable::pack(&c.to_string()) {
                readings.push(s);
            }
        }
        if readings.len > 0 {
            out.push(readings);
        }
    }
    out
}

/// Surnames whose reading is not the dictionary's first reading of the character.
pub const SURNAME_READINGS: &[(&str, &[&str])] = &[
    ("单", &["shan"]),
    ("曾", &["zeng"]),
    ("解", &["xie"]),
    ("仇", &["qiu"]),
    ("区", &["ou"]),
    ("朴", &["piao"]),
    ("查", &["zha"]),
    ("乐", &["yue"]),
    ("缪", &["miao"]),
    ("盖", &["ge"]),
    ("覃", &["qin"]),
    ("翟", &["zhai"]),
    ("尉迟", &["yu", "chi"]),
    ("长孙", &["zhang", "sun"]),
    ("万俟", &["mo", "qi"]),
    ("单于", &["chan", "yu"]),
];

/// Two-character surnames (a name that starts with one keeps both characters as surname).
pub const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文",
    "司徒", "夏侯", "轩辕", "端木", "南宫", "独孤", "呼延", "西门", "万俟", "单于",
];

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

/// Simplified -> traditional for characters common in names (surnames and given names).
#[rustfmt::skip]
pub const TRADITIONAL: &[(char, char)] = &[
    ('张', '張'), ('刘', '劉'), ('陈', '陳'), ('杨', '楊'), ('黄', '黃'), ('赵', '趙'), ('吴', '吳'), ('孙', '孫'),
    ('马', '馬'), ('罗', '羅'), ('郑', '鄭'), ('谢', '謝'), ('韩', '韓'), ('冯', '馮'), ('邓', '鄧'), ('许', '許'),
    ('吕', '呂'), ('苏', '蘇'), ('卢', '盧'), ('蒋', '蔣'), ('贾', '賈'), ('叶', '葉'), ('钟', '鍾'), ('谭', '譚'),
    ('邹', '鄒'), ('陆', '陸'), ('顾', '顧'), ('龙', '龍'), ('万', '萬'), ('钱', '錢'), ('汤', '湯'), ('乔', '喬'),
    ('贺', '賀'), ('龚', '龔'), ('欧', '歐'), ('诸', '諸'), ('韦', '韋'), ('严', '嚴'), ('伟', '偉'), ('丽', '麗'),
    ('军', '軍'), ('国', '國'), ('华', '華'), ('红', '紅'), ('兰', '蘭'), ('凤', '鳳'), ('荣', '榮'), ('东', '東'),
    ('辉', '輝'), ('鹏', '鵬'), ('涛', '濤'), ('杰', '傑'), ('飞', '飛'), ('刚', '剛'), ('静', '靜'), ('艳', '艷'),
    ('宁', '寧'), ('晓', '曉'), ('颖', '穎'), ('洁', '潔'), ('卫', '衛'), ('庆', '慶'), ('宝', '寶'), ('进', '進'),
    ('胜', '勝'), ('贵', '貴'), ('梦', '夢'), ('轩', '軒'), ('诗', '詩'), ('铭', '銘'), ('语', '語'), ('锦', '錦'),
    ('诚', '誠'), ('阳', '陽'), ('凯', '凱'), ('园', '園'), ('亚', '亞'), ('发', '發'), ('兴', '興'), ('义', '義'),
    ('云', '雲'), ('丰', '豐'), ('书', '書'), ('强', '強'), ('岚', '嵐'), ('莲', '蓮'), ('琼', '瓊'), ('龄', '齡'),
    ('顺', '順'), ('树', '樹'), ('长', '長'), ('汉', '漢'), ('远', '遠'), ('达', '達'), ('连', '連'), ('伦', '倫'),
    ('娇', '嬌'), ('鸿', '鴻'), ('鸣', '鳴'), ('钰', '鈺'), ('铁', '鐵'), ('锋', '鋒'), ('钢', '鋼'), ('银', '銀'),
    ('纪', '紀'), ('绍', '紹'), ('维', '維'), ('继', '繼'), ('玮', '瑋'), ('泽', '澤'), ('润', '潤'), ('滨', '濱'),
    ('婵', '嬋'), ('鹃', '鵑'), ('怀', '懷'), ('宽', '寬'), ('坚', '堅'), ('岩', '巖'), ('峰', '峯'), ('财', '財'),
    ('贤', '賢'), ('灵', '靈'), ('风', '風'), ('绿', '綠'), ('岭', '嶺'), ('芸', '蕓'), ('萧', '蕭'), ('鲁', '魯'),
    ('闫', '閆'), ('阎', '閻'), ('项', '項'), ('齐', '齊'), ('聂', '聶'), ('庞', '龐'), ('窦', '竇'), ('费', '費'),
    ('关', '關'), ('边', '邊'), ('尧', '堯'), ('乐', '樂'), ('涌', '湧'), ('颜', '顏'), ('伞', '傘'), ('纯', '純'),
    ('丝', '絲'), ('宫', '宮'),
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
        for (s, t) in TRADITIONAL {
            let folded = fold_name(&t.to_string());
            assert_eq!(folded, s.to_string());
            assert_eq!(fold_name(&folded), folded);
        }
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
