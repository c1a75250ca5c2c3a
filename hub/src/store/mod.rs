//! Storage: the [`Store`] trait the HTTP API and the admin commands use, its data types,
//! and [`SqlStore`], the implementation for SQLite (one file, WAL) and PostgreSQL.
//!
//! The model follows Palette's scopes: a tenant holds projects; a profile published at
//! tenant scope is visible to every project of the tenant, one published at project scope
//! only to that project. Registration tokens and hosts belong to a project. A profile name
//! lives in exactly one scope of its tenant, so `name` + `version` identify a profile
//! within a tenant.

mod addons;
mod db;
mod progress;
mod registries;
mod sql;

use std::collections::BTreeMap;
use std::future::Future;

use cairn_proto::protocol::Inventory;
use cairn_proto::{Event, Profile};
use serde::Serialize;

pub use addons::{parse_addon_ref, AddonRef};
pub use db::Backend;
pub use progress::{phase_of_stage, phase_progress, HostStatus, PhaseProgress, PhaseState, PHASES};
pub use sql::SqlStore;

use crate::error::StoreError;

/// Unix time in seconds.
pub type Timestamp = i64;

/// Current Unix time in seconds.
pub fn now() -> Timestamp {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Render a timestamp as RFC 3339 (UTC).
pub fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Serialize a timestamp as RFC 3339.
fn ser_time<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// A project named by its tenant's name and its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectRef {
    pub tenant: String,
    pub project: String,
}

impl ProjectRef {
    pub fn new(tenant: impl Into<String>, project: impl Into<String>) -> Self {
        ProjectRef {
            tenant: tenant.into(),
            project: project.into(),
        }
    }
}

impl std::fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.project)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
}

/// Where a profile is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Visible to every project of the tenant.
    Tenant(String),
    /// Visible to this project only.
    Project(ProjectRef),
}

impl Scope {
    pub fn tenant(&self) -> &str {
        match self {
            Scope::Tenant(t) => t,
            Scope::Project(p) => &p.tenant,
        }
    }
}

/// A registration token to create.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub project: ProjectRef,
    /// A label for operators, e.g. the site it is meant for.
    pub name: String,
    pub expires_at: Option<Timestamp>,
    pub max_uses: Option<u32>,
}

/// Why a token can or cannot register hosts right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
    UsedUp,
}

/// A registration token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub project: String,
    pub name: String,
    /// First and last characters of the secret, e.g. `cairn_rt_AbCd…wXyZ`.
    pub hint: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "ser_opt_time")]
    pub expires_at: Option<Timestamp>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    #[serde(serialize_with = "ser_opt_time")]
    pub revoked_at: Option<Timestamp>,
    pub state: TokenState,
}

impl TokenInfo {
    pub(crate) fn state_at(&self, now: Timestamp) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            TokenState::UsedUp
        } else {
            TokenState::Active
        }
    }
}

/// A new token and its secret, which exists nowhere else: show it once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

/// A host asking to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub token: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub inventory: Inventory,
    /// The agent's registration key (a secret, never stored): makes a retry of this
    /// registration return the same identity. `None` for agents that predate it.
    pub registration_key: Option<String>,
}

/// A registered host and its credential (shown to the agent only, stored hashed).
#[derive(Debug, Clone)]
pub struct Registered {
    pub host: Host,
    pub credential: String,
    /// True when this answers a retry of a registration already made with the same token
    /// and registration key: nothing was created or spent, the identity is the earlier one.
    pub repeated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    pub id: String,
    pub tenant: String,
    pub project: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub inventory: Inventory,
    pub status: HostStatus,
    pub current_stage: String,
    pub current_step: String,
    pub last_error: String,
    pub applied_profile: Option<String>,
    pub applied_version: Option<u64>,
    /// Highest event `seq` stored for this host.
    pub last_seq: u64,
    #[serde(serialize_with = "ser_time")]
    pub registered_at: Timestamp,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: Timestamp,
}

/// A published profile version, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileInfo {
    pub id: String,
    pub tenant: String,
    /// `None` for tenant scope.
    pub project: Option<String>,
    pub name: String,
    pub version: u64,
    /// SHA-256 of the body; the ETag is this value in double quotes.
    pub sha256: String,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
}

impl ProfileInfo {
    /// The HTTP entity tag of this version's body.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }
}

/// A published profile version with its body (canonical JSON of [`Profile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    pub info: ProfileInfo,
    pub body: String,
}

/// Result of publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A new version was stored.
    Created(ProfileInfo),
    /// The same version with the same body already existed (re-upload is idempotent).
    Unchanged(ProfileInfo),
}

impl Published {
    pub fn info(&self) -> &ProfileInfo {
        match self {
            Published::Created(i) | Published::Unchanged(i) => i,
        }
    }
}

/// What an assignment applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One host, by id or (within the project) by name.
    Host(String),
    /// Every host of the project whose tag `key` has this value.
    Tag { key: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub id: String,
    pub tenant: String,
    pub project: String,
    /// For a host target, the host's id.
    pub target: Target,
    pub profile: String,
    /// `None`: follow the latest version.
    pub version: Option<u64>,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
}

/// Result of storing an event batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventOutcome {
    pub acked_seq: u64,
    pub accepted: u32,
    pub duplicates: u32,
}

/// An event as stored; `event.host` is the host id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: Event,
    #[serde(serialize_with = "ser_time")]
    pub received_at: Timestamp,
}

/// One host as the fleet page shows it: identity, assignment, where its apply stands.
/// Times are Unix seconds (the page computes "ago" against the hub's clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetHost {
    pub id: String,
    pub tenant: String,
    pub project: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub status: HostStatus,
    pub current_stage: String,
    pub current_step: String,
    pub last_error: String,
    /// The profile the host should run (its own assignment, else its newest tag
    /// assignment) and that profile's version (pinned, or the latest visible).
    pub assigned_profile: Option<String>,
    pub assigned_version: Option<u64>,
    pub applied_profile: Option<String>,
    pub applied_version: Option<u64>,
    pub last_seq: u64,
    pub registered_at: Timestamp,
    pub last_seen: Timestamp,
    /// The progress bar: OS stages → Kubernetes → CNI → add-ons.
    pub progress: PhaseProgress,
}

/// A registry as listed: never its credentials, only whether it has some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryInfo {
    pub id: String,
    pub tenant: String,
    /// `None` for tenant scope.
    pub project: Option<String>,
    pub name: String,
    pub kind: cairn_proto::registry::RegistryKind,
    pub url: String,
    pub has_ca: bool,
    pub has_credentials: bool,
    #[serde(serialize_with = "ser_time")]
    pub created_at: Timestamp,
}

/// A registry with its CA and its sealed credentials (see [`crate::registry`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryRecord {
    pub info: RegistryInfo,
    pub ca_pem: Option<String>,
    /// Credentials sealed under the hub's registry key; `None` without credentials.
    pub sealed: Option<String>,
}

impl std::fmt::Debug for RegistryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryRecord")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A registry to store: its id is chosen first, since the credentials are sealed to it.
#[derive(Clone)]
pub struct NewRegistry {
    pub id: String,
    pub scope: Scope,
    pub name: String,
    pub kind: cairn_proto::registry::RegistryKind,
    pub url: String,
    pub ca_pem: Option<String>,
    pub sealed: Option<String>,
}

/// Everything the hub stores, behind one interface. Every method is one consistent change
/// (a transaction): a refused request changes nothing.
pub trait Store: Clone + Send + Sync + 'static {
    fn create_tenant(&self, name: &str) -> impl Future<Output = Result<Tenant, StoreError>> + Send;
    fn list_tenants(&self) -> impl Future<Output = Result<Vec<Tenant>, StoreError>> + Send;
    fn create_project(
        &self,
        project: &ProjectRef,
    ) -> impl Future<Output = Result<Project, StoreError>> + Send;
    fn list_projects(
        &self,
        tenant: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Project>, StoreError>> + Send;

    fn create_token(
        &self,
        new: &NewToken,
    ) -> impl Future<Output = Result<CreatedToken, StoreError>> + Send;
    /// Tokens of one project, or of every project.
    fn list_tokens(
        &self,
        project: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Vec<TokenInfo>, StoreError>> + Send;
    fn revoke_token(&self, id: &str) -> impl Future<Output = Result<TokenInfo, StoreError>> + Send;

    /// Spend one use of the token and create the host, or refuse and change nothing.
    ///
    /// With a registration key, the retry of a registration already made (same token, name
    /// and key, and the host has not used its credential yet) returns that registration
    /// again (same host, same credential, [`Registered::repeated`]) whatever the token's
    /// state now, and changes nothing. Any other request for a taken name is a
    /// [`StoreError::Conflict`].
    fn register_host(
        &self,
        reg: &Registration,
    ) -> impl Future<Output = Result<Registered, StoreError>> + Send;
    /// The host, if `credential` is its credential; [`StoreError::Forbidden`] otherwise
    /// (also for an unknown host id). The first success retires the host's registration
    /// key: the agent evidently has its identity, so a retry is no longer honoured.
    fn authenticate_host(
        &self,
        host_id: &str,
        credential: &str,
    ) -> impl Future<Output = Result<Host, StoreError>> + Send;
    /// Record that the host is alive, and its inventory when given.
    fn heartbeat(
        &self,
        host_id: &str,
        inventory: Option<&Inventory>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Publish a validated profile. `profile.version` 0 means the next version; an explicit
    /// version must be higher than every published one, or equal to one with the same body.
    fn publish_profile(
        &self,
        scope: &Scope,
        profile: &Profile,
    ) -> impl Future<Output = Result<Published, StoreError>> + Send;
    /// Profiles visible to `project` (its own and its tenant's), or all of `tenant`, or all.
    fn list_profiles(
        &self,
        tenant: Option<&str>,
        visible_to: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Vec<ProfileInfo>, StoreError>> + Send;
    /// A profile version (the latest when `version` is `None`).
    fn get_profile(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> impl Future<Output = Result<ProfileRecord, StoreError>> + Send;

    /// Assign a profile visible to the project to a host or a tag, replacing the previous
    /// assignment of that target.
    fn assign(
        &self,
        project: &ProjectRef,
        target: &Target,
        profile: &str,
        version: Option<u64>,
    ) -> impl Future<Output = Result<Assignment, StoreError>> + Send;
    /// Remove the target's assignment; false if it had none.
    fn unassign(
        &self,
        project: &ProjectRef,
        target: &Target,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn list_assignments(
        &self,
        project: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Vec<Assignment>, StoreError>> + Send;
    /// The profile the host should run: its own assignment, else the newest assignment of
    /// one of its tags; `None` when nothing applies.
    fn assigned_profile(
        &self,
        host_id: &str,
    ) -> impl Future<Output = Result<Option<ProfileRecord>, StoreError>> + Send;

    fn list_hosts(
        &self,
        project: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Vec<Host>, StoreError>> + Send;
    /// A host by id, or by name within `project`.
    fn get_host(
        &self,
        id_or_name: &str,
        project: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Host, StoreError>> + Send;
    /// Delete a host, its events and its assignment; its credential stops working.
    fn remove_host(&self, id: &str) -> impl Future<Output = Result<Host, StoreError>> + Send;

    /// Store a batch of events: each `(host, seq)` once (duplicates ignored), and move the
    /// host's status, stage, step and last error forward by the events newer than the
    /// ones that set them.
    fn record_events(
        &self,
        host_id: &str,
        events: &[Event],
    ) -> impl Future<Output = Result<EventOutcome, StoreError>> + Send;
    /// The fleet page's view of hosts: every host (`ids: None`, ordered by tenant, project
    /// and name) or the given ones (unknown ids are left out), with the profile each is
    /// assigned, resolved in bulk.
    fn fleet(
        &self,
        ids: Option<&[String]>,
    ) -> impl Future<Output = Result<Vec<FleetHost>, StoreError>> + Send;
    /// Events with `seq > after`, in `seq` order, at most `limit`.
    fn list_events(
        &self,
        host_id: &str,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Store a registry; a name is taken once per scope ([`StoreError::Conflict`]).
    fn create_registry(
        &self,
        new: &NewRegistry,
    ) -> impl Future<Output = Result<RegistryInfo, StoreError>> + Send;
    /// Registries visible to `project` (its own and its tenant's), or all of `tenant`, or all.
    fn list_registries(
        &self,
        tenant: Option<&str>,
        visible_to: Option<&ProjectRef>,
    ) -> impl Future<Output = Result<Vec<RegistryInfo>, StoreError>> + Send;
    /// Delete the registry `name` of exactly this scope.
    fn delete_registry(
        &self,
        scope: &Scope,
        name: &str,
    ) -> impl Future<Output = Result<RegistryInfo, StoreError>> + Send;
    /// The registries the host's project sees, with sealed credentials: a project-scope
    /// registry hides a tenant-scope one of the same name.
    fn host_registries(
        &self,
        host_id: &str,
    ) -> impl Future<Output = Result<Vec<RegistryRecord>, StoreError>> + Send;
    /// What [`Store::attach_addons`] would refuse for an assignment of `profile`
    /// (`version`, or its latest): checked before the assignment is changed.
    fn check_addons(
        &self,
        project: &ProjectRef,
        profile: &str,
        version: Option<u64>,
        addons: &[AddonRef],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Attach add-on profiles, in order, to the target's assignment (replacing what it had;
    /// `[]` detaches them): each an add-on profile visible to the project, combining with
    /// the assigned profile. The host is then served its profile with `addon_profiles`.
    fn attach_addons(
        &self,
        project: &ProjectRef,
        target: &Target,
        addons: &[AddonRef],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
