//! Folding of what a user or a department may type into one comparable form.
//!
//! Guarantees: [`fold`] is applied identically at index and at query time, so a traditional
//! or variant character, a full-width digit or letter, or an upper-case letter matches its
//! simplified / half-width / lower-case form. The table covers characters common in names,
//! places and event text; a character outside it is kept as it is.

/// Traditional / variant -> simplified, for characters common in names, addresses and
/// grid-event text. Kept here (not in `connectors`) because `broker` may not depend on it.
#[rustfmt::skip]
const TRADITIONAL: &[(char, char)] = &[
    ('張', '张'), ('劉', '刘'), ('陳', '陈'), ('楊', '杨'), ('黃', '黄'), ('趙', '赵'), ('吳', '吴'), ('孫', '孙'),
    ('馬', '马'), ('羅', '罗'), ('鄭', '郑'), ('謝', '谢'), ('韓', '韩'), ('馮', '冯'), ('鄧', '邓'), ('許', '许'),
    ('呂', '吕'), ('蘇', '苏'), ('盧', '卢'), ('蔣', '蒋'), ('賈', '贾'), ('葉', '叶'), ('鍾', '钟'), ('鐘', '钟'),
    ('譚', '谭'), ('鄒', '邹'), ('陸', '陆'), ('顧', '顾'), ('龍', '龙'), ('萬', '万'), ('錢', '钱'), ('湯', '汤'),
    ('喬', '乔'), ('賀', '贺'), ('龔', '龚'), ('歐', '欧'), ('諸', '诸'), ('偉', '伟'), ('麗', '丽'), ('軍', '军'),
    ('國', '国'), ('華', '华'), ('紅', '红'), ('蘭', '兰'), ('鳳', '凤'), ('榮', '荣'), ('東', '东'), ('輝', '辉'),
    ('鵬', '鹏'), ('濤', '涛'), ('傑', '杰'), ('飛', '飞'), ('剛', '刚'), ('靜', '静'), ('艷', '艳'), ('豔', '艳'),
    ('寧', '宁'), ('曉', '晓'), ('穎', '颖'), ('潔', '洁'), ('衛', '卫'), ('慶', '庆'), ('寶', '宝'), ('進', '进'),
    ('勝', '胜'), ('貴', '贵'), ('夢', '梦'), ('軒', '轩'), ('詩', '诗'), ('銘', '铭'), ('語', '语'), ('錦', '锦'),
    ('誠', '诚'), ('陽', '阳'), ('凱', '凯'), ('園', '园'), ('區', '区'), ('單', '单'), ('長', '长'), ('門', '门'),
    ('車', '车'), ('樓', '楼'), ('號', '号'), ('單', '单'), ('鎮', '镇'), ('鄉', '乡'), ('縣', '县'), ('廣', '广'),
    ('灣', '湾'), ('橋', '桥'), ('莊', '庄'), ('營', '营'), ('廳', '厅'), ('電', '电'), ('動', '动'), ('噪', '噪'),
    ('糾', '纠'), ('紛', '纷'), ('違', '违'), ('規', '规'), ('災', '灾'), ('險', '险'), ('堵', '堵'), ('塞', '塞'),
    ('齊', '齐'), ('嚴', '严'), ('蕭', '萧'), ('薛', '薛'), ('閻', '阎'), ('閆', '闫'), ('聶', '聂'), ('魯', '鲁'),
    ('邵', '邵'), ('鄔', '邬'), ('鍾', '钟'), ('楊', '杨'), ('歐', '欧'), ('貝', '贝'), ('費', '费'), ('譚', '谭'),
    ('嶽', '岳'), ('岳', '岳'), ('溫', '温'), ('莊', '庄'), ('藍', '蓝'), ('鄺', '邝'), ('關', '关'), ('尋', '寻'),
    ('義', '义'), ('禮', '礼'), ('愛', '爱'), ('覺', '觉'), ('羅', '罗'), ('麥', '麦'), ('黎', '黎'), ('鄭', '郑'),
    ('雲', '云'), ('風', '风'), ('龜', '龟'), ('鶴', '鹤'), ('鳴', '鸣'), ('蓮', '莲'), ('鳳', '凤'), ('瑩', '莹'),
    ('嬌', '娇'), ('婭', '娅'), ('娛', '娱'), ('雙', '双'), ('獻', '献'), ('濱', '滨'), ('瀾', '澜'), ('淵', '渊'),
    ('燁', '烨'), ('煒', '炜'), ('熾', '炽'), ('燦', '灿'), ('爾', '尔'), ('璽', '玺'), ('瓊', '琼'), ('環', '环'),
    ('書', '书'), ('學', '学'), ('藝', '艺'), ('樂', '乐'), ('興', '兴'), ('業', '业'), ('發', '发'), ('達', '达'),
    ('財', '财'), ('順', '顺'), ('遠', '远'), ('運', '运'), ('這', '这'), ('個', '个'), ('們', '们'), ('來', '来'),
    ('開', '开'), ('關', '关'), ('會', '会'), ('說', '说'), ('時', '时'), ('間', '间'), ('戶', '户'), ('戸', '户'),
    ('鄰', '邻'), ('隣', '邻'), ('裏', '里'), ('裡', '里'), ('灣', '湾'), ('廈', '厦'), ('園', '园'), ('蘇', '苏'),
];

/// Compound surnames, longest first (`爱新觉罗` before the two-character ones).
#[rustfmt::skip]
pub const COMPOUND_SURNAMES: &[&str] = &[
    "爱新觉罗", "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "澹台", "端木", "南宫", "独孤", "西门", "呼延", "轩辕", "万俟", "钟离", "闻人", "拓跋",
    "赫连", "申屠", "公冶", "太史", "濮阳", "东郭", "百里", "第五", "左丘", "单于", "司空", "乐正", "完颜",
];

/// One character in simplified, half-width, lower-case form.
pub fn fold_char(c: char) -> char {
    match c {
        // Full-width ASCII block -> ASCII.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0)
            .unwrap_or(c)
            .to_ascii_lowercase(),
        '\u{3000}' => ' ',
        'A'..='Z' => c.to_ascii_lowercase(),
        'ü' | 'Ü' => 'v',
        _ if c.is_ascii() => c,
        _ => TRADITIONAL
            .iter()
            .find(|(t, _)| *t == c)
            .map_or(c, |(_, s)| *s),
    }
}

/// The folded form of `text` (see the module guarantees).
pub fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

/// Whether `c` is a CJK unified ideograph (the characters names and addresses are made of).
pub fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_traditional_full_width_and_case() {
        assert_eq!(fold("張三"), "张三");
        assert_eq!(fold("歐陽娜娜"), "欧阳娜娜");
        assert_eq!(fold("ＺＨＡＮＧ３号樓"), "zhang3号楼");
        assert_eq!(fold("Lü"), "lv");
    }

    #[test]
    fn compound_surnames_are_simplified_and_longest_first() {
        assert_eq!(COMPOUND_SURNAMES[0].chars().count(), 4);
        for surname in COMPOUND_SURNAMES {
            assert_eq!(&fold(surname), surname);
        }
    }
}
