//! The typed configuration model: one shape whatever the input format.
//!
//! Kairos/yip `stages:` documents and cloud-init top-level keys are both decoded into a
//! [`Config`]: named stages holding [`Step`]s, each step holding [`Action`]s that the engine
//! applies in a fixed, dependency-friendly order. Values here are already validated
//! (paths absolute, modes in range, names legal, file bodies decoded).

use std::fmt;

use regex::Regex;

use crate::diag::Location;
pub use crate::template::{HostTemplate, TemplateValues};
pub use cairn_proto::profile::Dialect;

/// A whole, merged configuration.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Stages in first-seen order; the engine orders them canonically when running.
    pub stages: Vec<Stage>,
    /// `cairn:` (or Palette's `stylus:`) hub settings, when present.
    pub hub: Option<HubSettings>,
    /// `install:` settings, read by the installer's live environment.
    pub install: Option<InstallSettings>,
    /// What to do when a step fails, by the step's location: `on_failure:` of the step, or
    /// of its document. A step not listed stops the apply (fail-fast, the default).
    pub on_failure: std::collections::HashMap<Location, OnFailure>,
}

/// What the engine does when a step fails (`on_failure:` of a step or a document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Stop: no later step or stage runs, the apply fails (the default).
    #[default]
    Stop,
    /// Best-effort: report the failure (`step_failed` with `continued: true`) and go on
    /// with the next step, as yip does.
    Continue,
}

impl OnFailure {
    /// The values `on_failure:` accepts.
    pub const VALUES: [&'static str; 2] = ["stop", "continue"];

    pub fn parse(s: &str) -> Option<OnFailure> {
        match s {
            "stop" => Some(OnFailure::Stop),
            "continue" => Some(OnFailure::Continue),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Stop => "stop",
            OnFailure::Continue => "continue",
        }
    }
}

impl Config {
    /// Append `other` (a later file): steps of a stage append, scalars of later files win.
    pub fn merge(&mut self, other: Config) {
        for stage in other.stages {
            match self.stages.iter_mut().find(|s| s.name == stage.name) {
                Some(existing) => existing.steps.extend(stage.steps),
                None => self.stages.push(stage),
            }
        }
        if other.hub.is_some() {
            self.hub = other.hub;
        }
        if other.install.is_some() {
            self.install = other.install;
        }
        self.on_failure.extend(other.on_failure);
    }

    /// What to do when `step` fails.
    pub fn on_failure(&self, step: &Step) -> OnFailure {
        self.on_failure
            .get(&step.location)
            .copied()
            .unwrap_or_default()
    }

    /// Add a step to the named stage, creating the stage if needed.
    pub fn push_step(&mut self, stage: &str, step: Step) {
        match self.stages.iter_mut().find(|s| s.name == stage) {
            Some(existing) => existing.steps.push(step),
            None => self.stages.push(Stage {
                name: stage.to_string(),
                steps: vec![step],
            }),
        }
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn step_count(&self) -> usize {
        self.stages.iter().map(|s| s.steps.len()).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub steps: Vec<Step>,
}

/// How often a step's commands run (files, users… always converge; this only gates commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    /// Every apply.
    Always,
    /// Once per boot of the target (yip's boot stages, cloud-init's `bootcmd`).
    PerBoot,
    /// Once for this exact step content (cloud-init's `runcmd`, install-time stages).
    Once,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Always => "always",
            Frequency::PerBoot => "per-boot",
            Frequency::Once => "once",
        }
    }
}

/// One step: conditions and the actions it applies.
#[derive(Debug, Clone)]
pub struct Step {
    /// `name:` if given, else a generated `stage[index]` or the cloud-init module name.
    pub name: String,
    pub location: Location,
    pub conditions: Conditions,
    pub frequency: Frequency,
    pub actions: Vec<Action>,
}

/// yip's step filters; any unmet condition skips the step (reported, not an error).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Shell condition run with `sh -c` in the target; non-zero skips the step.
    pub if_cmd: Option<String>,
    pub node: Option<Regex>,
    pub only_os: Option<Regex>,
    pub only_os_version: Option<Regex>,
    pub only_arch: Option<Regex>,
    pub only_service_manager: Option<String>,
    pub if_files_any: Vec<AbsPath>,
    pub if_files_all: Vec<AbsPath>,
    pub if_files_none: Vec<AbsPath>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.if_cmd.is_none()
            && self.node.is_none()
            && self.only_os.is_none()
            && self.only_os_version.is_none()
            && self.only_arch.is_none()
            && self.only_service_manager.is_none()
            && self.if_files_any.is_empty()
            && self.if_files_all.is_empty()
            && self.if_files_none.is_empty()
    }
}

/// One kind of change. Inside a step, actions run in the order of [`Action::rank`].
#[derive(Debug, Clone)]
pub enum Action {
    Hostname(HostnameSpec),
    Groups(Vec<GroupSpec>),
    Users(Vec<UserSpec>),
    AuthorizedKeys(Vec<AuthorizedKeysSpec>),
    Directories(Vec<DirSpec>),
    AptPpa(Vec<PpaSource>),
    Files(Vec<FileSpec>),
    Downloads(Vec<DownloadSpec>),
    Certificates(CertSpec),
    Dns(DnsSpec),
    Environment(EnvSpec),
    Sysctl(Vec<KeyValue>),
    Modules(Vec<KernelModule>),
    Timesyncd(Vec<KeyValue>),
    Timezone(Located<String>),
    Packages(PackageSpec),
    Systemctl(SystemctlSpec),
    Commands(Vec<CommandSpec>),
}

impl Action {
    /// Execution order inside one step: identities first, then files, then the things that
    /// use them (packages, units), commands last. Documented in docs/user-data.md.
    pub fn rank(&self) -> u8 {
        match self {
            Action::Hostname(_) => 0,
            Action::Groups(_) => 1,
            Action::Users(_) => 2,
            Action::AuthorizedKeys(_) => 3,
            Action::Directories(_) => 4,
            Action::AptPpa(_) => 5,
            Action::Files(_) => 6,
            Action::Downloads(_) => 7,
            Action::Certificates(_) => 8,
            Action::Dns(_) => 9,
            Action::Environment(_) => 10,
            Action::Sysctl(_) => 11,
            Action::Modules(_) => 12,
            Action::Timesyncd(_) => 13,
            Action::Timezone(_) => 14,
            Action::Packages(_) => 15,
            Action::Systemctl(_) => 16,
            Action::Commands(_) => 17,
        }
    }

    /// The step-key name of this action, as users write it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Hostname(_) => "hostname",
            Action::Groups(_) => "groups",
            Action::Users(_) => "users",
            Action::AuthorizedKeys(_) => "authorized_keys",
            Action::Directories(_) => "directories",
            Action::AptPpa(_) => "apt_sources",
            Action::Files(_) => "files",
            Action::Downloads(_) => "downloads",
            Action::Certificates(_) => "certificates",
            Action::Dns(_) => "dns",
            Action::Environment(_) => "environment",
            Action::Sysctl(_) => "sysctl",
            Action::Modules(_) => "modules",
            Action::Timesyncd(_) => "timesyncd",
            Action::Timezone(_) => "timezone",
            Action::Packages(_) => "packages",
            Action::Systemctl(_) => "systemctl",
            Action::Commands(_) => "commands",
        }
    }
}

/// A value with the location it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub location: Location,
}

/// An absolute path inside the target root: starts with `/`, no `..`, no NUL or newline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbsPath(String);

impl AbsPath {
    // String error: the text of the diagnostic (or step error) it becomes, nothing more.
    pub fn parse(s: &str) -> Result<AbsPath, String> {
        if s.is_empty() {
            return Err("path is empty".into());
        }
        if !s.starts_with('/') {
            return Err(format!(
                "path `{s}` is relative; an absolute path is required"
            ));
        }
        if s.chars().any(|c| c == '\0' || c == '\n' || c == '\r') {
            return Err("path contains a NUL or newline character".into());
        }
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(format!(
                        "path `{s}` contains `..`; paths must not climb out of their directory"
                    ))
                }
                p => parts.push(p),
            }
        }
        Ok(AbsPath(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/`, for joining onto a root.
    pub fn relative(&self) -> &str {
        self.0.trim_start_matches('/')
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A permission mode, at most 0o7777.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// An owner or group given by name or numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Id(u32),
    Name(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Id(id) => write!(f, "{id}"),
            Owner::Name(n) => f.write_str(n),
        }
    }
}

/// Whose rules a user entry follows (they differ on defaults, see docs/user-data.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSemantics {
    /// cloud-init `users:` in a cloud-init document: `passwd` is a hash, `lock_passwd`
    /// defaults to true.
    CloudInit,
    /// yip's users (Kairos/Palette): `stages.*.users`, and top-level `users:` of a Kairos
    /// document. A plain-text `passwd` is hashed, `lock_passwd` defaults to false.
    Yip,
}

/// A password for a user. Secret: never printed (see the manual Debug impl).
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// A crypt(3) hash, written as is.
    Hashed(String),
    /// Plain text (yip semantics, cloud-init `plain_text_passwd`): hashed before writing.
    Plain(String),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Hashed(_) => f.write_str("Hashed(<redacted>)"),
            Password::Plain(_) => f.write_str("Plain(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub gid: Option<u32>,
    pub members: Vec<String>,
    pub system: bool,
    pub location: Location,
}

/// `sudo:` of a user: rules to write, or an explicit `false` (no rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SudoRules(pub Vec<String>);

#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub location: Location,
    pub semantics: UserSemantics,
    pub uid: Option<u32>,
    pub gecos: Option<String>,
    pub homedir: Option<AbsPath>,
    pub shell: Option<String>,
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub password: Option<Password>,
    pub lock_passwd: bool,
    pub system: bool,
    pub no_create_home: bool,
    pub no_user_group: bool,
    pub no_log_init: bool,
    pub sudo: SudoRules,
    pub ssh_authorized_keys: Vec<String>,
    /// `github:NAME` / `gitlab:NAME` / `https://…` entries of `ssh_authorized_keys`:
    /// fetched when the step runs.
    pub key_sources: Vec<KeySource>,
    pub expiredate: Option<String>,
    pub inactive: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuthorizedKeysSpec {
    pub user: String,
    pub keys: Vec<String>,
    /// Keys fetched when the step runs (`github:NAME`…).
    pub sources: Vec<KeySource>,
    pub location: Location,
}

/// Where a remote set of SSH public keys is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProvider {
    /// `github:NAME`: `https://github.com/NAME.keys` (or the configured base URL).
    GitHub(String),
    /// `gitlab:NAME`: `https://gitlab.com/NAME.keys` (or the configured base URL).
    GitLab(String),
    /// An `https://` URL serving one key per line.
    Url(String),
}

/// An `ssh_authorized_keys` entry that names keys to fetch rather than a key (yip's
/// `github:`/`gitlab:` sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    pub provider: KeyProvider,
    pub location: Location,
}

impl fmt::Display for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProvider::GitHub(n) => write!(f, "github:{n}"),
            KeyProvider::GitLab(n) => write!(f, "gitlab:{n}"),
            KeyProvider::Url(u) => f.write_str(&redact_url(u)),
        }
    }
}

/// A URL as it may be shown in messages and events: `user:password@` replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `cairn.key_sources`: where `github:`/`gitlab:` keys are fetched from, and extra CAs
/// trusted for those fetches (besides the system's roots). For mirrors and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySourceSettings {
    /// Base URL for `github:NAME` (`NAME.keys` is appended); default `https://github.com`.
    pub github: Option<String>,
    /// Base URL for `gitlab:NAME`; default `https://gitlab.com`.
    pub gitlab: Option<String>,
    /// PEM CA certificates trusted for key fetches, besides the system roots.
    pub ca_certs: Vec<String>,
}

/// The key-source settings in force when user-data has none.
pub static NO_KEY_SOURCES: KeySourceSettings = KeySourceSettings {
    github: None,
    gitlab: None,
    ca_certs: Vec::new(),
};

impl KeySourceSettings {
    /// The URL a source is fetched from.
    pub fn url_of(&self, provider: &KeyProvider) -> String {
        let base = |set: &Option<String>, default: &str| {
            set.as_deref()
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        match provider {
            KeyProvider::GitHub(n) => {
                format!("{}/{n}.keys", base(&self.github, "https://github.com"))
            }
            KeyProvider::GitLab(n) => {
                format!("{}/{n}.keys", base(&self.gitlab, "https://gitlab.com"))
            }
            KeyProvider::Url(u) => u.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirSpec {
    pub path: AbsPath,
    pub mode: Option<Mode>,
    pub owner: Option<Owner>,
    pub group: Option<Owner>,
    pub location: Location,
}

#[derive(Clone)]
pub struct FileSpec {
    pub path: AbsPath,
    /// Decoded bytes (after b64/gzip).
    pub content: Vec<u8>,
    pub mode: Option<Mode>,
    pub owner: Option<Owner>,
    pub group: Option<Owner>,
    pub append: bool,
    pub location: Location,
}

impl fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File bodies may hold secrets: show only their size.
        f.debug_struct("FileSpec")
            .field("path", &self.path)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("mode", &self.mode)
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("append", &self.append)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct DownloadSpec {
    pub url: String,
    pub path: AbsPath,
    pub sha256: Option<[u8; 32]>,
    pub mode: Option<Mode>,
    pub owner: Option<Owner>,
    pub group: Option<Owner>,
    pub timeout_secs: Option<u64>,
    pub location: Location,
}

#[derive(Debug, Clone, Default)]
pub struct CertSpec {
    /// Validated PEM CA certificates, each with its location.
    pub trusted: Vec<Located<String>>,
    pub remove_defaults: bool,
}

#[derive(Debug, Clone)]
pub struct HostnameSpec {
    /// The name; with a template, the template's text as written.
    pub hostname: String,
    pub fqdn: Option<String>,
    /// A Go-template hostname (`node-{{ trunc 4 .MachineID }}`), rendered when applied.
    pub template: Option<HostTemplate>,
    /// Which `/etc/hosts` line carries the name.
    pub hosts: HostsLine,
    pub location: Location,
}

/// Where the host name goes in `/etc/hosts`: the two dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostsLine {
    /// yip (Kairos): the `127.0.0.1` line becomes `127.0.0.1 localhost NAME`.
    Loopback,
    /// cloud-init (Debian style): a `127.0.1.1 FQDN NAME` line.
    Debian,
}

#[derive(Debug, Clone)]
pub struct DnsSpec {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
    pub path: AbsPath,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct EnvSpec {
    pub vars: Vec<KeyValue>,
    pub file: AbsPath,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct KernelModule {
    pub name: String,
    /// `param=value` words after the module name.
    pub params: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    pub name: String,
    pub version: Option<String>,
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

/// A cloud-init `apt: sources:` entry whose `source` is a `ppa:OWNER/NAME` shortcut. The
/// line it stands for names the target's Ubuntu release, so it is worked out when the step
/// runs (and refused on anything but Ubuntu); its `key`, if any, is an ordinary file entry
/// of the same step, written only after every PPA of the step was resolved.
#[derive(Debug, Clone)]
pub struct PpaSource {
    /// The entry's name under `sources:`, as written.
    pub entry: String,
    pub owner: String,
    pub name: String,
    /// Where the translated line goes (`/etc/apt/sources.list.d/STEM.list`).
    pub path: AbsPath,
    pub location: Location,
}

impl PpaSource {
    /// The Launchpad archive line for an Ubuntu release (`noble`, `jammy`, …).
    pub fn deb_line(&self, codename: &str) -> String {
        format!(
            "deb https://ppa.launchpadcontent.net/{}/{}/ubuntu {codename} main",
            self.owner, self.name
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct PackageSpec {
    pub refresh: bool,
    pub upgrade: bool,
    pub install: Vec<PackageRef>,
    pub remove: Vec<String>,
    pub location: Option<Location>,
}

#[derive(Debug, Clone)]
pub struct UnitOverride {
    pub service: String,
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct SystemctlSpec {
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    pub mask: Vec<String>,
    pub start: Vec<String>,
    pub overrides: Vec<UnitOverride>,
    pub location: Option<Location>,
}

/// A command: a string runs under `sh -c`, a list is exec'd as argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    Shell(String, Location),
    Exec(Vec<String>, Location),
}

impl CommandSpec {
    pub fn location(&self) -> &Location {
        match self {
            CommandSpec::Shell(_, l) | CommandSpec::Exec(_, l) => l,
        }
    }

    /// The command as a person would type it (for messages).
    pub fn display(&self) -> String {
        match self {
            CommandSpec::Shell(s, _) => s.clone(),
            CommandSpec::Exec(argv, _) => argv.join(" "),
        }
    }
}

/// `cairn:` / `stylus:` settings: where the hub is and how to register.
#[derive(Clone, Default)]
pub struct HubSettings {
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub site: Option<String>,
    pub tags: Vec<(String, String)>,
    pub ca_certs: Vec<String>,
    /// SHA-256 of the hub CA certificate (DER), from `join`: that CA, fetched from the hub
    /// and checked against this, is the only one trusted for the hub.
    pub ca_pin: Option<[u8; 32]>,
    pub proxy: Option<String>,
    /// Where `github:`/`gitlab:` SSH keys are fetched from.
    pub key_sources: KeySourceSettings,
    pub location: Option<Location>,
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("site", &self.site)
            .field("tags", &self.tags)
            .field("ca_certs", &self.ca_certs.len())
            .field("ca_pin", &self.ca_pin.as_ref().map(|_| "<redacted>"))
            .field("proxy", &self.proxy)
            .field("key_sources", &self.key_sources)
            .finish()
    }
}

/// `install:` settings.
#[derive(Debug, Clone, Default)]
pub struct InstallSettings {
    /// Target disk; `None` (absent or `auto`): the only suitable disk.
    pub device: Option<String>,
    pub reboot: bool,
    pub poweroff: bool,
    /// Where the `install:` block is, for messages.
    pub location: Option<Location>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_path_rules() {
        assert_eq!(AbsPath::parse("/etc//x/./y").unwrap().as_str(), "/etc/x/y");
        assert!(AbsPath::parse("etc/x").unwrap_err().contains("relative"));
        assert!(AbsPath::parse("/etc/../shadow").unwrap_err().contains(".."));
        assert!(AbsPath::parse("").is_err());
        assert!(AbsPath::parse("/a\nb").is_err());
        assert_eq!(AbsPath::parse("/").unwrap().relative(), "");
    }

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(
            redact_url("https://u:secret@keys.example/a@b.keys"),
            "https://***@keys.example/a@b.keys"
        );
        assert_eq!(
            redact_url("https://keys.example/x"),
            "https://keys.example/x"
        );
        let p = KeyProvider::Url("https://tok@keys.example/k".into());
        assert!(!p.to_string().contains("tok"));
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::Plain("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
