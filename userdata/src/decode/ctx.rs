//! The decoding context: turns [`Node`]s into values while collecting located diagnostics.
//!
//! Every helper reports a problem at the offending node and returns `None` (or an empty
//! value) so decoding continues and the user sees every mistake at once.

use std::sync::Arc;

use crate::diag::{Diagnostics, Location, Pos};
use crate::model::Dialect;
use crate::yaml::{Node, NodeKind};

pub struct Ctx<'d> {
    pub file: Arc<str>,
    pub diags: &'d mut Diagnostics,
    /// What decoded file bodies may still take, shared by every document of a load.
    pub budget: &'d mut DecodeBudget,
    /// The file's dialect (decides what top-level `users:` and `hostname:` mean).
    pub dialect: Dialect,
    /// Why the file has that dialect, for messages.
    pub dialect_reason: String,
}

/// The bytes all decoded file bodies of one load (every file, every document) may take
/// together: base64 and gzip let a small document stand for a huge one, so each body is
/// decoded against what is left, and the load is refused at its limit.
#[derive(Debug)]
pub struct DecodeBudget {
    used: usize,
}

impl Default for DecodeBudget {
    fn default() -> Self {
        DecodeBudget::new()
    }
}

impl DecodeBudget {
    /// Total decoded content one load may hold (docs/user-data.md, "Limits").
    pub const LIMIT: usize = 64 * 1024 * 1024;

    pub fn new() -> Self {
        DecodeBudget { used: 0 }
    }

    /// Bytes still available.
    pub fn remaining(&self) -> usize {
        Self::LIMIT - self.used
    }

    /// Take `n` bytes; false (and nothing taken) when they do not fit.
    pub fn take(&mut self, n: usize) -> bool {
        if n > self.remaining() {
            return false;
        }
        self.used += n;
        true
    }
}

impl<'d> Ctx<'d> {
    pub fn new(file: Arc<str>, diags: &'d mut Diagnostics, budget: &'d mut DecodeBudget) -> Self {
        Ctx {
            file,
            diags,
            budget,
            dialect: Dialect::CloudInit,
            dialect_reason: String::new(),
        }
    }

    pub fn loc(&self, node: &Node) -> Location {
        Location::new(&self.file, node.pos)
    }

    pub fn loc_at(&self, pos: Pos) -> Location {
        Location::new(&self.file, pos)
    }

    pub fn error(&mut self, node: &Node, message: impl Into<String>) {
        let loc = self.loc(node);
        self.diags.error(loc, message);
    }

    pub fn warning(&mut self, node: &Node, message: impl Into<String>) {
        let loc = self.loc(node);
        self.diags.warning(loc, message);
    }

    /// An unknown key inside `what`, with a "did you mean" hint from `known`.
    pub fn unknown_key(&mut self, key: &Node, what: &str, known: &[&str]) {
        let name = key.scalar().unwrap_or_default();
        let hint = suggest(name, known)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let loc = self.loc(key);
        self.diags
            .unknown(loc, format!("unknown key `{name}` in {what}{hint}"));
    }

    /// A known key that Cairn deliberately does not implement: always a warning.
    pub fn unsupported(&mut self, key: &Node, what: &str, why: &str) {
        let name = key.scalar().unwrap_or_default();
        self.warning(
            key,
            format!("`{name}` in {what} is not supported by Cairn and is ignored ({why})"),
        );
    }

    /// The entries of a mapping; a type error (and no entries) for anything else.
    pub fn entries<'n>(&mut self, node: &'n Node, what: &str) -> &'n [(Node, Node)] {
        match &node.kind {
            NodeKind::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node,
                    format!("{what} must be a mapping, found {}", node.type_name()),
                );
                &[]
            }
        }
    }

    /// The items of a list; a type error (and no items) for anything else.
    pub fn items<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node,
                    format!("{what} must be a list, found {}", node.type_name()),
                );
                &[]
            }
        }
    }

    /// A scalar as text (numbers and booleans included, as written).
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => Some(value.clone()),
            _ => {
                self.error(
                    node,
                    format!("{what} must be a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    /// A string that may be null (null gives `None` without an error).
    pub fn opt_string(&mut self, node: &Node, what: &str) -> Option<String> {
        if node.is_null() {
            None
        } else {
            self.string(node, what)
        }
    }

    /// A boolean, YAML 1.1 spellings included (`yes`, `on`…), as cloud-init reads them.
    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let parsed = node
            .scalar()
            .and_then(|s| match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => Some(true),
                "false" | "no" | "off" | "n" => Some(false),
                _ => None,
            });
        if parsed.is_none() {
            let found = node
                .scalar()
                .map(|s| format!("`{s}`"))
                .unwrap_or_else(|| node.type_name().to_string());
            self.error(node, format!("{what} must be true or false, found {found}"));
        }
        parsed
    }

    /// A non-negative integer that fits in u32.
    pub fn uint(&mut self, node: &Node, what: &str) -> Option<u32> {
        let parsed = node.scalar().and_then(|s| s.trim().parse::<u32>().ok());
        if parsed.is_none() {
            let found = node
                .scalar()
                .map(|s| format!("`{s}`"))
                .unwrap_or_else(|| node.type_name().to_string());
            self.error(
                node,
                format!("{what} must be a non-negative integer, found {found}"),
            );
        }
        parsed
    }

    /// A list of strings; with `allow_scalar`, a single string is a one-item list and a
    /// comma-separated string is split (cloud-init's `groups: a, b`).
    pub fn strings(&mut self, node: &Node, what: &str, allow_scalar: bool) -> Vec<(String, Pos)> {
        if allow_scalar {
            if let Some(s) = node.scalar() {
                if node.is_null() {
                    return Vec::new();
                }
                return s
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| (p.to_string(), node.pos))
                    .collect();
            }
        }
        let mut out = Vec::new();
        for item in self.items(node, what) {
            if let Some(s) = self.string(item, &format!("each item of {what}")) {
                out.push((s, item.pos));
            }
        }
        out
    }
}

/// The closest known name to `name` (edit distance ≤ 2, or a prefix/suffix match).
pub fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for &k in known {
        let d = edit_distance(name, k);
        if d <= 2 && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((k, d));
        }
    }
    best.map(|(k, _)| k).or_else(|| {
        known
            .iter()
            .copied()
            .find(|k| name.len() >= 4 && (k.starts_with(name) || name.starts_with(*k)))
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("write_file", &["write_files", "runcmd"]),
            Some("write_files")
        );
        assert_eq!(suggest("systctl", &["sysctl", "systemctl"]), Some("sysctl"));
        assert_eq!(suggest("zzzzzz", &["sysctl"]), None);
    }
}
