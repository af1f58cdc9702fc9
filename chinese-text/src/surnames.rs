//! The one table of Chinese surnames that search, linkage and masking share: which names
//! begin with a compound surname (欧阳, 司马, 诸葛 …) and which surnames read differently from
//! their character's most common reading (单 shan, 曾 zeng, 解 xie …).
//!
//! Guarantees:
//! - A name is split the same way everywhere: [`surname_len`] and [`split_name`] recognise a
//!   compound surname in traditional or full-width writing too (`歐陽娜娜` is 欧阳 + 娜娜), and
//!   only when at least one character follows it (`欧阳` alone is surname 欧 + given 阳).
//! - Lengths count the characters of the name as given, so a masked name keeps exactly the
//!   characters it was written with.
//! - Every table entry is in folded (simplified) form.

use crate::fold::{fold, fold_char};

/// Compound surnames: those of 《百家姓》 still in use, and the historical 拓跋, 完颜, 独孤 and
/// 爱新觉罗. Longest first, so `爱新觉罗` is found before any two-character surname.
#[rustfmt::skip]
pub const COMPOUND_SURNAMES: &[&str] = &[
    "爱新觉罗",
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "澹台", "端木", "南宫", "独孤", "西门", "呼延", "轩辕", "万俟", "钟离", "闻人",
    "拓跋", "赫连", "申屠", "公冶", "太史", "濮阳", "东郭", "百里", "第五", "左丘", "单于", "司空",
    "乐正", "完颜",
];

/// Surnames whose reading is not their character's most common reading, by character.
#[rustfmt::skip]
const SURNAME_READINGS: &[(&str, &[&str])] = &[
    ("单", &["shan"]), ("曾", &["zeng"]), ("解", &["xie"]), ("仇", &["qiu"]), ("区", &["ou"]),
    ("朴", &["piao"]), ("查", &["zha"]), ("盖", &["ge"]), ("覃", &["qin"]), ("乐", &["yue"]),
    ("召", &["shao"]), ("缪", &["miao"]), ("翟", &["zhai"]), ("种", &["chong"]), ("华", &["hua"]),
    ("任", &["ren"]), ("纪", &["ji"]), ("燕", &["yan"]), ("宁", &["ning"]), ("柏", &["bai"]),
    ("秘", &["bi"]), ("句", &["gou"]), ("隗", &["wei"]), ("能", &["nai"]), ("长", &["chang"]),
    ("尉迟", &["yu", "chi"]), ("万俟", &["mo", "qi"]), ("长孙", &["zhang", "sun"]),
    ("单于", &["chan", "yu"]), ("乐正", &["yue", "zheng"]), ("澹台", &["tan", "tai"]),
];

/// Whether `surname` (in any writing) is one of the compound surnames.
pub fn is_compound(surname: &str) -> bool {
    let folded = fold(surname);
    COMPOUND_SURNAMES.contains(&folded.as_str())
}

/// How many characters at the start of `name` are its surname: the compound surname it
/// begins with if a given name follows, else 1; 0 for an empty name.
pub fn surname_len(name: &str) -> usize {
    let count = name.chars().count();
    if count == 0 {
        return 0;
    }
    // fold_char maps one character to one, so positions in `head` are positions in `name`.
    let head: String = name.chars().take(LONGEST).map(fold_char).collect();
    COMPOUND_SURNAMES
        .iter()
        .map(|surname| (surname, surname.chars().count()))
        .find(|(surname, len)| head.starts_with(**surname) && count > *len)
        .map_or(1, |(_, len)| len)
}

/// Characters in the longest compound surname.
const LONGEST: usize = 4;

/// `name` cut after its surname (see [`surname_len`]), as written.
pub fn split_name(name: &str) -> (&str, &str) {
    let cut = name
        .char_indices()
        .nth(surname_len(name))
        .map_or(name.len(), |(at, _)| at);
    name.split_at(cut)
}

/// The reading of each character of a (folded) surname, when it differs from the
/// characters' most common readings.
pub fn surname_reading(surname: &str) -> Option<&'static [&'static str]> {
    SURNAME_READINGS
        .iter()
        .find(|(s, _)| *s == surname)
        .map(|(_, readings)| *readings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_surnames_in_any_writing() {
        assert_eq!(split_name("歐陽娜娜"), ("歐陽", "娜娜"));
        assert_eq!(split_name("欧阳娜娜"), ("欧阳", "娜娜"));
        assert_eq!(surname_len("諸葛亮"), 2);
        assert_eq!(surname_len("爱新觉罗溥仪"), 4);
        assert_eq!(split_name("欧阳"), ("欧", "阳"));
        assert_eq!(split_name("张三"), ("张", "三"));
        assert_eq!(split_name("张"), ("张", ""));
        assert_eq!(split_name(""), ("", ""));
        assert!(is_compound("歐陽"));
        assert!(!is_compound("张"));
    }

    #[test]
    fn tables_are_folded_and_longest_first() {
        let mut last = usize::MAX;
        for surname in COMPOUND_SURNAMES {
            assert_eq!(&fold(surname), surname);
            let len = surname.chars().count();
            assert!(len >= 2 && len <= last && len <= LONGEST, "{surname}");
            last = len;
        }
        for (surname, readings) in SURNAME_READINGS {
            assert_eq!(&fold(surname), surname);
            assert_eq!(surname.chars().count(), readings.len(), "{surname}");
        }
        assert_eq!(surname_reading("单"), Some(&["shan"][..]));
        assert_eq!(surname_reading("张"), None);
    }
}
