//! cloud-init top-level keys, mapped onto Cairn steps with cloud-init's semantics.
//!
//! Each implemented module becomes one step named after it, placed in cloud-init's own
//! module order: the `init` and `config` modules (bootcmd, write_files, hostname, ca_certs,
//! users_groups, ssh, ntp, timezone) in stage `boot`; what cloud-init runs once the network
//! is up (apt/yum sources, packages, runcmd, deferred write_files) in stage `network`.
//! Modules Cairn does not implement are warned about by name.

use super::ctx::Ctx;
use super::stages::{commands, package_refs, valid_timezone};
use super::{entries, values};
use crate::model::{
    AbsPath, Action, AuthorizedKeysSpec, Conditions, Config, Dialect, FileSpec, Frequency,
    HostnameSpec, HostsLine, KeyValue, Located, Mode, Owner, PackageSpec, PpaSource, Step,
    UserSemantics, UserSpec,
};
use crate::yaml::{Node, NodeKind};

/// cloud-init keys Cairn implements.
pub const IMPLEMENTED: &[&str] = &[
    "users",
    "groups",
    "ssh_authorized_keys",
    "write_files",
    "ca_certs",
    "ca-certs",
    "packages",
    "package_update",
    "package_upgrade",
    "apt_update",
    "apt_upgrade",
    "runcmd",
    "bootcmd",
    "hostname",
    "fqdn",
    "timezone",
    "ntp",
    "apt",
    "yum_repos",
    "prefer_fqdn_over_hostname",
    "preserve_hostname",
    "create_hostname_file",
];

/// Keys of the cloud-config schema Cairn accepts but does not act on, with the reason shown.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("allow_public_ssh_keys", "sshd configuration is not managed"),
    ("ansible", "configuration-management agents are not run"),
    ("apk_repos", "Alpine repositories are not configured"),
    ("apt_pipelining", "apt tuning is not managed"),
    (
        "apt_reboot_if_required",
        "reboots are not scheduled by user-data",
    ),
    ("authkey_hash", "sshd configuration is not managed"),
    ("autoinstall", "Ubuntu autoinstall is not supported"),
    ("byobu_by_default", "byobu is not configured"),
    ("chef", "configuration-management agents are not run"),
    ("chpasswd", "set passwords with a user's `passwd`"),
    (
        "cloud_config_modules",
        "cloud-init module lists do not apply",
    ),
    (
        "cloud_final_modules",
        "cloud-init module lists do not apply",
    ),
    ("cloud_init_modules", "cloud-init module lists do not apply"),
    ("device_aliases", "disks are set up by the installer"),
    ("disable_ec2_metadata", "cloud metadata is not used"),
    ("disable_root", "sshd configuration is not managed"),
    ("disable_root_opts", "sshd configuration is not managed"),
    ("disk_setup", "disks are set up by the installer"),
    ("drivers", "drivers are not installed by user-data"),
    ("fan", "Ubuntu fan networking is not configured"),
    ("final_message", "progress is reported as events"),
    ("fs_setup", "filesystems are set up by the installer"),
    (
        "growpart",
        "the root partition is grown by the image's first boot",
    ),
    ("grub-dpkg", "the boot loader is managed by the image"),
    ("grub_dpkg", "the boot loader is managed by the image"),
    ("keyboard", "keyboard layout is not configured"),
    ("landscape", "configuration-management agents are not run"),
    ("launch-index", "cloud metadata is not used"),
    ("locale", "locales are not configured"),
    ("locale_configfile", "locales are not configured"),
    ("lxd", "LXD is not configured"),
    (
        "manage_etc_hosts",
        "/etc/hosts is only updated for the hostname",
    ),
    ("manage_resolv_conf", "use a stage's `dns:` step"),
    ("mcollective", "configuration-management agents are not run"),
    ("merge_how", "files merge in lexical order"),
    ("merge_type", "files merge in lexical order"),
    ("migrate", "cloud-init semaphores do not apply"),
    ("mount_default_fields", "mounts are not managed"),
    ("mounts", "mounts are not managed"),
    ("no_ssh_fingerprints", "sshd configuration is not managed"),
    ("output", "logging goes to the journal and events"),
    (
        "package_reboot_if_required",
        "reboots are not scheduled by user-data",
    ),
    ("password", "set passwords with a user's `passwd`"),
    ("phone_home", "the agent reports to its hub"),
    (
        "power_state",
        "power changes are not scheduled by user-data",
    ),
    ("puppet", "configuration-management agents are not run"),
    ("random_seed", "the kernel seeds its own entropy"),
    ("reporting", "progress is reported as events"),
    (
        "resize_rootfs",
        "the root partition is grown by the image's first boot",
    ),
    ("resolv_conf", "use a stage's `dns:` step"),
    ("rh_subscription", "Red Hat subscriptions are not managed"),
    ("rpi", "Raspberry Pi interfaces are not configured"),
    ("rsyslog", "rsyslog is not configured"),
    ("salt_minion", "configuration-management agents are not run"),
    ("snap", "snaps are not installed"),
    ("spacewalk", "Spacewalk is not supported"),
    ("ssh", "sshd configuration is not managed"),
    ("ssh_deletekeys", "SSH host keys are not managed"),
    ("ssh_fp_console_blacklist", "SSH host keys are not managed"),
    ("ssh_genkeytypes", "SSH host keys are not managed"),
    (
        "ssh_import_id",
        "keys are not fetched from Launchpad/GitHub",
    ),
    ("ssh_key_console_blacklist", "SSH host keys are not managed"),
    ("ssh_keys", "SSH host keys are not managed"),
    ("ssh_publish_hostkeys", "SSH host keys are not managed"),
    ("ssh_pwauth", "sshd configuration is not managed"),
    ("ssh_quiet_keygen", "SSH host keys are not managed"),
    ("swap", "swap is not managed"),
    (
        "system_info",
        "distro defaults come from the target's os-release",
    ),
    ("ubuntu_advantage", "Ubuntu Pro is not managed"),
    ("ubuntu_pro", "Ubuntu Pro is not managed"),
    ("updates", "network configuration updates are not managed"),
    (
        "user",
        "no distro default user exists; list users under `users:`",
    ),
    ("vendor_data", "vendor data is not used"),
    ("version", "not used"),
    ("wireguard", "WireGuard is not configured"),
    ("yum_repo_dir", "repositories go to /etc/yum.repos.d"),
    ("zypper", "zypper repositories are not configured"),
];

pub fn is_cloud_init_key(key: &str) -> bool {
    IMPLEMENTED.contains(&key) || UNSUPPORTED.iter().any(|(k, _)| *k == key)
}

/// The cloud-init keys of one document, gathered before being turned into steps.
#[derive(Default)]
pub struct CloudInit<'n> {
    keys: Vec<(&'n Node, &'n Node)>,
}

impl<'n> CloudInit<'n> {
    pub fn take(&mut self, ctx: &mut Ctx, key: &'n Node, value: &'n Node) {
        let name = key.scalar().unwrap_or_default();
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == name) {
            ctx.unsupported(key, "cloud-config", why);
            return;
        }
        self.keys.push((key, value));
    }

    fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.keys
            .iter()
            .find(|(k, _)| k.scalar() == Some(name))
            .copied()
    }

    pub fn into_steps(self, ctx: &mut Ctx, config: &mut Config) {
        if self.keys.is_empty() {
            return;
        }
        let mut boot: Vec<Step> = Vec::new();
        let mut network: Vec<Step> = Vec::new();
        let mk = |ctx: &Ctx, name: &str, at: &Node, freq: Frequency, actions: Vec<Action>| Step {
            name: name.to_string(),
            location: ctx.loc(at),
            conditions: Conditions::default(),
            frequency: freq,
            actions,
        };

        if let Some((k, v)) = self.get("bootcmd") {
            let cmds = commands(ctx, v, "bootcmd");
            boot.push(mk(
                ctx,
                "bootcmd",
                k,
                Frequency::PerBoot,
                vec![Action::Commands(cmds)],
            ));
        }
        let mut deferred = Vec::new();
        if let Some((k, v)) = self.get("write_files") {
            let mut now = Vec::new();
            for item in ctx.items(v, "write_files") {
                if let Some((mut spec, defer)) = entries::file(ctx, item) {
                    // cloud-init defaults: root:root, 0644.
                    spec.mode.get_or_insert(Mode(0o644));
                    if defer {
                        deferred.push(spec);
                    } else {
                        now.push(spec);
                    }
                }
            }
            boot.push(mk(
                ctx,
                "write_files",
                k,
                Frequency::Once,
                vec![Action::Files(now)],
            ));
        }
        if let Some(step) = self.hostname(ctx) {
            boot.push(step);
        }
        if let Some((k, v)) = self.get("ca_certs").or_else(|| self.get("ca-certs")) {
            if k.scalar() == Some("ca-certs") {
                ctx.warning(k, "`ca-certs` is deprecated; write `ca_certs`");
            }
            let spec = entries::certificates(ctx, v);
            boot.push(mk(
                ctx,
                "ca_certs",
                k,
                Frequency::Once,
                vec![Action::Certificates(spec)],
            ));
        }
        self.users_groups(ctx, &mut boot, &mut network);
        if let Some((k, v)) = self.get("ntp") {
            if let Some(action) = ntp(ctx, v) {
                boot.push(mk(ctx, "ntp", k, Frequency::Once, vec![action]));
            }
        }
        if let Some((k, v)) = self.get("timezone") {
            if let Some(tz) = ctx.string(v, "timezone") {
                if valid_timezone(&tz) {
                    let action = Action::Timezone(Located {
                        value: tz,
                        location: ctx.loc(v),
                    });
                    boot.push(mk(ctx, "timezone", k, Frequency::Once, vec![action]));
                } else {
                    ctx.error(v, format!("`{tz}` is not a valid time zone name"));
                }
            }
        }
        let mut repo_files = Vec::new();
        let mut repo_at = None;
        let mut ppas = Vec::new();
        if let Some((k, v)) = self.get("apt") {
            let (files, found) = apt(ctx, v);
            repo_files.extend(files);
            ppas = found;
            repo_at = Some(k);
        }
        if let Some((k, v)) = self.get("yum_repos") {
            repo_files.extend(yum_repos(ctx, v));
            repo_at.get_or_insert(k);
        }
        if let Some(at) = repo_at {
            let name = if at.scalar() == Some("apt") {
                "apt_configure"
            } else {
                "yum_add_repo"
            };
            let mut actions = Vec::new();
            if !ppas.is_empty() {
                actions.push(Action::AptPpa(ppas));
            }
            actions.push(Action::Files(repo_files));
            network.push(mk(ctx, name, at, Frequency::Once, actions));
        }
        if let Some(step) = self.packages(ctx) {
            network.push(step);
        }
        if let Some((k, v)) = self.get("runcmd") {
            let cmds = commands(ctx, v, "runcmd");
            network.push(mk(
                ctx,
                "runcmd",
                k,
                Frequency::Once,
                vec![Action::Commands(cmds)],
            ));
        }
        if !deferred.is_empty() {
            if let Some((k, _)) = self.get("write_files") {
                network.push(mk(
                    ctx,
                    "write_files_deferred",
                    k,
                    Frequency::Once,
                    vec![Action::Files(deferred)],
                ));
            }
        }
        for step in boot {
            config.push_step("boot", step);
        }
        for step in network {
            config.push_step("network", step);
        }
    }

    fn hostname(&self, ctx: &mut Ctx) -> Option<Step> {
        let hostname = self.get("hostname");
        let fqdn = self.get("fqdn");
        if let Some((k, v)) = self.get("preserve_hostname") {
            if ctx.boolean(v, "preserve_hostname") == Some(true) {
                if hostname.is_some() || fqdn.is_some() {
                    ctx.warning(
                        k,
                        "preserve_hostname is true: hostname and fqdn are not applied",
                    );
                }
                return None;
            }
        }
        for key in ["prefer_fqdn_over_hostname", "create_hostname_file"] {
            if let Some((_, v)) = self.get(key) {
                ctx.boolean(v, key);
            }
        }
        let at = hostname.or(fqdn)?;
        let fqdn_value = fqdn.and_then(|(_, v)| ctx.string(v, "fqdn"));
        if ctx.dialect == Dialect::Kairos {
            // yip's hostname plugin: Go templates rendered, the 127.0.0.1 line of /etc/hosts.
            if let Some((k, v)) = hostname {
                let mut spec = values::hostname(ctx, k, v, "hostname")?;
                if let (Some(f), Some((_, fnode))) = (&fqdn_value, fqdn) {
                    if let Err(e) = values::valid_hostname(f) {
                        ctx.error(fnode, e);
                        return None;
                    }
                }
                spec.fqdn = fqdn_value;
                return Some(Step {
                    name: "set_hostname".into(),
                    location: ctx.loc(k),
                    conditions: Conditions::default(),
                    frequency: Frequency::Once,
                    actions: vec![Action::Hostname(spec)],
                });
            }
        }
        let host_value = match hostname {
            Some((_, v)) => ctx.string(v, "hostname")?,
            // cloud-init derives the short hostname from the fqdn when only fqdn is given.
            None => fqdn_value.as_deref()?.split('.').next()?.to_string(),
        };
        let mut ok = true;
        for (name, node) in [(Some(&host_value), at.1), (fqdn_value.as_ref(), at.1)] {
            if let Some(n) = name {
                if let Err(e) = values::valid_hostname(n) {
                    ctx.error(node, e);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let prefer_fqdn = self
            .get("prefer_fqdn_over_hostname")
            .is_some_and(|(_, v)| v.scalar().is_some_and(|s| s.eq_ignore_ascii_case("true")));
        let hostname = match (&fqdn_value, prefer_fqdn) {
            (Some(f), true) => f.clone(),
            _ => host_value,
        };
        Some(Step {
            name: "set_hostname".into(),
            location: ctx.loc(at.0),
            conditions: Conditions::default(),
            frequency: Frequency::Once,
            actions: vec![Action::Hostname(HostnameSpec {
                hostname,
                fqdn: fqdn_value,
                template: None,
                hosts: HostsLine::Debian,
                location: ctx.loc(at.1),
            })],
        })
    }

    /// `groups`, `users` and top-level `ssh_authorized_keys`. In a Kairos document users
    /// follow yip (plain `passwd` hashed, unlocked) and top-level keys go to every listed
    /// user (root when none is listed), as yip's cloud-config loader does; in a cloud-init
    /// document users follow cloud-init and top-level keys go to root (Cairn has no distro
    /// default user). `github:`/`gitlab:` keys are fetched in stage `network`.
    fn users_groups(&self, ctx: &mut Ctx, steps: &mut Vec<Step>, network: &mut Vec<Step>) {
        let groups = self.get("groups");
        let users = self.get("users");
        let keys = self.get("ssh_authorized_keys");
        let kairos = ctx.dialect == Dialect::Kairos;
        let semantics = if kairos {
            UserSemantics::Yip
        } else {
            UserSemantics::CloudInit
        };
        let mut actions = Vec::new();
        let mut fetch: Vec<AuthorizedKeysSpec> = Vec::new();
        if let Some((_, v)) = groups {
            actions.push(Action::Groups(entries::groups(ctx, v)));
        }
        let mut listed: Vec<UserSpec> = match users {
            Some((_, v)) => cloud_users(ctx, v, semantics),
            None => Vec::new(),
        };
        let (top_keys, top_sources) = match keys {
            Some((_, v)) => entries::ssh_keys(ctx, v, "ssh_authorized_keys"),
            None => (Vec::new(), Vec::new()),
        };
        let keys_to_listed = kairos && !listed.is_empty();
        if keys_to_listed {
            for u in &mut listed {
                u.ssh_authorized_keys.extend(top_keys.iter().cloned());
                u.key_sources.extend(top_sources.iter().cloned());
            }
        }
        // Fetching needs the network: those keys move to a step of stage `network`.
        for u in &mut listed {
            if !u.key_sources.is_empty() {
                fetch.push(AuthorizedKeysSpec {
                    user: u.name.clone(),
                    keys: Vec::new(),
                    sources: std::mem::take(&mut u.key_sources),
                    location: u.location.clone(),
                });
            }
        }
        if users.is_some() {
            actions.push(Action::Users(listed));
        }
        if let Some(at) = groups.or(users) {
            steps.push(Step {
                name: "users_groups".into(),
                location: ctx.loc(at.0),
                conditions: Conditions::default(),
                frequency: Frequency::Once,
                actions,
            });
        }
        if let Some((k, _)) = keys {
            if !keys_to_listed {
                // Without a distro default user, top-level keys go to root (documented).
                if !top_sources.is_empty() {
                    fetch.push(AuthorizedKeysSpec {
                        user: "root".into(),
                        keys: Vec::new(),
                        sources: top_sources,
                        location: ctx.loc(k),
                    });
                }
                let spec = AuthorizedKeysSpec {
                    user: "root".into(),
                    keys: top_keys,
                    sources: Vec::new(),
                    location: ctx.loc(k),
                };
                steps.push(Step {
                    name: "ssh".into(),
                    location: ctx.loc(k),
                    conditions: Conditions::default(),
                    frequency: Frequency::Once,
                    actions: vec![Action::AuthorizedKeys(vec![spec])],
                });
            }
        }
        if let Some(first) = fetch.first() {
            network.push(Step {
                name: "ssh_import_keys".into(),
                location: first.location.clone(),
                conditions: Conditions::default(),
                frequency: Frequency::Once,
                actions: vec![Action::AuthorizedKeys(fetch)],
            });
        }
    }

    fn packages(&self, ctx: &mut Ctx) -> Option<Step> {
        let mut spec = PackageSpec::default();
        let mut at = None;
        for key in ["package_update", "apt_update"] {
            if let Some((k, v)) = self.get(key) {
                spec.refresh |= ctx.boolean(v, key).unwrap_or(false);
                at.get_or_insert(k);
            }
        }
        for key in ["package_upgrade", "apt_upgrade"] {
            if let Some((k, v)) = self.get(key) {
                spec.upgrade |= ctx.boolean(v, key).unwrap_or(false);
                at.get_or_insert(k);
            }
        }
        if let Some((k, v)) = self.get("packages") {
            at = Some(k);
            // Newer cloud-init: items may be {apt: [...]} / {snap: [...]} mappings.
            let plain: Vec<&Node> = ctx.items(v, "packages").iter().collect();
            for item in plain {
                match &item.kind {
                    NodeKind::Map(entries) => {
                        for (pk, pv) in entries {
                            match pk.scalar().unwrap_or_default() {
                                "apt" | "dnf" | "yum" | "zypper" | "apk" => {
                                    spec.install.extend(package_refs(ctx, pv))
                                }
                                "snap" => {
                                    ctx.unsupported(pk, "packages", "snaps are not installed")
                                }
                                _ => ctx.unknown_key(pk, "packages", &["apt", "snap"]),
                            }
                        }
                    }
                    _ => {
                        let one = Node {
                            pos: item.pos,
                            tag: None,
                            kind: NodeKind::Seq(vec![item.clone()]),
                        };
                        spec.install.extend(package_refs(ctx, &one));
                    }
                }
            }
            // cloud-init refreshes the package lists whenever packages are listed.
            spec.refresh |= !spec.install.is_empty();
        }
        let at = at?;
        if !spec.refresh && !spec.upgrade && spec.install.is_empty() {
            return None;
        }
        spec.location = Some(ctx.loc(at));
        Some(Step {
            name: "package_update_upgrade_install".into(),
            location: ctx.loc(at),
            conditions: Conditions::default(),
            frequency: Frequency::Once,
            actions: vec![Action::Packages(spec)],
        })
    }
}

fn cloud_users(ctx: &mut Ctx, node: &Node, semantics: UserSemantics) -> Vec<UserSpec> {
    let mut out = Vec::new();
    let mut one = |ctx: &mut Ctx, item: &Node| match &item.kind {
        NodeKind::Map(_) => {
            if let Some(u) = entries::user(ctx, item, None, semantics) {
                out.push(u);
            }
        }
        _ => {
            for (name, pos) in ctx.strings(item, "users", true) {
                let n = Node {
                    pos,
                    tag: None,
                    kind: NodeKind::Scalar {
                        value: name.clone(),
                        plain: true,
                    },
                };
                if name == "default" {
                    ctx.warning(
                        &n,
                        "`default` user is not created: Cairn has no distro default user",
                    );
                    continue;
                }
                let empty = Node {
                    pos,
                    tag: None,
                    kind: NodeKind::Map(Vec::new()),
                };
                if let Some(u) = entries::user(ctx, &empty, Some((&name, &n)), semantics) {
                    out.push(u);
                }
            }
        }
    };
    match &node.kind {
        NodeKind::Seq(items) => {
            for item in items {
                one(ctx, item);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                if let Some(name) = k.scalar() {
                    if let Some(u) = entries::user(ctx, v, Some((name, k)), semantics) {
                        out.push(u);
                    }
                }
            }
        }
        NodeKind::Scalar { .. } => one(ctx, node),
    }
    out
}

/// `ntp:` → systemd-timesyncd settings (servers and pools both become `NTP=`).
fn ntp(ctx: &mut Ctx, node: &Node) -> Option<Action> {
    let mut servers = Vec::new();
    let mut enabled = true;
    for (key, value) in ctx.entries(node, "ntp") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "servers" | "pools" | "peers" => {
                for (s, pos) in ctx.strings(value, k, false) {
                    if values::valid_hostname(&s).is_ok() || s.parse::<std::net::IpAddr>().is_ok() {
                        servers.push(s);
                    } else {
                        let loc = ctx.loc_at(pos);
                        ctx.diags
                            .error(loc, format!("`{s}` is not a host name or address"));
                    }
                }
            }
            "enabled" => enabled = ctx.boolean(value, k).unwrap_or(true),
            "ntp_client" => {
                if let Some(c) = ctx.string(value, k) {
                    if c != "auto" && c != "systemd-timesyncd" {
                        ctx.warning(value, format!("ntp_client `{c}` is not installed by Cairn; systemd-timesyncd is configured"));
                    }
                }
            }
            "allow" | "config" => {
                ctx.unsupported(key, "ntp", "only systemd-timesyncd is configured")
            }
            _ => ctx.unknown_key(
                key,
                "ntp",
                &["servers", "pools", "peers", "enabled", "ntp_client"],
            ),
        }
    }
    if !enabled || servers.is_empty() {
        return None;
    }
    Some(Action::Timesyncd(vec![KeyValue {
        key: "NTP".into(),
        value: servers.join(" "),
        location: ctx.loc(node),
    }]))
}

fn file_at(ctx: &Ctx, path: &str, content: String, node: &Node) -> Option<FileSpec> {
    Some(FileSpec {
        path: AbsPath::parse(path).ok()?,
        content: content.into_bytes(),
        mode: Some(Mode(0o644)),
        owner: Some(Owner::Id(0)),
        group: Some(Owner::Id(0)),
        append: false,
        location: ctx.loc(node),
    })
}

fn safe_file_stem(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `ppa:OWNER/NAME` (or `ppa:OWNER`, meaning `OWNER/ppa`, as add-apt-repository reads it)
/// → the owner and archive names, each a Launchpad name: lowercase letters, digits, `+`,
/// `-` and `.`, starting with a letter or digit.
fn parse_ppa(shortcut: &str) -> Result<(String, String), String> {
    let rest = shortcut.strip_prefix("ppa:").unwrap_or(shortcut);
    let (owner, name) = rest.split_once('/').unwrap_or((rest, "ppa"));
    let valid = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
            })
    };
    for (what, part) in [("owner", owner), ("archive name", name)] {
        if !valid(part) {
            return Err(format!(
                "`{shortcut}`: the PPA {what} `{part}` is not a Launchpad name (write \
                 ppa:OWNER/NAME; lowercase letters, digits, `+`, `-`, `.`)"
            ));
        }
    }
    Ok((owner.to_string(), name.to_string()))
}

/// `apt:` sources, proxy and conf → files under /etc/apt; `ppa:` sources → [`PpaSource`]s
/// (their line depends on the target's release).
fn apt(ctx: &mut Ctx, node: &Node) -> (Vec<FileSpec>, Vec<PpaSource>) {
    let mut out = Vec::new();
    let mut ppas = Vec::new();
    let mut proxy_lines = Vec::new();
    for (key, value) in ctx.entries(node, "apt") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "sources" => {
                for (name_node, src) in ctx.entries(value, "apt sources") {
                    let Some(name) = ctx.string(name_node, "source name") else {
                        continue;
                    };
                    let stem = name.trim_end_matches(".list").to_string();
                    if !safe_file_stem(&stem) {
                        ctx.error(
                            name_node,
                            format!("apt source name `{name}` must be a plain file name"),
                        );
                        continue;
                    }
                    let mut line = None;
                    let mut has_key = false;
                    for (sk, sv) in ctx.entries(src, "an apt source") {
                        match sk.scalar().unwrap_or_default() {
                            "source" => line = ctx.string(sv, "source").map(|l| (l, sv)),
                            "key" => {
                                if let Some(key_text) = ctx.string(sv, "key") {
                                    has_key = true;
                                    if !key_text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                                        ctx.error(
                                            sv,
                                            "apt key must be an ASCII-armored PGP public key",
                                        );
                                    } else if let Some(f) = file_at(
                                        ctx,
                                        &format!("/etc/apt/trusted.gpg.d/{stem}.asc"),
                                        key_text,
                                        sv,
                                    ) {
                                        out.push(f);
                                    }
                                }
                            }
                            "keyid" | "keyserver" => ctx.unsupported(
                                sk,
                                "an apt source",
                                "keys are not fetched from key servers; give the armored `key`",
                            ),
                            "filename" | "append" => {}
                            _ => ctx.unknown_key(
                                sk,
                                "an apt source",
                                &["source", "key", "keyid", "keyserver", "filename"],
                            ),
                        }
                    }
                    if let Some((l, at)) = line {
                        let path = format!("/etc/apt/sources.list.d/{stem}.list");
                        if l.trim_start().starts_with("ppa:") {
                            match (parse_ppa(l.trim()), AbsPath::parse(&path)) {
                                (Ok((owner, ppa_name)), Ok(path)) => {
                                    if !has_key {
                                        ctx.warning(
                                            at,
                                            format!(
                                                "`{}` has no `key`: the PPA's signing key is not \
                                                 fetched from Launchpad, so apt will refuse the \
                                                 archive until its key is trusted",
                                                l.trim()
                                            ),
                                        );
                                    }
                                    ppas.push(PpaSource {
                                        entry: name.clone(),
                                        owner,
                                        name: ppa_name,
                                        path,
                                        location: ctx.loc(at),
                                    });
                                }
                                (Err(e), _) => ctx.error(at, e),
                                (_, Err(e)) => ctx.error(name_node, e),
                            }
                            continue;
                        }
                        if l.contains("$KEY_FILE")
                            || l.contains("$RELEASE")
                            || l.contains("$MIRROR")
                        {
                            ctx.unsupported(
                                name_node,
                                "an apt source",
                                "$RELEASE/$MIRROR/$KEY_FILE substitutions are not expanded",
                            );
                            continue;
                        }
                        if let Some(f) = file_at(ctx, &path, format!("{l}\n"), src) {
                            out.push(f);
                        }
                    }
                }
            }
            "proxy" | "http_proxy" => {
                if let Some(p) = ctx.string(value, k) {
                    proxy_lines.push(format!("Acquire::http::Proxy \"{p}\";"));
                }
            }
            "https_proxy" => {
                if let Some(p) = ctx.string(value, k) {
                    proxy_lines.push(format!("Acquire::https::Proxy \"{p}\";"));
                }
            }
            "ftp_proxy" => {
                if let Some(p) = ctx.string(value, k) {
                    proxy_lines.push(format!("Acquire::ftp::Proxy \"{p}\";"));
                }
            }
            "conf" => {
                if let Some(c) = ctx.string(value, "conf") {
                    if let Some(f) = file_at(ctx, "/etc/apt/apt.conf.d/94cairn-config", c, value) {
                        out.push(f);
                    }
                }
            }
            "primary"
            | "security"
            | "preserve_sources_list"
            | "disable_suites"
            | "sources_list"
            | "debconf_selections"
            | "add_apt_repo_match" => {
                ctx.unsupported(key, "apt", "mirror selection is left to the image")
            }
            _ => ctx.unknown_key(
                key,
                "apt",
                &["sources", "proxy", "http_proxy", "https_proxy", "conf"],
            ),
        }
    }
    if !proxy_lines.is_empty() {
        proxy_lines.push(String::new());
        if let Some(f) = file_at(
            ctx,
            "/etc/apt/apt.conf.d/90cairn-aptproxy",
            proxy_lines.join("\n"),
            node,
        ) {
            out.push(f);
        }
    }
    (out, ppas)
}

/// `yum_repos:` → one `/etc/yum.repos.d/ID.repo` per repository.
fn yum_repos(ctx: &mut Ctx, node: &Node) -> Vec<FileSpec> {
    let mut out = Vec::new();
    for (id_node, repo) in ctx.entries(node, "yum_repos") {
        let Some(id) = ctx.string(id_node, "repository id") else {
            continue;
        };
        if !safe_file_stem(&id) {
            ctx.error(
                id_node,
                format!("repository id `{id}` must be a plain name"),
            );
            continue;
        }
        let mut body = format!("[{id}]\n");
        let mut has_source = false;
        for (k, v) in ctx.entries(repo, "a yum repository") {
            let Some(key) = ctx.string(k, "an option name") else {
                continue;
            };
            let Some(mut val) = ctx.string(v, &format!("option `{key}`")) else {
                continue;
            };
            if v.is_plain() {
                match val.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => val = "1".into(),
                    "false" | "no" | "off" => val = "0".into(),
                    _ => {}
                }
            }
            if val.contains('\n') || key.contains(['\n', '=', '[']) {
                ctx.error(k, format!("option `{key}` must be a single line"));
                continue;
            }
            has_source |= matches!(key.as_str(), "baseurl" | "metalink" | "mirrorlist");
            body.push_str(&format!("{key}={val}\n"));
        }
        if !has_source {
            ctx.error(
                id_node,
                format!("repository `{id}` needs baseurl, metalink or mirrorlist"),
            );
            continue;
        }
        if let Some(f) = file_at(ctx, &format!("/etc/yum.repos.d/{id}.repo"), body, id_node) {
            out.push(f);
        }
    }
    out
}
