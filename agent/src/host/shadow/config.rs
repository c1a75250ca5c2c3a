//! The target's `/etc/login.defs` and `/etc/default/useradd`, read the way shadow-utils
//! 4.13 reads them, and the C number/date parsers their values go through.
//!
//! Every lookup takes the default shadow-utils itself uses when a key is absent or does
//! not parse (Debian's build: `GROUP=100`, `SHELL=/bin/bash`, `CREATE_MAIL_SPOOL=no`).

use std::collections::HashMap;

/// Split `text` the way a `fgets(buf, size, fp)` loop does: records end after a newline
/// or after `size - 1` bytes.
fn fgets_records(text: &[u8], size: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let limit = rest.len().min(size - 1);
        let end = rest[..limit]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(limit, |i| i + 1);
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol`/`strtoul` with base 0 over the whole string: sign and magnitude, or `None` when
/// the string is empty, has trailing garbage or no digits.
fn c_strto_base0(s: &str) -> Option<(bool, u128)> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let (radix, start) = if b.len() > i + 2
        && b[i] == b'0'
        && (b[i + 1] == b'x' || b[i + 1] == b'X')
        && b[i + 2].is_ascii_hexdigit()
    {
        (16, i + 2)
    } else if i < b.len() && b[i] == b'0' {
        (8, i)
    } else {
        (10, i)
    };
    let digits = &s[start..];
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mut v: u128 = 0;
    for c in digits.chars() {
        v = v
            .saturating_mul(u128::from(radix))
            .saturating_add(u128::from(c.to_digit(radix)?));
    }
    Some((neg, v))
}

/// shadow-utils' `getlong` (strtol, base 0, whole string, no overflow).
pub fn getlong(s: &str) -> Option<i64> {
    let (neg, mag) = c_strto_base0(s)?;
    let v = if neg {
        0i128.checked_sub(i128::try_from(mag).ok()?)?
    } else {
        i128::try_from(mag).ok()?
    };
    i64::try_from(v).ok()
}

/// shadow-utils' `getulong` (strtoul, base 0, whole string; a minus sign wraps like C).
pub fn getulong(s: &str) -> Option<u64> {
    let (neg, mag) = c_strto_base0(s)?;
    let m = u64::try_from(mag).ok()?;
    Some(if neg { m.wrapping_neg() } else { m })
}

/// shadow-utils' `get_uid`/`get_gid` (strtoll, base 10, must fit `uid_t`).
pub fn get_id(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let digits = &s[i..];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let v: i128 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    u32::try_from(v).ok()
}

/// `/etc/login.defs` as shadow-utils' `def_load` sees it.
#[derive(Debug, Clone, Default)]
pub struct LoginDefs {
    values: HashMap<String, String>,
}

impl LoginDefs {
    pub fn parse(text: &[u8]) -> LoginDefs {
        let mut values = HashMap::new();
        for rec in fgets_records(text, 1024) {
            let mut end = rec.len();
            while end > 0 && is_c_space(rec[end - 1]) {
                end -= 1;
            }
            let line = &rec[..end];
            let start = line
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .unwrap_or(line.len());
            let line = &line[start..];
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let Some(name_end) = line.iter().position(|b| *b == b' ' || *b == b'\t') else {
                continue;
            };
            let name = &line[..name_end];
            let rest = &line[name_end + 1..];
            let vstart = rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'"' | b'\t'))
                .unwrap_or(rest.len());
            let value = &rest[vstart..];
            let value = &value[..value.iter().position(|b| *b == b'"').unwrap_or(value.len())];
            values.insert(
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
        LoginDefs { values }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `getdef_bool`: true only for a case-insensitive `yes`.
    pub fn bool(&self, key: &str) -> bool {
        self.str(key).is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    }

    /// `getdef_num`: an `int`, `dflt` when absent or unparsable.
    pub fn num(&self, key: &str, dflt: i64) -> i64 {
        match self.str(key).map(getlong) {
            Some(Some(v)) if i64::from(i32::MIN) <= v && v <= i64::from(i32::MAX) => v,
            _ => dflt,
        }
    }

    /// `getdef_unum`: a non-negative `int`.
    pub fn unum(&self, key: &str, dflt: u32) -> u32 {
        match self.str(key).map(getlong) {
            Some(Some(v)) if (0..=i64::from(i32::MAX)).contains(&v) => v as u32,
            _ => dflt,
        }
    }

    /// `getdef_ulong`: an `unsigned long`.
    pub fn ulong(&self, key: &str, dflt: u64) -> u64 {
        match self.str(key).map(getulong) {
            Some(Some(v)) => v,
            _ => dflt,
        }
    }
}

/// `/etc/default/useradd` as `useradd`'s `get_defaults` sees it (Debian's build defaults).
#[derive(Debug, Clone)]
pub struct UseraddDefaults {
    /// Every `GROUP=` value, in order; each is looked up when a user is added and the last
    /// one naming an existing group wins (an unknown one is ignored, as useradd does).
    pub groups: Vec<String>,
    pub home: String,
    pub shell: String,
    pub inactive: i64,
    pub expire: String,
    pub skel: String,
    pub create_mail_spool: String,
    pub log_init: String,
}

impl Default for UseraddDefaults {
    fn default() -> Self {
        UseraddDefaults {
            groups: Vec::new(),
            home: "/home".into(),
            shell: "/bin/bash".into(),
            inactive: -1,
            expire: String::new(),
            skel: "/etc/skel".into(),
            create_mail_spool: "no".into(),
            log_init: "yes".into(),
        }
    }
}

/// The built-in primary group of users added without a group of their own (Debian).
pub const DEFAULT_GROUP: u32 = 100;

impl UseraddDefaults {
    pub fn parse(text: Option<&[u8]>) -> UseraddDefaults {
        let mut d = UseraddDefaults::default();
        let Some(text) = text else {
            return d;
        };
        for rec in fgets_records(text, 1024) {
            let mut line = String::from_utf8_lossy(rec).into_owned();
            if let Some(i) = line.rfind('\n') {
                line.truncate(i);
            }
            let Some(eq) = line.find('=') else {
                continue;
            };
            let value = line[eq + 1..].to_string();
            if line.starts_with("GROUP=") {
                d.groups.push(value);
            } else if line.starts_with("HOME=") {
                d.home = value;
            } else if line.starts_with("SHELL=") {
                d.shell = value;
            } else if line.starts_with("INACTIVE=") {
                d.inactive = match getlong(&value) {
                    Some(v) if v >= -1 => v,
                    _ => -1,
                };
            } else if line.starts_with("EXPIRE=") {
                d.expire = value;
            } else if line.starts_with("SKEL=") {
                d.skel = if value.is_empty() {
                    "/etc/skel".into()
                } else {
                    value
                };
            } else if line.starts_with("CREATE_MAIL_SPOOL=") {
                d.create_mail_spool = if value.is_empty() { "no".into() } else { value };
            } else if line.starts_with("LOG_INIT=") && !value.is_empty() {
                d.log_init = value;
            }
        }
        d
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A decimal without sign, spaces or leading zeros (so C's base-0 parsing reads the same).
pub fn canonical_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// shadow-utils' `strtoday` for the forms whose result does not depend on anything but
/// the text: empty (-1), `-1`, a plain number of days, or `YYYY-MM-DD` (when `utc`: the date
/// is read as local midnight, which is the same day in UTC). `None`: let useradd decide.
pub fn strtoday(s: &str, utc: bool) -> Option<i64> {
    if s.is_empty() {
        return Some(-1);
    }
    if s == "-1" {
        return Some(-1);
    }
    if let Some(n) = canonical_decimal(s) {
        return i64::try_from(n).ok();
    }
    let b = s.as_bytes();
    if !utc
        || b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || ![0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|i| b[*i].is_ascii_digit())
    {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_defs_like_def_load() {
        let d = LoginDefs::parse(
            b"# c\nUID_MIN\t\t\t 1000\n  UMASK 022   \nHOME_MODE \"0700\"\nUSERGROUPS_ENAB Yes\nLONE\nUID_MIN 2000\n",
        );
        assert_eq!(d.ulong("UID_MIN", 1), 2000, "the last definition wins");
        assert_eq!(d.num("UMASK", 0), 0o22, "octal");
        assert_eq!(d.num("HOME_MODE", 0), 0o700, "quotes stripped");
        assert!(d.bool("USERGROUPS_ENAB"));
        assert_eq!(d.str("LONE"), None);
        assert_eq!(d.ulong("MISSING", 7), 7);
    }

    #[test]
    fn c_numbers() {
        assert_eq!(getlong("0x10"), Some(16));
        assert_eq!(getlong("010"), Some(8));
        assert_eq!(getlong("-1"), Some(-1));
        assert_eq!(getlong("08"), None);
        assert_eq!(getlong(""), None);
        assert_eq!(getlong("1x"), None);
        assert_eq!(getulong("-1"), Some(u64::MAX));
        assert_eq!(get_id(" 42"), Some(42));
        assert_eq!(get_id("-1"), None);
        assert_eq!(get_id("4294967296"), None);
    }

    #[test]
    fn useradd_defaults() {
        let d = UseraddDefaults::parse(Some(
            b"# x\nSHELL=/bin/sh\nINACTIVE=-5\nSKEL=\nGROUP=users\n",
        ));
        assert_eq!(d.shell, "/bin/sh");
        assert_eq!(d.inactive, -1);
        assert_eq!(d.skel, "/etc/skel");
        assert_eq!(d.groups, vec!["users"]);
        assert_eq!(UseraddDefaults::parse(None).shell, "/bin/bash");
    }

    #[test]
    fn dates() {
        assert_eq!(strtoday("2032-09-01", true), Some(22889));
        assert_eq!(strtoday("1970-01-01", true), Some(0));
        assert_eq!(strtoday("2032-09-01", false), None);
        assert_eq!(strtoday("2023-02-29", true), None);
        assert_eq!(strtoday("", true), Some(-1));
        assert_eq!(strtoday("19000", true), Some(19000));
        assert_eq!(strtoday("019000", true), None);
    }
}
