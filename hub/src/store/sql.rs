//! [`SqlStore`]: the [`Store`] for SQLite and PostgreSQL, written once over [`super::db`].

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_proto::protocol::{
    valid_registration_key, Inventory, REGISTRATION_KEY_MAX_LEN, REGISTRATION_KEY_MIN_LEN,
};
use cairn_proto::{Event, EventKind, Profile};

use super::db::{args, is_unique_violation, Backend, Conn, Pool, Row, Tx};
use super::progress::{advance, HostStatus, Progress};
use super::*;
use crate::error::{db, StoreError};
use crate::secret::{self, CREDENTIAL_PREFIX, TOKEN_PREFIX};

/// Events per INSERT statement (10 parameters each: far below every backend's limit).
const EVENTS_PER_INSERT: usize = 100;

/// Most tags one host may carry.
pub const MAX_TAGS: usize = 64;

/// How often buffered heartbeats are written (see [`Beats`]).
pub const HEARTBEAT_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Heartbeats written per transaction, so a large flush does not hold SQLite's single
/// writer for long (event batches wait for it).
const HEARTBEAT_FLUSH_CHUNK: usize = 32;

/// Heartbeats received and not yet written: host id → (newest time, newest inventory).
///
/// A heartbeat's `last_seen` need not be durable, and writing each one as its own
/// transaction (with SQLite, an fsync each) is what limits a hub with a large fleet. So
/// heartbeats are answered from memory and written together: every
/// [`HEARTBEAT_FLUSH_EVERY`] by a background task, and before any read that shows hosts
/// (`get_host`, `list_hosts`, `fleet`), so readers always see every answered heartbeat.
/// Events, registrations and admin changes stay one durable transaction each.
#[derive(Debug, Default)]
struct Beats {
    pending: std::sync::Mutex<HashMap<String, (Timestamp, Option<String>)>>,
    /// One flush at a time: an older inventory never overwrites a newer one.
    flushing: tokio::sync::Mutex<()>,
}

impl Beats {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Timestamp, Option<String>)>> {
        // The map stays consistent even if a holder panicked.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, host_id: &str, at: Timestamp, inventory: Option<String>) {
        let mut pending = self.pending();
        match pending.get_mut(host_id) {
            Some((t, inv)) => {
                *t = (*t).max(at);
                if inventory.is_some() {
                    *inv = inventory;
                }
            }
            None => {
                pending.insert(host_id.to_owned(), (at, inventory));
            }
        }
    }

    /// Write everything pending. Not cancellation-safe on its own (the batch is taken out
    /// first): callers run it in a task of its own.
    async fn flush(&self, pool: &Pool) -> Result<(), StoreError> {
        let _one_at_a_time = self.flushing.lock().await;
        let batch: Vec<(String, (Timestamp, Option<String>))> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        let mut rest = batch.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(HEARTBEAT_FLUSH_CHUNK));
            if let Err(e) = write_beats(pool, chunk).await {
                // Keep what was not written, under anything newer that arrived since.
                let mut pending = self.pending();
                for (id, (t, inv)) in rest {
                    let entry = pending.entry(id.clone()).or_insert((*t, None));
                    entry.0 = entry.0.max(*t);
                    if entry.1.is_none() {
                        entry.1.clone_from(inv);
                    }
                }
                return Err(e);
            }
            rest = tail;
        }
        Ok(())
    }
}

async fn write_beats(
    pool: &Pool,
    chunk: &[(String, (Timestamp, Option<String>))],
) -> Result<(), StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db("starting a transaction for heartbeats"))?;
    for (id, (at, inventory)) in chunk {
        // Never move last_seen back (an event batch may have set a later time).
        tx.execute(
            "UPDATE hosts SET last_seen = CASE WHEN last_seen < $1 THEN $1 ELSE last_seen END, \
             inventory = COALESCE($2, inventory) WHERE id = $3",
            args![*at, inventory.clone(), id.as_str()],
        )
        .await
        .map_err(db(format!("recording a heartbeat of host {id}")))?;
    }
    // Heartbeat times need not survive a crash: no fsync of their own.
    tx.commit_relaxed()
        .await
        .map_err(db("committing heartbeats"))
}

/// The SQL-backed store. Cloning is cheap (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
    beats: std::sync::Arc<Beats>,
}

const HOST_SELECT: &str = "SELECT h.id, h.name, h.tags, h.inventory, h.status, h.status_seq, \
     h.current_stage, h.current_step, h.last_error, h.applied_profile, h.applied_version, \
     h.last_seq, h.credential_sha256, h.registration_key_sha256, h.registered_at, h.last_seen, \
     p.name AS project_name, t.name AS tenant_name \
     FROM hosts h JOIN projects p ON p.id = h.project_id JOIN tenants t ON t.id = p.tenant_id";

const TOKEN_SELECT: &str = "SELECT k.id, k.name, k.hint, k.expires_at, k.max_uses, k.uses, \
     k.revoked_at, k.created_at, p.name AS project_name, t.name AS tenant_name \
     FROM registration_tokens k JOIN projects p ON p.id = k.project_id \
     JOIN tenants t ON t.id = p.tenant_id";

pub(super) const PROFILE_SELECT: &str =
    "SELECT pr.id, pr.name, pr.version, pr.sha256, pr.created_at, \
     pr.body, t.name AS tenant_name, p.name AS project_name \
     FROM profiles pr JOIN tenants t ON t.id = pr.tenant_id \
     LEFT JOIN projects p ON p.id = pr.project_id";

const ASSIGNMENT_SELECT: &str = "SELECT a.id, a.host_id, a.tag_key, a.tag_value, \
     a.profile_name, a.profile_version, a.created_at, p.name AS project_name, \
     t.name AS tenant_name \
     FROM assignments a JOIN projects p ON p.id = a.project_id \
     JOIN tenants t ON t.id = p.tenant_id";

fn corrupt(context: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Corrupt { context, source }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is too large")))
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A tenant or project name: lower-case letters, digits and `-`, 1 to 63 characters.
pub fn check_label(kind: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{name}` is not a valid {kind} name: use 1 to 63 lower-case letters, digits and `-`"
        )))
    }
}

/// A host name: 1 to 253 of `A-Z a-z 0-9 . _ -`.
pub fn check_host_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{}` is not a valid host name: use 1 to 253 letters, digits, `.`, `_` and `-`",
            name.escape_default()
        )))
    }
}

/// A tag: key of 1 to 63 of `A-Z a-z 0-9 . _ / -`, value up to 253 printable characters.
pub fn check_tag(key: &str, value: &str) -> Result<(), StoreError> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if !key_ok {
        return Err(StoreError::Invalid(format!(
            "`{}` is not a valid tag key: use 1 to 63 letters, digits, `.`, `_`, `/` and `-`",
            key.escape_default()
        )));
    }
    if value.len() > 253 || value.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "the value of tag `{key}` must be at most 253 characters without control characters"
        )));
    }
    Ok(())
}

fn check_free_text(what: &str, s: &str) -> Result<(), StoreError> {
    if s.len() > 200 || s.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{what} must be at most 200 characters without control characters"
        )));
    }
    Ok(())
}

fn host_from_row(r: &Row) -> Result<Host, StoreError> {
    let id = r.text("id").map_err(db("reading a host row"))?;
    let tags: BTreeMap<String, String> =
        serde_json::from_str(&r.text("tags").map_err(db("reading host tags"))?)
            .map_err(corrupt(format!("parsing the stored tags of host {id}")))?;
    let inventory: Inventory =
        serde_json::from_str(&r.text("inventory").map_err(db("reading host inventory"))?).map_err(
            corrupt(format!("parsing the stored inventory of host {id}")),
        )?;
    let ctx = || db(format!("reading host {id}"));
    Ok(Host {
        tenant: r.text("tenant_name").map_err(ctx())?,
        project: r.text("project_name").map_err(ctx())?,
        name: r.text("name").map_err(ctx())?,
        tags,
        inventory,
        status: HostStatus::parse(&r.text("status").map_err(ctx())?),
        current_stage: r.text("current_stage").map_err(ctx())?,
        current_step: r.text("current_step").map_err(ctx())?,
        last_error: r.text("last_error").map_err(ctx())?,
        applied_profile: r.opt_text("applied_profile").map_err(ctx())?,
        applied_version: r.opt_i64("applied_version").map_err(ctx())?.map(to_u64),
        last_seq: to_u64(r.i64("last_seq").map_err(ctx())?),
        registered_at: r.i64("registered_at").map_err(ctx())?,
        last_seen: r.i64("last_seen").map_err(ctx())?,
        id,
    })
}

fn token_from_row(r: &Row, now: Timestamp) -> Result<TokenInfo, StoreError> {
    let ctx = || db("reading a registration token row");
    let mut t = TokenInfo {
        id: r.text("id").map_err(ctx())?,
        tenant: r.text("tenant_name").map_err(ctx())?,
        project: r.text("project_name").map_err(ctx())?,
        name: r.text("name").map_err(ctx())?,
        hint: r.text("hint").map_err(ctx())?,
        created_at: r.i64("created_at").map_err(ctx())?,
        expires_at: r.opt_i64("expires_at").map_err(ctx())?,
        max_uses: r.opt_i64("max_uses").map_err(ctx())?.map(to_u32),
        uses: to_u32(r.i64("uses").map_err(ctx())?),
        revoked_at: r.opt_i64("revoked_at").map_err(ctx())?,
        state: TokenState::Active,
    };
    t.state = t.state_at(now);
    Ok(t)
}

pub(super) fn profile_from_row(r: &Row) -> Result<ProfileRecord, StoreError> {
    let ctx = || db("reading a profile row");
    Ok(ProfileRecord {
        info: ProfileInfo {
            id: r.text("id").map_err(ctx())?,
            tenant: r.text("tenant_name").map_err(ctx())?,
            project: r.opt_text("project_name").map_err(ctx())?,
            name: r.text("name").map_err(ctx())?,
            version: to_u64(r.i64("version").map_err(ctx())?),
            sha256: r.text("sha256").map_err(ctx())?,
            created_at: r.i64("created_at").map_err(ctx())?,
        },
        body: r.text("body").map_err(ctx())?,
    })
}

fn assignment_from_row(r: &Row) -> Result<Assignment, StoreError> {
    let ctx = || db("reading an assignment row");
    let target = match r.opt_text("host_id").map_err(ctx())? {
        Some(h) => Target::Host(h),
        None => Target::Tag {
            key: r.opt_text("tag_key").map_err(ctx())?.unwrap_or_default(),
            value: r.opt_text("tag_value").map_err(ctx())?.unwrap_or_default(),
        },
    };
    Ok(Assignment {
        id: r.text("id").map_err(ctx())?,
        tenant: r.text("tenant_name").map_err(ctx())?,
        project: r.text("project_name").map_err(ctx())?,
        target,
        profile: r.text("profile_name").map_err(ctx())?,
        version: r.opt_i64("profile_version").map_err(ctx())?.map(to_u64),
        created_at: r.i64("created_at").map_err(ctx())?,
    })
}

/// `(tenant id, project id)` of a project, or NotFound.
pub(super) async fn project_ids(
    c: &mut Conn<'_>,
    p: &ProjectRef,
) -> Result<(String, String), StoreError> {
    let row = c
        .fetch_optional(
            "SELECT t.id AS tenant_id, p.id AS project_id FROM projects p \
             JOIN tenants t ON t.id = p.tenant_id WHERE t.name = $1 AND p.name = $2",
            args![&p.tenant, &p.project],
        )
        .await
        .map_err(db(format!("looking up project {p}")))?
        .ok_or_else(|| StoreError::NotFound(format!("there is no project {p} (tenant/project)")))?;
    Ok((
        row.text("tenant_id").map_err(db("reading a project row"))?,
        row.text("project_id")
            .map_err(db("reading a project row"))?,
    ))
}

pub(super) async fn tenant_id(c: &mut Conn<'_>, tenant: &str) -> Result<String, StoreError> {
    let row = c
        .fetch_optional("SELECT id FROM tenants WHERE name = $1", args![tenant])
        .await
        .map_err(db(format!("looking up tenant {tenant}")))?
        .ok_or_else(|| StoreError::NotFound(format!("there is no tenant `{tenant}`")))?;
    row.text("id").map_err(db("reading a tenant row"))
}

async fn host_by_id(c: &mut Conn<'_>, id: &str) -> Result<Option<Host>, StoreError> {
    let sql = format!("{HOST_SELECT} WHERE h.id = $1");
    match c
        .fetch_optional(&sql, args![id])
        .await
        .map_err(db(format!("reading host {id}")))?
    {
        Some(r) => Ok(Some(host_from_row(&r)?)),
        None => Ok(None),
    }
}

pub(super) fn target_key(host_id: Option<&str>, target: &Target) -> String {
    match (host_id, target) {
        (Some(id), _) => format!("host:{id}"),
        (None, Target::Host(h)) => format!("host:{h}"),
        (None, Target::Tag { key, value }) => format!("tag:{key}={value}"),
    }
}

/// Resolve a host target (id or name) to the host id inside the project.
pub(super) async fn host_in_project(
    c: &mut Conn<'_>,
    project_id: &str,
    project: &ProjectRef,
    host: &str,
) -> Result<String, StoreError> {
    let row = c
        .fetch_optional(
            "SELECT id FROM hosts WHERE project_id = $1 AND (id = $2 OR name = $2)",
            args![project_id, host],
        )
        .await
        .map_err(db(format!("looking up host {host}")))?
        .ok_or_else(|| {
            StoreError::NotFound(format!("there is no host `{host}` in project {project}"))
        })?;
    row.text("id").map_err(db("reading a host id"))
}

fn event_from_row(r: &Row, host_id: &str) -> Result<StoredEvent, StoreError> {
    let ctx = || db(format!("reading an event of host {host_id}"));
    let seq = to_u64(r.i64("seq").map_err(ctx())?);
    let kind_text = r.text("kind").map_err(ctx())?;
    let kind: EventKind = serde_json::from_value(serde_json::Value::String(kind_text)).map_err(
        corrupt(format!("parsing the kind of event {seq} of host {host_id}")),
    )?;
    let data = match r.opt_text("data").map_err(ctx())? {
        Some(d) => serde_json::from_str(&d).map_err(corrupt(format!(
            "parsing the data of event {seq} of host {host_id}"
        )))?,
        None => serde_json::Value::Null,
    };
    Ok(StoredEvent {
        event: Event {
            seq,
            time: r.text("time").map_err(ctx())?,
            host: host_id.to_owned(),
            kind,
            stage: r.text("stage").map_err(ctx())?,
            step: r.text("step").map_err(ctx())?,
            source: r.text("source").map_err(ctx())?,
            message: r.text("message").map_err(ctx())?,
            data,
        },
        received_at: r.i64("received_at").map_err(ctx())?,
    })
}

impl SqlStore {
    /// Open (and migrate) the database: a `postgres://` URL, or a SQLite file path (created
    /// if missing) or `sqlite:` URL.
    pub async fn open(url: &str) -> Result<SqlStore, StoreError> {
        let store = SqlStore {
            pool: Pool::connect(url).await?,
            beats: std::sync::Arc::default(),
        };
        // Writes buffered heartbeats until the last clone of the store is gone.
        let beats = std::sync::Arc::downgrade(&store.beats);
        let pool = store.pool.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(beats) = beats.upgrade() else {
                    return;
                };
                if let Err(e) = beats.flush(&pool).await {
                    tracing::warn!(error = %cairn_cli::report::error_chain(&e), "writing heartbeats");
                }
            }
        });
        Ok(store)
    }

    /// Write buffered heartbeats now (in a task of its own, so a caller that gives up
    /// waiting loses nothing).
    pub async fn flush_heartbeats(&self) -> Result<(), StoreError> {
        if self.beats.pending().is_empty() {
            return Ok(());
        }
        let (beats, pool) = (std::sync::Arc::clone(&self.beats), self.pool.clone());
        match tokio::spawn(async move { beats.flush(&pool).await }).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Internal(format!("writing heartbeats: {e}"))),
        }
    }

    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// Write buffered heartbeats, then close every connection (checkpoints SQLite's WAL).
    pub async fn close(&self) {
        if let Err(e) = self.flush_heartbeats().await {
            tracing::warn!(error = %cairn_cli::report::error_chain(&e), "writing heartbeats at close");
        }
        self.pool.close().await;
    }

    async fn begin(&self, what: &str) -> Result<Tx, StoreError> {
        self.pool
            .begin()
            .await
            .map_err(db(format!("starting a transaction for {what}")))
    }

    /// The registration a retry repeats: the host named `name` in the project, registered
    /// with this token and this registration key, whose credential has not been used yet.
    /// Its answer again (same host, same credential), or `None`.
    async fn repeated_registration(
        &self,
        tx: &mut Tx,
        project_id: &str,
        token_id: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Registered>, StoreError> {
        let row = tx
            .fetch_optional(
                "SELECT id, registration_key_sha256, credential_salt, credential_sha256 \
                 FROM hosts WHERE project_id = $1 AND name = $2 AND token_id = $3",
                args![project_id, name, token_id],
            )
            .await
            .map_err(db(format!("looking up host {name}")))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let ctx = || db(format!("reading host {name}"));
        let (Some(stored_key), Some(salt)) = (
            row.opt_text("registration_key_sha256").map_err(ctx())?,
            row.opt_text("credential_salt").map_err(ctx())?,
        ) else {
            return Ok(None); // registered without a key, or its credential is in use
        };
        if !secret::constant_time_eq(secret::sha256_hex(key).as_bytes(), stored_key.as_bytes()) {
            return Ok(None); // another device's key: the name is taken
        }
        let id = row.text("id").map_err(ctx())?;
        let credential = secret::derive_credential(key, &salt)?;
        let stored_credential = row.text("credential_sha256").map_err(ctx())?;
        if secret::sha256_hex(&credential) != stored_credential {
            return Err(StoreError::Internal(format!(
                "host {id}: the credential derived from its registration key does not match \
                 the stored one"
            )));
        }
        let host = host_by_id(&mut Conn::Tx(tx), &id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {id} vanished while registering")))?;
        Ok(Some(Registered {
            host,
            credential,
            repeated: true,
        }))
    }

    /// Explain why a token was refused, for the registering agent and the operator.
    async fn token_refusal(&self, hash: &str, now: Timestamp) -> StoreError {
        let sql = format!("{TOKEN_SELECT} WHERE k.secret_sha256 = $1");
        let row = match self.pool.fetch_optional(&sql, args![hash]).await {
            Ok(r) => r,
            Err(e) => return db("looking up a registration token")(e),
        };
        let Some(row) = row else {
            return StoreError::TokenRejected("unknown registration token".into());
        };
        match token_from_row(&row, now) {
            Err(e) => e,
            Ok(t) => StoreError::TokenRejected(match t.state {
                TokenState::Revoked => format!("registration token {} was revoked", t.id),
                TokenState::Expired => format!(
                    "registration token {} expired at {}",
                    t.id,
                    rfc3339(t.expires_at.unwrap_or_default())
                ),
                TokenState::UsedUp => format!(
                    "registration token {} has been used {} of {} times",
                    t.id,
                    t.uses,
                    t.max_uses.unwrap_or_default()
                ),
                // Valid now but not a moment ago (an expiry edge): ask to retry.
                TokenState::Active => format!("registration token {} was refused; retry", t.id),
            }),
        }
    }
}

impl Store for SqlStore {
    async fn create_registry(&self, new: &NewRegistry) -> Result<RegistryInfo, StoreError> {
        super::registries::create(&self.pool, new).await
    }

    async fn list_registries(
        &self,
        tenant: Option<&str>,
        visible_to: Option<&ProjectRef>,
    ) -> Result<Vec<RegistryInfo>, StoreError> {
        super::registries::list(&self.pool, tenant, visible_to).await
    }

    async fn delete_registry(&self, scope: &Scope, name: &str) -> Result<RegistryInfo, StoreError> {
        super::registries::delete(&self.pool, scope, name).await
    }

    async fn host_registries(&self, host_id: &str) -> Result<Vec<RegistryRecord>, StoreError> {
        super::registries::for_host(&self.pool, host_id).await
    }

    async fn check_addons(
        &self,
        project: &ProjectRef,
        profile: &str,
        version: Option<u64>,
        addons: &[AddonRef],
    ) -> Result<(), StoreError> {
        super::addons::check(&self.pool, project, profile, version, addons).await
    }

    async fn attach_addons(
        &self,
        project: &ProjectRef,
        target: &Target,
        addons: &[AddonRef],
    ) -> Result<(), StoreError> {
        super::addons::attach(&self.pool, project, target, addons).await
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        check_label("tenant", name)?;
        let t = Tenant {
            id: secret::new_id("t_")?,
            name: name.to_owned(),
            created_at: now(),
        };
        self.pool
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                args![&t.id, &t.name, t.created_at],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("tenant `{name}` already exists"))
                } else {
                    db(format!("creating tenant {name}"))(e)
                }
            })?;
        Ok(t)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self
            .pool
            .fetch_all(
                "SELECT id, name, created_at FROM tenants ORDER BY name",
                args![],
            )
            .await
            .map_err(db("listing tenants"))?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    id: r.text("id").map_err(db("reading a tenant row"))?,
                    name: r.text("name").map_err(db("reading a tenant row"))?,
                    created_at: r.i64("created_at").map_err(db("reading a tenant row"))?,
                })
            })
            .collect()
    }

    async fn create_project(&self, project: &ProjectRef) -> Result<Project, StoreError> {
        check_label("project", &project.project)?;
        let tid = tenant_id(&mut Conn::Pool(&self.pool), &project.tenant).await?;
        let p = Project {
            id: secret::new_id("p_")?,
            tenant: project.tenant.clone(),
            name: project.project.clone(),
            created_at: now(),
        };
        self.pool
            .execute(
                "INSERT INTO projects (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)",
                args![&p.id, tid, &p.name, p.created_at],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("project {project} already exists"))
                } else {
                    db(format!("creating project {project}"))(e)
                }
            })?;
        Ok(p)
    }

    async fn list_projects(&self, tenant: Option<&str>) -> Result<Vec<Project>, StoreError> {
        let rows = self
            .pool
            .fetch_all(
                "SELECT p.id, p.name, p.created_at, t.name AS tenant_name FROM projects p \
                 JOIN tenants t ON t.id = p.tenant_id \
                 WHERE ($1 IS NULL OR t.name = $1) ORDER BY t.name, p.name",
                args![tenant],
            )
            .await
            .map_err(db("listing projects"))?;
        rows.iter()
            .map(|r| {
                let ctx = || db("reading a project row");
                Ok(Project {
                    id: r.text("id").map_err(ctx())?,
                    tenant: r.text("tenant_name").map_err(ctx())?,
                    name: r.text("name").map_err(ctx())?,
                    created_at: r.i64("created_at").map_err(ctx())?,
                })
            })
            .collect()
    }

    async fn create_token(&self, new: &NewToken) -> Result<CreatedToken, StoreError> {
        check_free_text("a token name", &new.name)?;
        if new.max_uses == Some(0) {
            return Err(StoreError::Invalid("max uses must be at least 1".into()));
        }
        let (_, pid) = project_ids(&mut Conn::Pool(&self.pool), &new.project).await?;
        let id = secret::new_id("rt_")?;
        let token = secret::new_secret(TOKEN_PREFIX)?;
        let hint = secret::hint(&token, TOKEN_PREFIX);
        let created_at = now();
        self.pool
            .execute(
                "INSERT INTO registration_tokens \
                 (id, project_id, name, secret_sha256, hint, expires_at, max_uses, uses, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
                args![
                    &id,
                    pid,
                    &new.name,
                    secret::sha256_hex(&token),
                    &hint,
                    new.expires_at,
                    new.max_uses.map(i64::from),
                    created_at
                ],
            )
            .await
            .map_err(db(format!("creating a registration token in {}", new.project)))?;
        let mut info = TokenInfo {
            id,
            tenant: new.project.tenant.clone(),
            project: new.project.project.clone(),
            name: new.name.clone(),
            hint,
            created_at,
            expires_at: new.expires_at,
            max_uses: new.max_uses,
            uses: 0,
            revoked_at: None,
            state: TokenState::Active,
        };
        info.state = info.state_at(created_at);
        Ok(CreatedToken { info, token })
    }

    async fn list_tokens(
        &self,
        project: Option<&ProjectRef>,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        let sql = format!(
            "{TOKEN_SELECT} WHERE ($1 IS NULL OR (t.name = $1 AND p.name = $2)) \
             ORDER BY k.created_at, k.id"
        );
        let rows = self
            .pool
            .fetch_all(
                &sql,
                args![
                    project.map(|p| p.tenant.as_str()),
                    project.map(|p| p.project.as_str())
                ],
            )
            .await
            .map_err(db("listing registration tokens"))?;
        let now = now();
        rows.iter().map(|r| token_from_row(r, now)).collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenInfo, StoreError> {
        let now = now();
        self.pool
            .execute(
                "UPDATE registration_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                args![now, id],
            )
            .await
            .map_err(db(format!("revoking registration token {id}")))?;
        let sql = format!("{TOKEN_SELECT} WHERE k.id = $1");
        let row = self
            .pool
            .fetch_optional(&sql, args![id])
            .await
            .map_err(db(format!("reading registration token {id}")))?
            .ok_or_else(|| {
                StoreError::NotFound(format!("there is no registration token `{id}`"))
            })?;
        token_from_row(&row, now)
    }

    async fn register_host(&self, reg: &Registration) -> Result<Registered, StoreError> {
        check_host_name(&reg.name)?;
        if reg.tags.len() > MAX_TAGS {
            return Err(StoreError::Invalid(format!(
                "a host has at most {MAX_TAGS} tags, not {}",
                reg.tags.len()
            )));
        }
        for (k, v) in &reg.tags {
            check_tag(k, v)?;
        }
        let key = reg.registration_key.as_deref();
        if key.is_some_and(|k| !valid_registration_key(k)) {
            return Err(StoreError::Invalid(format!(
                "a registration key is {REGISTRATION_KEY_MIN_LEN} to {REGISTRATION_KEY_MAX_LEN} \
                 letters, digits, `_` and `-`"
            )));
        }
        let now = now();
        let hash = secret::sha256_hex(&reg.token);
        let tags =
            serde_json::to_string(&reg.tags).map_err(corrupt("encoding host tags".into()))?;
        let inventory = serde_json::to_string(&reg.inventory)
            .map_err(corrupt("encoding a host inventory".into()))?;
        let host_id = secret::new_id("h_")?;
        // With a key, the credential is derived from it (and a random salt kept with the
        // host), so a retry can be answered with the same credential; without one, random.
        let (credential, key_sha256, salt) = match key {
            Some(k) => {
                let salt = secret::new_salt()?;
                (
                    secret::derive_credential(k, &salt)?,
                    Some(secret::sha256_hex(k)),
                    Some(salt),
                )
            }
            None => (secret::new_secret(CREDENTIAL_PREFIX)?, None, None),
        };

        let mut tx = self.begin("registering a host").await?;
        // Lock the token's row first (an UPDATE that changes nothing): registrations with
        // the same token run one after the other, so a retry racing the attempt it repeats
        // sees that attempt's host once it has committed. With SQLite the transaction holds
        // the database's write lock already.
        let token = tx
            .fetch_optional(
                "UPDATE registration_tokens SET uses = uses WHERE secret_sha256 = $1 \
                 RETURNING id, project_id",
                args![&hash],
            )
            .await
            .map_err(db("looking up a registration token"))?;
        let Some(token) = token else {
            drop(tx);
            return Err(self.token_refusal(&hash, now).await);
        };
        let token_id = token.text("id").map_err(db("reading a token row"))?;
        let project_id = token
            .text("project_id")
            .map_err(db("reading a token row"))?;
        if let Some(key) = key {
            if let Some(done) = self
                .repeated_registration(&mut tx, &project_id, &token_id, &reg.name, key)
                .await?
            {
                // Nothing was written: the rollback only releases the token's row.
                drop(tx);
                return Ok(done);
            }
        }
        // Spend one use; two hosts cannot both take the last one (the row is locked).
        let spent = tx
            .fetch_optional(
                "UPDATE registration_tokens SET uses = uses + 1 \
                 WHERE id = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2) \
                 AND (max_uses IS NULL OR uses < max_uses) \
                 RETURNING id",
                args![&token_id, now],
            )
            .await
            .map_err(db("spending a registration token"))?;
        if spent.is_none() {
            drop(tx);
            return Err(self.token_refusal(&hash, now).await);
        }
        let inserted = tx
            .execute(
                "INSERT INTO hosts (id, project_id, name, tags, inventory, status, \
                 credential_sha256, token_id, registered_at, last_seen, \
                 registration_key_sha256, credential_salt) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)",
                args![
                    &host_id,
                    &project_id,
                    &reg.name,
                    tags,
                    inventory,
                    HostStatus::Registered.as_str(),
                    secret::sha256_hex(&credential),
                    token_id,
                    now,
                    key_sha256,
                    salt
                ],
            )
            .await;
        if let Err(e) = inserted {
            drop(tx);
            if is_unique_violation(&e) {
                return Err(StoreError::Conflict(format!(
                    "a host named `{}` is already registered in this project; remove it first \
                     (cairn-hub hosts remove) or register under another name",
                    reg.name
                )));
            }
            return Err(db(format!("creating host {}", reg.name))(e));
        }
        let host = host_by_id(&mut Conn::Tx(&mut tx), &host_id)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("host {host_id} vanished while registering"))
            })?;
        tx.commit()
            .await
            .map_err(db(format!("committing the registration of {}", reg.name)))?;
        Ok(Registered {
            host,
            credential,
            repeated: false,
        })
    }

    async fn authenticate_host(&self, host_id: &str, credential: &str) -> Result<Host, StoreError> {
        let sql = format!("{HOST_SELECT} WHERE h.id = $1");
        let row = self
            .pool
            .fetch_optional(&sql, args![host_id])
            .await
            .map_err(db(format!("reading host {host_id}")))?;
        let forbidden = || StoreError::Forbidden(host_id.to_owned());
        let row = row.ok_or_else(forbidden)?;
        let stored = row
            .text("credential_sha256")
            .map_err(db(format!("reading host {host_id}")))?;
        let given = secret::sha256_hex(credential);
        if !secret::constant_time_eq(given.as_bytes(), stored.as_bytes()) {
            return Err(forbidden());
        }
        let key_live = row
            .opt_text("registration_key_sha256")
            .map_err(db(format!("reading host {host_id}")))?
            .is_some();
        if key_live {
            // The agent has its identity: its registration can no longer be repeated, and
            // whoever else might hold the key gets nothing with it from now on.
            self.pool
                .execute(
                    "UPDATE hosts SET registration_key_sha256 = NULL, credential_salt = NULL \
                     WHERE id = $1",
                    args![host_id],
                )
                .await
                .map_err(db(format!(
                    "retiring the registration key of host {host_id}"
                )))?;
        }
        host_from_row(&row)
    }

    async fn heartbeat(
        &self,
        host_id: &str,
        inventory: Option<&Inventory>,
    ) -> Result<(), StoreError> {
        let inventory = inventory
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt("encoding a host inventory".into()))?;
        let known = self
            .pool
            .fetch_optional("SELECT 1 AS one FROM hosts WHERE id = $1", args![host_id])
            .await
            .map_err(db(format!("reading host {host_id}")))?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!(
                "there is no host `{host_id}`"
            )));
        }
        // Written within HEARTBEAT_FLUSH_EVERY, or before the next read of hosts.
        self.beats.add(host_id, now(), inventory);
        Ok(())
    }

    async fn publish_profile(
        &self,
        scope: &Scope,
        profile: &Profile,
    ) -> Result<Published, StoreError> {
        let problems = profile.validate();
        if let Some(first) = problems.first() {
            return Err(StoreError::Invalid(format!(
                "the profile is not valid ({} problem(s)); first: {}: {}",
                problems.len(),
                first.path,
                first.message
            )));
        }
        to_i64(profile.version, "profile version")?;
        let mut tx = self.begin("publishing a profile").await?;
        let (tid, pid) = match scope {
            Scope::Tenant(t) => (tenant_id(&mut Conn::Tx(&mut tx), t).await?, None),
            Scope::Project(p) => {
                let (t, p) = project_ids(&mut Conn::Tx(&mut tx), p).await?;
                (t, Some(p))
            }
        };
        let scope_name = match scope {
            Scope::Tenant(t) => format!("tenant {t}"),
            Scope::Project(p) => format!("project {p}"),
        };
        let sql = format!(
            "{PROFILE_SELECT} WHERE pr.tenant_id = $1 AND pr.name = $2 ORDER BY pr.version DESC"
        );
        let existing = tx
            .fetch_all(&sql, args![&tid, &profile.name])
            .await
            .map_err(db(format!("reading versions of profile {}", profile.name)))?;
        let mut versions = Vec::with_capacity(existing.len());
        for r in &existing {
            let project_id = {
                // Which scope the name already lives in: compare by project name.
                r.opt_text("project_name")
                    .map_err(db("reading a profile row"))?
            };
            versions.push((profile_from_row(r)?, project_id));
        }
        if let Some((latest, existing_project)) = versions.first() {
            let wanted_project = match scope {
                Scope::Tenant(_) => None,
                Scope::Project(p) => Some(p.project.clone()),
            };
            if *existing_project != wanted_project {
                let here = match existing_project {
                    None => format!("tenant {}", latest.info.tenant),
                    Some(p) => format!("project {}/{p}", latest.info.tenant),
                };
                return Err(StoreError::Conflict(format!(
                    "profile `{}` already exists in {here}; a profile name lives in one scope of \
                     a tenant, so publish it there or choose another name",
                    profile.name
                )));
            }
        }
        let latest = versions.first().map(|(r, _)| r.info.version).unwrap_or(0);
        let canonical = |version: u64| -> Result<(String, String), StoreError> {
            let mut p = profile.clone();
            p.version = version;
            let body = serde_json::to_string(&p)
                .map_err(corrupt(format!("encoding profile {}", profile.name)))?;
            let sha = secret::sha256_hex(&body);
            Ok((body, sha))
        };
        if profile.version == 0 && latest > 0 {
            // Re-uploading the latest content without a version is a no-op, not a new version.
            let (_, sha) = canonical(latest)?;
            if let Some((r, _)) = versions.first() {
                if r.info.sha256 == sha {
                    return Ok(Published::Unchanged(r.info.clone()));
                }
            }
        }
        let version = if profile.version == 0 {
            latest + 1
        } else {
            profile.version
        };
        let (body, sha) = canonical(version)?;
        if let Some((r, _)) = versions.iter().find(|(r, _)| r.info.version == version) {
            if r.info.sha256 == sha {
                return Ok(Published::Unchanged(r.info.clone()));
            }
            return Err(StoreError::Conflict(format!(
                "version {version} of profile `{}` is published and immutable; upload the change \
                 as version {} (or leave `version` out)",
                profile.name,
                latest + 1
            )));
        }
        if version < latest {
            return Err(StoreError::Conflict(format!(
                "profile versions only increase: `{}` is at version {latest}; use {} or leave \
                 `version` out",
                profile.name,
                latest + 1
            )));
        }
        let info = ProfileInfo {
            id: secret::new_id("pr_")?,
            tenant: scope.tenant().to_owned(),
            project: match scope {
                Scope::Tenant(_) => None,
                Scope::Project(p) => Some(p.project.clone()),
            },
            name: profile.name.clone(),
            version,
            sha256: sha,
            created_at: now(),
        };
        tx.execute(
            "INSERT INTO profiles (id, tenant_id, project_id, name, version, body, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            args![
                &info.id,
                &tid,
                pid,
                &info.name,
                to_i64(version, "profile version")?,
                body,
                &info.sha256,
                info.created_at
            ],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "version {version} of profile `{}` was published concurrently; retry",
                    profile.name
                ))
            } else {
                db(format!("publishing profile {} in {scope_name}", profile.name))(e)
            }
        })?;
        tx.commit()
            .await
            .map_err(db(format!("committing profile {}", profile.name)))?;
        Ok(Published::Created(info))
    }

    async fn list_profiles(
        &self,
        tenant: Option<&str>,
        visible_to: Option<&ProjectRef>,
    ) -> Result<Vec<ProfileInfo>, StoreError> {
        let rows = if let Some(p) = visible_to {
            let (tid, pid) = project_ids(&mut Conn::Pool(&self.pool), p).await?;
            let sql = format!(
                "{PROFILE_SELECT} WHERE pr.tenant_id = $1 AND (pr.project_id IS NULL OR pr.project_id = $2) \
                 ORDER BY pr.name, pr.version"
            );
            self.pool.fetch_all(&sql, args![tid, pid]).await
        } else {
            let sql = format!(
                "{PROFILE_SELECT} WHERE ($1 IS NULL OR t.name = $1) ORDER BY t.name, pr.name, pr.version"
            );
            self.pool.fetch_all(&sql, args![tenant]).await
        }
        .map_err(db("listing profiles"))?;
        rows.iter().map(|r| Ok(profile_from_row(r)?.info)).collect()
    }

    async fn get_profile(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<ProfileRecord, StoreError> {
        let v = version.map(|v| to_i64(v, "profile version")).transpose()?;
        let sql = format!(
            "{PROFILE_SELECT} WHERE t.name = $1 AND pr.name = $2 AND ($3 IS NULL OR pr.version = $3) \
             ORDER BY pr.version DESC LIMIT 1"
        );
        let row = self
            .pool
            .fetch_optional(&sql, args![tenant, name, v])
            .await
            .map_err(db(format!("reading profile {name}")))?
            .ok_or_else(|| {
                StoreError::NotFound(match version {
                    Some(v) => {
                        format!("there is no version {v} of profile `{name}` in tenant {tenant}")
                    }
                    None => format!("there is no profile `{name}` in tenant {tenant}"),
                })
            })?;
        profile_from_row(&row)
    }

    async fn assign(
        &self,
        project: &ProjectRef,
        target: &Target,
        profile: &str,
        version: Option<u64>,
    ) -> Result<Assignment, StoreError> {
        if let Target::Tag { key, value } = target {
            check_tag(key, value)?;
        }
        let v = version.map(|v| to_i64(v, "profile version")).transpose()?;
        let mut tx = self.begin("assigning a profile").await?;
        let (tid, pid) = project_ids(&mut Conn::Tx(&mut tx), project).await?;
        let host_id = match target {
            Target::Host(h) => {
                Some(host_in_project(&mut Conn::Tx(&mut tx), &pid, project, h).await?)
            }
            Target::Tag { .. } => None,
        };
        let found = tx
            .fetch_optional(
                "SELECT MAX(version) AS latest, \
                 SUM(CASE WHEN version = $4 THEN 1 ELSE 0 END) AS pinned \
                 FROM profiles WHERE tenant_id = $1 AND name = $2 \
                 AND (project_id IS NULL OR project_id = $3)",
                args![&tid, profile, &pid, v],
            )
            .await
            .map_err(db(format!("looking up profile {profile}")))?;
        let latest = match &found {
            Some(r) => r
                .opt_i64("latest")
                .map_err(db("reading a profile version"))?,
            None => None,
        };
        if latest.is_none() {
            return Err(StoreError::NotFound(format!(
                "no profile `{profile}` is visible to project {project} (publish it at tenant \
                 scope or in this project)"
            )));
        }
        if let (Some(v), Some(r)) = (version, &found) {
            let pinned = r
                .opt_i64("pinned")
                .map_err(db("reading a profile version"))?;
            if pinned.unwrap_or(0) == 0 {
                return Err(StoreError::NotFound(format!(
                    "profile `{profile}` has no version {v} (latest is {})",
                    latest.unwrap_or(0)
                )));
            }
        }
        let key = target_key(host_id.as_deref(), target);
        let (tag_key, tag_value) = match target {
            Target::Tag { key, value } => (Some(key.clone()), Some(value.clone())),
            Target::Host(_) => (None, None),
        };
        let rev_row = tx
            .fetch_optional(
                "SELECT COALESCE(MAX(rev), 0) + 1 AS rev FROM assignments WHERE project_id = $1",
                args![&pid],
            )
            .await
            .map_err(db("numbering an assignment"))?;
        let rev = match rev_row {
            Some(r) => r.i64("rev").map_err(db("numbering an assignment"))?,
            None => 1,
        };
        let created_at = now();
        let row = tx
            .fetch_optional(
                "INSERT INTO assignments (id, project_id, target, host_id, tag_key, tag_value, \
                 profile_name, profile_version, rev, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (project_id, target) DO UPDATE SET \
                 profile_name = excluded.profile_name, profile_version = excluded.profile_version, \
                 rev = excluded.rev, created_at = excluded.created_at \
                 RETURNING id",
                args![
                    secret::new_id("a_")?,
                    &pid,
                    key,
                    host_id.clone(),
                    tag_key,
                    tag_value,
                    profile,
                    v,
                    rev,
                    created_at
                ],
            )
            .await
            .map_err(db(format!("assigning profile {profile}")))?
            .ok_or_else(|| StoreError::NotFound("the assignment was not stored".into()))?;
        let id = row.text("id").map_err(db("reading an assignment id"))?;
        tx.commit()
            .await
            .map_err(db(format!("committing the assignment of {profile}")))?;
        Ok(Assignment {
            id,
            tenant: project.tenant.clone(),
            project: project.project.clone(),
            target: match host_id {
                Some(h) => Target::Host(h),
                None => target.clone(),
            },
            profile: profile.to_owned(),
            version,
            created_at,
        })
    }

    async fn unassign(&self, project: &ProjectRef, target: &Target) -> Result<bool, StoreError> {
        let mut tx = self.begin("removing an assignment").await?;
        let (_, pid) = project_ids(&mut Conn::Tx(&mut tx), project).await?;
        let host_id = match target {
            Target::Host(h) => {
                Some(host_in_project(&mut Conn::Tx(&mut tx), &pid, project, h).await?)
            }
            Target::Tag { .. } => None,
        };
        let n = tx
            .execute(
                "DELETE FROM assignments WHERE project_id = $1 AND target = $2",
                args![&pid, target_key(host_id.as_deref(), target)],
            )
            .await
            .map_err(db("removing an assignment"))?;
        tx.commit()
            .await
            .map_err(db("committing an unassignment"))?;
        Ok(n > 0)
    }

    async fn list_assignments(
        &self,
        project: Option<&ProjectRef>,
    ) -> Result<Vec<Assignment>, StoreError> {
        let sql = format!(
            "{ASSIGNMENT_SELECT} WHERE ($1 IS NULL OR (t.name = $1 AND p.name = $2)) \
             ORDER BY t.name, p.name, a.rev"
        );
        let rows = self
            .pool
            .fetch_all(
                &sql,
                args![
                    project.map(|p| p.tenant.as_str()),
                    project.map(|p| p.project.as_str())
                ],
            )
            .await
            .map_err(db("listing assignments"))?;
        rows.iter().map(assignment_from_row).collect()
    }

    async fn assigned_profile(&self, host_id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                "SELECT h.project_id, h.tags, p.tenant_id FROM hosts h \
                 JOIN projects p ON p.id = h.project_id WHERE h.id = $1",
                args![host_id],
            )
            .await
            .map_err(db(format!("reading host {host_id}")))?
            .ok_or_else(|| StoreError::NotFound(format!("there is no host `{host_id}`")))?;
        let ctx = || db(format!("reading host {host_id}"));
        let pid = row.text("project_id").map_err(ctx())?;
        let tid = row.text("tenant_id").map_err(ctx())?;
        let tags: BTreeMap<String, String> =
            serde_json::from_str(&row.text("tags").map_err(ctx())?).map_err(corrupt(format!(
                "parsing the stored tags of host {host_id}"
            )))?;
        let candidates = self
            .pool
            .fetch_all(
                "SELECT host_id, tag_key, tag_value, profile_name, profile_version, addons FROM assignments \
                 WHERE project_id = $1 AND (host_id = $2 OR host_id IS NULL) \
                 ORDER BY CASE WHEN host_id IS NULL THEN 1 ELSE 0 END, rev DESC",
                args![&pid, host_id],
            )
            .await
            .map_err(db(format!("reading the assignments of host {host_id}")))?;
        let mut chosen = None;
        for c in &candidates {
            let actx = || db("reading an assignment row");
            let by_host = c.opt_text("host_id").map_err(actx())?.is_some();
            let matches = by_host || {
                let k = c.opt_text("tag_key").map_err(actx())?.unwrap_or_default();
                let v = c.opt_text("tag_value").map_err(actx())?.unwrap_or_default();
                tags.get(&k) == Some(&v)
            };
            if matches {
                chosen = Some((
                    c.text("profile_name").map_err(actx())?,
                    c.opt_i64("profile_version").map_err(actx())?,
                    c.opt_text("addons").map_err(actx())?,
                ));
                break;
            }
        }
        let Some((name, version, addons)) = chosen else {
            return Ok(None);
        };
        let sql = format!(
            "{PROFILE_SELECT} WHERE pr.tenant_id = $1 AND pr.name = $2 \
             AND (pr.project_id IS NULL OR pr.project_id = $3) AND ($4 IS NULL OR pr.version = $4) \
             ORDER BY pr.version DESC LIMIT 1"
        );
        match self
            .pool
            .fetch_optional(&sql, args![&tid, name, &pid, version])
            .await
            .map_err(db(format!(
                "reading the profile assigned to host {host_id}"
            )))? {
            Some(r) => Ok(Some(
                super::addons::compose(&self.pool, &tid, &pid, profile_from_row(&r)?, addons)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    async fn list_hosts(&self, project: Option<&ProjectRef>) -> Result<Vec<Host>, StoreError> {
        self.flush_heartbeats().await?;
        let sql = format!(
            "{HOST_SELECT} WHERE ($1 IS NULL OR (t.name = $1 AND p.name = $2)) \
             ORDER BY t.name, p.name, h.name"
        );
        let rows = self
            .pool
            .fetch_all(
                &sql,
                args![
                    project.map(|p| p.tenant.as_str()),
                    project.map(|p| p.project.as_str())
                ],
            )
            .await
            .map_err(db("listing hosts"))?;
        rows.iter().map(host_from_row).collect()
    }

    async fn get_host(
        &self,
        id_or_name: &str,
        project: Option<&ProjectRef>,
    ) -> Result<Host, StoreError> {
        self.flush_heartbeats().await?;
        let row = match project {
            Some(p) => {
                let sql = format!(
                    "{HOST_SELECT} WHERE t.name = $1 AND p.name = $2 AND (h.id = $3 OR h.name = $3)"
                );
                self.pool
                    .fetch_optional(&sql, args![&p.tenant, &p.project, id_or_name])
                    .await
            }
            None => {
                let sql = format!("{HOST_SELECT} WHERE h.id = $1");
                self.pool.fetch_optional(&sql, args![id_or_name]).await
            }
        }
        .map_err(db(format!("reading host {id_or_name}")))?
        .ok_or_else(|| {
            StoreError::NotFound(match project {
                Some(p) => format!("there is no host `{id_or_name}` in project {p}"),
                None => format!("there is no host with id `{id_or_name}`"),
            })
        })?;
        host_from_row(&row)
    }

    async fn remove_host(&self, id: &str) -> Result<Host, StoreError> {
        let mut tx = self.begin("removing a host").await?;
        let host = host_by_id(&mut Conn::Tx(&mut tx), id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("there is no host with id `{id}`")))?;
        for sql in [
            "DELETE FROM assignments WHERE host_id = $1",
            "DELETE FROM events WHERE host_id = $1",
            "DELETE FROM hosts WHERE id = $1",
        ] {
            tx.execute(sql, args![id])
                .await
                .map_err(db(format!("removing host {id}")))?;
        }
        tx.commit()
            .await
            .map_err(db(format!("committing the removal of host {id}")))?;
        Ok(host)
    }

    async fn record_events(
        &self,
        host_id: &str,
        events: &[Event],
    ) -> Result<EventOutcome, StoreError> {
        let mut acked = 0u64;
        for ev in events {
            if ev.seq == 0 {
                return Err(StoreError::Invalid("event seq starts at 1; got 0".into()));
            }
            to_i64(ev.seq, "event seq")?;
            acked = acked.max(ev.seq);
        }
        let now = now();
        let mut tx = self.begin("storing events").await?;
        // Write first: takes SQLite's lock and PostgreSQL's row lock on the host, so two
        // batches of one host are applied one after the other.
        let row = tx
            .fetch_optional(
                "UPDATE hosts SET last_seen = $1 WHERE id = $2 RETURNING status, status_seq, \
                 current_stage, current_step, last_error, applied_profile, applied_version, last_seq",
                args![now, host_id],
            )
            .await
            .map_err(db(format!("locking host {host_id}")))?
            .ok_or_else(|| StoreError::NotFound(format!("there is no host `{host_id}`")))?;
        let ctx = || db(format!("reading host {host_id}"));
        let mut progress = Progress {
            status: HostStatus::parse(&row.text("status").map_err(ctx())?),
            status_seq: to_u64(row.i64("status_seq").map_err(ctx())?),
            stage: row.text("current_stage").map_err(ctx())?,
            step: row.text("current_step").map_err(ctx())?,
            last_error: row.text("last_error").map_err(ctx())?,
            applied_profile: row.opt_text("applied_profile").map_err(ctx())?,
            applied_version: row.opt_i64("applied_version").map_err(ctx())?.map(to_u64),
        };
        let mut last_seq = to_u64(row.i64("last_seq").map_err(ctx())?);
        // One multi-row INSERT per chunk (one round trip to the database, not one per
        // event); RETURNING names the rows actually inserted. A seq already stored, or
        // repeated within the batch, inserts nothing: the first occurrence wins.
        let mut inserted: HashSet<u64> = HashSet::with_capacity(events.len());
        for chunk in events.chunks(EVENTS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO events (host_id, seq, kind, stage, step, source, message, data, \
                 time, received_at) VALUES ",
            );
            let mut vals = Vec::with_capacity(chunk.len() * 10);
            for (i, ev) in chunk.iter().enumerate() {
                let data = if ev.data.is_null() {
                    None
                } else {
                    Some(
                        serde_json::to_string(&ev.data)
                            .map_err(corrupt(format!("encoding the data of event {}", ev.seq)))?,
                    )
                };
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 10;
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10
                ));
                vals.extend(args![
                    host_id,
                    to_i64(ev.seq, "event seq")?,
                    ev.kind.as_str(),
                    &ev.stage,
                    &ev.step,
                    &ev.source,
                    &ev.message,
                    data,
                    &ev.time,
                    now
                ]);
            }
            sql.push_str(" ON CONFLICT (host_id, seq) DO NOTHING RETURNING seq");
            let rows = tx
                .fetch_all(&sql, vals)
                .await
                .map_err(db(format!("storing events of host {host_id}")))?;
            for r in &rows {
                inserted.insert(to_u64(
                    r.i64("seq").map_err(db("reading a stored event seq"))?,
                ));
            }
        }
        let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
        let mut duplicates = 0u32;
        for ev in events {
            // `remove`: a seq repeated within the batch counts as fresh once.
            if inserted.remove(&ev.seq) {
                fresh.push(ev);
                last_seq = last_seq.max(ev.seq);
            } else {
                duplicates += 1;
            }
        }
        advance(&mut progress, &fresh);
        tx.execute(
            "UPDATE hosts SET status = $1, status_seq = $2, current_stage = $3, current_step = $4, \
             last_error = $5, applied_profile = $6, applied_version = $7, last_seq = $8 WHERE id = $9",
            args![
                progress.status.as_str(),
                to_i64(progress.status_seq, "event seq")?,
                progress.stage,
                progress.step,
                progress.last_error,
                progress.applied_profile,
                progress
                    .applied_version
                    .map(|v| to_i64(v, "applied version"))
                    .transpose()?,
                to_i64(last_seq, "event seq")?,
                host_id
            ],
        )
        .await
        .map_err(db(format!("updating the status of host {host_id}")))?;
        tx.commit()
            .await
            .map_err(db(format!("committing events of host {host_id}")))?;
        Ok(EventOutcome {
            acked_seq: acked,
            accepted: u32::try_from(fresh.len()).unwrap_or(u32::MAX),
            duplicates,
        })
    }

    async fn list_events(
        &self,
        host_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self
            .pool
            .fetch_all(
                "SELECT seq, kind, stage, step, source, message, data, time, received_at \
                 FROM events WHERE host_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                args![host_id, to_i64(after, "seq")?, i64::from(limit)],
            )
            .await
            .map_err(db(format!("listing events of host {host_id}")))?;
        rows.iter().map(|r| event_from_row(r, host_id)).collect()
    }

    async fn fleet(&self, ids: Option<&[String]>) -> Result<Vec<FleetHost>, StoreError> {
        self.flush_heartbeats().await?;
        const FLEET_SELECT: &str = "SELECT h.id, h.name, h.tags, h.status, h.current_stage, \
             h.current_step, h.last_error, h.applied_profile, h.applied_version, h.last_seq, \
             h.registered_at, h.last_seen, h.project_id, p.tenant_id, \
             p.name AS project_name, t.name AS tenant_name \
             FROM hosts h JOIN projects p ON p.id = h.project_id \
             JOIN tenants t ON t.id = p.tenant_id";
        /// Ids per `IN (…)` query: far below every backend's parameter limit.
        const CHUNK: usize = 500;
        let mut rows = Vec::new();
        match ids {
            None => {
                let sql = format!("{FLEET_SELECT} ORDER BY t.name, p.name, h.name");
                rows = self
                    .pool
                    .fetch_all(&sql, args![])
                    .await
                    .map_err(db("listing the fleet"))?;
            }
            Some(ids) => {
                for chunk in ids.chunks(CHUNK) {
                    let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "{FLEET_SELECT} WHERE h.id IN ({}) ORDER BY t.name, p.name, h.name",
                        marks.join(", ")
                    );
                    let args = chunk.iter().map(super::db::Val::from).collect();
                    rows.extend(
                        self.pool
                            .fetch_all(&sql, args)
                            .await
                            .map_err(db("reading fleet hosts"))?,
                    );
                }
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Every assignment and the latest version of every profile name per scope: small
        // tables next to the hosts, read once per call instead of once per host.
        let assignments = self
            .pool
            .fetch_all(
                "SELECT project_id, host_id, tag_key, tag_value, profile_name, profile_version, \
                 rev FROM assignments ORDER BY rev DESC",
                args![],
            )
            .await
            .map_err(db("reading assignments for the fleet"))?;
        let latest_rows = self
            .pool
            .fetch_all(
                "SELECT tenant_id, project_id, name, MAX(version) AS latest FROM profiles \
                 GROUP BY tenant_id, project_id, name",
                args![],
            )
            .await
            .map_err(db("reading profile versions for the fleet"))?;
        let actx = || db("reading an assignment row");
        // host id → (profile, pinned version); project id → tag assignments, newest first.
        let mut by_host: HashMap<String, (String, Option<i64>)> = HashMap::new();
        type TagRule = (String, String, String, Option<i64>);
        let mut by_tag: HashMap<String, Vec<TagRule>> = HashMap::new();
        for a in &assignments {
            let profile = a.text("profile_name").map_err(actx())?;
            let version = a.opt_i64("profile_version").map_err(actx())?;
            match a.opt_text("host_id").map_err(actx())? {
                Some(h) => {
                    by_host.insert(h, (profile, version));
                }
                None => by_tag
                    .entry(a.text("project_id").map_err(actx())?)
                    .or_default()
                    .push((
                        a.opt_text("tag_key").map_err(actx())?.unwrap_or_default(),
                        a.opt_text("tag_value").map_err(actx())?.unwrap_or_default(),
                        profile,
                        version,
                    )),
            }
        }
        let pctx = || db("reading a profile version row");
        // (tenant id, project id or "" for tenant scope, name) → latest version.
        let mut latest: HashMap<(String, String, String), i64> = HashMap::new();
        for r in &latest_rows {
            latest.insert(
                (
                    r.text("tenant_id").map_err(pctx())?,
                    r.opt_text("project_id")
                        .map_err(pctx())?
                        .unwrap_or_default(),
                    r.text("name").map_err(pctx())?,
                ),
                r.i64("latest").map_err(pctx())?,
            );
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = r.text("id").map_err(db("reading a fleet row"))?;
            let ctx = || db(format!("reading host {id}"));
            let tags: BTreeMap<String, String> =
                serde_json::from_str(&r.text("tags").map_err(ctx())?)
                    .map_err(corrupt(format!("parsing the stored tags of host {id}")))?;
            let pid = r.text("project_id").map_err(ctx())?;
            let tid = r.text("tenant_id").map_err(ctx())?;
            let chosen = by_host.get(&id).cloned().or_else(|| {
                by_tag.get(&pid).and_then(|rules| {
                    rules
                        .iter()
                        .find(|(k, v, _, _)| tags.get(k) == Some(v))
                        .map(|(_, _, p, v)| (p.clone(), *v))
                })
            });
            let (assigned_profile, assigned_version) = match chosen {
                None => (None, None),
                Some((name, Some(pinned))) => (Some(name), Some(to_u64(pinned))),
                Some((name, None)) => {
                    let newest = [String::new(), pid.clone()]
                        .into_iter()
                        .filter_map(|scope| latest.get(&(tid.clone(), scope, name.clone())))
                        .max()
                        .copied();
                    (Some(name), newest.map(to_u64))
                }
            };
            let status = HostStatus::parse(&r.text("status").map_err(ctx())?);
            let current_stage = r.text("current_stage").map_err(ctx())?;
            out.push(FleetHost {
                tenant: r.text("tenant_name").map_err(ctx())?,
                project: r.text("project_name").map_err(ctx())?,
                name: r.text("name").map_err(ctx())?,
                tags,
                status,
                progress: phase_progress(status, &current_stage),
                current_stage,
                current_step: r.text("current_step").map_err(ctx())?,
                last_error: r.text("last_error").map_err(ctx())?,
                assigned_profile,
                assigned_version,
                applied_profile: r.opt_text("applied_profile").map_err(ctx())?,
                applied_version: r.opt_i64("applied_version").map_err(ctx())?.map(to_u64),
                last_seq: to_u64(r.i64("last_seq").map_err(ctx())?),
                registered_at: r.i64("registered_at").map_err(ctx())?,
                last_seen: r.i64("last_seen").map_err(ctx())?,
                id,
            });
        }
        Ok(out)
    }
}
