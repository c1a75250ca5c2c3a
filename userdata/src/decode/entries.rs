//! Entry decoders shared by the `stages:` and cloud-init formats: users, groups, files,
//! directories, downloads and CA certificates. Each accepts the union of both formats' keys;
//! the differences in defaults are carried by [`UserSemantics`].

use super::ctx::Ctx;
use super::values;
use crate::model::{
    CertSpec, DirSpec, DownloadSpec, FileSpec, GroupSpec, KeyProvider, KeySource, Located, Mode,
    Owner, Password, SudoRules, UserSemantics, UserSpec,
};
use crate::yaml::{Node, NodeKind};

const USER_KEYS: &[&str] = &[
    "name",
    "gecos",
    "homedir",
    "primary_group",
    "groups",
    "lock_passwd",
    "lock-passwd",
    "passwd",
    "hashed_passwd",
    "plain_text_passwd",
    "no_create_home",
    "no_user_group",
    "no_log_init",
    "ssh_authorized_keys",
    "sudo",
    "system",
    "uid",
    "shell",
    "expiredate",
    "inactive",
    "create_groups",
    "selinux_user",
    "ssh_import_id",
    "ssh_redirect_user",
    "snapuser",
    "doas",
    "coreos_ssh_import_github",
    "coreos_ssh_import_github_users",
    "coreos_ssh_import_gitlab",
    "coreos_ssh_import_gitlab_users",
    "passwordExpiry",
];

/// A user from a mapping. `name` comes from the mapping (cloud-init) or the map key (yip).
pub fn user(
    ctx: &mut Ctx,
    node: &Node,
    name_from_key: Option<(&str, &Node)>,
    semantics: UserSemantics,
) -> Option<UserSpec> {
    let mut name = name_from_key.map(|(n, node)| (n.to_string(), node));
    let mut spec = UserSpec {
        name: String::new(),
        location: ctx.loc(name_from_key.map_or(node, |(_, n)| n)),
        semantics,
        uid: None,
        gecos: None,
        homedir: None,
        shell: None,
        primary_group: None,
        groups: Vec::new(),
        password: None,
        lock_passwd: semantics == UserSemantics::CloudInit,
        system: false,
        no_create_home: false,
        no_user_group: false,
        no_log_init: false,
        sudo: SudoRules::default(),
        ssh_authorized_keys: Vec::new(),
        key_sources: Vec::new(),
        expiredate: None,
        inactive: None,
    };
    for (key, value) in ctx.entries(node, "a user entry") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "name" => {
                if let Some(n) = ctx.string(value, "name") {
                    name = Some((n, value));
                }
            }
            "gecos" => spec.gecos = values::passwd_field(ctx, value, "gecos"),
            "homedir" => {
                spec.homedir = values::passwd_field(ctx, value, "homedir")
                    .and_then(|_| values::abs_path(ctx, value, "homedir"))
            }
            "shell" => spec.shell = values::passwd_field(ctx, value, "shell"),
            "primary_group" => {
                spec.primary_group = values::account_name(ctx, value, "primary_group")
            }
            "groups" => {
                for (g, pos) in ctx.strings(value, "groups", true) {
                    match values::valid_account_name(&g) {
                        Ok(()) => spec.groups.push(g),
                        Err(e) => {
                            let loc = ctx.loc_at(pos);
                            ctx.diags
                                .error(loc, format!("invalid group in groups: {e}"));
                        }
                    }
                }
            }
            "lock_passwd" | "lock-passwd" => {
                spec.lock_passwd = ctx.boolean(value, k).unwrap_or(spec.lock_passwd)
            }
            "passwd" | "hashed_passwd" | "plain_text_passwd" => {
                if let Some(p) = ctx.opt_string(value, k) {
                    let password = classify_password(k, p, semantics);
                    if let Password::Hashed(h) = &password {
                        if !looks_like_crypt(h) {
                            not_a_hash(ctx, key, value, semantics);
                        }
                    }
                    spec.password = Some(password);
                }
            }
            "no_create_home" => spec.no_create_home = ctx.boolean(value, k).unwrap_or(false),
            "no_user_group" => spec.no_user_group = ctx.boolean(value, k).unwrap_or(false),
            "no_log_init" => spec.no_log_init = ctx.boolean(value, k).unwrap_or(false),
            "system" => spec.system = ctx.boolean(value, k).unwrap_or(false),
            "uid" => spec.uid = ctx.uint(value, "uid"),
            "ssh_authorized_keys" => {
                (spec.ssh_authorized_keys, spec.key_sources) =
                    ssh_keys(ctx, value, "ssh_authorized_keys")
            }
            "sudo" => spec.sudo = sudo(ctx, value),
            "expiredate" => spec.expiredate = ctx.opt_string(value, k),
            "inactive" => spec.inactive = ctx.opt_string(value, k),
            "create_groups" => {}
            "selinux_user"
            | "ssh_import_id"
            | "ssh_redirect_user"
            | "snapuser"
            | "doas"
            | "coreos_ssh_import_github"
            | "coreos_ssh_import_github_users"
            | "coreos_ssh_import_gitlab"
            | "coreos_ssh_import_gitlab_users"
            | "passwordExpiry" => ctx.unsupported(key, "a user entry", unsupported_user_reason(k)),
            _ => ctx.unknown_key(key, "a user entry", USER_KEYS),
        }
    }
    let (name, name_node) = name.or_else(|| {
        if node.get("snapuser").is_none() {
            ctx.error(node, "a user entry needs a `name`");
        }
        None
    })?;
    if let Err(e) = values::valid_account_name(&name) {
        ctx.error(name_node, format!("invalid user name: {e}"));
        return None;
    }
    if (spec.system || spec.no_create_home)
        && !(spec.ssh_authorized_keys.is_empty() && spec.key_sources.is_empty())
    {
        ctx.error(
            node,
            format!(
                "user `{name}` has ssh_authorized_keys but {} (no home directory to hold them)",
                if spec.system {
                    "is a system user"
                } else {
                    "has no_create_home"
                }
            ),
        );
    }
    spec.name = name;
    Some(spec)
}

fn unsupported_user_reason(key: &str) -> &'static str {
    match key {
        "selinux_user" => "SELinux login mapping is not managed",
        "ssh_import_id"
        | "coreos_ssh_import_github"
        | "coreos_ssh_import_github_users"
        | "coreos_ssh_import_gitlab"
        | "coreos_ssh_import_gitlab_users" => {
            "keys are not fetched from Launchpad/GitHub/GitLab; list them in ssh_authorized_keys"
        }
        "ssh_redirect_user" => "no distro default user exists to redirect to",
        "snapuser" => "snap users need Ubuntu Core",
        "passwordExpiry" => "password ageing is not managed; set `expiredate` for the account",
        _ => "doas rules are not written",
    }
}

/// Does a shadow password field look like crypt(3) output, or a deliberate lock (`!`, `*`)?
/// `$id$…` (MD5, SHA-256/512, yescrypt, bcrypt…) or the 13 characters of traditional DES.
pub fn looks_like_crypt(field: &str) -> bool {
    let f = field.trim_start_matches('!');
    let crypt_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '$' | '=' | ','))
    };
    f.is_empty()
        || f == "*"
        || (f.starts_with('$') && f.matches('$').count() >= 2 && crypt_chars(f))
        || (f.len() == 13 && crypt_chars(f) && !f.contains('$'))
}

/// The warning for a `passwd` that is not a hash where it is taken as one: the account is
/// written with a password field no password can match.
fn not_a_hash(ctx: &mut Ctx, key: &Node, value: &Node, semantics: UserSemantics) {
    let k = key.scalar().unwrap_or("passwd");
    let mut msg = format!(
        "`{k}` is not a crypt(3) hash, but it is written to /etc/shadow as one: no password \
         will match it and the account cannot log in with a password; give a hash \
         (`mkpasswd -m sha-512`) or `plain_text_passwd`"
    );
    if k == "passwd" && semantics == UserSemantics::CloudInit {
        msg.push_str(&format!(
            ". This file is read as cloud-init ({}); if it was written for Kairos or Palette, \
             where a plain `passwd` is hashed, put `#cairn-dialect: kairos` among its first lines \
             (in a profile's os layer: `dialect: kairos` on the layer)",
            ctx.dialect_reason
        ));
    }
    ctx.warning(value, msg);
}

fn classify_password(key: &str, value: String, semantics: UserSemantics) -> Password {
    let looks_hashed =
        value.starts_with('$') || value == "!" || value == "*" || value.starts_with('!');
    match key {
        "plain_text_passwd" => Password::Plain(value),
        "hashed_passwd" => Password::Hashed(value),
        // cloud-init's `passwd` is always a hash; yip hashes anything that does not look like one.
        _ if semantics == UserSemantics::CloudInit || looks_hashed => Password::Hashed(value),
        _ => Password::Plain(value),
    }
}

fn sudo(ctx: &mut Ctx, node: &Node) -> SudoRules {
    if node.is_null() {
        return SudoRules::default();
    }
    if node.is_plain() && matches!(node.scalar(), Some("false" | "False" | "FALSE")) {
        return SudoRules::default();
    }
    if node.is_plain() && matches!(node.scalar(), Some("true" | "True" | "TRUE")) {
        // cloud-init would write the rule `NAME True`, which breaks sudo for everyone.
        ctx.error(
            node,
            "sudo must be a rule such as \"ALL=(ALL) NOPASSWD:ALL\", a list of rules, or false",
        );
        return SudoRules::default();
    }
    let rules: Vec<String> = match &node.kind {
        NodeKind::Scalar { value, .. } => vec![value.clone()],
        _ => ctx
            .strings(node, "sudo", false)
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
    };
    for r in &rules {
        if r.contains('\n') || r.trim().is_empty() {
            ctx.error(node, "a sudo rule must be one non-empty line");
        }
    }
    SudoRules(rules)
}

/// SSH public keys: each must look like `[options] type base64 [comment]`. Entries
/// `github:NAME`, `gitlab:NAME` and `https://…` are key sources (fetched when the step runs,
/// as yip does) and come back separately.
pub fn ssh_keys(ctx: &mut Ctx, node: &Node, what: &str) -> (Vec<String>, Vec<KeySource>) {
    let mut out = Vec::new();
    let mut sources = Vec::new();
    for (key, pos) in ctx.strings(node, what, false) {
        let key = key.trim().to_string();
        if let Some(provider) = key_provider(&key) {
            let location = ctx.loc_at(pos);
            match provider {
                Ok(provider) => sources.push(KeySource { provider, location }),
                Err(e) => ctx.diags.error(location, format!("{what}: {e}")),
            }
            continue;
        }
        if !is_ssh_public_key(&key) {
            let loc = ctx.loc_at(pos);
            ctx.diags.error(
                loc,
                format!("{what}: `{}` is not an SSH public key", preview(&key)),
            );
            continue;
        }
        out.push(key);
    }
    (out, sources)
}

/// One line of an `authorized_keys` file as a public key: `[options] type base64 [comment]`.
pub fn is_ssh_public_key(line: &str) -> bool {
    !line.contains('\n') && line.split_whitespace().any(is_ssh_key_type)
}

/// `github:NAME`, `gitlab:NAME` or an `https://` URL: `None` when the entry is none of them
/// (a literal key), an error when it is one written wrong.
fn key_provider(entry: &str) -> Option<Result<KeyProvider, String>> {
    if let Some(name) = entry.strip_prefix("github:") {
        return Some(account(name, "github").map(KeyProvider::GitHub));
    }
    if let Some(name) = entry.strip_prefix("gitlab:") {
        return Some(account(name, "gitlab").map(KeyProvider::GitLab));
    }
    if entry.starts_with("https://") {
        let ok = entry.len() > "https://".len()
            && !entry.chars().any(|c| c.is_whitespace() || c.is_control());
        return Some(if ok {
            Ok(KeyProvider::Url(entry.to_string()))
        } else {
            Err(format!("`{}` is not a valid URL", preview(entry)))
        });
    }
    if entry.starts_with("http://") {
        return Some(Err(format!(
            "`{}`: keys are fetched over https only",
            preview(entry)
        )));
    }
    None
}

/// An account name on GitHub or GitLab: letters, digits, `-`, `_`, `.`, at most 255
/// characters, not starting with `-` or `.` (it becomes part of a URL path).
fn account(name: &str, provider: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{provider}:{name}` does not name a {provider} account (letters, digits, `-`, `_`, `.`)"
        ))
    }
}

fn is_ssh_key_type(word: &str) -> bool {
    word.starts_with("ssh-")
        || word.starts_with("ecdsa-sha2-")
        || word.starts_with("sk-ssh-")
        || word.starts_with("sk-ecdsa-")
}

fn preview(s: &str) -> String {
    let p: String = s.chars().take(24).collect();
    if p.len() < s.len() {
        format!("{p}…")
    } else {
        p
    }
}

/// A cloud-init `groups:` value: list of names or `{name: [members]}`, a map, or a string.
pub fn groups(ctx: &mut Ctx, node: &Node) -> Vec<GroupSpec> {
    let mut out = Vec::new();
    let mut add = |ctx: &mut Ctx, name_node: &Node, members: Option<&Node>| {
        let Some(name) = values::account_name(ctx, name_node, "group name") else {
            return;
        };
        let mut spec = GroupSpec {
            name,
            gid: None,
            members: Vec::new(),
            system: false,
            location: ctx.loc(name_node),
        };
        if let Some(m) = members {
            if matches!(m.kind, NodeKind::Map(_)) {
                // Cairn's richer form: {gid, members, system}.
                for (k, v) in ctx.entries(m, "a group entry") {
                    match k.scalar().unwrap_or_default() {
                        "gid" => spec.gid = ctx.uint(v, "gid"),
                        "system" => spec.system = ctx.boolean(v, "system").unwrap_or(false),
                        "members" => spec.members = members_of(ctx, v),
                        _ => ctx.unknown_key(k, "a group entry", &["gid", "system", "members"]),
                    }
                }
            } else {
                spec.members = members_of(ctx, m);
            }
        }
        out.push(spec);
    };
    match &node.kind {
        NodeKind::Scalar { .. } => {
            for (name, pos) in ctx.strings(node, "groups", true) {
                let n = Node {
                    pos,
                    tag: None,
                    kind: NodeKind::Scalar {
                        value: name,
                        plain: true,
                    },
                };
                add(ctx, &n, None);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                add(ctx, k, Some(v));
            }
        }
        NodeKind::Seq(items) => {
            for item in items {
                match &item.kind {
                    NodeKind::Map(entries) => {
                        for (k, v) in entries {
                            add(ctx, k, Some(v));
                        }
                    }
                    _ => add(ctx, item, None),
                }
            }
        }
    }
    out
}

fn members_of(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for (m, pos) in ctx.strings(node, "group members", true) {
        match values::valid_account_name(&m) {
            Ok(()) => out.push(m),
            Err(e) => {
                let loc = ctx.loc_at(pos);
                ctx.diags.error(loc, format!("invalid group member: {e}"));
            }
        }
    }
    out
}

const FILE_KEYS: &[&str] = &[
    "path",
    "content",
    "encoding",
    "permissions",
    "owner",
    "group",
    "owner_string",
    "ownerstring",
    "append",
    "defer",
    "source",
];

/// A file entry (yip `files:` or cloud-init `write_files:`). Returns the spec and `defer`.
pub fn file(ctx: &mut Ctx, node: &Node) -> Option<(FileSpec, bool)> {
    let mut path = None;
    let mut content_node = None;
    let mut encoding = None;
    let mut meta = Ownership::new();
    let mut append = false;
    let mut defer = false;
    for (key, value) in ctx.entries(node, "a file entry") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "path" => path = values::abs_path(ctx, value, "path"),
            "content" => content_node = Some(value),
            "encoding" => encoding = ctx.opt_string(value, "encoding").map(|e| (e, value)),
            _ if meta.take(ctx, k, value) => {}
            "append" => append = ctx.boolean(value, "append").unwrap_or(false),
            "defer" => defer = ctx.boolean(value, "defer").unwrap_or(false),
            "source" => ctx.unsupported(
                key,
                "a file entry",
                "fetching file content by URL is done with a `downloads:` entry and its sha256",
            ),
            _ => ctx.unknown_key(key, "a file entry", FILE_KEYS),
        }
    }
    let Some(path) = path else {
        if node.get("path").is_none() {
            ctx.error(node, "a file entry needs a `path`");
        }
        return None;
    };
    let content = match content_node {
        Some(n) => values::content(ctx, n, encoding.as_ref().map(|(e, n)| (e.as_str(), *n)))?,
        None => Vec::new(),
    };
    if !meta.ok {
        return None;
    }
    Some((
        FileSpec {
            path,
            content,
            mode: meta.mode,
            owner: meta.owner,
            group: meta.group,
            append,
            location: ctx.loc(node),
        },
        defer,
    ))
}

/// `permissions`, `owner` (a number as yip writes it, a name, or cloud-init's `user:group`;
/// also spelled `owner_string`/`ownerstring`) and `group`: the keys files, directories and
/// downloads share.
struct Ownership {
    mode: Option<Mode>,
    owner: Option<Owner>,
    group: Option<Owner>,
    /// False once one of them was invalid (the error is already reported).
    ok: bool,
}

impl Ownership {
    fn new() -> Self {
        Ownership {
            mode: None,
            owner: None,
            group: None,
            ok: true,
        }
    }

    /// Decode `key` if it is one of the shared keys; false when it is not.
    fn take(&mut self, ctx: &mut Ctx, key: &str, value: &Node) -> bool {
        match key {
            "permissions" => {
                self.mode = values::mode(ctx, value, "permissions");
                self.ok &= self.mode.is_some();
            }
            // yip leaves an empty owner-by-name unset (the numeric `owner` decides).
            "owner_string" | "ownerstring" if value.scalar().is_some_and(|v| v.is_empty()) => {}
            "owner" | "owner_string" | "ownerstring" => match values::owner_pair(ctx, value, key) {
                Some((user, group)) => {
                    self.owner = Some(user);
                    if group.is_some() {
                        self.group = group;
                    }
                }
                None => self.ok = false,
            },
            "group" => {
                self.group = values::owner(ctx, value, "group");
                self.ok &= self.group.is_some();
            }
            _ => return false,
        }
        true
    }
}

pub fn directory(ctx: &mut Ctx, node: &Node) -> Option<DirSpec> {
    let mut path = None;
    let mut meta = Ownership::new();
    for (key, value) in ctx.entries(node, "a directory entry") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "path" => path = values::abs_path(ctx, value, "path"),
            _ if meta.take(ctx, k, value) => {}
            _ => ctx.unknown_key(
                key,
                "a directory entry",
                &["path", "permissions", "owner", "group", "owner_string"],
            ),
        }
    }
    let path = path.or_else(|| {
        if node.get("path").is_none() {
            ctx.error(node, "a directory entry needs a `path`");
        }
        None
    })?;
    if !meta.ok {
        return None;
    }
    Some(DirSpec {
        path,
        mode: meta.mode,
        owner: meta.owner,
        group: meta.group,
        location: ctx.loc(node),
    })
}

pub fn download(ctx: &mut Ctx, node: &Node) -> Option<DownloadSpec> {
    let mut url = None;
    let mut path = None;
    let mut sha256 = None;
    let mut meta = Ownership::new();
    let mut timeout = None;
    for (key, value) in ctx.entries(node, "a download entry") {
        let k = key.scalar().unwrap_or_default();
        match k {
            "url" => {
                url = ctx.string(value, "url");
                if let Some(u) = &url {
                    if !(u.starts_with("http://") || u.starts_with("https://"))
                        || u.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        ctx.error(
                            value,
                            // Credentials dropped, control characters escaped: the
                            // message stays one line whatever the URL holds.
                            format!(
                                "url `{}` must be an http:// or https:// URL without spaces",
                                crate::model::redact_url(u).escape_debug()
                            ),
                        );
                        url = None;
                    }
                }
            }
            "path" => path = values::abs_path(ctx, value, "path"),
            "sha256" => {
                if let Some(h) = ctx.string(value, "sha256") {
                    let mut buf = [0u8; 32];
                    match hex::decode_to_slice(h.trim(), &mut buf) {
                        Ok(()) => sha256 = Some(buf),
                        Err(_) => ctx.error(value, "sha256 must be 64 hexadecimal characters"),
                    }
                }
            }
            _ if meta.take(ctx, k, value) => {}
            "timeout" => timeout = ctx.uint(value, "timeout").map(u64::from),
            _ => ctx.unknown_key(
                key,
                "a download entry",
                &[
                    "url",
                    "path",
                    "sha256",
                    "permissions",
                    "owner",
                    "group",
                    "timeout",
                ],
            ),
        }
    }
    let location = ctx.loc(node);
    let (Some(url), Some(path)) = (url, path) else {
        if node.get("url").is_none() || node.get("path").is_none() {
            ctx.error(node, "a download entry needs `url` and `path`");
        }
        return None;
    };
    if sha256.is_none() {
        ctx.warning(
            node,
            format!("download of {url} has no `sha256`; its content cannot be verified"),
        );
    }
    if !meta.ok {
        return None;
    }
    Some(DownloadSpec {
        url,
        path,
        sha256,
        mode: meta.mode.or(Some(Mode(0o644))),
        owner: meta.owner,
        group: meta.group,
        timeout_secs: timeout,
        location,
    })
}

/// CA certificates: `{trusted: [...], remove_defaults}` (cloud-init `ca_certs`), or a plain
/// list / single PEM string (Cairn's `certificates:` shorthand).
pub fn certificates(ctx: &mut Ctx, node: &Node) -> CertSpec {
    let mut spec = CertSpec::default();
    match &node.kind {
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                match key.scalar().unwrap_or_default() {
                    "trusted" | "certs" => pems(ctx, value, &mut spec),
                    "remove_defaults" | "remove-defaults" => {
                        spec.remove_defaults =
                            ctx.boolean(value, "remove_defaults").unwrap_or(false)
                    }
                    _ => ctx.unknown_key(key, "ca_certs", &["trusted", "remove_defaults"]),
                }
            }
        }
        _ => pems(ctx, node, &mut spec),
    }
    spec
}

fn pems(ctx: &mut Ctx, node: &Node, spec: &mut CertSpec) {
    let items: Vec<&Node> = match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for item in items {
        let Some(pem) = ctx.string(item, "a trusted certificate") else {
            continue;
        };
        match values::check_ca_pem(&pem) {
            Ok(_) => spec.trusted.push(Located {
                value: pem,
                location: ctx.loc(item),
            }),
            Err(e) => ctx.error(item, e),
        }
    }
}
