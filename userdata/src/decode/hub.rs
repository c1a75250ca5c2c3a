//! `cairn:` (hub settings), Palette's `stylus:` alias, and `install:`.

use super::ctx::Ctx;
use super::values;
use crate::model::{HubSettings, InstallSettings};
use crate::yaml::Node;

const CAIRN_KEYS: &[&str] = &[
    "endpoint", "token", "site", "tags", "ca_certs", "proxy", "join",
];

pub fn decode_cairn(ctx: &mut Ctx, node: &Node) -> Option<HubSettings> {
    let mut hub = HubSettings {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    let mut join_node = None;
    for (key, value) in ctx.entries(node, "cairn") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "join" => join_node = Some(value),
            "endpoint" => hub.endpoint = endpoint(ctx, value),
            "token" => hub.token = ctx.string(value, "token"),
            "site" => hub.site = ctx.string(value, "site"),
            "tags" => hub.tags = tags(ctx, value),
            "ca_certs" => hub.ca_certs = cas(ctx, value),
            "proxy" => hub.proxy = ctx.string(value, "proxy"),
            _ => ctx.unknown_key(key, "cairn", CAIRN_KEYS),
        }
    }
    if let Some(value) = join_node {
        join(ctx, value, &mut hub);
    }
    Some(hub)
}

/// `cairn.join`: endpoint, token and the pin of the hub CA in one string (the format is
/// `cairn_proto::join`). Messages never quote it: it holds the token.
fn join(ctx: &mut Ctx, node: &Node, hub: &mut HubSettings) {
    if hub.endpoint.is_some() || hub.token.is_some() || !hub.ca_certs.is_empty() {
        ctx.error(
            node,
            "`join` already holds the endpoint, the token and the hub's CA: remove `endpoint`, \
             `token` and `ca_certs` from this block, or `join`",
        );
        return;
    }
    let Some(text) = ctx.string(node, "join") else {
        return;
    };
    match cairn_proto::join::Join::parse(&text) {
        Ok(j) => {
            hub.endpoint = Some(j.endpoint);
            hub.token = Some(j.token);
            hub.ca_pin = Some(j.ca_sha256);
        }
        Err(e) => ctx.error(node, e.to_string()),
    }
}

fn endpoint(ctx: &mut Ctx, node: &Node) -> Option<String> {
    let e = ctx.string(node, "endpoint")?;
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        ctx.error(node, "endpoint must not contain spaces");
        return None;
    }
    // Palette gives a bare host name; Cairn talks HTTPS to it.
    if e.starts_with("https://") || e.starts_with("http://") {
        Some(e)
    } else {
        Some(format!("https://{e}"))
    }
}

fn tags(ctx: &mut Ctx, node: &Node) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in ctx.entries(node, "tags") {
        if let (Some(k), Some(v)) = (ctx.string(k, "tag name"), ctx.string(v, "tag value")) {
            out.push((k, v));
        }
    }
    out
}

fn cas(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for item in ctx.items(node, "ca_certs") {
        if let Some(pem) = ctx.string(item, "a CA certificate") {
            match values::check_ca_pem(&pem) {
                Ok(_) => out.push(pem),
                Err(e) => ctx.error(item, e),
            }
        }
    }
    out
}

/// Palette's `stylus:` block, mapped onto the same settings.
pub fn decode_stylus(ctx: &mut Ctx, node: &Node) -> Option<HubSettings> {
    let mut hub = HubSettings {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    for (key, value) in ctx.entries(node, "stylus") {
        // registryCredentials, localUI, debug… belong to Palette; accepted, not used here.
        if key.scalar() != Some("site") {
            continue;
        }
        for (sk, sv) in ctx.entries(value, "stylus.site") {
            match sk.scalar().unwrap_or_default() {
                "paletteEndpoint" => hub.endpoint = endpoint(ctx, sv),
                "edgeHostToken" => hub.token = ctx.string(sv, "edgeHostToken"),
                "name" => hub.site = ctx.string(sv, "name"),
                "tags" => hub.tags = tags(ctx, sv),
                "caCerts" => hub.ca_certs = cas(ctx, sv),
                "network" => {
                    for (nk, nv) in ctx.entries(sv, "stylus.site.network") {
                        match nk.scalar().unwrap_or_default() {
                            "httpsProxy" => hub.proxy = ctx.string(nv, "httpsProxy"),
                            "httpProxy" if hub.proxy.is_none() => {
                                hub.proxy = ctx.string(nv, "httpProxy")
                            }
                            _ => {}
                        }
                    }
                }
                // Other Palette site keys (projectName, deviceUIDPaths…) are Palette's own.
                _ => {}
            }
        }
    }
    Some(hub)
}

/// `install:` keys Cairn's installer reads.
const INSTALL_KEYS: &[&str] = &["device", "reboot", "poweroff"];

/// Kairos installer keys (partitions, bind mounts, grub options…): accepted so a Kairos
/// config validates, but the Cairn installer does not act on them.
const KAIROS_INSTALL_KEYS: &[&str] = &[
    "auto",
    "no-format",
    "force",
    "partitions",
    "extra-partitions",
    "bind_mounts",
    "ephemeral_mounts",
    "grub_options",
    "grub-entry-name",
    "env",
    "image",
    "system",
    "recovery-system",
    "passive",
    "skip_copy_kcrypt_plugin",
    "encrypted_partitions",
    "nousers",
    "firmware",
    "part-table",
];

/// `install:` — where and how the installer's live environment installs: `device` (a path
/// under /dev, or `auto` for the only suitable disk), then `reboot` or `poweroff` (not both).
pub fn decode_install(ctx: &mut Ctx, node: &Node) -> InstallSettings {
    let mut install = InstallSettings {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    let mut reboot_node = None;
    for (key, value) in ctx.entries(node, "install") {
        match key.scalar().unwrap_or_default() {
            "device" => install.device = install_device(ctx, value),
            "reboot" => {
                install.reboot = ctx.boolean(value, "reboot").unwrap_or(false);
                reboot_node = Some(value);
            }
            "poweroff" => {
                install.poweroff = ctx.boolean(value, "poweroff").unwrap_or(false);
                reboot_node = reboot_node.or(Some(value));
            }
            k if KAIROS_INSTALL_KEYS.contains(&k) => {}
            _ => ctx.unknown_key(key, "install", INSTALL_KEYS),
        }
    }
    if install.reboot && install.poweroff {
        if let Some(n) = reboot_node {
            ctx.error(
                n,
                "install: `reboot` and `poweroff` are both true; choose one (neither: the \
                 installer stays at a shell)",
            );
        }
    }
    install
}

fn install_device(ctx: &mut Ctx, node: &Node) -> Option<String> {
    let d = ctx.string(node, "device")?;
    if d == "auto" {
        return None;
    }
    let bad = if !d.starts_with("/dev/") || d.len() <= "/dev/".len() {
        Some("must be a device path under /dev/ (e.g. /dev/sda, /dev/disk/by-id/…) or `auto`")
    } else if d.split('/').any(|c| c == "..") {
        Some("must not contain `..`")
    } else if d.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces")
    } else {
        None
    };
    match bad {
        Some(why) => {
            ctx.error(node, format!("install device {d:?} {why}"));
            None
        }
        None => Some(d),
    }
}
