//! `cairn:` (hub settings), Palette's `stylus:` alias, and `install:`.

use std::net::IpAddr;

use super::ctx::Ctx;
use super::{entries, values};
use crate::model::{
    AbsPath, Action, Conditions, Config, DnsSpec, FileSpec, Frequency, HubSettings,
    InstallSettings, KeySourceSettings, KeyValue, Mode, Owner, Step, UserSemantics,
};
use crate::yaml::Node;

const CAIRN_KEYS: &[&str] = &[
    "endpoint",
    "token",
    "site",
    "tags",
    "ca_certs",
    "proxy",
    "join",
    "key_sources",
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
            "key_sources" => hub.key_sources = key_sources(ctx, value),
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

/// `cairn.key_sources`: `github`/`gitlab` base URLs (https) and `ca_certs` trusted for them.
fn key_sources(ctx: &mut Ctx, node: &Node) -> KeySourceSettings {
    let mut out = KeySourceSettings::default();
    for (key, value) in ctx.entries(node, "key_sources") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "github" | "gitlab" => {
                let Some(url) = ctx.string(value, k) else {
                    continue;
                };
                if !url.starts_with("https://")
                    || url.len() <= "https://".len()
                    || url.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    ctx.error(value, format!("key_sources.{k} must be an https:// URL"));
                    continue;
                }
                if k == "github" {
                    out.github = Some(url);
                } else {
                    out.gitlab = Some(url);
                }
            }
            "ca_certs" => out.ca_certs = cas(ctx, value),
            _ => ctx.unknown_key(key, "key_sources", &["github", "gitlab", "ca_certs"]),
        }
    }
    out
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

/// `stylus:` keys and what Cairn does with those it does not map (each becomes a warning).
const STYLUS_UNSUPPORTED: &[(&str, &str)] = &[
    ("registryCredentials", "container registry credentials are not configured from user-data; give them in a cluster profile"),
    ("externalRegistries", "container registry mirrors are not configured from user-data; give them in a cluster profile"),
    ("imageRedirectWebhook", "Palette's image-redirect webhook is not deployed"),
    ("debug", "agent logging is set with `cairn-agent -v`"),
    ("trace", "agent logging is set with `cairn-agent -v`"),
    ("disablePasswordUpdate", "Cairn has no local UI"),
    ("disableTui", "Cairn has no console UI"),
    ("includeTui", "Cairn has no console UI"),
    ("enableMultiNode", "Cairn has no local UI"),
    ("localUI", "Cairn has no local UI"),
    ("featureGate", "Palette feature gates do not apply"),
    ("installationMode", "a Cairn host is managed by its hub (`cairn:`)"),
    ("managementMode", "a Cairn host is managed by its hub (`cairn:`)"),
    ("path", "the agent's install prefix is fixed"),
    ("vip", "kube-vip is not deployed by Cairn"),
];

const STYLUS_KEYS: &[&str] = &["site", "users"];

/// `stylus.site` keys Cairn does not act on, with the reason shown.
const SITE_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "projectName",
        "a Cairn hub has no projects; the host's profile follows its tags",
    ),
    (
        "projectUid",
        "a Cairn hub has no projects; the host's profile follows its tags",
    ),
    (
        "prefix",
        "the host registers under `name`, else its host name",
    ),
    (
        "deviceUIDPaths",
        "the host registers under `name`, else its host name",
    ),
    (
        "registrationURL",
        "there is no QR-code registration; the host registers with `edgeHostToken`",
    ),
    ("clusterId", "clusters are assigned on the hub"),
    ("clusterName", "clusters are assigned on the hub"),
    (
        "insecureSkipVerify",
        "the hub's certificate is always verified; give its CA in `caCerts`",
    ),
    ("tagsFromFile", "tags come from `tags:`"),
    ("tagsFromScript", "tags come from `tags:`"),
    ("remoteShell", "Cairn has no remote shell"),
];

const SITE_KEYS: &[&str] = &[
    "paletteEndpoint",
    "edgeHostToken",
    "name",
    "tags",
    "caCerts",
    "network",
    "hostName",
    "ntpServers",
    "users",
];

/// Palette's `stylus:` block: the hub settings (`site.paletteEndpoint`, `edgeHostToken`,
/// `name`, `tags`, `caCerts`, the proxy) and, as steps of stage `boot`, what it asks of the
/// host: `site.hostName`, `site.ntpServers`, `site.network` (static addresses as
/// systemd-networkd files, the global name server) and `site.users`. Every other key is
/// warned about by name.
pub fn decode_stylus(ctx: &mut Ctx, node: &Node, config: &mut Config) -> Option<HubSettings> {
    let mut hub = HubSettings {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    for (key, value) in ctx.entries(node, "stylus") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "site" => site(ctx, value, &mut hub, config),
            "users" => {
                if let Some(step) = users_step(ctx, key, value, "stylus.users") {
                    push_boot(ctx, config, step);
                }
            }
            _ => match STYLUS_UNSUPPORTED.iter().find(|(n, _)| *n == k) {
                Some((_, why)) => ctx.unsupported(key, "stylus", why),
                None => {
                    let mut known: Vec<&str> = STYLUS_KEYS.to_vec();
                    known.extend(STYLUS_UNSUPPORTED.iter().map(|(n, _)| *n));
                    ctx.unknown_key(key, "stylus", &known);
                }
            },
        }
    }
    Some(hub)
}

fn site(ctx: &mut Ctx, node: &Node, hub: &mut HubSettings, config: &mut Config) {
    for (sk, sv) in ctx.entries(node, "stylus.site") {
        let k = sk.scalar().unwrap_or_default();
        match k {
            "paletteEndpoint" => hub.endpoint = endpoint(ctx, sv),
            "edgeHostToken" => hub.token = ctx.string(sv, "edgeHostToken"),
            "name" => hub.site = ctx.string(sv, "name"),
            "tags" => hub.tags = tags(ctx, sv),
            "caCerts" => hub.ca_certs = cas(ctx, sv),
            "network" => network(ctx, sk, sv, hub, config),
            "hostName" => {
                if let Some(spec) = values::hostname(ctx, sk, sv, "hostName") {
                    config.push_step(
                        "boot",
                        step(ctx, "stylus.site.hostName", sk, Action::Hostname(spec)),
                    );
                }
            }
            "ntpServers" => {
                let mut servers = Vec::new();
                for (s, pos) in ctx.strings(sv, "ntpServers", true) {
                    if values::valid_hostname(&s).is_ok() || s.parse::<IpAddr>().is_ok() {
                        servers.push(s);
                    } else {
                        let loc = ctx.loc_at(pos);
                        ctx.diags.error(
                            loc,
                            format!("ntpServers: `{s}` is not a host name or address"),
                        );
                    }
                }
                if !servers.is_empty() {
                    let kv = KeyValue {
                        key: "NTP".into(),
                        value: servers.join(" "),
                        location: ctx.loc(sv),
                    };
                    config.push_step(
                        "boot",
                        step(
                            ctx,
                            "stylus.site.ntpServers",
                            sk,
                            Action::Timesyncd(vec![kv]),
                        ),
                    );
                }
            }
            "users" => {
                if let Some(step) = users_step(ctx, sk, sv, "stylus.site.users") {
                    push_boot(ctx, config, step);
                }
            }
            _ => match SITE_UNSUPPORTED.iter().find(|(n, _)| *n == k) {
                Some((_, why)) => ctx.unsupported(sk, "stylus.site", why),
                None => {
                    let mut known: Vec<&str> = SITE_KEYS.to_vec();
                    known.extend(SITE_UNSUPPORTED.iter().map(|(n, _)| *n));
                    ctx.unknown_key(sk, "stylus.site", &known);
                }
            },
        }
    }
}

fn step(ctx: &Ctx, name: &str, at: &Node, action: Action) -> Step {
    Step {
        name: name.into(),
        location: ctx.loc(at),
        conditions: Conditions::default(),
        frequency: Frequency::Once,
        actions: vec![action],
    }
}

/// Palette's users (`stylus.site.users`, and the undocumented `stylus.users`): a list of
/// user entries with yip's meaning (a plain `passwd` is hashed, accounts stay unlocked).
fn users_step(ctx: &mut Ctx, key: &Node, node: &Node, name: &str) -> Option<Step> {
    let mut users = Vec::new();
    for item in ctx.items(node, name) {
        if let Some(u) = entries::user(ctx, item, None, UserSemantics::Yip) {
            users.push(u);
        }
    }
    if users.is_empty() {
        return None;
    }
    Some(step(ctx, name, key, Action::Users(users)))
}

/// Push a step of stage `boot`; its `github:`/`gitlab:` keys go to stage `network`.
fn push_boot(ctx: &mut Ctx, config: &mut Config, mut step: Step) {
    let later = super::stages::keys_to_fetch_later(ctx, "boot", &mut step);
    config.push_step("boot", step);
    if let Some(later) = later {
        config.push_step("network", later);
    }
}

/// `stylus.site.network`: the proxy for the hub connection, the global name server (a
/// `dns:` step), and `interfaces.<NIC>` as systemd-networkd `.network` files
/// (`/etc/systemd/network/10-cairn-NIC.network`; `type: dhcp` or `static` with
/// `ipAddress` (`A.B.C.D/N`, or with `mask`), `gateway`, `nameserver`).
fn network(ctx: &mut Ctx, key: &Node, node: &Node, hub: &mut HubSettings, config: &mut Config) {
    let mut files = Vec::new();
    let mut dns = None;
    for (nk, nv) in ctx.entries(node, "stylus.site.network") {
        let k = nk.scalar().unwrap_or_default();
        match k {
            "httpsProxy" => hub.proxy = ctx.string(nv, "httpsProxy"),
            "httpProxy" => {
                let p = ctx.string(nv, "httpProxy");
                if hub.proxy.is_none() {
                    hub.proxy = p;
                }
            }
            "noProxy" => ctx.unsupported(
                nk,
                "stylus.site.network",
                "Cairn uses the proxy for its hub connection only, and that always goes through it",
            ),
            "nameserver" => {
                let servers = addresses(ctx, nv, "nameserver");
                if let (false, Ok(path)) = (servers.is_empty(), AbsPath::parse("/etc/resolv.conf"))
                {
                    dns = Some(DnsSpec {
                        nameservers: servers,
                        search: Vec::new(),
                        options: Vec::new(),
                        path,
                        location: ctx.loc(nv),
                    });
                }
            }
            "interfaces" => {
                for (nic, spec) in ctx.entries(nv, "stylus.site.network.interfaces") {
                    if let Some(f) = interface(ctx, nic, spec) {
                        files.push(f);
                    }
                }
            }
            _ => ctx.unknown_key(
                nk,
                "stylus.site.network",
                &[
                    "httpProxy",
                    "httpsProxy",
                    "noProxy",
                    "nameserver",
                    "interfaces",
                ],
            ),
        }
    }
    let mut actions = Vec::new();
    if !files.is_empty() {
        actions.push(Action::Files(files));
    }
    if let Some(d) = dns {
        actions.push(Action::Dns(d));
    }
    if !actions.is_empty() {
        let mut s = step(ctx, "stylus.site.network", key, Action::Files(Vec::new()));
        s.actions = actions;
        config.push_step("boot", s);
    }
}

/// IP addresses, one or a list (a comma-separated string too).
fn addresses(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (a, pos) in ctx.strings(node, what, true) {
        match a.parse::<IpAddr>() {
            Ok(_) => out.push(a),
            Err(_) => {
                let loc = ctx.loc_at(pos);
                ctx.diags
                    .error(loc, format!("{what}: `{a}` is not an IP address"));
            }
        }
    }
    out
}

/// One `interfaces.<NIC>` entry as a systemd-networkd `.network` file.
fn interface(ctx: &mut Ctx, nic_node: &Node, node: &Node) -> Option<FileSpec> {
    let nic = ctx.string(nic_node, "an interface name")?;
    let nic_ok = !nic.is_empty()
        && nic.len() <= 15
        && !nic.starts_with(['-', '.'])
        && nic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !nic_ok {
        ctx.error(nic_node, format!("`{nic}` is not a network interface name"));
        return None;
    }
    let mut kind = None;
    let mut address = None;
    let mut mask = None;
    let mut gateway = None;
    let mut nameservers = Vec::new();
    for (k, v) in ctx.entries(node, "an interface") {
        match k.scalar().unwrap_or_default() {
            "type" => kind = ctx.string(v, "type").map(|t| (t, v)),
            "ipAddress" => address = ctx.string(v, "ipAddress").map(|a| (a, v)),
            "mask" => mask = ctx.string(v, "mask").map(|m| (m, v)),
            "gateway" => gateway = addresses(ctx, v, "gateway").into_iter().next(),
            "nameserver" => nameservers = addresses(ctx, v, "nameserver"),
            _ => ctx.unknown_key(
                k,
                "an interface",
                &["type", "ipAddress", "mask", "gateway", "nameserver"],
            ),
        }
    }
    let static_ = match kind.as_ref().map(|(t, n)| (t.as_str(), *n)) {
        Some(("static", _)) => true,
        Some(("dhcp", _)) => false,
        Some((other, n)) => {
            ctx.error(
                n,
                format!("interface type `{other}` must be `dhcp` or `static`"),
            );
            return None;
        }
        None => address.is_some(),
    };
    let mut body = format!(
        "# Written by Cairn from user-data (stylus.site.network.interfaces.{nic})\n[Match]\nName={nic}\n\n[Network]\n"
    );
    if static_ {
        let Some((addr, addr_node)) = address else {
            ctx.error(
                node,
                format!("static interface `{nic}` needs an `ipAddress`"),
            );
            return None;
        };
        let cidr = match (addr.split_once('/'), &mask) {
            (Some((ip, len)), _) => {
                let ok = ip.parse::<IpAddr>().is_ok_and(|ip| {
                    len.parse::<u8>()
                        .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
                });
                ok.then(|| addr.clone())
            }
            (None, Some((m, _))) => match (addr.parse::<IpAddr>(), prefix_of(m)) {
                (Ok(_), Some(len)) => Some(format!("{addr}/{len}")),
                _ => None,
            },
            (None, None) => {
                ctx.error(
                    addr_node,
                    format!("ipAddress `{addr}` needs a prefix length (`{addr}/24`) or a `mask`"),
                );
                return None;
            }
        };
        let Some(cidr) = cidr else {
            ctx.error(
                addr_node,
                format!("ipAddress `{addr}` (with its mask) is not an address/prefix"),
            );
            return None;
        };
        body.push_str(&format!("Address={cidr}\n"));
        if let Some(g) = gateway {
            body.push_str(&format!("Gateway={g}\n"));
        }
    } else {
        body.push_str("DHCP=yes\n");
    }
    for ns in nameservers {
        body.push_str(&format!("DNS={ns}\n"));
    }
    Some(FileSpec {
        path: AbsPath::parse(&format!("/etc/systemd/network/10-cairn-{nic}.network")).ok()?,
        content: body.into_bytes(),
        mode: Some(Mode(0o644)),
        owner: Some(Owner::Id(0)),
        group: Some(Owner::Id(0)),
        append: false,
        location: ctx.loc(nic_node),
    })
}

/// The prefix length of a dotted IPv4 mask (`255.255.255.0` → 24); `None` unless the ones
/// are contiguous.
fn prefix_of(mask: &str) -> Option<u32> {
    let m: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len)
}

/// `install:` keys Cairn's installer reads.
const INSTALL_KEYS: &[&str] = &["device", "reboot", "poweroff"];

/// Kairos installer keys the Cairn installer does not act on, with the reason shown in
/// their warning (Cairn writes a whole disk image; partitions and boot entries are the
/// image's).
const KAIROS_INSTALL_KEYS: &[(&str, &str)] = &[
    (
        "auto",
        "the install ISO always installs unattended when it carries user-data",
    ),
    ("no-format", "the installer writes a whole disk image"),
    ("force", "the installer writes a whole disk image"),
    ("partitions", "partitions are the disk image's"),
    ("extra-partitions", "partitions are the disk image's"),
    ("part-table", "partitions are the disk image's"),
    (
        "bind_mounts",
        "the installed system is an ordinary read-write root",
    ),
    (
        "ephemeral_mounts",
        "the installed system is an ordinary read-write root",
    ),
    (
        "extra-dirs-rootfs",
        "the installed system is an ordinary read-write root",
    ),
    ("grub_options", "the boot loader is managed by the image"),
    ("grub-entry-name", "the boot loader is managed by the image"),
    ("env", "the installer's environment is fixed"),
    ("image", "the image is the one the install ISO carries"),
    ("source", "the image is the one the install ISO carries"),
    ("system", "the image is the one the install ISO carries"),
    ("recovery-system", "Cairn has no recovery image"),
    ("passive", "Cairn has no A/B images"),
    ("bundles", "Kairos bundles are not installed"),
    (
        "skip_copy_kcrypt_plugin",
        "Kairos disk encryption is not set up",
    ),
    (
        "encrypted_partitions",
        "Kairos disk encryption is not set up",
    ),
    ("nousers", "the installer does not require a user"),
    ("firmware", "the image decides how it boots"),
    ("ssh_hardening", "sshd configuration is not managed"),
    (
        "allow-insecure-registries",
        "no container image is pulled at install",
    ),
];

/// `install:` — where and how the installer's live environment installs: `device` (a path
/// under /dev, or `auto` for the only suitable disk), then `reboot` or `poweroff`. With both,
/// the host reboots: kairos-agent's lifecycle hook checks `reboot` first and the reboot
/// never returns, so its `poweroff` never happens; Cairn does the same and says so.
pub fn decode_install(ctx: &mut Ctx, node: &Node) -> InstallSettings {
    let mut install = InstallSettings {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    let mut poweroff_node = None;
    for (key, value) in ctx.entries(node, "install") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "device" => install.device = install_device(ctx, value),
            "reboot" => install.reboot = ctx.boolean(value, "reboot").unwrap_or(false),
            "poweroff" => {
                install.poweroff = ctx.boolean(value, "poweroff").unwrap_or(false);
                poweroff_node = Some(key);
            }
            _ => match KAIROS_INSTALL_KEYS.iter().find(|(n, _)| *n == k) {
                Some((_, why)) => ctx.unsupported(key, "install", why),
                None => ctx.unknown_key(key, "install", INSTALL_KEYS),
            },
        }
    }
    if install.reboot && install.poweroff {
        install.poweroff = false;
        if let Some(n) = poweroff_node {
            ctx.warning(
                n,
                "install: `reboot` and `poweroff` are both true: the host reboots, as with \
                 Kairos (its agent reboots first, so the power-off never happens); remove one",
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
