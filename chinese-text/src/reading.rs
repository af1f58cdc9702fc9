//! Pinyin readings of characters and surnames, from the `pinyin` crate's dictionary: the one
//! source under both the search name terms ([`crate::names`]) and the linkage readings
//! ([`crate::hanzi`]).
//!
//! Guarantees: every reading is non-empty, toneless and ASCII lower case (`ü` written `v`),
//! most common first, without duplicates; a surname's own reading (单 shan) comes before the
//! character's dictionary readings.

use pinyin::ToPinyinMulti;

use crate::surnames::surname_reading;

/// Every plain reading of one character, most common first, folded to ASCII letters the
/// way a worker types them (`ü` -> `v`, `ê` -> `e`, `ḿ` -> `m`, `ń`/`ň`/`ǹ` -> `n`). A
/// reading that still holds anything else is left out: every term built from readings is
/// ASCII, so cutting one by byte offsets is always safe.
pub fn readings(c: char) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(multi) = c.to_pinyin_multi() else {
        return out;
    };
    for reading in multi {
        let plain: String = reading
            .plain()
            .chars()
            .filter_map(|c| match c {
                'ü' => Some('v'),
                'ê' => Some('e'),
                'ḿ' => Some('m'),
                'ń' | 'ň' | 'ǹ' => Some('n'),
                // Combining marks some readings carry (m̀, ê̄ …) add nothing to typing.
                '\u{0300}'..='\u{036f}' => None,
                other => Some(other),
            })
            .collect();
        if plain.is_empty() || !plain.bytes().all(|b| b.is_ascii_lowercase()) {
            continue;
        }
        if !out.contains(&plain) {
            out.push(plain);
        }
    }
    out
}

/// Readings of each character of a folded surname: the surname's own reading first when the
/// surname table has one, then every dictionary reading (a worker may still type 单 as `dan`).
pub fn surname_readings(surname: &str) -> Vec<Vec<String>> {
    let fixed = surname_reading(surname);
    surname
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let mut list: Vec<String> = Vec::new();
            if let Some(reading) = fixed.and_then(|r| r.get(i)) {
                list.push((*reading).to_owned());
            }
            for reading in readings(c) {
                if !list.contains(&reading) {
                    list.push(reading);
                }
            }
            list
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surname_reading_comes_first() {
        assert_eq!(surname_readings("单")[0][0], "shan");
        assert!(surname_readings("单")[0].contains(&"dan".to_owned()));
        assert_eq!(surname_readings("尉迟")[0][0], "yu");
        assert_eq!(surname_readings("尉迟")[1][0], "chi");
        assert_eq!(readings('王')[0], "wang");
        assert_eq!(readings('吕')[0], "lv");
        assert!(readings('a').is_empty());
    }
}
