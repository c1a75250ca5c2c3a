//! The Kairos/yip `stages:` format: stage name → list of steps.
//!
//! Step keys follow yip's schema (docs/user-data.md lists them); Cairn adds `groups`,
//! `certificates`, `timezone` and `frequency`. yip keys Cairn does not implement are
//! warned about by name, never silently dropped.

use super::ctx::Ctx;
use super::{entries, values};
use crate::model::{
    Action, AuthorizedKeysSpec, CommandSpec, Conditions, Config, DnsSpec, EnvSpec, Frequency,
    KernelModule, KeyValue, Located, OnFailure, PackageRef, PackageSpec, Step, SystemctlSpec,
    UnitOverride, UserSemantics,
};
use crate::stages as stage_names;
use crate::yaml::{Node, NodeKind};

const STEP_KEYS: &[&str] = &[
    "name",
    "if",
    "node",
    "only_os",
    "only_os_version",
    "only_arch",
    "only_service_manager",
    "if_files",
    "after",
    "commands",
    "files",
    "directories",
    "downloads",
    "users",
    "groups",
    "authorized_keys",
    "ensure_entities",
    "delete_entities",
    "hostname",
    "dns",
    "sysctl",
    "modules",
    "systemctl",
    "environment",
    "environment_file",
    "timesyncd",
    "systemd_firstboot",
    "datasource",
    "layout",
    "git",
    "packages",
    "package_pins",
    "unpack_images",
    "certificates",
    "timezone",
    "frequency",
    "on_failure",
];

pub fn decode(ctx: &mut Ctx, node: &Node, config: &mut Config) {
    for (key, steps) in ctx.entries(node, "stages") {
        let Some(stage) = ctx.string(key, "a stage name") else {
            continue;
        };
        if !stage_names::is_known(&stage) {
            if let Some(why) = stage_names::kairos_only(&stage) {
                let n = match &steps.kind {
                    NodeKind::Seq(items) => items.len(),
                    _ => 0,
                };
                ctx.warning(
                    key,
                    format!(
                        "stage `{stage}` is not run by Cairn ({why}); its {n} step(s) are skipped"
                    ),
                );
                continue;
            }
            let known = stage_names::all_names();
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            let hint = super::suggest(&stage, &refs)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            ctx.error(
                key,
                format!(
                    "unknown stage `{stage}`{hint} (a step in an unknown stage would never run)"
                ),
            );
            continue;
        }
        for (index, item) in ctx
            .items(steps, &format!("stage `{stage}`"))
            .iter()
            .enumerate()
        {
            if let Some((mut step, on_failure)) = decode_step(ctx, &stage, index, item) {
                if let Some(policy) = on_failure {
                    config.on_failure.insert(step.location.clone(), policy);
                }
                let fetch = keys_to_fetch_later(ctx, &stage, &mut step);
                config.push_step(&stage, step);
                if let Some(later) = fetch {
                    config.push_step("network", later);
                }
            }
        }
    }
}

/// A step and its own `on_failure:`, if it has one.
fn decode_step(
    ctx: &mut Ctx,
    stage: &str,
    index: usize,
    node: &Node,
) -> Option<(Step, Option<OnFailure>)> {
    if !matches!(node.kind, NodeKind::Map(_)) {
        ctx.error(
            node,
            format!(
                "a step of stage `{stage}` must be a mapping, found {}",
                node.type_name()
            ),
        );
        return None;
    }
    let mut step = Step {
        name: format!("{stage}[{index}]"),
        location: ctx.loc(node),
        conditions: Conditions::default(),
        frequency: stage_names::default_frequency(stage),
        actions: Vec::new(),
    };
    let mut env_file = None;
    let mut env_vars: Option<(Vec<KeyValue>, &Node)> = None;
    let mut on_failure = None;
    for (key, value) in ctx.entries(node, "a step") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "name" => {
                if let Some(n) = ctx.string(value, "name") {
                    step.name = n;
                }
            }
            "if" => step.conditions.if_cmd = ctx.string(value, "if (a shell condition)"),
            "node" => step.conditions.node = values::pattern(ctx, value, "node"),
            "only_os" => step.conditions.only_os = values::pattern(ctx, value, "only_os"),
            "only_os_version" => {
                step.conditions.only_os_version = values::pattern(ctx, value, "only_os_version")
            }
            "only_arch" => step.conditions.only_arch = values::pattern(ctx, value, "only_arch"),
            "only_service_manager" => {
                if let Some(m) = ctx.string(value, k) {
                    if m == "systemd" || m == "openrc" {
                        step.conditions.only_service_manager = Some(m);
                    } else {
                        ctx.error(value, "only_service_manager must be `systemd` or `openrc`");
                    }
                }
            }
            "if_files" => if_files(ctx, value, &mut step.conditions),
            "after" => ctx.warning(
                key,
                "`after` is ignored: Cairn runs steps in document order, files in lexical order",
            ),
            "frequency" => {
                if let Some(f) = ctx.string(value, k) {
                    step.frequency = match f.as_str() {
                        "always" => Frequency::Always,
                        "per-boot" | "per_boot" => Frequency::PerBoot,
                        "once" | "per-instance" | "per_instance" => Frequency::Once,
                        _ => {
                            ctx.error(value, "frequency must be `always`, `per-boot` or `once`");
                            step.frequency
                        }
                    }
                }
            }
            "on_failure" => on_failure = on_failure_value(ctx, value),
            "commands" => step
                .actions
                .push(Action::Commands(commands(ctx, value, "commands"))),
            "files" => {
                let files = ctx
                    .items(value, "files")
                    .iter()
                    .filter_map(|f| entries::file(ctx, f).map(|(spec, _)| spec))
                    .collect();
                step.actions.push(Action::Files(files));
            }
            "directories" => {
                let dirs = ctx
                    .items(value, "directories")
                    .iter()
                    .filter_map(|d| entries::directory(ctx, d))
                    .collect();
                step.actions.push(Action::Directories(dirs));
            }
            "downloads" => {
                let dls = ctx
                    .items(value, "downloads")
                    .iter()
                    .filter_map(|d| entries::download(ctx, d))
                    .collect();
                step.actions.push(Action::Downloads(dls));
            }
            "users" => {
                let mut users = Vec::new();
                for (name_key, spec) in ctx.entries(value, "users") {
                    if let Some(n) = ctx.string(name_key, "a user name") {
                        if let Some(u) =
                            entries::user(ctx, spec, Some((&n, name_key)), UserSemantics::Yip)
                        {
                            users.push(u);
                        }
                    }
                }
                step.actions.push(Action::Users(users));
            }
            "groups" => step
                .actions
                .push(Action::Groups(entries::groups(ctx, value))),
            "authorized_keys" => {
                let mut specs = Vec::new();
                for (user_key, keys) in ctx.entries(value, "authorized_keys") {
                    if let Some(user) = values::account_name(ctx, user_key, "user name") {
                        let (keys, sources) = entries::ssh_keys(ctx, keys, "authorized_keys");
                        specs.push(AuthorizedKeysSpec {
                            user,
                            keys,
                            sources,
                            location: ctx.loc(user_key),
                        });
                    }
                }
                step.actions.push(Action::AuthorizedKeys(specs));
            }
            "hostname" => {
                if let Some(spec) = values::hostname(ctx, key, value, "hostname") {
                    step.actions.push(Action::Hostname(spec));
                }
            }
            "dns" => {
                if let Some(d) = dns(ctx, value) {
                    step.actions.push(Action::Dns(d));
                }
            }
            "sysctl" => step.actions.push(Action::Sysctl(sysctl(ctx, value))),
            "modules" => step.actions.push(Action::Modules(modules(ctx, value))),
            "systemctl" => step.actions.push(Action::Systemctl(systemctl(ctx, value))),
            "environment" => env_vars = Some((key_values(ctx, value, "environment"), value)),
            "environment_file" => env_file = values::abs_path(ctx, value, "environment_file"),
            "timesyncd" => {
                step.actions
                    .push(Action::Timesyncd(key_values(ctx, value, "timesyncd")))
            }
            "timezone" => {
                if let Some(tz) = ctx.string(value, "timezone") {
                    if valid_timezone(&tz) {
                        step.actions.push(Action::Timezone(Located {
                            value: tz,
                            location: ctx.loc(value),
                        }));
                    } else {
                        ctx.error(value, format!("`{tz}` is not a valid time zone name"));
                    }
                }
            }
            "packages" => step.actions.push(Action::Packages(packages(ctx, value))),
            "certificates" => step
                .actions
                .push(Action::Certificates(entries::certificates(ctx, value))),
            "ensure_entities" | "delete_entities" | "systemd_firstboot" | "datasource"
            | "layout" | "git" | "package_pins" | "unpack_images" => {
                ctx.unsupported(key, "a step", "not implemented yet; see docs/user-data.md")
            }
            _ => ctx.unknown_key(key, "a step", STEP_KEYS),
        }
    }
    if let Some((vars, node)) = env_vars {
        let file = env_file.unwrap_or_else(|| {
            crate::model::AbsPath::parse("/etc/environment").unwrap_or_else(|_| unreachable!())
        });
        step.actions.push(Action::Environment(EnvSpec {
            vars,
            file,
            location: ctx.loc(node),
        }));
    }
    step.actions.sort_by_key(Action::rank);
    Some((step, on_failure))
}

/// A step of a stage that runs before the network is up (`rootfs`…`first-boot`) that names
/// `github:`/`gitlab:` keys: fetching them there fails on a device without network yet, so
/// they are taken out into a step of stage `network` (what yip's cloud-config loader does
/// for the same keys), with a warning at the first one. Returns that step.
pub(super) fn keys_to_fetch_later(ctx: &mut Ctx, stage: &str, step: &mut Step) -> Option<Step> {
    if !stage_names::before_network(stage) {
        return None;
    }
    let mut moved: Vec<AuthorizedKeysSpec> = Vec::new();
    for action in &mut step.actions {
        match action {
            Action::Users(users) => {
                for u in users.iter_mut().filter(|u| !u.key_sources.is_empty()) {
                    moved.push(AuthorizedKeysSpec {
                        user: u.name.clone(),
                        keys: Vec::new(),
                        sources: std::mem::take(&mut u.key_sources),
                        location: u.location.clone(),
                    });
                }
            }
            Action::AuthorizedKeys(specs) => {
                let mut kept = Vec::new();
                for mut spec in std::mem::take(specs) {
                    if spec.sources.is_empty() {
                        kept.push(spec);
                        continue;
                    }
                    moved.push(AuthorizedKeysSpec {
                        user: spec.user.clone(),
                        keys: Vec::new(),
                        sources: std::mem::take(&mut spec.sources),
                        location: spec.location.clone(),
                    });
                    // An entry left with no key at all has nothing to do before the network.
                    if !spec.keys.is_empty() {
                        kept.push(spec);
                    }
                }
                *specs = kept;
            }
            _ => {}
        }
    }
    let first = moved.first()?.sources.first()?.clone();
    ctx.diags.warning(
        first.location.clone(),
        format!(
            "`{}` is fetched over the network, which is not up yet in stage `{stage}`: \
             Cairn fetches the keys of step `{}` in stage `network` instead",
            first.provider, step.name
        ),
    );
    Some(Step {
        name: format!("{} (keys)", step.name),
        location: step.location.clone(),
        conditions: step.conditions.clone(),
        frequency: step.frequency,
        actions: vec![Action::AuthorizedKeys(moved)],
    })
}

/// An `on_failure:` value (`stop` or `continue`); anything else is an error.
pub fn on_failure_value(ctx: &mut Ctx, value: &Node) -> Option<OnFailure> {
    let v = ctx.string(value, "on_failure")?;
    let parsed = OnFailure::parse(&v);
    if parsed.is_none() {
        ctx.error(
            value,
            format!(
                "on_failure must be `{}`, not `{v}`",
                OnFailure::VALUES.join("` or `")
            ),
        );
    }
    parsed
}

pub fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && !tz.starts_with('/')
        && !tz.split('/').any(|p| p == ".." || p.is_empty())
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

fn if_files(ctx: &mut Ctx, node: &Node, cond: &mut Conditions) {
    for (key, value) in ctx.entries(node, "if_files") {
        let k = key.scalar().unwrap_or_default();
        let list = match k {
            "any" => &mut cond.if_files_any,
            "all" => &mut cond.if_files_all,
            "none" => &mut cond.if_files_none,
            _ => {
                ctx.unknown_key(key, "if_files", &["any", "all", "none"]);
                continue;
            }
        };
        for item in ctx.items(value, k) {
            if let Some(p) = values::abs_path(ctx, item, "if_files path") {
                list.push(p);
            }
        }
    }
}

/// Commands: strings run with `sh -c`, lists are exec'd.
pub fn commands(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<CommandSpec> {
    let mut out = Vec::new();
    for item in ctx.items(node, what) {
        let loc = ctx.loc(item);
        match &item.kind {
            NodeKind::Seq(_) => {
                let argv: Vec<String> = ctx
                    .strings(item, "a command's arguments", false)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                if argv.is_empty() {
                    ctx.error(item, "an empty command list");
                } else {
                    out.push(CommandSpec::Exec(argv, loc));
                }
            }
            _ => {
                if let Some(s) = ctx.string(item, &format!("each item of {what}")) {
                    out.push(CommandSpec::Shell(s, loc));
                }
            }
        }
    }
    out
}

fn key_values(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for (key, value) in ctx.entries(node, what) {
        let (Some(k), Some(v)) = (
            ctx.string(key, &format!("a {what} key")),
            if value.is_null() {
                Some(String::new())
            } else {
                ctx.string(value, &format!("a {what} value"))
            },
        ) else {
            continue;
        };
        if k.contains(['\n', '=']) || k.trim().is_empty() || v.contains('\n') {
            ctx.error(
                key,
                format!("{what} entry `{k}` must be a single-line key and value"),
            );
            continue;
        }
        out.push(KeyValue {
            key: k,
            value: v,
            location: ctx.loc(key),
        });
    }
    out
}

fn sysctl(ctx: &mut Ctx, node: &Node) -> Vec<KeyValue> {
    let kvs = key_values(ctx, node, "sysctl");
    kvs.into_iter()
        .filter(|kv| {
            let ok = kv
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '*'))
                && !kv.key.contains("..");
            if !ok {
                ctx.diags.error(
                    kv.location.clone(),
                    format!("`{}` is not a valid sysctl key", kv.key),
                );
            }
            ok
        })
        .collect()
}

fn modules(ctx: &mut Ctx, node: &Node) -> Vec<KernelModule> {
    let mut out = Vec::new();
    for (text, pos) in ctx.strings(node, "modules", false) {
        let mut words = text.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let location = ctx.loc_at(pos);
        if !ok {
            ctx.diags
                .error(location, format!("`{text}` is not a kernel module name"));
            continue;
        }
        out.push(KernelModule {
            name,
            params: words.map(str::to_string).collect(),
            location,
        });
    }
    out
}

fn dns(ctx: &mut Ctx, node: &Node) -> Option<DnsSpec> {
    let mut spec = DnsSpec {
        nameservers: Vec::new(),
        search: Vec::new(),
        options: Vec::new(),
        path: crate::model::AbsPath::parse("/etc/resolv.conf").ok()?,
        location: ctx.loc(node),
    };
    for (key, value) in ctx.entries(node, "dns") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "nameservers" => spec.nameservers = plain_strings(ctx, value, k),
            "search" => spec.search = plain_strings(ctx, value, k),
            "options" => spec.options = plain_strings(ctx, value, k),
            "path" => spec.path = values::abs_path(ctx, value, "path")?,
            _ => ctx.unknown_key(key, "dns", &["nameservers", "search", "options", "path"]),
        }
    }
    Some(spec)
}

fn plain_strings(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (s, pos) in ctx.strings(node, what, false) {
        if s.chars().any(|c| c.is_whitespace()) || s.is_empty() {
            let loc = ctx.loc_at(pos);
            ctx.diags
                .error(loc, format!("{what} entry `{s}` must be one word"));
        } else {
            out.push(s);
        }
    }
    out
}

fn unit_list(ctx: &mut Ctx, node: &Node, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (u, pos) in ctx.strings(node, what, false) {
        match values::valid_unit_name(&u) {
            Ok(()) => out.push(u),
            Err(e) => {
                let loc = ctx.loc_at(pos);
                ctx.diags.error(loc, e);
            }
        }
    }
    out
}

fn systemctl(ctx: &mut Ctx, node: &Node) -> SystemctlSpec {
    let mut spec = SystemctlSpec {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    for (key, value) in ctx.entries(node, "systemctl") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "enable" => spec.enable = unit_list(ctx, value, k),
            "disable" => spec.disable = unit_list(ctx, value, k),
            "mask" => spec.mask = unit_list(ctx, value, k),
            "start" => spec.start = unit_list(ctx, value, k),
            "overrides" => {
                for item in ctx.items(value, "overrides") {
                    let mut service = None;
                    let mut name = "override-cairn.conf".to_string();
                    let mut content = String::new();
                    for (ok, ov) in ctx.entries(item, "an override") {
                        match ok.scalar().unwrap_or_default() {
                            "service" => {
                                service = ctx
                                    .string(ov, "service")
                                    .filter(|s| values::valid_unit_name(s).is_ok());
                                if service.is_none() {
                                    ctx.error(ov, "service must be a valid unit name");
                                }
                            }
                            "name" => {
                                if let Some(n) = ctx.string(ov, "name") {
                                    if n.contains('/') || n.starts_with('.') {
                                        ctx.error(ov, "override name must be a plain file name");
                                    } else {
                                        name = if n.ends_with(".conf") {
                                            n
                                        } else {
                                            format!("{n}.conf")
                                        };
                                    }
                                }
                            }
                            "content" => content = ctx.string(ov, "content").unwrap_or_default(),
                            _ => {
                                ctx.unknown_key(ok, "an override", &["service", "name", "content"])
                            }
                        }
                    }
                    match service {
                        Some(service) => spec.overrides.push(UnitOverride {
                            service,
                            name,
                            content,
                        }),
                        None if item.get("service").is_none() => {
                            ctx.error(item, "an override needs a `service`")
                        }
                        None => {}
                    }
                }
            }
            _ => ctx.unknown_key(
                key,
                "systemctl",
                &["enable", "disable", "mask", "start", "overrides"],
            ),
        }
    }
    spec
}

fn packages(ctx: &mut Ctx, node: &Node) -> PackageSpec {
    let mut spec = PackageSpec {
        location: Some(ctx.loc(node)),
        ..Default::default()
    };
    for (key, value) in ctx.entries(node, "packages") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "install" => spec.install = package_refs(ctx, value),
            "remove" => {
                for (p, pos) in ctx.strings(value, "remove", false) {
                    match values::valid_package_name(&p) {
                        Ok(()) => spec.remove.push(p),
                        Err(e) => {
                            let loc = ctx.loc_at(pos);
                            ctx.diags.error(loc, e);
                        }
                    }
                }
            }
            "refresh" => spec.refresh = ctx.boolean(value, k).unwrap_or(false),
            "upgrade" => spec.upgrade = ctx.boolean(value, k).unwrap_or(false),
            _ => ctx.unknown_key(
                key,
                "packages",
                &["install", "remove", "refresh", "upgrade"],
            ),
        }
    }
    spec
}

/// Package references: `name`, `name=version`, or cloud-init's `[name, version]`.
pub fn package_refs(ctx: &mut Ctx, node: &Node) -> Vec<PackageRef> {
    let mut out = Vec::new();
    for item in ctx.items(node, "packages") {
        let (name, version) = match &item.kind {
            NodeKind::Seq(parts) if parts.len() == 2 => (
                ctx.string(&parts[0], "package name"),
                ctx.string(&parts[1], "package version"),
            ),
            NodeKind::Seq(_) => {
                ctx.error(item, "a package given as a list must be [name, version]");
                continue;
            }
            _ => match ctx.string(item, "package") {
                Some(s) => match s.split_once('=') {
                    Some((n, v)) => (Some(n.to_string()), Some(v.to_string())),
                    None => (Some(s), None),
                },
                None => continue,
            },
        };
        let Some(name) = name else { continue };
        let version_ok = version.as_deref().is_none_or(|v| {
            !v.is_empty()
                && v.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '+' | '-' | '_' | ':' | '~' | '*')
                })
        });
        match values::valid_package_name(&name) {
            Ok(()) if version_ok => out.push(PackageRef { name, version }),
            Ok(()) => ctx.error(item, format!("invalid version for package `{name}`")),
            Err(e) => ctx.error(item, e),
        }
    }
    out
}
