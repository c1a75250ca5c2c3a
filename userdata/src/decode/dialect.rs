//! Which dialect a user-data file speaks: Kairos/Palette or cloud-init.
//!
//! The `#cloud-config` header does not tell: Kairos and Palette files carry it too, and the
//! same keys mean different things (`users: [{passwd: kairos}]` is a usable account for
//! Kairos, a locked one for cloud-init). The decision, in order:
//!
//! 1. an explicit `#cairn-dialect: kairos|cloud-init` line among the file's leading
//!    comments;
//! 2. the context the text comes from: a cluster profile's os layer is Kairos user-data
//!    (that is what Palette puts there) unless the layer says `dialect: cloud-init`;
//! 3. for a plain file, the content: a Kairos header (`#kairos-config`, `#node-config`), a top-level key only
//!    Kairos or Palette read (`stages`, `stylus`, `install`, `k3s`, `p2p`…), a Go-template
//!    `hostname` (`{{ trunc 4 .MachineID }}`), or a `github:`/`gitlab:` SSH key source;
//! 4. otherwise cloud-init.
//!
//! The whole file has one dialect (its documents are one configuration).

use crate::diag::{Diagnostics, Location, Pos};
use crate::model::Dialect;
use crate::yaml::{self, Node, NodeKind};

/// The override line: `#cairn-dialect: kairos` (a space after `#` is allowed).
pub const OVERRIDE_KEY: &str = "cairn-dialect:";

/// Top-level keys that only Kairos/Palette configurations have (cloud-init has none of
/// them): any of them makes a file a Kairos one.
pub const KAIROS_EVIDENCE: &[&str] = &[
    "stages",
    "stylus",
    "install",
    "k3s",
    "k3s-agent",
    "k0s",
    "k0s-worker",
    "p2p",
    "kubevip",
    "cluster",
    "bundles",
    "fail_on_bundles_errors",
    "upgrade",
    "reset",
    "config_url",
    "cloud-init-paths",
    "phonehome",
    "kcrypt",
    "providers",
    "grub_options",
    "eject-cd",
    "cosign",
    "cosign-key",
    "verify",
    "bind-pcrs",
    "bind-public-pcrs",
    "uki-max-entries",
    "squash-compression",
    "squash-no-compression",
];

/// Where a text comes from, as far as its dialect is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// A user-data file: the content decides, cloud-init when nothing says Kairos.
    #[default]
    File,
    /// A cluster profile's os layer, with its `dialect:` if it has one. Without one the
    /// layer is Kairos user-data (Palette's OS layer is), unless its own
    /// `#cairn-dialect:` line says otherwise.
    OsLayer(Option<Dialect>),
}

/// The dialect of a file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub dialect: Dialect,
    /// Why, for messages: "`stages:` at line 3", "the `#cairn-dialect:` line", …
    pub reason: String,
}

/// The dialect of `text` as [`crate::decode::decode_text`] decides it (no context).
pub fn detect(text: &str) -> Detected {
    let docs = yaml::parse(text).unwrap_or_default();
    let mut diags = Diagnostics::default();
    decide("", text, &docs, Origin::File, &mut diags)
}

/// The `#cairn-dialect:` line among the leading comment lines, if any: its value and line.
fn override_line(text: &str) -> Option<(String, usize)> {
    for (i, line) in text.lines().take(10).enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let comment = t.strip_prefix('#')?;
        if let Some(v) = comment.trim_start().strip_prefix(OVERRIDE_KEY) {
            return Some((v.trim().to_string(), i + 1));
        }
    }
    None
}

fn parse_name(v: &str) -> Option<Dialect> {
    match v {
        "kairos" => Some(Dialect::Kairos),
        "cloud-init" => Some(Dialect::CloudInit),
        _ => None,
    }
}

/// Decide the dialect of a file (`docs` are its parsed documents). `context` is what the
/// file's origin says (a profile's os layer and its `dialect:`). An unknown override value,
/// or an override that contradicts the layer's `dialect:`, is an error in `diags`.
pub fn decide(
    file: &str,
    text: &str,
    docs: &[Node],
    context: Origin,
    diags: &mut Diagnostics,
) -> Detected {
    let declared = match context {
        Origin::OsLayer(d) => d,
        Origin::File => None,
    };
    let file: std::sync::Arc<str> = std::sync::Arc::from(file);
    if let Some((value, line)) = override_line(text) {
        let loc = Location::new(&file, Pos { line, col: 1 });
        match parse_name(&value) {
            Some(d) => {
                if let Some(c) = declared.filter(|c| *c != d) {
                    diags.error(
                        loc,
                        format!(
                            "`#cairn-dialect: {}` contradicts the os layer's `dialect: {}`; \
                             keep one of them",
                            d.as_str(),
                            c.as_str()
                        ),
                    );
                }
                return Detected {
                    dialect: d,
                    reason: format!("the `#cairn-dialect: {}` line", d.as_str()),
                };
            }
            None => diags.error(
                loc,
                format!("unknown dialect `{value}` in `#cairn-dialect:`; write `kairos` or `cloud-init`"),
            ),
        }
    }
    match context {
        Origin::OsLayer(Some(d)) => {
            return Detected {
                dialect: d,
                reason: format!("the os layer's `dialect: {}`", d.as_str()),
            }
        }
        Origin::OsLayer(None) => {
            return kairos(
                "a cluster profile's os layer without `dialect:` (Palette's OS layer is Kairos \
                 user-data; write `dialect: cloud-init` on the layer for cloud-init's meaning)"
                    .into(),
            )
        }
        Origin::File => {}
    }
    if let Some(h) = super::header(text).filter(|h| *h != "#cloud-config") {
        return Detected {
            dialect: Dialect::Kairos,
            reason: format!("the `{h}` header"),
        };
    }
    let jinja = text
        .lines()
        .next()
        .is_some_and(|l| l.trim_start().starts_with("## template:"));
    for doc in docs {
        let NodeKind::Map(entries) = &doc.kind else {
            continue;
        };
        for (key, value) in entries {
            let Some(k) = key.scalar() else { continue };
            let line = key.pos.line;
            if KAIROS_EVIDENCE.contains(&k) {
                return kairos(format!("`{k}:` at line {line}"));
            }
            if k == "hostname" && !jinja && value.scalar().is_some_and(|h| h.contains("{{")) {
                return kairos(format!("the Go-template `hostname` at line {line}"));
            }
            if let Some(at) = key_source_in(k, value) {
                return kairos(format!("the SSH key source at line {at}"));
            }
        }
    }
    Detected {
        dialect: Dialect::CloudInit,
        reason: "no Kairos header, key or `#cairn-dialect:` line".into(),
    }
}

fn kairos(reason: String) -> Detected {
    Detected {
        dialect: Dialect::Kairos,
        reason,
    }
}

/// Is this entry of `ssh_authorized_keys` a key source (`github:NAME`, `gitlab:NAME`)?
pub fn is_key_source(entry: &str) -> bool {
    let e = entry.trim();
    e.starts_with("github:") || e.starts_with("gitlab:")
}

/// The line of a `github:`/`gitlab:` entry in top-level `ssh_authorized_keys` or in a
/// `users:` entry's.
fn key_source_in(key: &str, value: &Node) -> Option<usize> {
    let in_list = |n: &Node| match &n.kind {
        NodeKind::Seq(items) => items
            .iter()
            .find(|i| i.scalar().is_some_and(is_key_source))
            .map(|i| i.pos.line),
        _ => None,
    };
    match key {
        "ssh_authorized_keys" => in_list(value),
        "users" => match &value.kind {
            NodeKind::Seq(users) => users
                .iter()
                .filter_map(|u| u.get("ssh_authorized_keys"))
                .find_map(in_list),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides() {
        let d = detect("#cloud-config\nusers:\n  - name: kairos\n    passwd: kairos\n");
        assert_eq!(d.dialect, Dialect::CloudInit, "{d:?}");
        let d = detect("#cloud-config\nusers:\n  - name: kairos\n    passwd: kairos\ninstall:\n  reboot: true\n");
        assert_eq!(d.dialect, Dialect::Kairos);
        assert!(d.reason.contains("`install:` at line 5"), "{d:?}");
        let d = detect("#cloud-config\nhostname: edge-{{ trunc 4 .MachineID }}\n");
        assert_eq!(d.dialect, Dialect::Kairos);
        let d =
            detect("## template: jinja\n#cloud-config\nhostname: \"{{ v1.local_hostname }}\"\n");
        assert_eq!(d.dialect, Dialect::CloudInit);
        let d =
            detect("#cloud-config\nusers:\n- name: a\n  ssh_authorized_keys: [github:octocat]\n");
        assert_eq!(d.dialect, Dialect::Kairos);
        assert!(d.reason.contains("line 4"), "{d:?}");
        let d = detect("#node-config\nusers: [{name: a, passwd: a}]\n");
        assert_eq!(d.dialect, Dialect::Kairos);
        let d = detect("stages:\n  boot: []\n");
        assert_eq!(d.dialect, Dialect::Kairos);
    }

    #[test]
    fn the_override_wins_and_is_checked() {
        let d = detect("#cloud-config\n# cairn-dialect: kairos\nusers: [{name: a, passwd: a}]\n");
        assert_eq!(d.dialect, Dialect::Kairos);
        let d = detect("#cairn-dialect: cloud-init\nstages: {}\ninstall: {}\n");
        assert_eq!(d.dialect, Dialect::CloudInit);
        // Only among the leading comments.
        let d = detect("users: []\n#cairn-dialect: kairos\n");
        assert_eq!(d.dialect, Dialect::CloudInit);
        let mut diags = Diagnostics::default();
        decide(
            "f",
            "#cairn-dialect: yip\na: 1\n",
            &[],
            Origin::File,
            &mut diags,
        );
        let e: Vec<String> = diags.errors().map(ToString::to_string).collect();
        assert!(e[0].starts_with("f:1:1") && e[0].contains("`yip`"), "{e:?}");
        let mut diags = Diagnostics::default();
        let d = decide(
            "f",
            "#cairn-dialect: cloud-init\n",
            &[],
            Origin::OsLayer(Some(Dialect::Kairos)),
            &mut diags,
        );
        assert_eq!(d.dialect, Dialect::CloudInit);
        assert!(diags.has_errors());
    }

    #[test]
    fn context_beats_content() {
        let text = "#cloud-config\nusers: [{name: a, passwd: a}]\n";
        let docs = yaml::parse(text).unwrap();
        let mut diags = Diagnostics::default();
        let d = decide(
            "f",
            text,
            &docs,
            Origin::OsLayer(Some(Dialect::Kairos)),
            &mut diags,
        );
        assert_eq!(d.dialect, Dialect::Kairos);
        assert!(diags.is_empty());
        // An os layer without `dialect:` is Kairos user-data (Palette's OS layer)…
        let d = decide("f", text, &docs, Origin::OsLayer(None), &mut diags);
        assert_eq!(d.dialect, Dialect::Kairos, "{d:?}");
        // …unless it says otherwise, on the layer or in its text.
        let d = decide(
            "f",
            text,
            &docs,
            Origin::OsLayer(Some(Dialect::CloudInit)),
            &mut diags,
        );
        assert_eq!(d.dialect, Dialect::CloudInit);
        let over = "#cairn-dialect: cloud-init\nusers: [{name: a, passwd: a}]\n";
        let d = decide("f", over, &docs, Origin::OsLayer(None), &mut diags);
        assert_eq!(d.dialect, Dialect::CloudInit);
        assert!(diags.is_empty());
    }
}
