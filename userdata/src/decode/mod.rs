//! Decoding user-data documents into the typed [`Config`].
//!
//! One pass over each document's top-level keys: `stages:` (Kairos/yip format, see
//! [`stages`]), cloud-init keys ([`cloudinit`]), `cairn:`/`stylus:` ([`hub`]) and `install:`.
//! Everything found wrong is reported with its location; nothing stops at the first error.

mod cloudinit;
mod ctx;
mod entries;
mod hub;
mod stages;
pub mod values;

use std::sync::Arc;

pub use ctx::{suggest, Ctx, DecodeBudget};

use crate::diag::{Diagnostics, Location, Pos};
use crate::model::Config;
use crate::yaml::{self, Node};

/// The header lines Cairn recognises among a file's leading comments.
pub const HEADERS: [&str; 3] = ["#cloud-config", "#kairos-config", "#node-config"];

/// Which header a file carries, if any (looked for among its leading comment lines).
pub fn header(text: &str) -> Option<&'static str> {
    for line in text.lines().take(10) {
        let t = line.trim_end();
        if t.is_empty() {
            continue;
        }
        if !t.starts_with('#') {
            return None;
        }
        if let Some(h) = HEADERS.iter().find(|h| **h == t) {
            return Some(h);
        }
    }
    None
}

/// Decode one user-data file's text. Problems go into `diags`; the returned config holds
/// everything that decoded cleanly (callers refuse to apply when `diags.has_errors()`).
pub fn decode_text(file: &str, text: &str, diags: &mut Diagnostics) -> Config {
    decode_text_within(file, text, diags, &mut DecodeBudget::new())
}

/// [`decode_text`] with a decoding budget shared with other files of the same load.
pub fn decode_text_within(
    file: &str,
    text: &str,
    diags: &mut Diagnostics,
    budget: &mut DecodeBudget,
) -> Config {
    let file: Arc<str> = Arc::from(file);
    let first = text.lines().next().unwrap_or_default();
    if first.starts_with("#!") {
        diags.error(
            Location::new(&file, Pos { line: 1, col: 1 }),
            "this is a script, not a cloud-config or stages document; Cairn does not execute \
             user-data scripts (put the commands under `runcmd:` or a stage's `commands:`)",
        );
        return Config::default();
    }
    if first.to_ascii_lowercase().starts_with("content-type:")
        || first.to_ascii_lowercase().starts_with("mime-version:")
    {
        diags.error(
            Location::new(&file, Pos { line: 1, col: 1 }),
            "MIME multi-part user-data is not supported; give each part as its own file",
        );
        return Config::default();
    }
    if first.trim_start().starts_with("## template:") {
        diags.warning(
            Location::new(&file, Pos { line: 1, col: 1 }),
            "Jinja templates (`## template: jinja`) are not rendered by Cairn; the text is used as is",
        );
    }
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            diags.error(Location::new(&file, e.pos), e.message);
            return Config::default();
        }
    };
    let mut config = Config::default();
    for doc in &docs {
        let mut ctx = Ctx::new(Arc::clone(&file), diags, budget);
        config.merge(decode_document(&mut ctx, doc));
    }
    config
}

/// Top-level keys Kairos reads for its own configuration; Cairn accepts and ignores them.
const KAIROS_KEYS: &[&str] = &[
    "upgrade",
    "reset",
    "config_url",
    "options",
    "bundles",
    "fail_on_bundles_errors",
    "grub_options",
    "env",
    "debug",
    "strict",
    "cloud-init-paths",
    "eject-cd",
    "cosign",
    "verify",
    "cosign-key",
    "arch",
    "logs",
    "k3s",
    "k3s-agent",
    "k0s",
    "k0s-worker",
    "p2p",
    "kubevip",
    "cluster",
    "phonehome",
    "kcrypt",
    "providers",
    "name",
];

fn decode_document(ctx: &mut Ctx, doc: &Node) -> Config {
    let mut config = Config::default();
    if doc.is_null() {
        return config;
    }
    let entries = ctx.entries(doc, "a user-data document");
    let mut cloud = cloudinit::CloudInit::default();
    for (key, value) in entries {
        let Some(name) = key.scalar() else { continue };
        match name {
            "stages" => stages::decode(ctx, value, &mut config),
            "cairn" => config.hub = hub::decode_cairn(ctx, value),
            "stylus" => config.hub = hub::decode_stylus(ctx, value),
            "install" => config.install = Some(hub::decode_install(ctx, value)),
            k if cloudinit::is_cloud_init_key(k) => cloud.take(ctx, key, value),
            k if KAIROS_KEYS.contains(&k) => {}
            _ => {
                let mut known: Vec<&str> = vec!["stages", "cairn", "stylus", "install"];
                known.extend(cloudinit::IMPLEMENTED);
                ctx.unknown_key(key, "the document's top level", &known);
            }
        }
    }
    cloud.into_steps(ctx, &mut config);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_among_leading_comments() {
        assert_eq!(header("#cloud-config\na: 1"), Some("#cloud-config"));
        assert_eq!(header("# hi\n\n#node-config\n"), Some("#node-config"));
        assert_eq!(header("stages: {}\n#cloud-config"), None);
        assert_eq!(header("#kairos-config   \n"), Some("#kairos-config"));
    }

    #[test]
    fn scripts_and_mime_are_refused_with_line_one() {
        let mut d = Diagnostics::default();
        decode_text("u.sh", "#!/bin/sh\necho hi\n", &mut d);
        assert!(d.has_errors());
        let mut d = Diagnostics::default();
        decode_text("m", "Content-Type: multipart/mixed\n", &mut d);
        assert_eq!(d.errors().next().unwrap().location.pos.line, 1);
    }
}
