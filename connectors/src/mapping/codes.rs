//! Built-in code tables, usable by name in a mapping's `[mapping.codes]`.
//!
//! Guarantees: each table maps the codes of its national standard to the value the unified
//! format expects; a code outside the table is reported, never guessed.

/// GB/T 2261.1-2003 sex codes, plus the Chinese words departments write instead.
pub(crate) const GB2261_GENDER: &[(&str, &str)] = &[
    ("0", "unknown"),
    ("1", "male"),
    ("2", "female"),
    // 5: 女性改(变)为男性, 6: 男性改(变)为女性 — the current sex is what counts.
    ("5", "male"),
    ("6", "female"),
    ("9", "unknown"),
    ("男", "male"),
    ("男性", "male"),
    ("女", "female"),
    ("女性", "female"),
    ("未知的性别", "unknown"),
    ("未说明的性别", "unknown"),
];

/// GB 3304-1991 names of ethnic groups (民族) by two-digit code, in the standard's order.
pub(crate) const GB3304_ETHNICITY: &[(&str, &str)] = &[
    ("01", "汉族"),
    ("02", "蒙古族"),
    ("03", "回族"),
    ("04", "藏族"),
    ("05", "维吾尔族"),
    ("06", "苗族"),
    ("07", "彝族"),
    ("08", "壮族"),
    ("09", "布依族"),
    ("10", "朝鲜族"),
    ("11", "满族"),
    ("12", "侗族"),
    ("13", "瑶族"),
    ("14", "白族"),
    ("15", "土家族"),
    ("16", "哈尼族"),
    ("17", "哈萨克族"),
    ("18", "傣族"),
    ("19", "黎族"),
    ("20", "傈僳族"),
    ("21", "佤族"),
    ("22", "畲族"),
    ("23", "高山族"),
    ("24", "拉祜族"),
    ("25", "水族"),
    ("26", "东乡族"),
    ("27", "纳西族"),
    ("28", "景颇族"),
    ("29", "柯尔克孜族"),
    ("30", "土族"),
    ("31", "达斡尔族"),
    ("32", "仫佬族"),
    ("33", "羌族"),
    ("34", "布朗族"),
    ("35", "撒拉族"),
    ("36", "毛南族"),
    ("37", "仡佬族"),
    ("38", "锡伯族"),
    ("39", "阿昌族"),
    ("40", "普米族"),
    ("41", "塔吉克族"),
    ("42", "怒族"),
    ("43", "乌孜别克族"),
    ("44", "俄罗斯族"),
    ("45", "鄂温克族"),
    ("46", "德昂族"),
    ("47", "保安族"),
    ("48", "裕固族"),
    ("49", "京族"),
    ("50", "塔塔尔族"),
    ("51", "独龙族"),
    ("52", "鄂伦春族"),
    ("53", "赫哲族"),
    ("54", "门巴族"),
    ("55", "珞巴族"),
    ("56", "基诺族"),
    ("97", "其他未识别民族"),
    ("98", "外国血统中国籍人士"),
];

/// Names of the built-in tables, as written in a mapping.
pub const BUILTIN_TABLES: &[&str] = &["gb2261_gender", "gb3304_ethnicity"];

/// A built-in table as (code, value) pairs. For GB 3304 the group names map to themselves
/// too, so a column that already holds names passes.
pub(crate) fn builtin_table(name: &str) -> Option<Vec<(String, String)>> {
    match name {
        "gb2261_gender" => Some(
            GB2261_GENDER
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        "gb3304_ethnicity" => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for (code, name) in GB3304_ETHNICITY {
                pairs.push(((*code).to_owned(), (*name).to_owned()));
                pairs.push(((*name).to_owned(), (*name).to_owned()));
                // Spreadsheets drop the leading zero of 01..09.
                if let Some(short) = code.strip_prefix('0') {
                    pairs.push((short.to_owned(), (*name).to_owned()));
                }
            }
            Some(pairs)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gb3304_has_56_groups_in_order() {
        let groups: Vec<_> = GB3304_ETHNICITY
            .iter()
            .filter(|(code, _)| code.parse::<u32>().unwrap() <= 56)
            .collect();
        assert_eq!(groups.len(), 56);
        for (i, (code, name)) in groups.iter().enumerate() {
            assert_eq!(code.parse::<usize>().unwrap(), i + 1);
            assert!(name.ends_with('族'));
        }
        let table = builtin_table("gb3304_ethnicity").unwrap();
        let get = |k: &str| table.iter().find(|(c, _)| c == k).map(|(_, v)| v.as_str());
        assert_eq!(get("01"), Some("汉族"));
        assert_eq!(get("1"), Some("汉族"));
        assert_eq!(get("56"), Some("基诺族"));
        assert_eq!(get("回族"), Some("回族"));
        assert_eq!(get("57"), None);
    }
}
