//! Display masking with Chinese conventions: ID `110105********002X`, mobile `138****5678`,
//! landline keeps its area code, names `张*` / `欧阳**`, addresses cut below the building,
//! birth dates to the year.
//!
//! Guarantees: every function is total (any input, no panic) and never returns more of the
//! input than its convention shows; input that does not look like what the function expects
//! is masked entirely rather than passed through.

/// `110105********002X`: region code and last four characters.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() != 18 {
        return "*".repeat(chars.len().max(1));
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[14..].iter().collect();
    format!("{head}********{tail}")
}

/// `138****5678` for mobiles; `010-****5678` for landlines (area code kept).
pub fn mask_phone(phone: &str) -> String {
    if let Some((area, local)) = phone.split_once('-') {
        let local: Vec<char> = local.chars().collect();
        let keep = local.len().saturating_sub(4);
        let tail: String = local[keep..].iter().collect();
        return format!("{area}-{}{tail}", "*".repeat(keep));
    }
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() == 11 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[7..].iter().collect();
        return format!("{head}****{tail}");
    }
    "*".repeat(chars.len().max(1))
}

/// `张*`, `张**`, `欧阳**`: the surname as written and one star per hidden character. The
/// surname is split as search and linkage split it ([`chinese_text::surnames`]), so a
/// compound surname stays visible in traditional writing too (`歐陽**`).
pub fn mask_name(name: &str) -> String {
    let total = name.chars().count();
    if total <= 1 {
        return "*".to_owned();
    }
    let (surname, given) = chinese_text::surnames::split_name(name);
    format!("{surname}{}", "*".repeat(given.chars().count()))
}

/// Cuts a standard address after the building (`…3号楼`), dropping unit and room.
pub fn mask_address(address: &str) -> String {
    for marker in ["号楼", "栋", "幢", "座"] {
        if let Some(pos) = address.find(marker) {
            return format!("{}{}", &address[..pos + marker.len()], "****");
        }
    }
    // No building marker: keep up to the compound (小区/社区/村) if any, else nothing.
    for marker in ["小区", "社区", "村", "街道"] {
        if let Some(pos) = address.rfind(marker) {
            return format!("{}{}", &address[..pos + marker.len()], "****");
        }
    }
    "****".to_owned()
}

/// `1949` from `1949-12-31`.
pub fn mask_birth_date(date: &str) -> String {
    let year: String = date.chars().take(4).collect();
    if year.len() == 4 && year.chars().all(|c| c.is_ascii_digit()) {
        year
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("010-87654321"), "010-****4321");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("欧阳娜娜"), "欧阳**");
        assert_eq!(mask_name("欧阳"), "欧*");
        assert_eq!(mask_name("歐陽娜娜"), "歐陽**");
        assert_eq!(mask_name("诸葛亮"), "诸葛*");
        assert_eq!(
            mask_address("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
            "北京市朝阳区望京街道幸福里小区3号楼****"
        );
        assert_eq!(mask_birth_date("1949-12-31"), "1949");
    }

    #[test]
    fn odd_input_is_masked_entirely() {
        assert_eq!(mask_id_number("123"), "***");
        assert_eq!(mask_phone(""), "*");
        assert_eq!(mask_name(""), "*");
        assert_eq!(mask_birth_date("abc"), "****");
    }
}
