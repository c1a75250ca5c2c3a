//! Id allocation exactly as shadow-utils 4.13 does it (`find_new_uid`, `find_new_gid`,
//! `find_new_sub_uids`): same ranges and defaults, same search order, same fallbacks.

use std::collections::HashSet;

use super::config::LoginDefs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

/// The allocation range: `[min, max]`, and the lowest id a preferred id may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u32,
    pub max: u32,
    pub preferred_min: u32,
}

/// `get_ranges`; `None` when login.defs makes no sense (shadow-utils refuses too).
pub fn range(defs: &LoginDefs, kind: Kind, system: bool) -> Option<Range> {
    let (sys_min, sys_max, min, max) = match kind {
        Kind::User => ("SYS_UID_MIN", "SYS_UID_MAX", "UID_MIN", "UID_MAX"),
        Kind::Group => ("SYS_GID_MIN", "SYS_GID_MAX", "GID_MIN", "GID_MAX"),
    };
    // (uid_t) casts truncate, as in C.
    if system {
        let mut lo = defs.ulong(sys_min, 101) as u32;
        let def_max = (defs.ulong(min, 1000) as u32).wrapping_sub(1);
        let hi = defs.ulong(sys_max, u64::from(def_max)) as u32;
        if hi < lo {
            return None;
        }
        if lo == 0 {
            lo = 1;
        }
        Some(Range {
            min: lo,
            max: hi,
            preferred_min: 1,
        })
    } else {
        let lo = defs.ulong(min, 1000) as u32;
        let hi = defs.ulong(max, 60000) as u32;
        if hi < lo {
            return None;
        }
        Some(Range {
            min: lo,
            max: hi,
            preferred_min: lo,
        })
    }
}

/// `find_new_uid`/`find_new_gid`. `ids`: every id of the database, in file order (the
/// local file is also what NSS answers from: the caller only runs when NSS is `files`).
pub fn find_new(ids: &[u32], system: bool, r: Range, preferred: Option<u32>) -> Option<u32> {
    let taken: HashSet<u32> = ids.iter().copied().collect();
    if let Some(p) = preferred {
        if p >= r.preferred_min && p <= r.max && !taken.contains(&p) {
            return Some(p);
        }
    }
    // A range reaching (uid_t)-1 makes the C loops wrap; leave that to shadow-utils.
    if r.max == u32::MAX {
        return None;
    }
    let free = |id: u32| !taken.contains(&id);
    if system {
        let mut lowest = r.max;
        for &id in ids {
            if id <= lowest && id >= r.min {
                lowest = id - 1;
            }
        }
        if lowest < r.min {
            lowest = r.max;
        }
        if let Some(id) = (r.min..=lowest).rev().find(|id| free(*id)) {
            return Some(id);
        }
        if lowest != r.max {
            return (r.min..=r.max).rev().find(|id| free(*id));
        }
        None
    } else {
        let mut highest = r.min;
        for &id in ids {
            if id >= highest && id <= r.max {
                highest = id + 1;
            }
        }
        if highest > r.max {
            highest = r.min;
        }
        if let Some(id) = (highest..=r.max).find(|id| free(*id)) {
            return Some(id);
        }
        if highest != r.min {
            return (r.min..=r.max).find(|id| free(*id));
        }
        None
    }
}

/// `find_new_sub_uids`/`find_new_sub_gids` after commonio sorted the ranges by (start,
/// count, owner): the lowest hole of `count` ids in `[min, max]`.
pub fn find_free_subrange(sorted: &[(u64, u64)], min: u64, max: u64, count: u64) -> Option<u64> {
    if min > max || count >= max || min.wrapping_add(count).wrapping_sub(1) > max {
        return None;
    }
    if count == 0 {
        return None;
    }
    let mut low = min;
    for &(first, n) in sorted {
        let last = first.wrapping_add(n).wrapping_sub(1);
        let mut high = first;
        if high > max.wrapping_add(1) {
            high = max.wrapping_add(1);
        }
        if high > low && high - low >= count {
            return Some(low);
        }
        if low < last.wrapping_add(1) {
            low = last.wrapping_add(1);
        }
        if low > max {
            return None;
        }
    }
    if max.wrapping_sub(low).wrapping_add(1) >= count {
        Some(low)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: Range = Range {
        min: 1000,
        max: 60000,
        preferred_min: 1000,
    };
    const SYSTEM: Range = Range {
        min: 101,
        max: 999,
        preferred_min: 1,
    };

    #[test]
    fn users_take_highest_plus_one_then_the_first_hole() {
        assert_eq!(find_new(&[0, 1, 65534], false, USERS, None), Some(1000));
        assert_eq!(
            find_new(&[0, 1000, 1500, 1001], false, USERS, None),
            Some(1501)
        );
        assert_eq!(find_new(&[1000, 60000], false, USERS, None), Some(1001));
        assert_eq!(
            find_new(&[1000, 1001], false, USERS, Some(1000)),
            Some(1002)
        );
        assert_eq!(find_new(&[1000], false, USERS, Some(1500)), Some(1500));
    }

    #[test]
    fn system_ids_go_down_from_the_lowest() {
        assert_eq!(find_new(&[0, 42, 65534], true, SYSTEM, None), Some(999));
        assert_eq!(find_new(&[998, 999], true, SYSTEM, None), Some(997));
        assert_eq!(find_new(&[101, 500], true, SYSTEM, None), Some(999));
        assert_eq!(find_new(&[998], true, SYSTEM, Some(5)), Some(5));
    }

    #[test]
    fn subordinate_ranges() {
        assert_eq!(
            find_free_subrange(&[], 100000, 600100000, 65536),
            Some(100000)
        );
        assert_eq!(
            find_free_subrange(&[(100000, 65536)], 100000, 600100000, 65536),
            Some(165536)
        );
        assert_eq!(
            find_free_subrange(&[(300000, 10)], 100000, 600100000, 65536),
            Some(100000)
        );
    }
}
