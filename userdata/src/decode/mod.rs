//! Decoding user-data documents into the typed [`Config`].
//!
//! One pass over each document's top-level keys: `stages:` (Kairos/yip format, see
//! [`stages`]), cloud-init keys ([`cloudinit`]), `cairn:`/`stylus:` ([`hub`]) and `install:`.
//! Everything found wrong is reported with its location; nothing stops at the first error.

mod cloudinit;
mod ctx;
pub mod dialect;
mod entries;
mod hub;
mod stages;
pub mod values;

use std::sync::Arc;

pub use ctx::{suggest, Ctx, DecodeBudget};
pub use entries::{is_ssh_public_key, looks_like_crypt};

use crate::diag::{Diagnostics, Location, Pos};
use crate::model::Config;
use crate::yaml::{self, Node, NodeKind};

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
    decode_text_with(file, text, dialect::Origin::File, diags)
}

/// [`decode_text`] for text whose origin bears on its dialect (a cluster profile's os
/// layer); see [`dialect::decide`].
pub fn decode_text_with(
    file: &str,
    text: &str,
    context: dialect::Origin,
    diags: &mut Diagnostics,
) -> Config {
    decode_text_within(file, text, context, diags, &mut DecodeBudget::new())
}

/// [`decode_text_with`] under a decoding budget shared with other files of the same load.
pub fn decode_text_within(
    file: &str,
    text: &str,
    context: dialect::Origin,
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
    let detected = dialect::decide(&file, text, &docs, context, diags);
    let mut config = Config::default();
    for doc in &docs {
        let mut ctx = Ctx::new(Arc::clone(&file), diags, budget);
        ctx.dialect = detected.dialect;
        ctx.dialect_reason = detected.reason.clone();
        config.merge(decode_document(&mut ctx, doc));
    }
    config
}

/// Top-level keys of Kairos's own configuration that Cairn does not act on, each with the
/// reason shown in its warning (the Kubernetes ones get [`kubernetes_hint`]).
pub const KAIROS_KEYS: &[(&str, &str)] = &[
    ("upgrade", "upgrades come from a cluster profile or a new image, not from user-data"),
    ("reset", "Cairn has no reset or recovery image"),
    ("config_url", "remote user-data is not fetched; give the agent the files"),
    ("options", "options of the Kairos agent do not apply"),
    ("bundles", "Kairos bundles are not installed; use a cluster profile's addons layer or a `downloads:` step"),
    ("fail_on_bundles_errors", "Kairos bundles are not installed"),
    ("grub_options", "the boot loader is managed by the image"),
    ("env", "the Kairos agent's environment does not apply; use an `environment:` step"),
    ("debug", "Kairos agent logging; run `cairn-agent -v` instead"),
    ("strict", "Cairn always stops a stage at its first failing step"),
    ("cloud-init-paths", "Cairn reads /oem and /usr/local/cloud-config, or the files it is given"),
    ("eject-cd", "install media are handled by cairn-installer"),
    ("cosign", "image signatures are not checked from user-data; artifacts are pinned by sha256"),
    ("verify", "image signatures are not checked from user-data; artifacts are pinned by sha256"),
    ("cosign-key", "image signatures are not checked from user-data; artifacts are pinned by sha256"),
    ("arch", "the architecture is the target's own"),
    ("squash-compression", "Kairos image builds do not apply"),
    ("squash-no-compression", "Kairos image builds do not apply"),
    ("uki-max-entries", "Kairos UKI boot entries do not apply"),
    ("bind-pcrs", "Kairos TPM-bound encryption is not set up"),
    ("bind-public-pcrs", "Kairos TPM-bound encryption is not set up"),
    ("kcrypt", "Kairos TPM-bound encryption is not set up"),
    ("logs", "Kairos log collection does not apply; progress is reported as events"),
    ("p2p", "Kairos's peer-to-peer cluster formation is not run; Kubernetes comes from a cluster profile's kubernetes layer"),
    ("kubevip", "Kairos's kube-vip set-up is not run; Kubernetes comes from a cluster profile"),
    ("cluster", "Kairos cluster providers are not run; Kubernetes comes from a cluster profile's kubernetes layer"),
    ("phonehome", "the agent reports to its hub (`cairn:`)"),
    ("providers", "Kairos provider plugins are not run"),
    ("k3s", ""),
    ("k3s-agent", ""),
    ("k0s", ""),
    ("k0s-worker", ""),
];

/// The top-level key `name` (yip's configuration name) is a label only: it names nothing
/// on the system, so it is accepted without a warning.
const LABEL_KEYS: &[&str] = &["name"];

fn decode_document(ctx: &mut Ctx, doc: &Node) -> Config {
    let mut config = Config::default();
    if doc.is_null() {
        return config;
    }
    let entries = ctx.entries(doc, "a user-data document");
    let mut cloud = cloudinit::CloudInit::default();
    let mut document_on_failure = None;
    for (key, value) in entries {
        let Some(name) = key.scalar() else { continue };
        match name {
            "stages" => stages::decode(ctx, value, &mut config),
            "on_failure" => document_on_failure = stages::on_failure_value(ctx, value),
            "cairn" => config.hub = hub::decode_cairn(ctx, value),
            "stylus" => {
                let hub = hub::decode_stylus(ctx, value, &mut config);
                config.hub = hub;
            }
            "install" => config.install = Some(hub::decode_install(ctx, value)),
            k if cloudinit::is_cloud_init_key(k) => cloud.take(ctx, key, value),
            k if LABEL_KEYS.contains(&k) => {}
            k if KAIROS_KEYS.iter().any(|(n, _)| *n == k) => {
                let why = KAIROS_KEYS
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map_or("", |(_, why)| *why);
                if why.is_empty() {
                    let hint = kubernetes_hint(k, value);
                    ctx.warning(key, hint);
                } else {
                    ctx.unsupported(key, "a Kairos configuration", why);
                }
            }
            _ => {
                let mut known: Vec<&str> =
                    vec!["stages", "cairn", "stylus", "install", "on_failure"];
                known.extend(cloudinit::IMPLEMENTED);
                ctx.unknown_key(key, "the document's top level", &known);
            }
        }
    }
    cloud.into_steps(ctx, &mut config);
    // A document's `on_failure:` is the default of its steps; a step's own value wins.
    if let Some(policy) = document_on_failure {
        for stage in &config.stages {
            for step in &stage.steps {
                config
                    .on_failure
                    .entry(step.location.clone())
                    .or_insert(policy);
            }
        }
    }
    config
}

/// The warning for a Kairos Kubernetes block (`k3s:`, `k3s-agent:`, `k0s:`): Cairn installs
/// Kubernetes from a cluster profile's `kubernetes` layer, not from user-data; for k3s the
/// `args` are translated into that layer's `values:` so the user can copy them.
pub fn kubernetes_hint(key: &str, value: &Node) -> String {
    let role = if key.ends_with("-agent") || key.ends_with("-worker") {
        "agent"
    } else {
        "server"
    };
    if key.starts_with("k0s") {
        return format!(
            "`{key}` is not applied: Cairn does not install k0s, and installs Kubernetes only \
             from a cluster profile's `kubernetes` layer (flavors k3s, rke2, kubeadm; role {role})"
        );
    }
    let mut msg = format!(
        "`{key}` is not applied from user-data: Cairn installs k3s from a cluster profile's \
         `kubernetes` layer (`flavor: k3s`, `role: {role}`, plus `server` and `token` to join)"
    );
    let args: Vec<String> = value
        .get("args")
        .map(|a| match &a.kind {
            NodeKind::Seq(items) => items
                .iter()
                .filter_map(|i| i.scalar().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    let values = k3s_args_to_values(&args);
    if !values.is_empty() {
        msg.push_str(&format!(
            "; its `args` there are `values: {}`",
            serde_json::Value::Object(values)
        ));
    }
    if value.get("env").is_some() {
        msg.push_str("; `env` has no equivalent (k3s reads its settings from the layer's values)");
    }
    msg
}

/// k3s command-line flags as keys of its configuration file (what a kubernetes layer's
/// `values:` hold): `--disable=traefik` → `disable: traefik`, a bare `--flag` → `true`, a
/// repeated flag → a list.
fn k3s_args_to_values(args: &[String]) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].trim();
        i += 1;
        let Some(flag) = a.strip_prefix("--") else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Value::String(v.to_string())),
            None => match args.get(i).filter(|next| !next.starts_with('-')) {
                Some(next) => {
                    i += 1;
                    (flag, Value::String(next.clone()))
                }
                None => (flag, Value::Bool(true)),
            },
        };
        match out.get_mut(name) {
            Some(Value::Array(list)) => list.push(value),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, value]);
            }
            None => {
                out.insert(name.to_string(), value);
            }
        }
    }
    out
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
